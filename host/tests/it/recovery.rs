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
