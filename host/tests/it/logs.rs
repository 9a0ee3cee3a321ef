//! Task logs: complete and ordered, and followed live while the task runs.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{
    TestServer, deploy, shell_task, start_run, tasks_of, wait_for_run, wait_until_running,
};

#[tokio::test]
async fn ten_thousand_lines_are_kept_complete_and_in_order() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "chatty", "name": "chatty", "tasks": [
            shell_task("talk", "seq 1 10000; echo to-stderr >&2", json!({})),
        ]}),
    )
    .await;
    let run_id = start_run(&api, "chatty", json!({})).await;
    wait_for_run(&api, "chatty", run_id, 60).await;
    let (_, log) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/chatty/runs/{run_id}/tasks/talk/logs"
        ))
        .await;
    let lines: Vec<&str> = log.as_str().unwrap().lines().collect();
    assert_eq!(lines.len(), 10_001);
    // stdout and stderr are separate pipes, so only stdout's own order is defined.
    let stdout: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| *line != "to-stderr")
        .collect();
    for (index, line) in stdout.iter().enumerate() {
        assert_eq!(*line, (index + 1).to_string());
    }
    assert_eq!(stdout.len(), 10_000);
    assert!(lines.contains(&"to-stderr"), "stderr is captured too");
    // The CLI prints the same log.
    let output = server.cli(&["task", "logs", "chatty", &run_id.to_string(), "talk"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        10_001
    );
    // Deleting a finished task's log.
    let path = format!("/api/namespaces/default/pipelines/chatty/runs/{run_id}/tasks/talk/logs");
    assert_eq!(api.delete(&path).await.0, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(api.get(&path).await.0, reqwest::StatusCode::GONE);
    assert_eq!(
        tasks_of(&api, "chatty", run_id).await["talk"]["logs_removed"],
        true
    );
}

#[tokio::test]
async fn a_follower_sees_lines_while_the_task_runs() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "slow-talk", "name": "slow", "tasks": [
            shell_task("talk", "echo first; sleep 3; echo second", json!({})),
        ]}),
    )
    .await;
    let run_id = start_run(&api, "slow-talk", json!({})).await;
    wait_until_running(&api, "slow-talk", run_id, "talk").await;
    let url = format!(
        "ws://{}/api/namespaces/default/pipelines/slow-talk/runs/{run_id}/tasks/talk/logs",
        server.address
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("gofer-api-version", "v0".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, Message::Text("first\n".into()));
    assert_eq!(
        tasks_of(&api, "slow-talk", run_id).await["talk"]["state"],
        "running",
        "the line arrived while the task was still running"
    );
    let second = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second, Message::Text("second\n".into()));
    match tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected the end of the log, got {other:?}"),
    }
}

#[tokio::test]
async fn the_cli_follows_a_run_and_its_exit_code_reflects_the_run() {
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "cli-run", "name": "cli", "tasks": [
            shell_task("hello", "echo hello from $GOFER_TASK_ID", json!({})),
            shell_task("bye", "echo bye $NAME", json!({"hello": "Success"})),
        ]}),
    )
    .await;
    let output = server.cli(&["run", "start", "cli-run", "--follow", "--var", "NAME=alice"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("hello | hello from hello"), "{stdout}");
    assert!(stdout.contains("bye | bye alice"), "{stdout}");
    assert!(stdout.contains("✓ run #1 successful"), "{stdout}");
    let table =
        String::from_utf8_lossy(&server.cli(&["run", "list", "cli-run"]).stdout).to_string();
    assert!(table.contains("successful"), "{table}");
    let detail =
        String::from_utf8_lossy(&server.cli(&["run", "get", "cli-run", "1"]).stdout).to_string();
    assert!(
        detail.contains("hello") && detail.contains("bye"),
        "{detail}"
    );

    deploy(&api, json!({"id": "cli-fail", "name": "cli", "tasks": [shell_task("boom", "exit 7", json!({}))]})).await;
    let output = server.cli(&["run", "start", "cli-fail", "--follow"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("run #1 of 'cli-fail' failed") && stderr.contains("boom"),
        "{stderr}"
    );
    let bad = server.cli(&["run", "start", "cli-fail", "--var", "oops"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'oops' is not KEY=VALUE"));
}

#[tokio::test]
async fn attach_runs_a_command_inside_a_running_task() {
    use futures_util::SinkExt;
    let server = TestServer::start().await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "attachable", "name": "attach", "tasks": [
            shell_task("box", "echo ready > /marker; sleep 60", json!({})),
        ]}),
    )
    .await;
    let run_id = start_run(&api, "attachable", json!({})).await;
    wait_until_running(&api, "attachable", run_id, "box").await;
    let url = format!(
        "ws://{}/api/namespaces/default/pipelines/attachable/runs/{run_id}/tasks/box/attach?command=sh",
        server.address
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("gofer-api-version", "v0".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::Text("cat /marker; echo sum=$((40+2))".into()))
        .await
        .unwrap();
    let mut output = String::new();
    while !output.contains("sum=42") {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Binary(bytes) => output.push_str(&String::from_utf8_lossy(&bytes)),
            Message::Close(frame) => panic!("closed early: {frame:?}; output {output:?}"),
            _ => {}
        }
    }
    assert!(
        output.contains("ready"),
        "the command ran inside the task's container: {output:?}"
    );
    socket.send(Message::Text("exit".into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1000);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
    api.delete(&format!(
        "/api/namespaces/default/pipelines/attachable/runs/{run_id}"
    ))
    .await;
    wait_for_run(&api, "attachable", run_id, 60).await;
    // Attaching to a task that is not running is refused with a reason.
    let refused = crate::support::http_client()
        .get(format!("{}/api/namespaces/default/pipelines/attachable/runs/{run_id}/tasks/box/attach?command=sh", server.base_url()))
        .header("gofer-api-version", "v0")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::CONFLICT);
    assert!(refused.text().await.unwrap().contains("is not running"));
}
