//! `cron`: starts runs on a cron schedule, in UTC. Takes standard five-field expressions
//! (`*/5 * * * *`) and six or seven fields with seconds first (`*/2 * * * * *`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use gofer_sdk::plugin::{
    ExternalEvent, ExternalResponse, Fire, Info, Kind, Pairs, Parameter, Trigger, WakeResult,
};

struct Cron;

struct Subscription {
    schedule: cron::Schedule,
    next: Option<u64>,
}

thread_local! {
    static SUBSCRIPTIONS: RefCell<BTreeMap<String, Subscription>> = const { RefCell::new(BTreeMap::new()) };
}

fn next_after(schedule: &cron::Schedule, millis: u64) -> Option<u64> {
    let now: DateTime<Utc> = DateTime::from_timestamp_millis(millis as i64)?;
    schedule
        .after(&now)
        .next()
        .map(|time| time.timestamp_millis() as u64)
}

impl Trigger for Cron {
    fn info() -> Info {
        Info {
            name: "cron".into(),
            kind: Kind::Trigger,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Starts runs on a cron schedule (UTC).".into(),
            settings: vec![Parameter {
                key: "expression".into(),
                required: true,
                documentation: "A cron expression: five fields (\"*/5 * * * *\"), or six or seven with seconds first.".into(),
            }],
        }
    }

    fn subscribe(
        subscription: String,
        settings: Pairs,
        now_millis: u64,
    ) -> Result<Option<u64>, String> {
        let mut expression = None;
        for (key, value) in settings {
            match key.as_str() {
                "expression" => expression = Some(value),
                other => {
                    return Err(format!(
                        "unknown setting '{other}'; cron takes only 'expression'"
                    ));
                }
            }
        }
        let expression =
            expression.ok_or("the setting 'expression' is required, e.g. \"*/5 * * * *\"")?;
        let fields = expression.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expression}"),
            6 | 7 => expression.clone(),
            _ => {
                return Err(format!(
                    "'{expression}' has {fields} fields; a cron expression has 5 (or 6-7 with seconds)"
                ));
            }
        };
        let schedule = cron::Schedule::from_str(&full)
            .map_err(|error| format!("'{expression}' is not a valid cron expression: {error}"))?;
        let next = next_after(&schedule, now_millis);
        if next.is_none() {
            return Err(format!("'{expression}' never fires again"));
        }
        SUBSCRIPTIONS.with(|subscriptions| {
            subscriptions
                .borrow_mut()
                .insert(subscription, Subscription { schedule, next })
        });
        Ok(next)
    }

    fn unsubscribe(subscription: String) {
        SUBSCRIPTIONS.with(|subscriptions| subscriptions.borrow_mut().remove(&subscription));
    }

    fn wake(now_millis: u64) -> WakeResult {
        SUBSCRIPTIONS.with(|subscriptions| {
            let mut subscriptions = subscriptions.borrow_mut();
            let mut fires = Vec::new();
            for (id, subscription) in subscriptions.iter_mut() {
                if subscription.next.is_some_and(|next| next <= now_millis) {
                    let time = subscription.next.unwrap_or_default();
                    // One run per scheduled time, even if fired again after a restart.
                    fires.push(
                        Fire::new(
                            id.clone(),
                            vec![("GOFER_TRIGGER_CRON_TIME".into(), time.to_string())],
                        )
                        .idempotent(format!("{id}@{time}")),
                    );
                    subscription.next = next_after(&subscription.schedule, now_millis);
                }
            }
            let next_wake = subscriptions
                .values()
                .filter_map(|subscription| subscription.next)
                .min();
            WakeResult { fires, next_wake }
        })
    }

    fn external_event(_event: ExternalEvent) -> ExternalResponse {
        ExternalResponse {
            status: 404,
            message: "the cron trigger takes no outside events".into(),
            fires: Vec::new(),
        }
    }
}

gofer_sdk::export_trigger!(Cron);
