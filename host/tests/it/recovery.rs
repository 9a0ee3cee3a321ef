//! Durability: a server killed with SIGKILL mid-run picks up where it was on restart.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{TestServer, deploy, shell_task, start_run, tasks_of, wait_for_run};

#[tokio::test]
async fn runs_in_flight_survive_a_kill_9_of_the_server() {
    let mut server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "rec-long", "name": "long", "tasks": [
            shell_task("long", "echo begin; sleep 4; echo end", json!({})),
            shell_task("after", "echo after", json!({"long": "Success"})),
        ]}),
    )
    .await;
    deploy(
        &api,
        json!({"id": "rec-exit", "name": "exit", "tasks": [
            shell_task("quick", "echo going; sleep 1; exit 3", json!({})),
        ]}),
    )
    .await;
    deploy(
        &api,
        json!({"id": "rec-queue", "name": "queue", "parallelism": 1, "tasks": [
            shell_task("step", "sleep 1; echo step done", json!({})),
        ]}),
    )
    .await;
    let long = start_run(&api, "rec-long", json!({})).await;
    let exit = start_run(&api, "rec-exit", json!({})).await;
    let queued_first = start_run(&api, "rec-queue", json!({})).await;
    let queued_second = start_run(&api, "rec-queue", json!({})).await;

    // Wait until the long task and the quick task run, then kill the server without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let long_state = tasks_of(&api, "rec-long", long)
            .await
            .get("long")
            .map(|t| t["state"].clone());
        let exit_state = tasks_of(&api, "rec-exit", exit)
            .await
            .get("quick")
            .map(|t| t["state"].clone());
        if long_state == Some(json!("running")) && exit_state == Some(json!("running")) {
            break;
        }
        assert!(Instant::now() < deadline, "the tasks never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed_at = crate::support::now_millis();
    server.kill();
    // The quick task exits (code 3) while no server is watching.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.spawn(&[]).await;

    let run = wait_for_run(&api, "rec-long", long, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    let tasks = tasks_of(&api, "rec-long", long).await;
    let started = tasks["long"]["started"].as_u64().unwrap();
    assert!(
        started < killed_at,
        "the running container was reattached, not restarted (started {started}, killed {killed_at})"
    );
    assert_eq!(tasks["long"]["attempt"], 1);
    assert_eq!(tasks["after"]["status"], "successful");
    let log = api
        .get(&format!(
            "/api/namespaces/default/pipelines/rec-long/runs/{long}/tasks/long/logs"
        ))
        .await
        .1;
    assert_eq!(log.as_str().unwrap(), "begin\nend\n", "the log is intact");

    let run = wait_for_run(&api, "rec-exit", exit, 60).await;
    assert_eq!(run["status"], "failed");
    let quick = &tasks_of(&api, "rec-exit", exit).await["quick"];
    assert_eq!(
        quick["exit_code"], 3,
        "the real exit code is recorded: {quick}"
    );
    assert_eq!(quick["status_reason"]["reason"], "abnormal_exit");

    for run_id in [queued_first, queued_second] {
        let run = wait_for_run(&api, "rec-queue", run_id, 60).await;
        assert_eq!(run["status"], "successful", "queued runs resume: {run}");
    }
    assert!(crate::support::containers_of("rec-long").is_empty());
}

#[tokio::test]
async fn timeouts_keep_counting_across_a_restart() {
    let mut server = TestServer::start_with_env(&[("GOFER_RUNS__STOP_TIMEOUT_SECS", "1")]).await;
    let api = server.client();
    let mut slow_task = shell_task("slow", "sleep 60", json!({}));
    slow_task["timeout"] = json!("6s");
    deploy(
        &api,
        json!({"id": "rec-task-timeout", "name": "task timeout", "tasks": [slow_task]}),
    )
    .await;
    deploy(
        &api,
        json!({"id": "rec-run-timeout", "name": "run timeout", "timeout": "6s", "tasks": [
            shell_task("slow", "sleep 60", json!({})),
        ]}),
    )
    .await;
    let task_run = start_run(&api, "rec-task-timeout", json!({})).await;
    let run_run = start_run(&api, "rec-run-timeout", json!({})).await;
    crate::support::wait_until_running(&api, "rec-task-timeout", task_run, "slow").await;
    crate::support::wait_until_running(&api, "rec-run-timeout", run_run, "slow").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.spawn(&[]).await;

    // Six seconds from when they started, not from the restart (which would make it 10 s or more).
    let run = wait_for_run(&api, "rec-task-timeout", task_run, 60).await;
    let task = &tasks_of(&api, "rec-task-timeout", task_run).await["slow"];
    assert_eq!(task["status_reason"]["reason"], "timeout", "{task}");
    let took = task["ended"].as_u64().unwrap() - task["started"].as_u64().unwrap();
    assert!(
        (5_500..9_500).contains(&took),
        "the task timed out after {took} ms: {run}"
    );

    let run = wait_for_run(&api, "rec-run-timeout", run_run, 60).await;
    let reason = run["status_reason"].to_string();
    assert!(reason.contains("timeout of 6s"), "{run}");
    let task = &tasks_of(&api, "rec-run-timeout", run_run).await["slow"];
    let took = run["ended"].as_u64().unwrap() - task["created"].as_u64().unwrap();
    assert!(
        (5_500..9_500).contains(&took),
        "the run timed out after {took} ms: {run}"
    );
}
