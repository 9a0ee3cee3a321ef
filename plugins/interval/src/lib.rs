//! `interval`: starts a run every `every` (e.g. `30s`, `5m`, `1h`; at least one second).
//!
//! A subscription's due times are `first + k × every`. Its `first` is kept in the plugin's
//! objects, written once when it subscribes (never when it fires: a wake with thousands of fires
//! due writes nothing), so a restart of the server does not push the schedule back: a `24h`
//! interval stays daily however often the server restarts, and a run that fell due while the
//! server was down starts once when it is back. Each fire names its due time in its idempotency
//! key, so firing the latest due time again after a restart starts no second run. The server
//! remembers keys for a week, so an interval of an hour or more also keeps the last due time it
//! fired (one write an hour at most) and never fires it twice.

use std::cell::RefCell;
use std::collections::BTreeMap;

use gofer_sdk::plugin::{
    ExternalEvent, ExternalResponse, Fire, Info, Kind, LogLevel, Pairs, Parameter, Trigger,
    WakeResult, log, objects,
};

struct Interval;

struct Subscription {
    every: u64,
    /// The first due time; the others follow every `every`.
    first: u64,
    next: u64,
}

impl Subscription {
    /// The first due time after `now`.
    fn due_after(&self, now: u64) -> u64 {
        if now < self.first {
            return self.first;
        }
        self.first + ((now - self.first) / self.every + 1) * self.every
    }

    /// The latest due time at or before `now`, if one has come.
    fn due_by(&self, now: u64) -> Option<u64> {
        (now >= self.first).then(|| self.first + (now - self.first) / self.every * self.every)
    }
}

