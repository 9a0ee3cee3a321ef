//! Canary and A/B deployments and re-runs, on real servers: trigger fires and API starts routed
//! by weight (and sticky by a variable), a failing canary rolling itself back, a healthy one
//! promoting itself step by step with its triggers applied at the end, a canary outliving a
//! kill -9 with its tallies, an A/B comparison with its verdict, and re-running failed tasks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Api, TestServer, assert_error, deploy, register, shell_task, start_run, tasks_of, wait_for_run,
};

fn deployments(pipeline: &str) -> String {
    format!("/api/namespaces/default/pipelines/{pipeline}/deployments")
}

/// A pipeline of one shared task (`debug`) exiting with `exit_code`, with `triggers`.
fn debug_config(id: &str, exit_code: u8, triggers: Value) -> Value {
    json!({"id": id, "name": id, "tasks": [
        {"id": "work", "plugin": "debug", "settings": {"exit_code": exit_code.to_string()},
         "depends_on": {}, "variables": {}}],
     "triggers": triggers})
}

async fn start_deployment(api: &Api, pipeline: &str, request: Value) -> Value {
    let (status, body) = api.post(&deployments(pipeline), request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["deployment"].clone()
}

async fn deployment(api: &Api, pipeline: &str, id: u64) -> Value {
    let (status, body) = api.get(&format!("{}/{id}", deployments(pipeline))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["deployment"].clone()
}

async fn config_state(api: &Api, pipeline: &str, version: u64) -> Value {
    let (_, body) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/configs/{version}"
        ))
        .await;
    body["config"]["state"].clone()
}

async fn runs_of(api: &Api, pipeline: &str) -> Vec<Value> {
    let (_, body) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/{pipeline}/runs?limit=1000"
        ))
        .await;
    body["runs"].as_array().cloned().unwrap_or_default()
}

