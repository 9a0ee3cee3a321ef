//! `interval`: starts a run every `every` (e.g. `30s`, `5m`, `1h`; at least one second).
//!
//! Each subscription's next due time is kept in the plugin's objects, so a restart of the server
//! does not push the schedule back: a `24h` interval stays daily however often the server
//! restarts, and a run that fell due while the server was down starts once when it is back.

use std::cell::RefCell;
use std::collections::BTreeMap;

use gofer_sdk::plugin::{
    ExternalEvent, ExternalResponse, Fire, Info, Kind, LogLevel, Pairs, Parameter, Trigger,
    WakeResult, log, objects,
};

struct Interval;

struct Subscription {
    every: u64,
    next: u64,
}

thread_local! {
    static SUBSCRIPTIONS: RefCell<BTreeMap<String, Subscription>> = const { RefCell::new(BTreeMap::new()) };
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

/// The object keeping a subscription's schedule.
fn schedule_key(subscription: &str) -> String {
    format!("schedule {subscription}")
}

/// The stored `(every, next)` of a subscription, if any.
fn stored_schedule(subscription: &str) -> Option<(u64, u64)> {
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
    let mut every = None;
    let mut next = None;
    for field in text.split_whitespace() {
        match field.split_once('=') {
            Some(("every_ms", value)) => every = value.parse().ok(),
            Some(("next_ms", value)) => next = value.parse().ok(),
            _ => {}
        }
    }
    Some((every?, next?))
}

fn store_schedule(subscription: &str, every: u64, next: u64) {
    let value = format!("every_ms={every} next_ms={next}");
    if let Err(error) = objects::put(&schedule_key(subscription), value.as_bytes()) {
        log(
            LogLevel::Warn,
            &format!("could not keep a schedule (a restart will start it over): {error}"),
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
        // Resume a kept schedule (one that fell due while the server was down fires at once).
        let next = match stored_schedule(&subscription) {
            Some((stored_every, next)) if stored_every == every => next.max(now_millis),
            _ => {
                let next = now_millis + every;
                store_schedule(&subscription, every, next);
                next
            }
        };
        SUBSCRIPTIONS.with(|subscriptions| {
            subscriptions
                .borrow_mut()
                .insert(subscription, Subscription { every, next })
        });
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
                    // Missed intervals are not made up for one by one: the next is `every` on.
                    subscription.next = now_millis + subscription.every;
                    store_schedule(id, subscription.every, subscription.next);
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
