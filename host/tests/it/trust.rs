//! Trust rules and lifecycle, on real parts: what comes from outside a pipeline's author reaches
//! tasks as data, a fire starts a run only for its plugin's own stored subscription, every run
//! records who started it, and whatever is deleted is gone (runs stopped, containers removed,
//! triggers unsubscribed, secrets, objects and logs deleted).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::plugins::{fixture, plugins_dir, runs, subscriptions, wait_for_plugins};
use crate::support::{
    Api, TestServer, bootstrap, containers_of, deploy, new_token, register, secured, shell_task,
    start_run, task_log, tasks_of, wait_for_run, wait_until_running,
};

/// Stores a pipeline secret.
async fn put_secret(api: &Api, namespace: &str, pipeline: &str, key: &str, value: &str) {
    let (status, body) = api
        .post(
            &format!("/api/namespaces/{namespace}/pipelines/{pipeline}/secrets"),
            json!({"key": key, "content": value}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Waits (up to 30 s) until the pipeline has a run, and for that run to end.
async fn first_run(api: &Api, pipeline: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(run) = runs(api, pipeline).await.first() {
            let run_id = run["run_id"].as_u64().unwrap();
            return wait_for_run(api, pipeline, run_id, 60).await;
        }
        assert!(Instant::now() < deadline, "no run of {pipeline} started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_webhook_body_naming_a_secret_reaches_the_task_literally() {
    let server = TestServer::start().await;
    let api = server.client();
    let task = shell_task("echo", "echo \"BODY=$GOFER_WEBHOOK_BODY\"", json!({}));
    register(
        &api,
        "default",
        json!({"id": "hooked", "name": "hooked", "tasks": [task]}),
    )
    .await;
    put_secret(&api, "default", "hooked", "deploy_key", "Deploy-Key-4242").await;
    let (status, body) = api
        .post_empty("/api/namespaces/default/pipelines/hooked/configs/1")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    crate::support::ensure_test_image();
    let (status, body) = api
        .post(
            &subscriptions("hooked"),
            json!({"extension_id": "webhook", "subscription_id": "push", "settings": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let response = crate::support::http_client()
        .post(format!("{}/api/external/webhook", server.base_url()))
        .body("pipeline_secret{{deploy_key}}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let run = first_run(&api, "hooked").await;
    assert_eq!(run["status"], "successful", "{run}");
    let run_id = run["run_id"].as_u64().unwrap();
    let log = task_log(&api, "hooked", run_id, "echo").await;
    assert!(
        log.contains("BODY=pipeline_secret{{deploy_key}}"),
        "the body is data: {log}"
    );
    assert!(
        !log.contains("********") && !log.contains("Deploy-Key-4242"),
        "{log}"
    );
    // Recorded as what it is: the trigger's, from outside.
    assert_eq!(run["initiator"]["user"], "webhook trigger (push)", "{run}");
    let variables = run["variables"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .all(|variable| variable["source"] == "extension"),
        "{variables:?}"
    );

    // The pipeline's author may still use the secret: a caller who may read it passes it on.
    let run_id = start_run(
        &api,
        "hooked",
        json!({"GOFER_WEBHOOK_BODY": "pipeline_secret{{deploy_key}}"}),
    )
    .await;
    wait_for_run(&api, "hooked", run_id, 60).await;
    let log = task_log(&api, "hooked", run_id, "echo").await;
    assert!(
        log.contains("BODY=********"),
        "interpolated and masked: {log}"
    );
}

#[tokio::test]
async fn run_variables_reference_only_what_the_caller_may_read() {
    let server = secured().await;
    let root = bootstrap(&server).await;
    let task = shell_task("echo", "echo \"X=$X\"", json!({}));
    register(
        &root,
        "default",
        json!({"id": "refs", "name": "refs", "tasks": [task]}),
    )
    .await;
    put_secret(&root, "default", "refs", "k", "Refs-Secret-77").await;
    let (status, _) = root
        .post_empty("/api/namespaces/default/pipelines/refs/configs/1")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    crate::support::ensure_test_image();
    // May start runs, may not read secrets or objects.
    let (status, body) = root
        .post(
            "/api/roles",
            json!({"id": "starter", "description": "", "permissions": [
                {"resources": ["namespaces:default", "pipelines:.*", "runs"], "actions": ["read", "write"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (secret, _) = new_token(&root, "starter-bot", &["starter"], 0).await;
    let starter = server.client().with_token(&secret);
    for reference in [
        "pipeline_secret{{k}}",
        "global_secret{{k}}",
        "pipeline_object{{k}}",
    ] {
        let (status, body) = starter
            .post(
                "/api/namespaces/default/pipelines/refs/runs",
                json!({"variables": {"X": reference}}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{reference}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(reference) && message.contains("starter-bot"),
            "{message}"
        );
    }
    // A literal is fine, and the run says who started it.
    let (status, body) = starter
        .post(
            "/api/namespaces/default/pipelines/refs/runs",
            json!({"variables": {"X": "plain"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let run_id = body["run"]["run_id"].as_u64().unwrap();
    assert_eq!(body["run"]["initiator"]["user"], "starter-bot");
    assert_ne!(body["run"]["initiator"]["id"], "0");
    wait_for_run(&root, "refs", run_id, 60).await;
    assert!(
        task_log(&root, "refs", run_id, "echo")
            .await
            .contains("X=plain")
    );
}

#[tokio::test]
async fn runs_and_cancellations_record_who_did_them() {
    let server = secured().await;
    let root = bootstrap(&server).await;
    let (secret, token_id) = new_token(&root, "alice-deployer", &["user"], 0).await;
    let alice = server.client().with_token(&secret);
    deploy(
        &root,
        json!({"id": "whodunit", "name": "whodunit", "tasks": [shell_task("nap", "sleep 30", json!({}))]}),
    )
    .await;
    let run_id = start_run(&alice, "whodunit", json!({})).await;
    let (_, run) = alice
        .get(&format!(
            "/api/namespaces/default/pipelines/whodunit/runs/{run_id}"
        ))
        .await;
    assert_eq!(
        run["run"]["initiator"],
        json!({"id": token_id, "user": "alice-deployer"})
    );
    let listed = server.cli(&["--token", &secret, "run", "list", "whodunit"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains("alice-deployer"), "{table}");
    wait_until_running(&root, "whodunit", run_id, "nap").await;
    let (status, body) = alice
        .delete(&format!(
            "/api/namespaces/default/pipelines/whodunit/runs/{run_id}"
        ))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let run = wait_for_run(&root, "whodunit", run_id, 60).await;
    let tasks = tasks_of(&root, "whodunit", run_id).await;
    let reason = tasks["nap"]["status_reason"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("alice-deployer"), "{reason}\n{run}");
}

#[tokio::test]
async fn forged_fires_start_nothing() {
    let server = TestServer::start().await;
    let api = server.client();
    std::fs::create_dir_all(plugins_dir(&server)).unwrap();
    std::fs::copy(fixture("forger"), plugins_dir(&server).join("forger.wasm")).unwrap();
    wait_for_plugins(&api, "forger loads", |plugins| {
        plugins
            .iter()
            .any(|p| p["name"] == "forger" && p["status"] == "loaded")
    })
    .await;
    for pipeline in ["victim", "accomplice"] {
        deploy(
            &api,
            json!({"id": pipeline, "name": pipeline, "tasks": [shell_task("echo", "echo \"FORGED=$FORGED\"", json!({}))]}),
        )
        .await;
    }
    // The victim's interval subscription: its handle is in interval's objects.
    let (status, body) = api
        .post(
            &subscriptions("victim"),
            json!({"extension_id": "interval", "subscription_id": "hourly", "settings": {"every": "1h"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, objects) = api.get("/api/extensions/interval/objects").await;
    let victim_handle = objects["objects"][0]["key"]
        .as_str()
        .unwrap()
        .trim_start_matches("schedule ")
        .to_string();
    let (status, body) = api
        .post(
            &subscriptions("accomplice"),
            json!({"extension_id": "forger", "subscription_id": "mine", "settings": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let forge = |body: String| {
        let request = crate::support::http_client()
            .post(format!("{}/api/external/forger", server.base_url()))
            .body(body);
        async move { request.send().await.unwrap().status() }
    };

    // Another plugin's subscription, made-up names: nothing.
    let status = forge(format!(
        "{victim_handle}\ndefault/victim/hourly\ndefault/accomplice/mine\n0123456789abcdef0123456789abcdef\n"
    ))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        runs(&api, "victim").await.is_empty(),
        "a forged fire started a run"
    );
    assert!(runs(&api, "accomplice").await.is_empty());
    let log = server.log();
    assert!(
        log.contains("ignored a fire for no active subscription") && log.contains("forger"),
        "{log}"
    );

    // Its own subscription, with the handle it was given: a run, as the trigger's.
    assert_eq!(forge("@seen".into()).await, StatusCode::ACCEPTED);
    let run = first_run(&api, "accomplice").await;
    assert_eq!(run["initiator"]["user"], "forger trigger (mine)");

    // Once deleted, that handle fires nothing.
    let path = format!("{}/forger/mine", subscriptions("accomplice"));
    assert_eq!(api.delete(&path).await.0, StatusCode::NO_CONTENT);
    assert_eq!(forge("@seen".into()).await, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(runs(&api, "accomplice").await.len(), 1);
    assert!(runs(&api, "victim").await.is_empty());
}

#[tokio::test]
async fn a_deleted_pipeline_takes_everything_with_it() {
    let server = TestServer::start().await;
    let api = server.client();
    let pipeline = "doomed-pipe";
    let mut sleeper = shell_task(
        "sleeper",
        "echo started; echo got=$OLD; sleep 60",
        json!({}),
    );
    sleeper["variables"] = json!({"OLD": "pipeline_secret{{old}}"});
    register(
        &api,
        "default",
        json!({"id": pipeline, "name": pipeline, "tasks": [sleeper],
               "triggers": [{"plugin": "interval", "id": "often", "settings": {"every": "1s"}}]}),
    )
    .await;
    put_secret(&api, "default", pipeline, "old", "Old-Secret-31337").await;
    let (status, body) = api
        .upload(
            &format!("/api/namespaces/default/pipelines/{pipeline}/objects/cfg"),
            b"old object",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    crate::support::ensure_test_image();
    let (status, body) = api
        .post_empty(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/configs/1"
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The interval fires within a second; its run's container sleeps.
    let deadline = Instant::now() + Duration::from_secs(30);
    let run_id = loop {
        if let Some(run) = runs(&api, pipeline).await.first() {
            break run["run_id"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the interval never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_until_running(&api, pipeline, run_id, "sleeper").await;
    assert!(!containers_of(pipeline).is_empty());
    let logs = server.data_dir.join("logs/default").join(pipeline);
    let objects = server
        .data_dir
        .join("objects/pipeline/default")
        .join(pipeline);
    assert!(logs.exists() && objects.exists());

    let started = Instant::now();
    let (status, body) = api
        .delete(&format!("/api/namespaces/default/pipelines/{pipeline}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        containers_of(pipeline),
        Vec::<String>::new(),
        "no container left"
    );
    assert!(!logs.exists(), "its logs are gone");
    assert!(!objects.exists(), "its objects are gone");
    let (status, _) = api
        .get(&format!("/api/namespaces/default/pipelines/{pipeline}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Registered again under the same id, it starts empty: no runs from the old subscription,
    // no old secret, no old object.
    let mut reader = shell_task("reader", "echo got=$OLD", json!({}));
    reader["variables"] = json!({"OLD": "pipeline_secret{{old}}"});
    deploy(
        &api,
        json!({"id": pipeline, "name": pipeline, "tasks": [reader]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        runs(&api, pipeline).await.is_empty(),
        "the old subscription still fires"
    );
    let (_, listed) = api.get(&subscriptions(pipeline)).await;
    assert_eq!(listed["subscriptions"], json!([]));
    for path in ["secrets", "objects"] {
        let (_, listed) = api
            .get(&format!(
                "/api/namespaces/default/pipelines/{pipeline}/{path}"
            ))
            .await;
        assert_eq!(listed[path], json!([]), "{path}");
    }
    let run_id = start_run(&api, pipeline, json!({})).await;
    let run = wait_for_run(&api, pipeline, run_id, 60).await;
    assert_eq!(run["status"], "failed", "{run}");
    let tasks = tasks_of(&api, pipeline, run_id).await;
    let reason = tasks["reader"]["status_reason"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("'old' does not exist"), "{reason}");
}

#[tokio::test]
async fn a_deleted_namespace_takes_its_pipelines_with_it() {
    let server = TestServer::start().await;
    let api = server.client();
    let (status, _) = api
        .post(
            "/api/namespaces",
            json!({"id": "short-lived", "name": "temp", "description": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let pipeline = "tenant-pipe";
    register(
        &api,
        "short-lived",
        json!({"id": pipeline, "name": pipeline, "tasks": [shell_task("nap", "sleep 60", json!({}))]}),
    )
    .await;
    put_secret(&api, "short-lived", pipeline, "kept", "Tenant-Secret-5").await;
    crate::support::ensure_test_image();
    let base = format!("/api/namespaces/short-lived/pipelines/{pipeline}");
    assert_eq!(
        api.post_empty(&format!("{base}/configs/1")).await.0,
        StatusCode::CREATED
    );
    let (status, body) = api
        .post(&format!("{base}/runs"), json!({"variables": {}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while containers_of(pipeline).is_empty() {
        assert!(Instant::now() < deadline, "the task never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = api.delete("/api/namespaces/short-lived").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(containers_of(pipeline), Vec::<String>::new());
    assert_eq!(
        api.get("/api/namespaces/short-lived").await.0,
        StatusCode::NOT_FOUND
    );
    // Again under the same ids: empty.
    api.post(
        "/api/namespaces",
        json!({"id": "short-lived", "name": "temp", "description": ""}),
    )
    .await;
    register(
        &api,
        "short-lived",
        json!({"id": pipeline, "name": pipeline, "tasks": [shell_task("nap", "true", json!({}))]}),
    )
    .await;
    let (_, secrets) = api.get(&format!("{base}/secrets")).await;
    assert_eq!(secrets["secrets"], json!([]), "{secrets}");
    let (_, listed) = api.get(&format!("{base}/runs")).await;
    assert_eq!(listed["runs"], json!([]));
}

#[tokio::test]
async fn declared_triggers_are_repaired_after_a_crash_between_commit_and_subscribe() {
    let mut server = TestServer::start_with_env(&[("GOFER_FAILPOINT", "deploy-committed")]).await;
    let api = server.client();
    let pipeline = "resilient";
    register(
        &api,
        "default",
        json!({"id": pipeline, "name": pipeline,
               "tasks": [{"id": "report", "plugin": "debug", "settings": {}, "depends_on": {}, "variables": {}}],
               "triggers": [{"plugin": "interval", "id": "often", "settings": {"every": "1s"}}]}),
    )
    .await;
    // The deploy commits, then the process dies before any plugin hears of it.
    let (status, _) = api
        .post_empty(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/configs/1"
        ))
        .await;
    assert!(!status.is_success(), "{status}");
    let exited = server.wait_for_exit(20).await;
    assert!(!exited.success(), "{exited:?}");
    server.remove_env("GOFER_FAILPOINT");
    server.spawn(&[]).await;
    // The committed subscription is there and subscribed again at start: runs arrive.
    let (_, listed) = api.get(&subscriptions(pipeline)).await;
    assert_eq!(
        listed["subscriptions"][0]["subscription_id"], "often",
        "{listed}"
    );
    let run = first_run(&api, pipeline).await;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["initiator"]["user"], "interval trigger (often)");
}

#[tokio::test]
async fn outside_events_are_bounded_in_size_and_rate() {
    let server = TestServer::start_with_env(&[
        ("GOFER_PLUGINS__EXTERNAL_EVENT_MAX_KIB", "1"),
        ("GOFER_PLUGINS__EXTERNAL_EVENTS_PER_MINUTE", "3"),
    ])
    .await;
    let http = crate::support::http_client();
    let post = |plugin: &str, body: Vec<u8>| {
        http.post(format!("{}/api/external/{plugin}", server.base_url()))
            .body(body)
            .send()
    };
    let big = post("webhook", vec![b'x'; 2048]).await.unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(big.text().await.unwrap().contains("external_event_max_kib"));
    // The refused one counted; two more fit in the minute, the next is refused.
    for _ in 0..2 {
        assert_eq!(
            post("webhook", b"{}".to_vec()).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let limited = post("webhook", b"{}".to_vec()).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    // Each plugin has its own budget.
    assert_ne!(
        post("interval", b"{}".to_vec()).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Loads the `forger` fixture and subscribes `pipeline` to it (subscription `mine`).
async fn forger_subscribed(server: &TestServer, api: &Api, pipeline: &str) {
    std::fs::create_dir_all(plugins_dir(server)).unwrap();
    std::fs::copy(fixture("forger"), plugins_dir(server).join("forger.wasm")).unwrap();
    wait_for_plugins(api, "forger loads", |plugins| {
        plugins
            .iter()
            .any(|p| p["name"] == "forger" && p["status"] == "loaded")
    })
    .await;
    deploy(
        api,
        json!({"id": pipeline, "name": pipeline, "tasks": [shell_task("echo", "echo fired", json!({}))]}),
    )
    .await;
    let (status, body) = api
        .post(
            &subscriptions(pipeline),
            json!({"extension_id": "forger", "subscription_id": "mine", "settings": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Sends an outside event to the forger; its status and message.
async fn forge(server: &TestServer, body: &str) -> (StatusCode, String) {
    let response = crate::support::http_client()
        .post(format!("{}/api/external/forger", server.base_url()))
        .body(body.to_string())
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

#[tokio::test]
async fn the_same_fire_twice_starts_one_run_and_says_so() {
    let server = TestServer::start().await;
    let api = server.client();
    forger_subscribed(&server, &api, "once").await;
    // Fired from the plugin's answer, twice with one key: one run.
    assert_eq!(
        forge(&server, "@seen#delivery-1").await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        forge(&server, "@seen#delivery-1").await.0,
        StatusCode::ACCEPTED
    );
    let run = first_run(&api, "once").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs(&api, "once").await.len(), 1, "one run for one key");
    // Fired through fires.send: the outcome comes back, the run's id, then the same as a duplicate.
    let (status, message) = forge(&server, "@now#delivery-2").await;
    assert_eq!(status, StatusCode::OK);
    let run_id = run["run_id"].as_u64().unwrap() + 1;
    assert!(message.contains(&format!("started {run_id}")), "{message}");
    let (_, message) = forge(&server, "@now#delivery-2").await;
    assert!(
        message.contains(&format!("duplicate {run_id}")),
        "{message}"
    );
    let (_, message) = forge(&server, "@now#delivery-1").await;
    assert!(message.contains("duplicate 1"), "{message}");
    // And a refusal says why.
    let (status, _) = api
        .patch(
            "/api/namespaces/default/pipelines/once",
            json!({"state": "disabled"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, message) = forge(&server, "@now#delivery-3").await;
    assert!(
        message.contains("refused") && message.contains("disabled"),
        "{message}"
    );
    assert_eq!(runs(&api, "once").await.len(), 2);
}

#[tokio::test]
async fn a_fire_the_server_stopped_in_the_middle_of_starts_its_run_once_after_restart() {
    let mut server = TestServer::start().await;
    let api = server.client();
    forger_subscribed(&server, &api, "resumed").await;
    // Dies right after the fire is committed, before its run is queued.
    server.stop();
    server.set_env("GOFER_FAILPOINT", "fire-committed");
    server.spawn(&[]).await;
    let (status, _) = forge(&server, "@seen#crash-1").await;
    assert!(!status.is_success(), "{status}");
    let exited = server.wait_for_exit(20).await;
    assert!(!exited.success());
    server.remove_env("GOFER_FAILPOINT");
    server.spawn(&[]).await;
    let run = first_run(&api, "resumed").await;
    assert_eq!(run["initiator"]["user"], "forger trigger (mine)", "{run}");
    // Sent again after the restart: still one run.
    assert_eq!(
        forge(&server, "@seen#crash-1").await.0,
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(runs(&api, "resumed").await.len(), 1);
}
