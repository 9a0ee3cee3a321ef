//! Runs on the real Docker engine with a locally built image: DAG semantics, queueing,
//! cancellation, timeouts, retries, logs and error cases.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    TestServer, assert_error, containers_of, deploy, shell_task, start_run, task_log, tasks_of,
    wait_for_run, wait_until_running,
};

fn config(id: &str, tasks: Value) -> Value {
    json!({"id": id, "name": id, "parallelism": 0, "tasks": tasks})
}

fn path(pipeline: &str) -> String {
    format!("/api/namespaces/default/pipelines/{pipeline}")
}

#[tokio::test]
async fn a_one_task_run_succeeds_and_a_failing_one_records_its_exit_code() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        config(
            "one-ok",
            json!([shell_task("hello", "echo hello $WHO", json!({}))]),
        ),
    )
    .await;
    let run_id = start_run(&api, "one-ok", json!({"WHO": "world"})).await;
    let run = wait_for_run(&api, "one-ok", run_id, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    assert_eq!(run["status_reason"], Value::Null);
    assert_eq!(run["pipeline_config_version"], 1);
    assert!(run["ended"].as_u64().unwrap() >= run["started"].as_u64().unwrap());
    let task = &tasks_of(&api, "one-ok", run_id).await["hello"];
    assert_eq!(
        (
            task["state"].as_str(),
            task["status"].as_str(),
            task["exit_code"].as_u64()
        ),
        (Some("complete"), Some("successful"), Some(0))
    );
    assert!(task["started"].as_u64().unwrap() > 0);
    let variables: Vec<(String, String, String)> = task["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["key"].as_str().unwrap().into(),
                v["value"].as_str().unwrap().into(),
                v["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    for expected in [
        ("GOFER_PIPELINE_ID", "one-ok", "system"),
        ("GOFER_RUN_ID", "1", "system"),
        ("GOFER_TASK_ID", "hello", "system"),
        ("GOFER_NAMESPACE_ID", "default", "system"),
        ("WHO", "world", "run_options"),
    ] {
        assert!(
            variables.contains(&(expected.0.into(), expected.1.into(), expected.2.into())),
            "{expected:?} missing from {variables:?}"
        );
    }
    let logs = crate::support::http_client()
        .get(format!(
            "{}{}/runs/{run_id}/tasks/hello/logs",
            server.base_url(),
            path("one-ok")
        ))
        .header("gofer-api-version", "v0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(logs, "hello world\n");
    assert!(
        containers_of("one-ok").is_empty(),
        "finished containers are removed"
    );

    deploy(
        &api,
        config(
            "one-bad",
            json!([shell_task("fails", "echo about to fail; exit 3", json!({}))]),
        ),
    )
    .await;
    let run_id = start_run(&api, "one-bad", json!({})).await;
    let run = wait_for_run(&api, "one-bad", run_id, 60).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["status_reason"]["reason"], "abnormal_exit");
    assert!(
        run["status_reason"]["description"]
            .as_str()
            .unwrap()
            .contains("fails")
    );
    let task = &tasks_of(&api, "one-bad", run_id).await["fails"];
    assert_eq!(task["exit_code"], 3);
    assert_eq!(task["status"], "failed");
    assert_eq!(
        task["status_reason"]["description"],
        "The task exited with code 3"
    );
}

#[tokio::test]
async fn a_dag_follows_its_conditions_and_parents_finish_before_children_start() {
    let server = TestServer::start().await;
    let api = server.client();
    let tasks = json!([
        shell_task("good", "sleep 0.3; exit 0", json!({})),
        shell_task("bad", "exit 1", json!({})),
        shell_task("after-ok", "exit 0", json!({"good": "Success"})),
        shell_task("on-failure", "exit 0", json!({"bad": "Failure"})),
        shell_task("needs-success", "exit 0", json!({"bad": "Success"})),
        shell_task("cascade", "exit 0", json!({"needs-success": "Success"})),
        shell_task("any-skip", "exit 0", json!({"needs-success": "Any"})),
        shell_task("not-run-on-ok", "exit 0", json!({"good": "Failure"})),
        shell_task(
            "join",
            "exit 0",
            json!({"after-ok": "success", "on-failure": "any", "cascade": "any"})
        ),
    ]);
    deploy(&api, config("dag", tasks)).await;
    let run_id = start_run(&api, "dag", json!({})).await;
    let run = wait_for_run(&api, "dag", run_id, 120).await;
    let tasks = tasks_of(&api, "dag", run_id).await;
    let status = |id: &str| tasks[id]["status"].as_str().unwrap().to_string();
    assert_eq!(status("good"), "successful");
    assert_eq!(status("bad"), "failed");
    assert_eq!(status("after-ok"), "successful");
    assert_eq!(status("on-failure"), "successful");
    assert_eq!(status("needs-success"), "skipped");
    assert_eq!(
        status("cascade"),
        "skipped",
        "skips cascade through success"
    );
    assert_eq!(
        status("any-skip"),
        "successful",
        "any is met by a skipped parent"
    );
    assert_eq!(status("not-run-on-ok"), "skipped");
    assert_eq!(status("join"), "successful");
    assert_eq!(
        tasks["needs-success"]["status_reason"]["reason"],
        "failed_precondition"
    );
    assert!(
        tasks["needs-success"]["status_reason"]["description"]
            .as_str()
            .unwrap()
            .contains("parent 'bad' to be successful")
    );
    assert_eq!(
        tasks["needs-success"]["started"], 0,
        "a skipped task never starts"
    );
    assert_eq!(run["status"], "failed", "'bad' failed, so the run failed");
    // Parents always finish before their children start.
    for (child, task) in &tasks {
        let started = task["started"].as_u64().unwrap();
        if started == 0 {
            continue;
        }
        for parent in task["task"]["depends_on"].as_object().unwrap().keys() {
            let parent_ended = tasks[parent]["ended"].as_u64().unwrap();
            assert!(
                parent_ended <= started,
                "{child} started at {started} before {parent} ended at {parent_ended}"
            );
        }
    }
    // Independent roots run in parallel: 'bad' started before 'good' (which sleeps) ended.
    assert!(tasks["bad"]["started"].as_u64().unwrap() < tasks["good"]["ended"].as_u64().unwrap());
    let never_ran = api
        .get(&format!("{}/runs/{run_id}/tasks/cascade/logs", path("dag")))
        .await;
    assert_error(
        &never_ran,
        StatusCode::NOT_FOUND,
        "task 'cascade' has no logs yet: it is skipped and never ran",
    );
}

#[tokio::test]
async fn parallelism_one_queues_runs_one_after_another() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut serial = config(
        "serial",
        json!([shell_task("work", "sleep 0.5", json!({}))]),
    );
    serial["parallelism"] = json!(1);
    deploy(&api, serial).await;
    let mut posts = Vec::new();
    for _ in 0..3 {
        let api = api.clone();
        posts.push(tokio::spawn(async move {
            let started = Instant::now();
            let id = start_run(&api, "serial", json!({})).await;
            (id, started.elapsed())
        }));
    }
    let mut ids = Vec::new();
    for post in posts {
        let (id, took) = post.await.unwrap();
        assert!(
            took < Duration::from_secs(2),
            "POST returned after {took:?}: it must not wait for the queue"
        );
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, [1, 2, 3]);
    let mut spans = Vec::new();
    for id in ids {
        let run = wait_for_run(&api, "serial", id, 120).await;
        assert_eq!(run["status"], "successful", "{run}");
        let task = &tasks_of(&api, "serial", id).await["work"];
        spans.push((
            task["started"].as_u64().unwrap(),
            task["ended"].as_u64().unwrap(),
        ));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlapped: {spans:?}");
    }
    let (_, listed) = api
        .get(&format!("{}/runs?reverse=true&limit=2", path("serial")))
        .await;
    let listed: Vec<u64> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [3, 2]);
}

