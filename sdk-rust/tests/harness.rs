//! The native plugin harness (`gofer_sdk::testing`) as a plugin author uses it: a trigger driven
//! by the fake clock, outside events, fires and their outcomes, objects, logs, configuration and
//! HTTP; a task's exit, error and environment.
#![cfg(feature = "plugin")]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use gofer_sdk::plugin::{
    ExternalEvent, ExternalResponse, Fire, FireOutcome, Info, Kind, LogLevel, Pairs, Task, Trigger,
    WakeResult, config, fire_now, http, log, now_millis, objects,
};
use gofer_sdk::testing::{TaskHarness, TriggerHarness, external_event};

/// Fires each subscription every `every_secs`; an outside event with `?sub=NAME` fires that one
/// at once; counts its fires in an object.
struct Every;

thread_local! {
    static EVERY: RefCell<BTreeMap<String, (u64, u64)>> = const { RefCell::new(BTreeMap::new()) };
}

impl Trigger for Every {
    fn info() -> Info {
        Info::new("every", Kind::Trigger, "1.0.0", "fires on a period").setting(
            "every_secs",
            true,
            "the period",
        )
    }

    fn subscribe(subscription: String, settings: Pairs, now: u64) -> Result<Option<u64>, String> {
        let every: u64 = settings
            .iter()
            .find(|(key, _)| key == "every_secs")
            .ok_or("every_secs is required")?
            .1
            .parse()
            .map_err(|_| "every_secs must be a number".to_string())?;
        let next = now + every * 1000;
        EVERY.with(|all| all.borrow_mut().insert(subscription, (every * 1000, next)));
        log(
            LogLevel::Info,
            &format!("subscribed, greeting {:?}", config()),
        );
        Ok(Some(next))
    }

    fn unsubscribe(subscription: String) {
        EVERY.with(|all| all.borrow_mut().remove(&subscription));
    }

    fn wake(now: u64) -> WakeResult {
        EVERY.with(|all| {
            let mut all = all.borrow_mut();
            let mut fires = Vec::new();
            for (subscription, (every, next)) in all.iter_mut() {
                if *next <= now {
                    fires.push(
                        Fire::new(subscription.clone(), vec![("AT".into(), now.to_string())])
                            .idempotent(format!("{subscription}@{next}")),
                    );
                    *next += *every;
                }
            }
            let count = objects::get("fires").unwrap().map_or(0, |bytes| bytes[0]);
            objects::put("fires", &[count + fires.len() as u8]).unwrap();
            WakeResult {
                next_wake: all.values().map(|(_, next)| *next).min(),
                fires,
            }
        })
    }

    fn external_event(event: ExternalEvent) -> ExternalResponse {
        let Some(subscription) = event.query.strip_prefix("sub=") else {
            return ExternalResponse {
                status: 400,
                message: "say ?sub=NAME".into(),
                fires: Vec::new(),
            };
        };
        let outcome = fire_now(
            Fire::new(subscription, Vec::new()).idempotent(String::from_utf8_lossy(&event.body)),
        );
        ExternalResponse {
            status: 202,
            message: format!("{outcome:?} at {}", now_millis()),
            fires: Vec::new(),
        }
    }
}

#[test]
fn a_trigger_is_woken_as_the_clock_moves_and_its_fires_start_runs() {
    let mut trigger = TriggerHarness::<Every>::new().config(&[("greeting", "hi")]);
    let start = trigger.host().now_millis();
    assert_eq!(trigger.info().name, "every");

    trigger.subscribe("a", &[("every_secs", "10")]).unwrap();
    trigger.subscribe("b", &[("every_secs", "25")]).unwrap();
    assert_eq!(trigger.next_wake(), Some(start + 10_000));
    assert!(trigger.advance(Duration::from_secs(9)).is_empty());

    let fired = trigger.advance(Duration::from_secs(20));
    let times: Vec<_> = fired
        .iter()
        .map(|fired| (fired.fire.subscription.as_str(), fired.at_millis - start))
        .collect();
    assert_eq!(times, [("a", 10_000), ("a", 20_000), ("b", 25_000)]);
    assert!(fired.iter().all(|fired| fired.started()));
    assert_eq!(fired[0].variables()["AT"], (start + 10_000).to_string());
    assert_eq!(trigger.host().now_millis(), start + 29_000);
    assert_eq!(trigger.host().objects()["fires"], vec![3]);
    assert!(trigger.host().logged("greeting [(\"greeting\", \"hi\")]"));

    // Unsubscribed: no more fires for it; a refused subscription's fires say why.
    trigger.unsubscribe("a");
    trigger.refuse_fires("b", "pipeline 'p' is disabled");
    let fired = trigger.advance(Duration::from_secs(25));
    assert_eq!(fired.len(), 1);
    assert_eq!(
        fired[0].outcome,
        FireOutcome::Refused("pipeline 'p' is disabled".into())
    );
}