thread_local! {
    static SUBSCRIPTIONS: RefCell<BTreeMap<String, Subscription>> = const { RefCell::new(BTreeMap::new()) };
    /// Whether a schedule could not be kept already (said once, not once per subscription).
    static TOLD_NOT_KEPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d` and sums like `1h30m` into milliseconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the setting 'every' is empty; use e.g. \"30s\", \"5m\" or \"1h\"".into());
    }
    let mut total = 0u64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        let mut unit = c.to_string();
        while let Some(next) = chars
            .peek()
            .copied()
            .filter(|next| next.is_ascii_alphabetic())
        {
            unit.push(next);
            chars.next();
        }
        let value: u64 = number.parse().map_err(|_| {
            format!("'{text}' is not a duration; use e.g. \"30s\", \"5m\" or \"1h\"")
        })?;
        number.clear();
        let factor = match unit.as_str() {
            "ms" => 1,
            "s" | "sec" | "secs" => 1_000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hrs" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => {
                return Err(format!(
                    "'{text}' has an unknown unit '{unit}'; use ms, s, m, h or d"
                ));
            }
        };
        total = total.saturating_add(value.saturating_mul(factor));
    }
    if !number.is_empty() {
        return Err(format!("'{text}' needs a unit, e.g. \"{text}s\""));
    }
    Ok(total)
}

/// Intervals this long or longer keep the last due time they fired.
const KEEPS_FIRED_FROM_MS: u64 = 3_600_000;

/// The object keeping a subscription's schedule.
fn schedule_key(subscription: &str) -> String {
    format!("schedule {subscription}")
}

/// A subscription's schedule as kept in its object.
struct Kept {
    every: u64,
    first: u64,
    /// The last due time fired (kept for long intervals only).
    fired: Option<u64>,
}

/// The stored schedule of a subscription, if any. Schedules kept by earlier versions name their
/// next due time (`next_ms`), which serves as the first.
fn stored_schedule(subscription: &str) -> Option<Kept> {
    let stored = match objects::get(&schedule_key(subscription)) {
        Ok(stored) => stored?,
        Err(error) => {
            log(
                LogLevel::Warn,
                &format!("could not read a schedule: {error}"),
            );
            return None;
        }
    };
    let text = String::from_utf8(stored).ok()?;
    let (mut every, mut first, mut fired) = (None, None, None);
    for field in text.split_whitespace() {
        match field.split_once('=') {
            Some(("every_ms", value)) => every = value.parse().ok(),
            Some(("first_ms" | "next_ms", value)) => first = value.parse().ok(),
            Some(("fired_ms", value)) => fired = value.parse().ok(),
            _ => {}
        }
    }
    Some(Kept {
        every: every?,
        first: first?,
        fired,
    })
}

fn store_schedule(subscription: &str, kept: &Kept) {
    let mut value = format!("every_ms={} first_ms={}", kept.every, kept.first);
    if let Some(fired) = kept.fired {
        value.push_str(&format!(" fired_ms={fired}"));
    }
    if let Err(error) = objects::put(&schedule_key(subscription), value.as_bytes())
        && !TOLD_NOT_KEPT.with(|told| told.replace(true))
    {
        log(
            LogLevel::Warn,
            &format!("could not keep a schedule, so a restart starts it over (said once): {error}"),
        );
    }
}

impl Trigger for Interval {
    fn info() -> Info {
        Info {
            name: "interval".into(),
            kind: Kind::Trigger,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Starts a run of the pipeline at a fixed interval.".into(),
            settings: vec![Parameter {
                key: "every".into(),
                required: true,
                documentation: "Time between runs, e.g. \"30s\", \"5m\", \"1h\" (at least 1s)."
                    .into(),
            }],
        }
    }

    fn subscribe(
        subscription: String,
        settings: Pairs,
        now_millis: u64,
    ) -> Result<Option<u64>, String> {
        let mut every = None;
        for (key, value) in settings {
            match key.as_str() {
                "every" => every = Some(parse_duration(&value)?),
                other => {
                    return Err(format!(
                        "unknown setting '{other}'; interval takes only 'every'"
                    ));
                }
            }
        }
        let every = every.ok_or("the setting 'every' is required, e.g. \"every\": \"30s\"")?;
        if every < 1_000 {
            return Err(format!("'every' must be at least 1s, got {every}ms"));
        }
        // Resume a kept schedule: the latest due time that has come fires at once (a run that
        // fell due while the server was down; if it fired before, its key starts no second run).
        let (first, fired) = match stored_schedule(&subscription) {
            Some(kept) if kept.every == every => (kept.first, kept.fired),
            _ => {
                let first = now_millis + every;
                let kept = Kept {
                    every,
                    first,
                    fired: None,
                };
                store_schedule(&subscription, &kept);
                (first, None)
            }
        };
        let mut kept = Subscription {
            every,
            first,
            next: first,
        };
        kept.next = match kept.due_by(now_millis) {
            Some(due) if fired != Some(due) => due,
            _ => kept.due_after(now_millis),
        };
        let next = kept.next;
        SUBSCRIPTIONS.with(|subscriptions| subscriptions.borrow_mut().insert(subscription, kept));
        Ok(Some(next))
    }

    fn unsubscribe(subscription: String) {
        SUBSCRIPTIONS.with(|subscriptions| subscriptions.borrow_mut().remove(&subscription));
        if let Err(error) = objects::delete(&schedule_key(&subscription)) {
            log(
                LogLevel::Warn,
                &format!("could not drop a schedule: {error}"),
            );
        }
    }

    fn wake(now_millis: u64) -> WakeResult {
        SUBSCRIPTIONS.with(|subscriptions| {
            let mut subscriptions = subscriptions.borrow_mut();
            let mut fires = Vec::new();
            for (id, subscription) in subscriptions.iter_mut() {
                if subscription.next <= now_millis {
                    // One run per due time, even if fired again after a restart.
                    let due = subscription.next;
                    fires.push(
                        Fire::new(
                            id.clone(),
                            vec![(
                                "GOFER_TRIGGER_INTERVAL".into(),
                                format!("{}ms", subscription.every),
                            )],
                        )
                        .idempotent(format!("{id}@{due}")),
                    );
                    // Missed intervals are not made up for one by one: the next is the first
                    // due time still to come.
                    subscription.next = subscription.due_after(now_millis);
                    if subscription.every >= KEEPS_FIRED_FROM_MS {
                        let kept = Kept {
                            every: subscription.every,
                            first: subscription.first,
                            fired: Some(due),
                        };
                        store_schedule(id, &kept);
                    }
                }
            }
            let next_wake = subscriptions
                .values()
                .map(|subscription| subscription.next)
                .min();
            WakeResult { fires, next_wake }
        })
    }

    fn external_event(_event: ExternalEvent) -> ExternalResponse {
        ExternalResponse {
            status: 404,
            message: "the interval trigger takes no outside events".into(),
            fires: Vec::new(),
        }
    }
}

gofer_sdk::export_trigger!(Interval);