#[tokio::test]
async fn cancelling_a_run_stops_and_removes_its_containers() {
    let server = TestServer::start().await;
    let api = server.client();
    let tasks = json!([
        shell_task(
            "long",
            "trap 'exit 0' TERM; echo waiting; sleep 60 & wait",
            json!({})
        ),
        shell_task("later", "echo never", json!({"long": "Any"})),
    ]);
    deploy(&api, config("cancelme", tasks)).await;
    let run_id = start_run(&api, "cancelme", json!({})).await;
    wait_until_running(&api, "cancelme", run_id, "long").await;
    assert_eq!(
        containers_of("cancelme").len(),
        1,
        "one container is running"
    );
    let cancelled_at = Instant::now();
    assert_eq!(
        api.delete(&format!("{}/runs/{run_id}", path("cancelme")))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let run = wait_for_run(&api, "cancelme", run_id, 60).await;
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(20),
        "cancellation took {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["status_reason"]["reason"], "user_cancelled");
    let tasks = tasks_of(&api, "cancelme", run_id).await;
    assert_eq!(tasks["long"]["status"], "cancelled");
    assert_eq!(
        tasks["later"]["status"], "cancelled",
        "a waiting task is cancelled too"
    );
    assert!(
        containers_of("cancelme").is_empty(),
        "containers removed: {:?}",
        containers_of("cancelme")
    );
    let again = api
        .delete(&format!("{}/runs/{run_id}", path("cancelme")))
        .await;
    assert_error(&again, StatusCode::CONFLICT, "already complete");
    let (_, events) = api.get("/api/events?reverse=true&limit=20").await;
    assert!(events.to_string().contains("started_run_cancellation"));
}

#[tokio::test]
async fn cancelling_one_task_lets_the_run_go_on() {
    let server = TestServer::start().await;
    let api = server.client();
    let tasks = json!([
        shell_task("stuck", "sleep 60", json!({})),
        shell_task("cleanup", "echo cleaning", json!({"stuck": "Any"})),
        shell_task("next", "echo next", json!({"stuck": "Success"})),
    ]);
    deploy(&api, config("cancel-task", tasks)).await;
    let run_id = start_run(&api, "cancel-task", json!({})).await;
    wait_until_running(&api, "cancel-task", run_id, "stuck").await;
    let cancel = api
        .delete(&format!(
            "{}/runs/{run_id}/tasks/stuck?wait_for=0",
            path("cancel-task")
        ))
        .await;
    assert_eq!(cancel.0, StatusCode::NO_CONTENT, "{}", cancel.1);
    let run = wait_for_run(&api, "cancel-task", run_id, 60).await;
    let tasks = tasks_of(&api, "cancel-task", run_id).await;
    assert_eq!(tasks["stuck"]["status"], "cancelled");
    assert_eq!(
        tasks["cleanup"]["status"], "skipped",
        "'any' is not met by a cancelled parent"
    );
    assert_eq!(tasks["next"]["status"], "skipped");
    assert_eq!(run["status"], "cancelled");
}

#[tokio::test]
async fn timeouts_fail_tasks_and_runs_and_retries_try_again() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut slow = shell_task("slow", "sleep 30", json!({}));
    slow["timeout"] = json!("1s");
    let mut flaky = shell_task(
        "flaky",
        "echo try $GOFER_TASK_ATTEMPT; [ $GOFER_TASK_ATTEMPT -ge 2 ]",
        json!({}),
    );
    flaky["retries"] = json!(2);
    let mut hopeless = shell_task("hopeless", "exit 4", json!({}));
    hopeless["retries"] = json!(1);
    deploy(&api, config("limits", json!([slow, flaky, hopeless]))).await;
    let run_id = start_run(&api, "limits", json!({})).await;
    let run = wait_for_run(&api, "limits", run_id, 120).await;
    let tasks = tasks_of(&api, "limits", run_id).await;
    assert_eq!(tasks["slow"]["status"], "failed");
    assert_eq!(tasks["slow"]["status_reason"]["reason"], "timeout");
    assert!(
        tasks["slow"]["status_reason"]["description"]
            .as_str()
            .unwrap()
            .contains("1s")
    );
    let took =
        tasks["slow"]["ended"].as_u64().unwrap() - tasks["slow"]["started"].as_u64().unwrap();
    assert!(
        took < 15_000,
        "the timed-out task was stopped promptly ({took} ms)"
    );
    assert_eq!(tasks["flaky"]["status"], "successful");
    assert_eq!(tasks["flaky"]["attempt"], 2);
    assert_eq!(tasks["hopeless"]["status"], "failed");
    assert_eq!(tasks["hopeless"]["attempt"], 2);
    assert_eq!(tasks["hopeless"]["exit_code"], 4);
    assert_eq!(run["status"], "failed");
    let logs = crate::support::http_client()
        .get(format!(
            "{}{}/runs/{run_id}/tasks/flaky/logs",
            server.base_url(),
            path("limits")
        ))
        .header("gofer-api-version", "v0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        logs.contains("try 1")
            && logs.contains("attempt 1 of 3 exited with code 1")
            && logs.contains("try 2"),
        "{logs}"
    );
    let (_, events) = api.get("/api/events?limit=1000").await;
    let flaky_starts = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"]["started_task_execution"]["task_execution_id"] == "flaky")
        .count();
    assert_eq!(flaky_starts, 2, "each attempt is visible as an event");

    let mut run_limited = config(
        "run-timeout",
        json!([shell_task("forever", "sleep 60", json!({}))]),
    );
    run_limited["timeout"] = json!("1s");
    deploy(&api, run_limited).await;
    let run_id = start_run(&api, "run-timeout", json!({})).await;
    let run = wait_for_run(&api, "run-timeout", run_id, 60).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["status_reason"]["reason"], "timeout");
}

