//! The WebAssembly plugin host: built-in triggers and shared tasks, the plugins folder, and the
//! sandbox, with real components compiled by the build.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Api, TestServer, assert_error, deploy, shell_task, start_run, tasks_of, wait_for_run,
};

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("GOFER_FIXTURE_PLUGINS_DIR")).join(format!("{name}.wasm"))
}

pub(crate) fn plugins_dir(server: &TestServer) -> PathBuf {
    server.data_dir.join("plugins")
}

pub(crate) fn subscriptions(pipeline: &str) -> String {
    format!("/api/namespaces/default/pipelines/{pipeline}/subscriptions")
}

pub(crate) async fn runs(api: &Api, pipeline: &str) -> Vec<Value> {
    let (_, body) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/runs?limit=1000"
        ))
        .await;
    body["runs"].as_array().cloned().unwrap_or_default()
}

/// Waits until `check` holds for the plugin list (up to 10 s).
pub(crate) async fn wait_for_plugins(
    api: &Api,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = api.get("/api/plugins").await;
        let plugins = body["plugins"].as_array().cloned().unwrap_or_default();
        if check(&plugins) {
            return plugins;
        }
        assert!(Instant::now() < deadline, "{what}: {plugins:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drops the `misbehave` fixture into the server's plugins folder and waits until it is loaded.
async fn load_misbehave(server: &TestServer, api: &Api) {
    std::fs::copy(
        fixture("misbehave"),
        plugins_dir(server).join("misbehave.wasm"),
    )
    .unwrap();
    wait_for_plugins(api, "misbehave loads", |plugins| {
        plugins
            .iter()
            .any(|p| p["name"] == "misbehave" && p["status"] == "loaded")
    })
    .await;
}

fn debug_pipeline(id: &str) -> Value {
    json!({"id": id, "name": id, "tasks": [
        {"id": "report", "plugin": "debug", "settings": {"note": "from-debug"}, "depends_on": {}, "variables": {}}
    ]})
}

#[tokio::test]
async fn built_in_plugins_are_listed() {
    let server = TestServer::start().await;
    let api = server.client();
    let (status, body) = api.get("/api/plugins").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "cron",
            "debug",
            "http-poll",
            "http-request",
            "interval",
            "webhook"
        ]
    );
    let (_, interval) = api.get("/api/plugins/interval").await;
    let interval = &interval["plugin"];
    assert_eq!(interval["kind"], "trigger");
    assert_eq!(interval["runtime"], "wasm");
    assert_eq!(interval["source"], "builtin");
    assert_eq!(interval["status"], "loaded");
    assert_eq!(interval["settings"][0]["key"], "every");
    assert_eq!(
        api.get("/api/plugins/debug").await.1["plugin"]["kind"],
        "task"
    );
    assert_error(
        &api.get("/api/plugins/nope").await,
        StatusCode::NOT_FOUND,
        "plugin 'nope' not found",
    );
    let output = server.cli(&["plugin", "list"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && table.contains("interval") && table.contains("builtin"),
        "{table}"
    );
}

#[tokio::test]
async fn interval_starts_runs_every_second_until_unsubscribed_and_survives_a_restart() {
    let mut server = TestServer::start().await;
    let api = server.client();
    deploy(&api, debug_pipeline("ticking")).await;
    let bad = api.post(&subscriptions("ticking"), json!({"extension_id": "interval", "subscription_id": "fast", "settings": {"every": "100ms"}})).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "'every' must be at least 1s");
    let bad = api.post(&subscriptions("ticking"), json!({"extension_id": "interval", "subscription_id": "typo", "settings": {"evry": "1s"}})).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "unknown setting 'evry'");
    let missing = api
        .post(
            &subscriptions("ticking"),
            json!({"extension_id": "ghost", "subscription_id": "abc", "settings": {}}),
        )
        .await;
    assert_error(
        &missing,
        StatusCode::NOT_FOUND,
        "trigger plugin 'ghost' not found",
    );
    let wrong_kind = api
        .post(
            &subscriptions("ticking"),
            json!({"extension_id": "debug", "subscription_id": "abc", "settings": {}}),
        )
        .await;
    assert_error(&wrong_kind, StatusCode::BAD_REQUEST, "is not a trigger");

    let (status, created) = api
        .post(&subscriptions("ticking"), json!({"extension_id": "interval", "subscription_id": "every-second", "settings": {"every": "1s"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["subscription"]["status"], "active");
    let again = api.post(&subscriptions("ticking"), json!({"extension_id": "interval", "subscription_id": "every-second", "settings": {"every": "1s"}})).await;
    assert_error(&again, StatusCode::CONFLICT, "already exists");

    tokio::time::sleep(Duration::from_millis(3600)).await;
    let fired = runs(&api, "ticking").await;
    assert!(
        (2..=5).contains(&fired.len()),
        "about one run a second, got {}",
        fired.len()
    );
    assert_eq!(fired[0]["initiator"]["id"], "plugin:interval");
    let mut starts: Vec<u64> = fired
        .iter()
        .map(|run| run["started"].as_u64().unwrap())
        .collect();
    starts.sort();
    for gap in starts.windows(2).map(|pair| pair[1] - pair[0]) {
        assert!(
            (700..=1600).contains(&gap),
            "runs {gap} ms apart: {starts:?}"
        );
    }

    server.restart().await;
    let before = runs(&api, "ticking").await.len();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(
        runs(&api, "ticking").await.len() > before,
        "the subscription survived the restart"
    );

    let path = format!("{}/interval/every-second", subscriptions("ticking"));
    assert_eq!(
        api.get(&path).await.1["subscription"]["settings"]["every"],
        "1s"
    );
    assert_eq!(api.delete(&path).await.0, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = runs(&api, "ticking").await.len();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        runs(&api, "ticking").await.len(),
        stopped,
        "no runs after unsubscribing"
    );
    assert_error(&api.get(&path).await, StatusCode::NOT_FOUND, "not found");
}

/// The key of the one schedule the interval plugin keeps in its objects (`schedule ` and the
/// subscription's opaque handle), URL-encoded.
async fn schedule_key(api: &Api) -> Option<String> {
    let (_, listed) = api.get("/api/extensions/interval/objects").await;
    let keys: Vec<String> = listed["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|object| object["key"].as_str())
        .filter(|key| key.starts_with("schedule "))
        .map(str::to_string)
        .collect();
    assert!(keys.len() <= 1, "{keys:?}");
    keys.into_iter().next().map(|key| key.replace(' ', "%20"))
}

/// The `(every_ms, first_ms)` the interval plugin keeps in its objects for its one subscription.
async fn kept_schedule(api: &Api) -> Option<(u64, u64)> {
    let key = schedule_key(api).await?;
    let (status, body) = api
        .get(&format!("/api/extensions/interval/objects/{key}"))
        .await;
    if status == StatusCode::NOT_FOUND {
        return None;
    }
    let text = body.as_str().unwrap_or_default().to_string();
    let field = |name: &str| -> u64 {
        text.split_whitespace()
            .find_map(|field| field.strip_prefix(&format!("{name}=")))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    Some((field("every_ms"), field("first_ms")))
}

#[tokio::test]
async fn interval_keeps_its_schedule_in_its_objects_across_restarts() {
    let mut server = TestServer::start().await;
    let api = server.client();
    deploy(&api, debug_pipeline("daily")).await;
    let subscribed = crate::support::now_millis();
    let (status, body) = api
        .post(
            &subscriptions("daily"),
            json!({"extension_id": "interval", "subscription_id": "hourly", "settings": {"every": "1h"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The plugin wrote its schedule through the host's objects interface, in its own scope.
    let (every, next) = kept_schedule(&api).await.expect("a kept schedule");
    assert_eq!(every, 3_600_000);
    assert!(
        (subscribed + 3_600_000..subscribed + 3_610_000).contains(&next),
        "{next} vs {subscribed}"
    );
    // Kept under the subscription's handle: opaque, issued by the server, nothing of its names.
    let key = schedule_key(&api).await.unwrap();
    let handle = key.trim_start_matches("schedule%20");
    assert!(
        handle.len() == 32 && handle.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    // v0's list of a plugin's subscriptions across pipelines.
    let (_, subscribed) = api.get("/api/extensions/interval/subscriptions").await;
    assert_eq!(
        subscribed["subscriptions"][0]["subscription_id"], "hourly",
        "{subscribed}"
    );
    assert_eq!(subscribed["subscriptions"].as_array().unwrap().len(), 1);
    let listed = server.cli(&["subscription", "list", "--plugin", "interval"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("default/daily") && listed.contains("hourly"),
        "{listed}"
    );

    // A restart resumes the schedule instead of starting the hour over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.restart().await;
    assert_eq!(kept_schedule(&api).await, Some((every, next)));
    assert!(runs(&api, "daily").await.is_empty());

    // A run that fell due while the server was down starts once it is back, and the next one
    // is an hour on.
    let first = crate::support::now_millis() - 60_000;
    let overdue = format!("every_ms=3600000 first_ms={first}");
    let (status, body) = api
        .post_raw(
            &format!("/api/extensions/interval/objects/{key}?force=true"),
            &overdue,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs(&api, "daily").await.is_empty() {
        assert!(Instant::now() < deadline, "the overdue run never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        runs(&api, "daily").await.len(),
        1,
        "one run, not one per missed hour"
    );
    // Firing does not rewrite the schedule, and the same due time fired again after another
    // restart (its idempotency key names it) starts no second run.
    assert_eq!(kept_schedule(&api).await, Some((3_600_000, first)));
    server.restart().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(runs(&api, "daily").await.len(), 1, "no second run");

    // Unsubscribing drops the kept schedule.
    let path = format!("{}/interval/hourly", subscriptions("daily"));
    assert_eq!(api.delete(&path).await.0, StatusCode::NO_CONTENT);
    assert_eq!(kept_schedule(&api).await, None);
}

#[tokio::test]
async fn a_trigger_built_for_0_1_keeps_working_unchanged() {
    let server = TestServer::start().await;
    let api = server.client();
    std::fs::copy(
        fixture("legacy-tick"),
        plugins_dir(&server).join("legacy-tick.wasm"),
    )
    .unwrap();
    wait_for_plugins(&api, "legacy-tick loads", |plugins| {
        plugins
            .iter()
            .any(|p| p["name"] == "legacy-tick" && p["status"] == "loaded")
    })
    .await;
    deploy(&api, debug_pipeline("legacy")).await;
    let refused = api
        .post(&subscriptions("legacy"), json!({"extension_id": "legacy-tick", "subscription_id": "fast", "settings": {"every_ms": "5"}}))
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        "every_ms must be at least 100",
    );
    let (status, body) = api
        .post(&subscriptions("legacy"), json!({"extension_id": "legacy-tick", "subscription_id": "ticks", "settings": {"every_ms": "300"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Woken on its schedule: its fires start runs.
    let deadline = Instant::now() + Duration::from_secs(15);
    while runs(&api, "legacy").await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the 0.1 trigger never fired twice"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = runs(&api, "legacy").await[0].clone();
    assert!(
        first["variables"].to_string().contains("LEGACY_TICK"),
        "{first}"
    );

    // Outside events reach it (0.1 sees headers and body only) and its fires start runs.
    let ticked = runs(&api, "legacy").await.len();
    api.delete(&format!("{}/legacy-tick/ticks", subscriptions("legacy")))
        .await;
    let (status, _) = api
        .post(
            &subscriptions("legacy"),
            json!({"extension_id": "legacy-tick", "subscription_id": "hourly", "settings": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let after_unsubscribe = runs(&api, "legacy").await.len();
    assert!(
        after_unsubscribe <= ticked + 1,
        "kept ticking after unsubscribe"
    );
    let response = crate::support::http_client()
        .post(format!(
            "{}/api/external/legacy-tick/any/path?x=1",
            server.base_url()
        ))
        .body("from outside")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.text().await.unwrap(), r#"{"message":"fired 1"}"#);
    let fired = runs(&api, "legacy").await;
    let last = fired.last().unwrap();
    assert!(
        last["variables"].to_string().contains("from outside"),
        "{last}"
    );
    let (_, logs) = api.get("/api/extensions/legacy-tick/logs").await;
    assert!(
        logs.as_str()
            .unwrap_or_default()
            .contains("outside event: from outside"),
        "{logs}"
    );
}

#[tokio::test]
async fn cron_fires_on_its_schedule() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(&api, debug_pipeline("scheduled")).await;
    let bad = api.post(&subscriptions("scheduled"), json!({"extension_id": "cron", "subscription_id": "bad", "settings": {"expression": "every tuesday"}})).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "fields");
    let (status, _) = api
        .post(&subscriptions("scheduled"), json!({"extension_id": "cron", "subscription_id": "every-2s", "settings": {"expression": "*/2 * * * * *"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let fired = runs(&api, "scheduled").await;
    assert!(
        (1..=3).contains(&fired.len()),
        "every 2 s for 4.5 s, got {}",
        fired.len()
    );
    for run in &fired {
        // Fired on an even second.
        let second = (run["started"].as_u64().unwrap() / 1000) % 2;
        assert_eq!(second, 0, "{run}");
        assert!(
            run["variables"]
                .to_string()
                .contains("GOFER_TRIGGER_CRON_TIME")
        );
    }
}

fn sign(secret: &str, body: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    )
}

#[tokio::test]
async fn a_signed_webhook_starts_a_run_and_a_bad_signature_is_rejected() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(&api, debug_pipeline("hooked")).await;
    let (status, _) = api
        .post(&subscriptions("hooked"), json!({"extension_id": "webhook", "subscription_id": "pushes", "settings": {"secret": "s3cret", "events": "push"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let http = crate::support::http_client();
    let url = format!("{}/api/external/webhook", server.base_url());
    let body = r#"{"ref":"refs/heads/main"}"#;
    let forged = http
        .post(&url)
        .header("x-github-event", "push")
        .header("x-hub-signature-256", sign("wrong", body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("signature or token does not match")
    );
    let ignored = http
        .post(&url)
        .header("x-github-event", "issues")
        .header("x-hub-signature-256", sign("s3cret", body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ignored.status(), StatusCode::OK, "other events are ignored");
    assert!(runs(&api, "hooked").await.is_empty());

    let signed = http
        .post(&url)
        .header("x-github-event", "push")
        .header("x-hub-signature-256", sign("s3cret", body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::ACCEPTED);
    let fired = runs(&api, "hooked").await;
    assert_eq!(fired.len(), 1);
    let run = wait_for_run(&api, "hooked", fired[0]["run_id"].as_u64().unwrap(), 30).await;
    assert_eq!(run["status"], "successful");
    let variables = run["variables"].to_string();
    assert!(
        variables.contains("GOFER_WEBHOOK_EVENT") && variables.contains("refs/heads/main"),
        "{variables}"
    );
    let unknown = http
        .post(format!("{}/api/external/nothing", server.base_url()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_shared_task_runs_beside_a_container_task() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(&api, json!({"id": "mixed", "name": "mixed", "tasks": [
        shell_task("build", "echo built", json!({})),
        {"id": "report", "plugin": "debug", "settings": {"note": "hello"}, "depends_on": {"build": "Success"}, "variables": {"STAGE": "report"}},
    ]})).await;
    let run_id = start_run(&api, "mixed", json!({"WHO": "tester"})).await;
    let run = wait_for_run(&api, "mixed", run_id, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    let tasks = tasks_of(&api, "mixed", run_id).await;
    let report = &tasks["report"];
    assert_eq!(report["exit_code"], 0);
    assert!(report["started"].as_u64().unwrap() >= tasks["build"]["ended"].as_u64().unwrap());
    let (_, log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/mixed/runs/{run_id}/tasks/report/logs"
        ))
        .await;
    let log = log.as_str().unwrap();
    for expected in [
        "note=hello",
        "STAGE=report",
        "WHO=tester",
        "GOFER_TASK_ID=report",
    ] {
        assert!(log.contains(expected), "{expected} missing from {log}");
    }
    let unknown = api
        .post(
            "/api/namespaces/default/pipelines/mixed/configs",
            json!({"config": {"id": "mixed", "name": "m", "tasks": [
            {"id": "ghost", "plugin": "nope", "depends_on": {}, "variables": {}}]}}),
        )
        .await;
    assert_error(
        &unknown,
        StatusCode::BAD_REQUEST,
        "task 'ghost' names plugin 'nope'",
    );
    let both = api
        .post("/api/namespaces/default/pipelines/mixed/configs", json!({"config": {"id": "mixed", "name": "m", "tasks": [
            {"id": "both", "plugin": "debug", "image": "busybox", "depends_on": {}, "variables": {}}]}}))
        .await;
    assert_error(&both, StatusCode::BAD_REQUEST, "both an image and a plugin");
}

#[tokio::test]
async fn the_sandbox_stops_misbehaving_plugins_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let api = server.client();
    load_misbehave(&server, &api).await;
    let task = |id: &str, mode: &str| json!({"id": id, "plugin": "misbehave", "settings": {"mode": mode}, "depends_on": {}, "variables": {}, "timeout": "2s"});
    deploy(&api, json!({"id": "sandbox", "name": "sandbox", "tasks": [
        task("spin", "spin"), task("bomb", "bomb"), task("panic", "panic"), task("read", "read"), task("fine", "ok"),
    ]})).await;
    let started = Instant::now();
    let run_id = start_run(&api, "sandbox", json!({})).await;
    let run = wait_for_run(&api, "sandbox", run_id, 60).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let tasks = tasks_of(&api, "sandbox", run_id).await;
    assert_eq!(
        tasks["spin"]["status_reason"]["reason"], "timeout",
        "{}",
        tasks["spin"]
    );
    let bomb = tasks["bomb"]["status_reason"]["description"]
        .as_str()
        .unwrap();
    assert!(bomb.contains("memory limit of 64 MiB"), "{bomb}");
    let panic = tasks["panic"]["status_reason"]["description"]
        .as_str()
        .unwrap();
    assert!(panic.contains("crashed"), "{panic}");
    let (_, panic_log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/sandbox/runs/{run_id}/tasks/panic/logs"
        ))
        .await;
    assert!(
        panic_log.as_str().unwrap().contains("panicked on purpose"),
        "{panic_log}"
    );
    assert_eq!(
        tasks["read"]["exit_code"], 3,
        "reading a host file is denied"
    );
    let (_, read_log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/sandbox/runs/{run_id}/tasks/read/logs"
        ))
        .await;
    assert!(read_log.as_str().unwrap().contains("denied"), "{read_log}");
    assert_eq!(tasks["fine"]["status"], "successful");
    assert_eq!(run["status"], "failed");
    assert_eq!(
        api.get("/api/system/metadata").await.0,
        StatusCode::OK,
        "the server keeps serving"
    );
    // The plugin still works after its other instances trapped.
    let again = start_run(&api, "sandbox", json!({})).await;
    assert_eq!(
        tasks_of(
            &api,
            "sandbox",
            wait_for_run(&api, "sandbox", again, 60).await["run_id"]
                .as_u64()
                .unwrap()
        )
        .await["fine"]["status"],
        "successful"
    );
}

#[tokio::test]
async fn wasm_task_output_is_live_and_capped_and_cancel_stops_the_guest() {
    let server = TestServer::start().await;
    let api = server.client();
    load_misbehave(&server, &api).await;
    let task = |id: &str, mode: &str| json!({"id": id, "plugin": "misbehave", "settings": {"mode": mode}, "depends_on": {}, "variables": {}, "timeout": "60s"});
    deploy(
        &api,
        json!({"id": "live", "name": "live", "tasks": [task("spin", "spin")]}),
    )
    .await;
    deploy(
        &api,
        json!({"id": "flood", "name": "flood", "tasks": [task("flood", "flood")]}),
    )
    .await;

    // What the guest printed is in the log while it still runs.
    let run_id = start_run(&api, "live", json!({})).await;
    crate::support::wait_for_log(&api, "live", run_id, "spin", "spinning").await;
    assert_eq!(
        tasks_of(&api, "live", run_id).await["spin"]["state"],
        "running"
    );
    // Cancelling stops the spinning guest itself, not only the run's bookkeeping.
    let cancelled = Instant::now();
    let run = crate::support::cancel_run(&api, "live", run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    while !server.log().contains("a cancelled shared task was stopped") {
        assert!(
            cancelled.elapsed() < Duration::from_secs(5),
            "{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Output beyond 16 MiB is cut, with a note, and the task still succeeds.
    let run_id = start_run(&api, "flood", json!({})).await;
    let run = wait_for_run(&api, "flood", run_id, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    let log = crate::support::task_log(&api, "flood", run_id, "flood").await;
    assert!(
        log.starts_with("line 0000000\nline 0000001\n"),
        "{}",
        &log[..40]
    );
    assert!(
        log.ends_with("\n[gofer: output cut at 16 MiB]\n"),
        "{}",
        &log[log.len() - 80..]
    );
    assert!(
        (16 << 20..(16 << 20) + 100).contains(&log.len()),
        "{}",
        log.len()
    );
}

#[tokio::test]
async fn the_plugins_folder_is_watched() {
    let server = TestServer::start().await;
    let api = server.client();
    let dir = plugins_dir(&server);
    let dropped = Instant::now();
    std::fs::copy(fixture("misbehave"), dir.join("late.wasm")).unwrap();
    wait_for_plugins(&api, "a dropped plugin loads", |plugins| {
        plugins.iter().any(|p| p["name"] == "misbehave")
    })
    .await;
    assert!(
        dropped.elapsed() < Duration::from_secs(3),
        "took {:?}",
        dropped.elapsed()
    );
    std::fs::write(dir.join("broken.wasm"), b"definitely not wasm").unwrap();
    let plugins = wait_for_plugins(&api, "a broken plugin is reported", |plugins| {
        plugins.iter().any(|p| p["name"] == "broken")
    })
    .await;
    let broken = plugins.iter().find(|p| p["name"] == "broken").unwrap();
    assert_eq!(broken["status"], "failed");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly file"),
        "{broken}"
    );
    std::fs::copy(fixture("future"), dir.join("future.wasm")).unwrap();
    let plugins = wait_for_plugins(&api, "an incompatible plugin is refused", |plugins| {
        plugins.iter().any(|p| p["name"] == "future")
    })
    .await;
    let future = plugins.iter().find(|p| p["name"] == "future").unwrap();
    assert_eq!(future["status"], "failed");
    let reason = future["error"].as_str().unwrap();
    assert!(
        reason.contains("gofer:plugin@0.9.0")
            && reason.contains("supports gofer:plugin@0.1.0 and gofer:plugin@0.2.0"),
        "{reason}"
    );
    // The other plugins were not disturbed.
    assert_eq!(
        api.get("/api/plugins/interval").await.1["plugin"]["status"],
        "loaded"
    );
    std::fs::remove_file(dir.join("late.wasm")).unwrap();
    wait_for_plugins(&api, "a removed plugin goes", |plugins| {
        !plugins.iter().any(|p| p["name"] == "misbehave")
    })
    .await;
}

#[tokio::test]
async fn triggers_declared_in_the_config_follow_deployments() {
    let server = TestServer::start().await;
    let api = server.client();
    let config = |triggers: Value| {
        json!({"id": "declared", "name": "declared", "triggers": triggers, "tasks": [
            {"id": "only", "plugin": "debug", "depends_on": {}, "variables": {}}]})
    };
    let bad = api
        .post(
            "/api/namespaces/default/pipelines/declared/configs",
            json!({"config": config(json!([{"plugin": "nope", "id": "abc"}]))}),
        )
        .await;
    assert_error(
        &bad,
        StatusCode::BAD_REQUEST,
        "trigger 'abc' names plugin 'nope'",
    );
    let twice = api
        .post(
            "/api/namespaces/default/pipelines/declared/configs",
            json!({"config": config(json!([
            {"plugin": "interval", "id": "abc", "settings": {"every": "1h"}},
            {"plugin": "interval", "id": "abc", "settings": {"every": "2h"}}]))}),
        )
        .await;
    assert_error(&twice, StatusCode::BAD_REQUEST, "declared more than once");

    // v1 declares an hourly interval and a refused cron; an API-made subscription exists too.
    deploy(
        &api,
        config(json!([
            {"plugin": "interval", "id": "hourly", "settings": {"every": "1h"}},
            {"plugin": "cron", "id": "broken", "settings": {"expression": "not cron"}},
        ])),
    )
    .await;
    api.post(
        &subscriptions("declared"),
        json!({"extension_id": "webhook", "subscription_id": "by-hand", "settings": {}}),
    )
    .await;
    let (_, listed) = api.get(&subscriptions("declared")).await;
    let listed = listed["subscriptions"].as_array().unwrap().clone();
    let find = |list: &[Value], id: &str| list.iter().find(|s| s["subscription_id"] == id).cloned();
    assert_eq!(find(&listed, "hourly").unwrap()["status"], "active");
    let broken = find(&listed, "broken").unwrap();
    assert_eq!(broken["status"], "error");
    assert!(
        broken["status_reason"]["description"]
            .as_str()
            .unwrap()
            .contains("fields"),
        "{broken}"
    );

    // v2 changes the interval to every second and drops the cron: runs start, 'broken' goes.
    deploy(
        &api,
        config(json!([{"plugin": "interval", "id": "hourly", "settings": {"every": "1s"}}])),
    )
    .await;
    let (_, listed) = api.get(&subscriptions("declared")).await;
    let listed = listed["subscriptions"].as_array().unwrap().clone();
    assert!(find(&listed, "broken").is_none());
    assert_eq!(find(&listed, "hourly").unwrap()["settings"]["every"], "1s");
    assert!(
        find(&listed, "by-hand").is_some(),
        "API-made subscriptions are left alone"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !runs(&api, "declared").await.is_empty(),
        "the re-subscribed interval fires"
    );

    // v3 declares nothing: the declared subscription is removed and no more runs start.
    deploy(&api, config(json!([]))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = runs(&api, "declared").await.len();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(runs(&api, "declared").await.len(), count);
    let (_, listed) = api.get(&subscriptions("declared")).await;
    let ids: Vec<&str> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscription_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["by-hand"]);
}

#[tokio::test]
async fn http_request_reaches_granted_hosts_only() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A loopback HTTP server that counts what reaches it.
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(|headers: axum::http::HeaderMap, body: String| async move {
                let token = headers
                    .get("x-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                (
                    StatusCode::CREATED,
                    format!("got {body} with token {token}"),
                )
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "nothing here") })
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    next.run(request).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_file(
        dir.path(),
        "gofer.toml",
        &format!("[plugins.grants.http-request]\nhttp_hosts = [\"127.0.0.1:{port}\"]\n"),
    );
    let server = TestServer::start_with(&[], &["--config", config.to_str().unwrap()]).await;
    let api = server.client();
    let task = |id: &str, settings: Value| json!({"id": id, "plugin": "http-request", "settings": settings, "depends_on": {}, "variables": {}});
    let granted = format!("http://127.0.0.1:{port}");
    deploy(&api, json!({"id": "calls", "name": "calls", "tasks": [
        task("post", json!({"url": format!("{granted}/hook"), "method": "POST", "body": "payload", "header.X-Token": "abc"})),
        task("missing", json!({"url": format!("{granted}/nothing")})),
        task("allowed-404", json!({"url": format!("{granted}/nothing"), "expect_status": "404"})),
        task("other-host", json!({"url": format!("http://localhost:{port}/hook"), "method": "POST"})),
        task("other-port", json!({"url": "http://127.0.0.1:9/"})),
        task("bad-url", json!({"url": "ftp://example.com/file"})),
    ]})).await;
    let run_id = start_run(&api, "calls", json!({})).await;
    wait_for_run(&api, "calls", run_id, 60).await;
    let tasks = tasks_of(&api, "calls", run_id).await;
    let exit = |id: &str| tasks[id]["exit_code"].as_u64();
    assert_eq!(exit("post"), Some(0));
    assert_eq!(exit("missing"), Some(1));
    assert_eq!(exit("allowed-404"), Some(0));
    assert_eq!(exit("other-host"), Some(3));
    assert_eq!(exit("other-port"), Some(3));
    assert_eq!(exit("bad-url"), Some(2));
    let log = |id: &str| {
        let api = api.clone();
        let path = format!("/api/namespaces/default/pipelines/calls/runs/{run_id}/tasks/{id}/logs");
        async move {
            api.get(&path)
                .await
                .1
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    let post = log("post").await;
    assert!(
        post.contains("HTTP 201") && post.contains("got payload with token abc"),
        "{post}"
    );
    let refused = log("other-host").await;
    assert!(refused.contains("HttpRequestDenied"), "{refused}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "only the three granted requests reached the server"
    );
    // A bad grant stops start-up with the key named.
    let refused = crate::support::refused_start(
        dir.path(),
        "[plugins.grants.debug]\nhttp_hosts = [\"http://x/\"]\n",
    );
    assert!(
        refused.contains("plugins.grants.debug.http_hosts"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_granted_directory_is_readable_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_file(
        dir.path(),
        "gofer.toml",
        "[plugins.grants.misbehave]\nread_dirs = [\"/etc\"]\n",
    );
    let server = TestServer::start_with(&[], &["--config", config.to_str().unwrap()]).await;
    let api = server.client();
    load_misbehave(&server, &api).await;
    deploy(&api, json!({"id": "reader", "name": "reader", "tasks": [
        {"id": "read", "plugin": "misbehave", "settings": {"mode": "read"}, "depends_on": {}, "variables": {}},
    ]})).await;
    let run_id = start_run(&api, "reader", json!({})).await;
    wait_for_run(&api, "reader", run_id, 60).await;
    let task = &tasks_of(&api, "reader", run_id).await["read"];
    assert_eq!(task["exit_code"], 0, "{task}");
    let (_, log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/reader/runs/{run_id}/tasks/read/logs"
        ))
        .await;
    assert!(
        log.as_str().unwrap().contains("bytes of /etc/passwd"),
        "{log}"
    );
    let refused = crate::support::refused_start(
        dir.path(),
        "[plugins.grants.misbehave]\nread_dirs = [\"relative/dir\"]\n",
    );
    assert!(
        refused.contains("plugins.grants.misbehave.read_dirs"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_webhook_secret_can_come_from_the_secret_store() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(&api, debug_pipeline("stored")).await;
    let missing = api
        .post(
            &subscriptions("stored"),
            json!({"extension_id": "webhook", "subscription_id": "pushes",
            "settings": {"secret": "pipeline_secret{{hook_secret}}", "events": "push"}}),
        )
        .await;
    assert_error(
        &missing,
        StatusCode::BAD_REQUEST,
        "setting secret: pipeline secret 'hook_secret' does not exist",
    );
    let (status, _) = api
        .post(
            "/api/namespaces/default/pipelines/stored/secrets",
            json!({"key": "hook_secret", "content": "from-the-store-42"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api
        .post(
            &subscriptions("stored"),
            json!({"extension_id": "webhook", "subscription_id": "pushes",
            "settings": {"secret": "pipeline_secret{{hook_secret}}", "events": "push"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The subscription keeps the reference, never the value.
    let (_, listed) = api.get(&subscriptions("stored")).await;
    assert!(
        !listed.to_string().contains("from-the-store-42"),
        "{listed}"
    );
    assert!(
        listed
            .to_string()
            .contains("pipeline_secret{{hook_secret}}"),
        "{listed}"
    );
    let body = r#"{"ref":"refs/heads/main"}"#;
    let signed = crate::support::http_client()
        .post(format!("{}/api/external/webhook", server.base_url()))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", sign("from-the-store-42", body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::ACCEPTED);
    assert_eq!(runs(&api, "stored").await.len(), 1);
}

#[tokio::test]
async fn a_wasm_plugin_keeps_its_own_objects_within_limits() {
    let server = TestServer::start_with_env(&[
        ("GOFER_PLUGINS__OBJECT_LIMIT", "5"),
        ("GOFER_PLUGINS__OBJECT_MAX_KIB", "1"),
    ])
    .await;
    let api = server.client();
    load_misbehave(&server, &api).await;
    deploy(&api, json!({"id": "hoarder", "name": "hoarder", "tasks": [
        {"id": "hoard", "plugin": "misbehave", "settings": {"mode": "hoard"}, "depends_on": {}, "variables": {}},
    ]}))
    .await;
    let run_id = start_run(&api, "hoarder", json!({})).await;
    let run = wait_for_run(&api, "hoarder", run_id, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    let log = crate::support::task_log(&api, "hoarder", run_id, "hoard").await;
    for expected in [
        "big: the value is 2097152 bytes; a plugin object may be at most 1024 bytes",
        "empty key: invalid object key \"\"",
        "stored 5 keys, then: the plugin already has 5 objects (plugins.object_limit)",
        "replace k0: stored",
        "k0 = again",
        "keys: k1,k2,k3,k4,k0",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} is missing from:\n{log}"
        );
    }
    // The same objects, seen by the operator, in the plugin's own scope only.
    let (_, listed) = api.get("/api/extensions/misbehave/objects").await;
    assert_eq!(listed["objects"].as_array().unwrap().len(), 5, "{listed}");
    let (_, value) = api.get("/api/extensions/misbehave/objects/k0").await;
    assert_eq!(value, "again");
    let (_, others) = api.get("/api/extensions/debug/objects").await;
    assert_eq!(others["objects"], json!([]));
}

/// Deadlines hold while a guest is blocked in a host call (here WASI's clock: a 60 s sleep),
/// not only while it computes; a cancel stops it at once; the server serves meanwhile.
#[tokio::test]
async fn a_guest_blocked_in_a_host_call_meets_its_deadline_and_its_cancel() {
    let server =
        TestServer::start_with_env(&[("GOFER_PLUGINS__GRANTS__FORGER__CALL_TIMEOUT_MS", "4000")])
            .await;
    let api = server.client();
    load_misbehave(&server, &api).await;
    std::fs::copy(fixture("forger"), plugins_dir(&server).join("forger.wasm")).unwrap();
    wait_for_plugins(&api, "forger loads", |plugins| {
        plugins
            .iter()
            .any(|p| p["name"] == "forger" && p["status"] == "loaded")
    })
    .await;
    let task = |timeout: &str| json!({"id": "nap", "plugin": "misbehave", "settings": {"mode": "sleep"}, "depends_on": {}, "variables": {}, "timeout": timeout});
    deploy(
        &api,
        json!({"id": "napper", "name": "napper", "tasks": [task("1s")]}),
    )
    .await;

    // A shared task: failed at its 1 s timeout, not after its 60 s sleep.
    let started = Instant::now();
    let run_id = start_run(&api, "napper", json!({})).await;
    let answered = Instant::now();
    assert_eq!(api.get("/api/system/metadata").await.0, StatusCode::OK);
    assert!(answered.elapsed() < Duration::from_millis(500));
    let run = wait_for_run(&api, "napper", run_id, 30).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let tasks = tasks_of(&api, "napper", run_id).await;
    assert_eq!(tasks["nap"]["status_reason"]["reason"], "timeout", "{run}");

    // Cancelled while blocked: stopped within a moment.
    deploy(
        &api,
        json!({"id": "napper", "name": "napper", "tasks": [task("60s")]}),
    )
    .await;
    let run_id = start_run(&api, "napper", json!({})).await;
    crate::support::wait_for_log(&api, "napper", run_id, "nap", "sleeping").await;
    let cancelled = Instant::now();
    let run = crate::support::cancel_run(&api, "napper", run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        cancelled.elapsed() < Duration::from_secs(2),
        "{:?}",
        cancelled.elapsed()
    );
    assert!(server.log().contains("a cancelled shared task was stopped"));
    let log = crate::support::task_log(&api, "napper", run_id, "nap").await;
    assert!(!log.contains("woke up"), "{log}");

    // A trigger call blocked the same way fails at the plugin's own deadline (4 s here, set for
    // it), and the plugin works again after (a fresh instance).
    deploy(&api, debug_pipeline("blocked")).await;
    let sleepy = |id: &str, millis: u64| json!({"extension_id": "forger", "subscription_id": id, "settings": {"sleep_ms": millis.to_string()}});
    let started = Instant::now();
    let (status, body) = api
        .post(&subscriptions("blocked"), sleepy("forever", 60_000))
        .await;
    assert!(status.is_server_error(), "{status} {body}");
    assert!(
        body["message"].as_str().unwrap().contains("deadline"),
        "{body}"
    );
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(8)).contains(&took),
        "{took:?}"
    );
    let (status, body) = api
        .post(&subscriptions("blocked"), sleepy("brief", 2_000))
        .await;
    assert_eq!(status, StatusCode::CREATED, "within its 4 s: {body}");
}

/// A polling trigger (built with the SDK against gofer:plugin@0.2.0) fetches a granted loopback
/// server and starts a run each time what it gets back changes; a host not granted is refused at
/// subscribe.
#[tokio::test]
async fn a_polling_trigger_fires_when_what_it_polls_changes() {
    use std::sync::{Arc, Mutex};
    let content = Arc::new(Mutex::new("version 1".to_string()));
    let served = Arc::clone(&content);
    let app = axum::Router::new().route(
        "/release",
        axum::routing::get(move || {
            let served = Arc::clone(&served);
            async move { served.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_file(
        dir.path(),
        "gofer.toml",
        &format!("[plugins.grants.http-poll]\nhttp_hosts = [\"127.0.0.1:{port}\"]\n"),
    );
    let server = TestServer::start_with(&[], &["--config", config.to_str().unwrap()]).await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "watcher", "name": "watcher", "tasks": [shell_task("show", "echo \"seen=$GOFER_POLL_BODY\"", json!({}))]}),
    )
    .await;
    // Not granted: refused at once, with the reason.
    let (status, body) = api
        .post(
            &subscriptions("watcher"),
            json!({"extension_id": "http-poll", "subscription_id": "elsewhere",
                   "settings": {"url": format!("http://localhost:{port}/release"), "every": "1s"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("request failed"),
        "{body}"
    );
    let (status, body) = api
        .post(
            &subscriptions("watcher"),
            json!({"extension_id": "http-poll", "subscription_id": "release",
                   "settings": {"url": format!("http://127.0.0.1:{port}/release"), "every": "1s"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Nothing changed: no run.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(runs(&api, "watcher").await.is_empty());
    // A change: one run, with what was seen.
    *content.lock().unwrap() = "version 2".into();
    let deadline = Instant::now() + Duration::from_secs(15);
    let run_id = loop {
        if let Some(run) = runs(&api, "watcher").await.first() {
            break run["run_id"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the change was never noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_for_run(&api, "watcher", run_id, 60).await;
    let log = crate::support::task_log(&api, "watcher", run_id, "show").await;
    assert!(log.contains("seen=version 2"), "{log}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs(&api, "watcher").await.len(), 1, "one run per change");
}

/// The webhook routes by the path after /api/external/webhook and checks a query token.
#[tokio::test]
async fn a_webhook_routes_by_path_and_checks_a_query_token() {
    let server = TestServer::start().await;
    let api = server.client();
    for pipeline in ["deployer", "builder"] {
        deploy(&api, debug_pipeline(pipeline)).await;
    }
    for (pipeline, settings) in [
        (
            "deployer",
            json!({"path": "/deploy", "token": "s3cr3t-token"}),
        ),
        ("builder", json!({"path": "/build"})),
    ] {
        let (status, body) = api
            .post(
                &subscriptions(pipeline),
                json!({"extension_id": "webhook", "subscription_id": "hook", "settings": settings}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let http = crate::support::http_client();
    let send = |path: &str| {
        http.post(format!("{}/api/external/webhook{path}", server.base_url()))
            .body("{}")
            .send()
    };
    assert_eq!(
        send("/deploy?token=wrong").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send("/deploy").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send("/elsewhere").await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(runs(&api, "deployer").await.is_empty());
    assert!(runs(&api, "builder").await.is_empty());
    assert_eq!(
        send("/deploy?x=1&token=s3cr3t-token")
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(send("/build").await.unwrap().status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs(&api, "deployer").await.is_empty() || runs(&api, "builder").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the routed requests started no runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(runs(&api, "deployer").await.len(), 1);
    assert_eq!(runs(&api, "builder").await.len(), 1);
}

/// What a plugin writes (WIT `log`, a trigger's output) is kept per plugin and readable, whole
/// and followed, through v0's `GET /api/extensions/{id}/logs` and `gofer plugin logs`; v0's
/// extension list answers with the triggers.
#[tokio::test]
async fn a_plugins_own_log_is_kept_and_readable() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    // http-poll logs each failed poll: it polls a server that goes away.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/x", axum::routing::get(|| async { "v1" }));
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_file(
        dir.path(),
        "gofer.toml",
        &format!("[plugins.grants.http-poll]\nhttp_hosts = [\"127.0.0.1:{port}\"]\n"),
    );
    let server = TestServer::start_with(&[], &["--config", config.to_str().unwrap()]).await;
    let api = server.client();
    deploy(&api, debug_pipeline("logged")).await;
    let (status, body) = api
        .post(
            &subscriptions("logged"),
            json!({"extension_id": "http-poll", "subscription_id": "poll",
                   "settings": {"url": format!("http://127.0.0.1:{port}/x"), "every": "1s"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut request = format!("ws://{}/api/extensions/http-poll/logs", server.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("gofer-api-version", "v0".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    serving.abort();
    let mut seen = String::new();
    while !seen.contains("polling http://127.0.0.1") {
        match tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a live line within 15 s")
            .unwrap()
            .unwrap()
        {
            Message::Text(line) => seen.push_str(&line),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
    assert!(seen.contains("warn") && seen.contains("failed"), "{seen}");
    let (status, text) = api.download("/api/extensions/http-poll/logs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&text).contains("polling http://127.0.0.1"));
    let printed = server.cli(&["plugin", "logs", "http-poll"]);
    assert!(
        String::from_utf8_lossy(&printed.stdout).contains("polling http://127.0.0.1"),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    assert_eq!(
        api.get("/api/extensions/nothing-like-it/logs").await.0,
        StatusCode::NOT_FOUND
    );
    // v0's extension endpoints.
    let (_, listed) = api.get("/api/extensions").await;
    let names: Vec<&str> = listed["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["registration"]["extension_id"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"interval") && names.contains(&"http-poll"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"debug"),
        "tasks were not v0 extensions: {names:?}"
    );
    let (status, one) = api.get("/api/extensions/webhook").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["extension"]["state"], "running");
    let (status, body) = api
        .post(
            "/api/extensions",
            json!({"id": "x", "image": "y", "settings": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("plugins folder"),
        "{body}"
    );
    assert_eq!(
        api.delete("/api/extensions/webhook").await.0,
        StatusCode::BAD_REQUEST
    );
}
