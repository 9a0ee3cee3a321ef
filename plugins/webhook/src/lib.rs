//! `webhook`: starts runs on HTTP requests to `/api/external/webhook[/{path}]`. A subscription
//! with a `secret` only accepts requests signed like GitHub's webhooks (`X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256 of the body>`); with a `token`, only requests whose query carries it
//! (`?token=...`, for senders that cannot sign); `path` routes by what follows
//! `/api/external/webhook` (`/deploy`: only `/api/external/webhook/deploy`); `events` limits it to
//! some `X-GitHub-Event` values. A delivery sent again with the same `X-GitHub-Delivery` starts
//! no second run.

use std::cell::RefCell;
use std::collections::BTreeMap;

use gofer_sdk::plugin::{
    ExternalEvent, ExternalResponse, Fire, Info, Kind, Pairs, Parameter, Trigger, WakeResult,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Largest body passed on to the run as `GOFER_WEBHOOK_BODY`.
const MAX_BODY_VARIABLE: usize = 64 * 1024;

struct Webhook;

#[derive(Default)]
struct Subscription {
    secret: Option<String>,
    token: Option<String>,
    path: Option<String>,
    events: Option<Vec<String>>,
}

/// The value of `name` in a query string (`a=1&token=x`), as sent (no decoding: tokens are plain).
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Compares without telling, by its time, how much of a secret matched.
fn same(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

thread_local! {
    static SUBSCRIPTIONS: RefCell<BTreeMap<String, Subscription>> = const { RefCell::new(BTreeMap::new()) };
}

fn header<'a>(event: &'a ExternalEvent, name: &str) -> Option<&'a str> {
    event
        .headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn signature_matches(secret: &str, body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex_digest) = signature.and_then(|signature| signature.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

impl Trigger for Webhook {
    fn info() -> Info {
        Info {
            name: "webhook".into(),
            kind: Kind::Trigger,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Starts runs on HTTP requests to POST /api/external/webhook (GitHub-compatible signatures).".into(),
            settings: vec![
                Parameter {
                    key: "secret".into(),
                    required: false,
                    documentation: "Only accept requests signed with this secret (X-Hub-Signature-256).".into(),
                },
                Parameter {
                    key: "token".into(),
                    required: false,
                    documentation: "Only accept requests whose query has token=<this> (for senders that cannot sign).".into(),
                },
                Parameter {
                    key: "path".into(),
                    required: false,
                    documentation: "Only requests to /api/external/webhook<path>, e.g. \"/deploy\".".into(),
                },
                Parameter {
                    key: "events".into(),
                    required: false,
                    documentation: "Comma-separated X-GitHub-Event values to accept, e.g. \"push,release\".".into(),
                },
            ],
        }
    }

    fn subscribe(
        subscription: String,
        settings: Pairs,
        _now_millis: u64,
    ) -> Result<Option<u64>, String> {
        let mut parsed = Subscription::default();
        for (key, value) in settings {
            match key.as_str() {
                "secret" if value.is_empty() => return Err("the setting 'secret' is empty".into()),
                "secret" => parsed.secret = Some(value),
                "token" if value.is_empty() => return Err("the setting 'token' is empty".into()),
                "token" => parsed.token = Some(value),
                "path" if !value.starts_with('/') => {
                    return Err(format!(
                        "the setting 'path' must start with '/', got '{value}'"
                    ));
                }
                "path" => parsed.path = Some(value),
                "events" => {
                    parsed.events = Some(
                        value
                            .split(',')
                            .map(|event| event.trim().to_string())
                            .filter(|event| !event.is_empty())
                            .collect(),
                    )
                }
                other => {
                    return Err(format!(
                        "unknown setting '{other}'; webhook takes 'secret', 'token', 'path' and 'events'"
                    ));
                }
            }
        }
        SUBSCRIPTIONS.with(|subscriptions| subscriptions.borrow_mut().insert(subscription, parsed));
        Ok(None)
    }

    fn unsubscribe(subscription: String) {
        SUBSCRIPTIONS.with(|subscriptions| subscriptions.borrow_mut().remove(&subscription));
    }

    fn wake(_now_millis: u64) -> WakeResult {
        WakeResult {
            fires: Vec::new(),
            next_wake: None,
        }
    }

    fn external_event(event: ExternalEvent) -> ExternalResponse {
        let kind = header(&event, "x-github-event").unwrap_or("").to_string();
        let delivery = header(&event, "x-github-delivery")
            .unwrap_or("")
            .to_string();
        let signature = header(&event, "x-hub-signature-256");
        let body = String::from_utf8_lossy(&event.body[..event.body.len().min(MAX_BODY_VARIABLE)])
            .into_owned();
        let rejected = std::cell::Cell::new(0);
        let token = query_value(&event.query, "token");
        let fires: Vec<Fire> = SUBSCRIPTIONS.with(|subscriptions| {
            subscriptions
                .borrow()
                .iter()
                .filter(|(_, subscription)| {
                    subscription
                        .path
                        .as_deref()
                        .is_none_or(|path| path == event.path)
                })
                .filter(|(_, subscription)| match (&subscription.token, token) {
                    (Some(expected), Some(given)) if same(expected, given) => true,
                    (Some(_), _) => {
                        rejected.set(rejected.get() + 1);
                        false
                    }
                    (None, _) => true,
                })
                .filter(|(_, subscription)| match &subscription.secret {
                    Some(secret) if !signature_matches(secret, &event.body, signature) => {
                        rejected.set(rejected.get() + 1);
                        false
                    }
                    _ => true,
                })
                .filter(|(_, subscription)| {
                    subscription
                        .events
                        .as_ref()
                        .is_none_or(|events| events.contains(&kind))
                })
                .map(|(id, _)| {
                    let fire = Fire::new(
                        id.clone(),
                        vec![
                            ("GOFER_WEBHOOK_EVENT".into(), kind.clone()),
                            ("GOFER_WEBHOOK_DELIVERY".into(), delivery.clone()),
                            ("GOFER_WEBHOOK_BODY".into(), body.clone()),
                        ],
                    );
                    // A delivery sent again (GitHub retries with the same id) starts no second run.
                    if delivery.is_empty() {
                        fire
                    } else {
                        fire.idempotent(format!("{id}/{delivery}"))
                    }
                })
                .collect()
        });
        match (fires.len(), rejected.get()) {
            (0, 0) => ExternalResponse {
                status: 200,
                message: "no subscription matched this request".into(),
                fires,
            },
            (0, _) => ExternalResponse {
                status: 401,
                message: "the request's signature or token does not match".into(),
                fires,
            },
            (started, _) => ExternalResponse {
                status: 202,
                message: format!("started {started} run(s)"),
                fires,
            },
        }
    }
}

gofer_sdk::export_trigger!(Webhook);