#[tokio::test]
async fn missing_images_no_live_config_and_bad_requests_are_explained() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut missing = shell_task("ghost", "true", json!({}));
    missing["image"] = json!("gofer-no-such-image:never");
    deploy(&api, config("no-image", json!([missing]))).await;
    let run_id = start_run(&api, "no-image", json!({})).await;
    let run = wait_for_run(&api, "no-image", run_id, 60).await;
    assert_eq!(run["status"], "failed");
    let task = &tasks_of(&api, "no-image", run_id).await["ghost"];
    assert_eq!(task["status_reason"]["reason"], "scheduler_error");
    let description = task["status_reason"]["description"].as_str().unwrap();
    assert!(
        description.contains("image 'gofer-no-such-image:never' is not available"),
        "{description}"
    );

    crate::support::register(
        &api,
        "default",
        config(
            "undeployed",
            json!([shell_task("a-task", "true", json!({}))]),
        ),
    )
    .await;
    let refused = api
        .post(
            &format!("{}/runs", path("undeployed")),
            json!({"variables": {}}),
        )
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        "pipeline 'undeployed' has no live config",
    );
    assert_error(
        &api.post(&format!("{}/runs", path("nowhere")), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "pipeline 'nowhere'",
    );
    assert_error(
        &api.post(
            &format!("{}/runs", path("no-image")),
            json!({"variables": {"A": 1}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "variables",
    );
    assert_error(
        &api.get(&format!("{}/runs/99", path("no-image"))).await,
        StatusCode::NOT_FOUND,
        "run 99",
    );
    assert_error(
        &api.get(&format!("{}/runs/1/tasks/nope", path("no-image")))
            .await,
        StatusCode::NOT_FOUND,
        "task 'nope'",
    );
    let log = api
        .get(&format!("{}/runs/1/tasks/ghost/logs", path("no-image")))
        .await;
    assert!(
        log.1
            .as_str()
            .unwrap()
            .contains("could not start: image 'gofer-no-such-image:never'"),
        "{}",
        log.1
    );

    api.patch(&path("no-image"), json!({"state": "disabled"}))
        .await;
    assert_error(
        &api.post(&format!("{}/runs", path("no-image")), json!({}))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "disabled",
    );
    api.patch("/api/system", json!({"ignore_pipeline_run_events": true}))
        .await;
    assert_error(
        &api.post(&format!("{}/runs", path("undeployed")), json!({}))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "paused",
    );
}

#[tokio::test]
async fn an_unreachable_docker_engine_fails_tasks_with_a_reason_but_the_server_runs() {
    let mut server =
        TestServer::start_with_env(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]).await;
    let api = server.client();
    deploy(
        &api,
        config("no-engine", json!([shell_task("any", "true", json!({}))])),
    )
    .await;
    let run_id = start_run(&api, "no-engine", json!({})).await;
    let run = wait_for_run(&api, "no-engine", run_id, 60).await;
    assert_eq!(run["status"], "failed");
    let task = &tasks_of(&api, "no-engine", run_id).await["any"];
    let description = task["status_reason"]["description"].as_str().unwrap();
    assert!(
        description
            .contains("the container engine cannot be reached at unix:///nonexistent/docker.sock"),
        "{description}"
    );
    assert!(server.stop());

    // The configured engine and socket are the ones used (here Podman's, which is not running).
    let server = TestServer::start_with_env(&[
        ("GOFER_SCHEDULER__ENGINE", "podman"),
        ("GOFER_SCHEDULER__SOCKET", "/nonexistent/podman.sock"),
    ])
    .await;
    let api = server.client();
    deploy(
        &api,
        config("no-podman", json!([shell_task("any", "true", json!({}))])),
    )
    .await;
    let run_id = start_run(&api, "no-podman", json!({})).await;
    wait_for_run(&api, "no-podman", run_id, 60).await;
    let task = &tasks_of(&api, "no-podman", run_id).await["any"];
    let description = task["status_reason"]["description"].as_str().unwrap();
    assert!(
        description
            .contains("the container engine cannot be reached at unix:///nonexistent/podman.sock"),
        "{description}"
    );
}

/// The earlier Gofer did not check task ids; its configs (ids like `task_one`) register and run.
#[tokio::test]
async fn task_ids_the_earlier_gofer_accepted_register_and_run() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "legacy", "name": "legacy", "tasks": [
            shell_task("task_one", "echo one", json!({})),
            shell_task("x", "echo x", json!({"task_one": "Success"})),
            shell_task("v1.2-build", "echo dotted", json!({"x": "Success"})),
        ]}),
    )
    .await;
    let run_id = start_run(&api, "legacy", json!({})).await;
    let run = wait_for_run(&api, "legacy", run_id, 60).await;
    assert_eq!(run["status"], "successful", "{run}");
    assert!(
        task_log(&api, "legacy", run_id, "task_one")
            .await
            .contains("one")
    );
    assert!(
        task_log(&api, "legacy", run_id, "v1.2-build")
            .await
            .contains("dotted")
    );
    for bad in ["..", ".hidden", "a/b", "with space", ""] {
        let config = json!({"id": "legacy", "name": "legacy", "tasks": [shell_task(bad, "true", json!({}))]});
        let (status, body) = api
            .post(
                "/api/namespaces/default/pipelines/legacy/configs",
                json!({"config": config}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
    }
}

/// A task with a memory limit that allocates past it is killed by the engine and fails saying
/// so; a CPU limit reaches the container; a bad limit is refused when the config is registered.
#[tokio::test]
async fn resource_limits_reach_the_container_and_a_task_past_its_memory_fails_saying_so() {
    let server = TestServer::start_with_env(&[("GOFER_RUNS__REMOVE_CONTAINERS", "false")]).await;
    let api = server.client();
    let mut hog = shell_task(
        "hog",
        // dd's buffer is one 64 MiB block, filled from /dev/zero: past a 16 MiB limit.
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
        json!({}),
    );
    hog["resources"] = json!({"memory": "16m"});
    let mut modest = shell_task("modest", "echo within limits", json!({}));
    modest["resources"] = json!({"cpus": 0.5, "memory": "32m"});
    deploy(&api, config("limited", json!([hog, modest]))).await;
    let run_id = start_run(&api, "limited", json!({})).await;
    let run = wait_for_run(&api, "limited", run_id, 60).await;
    assert_eq!(run["status"], "failed", "{run}");
    let tasks = tasks_of(&api, "limited", run_id).await;
    let hog = &tasks["hog"];
    assert_eq!(hog["status"], "failed", "{hog}");
    assert_eq!(hog["exit_code"], 137, "{hog}");
    // Said for certain when the engine flags the kill as out of memory, which it does not
    // always do under load ("most likely" then).
    let reason = hog["status_reason"]["description"].as_str().unwrap();
    assert!(
        [
            "The task used more than its memory limit of 16m and was killed (exit code 137)",
            "The task was killed (exit code 137), most likely for using more than its memory limit of 16m",
        ]
        .contains(&reason),
        "{hog}"
    );
    assert_eq!(hog["task"]["resources"], json!({"memory": "16m"}));
    assert_eq!(tasks["modest"]["status"], "successful");
    // The limits as the engine holds them.
    let containers = containers_of("limited");
    let modest_container = containers
        .iter()
        .find(|name| name.contains("modest"))
        .unwrap_or_else(|| panic!("no container of task modest in {containers:?}"));
    let inspect = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
            modest_container,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        format!("500000000 {}", 32 << 20)
    );
    let _ = std::process::Command::new("docker")
        .arg("rm")
        .arg("-f")
        .args(&containers)
        .output();
    // On Swarm (the second pass) the services too.
    let services = std::process::Command::new("docker")
        .args([
            "service",
            "ls",
            "--quiet",
            "--filter",
            "label=dev.gofer.pipeline=limited",
        ])
        .output()
        .unwrap();
    for service in String::from_utf8_lossy(&services.stdout).lines() {
        let _ = std::process::Command::new("docker")
            .args(["service", "rm", service])
            .output();
    }

    // Bad limits are refused with the task and the problem named.
    for (resources, problem) in [
        (
            json!({"memory": "a lot"}),
            "task 'hog' has invalid resources: memory 'a lot' is not a size",
        ),
        (
            json!({"cpus": -1}),
            "task 'hog' has invalid resources: cpus must be above 0",
        ),
        (json!({"cpu": 1}), "unknown field `cpu`"),
    ] {
        let mut hog = shell_task("hog", "true", json!({}));
        hog["resources"] = resources;
        let (status, body) = api
            .post(
                &format!("{}/configs", path("limited")),
                json!({"config": config("limited", json!([hog]))}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(problem),
            "{body}"
        );
    }
}

/// Placement constraints, the pipeline's and a task's: on Swarm a task goes to a node that
/// satisfies them, and one that no node satisfies fails with the Swarm's reason after
/// `scheduler.placement_timeout_secs`; a single-host engine runs every task on its host.
#[tokio::test]
async fn placement_constraints_choose_the_node_on_swarm() {
    let swarm = std::env::var(crate::support::TEST_ENGINE_VARIABLE).as_deref() == Ok("swarm");
    if swarm {
        // This node, labelled as the tests' zone (idempotent).
        let node = std::process::Command::new("docker")
            .args(["info", "--format", "{{.Swarm.NodeID}}"])
            .output()
            .unwrap();
        let node = String::from_utf8_lossy(&node.stdout).trim().to_string();
        let labelled = std::process::Command::new("docker")
            .args([
                "node",
                "update",
                "--label-add",
                "gofer-test-zone=here",
                &node,
            ])
            .output()
            .unwrap();
        assert!(labelled.status.success(), "{labelled:?}");
    }
    let server =
        TestServer::start_with_env(&[("GOFER_SCHEDULER__PLACEMENT_TIMEOUT_SECS", "2")]).await;
    let api = server.client();
    let fits = shell_task("fits", "echo placed", json!({}));
    let mut nowhere = shell_task("nowhere", "echo placed", json!({}));
    nowhere["placement"] = json!(["node.labels.gofer-test-zone == elsewhere"]);
    let mut pipeline = config("placed", json!([fits, nowhere]));
    pipeline["placement"] = json!(["node.labels.gofer-test-zone == here"]);
    deploy(&api, pipeline).await;
    let run_id = start_run(&api, "placed", json!({})).await;
    let run = wait_for_run(&api, "placed", run_id, 60).await;
    let tasks = tasks_of(&api, "placed", run_id).await;
    assert_eq!(tasks["fits"]["status"], "successful", "{}", tasks["fits"]);
    assert_eq!(
        tasks["fits"]["task"]["placement"],
        json!(["node.labels.gofer-test-zone == here"])
    );
    assert_eq!(
        tasks["nowhere"]["task"]["placement"],
        json!([
            "node.labels.gofer-test-zone == here",
            "node.labels.gofer-test-zone == elsewhere"
        ])
    );
    let nowhere = &tasks["nowhere"];
    if swarm {
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(nowhere["status"], "failed", "{nowhere}");
        let reason = nowhere["status_reason"]["description"].as_str().unwrap();
        assert!(
            reason.contains("found no node for the task within 2s")
                && reason.contains("no suitable node"),
            "{nowhere}"
        );
    } else {
        assert_eq!(run["status"], "successful", "{run}");
        assert_eq!(nowhere["status"], "successful", "{nowhere}");
    }

    // A constraint that cannot be read is refused, naming the task.
    let mut odd = shell_task("odd", "true", json!({}));
    odd["placement"] = json!(["gpu"]);
    let (status, body) = api
        .post(
            &format!("{}/configs", path("placed")),
            json!({"config": config("placed", json!([odd]))}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("task 'odd' has an invalid placement: 'gpu' is not a constraint"),
        "{body}"
    );
}

/// Tasks that ask for the run's workspace share one volume at /gofer/workspace (a child reads
/// what its parent wrote); tasks that do not ask have none, each run has its own, and the
/// volume is removed when the run ends.
#[tokio::test]
async fn tasks_of_a_run_share_a_file_through_the_workspace_volume() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut write = shell_task(
        "write",
        "test \"$GOFER_WORKSPACE\" = /gofer/workspace && test ! -e $GOFER_WORKSPACE/note && echo \"run $GOFER_RUN_ID\" > $GOFER_WORKSPACE/note",
        json!({}),
    );
    write["workspace"] = json!(true);
    let mut read = shell_task(
        "read",
        "cat /gofer/workspace/note",
        json!({"write": "success"}),
    );
    read["workspace"] = json!(true);
    let outsider = shell_task(
        "outsider",
        "test ! -e /gofer/workspace && test -z \"$GOFER_WORKSPACE\"",
        json!({"write": "success"}),
    );
    deploy(&api, config("shared", json!([write, read, outsider]))).await;
    for run_id in [1, 2] {
        assert_eq!(start_run(&api, "shared", json!({})).await, run_id);
        let run = wait_for_run(&api, "shared", run_id, 60).await;
        assert_eq!(run["status"], "successful", "{run}");
        assert_eq!(
            task_log(&api, "shared", run_id, "read").await,
            format!("run {run_id}\n")
        );
        let volumes = std::process::Command::new("docker")
            .args([
                "volume",
                "ls",
                "--quiet",
                "--filter",
                "name=gofer_workspace_",
            ])
            .output()
            .unwrap();
        let left: Vec<String> = String::from_utf8_lossy(&volumes.stdout)
            .lines()
            .filter(|volume| volume.ends_with(&format!("_default_shared_{run_id}")))
            .map(str::to_string)
            .collect();
        assert!(left.is_empty(), "the workspace outlived its run: {left:?}");
    }
    let (status, body) = api
        .post(
            &format!("{}/configs", path("shared")),
            json!({"config": config("shared", json!([{"id": "call", "plugin": "debug", "workspace": true}]))}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(
            "task 'call' has invalid resources: a workspace is a volume of container tasks"
        ),
        "{body}"
    );
}
