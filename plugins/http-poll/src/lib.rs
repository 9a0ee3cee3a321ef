//! `http-poll`: a polling trigger. Each subscription fetches a URL (`GET`, with optional
//! `header.NAME` settings) every `every` (default 30s) and fires when what it gets back changes:
//! the status or the body. The first fetch, at subscribe, is the baseline (and says at once when
//! the host is not granted: `[plugins.grants.http-poll] http_hosts`). What was last seen is kept
//! in the plugin's objects, so a restart neither misses nor repeats a change; each change fires
//! once (its idempotency key is the subscription and the content's hash).
//!
//! Runs get `GOFER_POLL_URL`, `GOFER_POLL_STATUS` and `GOFER_POLL_BODY` (the first 64 KiB).

use std::cell::RefCell;
use std::collections::BTreeMap;

use gofer_sdk::plugin::{
    Fire, Info, Kind, LogLevel, Pairs, Trigger, WakeResult, http, log, objects,
};
use sha2::{Digest, Sha256};

/// Most of the body passed on to the run.
const MAX_BODY_VARIABLE: usize = 64 * 1024;

/// Most of the body read (what is hashed).
const MAX_BODY: usize = 8 * 1024 * 1024;

struct HttpPoll;

struct Subscription {
    request: http::Request,
    every: u64,
    next: u64,
}

thread_local! {
    static SUBSCRIPTIONS: RefCell<BTreeMap<String, Subscription>> = const { RefCell::new(BTreeMap::new()) };
}

/// Where the hash of what a subscription last saw is kept.
fn seen_key(subscription: &str) -> String {
    format!("seen {subscription}")
}

fn parse_every(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (number, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{value}' is not a duration; use e.g. \"30s\" or \"5m\""))?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("'{other}' is not a unit; use ms, s, m or h")),
    };
    match number * factor {
        0..=999 => Err("every must be at least 1s".into()),
        millis => Ok(millis),
    }
}

/// Fetches, and says what was seen: (hash of status and body, status, body).
fn fetch(request: &http::Request) -> Result<(String, u16, Vec<u8>), String> {
    let response = http::send(request).map_err(|error| error.to_string())?;
    let mut hasher = Sha256::new();
    hasher.update(response.status.to_be_bytes());
    hasher.update(&response.body);
    Ok((
        hex::encode(hasher.finalize()),
        response.status,
        response.body,
    ))
}

impl Trigger for HttpPoll {
    fn info() -> Info {
        Info::new(
            "http-poll",
            Kind::Trigger,
            env!("CARGO_PKG_VERSION"),
            "Fetches a URL on a schedule and starts a run when what it gets back changes.",
        )
        .setting("url", true, "http:// or https:// URL; its host must be granted in plugins.grants.http-poll.http_hosts")
        .setting("every", false, "How often to fetch, e.g. \"30s\" (default) or \"5m\"; at least 1s")
        .setting("header.NAME", false, "A request header, e.g. header.Authorization")
    }

    fn subscribe(
        subscription: String,
        settings: Pairs,
        now_millis: u64,
    ) -> Result<Option<u64>, String> {
        let mut request = http::Request {
            max_body: MAX_BODY,
            ..http::Request::get("")
        };
        let mut every = 30_000;
        for (key, value) in settings {
            match key.as_str() {
                "url" => request.url = value,
                "every" => every = parse_every(&value)?,
                header if header.starts_with("header.") => request
                    .headers
                    .push((header["header.".len()..].to_string(), value)),
                other => {
                    return Err(format!(
                        "unknown setting '{other}'; http-poll takes 'url', 'every' and 'header.NAME'"
                    ));
                }
            }
        }
        if request.url.is_empty() {
            return Err("the setting 'url' is required".into());
        }
        // The baseline; kept from before when this subscription was polled already.
        let (hash, _, _) = fetch(&request)?;
        if objects::get(&seen_key(&subscription))?.is_none() {
            objects::put(&seen_key(&subscription), hash.as_bytes())?;
        }
        let next = now_millis + every;
        SUBSCRIPTIONS.with(|subscriptions| {
            subscriptions.borrow_mut().insert(
                subscription,
                Subscription {
                    request,
                    every,
                    next,
                },
            )
        });
        Ok(Some(next))
    }

    fn unsubscribe(subscription: String) {
        SUBSCRIPTIONS.with(|subscriptions| subscriptions.borrow_mut().remove(&subscription));
        if let Err(error) = objects::delete(&seen_key(&subscription)) {
            log(
                LogLevel::Warn,
                &format!("could not forget what was seen: {error}"),
            );
        }
    }

    fn wake(now_millis: u64) -> WakeResult {
        SUBSCRIPTIONS.with(|subscriptions| {
            let mut subscriptions = subscriptions.borrow_mut();
            let mut fires = Vec::new();
            for (id, subscription) in subscriptions.iter_mut() {
                if subscription.next > now_millis {
                    continue;
                }
                subscription.next = now_millis + subscription.every;
                let (hash, status, body) = match fetch(&subscription.request) {
                    Ok(seen) => seen,
                    Err(error) => {
                        log(
                            LogLevel::Warn,
                            &format!("polling {} failed: {error}", subscription.request.url),
                        );
                        continue;
                    }
                };
                let key = seen_key(id);
                let before = objects::get(&key).ok().flatten().unwrap_or_default();
                if before == hash.as_bytes() {
                    continue;
                }
                if let Err(error) = objects::put(&key, hash.as_bytes()) {
                    log(
                        LogLevel::Warn,
                        &format!("could not keep what was seen: {error}"),
                    );
                }
                let body = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY_VARIABLE)])
                    .into_owned();
                fires.push(
                    Fire::new(
                        id.clone(),
                        vec![
                            ("GOFER_POLL_URL".into(), subscription.request.url.clone()),
                            ("GOFER_POLL_STATUS".into(), status.to_string()),
                            ("GOFER_POLL_BODY".into(), body),
                        ],
                    )
                    .idempotent(format!("{id}@{hash}")),
                );
            }
            let next_wake = subscriptions
                .values()
                .map(|subscription| subscription.next)
                .min();
            WakeResult { fires, next_wake }
        })
    }
}

gofer_sdk::export_trigger!(HttpPoll);
