//! A Gofer trigger. Each subscription starts a run every `every` (e.g. "30s" or "5m"; at least
//! 1s); each run gets the variable DUE_VARIABLE, the epoch milliseconds it was due. Start here:
//! change what it watches and when it fires.

use std::cell::RefCell;
use std::collections::BTreeMap;

use gofer_sdk::plugin::{Fire, Info, Kind, LogLevel, Pairs, Trigger, WakeResult, log};

/// The plugin's name: what subscriptions name, its objects' and grants' key.
const NAME: &str = "{{name}}";

/// The run variable saying when a fire was due.
const DUE_VARIABLE: &str = "{{env}}_DUE";

struct Plugin;

/// One subscription: its period and when it is next due (epoch milliseconds).
struct Subscription {
    every: u64,
    next: u64,
}

thread_local! {
    // A plugin instance lives across calls; the server subscribes again after it restarts.
    static SUBSCRIPTIONS: RefCell<BTreeMap<String, Subscription>> =
        const { RefCell::new(BTreeMap::new()) };
}

/// "30s", "5m", "1h" or "1500ms", in milliseconds; at least a second.
fn parse_every(value: &str) -> Result<u64, String> {
    let digits = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'every' is not a duration: '{value}'; use e.g. \"30s\" or \"5m\""))?;
    let millis = match unit {
        "ms" => number,
        "s" => number * 1_000,
        "m" => number * 60_000,
        "h" => number * 3_600_000,
        _ => {
            return Err(format!(
                "'every' has no unit it knows: '{value}'; use ms, s, m or h"
            ));
        }
    };
    if millis < 1_000 {
        return Err(format!("'every' must be at least 1s, got '{value}'"));
    }
    Ok(millis)
}

fn next_wake(subscriptions: &BTreeMap<String, Subscription>) -> Option<u64> {
    subscriptions
        .values()
        .map(|subscription| subscription.next)
        .min()
}

impl Trigger for Plugin {
    fn info() -> Info {
        Info::new(
            NAME,
            Kind::Trigger,
            env!("CARGO_PKG_VERSION"),
            "Starts a run every `every`.",
        )
        .setting(
            "every",
            true,
            "How often to start a run, e.g. \"30s\" or \"5m\"; at least 1s",
        )
    }

    fn subscribe(
        subscription: String,
        settings: Pairs,
        now_millis: u64,
    ) -> Result<Option<u64>, String> {
        let mut every = None;
        for (key, value) in settings {
            match key.as_str() {
                "every" => every = Some(parse_every(&value)?),
                other => return Err(format!("unknown setting '{other}'; {NAME} takes 'every'")),
            }
        }
        let every = every.ok_or("the setting 'every' is required, e.g. \"30s\"")?;
        log(
            LogLevel::Info,
            &format!("subscribed {subscription}: every {every} ms"),
        );
        SUBSCRIPTIONS.with(|subscriptions| {
            let mut subscriptions = subscriptions.borrow_mut();
            subscriptions.insert(
                subscription,
                Subscription {
                    every,
                    next: now_millis + every,
                },
            );
            Ok(next_wake(&subscriptions))
        })
    }

    fn unsubscribe(subscription: String) {
        SUBSCRIPTIONS.with(|subscriptions| subscriptions.borrow_mut().remove(&subscription));
    }

    fn wake(now_millis: u64) -> WakeResult {
        SUBSCRIPTIONS.with(|subscriptions| {
            let mut subscriptions = subscriptions.borrow_mut();
            let mut fires = Vec::new();
            for (id, subscription) in subscriptions.iter_mut() {
                if subscription.next <= now_millis {
                    let due = subscription.next;
                    // The same due time fired twice (a retry, a restart) starts one run.
                    fires.push(
                        Fire::new(id.clone(), vec![(DUE_VARIABLE.into(), due.to_string())])
                            .idempotent(format!("{id}@{due}")),
                    );
                    // Skip what was missed while the server was down: one run, then on time.
                    let missed = (now_millis - due) / subscription.every;
                    subscription.next = due + (missed + 1) * subscription.every;
                }
            }
            WakeResult {
                fires,
                next_wake: next_wake(&subscriptions),
            }
        })
    }
}

gofer_sdk::export_trigger!(Plugin);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gofer_sdk::testing::TriggerHarness;

    use super::Plugin;

    #[test]
    fn each_subscription_fires_on_its_period() {
        let mut trigger = TriggerHarness::<Plugin>::new();
        let start = trigger.host().now_millis();
        trigger.subscribe("every-10s", &[("every", "10s")]).unwrap();
        trigger.subscribe("every-1m", &[("every", "1m")]).unwrap();

        let fired = trigger.advance(Duration::from_secs(60));
        let subscriptions: Vec<_> = fired.iter().map(|f| f.fire.subscription.as_str()).collect();
        assert_eq!(
            subscriptions,
            ["every-10s"; 6]
                .iter()
                .copied()
                .chain(["every-1m"])
                .collect::<Vec<_>>()
        );
        assert!(fired.iter().all(|fired| fired.started()));
        assert_eq!(
            fired[0].variables()[super::DUE_VARIABLE],
            (start + 10_000).to_string()
        );

        trigger.unsubscribe("every-10s");
        assert_eq!(trigger.advance(Duration::from_secs(60)).len(), 1);
    }

    #[test]
    fn a_late_wake_fires_once_then_keeps_the_period() {
        let mut trigger = TriggerHarness::<Plugin>::new();
        let start = trigger.host().now_millis();
        trigger.subscribe("s", &[("every", "1s")]).unwrap();
        // The server was down for 5.5 s: woken late, one run, then on the period again.
        trigger.advance_without_waking(Duration::from_millis(5_500));
        assert_eq!(trigger.wake_now().len(), 1);
        assert_eq!(trigger.next_wake(), Some(start + 6_000));
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let mut trigger = TriggerHarness::<Plugin>::new();
        let refused = trigger.subscribe("s", &[("every", "0.5s")]).unwrap_err();
        assert!(refused.contains("'every'"), "{refused}");
        let refused = trigger.subscribe("s", &[("every", "500ms")]).unwrap_err();
        assert!(refused.contains("at least 1s"), "{refused}");
        let refused = trigger.subscribe("s", &[]).unwrap_err();
        assert!(refused.contains("required"), "{refused}");
        let refused = trigger
            .subscribe("s", &[("every", "1s"), ("evry", "2s")])
            .unwrap_err();
        assert!(refused.contains("unknown setting 'evry'"), "{refused}");
    }
}
