//! The Podman scheduler (`scheduler.engine = "podman"`): the same pipelines, unchanged, through
//! Podman's Docker-compatible service on its default socket (scripts/podman.sh starts it and
//! loads the test image into Podman's store). The containers are Podman's, not Docker's.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    TestServer, cancel_run, deploy, shell_task, start_run, task_log, tasks_of, wait_for_run,
    wait_until_running,
};

/// Podman is installed, its service answers and it holds the test image (idempotent).
fn ensure_podman() {
    static READY: std::sync::Once = std::sync::Once::new();
    READY.call_once(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/podman.sh");
        let output = Command::new("bash").arg(script).output().unwrap();
        assert!(
            output.status.success(),
            "scripts/podman.sh: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// Names of the containers an engine's CLI (`docker` or `podman`) has for a pipeline.
fn containers(cli: &str, pipeline: &str) -> Vec<String> {
    let output = Command::new(cli)
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=dev.gofer.pipeline={pipeline}"),
        ])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_pipeline_runs_unchanged_on_podman() {
    ensure_podman();
    let server = TestServer::start_with_env(&[
        ("GOFER_SCHEDULER__ENGINE", "podman"),
        ("GOFER_RUNS__REMOVE_CONTAINERS", "false"),
    ])
    .await;
    let api = server.client();

    // A DAG that shares the run's workspace, with a memory limit and a failing exit code.
    let mut write = shell_task(
        "write",
        "echo built > \"$GOFER_WORKSPACE/artifact\"; echo wrote",
        json!({}),
    );
    write["workspace"] = json!(true);
    write["resources"] = json!({"memory": "32m"});
    let mut read = shell_task(
        "read",
        "echo \"read $(cat /gofer/workspace/artifact)\"; exit 3",
        json!({"write": "success"}),
    );
    read["workspace"] = json!(true);
    let skipped = shell_task("skipped", "echo never", json!({"read": "success"}));
    deploy(
        &api,
        json!({"id": "podded", "name": "podded", "tasks": [write, read, skipped]}),
    )
    .await;
    let run_id = start_run(&api, "podded", json!({})).await;
    let run = wait_for_run(&api, "podded", run_id, 60).await;
    assert_eq!(run["status"], "failed", "{run}");
    let tasks = tasks_of(&api, "podded", run_id).await;
    assert_eq!(tasks["write"]["status"], "successful", "{}", tasks["write"]);
    assert_eq!(tasks["read"]["exit_code"], 3, "{}", tasks["read"]);
    assert_eq!(
        tasks["skipped"]["status"], "skipped",
        "{}",
        tasks["skipped"]
    );
    assert!(
        task_log(&api, "podded", run_id, "read")
            .await
            .contains("read built")
    );
    // They ran in Podman, with the limit as Podman holds it, and not in Docker.
    let ran = containers("podman", "podded");
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(containers("docker", "podded").is_empty());
    let write_container = ran.iter().find(|name| name.contains("_write_")).unwrap();
    let memory = Command::new("podman")
        .args([
            "inspect",
            "--format",
            "{{.HostConfig.Memory}}",
            write_container,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&memory.stdout).trim(),
        (32u64 << 20).to_string()
    );

    // Cancelling stops a long task's container.
    deploy(
        &api,
        json!({"id": "podlong", "name": "podlong", "tasks": [
            shell_task("sleep", "sleep 600", json!({}))
        ]}),
    )
    .await;
    let run_id = start_run(&api, "podlong", json!({})).await;
    wait_until_running(&api, "podlong", run_id, "sleep").await;
    let started = Instant::now();
    let run = cancel_run(&api, "podlong", run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(started.elapsed() < Duration::from_secs(15));

    let mut all = containers("podman", "podded");
    all.extend(containers("podman", "podlong"));
    let _ = Command::new("podman")
        .args(["rm", "-f"])
        .args(&all)
        .output();
}