/// Starts runs one after the other, each to its end, until `done` says so (at most `most`).
async fn run_until(
    api: &Api,
    pipeline: &str,
    most: usize,
    variables: impl Fn(usize) -> Value,
    done: impl AsyncFn(&Api) -> bool,
) -> Vec<Value> {
    let mut runs = Vec::new();
    for index in 0..most {
        if done(api).await {
            return runs;
        }
        let run_id = start_run(api, pipeline, variables(index)).await;
        runs.push(wait_for_run(api, pipeline, run_id, 60).await);
        // The deployment is judged as the run's end is announced.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(done(api).await, "still not done after {most} runs");
    runs
}

async fn ended(api: &Api, pipeline: &str, id: u64) -> bool {
    deployment(api, pipeline, id).await["state"] == "Complete"
}

/// The arm a run went to, checked against the version it ran.
fn arm_of(run: &Value, stable: u64, new: u64) -> String {
    let arm = run["routing"]["arm"].as_str().unwrap_or("none").to_string();
    let version = run["pipeline_config_version"].as_u64().unwrap();
    match arm.as_str() {
        "canary" | "b" => assert_eq!(version, new, "{run}"),
        "stable" | "a" => assert_eq!(version, stable, "{run}"),
        other => panic!("a run with no routing ({other}): {run}"),
    }
    arm
}

#[tokio::test]
async fn a_canary_splits_trigger_fired_runs_by_weight_and_records_each_runs_version() {
    let server = TestServer::start().await;
    let api = server.client();
    let every_second = json!([{"plugin": "interval", "id": "tick", "settings": {"every": "1s"}}]);
    deploy(&api, debug_config("split", 0, every_second.clone())).await;
    let first = runs_of(&api, "split").await.len();
    let v2 = register(&api, "default", debug_config("split", 0, every_second)).await;
    let canary = start_deployment(
        &api,
        "split",
        json!({"kind": "canary", "version": v2, "weight": 50, "promote_after": 0, "rollback_after_failures": 0}),
    )
    .await;
    assert_eq!(canary["state"], "Running");
    assert_eq!(canary["rollout"]["weight"], 50);
    let id = canary["deployment_id"].as_u64().unwrap();

    // Forty runs started by the interval trigger after the canary began.
    let deadline = Instant::now() + Duration::from_secs(90);
    let routed = loop {
        let runs: Vec<Value> = runs_of(&api, "split")
            .await
            .into_iter()
            .skip(first)
            .filter(|run| run["routing"]["deployment_id"] == id)
            .collect();
        if runs.len() >= 40 {
            break runs;
        }
        assert!(Instant::now() < deadline, "only {} routed runs", runs.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut counts = BTreeMap::new();
    for run in &routed[..40] {
        assert!(run["initiator"]["id"] == "plugin:interval", "{run}");
        assert_eq!(run["routing"]["reason"], "weight 50%");
        *counts.entry(arm_of(run, 1, v2)).or_insert(0) += 1;
    }
    // Binomial(40, 0.5): outside 8..=32 has a probability below 1e-4.
    let canaries = counts.get("canary").copied().unwrap_or(0);
    assert!((8..=32).contains(&canaries), "{counts:?}");

    // The tallies count the same runs.
    let tallies = deployment(&api, "split", id).await["rollout"]["tallies"].clone();
    let runs: u64 = tallies
        .as_array()
        .unwrap()
        .iter()
        .map(|tally| tally["runs"].as_u64().unwrap())
        .sum();
    assert!(runs >= 40, "{tallies}");
    // Nothing promotes it by itself (promote_after 0): the live version is still v1.
    assert_eq!(config_state(&api, "split", 1).await, "live");
    let cli = server.cli(&["deployment", "status", "split"]);
    let status = String::from_utf8_lossy(&cli.stdout);
    assert!(
        status.contains("gets 50% of new runs") && status.contains("canary"),
        "{status}"
    );
}

#[tokio::test]
async fn a_failing_canary_rolls_itself_back_and_gets_no_more_runs() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(&api, debug_config("shaky", 0, json!([]))).await;
    let v2 = register(&api, "default", debug_config("shaky", 1, json!([]))).await;
    let canary = start_deployment(
        &api,
        "shaky",
        json!({"kind": "canary", "version": v2, "weight": 50, "rollback_after_failures": 2, "promote_after": 100}),
    )
    .await;
    let id = canary["deployment_id"].as_u64().unwrap();
    let runs = run_until(
        &api,
        "shaky",
        80,
        |_| json!({}),
        async |api: &Api| ended(api, "shaky", id).await,
    )
    .await;
    let failed_canaries = runs
        .iter()
        .filter(|run| arm_of(run, 1, v2) == "canary")
        .inspect(|run| assert_eq!(run["status"], "failed", "{run}"))
        .count();
    assert_eq!(failed_canaries, 2);

    let ended = deployment(&api, "shaky", id).await;
    assert_eq!(ended["status"], "Failed", "{ended}");
    assert_eq!(ended["status_reason"]["reason"], "RolledBack");
    let why = ended["status_reason"]["description"].as_str().unwrap();
    assert!(why.contains("2 canary runs of version 2 failed"), "{why}");
    let logged = ended["logs"].to_string();
    assert!(
        logged.contains("started_deployment") && logged.contains("rolled_back_deployment"),
        "{logged}"
    );
    assert_eq!(config_state(&api, "shaky", 1).await, "live");

    // No further runs go to the bad version.
    for _ in 0..10 {
        let run_id = start_run(&api, "shaky", json!({})).await;
        let run = wait_for_run(&api, "shaky", run_id, 30).await;
        assert_eq!(run["pipeline_config_version"], 1, "{run}");
        assert!(run["routing"].is_null(), "{run}");
        assert_eq!(run["status"], "successful");
    }
    // The event stream says so too.
    let (_, events) = api.get("/api/events?reverse=true&limit=100").await;
    assert!(events.to_string().contains("rolled_back_deployment"));
}

#[tokio::test]
async fn a_healthy_canary_promotes_itself_step_by_step_and_its_triggers_then_apply() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(&api, debug_config("steady", 0, json!([]))).await;
    let hourly = json!([{"plugin": "interval", "id": "hourly", "settings": {"every": "1h"}}]);
    let v2 = register(&api, "default", debug_config("steady", 0, hourly)).await;
    let canary = start_deployment(
        &api,
        "steady",
        json!({"kind": "canary", "version": v2, "steps": [25, 50, 100], "promote_after": 3}),
    )
    .await;
    let id = canary["deployment_id"].as_u64().unwrap();
    let subscriptions = "/api/namespaces/default/pipelines/steady/subscriptions";
    assert_eq!(
        api.get(subscriptions).await.1["subscriptions"],
        json!([]),
        "the new version's triggers wait for its promotion"
    );
    run_until(
        &api,
        "steady",
        300,
        |_| json!({}),
        async |api: &Api| ended(api, "steady", id).await,
    )
    .await;

    let done = deployment(&api, "steady", id).await;
    assert_eq!(done["status"], "Successful", "{done}");
    let weights: Vec<u64> = done["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["kind"]["promoted_deployment"]["weight"].as_u64())
        .collect();
    assert_eq!(weights, [50, 100], "{done}");
    assert_eq!(config_state(&api, "steady", v2).await, "live");
    assert_eq!(config_state(&api, "steady", 1).await, "deprecated");
    let subscribed = api.get(subscriptions).await.1["subscriptions"].clone();
    assert_eq!(subscribed[0]["subscription_id"], "hourly", "{subscribed}");
    // New runs now go to v2, unrouted.
    let run_id = start_run(&api, "steady", json!({})).await;
    let run = wait_for_run(&api, "steady", run_id, 30).await;
    assert_eq!(run["pipeline_config_version"], v2);
    assert!(run["routing"].is_null());
}

#[tokio::test]
async fn a_canary_continues_with_its_tallies_after_a_kill_9() {
    let mut server = TestServer::start().await;
    let api = server.client();
    deploy(&api, debug_config("sturdy", 0, json!([]))).await;
    let v2 = register(&api, "default", debug_config("sturdy", 0, json!([]))).await;
    let canary = start_deployment(
        &api,
        "sturdy",
        json!({"kind": "canary", "version": v2, "weight": 50, "promote_after": 4}),
    )
    .await;
    let id = canary["deployment_id"].as_u64().unwrap();
    let canary_runs = async |api: &Api| {
        deployment(api, "sturdy", id).await["rollout"]["tallies"][1]["step_complete"]
            .as_u64()
            .unwrap()
    };
    run_until(
        &api,
        "sturdy",
        100,
        |_| json!({}),
        async |api: &Api| canary_runs(api).await >= 2,
    )
    .await;
    let before = deployment(&api, "sturdy", id).await;
    server.kill();
    server.spawn(&[]).await;
    let api = server.client();
    let after = deployment(&api, "sturdy", id).await;
    assert_eq!(after["state"], "Running", "{after}");
    assert_eq!(after["rollout"], before["rollout"]);

    run_until(
        &api,
        "sturdy",
        100,
        |_| json!({}),
        async |api: &Api| ended(api, "sturdy", id).await,
    )
    .await;
    let done = deployment(&api, "sturdy", id).await;
    assert_eq!(done["status"], "Successful", "{done}");
    assert_eq!(
        done["rollout"]["tallies"][1]["successful"].as_u64(),
        Some(4)
    );
    assert_eq!(config_state(&api, "sturdy", v2).await, "live");
}

#[tokio::test]
async fn an_ab_test_compares_durations_and_promotes_the_winner() {
    let server = TestServer::start().await;
    let api = server.client();
    let config = |script: &str| json!({"id": "split", "name": "split", "parallelism": 4, "tasks": [shell_task("work", script, json!({}))]});
    deploy(&api, config("true")).await;
    let v2 = register(&api, "default", config("sleep 1")).await;
    let test = start_deployment(
        &api,
        "split",
        json!({"kind": "ab", "b": v2, "weight": 50, "sticky_variable": "USER"}),
    )
    .await;
    let id = test["deployment_id"].as_u64().unwrap();
    let mut started = Vec::new();
    for index in 0..20 {
        started.push(start_run(&api, "split", json!({"USER": format!("user-{index}")})).await);
    }
    let mut sides = BTreeMap::new();
    for run_id in started {
        let run = wait_for_run(&api, "split", run_id, 120).await;
        assert_eq!(run["status"], "successful", "{run}");
        assert!(
            run["routing"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("sticky USER=user-")
        );
        *sides.entry(arm_of(&run, 1, v2)).or_insert(0) += 1;
    }
    assert!(sides.values().all(|count| *count >= 5), "{sides:?}");
    // Sticky: the same user goes to the same version again.
    let again = start_run(&api, "split", json!({"USER": "user-3"})).await;
    let first = runs_of(&api, "split").await[3].clone();
    let again = wait_for_run(&api, "split", again, 60).await;
    assert_eq!(again["routing"]["arm"], first["routing"]["arm"]);

    let (status, body) = api
        .get(&format!("{}/{id}/compare", deployments("split")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let comparison = &body["comparison"];
    assert_eq!(comparison["duration"]["significant"], true, "{comparison}");
    assert!(
        comparison["duration"]["says"]
            .as_str()
            .unwrap()
            .starts_with("b (v2) is slower")
    );
    assert_eq!(comparison["success_rate"]["significant"], false);
    let cli = server.cli(&["deployment", "compare", "split"]);
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(
        table.contains("Mann-Whitney U test") && table.contains("b (v2) is slower"),
        "{table}"
    );

    // The winner: A stays live; B gets no more runs.
    let cli = server.cli(&["deployment", "promote", "split", "--version", "1"]);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let done = deployment(&api, "split", id).await;
    assert_eq!(
        (&done["state"], &done["status"]),
        (&json!("Complete"), &json!("Successful"))
    );
    assert_eq!(config_state(&api, "split", 1).await, "live");
}

#[tokio::test]
async fn a_failed_only_rerun_runs_the_failed_task_and_its_dependents() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut three = shell_task(
        "three",
        "test \"$TOKEN\" = s3cret",
        json!({"two": "Success"}),
    );
    three["variables"] = json!({"TOKEN": "pipeline_secret{{token}}"});
    deploy(
        &api,
        json!({"id": "five", "name": "five", "tasks": [
            shell_task("one", "echo one", json!({})),
            shell_task("two", "echo two", json!({"one": "Success"})),
            three,
            shell_task("four", "echo four", json!({"three": "Success"})),
            shell_task("five", "echo five", json!({"one": "Success"})),
        ]}),
    )
    .await;
    let original = start_run(&api, "five", json!({"GREETING": "hi"})).await;
    let run = wait_for_run(&api, "five", original, 60).await;
    assert_eq!(run["status"], "failed");
    let tasks = tasks_of(&api, "five", original).await;
    assert_eq!(tasks["three"]["status"], "failed");
    assert_eq!(tasks["four"]["status"], "skipped");

    // Nothing to re-run yet for a run that is not complete; the cause fixed: a secret added.
    let (status, body) = api
        .post(
            "/api/namespaces/default/pipelines/five/secrets",
            json!({"key": "token", "content": "s3cret"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let rerun_path = format!("/api/namespaces/default/pipelines/five/runs/{original}/rerun");
    let (status, body) = api.post(&rerun_path, json!({"failed_only": true})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let rerun = &body["run"];
    assert_eq!(rerun["rerun_of"], original);
    assert_eq!(rerun["reused_tasks"], json!(["five", "one", "two"]));
    assert_eq!(rerun["variables"][0]["key"], "GREETING");
    let rerun_id = rerun["run_id"].as_u64().unwrap();
    let finished = wait_for_run(&api, "five", rerun_id, 60).await;
    assert_eq!(finished["status"], "successful", "{finished}");
    let tasks = tasks_of(&api, "five", rerun_id).await;
    for reused in ["one", "two", "five"] {
        assert_eq!(tasks[reused]["status"], "successful");
        assert_eq!(
            tasks[reused]["status_reason"]["reason"], "reused",
            "{}",
            tasks[reused]
        );
    }
    for ran in ["three", "four"] {
        assert_eq!(tasks[ran]["status"], "successful", "{}", tasks[ran]);
        assert!(tasks[ran]["status_reason"].is_null());
        assert!(tasks[ran]["started"].as_u64().unwrap() > finished["started"].as_u64().unwrap());
    }

    // A run with nothing failed has nothing to re-run failed-only; a whole re-run is fine.
    let refused = api
        .post(
            &format!("/api/namespaces/default/pipelines/five/runs/{rerun_id}/rerun"),
            json!({"failed_only": true}),
        )
        .await;
    assert_error(&refused, StatusCode::CONFLICT, "no failed or skipped tasks");
    let cli = server.cli(&["run", "rerun", "five", &original.to_string()]);
    let said = String::from_utf8_lossy(&cli.stdout);
    assert!(said.contains(&format!("re-running #{original}")), "{said}");
}

#[tokio::test]
async fn deployment_requests_that_cannot_be_are_refused_with_the_reason() {
    let server = TestServer::start().await;
    let api = server.client();
    let path = deployments("picky");
    deploy(&api, debug_config("picky", 0, json!([]))).await;
    let v2 = register(&api, "default", debug_config("picky", 0, json!([]))).await;
    let cases = [
        (
            json!({"kind": "canary", "version": 9}),
            StatusCode::NOT_FOUND,
            "version 9",
        ),
        (
            json!({"kind": "canary", "version": 1}),
            StatusCode::BAD_REQUEST,
            "already live",
        ),
        (
            json!({"kind": "canary"}),
            StatusCode::BAD_REQUEST,
            "give it",
        ),
        (
            json!({"kind": "canary", "version": v2, "weight": 0}),
            StatusCode::BAD_REQUEST,
            "1 to 99",
        ),
        (
            json!({"kind": "canary", "version": v2, "steps": [50, 10, 100]}),
            StatusCode::BAD_REQUEST,
            "steps must rise",
        ),
        (
            json!({"kind": "canary", "version": v2, "tolerance": 2.0}),
            StatusCode::BAD_REQUEST,
            "tolerance must be between 0 and 1",
        ),
        (
            json!({"kind": "canary", "version": v2, "sticky_variable": "NO SPACES"}),
            StatusCode::BAD_REQUEST,
            "not a variable name",
        ),
        (
            json!({"kind": "ab", "version": v2}),
            StatusCode::BAD_REQUEST,
            "give `b`",
        ),
        (
            json!({"kind": "ab", "a": v2, "b": 1}),
            StatusCode::BAD_REQUEST,
            "starts from the live version",
        ),
        (
            json!({"kind": "ab", "b": v2, "promote_after": 3}),
            StatusCode::BAD_REQUEST,
            "no promotion or rollback rules",
        ),
        (
            json!({"kind": "rolling", "version": v2}),
            StatusCode::BAD_REQUEST,
            "kind",
        ),
        (
            json!({"kind": "canary", "version": v2, "wieght": 5}),
            StatusCode::BAD_REQUEST,
            "wieght",
        ),
    ];
    for (request, status, needle) in cases {
        let response = api.post(&path, request.clone()).await;
        assert_error(&response, status, needle);
    }

    // One deployment at a time: a second one, or v0's deploy, is refused naming the first.
    let canary = start_deployment(&api, "picky", json!({"kind": "canary", "version": v2})).await;
    let id = canary["deployment_id"].as_u64().unwrap();
    let second = api.post(&path, json!({"kind": "ab", "b": v2})).await;
    assert_error(
        &second,
        StatusCode::CONFLICT,
        &format!("deployment {id} of pipeline 'picky' is in progress"),
    );
    let v0_deploy = api
        .post_empty(&format!(
            "/api/namespaces/default/pipelines/picky/configs/{v2}"
        ))
        .await;
    assert_error(&v0_deploy, StatusCode::CONFLICT, "a canary of version 2");
    // Its versions cannot be deleted under it (v3 makes v2 no longer the latest).
    register(&api, "default", debug_config("picky", 0, json!([]))).await;
    let deleted = api
        .delete(&format!(
            "/api/namespaces/default/pipelines/picky/configs/{v2}"
        ))
        .await;
    assert_error(
        &deleted,
        StatusCode::CONFLICT,
        &format!("deployment {id} is running with it"),
    );
    // A canary promotes its own version only.
    let wrong = api
        .post(&format!("{path}/{id}/promote"), json!({"version": 1}))
        .await;
    assert_error(&wrong, StatusCode::BAD_REQUEST, "abort it");
    // Aborted: the live version stays; ending it again is refused.
    let (status, aborted) = api.post_empty(&format!("{path}/{id}/abort")).await;
    assert_eq!(status, StatusCode::OK, "{aborted}");
    assert_eq!(aborted["deployment"]["status_reason"]["reason"], "Aborted");
    let again = api.post_empty(&format!("{path}/{id}/abort")).await;
    assert_error(&again, StatusCode::CONFLICT, "has ended");
    assert_eq!(config_state(&api, "picky", 1).await, "live");
    // A switch has nothing to compare.
    let compared = api.get(&format!("{path}/1/compare")).await;
    assert_error(
        &compared,
        StatusCode::BAD_REQUEST,
        "only a canary or an A/B test",
    );
    // An A/B test needs its winner named.
    let test = start_deployment(&api, "picky", json!({"kind": "ab", "b": v2})).await;
    let id = test["deployment_id"].as_u64().unwrap();
    let unnamed = api.post(&format!("{path}/{id}/promote"), json!({})).await;
    assert_error(&unnamed, StatusCode::BAD_REQUEST, "name the winner");
    let stranger = api
        .post(&format!("{path}/{id}/promote"), json!({"version": 7}))
        .await;
    assert_error(&stranger, StatusCode::BAD_REQUEST, "not in this A/B test");
    let (status, won) = api
        .post(&format!("{path}/{id}/promote"), json!({"version": v2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{won}");
    assert_eq!(config_state(&api, "picky", v2).await, "live");
    // A run may name a registered version; an unknown one is 404.
    let pinned = api
        .post(
            "/api/namespaces/default/pipelines/picky/runs",
            json!({"variables": {}, "version": 1}),
        )
        .await;
    assert_eq!(pinned.0, StatusCode::CREATED, "{}", pinned.1);
    assert_eq!(pinned.1["run"]["pipeline_config_version"], 1);
    let unknown = api
        .post(
            "/api/namespaces/default/pipelines/picky/runs",
            json!({"variables": {}, "version": 42}),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "42");
}
