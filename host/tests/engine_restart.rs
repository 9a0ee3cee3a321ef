//! The real Docker engine restarting under a running task: the task ends within bounded time
//! with a reason that says what happened, and the server runs tasks again once the engine is
//! back. A test binary of its own because it stops the engine every other test uses (cargo runs
//! test binaries one at a time).

#[path = "it/support.rs"]
#[allow(dead_code)]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{TestServer, deploy, shell_task, start_run, task_log, wait_for_run};

/// Restarts the engine the way it was started: through systemd when it runs there, else as
/// `scripts/setup.sh` starts it.
fn restart_engine() {
    let under_systemd = Command::new("systemctl")
        .args(["is-active", "--quiet", "docker"])
        .status()
        .is_ok_and(|status| status.success());
    if under_systemd {
        let restarted = Command::new("systemctl")
            .args(["restart", "docker"])
            .status()
            .unwrap();
        assert!(restarted.success(), "systemctl restart docker failed");
    } else {
        let stopped = Command::new("pkill")
            .args(["-x", "dockerd"])
            .status()
            .unwrap();
        assert!(
            stopped.success(),
            "no dockerd to stop (this test needs root)"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Command::new("pgrep")
            .args(["-x", "dockerd"])
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "dockerd did not stop");
            std::thread::sleep(Duration::from_millis(200));
        }
        let started = Command::new("sh")
            .args(["-c", "nohup dockerd >>/var/log/dockerd.log 2>&1 &"])
            .status()
            .unwrap();
        assert!(started.success());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|output| output.status.success())
    {
        assert!(
            Instant::now() < deadline,
            "dockerd did not come back; see /var/log/dockerd.log"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_under_an_engine_restart_ends_saying_so_and_runs_work_again_after() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "restarted", "name": "Restarted", "tasks": [
            shell_task("work", "echo before; sleep 60; echo after", json!({})),
        ]}),
    )
    .await;
    let run_id = start_run(&api, "restarted", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !task_log(&api, "restarted", run_id, "work")
        .await
        .contains("before")
    {
        assert!(Instant::now() < deadline, "the task never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let restarting = Instant::now();
    tokio::task::spawn_blocking(restart_engine).await.unwrap();
    let done = wait_for_run(&api, "restarted", run_id, 60).await;
    assert_eq!(done["status"], "failed", "{done}");
    let (_, task) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/restarted/runs/{run_id}/tasks/work"
        ))
        .await;
    let reason = task["task_execution"]["status_reason"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("shut down while the task ran") && reason.contains("exit code"),
        "{task}"
    );
    assert!(
        restarting.elapsed() < Duration::from_secs(90),
        "{:?}",
        restarting.elapsed()
    );

    // With the engine back, runs work again.
    deploy(
        &api,
        json!({"id": "after", "name": "After", "tasks": [shell_task("work", "echo again", json!({}))]}),
    )
    .await;
    let run_id = start_run(&api, "after", json!({})).await;
    assert_eq!(
        wait_for_run(&api, "after", run_id, 60).await["status"],
        "successful"
    );
}