#[test]
fn outside_events_fire_at_once_and_idempotency_keys_start_one_run() {
    let mut trigger = TriggerHarness::<Every>::starting_at(5_000);
    trigger.subscribe("a", &[("every_secs", "60")]).unwrap();

    let missing = trigger.external_event(external_event(b"x"));
    assert_eq!(missing.status, 400);

    let mut event = external_event(b"delivery-1");
    event.query = "sub=a".into();
    let first = trigger.external_event(event.clone());
    assert_eq!(first.message, "FireOutcome::Started(1) at 5000");
    let again = trigger.external_event(event.clone());
    assert_eq!(again.message, "FireOutcome::Duplicate(1) at 5000");

    event.query = "sub=nobody".into();
    let unknown = trigger.external_event(event);
    assert!(
        unknown.message.contains("'nobody' is not subscribed"),
        "{}",
        unknown.message
    );
    assert_eq!(trigger.host().fired().len(), 3);
}

#[test]
fn a_subscription_the_plugin_refuses_gives_its_message() {
    let mut trigger = TriggerHarness::<Every>::new();
    assert_eq!(
        trigger.subscribe("a", &[]),
        Err("every_secs is required".into())
    );
    assert_eq!(
        trigger.subscribe("a", &[("every_secs", "soon")]),
        Err("every_secs must be a number".into())
    );
    assert_eq!(trigger.next_wake(), None);
}

/// Fetches `url` and prints the status; fails on a refused request.
struct Fetch;

impl Task for Fetch {
    fn info() -> Info {
        Info::new("fetch", Kind::Task, "1.0.0", "fetches a URL")
    }

    fn run(settings: Pairs) -> Result<u8, String> {
        let url = std::env::var("URL").map_err(|_| "URL is not set".to_string())?;
        let response = http::send(&http::Request::get(url)).map_err(|error| error.to_string())?;
        objects::put("last", &response.body)?;
        log(LogLevel::Debug, &format!("{settings:?}"));
        Ok(if response.status == 200 { 0 } else { 1 })
    }
}

#[test]
fn a_task_runs_with_its_variables_objects_and_http() {
    let mut task = TaskHarness::<Fetch>::new().on_http(|request| {
        Ok(http::Response {
            status: if request.url.ends_with("/ok") {
                200
            } else {
                503
            },
            body: request.url.as_bytes().to_vec(),
        })
    });
    let outcome = task.run(&[("mode", "quick")], &[("URL", "http://example.test/ok")]);
    assert_eq!(outcome.result, Ok(0));
    assert_eq!(task.host().objects()["last"], b"http://example.test/ok");
    assert_eq!(
        task.host().logs(),
        [(LogLevel::Debug, "[(\"mode\", \"quick\")]".to_string())]
    );
    assert_eq!(
        task.run(&[], &[("URL", "http://example.test/down")]).result,
        Ok(1)
    );
    // Variables are set for the call only.
    assert_eq!(task.run(&[], &[]).result, Err("URL is not set".into()));
}

#[test]
fn without_an_http_handler_requests_are_refused_and_bad_keys_are_errors() {
    let mut task = TaskHarness::<Fetch>::new();
    let outcome = task.run(&[], &[("URL", "http://example.test/ok")]);
    let error = outcome.result.unwrap_err();
    assert!(error.contains("not a granted host"), "{error}");
    assert!(objects::put("", b"x").unwrap_err().contains("1 to 256"));
    assert!(objects::put(&"k".repeat(257), b"x").is_err());
}

#[test]
fn object_limits_are_kept() {
    let trigger = TriggerHarness::<Every>::new().object_limits(2, 4);
    objects::put("a", b"1").unwrap();
    objects::put("b", b"2").unwrap();
    objects::put("a", b"3").unwrap();
    assert!(objects::put("c", b"4").unwrap_err().contains("limit"));
    assert!(objects::put("a", b"12345").unwrap_err().contains("larger"));
    assert_eq!(objects::keys().unwrap(), ["a", "b"]);
    objects::delete("a").unwrap();
    assert_eq!(trigger.host().objects().len(), 1);
}

#[test]
#[should_panic(expected = "describes itself as a task")]
fn a_task_is_not_a_trigger() {
    struct Confused;
    impl Trigger for Confused {
        fn info() -> Info {
            Info::new("confused", Kind::Task, "1", "")
        }
        fn subscribe(_: String, _: Pairs, _: u64) -> Result<Option<u64>, String> {
            Ok(None)
        }
        fn unsubscribe(_: String) {}
        fn wake(_: u64) -> WakeResult {
            WakeResult {
                fires: Vec::new(),
                next_wake: None,
            }
        }
    }
    TriggerHarness::<Confused>::new();
}
