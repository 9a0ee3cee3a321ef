//! Seeing into runs and debugging them on real parts: spans exported to a real OTLP receiver
//! (the OpenTelemetry trace service, served by the test) with the caller's trace id, a shell in
//! a failed task's kept filesystem, and tasks riding out a container engine that goes away.

// The OTLP receiver is a tonic service (tonic is otherwise kept to `plugins::grpc`).
#![allow(clippy::disallowed_types)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    EngineProxy, TestServer, deploy, shell_task, start_run, task_log, wait_for_run,
};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service: String,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .map(|value| format!("{:?}", value.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        service: service.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves the OTLP trace service on a free loopback port; returns its address.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        address
    }

    fn of_trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_receiver_gets_the_spans_of_a_run_with_the_callers_trace_id() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let server = TestServer::start_with_env(&[
        ("GOFER_TRACING__OTLP_ENDPOINT", &endpoint),
        ("GOFER_TRACING__SERVICE_NAME", "gofer-under-test"),
        // The OpenTelemetry SDK's own setting: export batches every 200 ms.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ])
    .await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "traced", "name": "Traced", "tasks": [
            shell_task("build", "echo \"TRACEPARENT=$TRACEPARENT\"", json!({})),
            {"id": "inspect", "plugin": "debug", "depends_on": {"build": "Success"}},
        ]}),
    )
    .await;

    // A caller that traces sends its context; the run joins the caller's trace.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/namespaces/default/pipelines/traced/runs",
            server.base_url()
        ))
        .header("gofer-api-version", "v0")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"variables": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!request_id.is_empty());
    let run: Value = response.json().await.unwrap();
    let run_id = run["run"]["run_id"].as_u64().unwrap();
    assert!(
        run["run"]["trace_parent"]
            .as_str()
            .unwrap()
            .starts_with(&format!("00-{TRACE_ID}-")),
        "{run}"
    );
    let done = wait_for_run(&api, "traced", run_id, 60).await;
    assert_eq!(done["status"], "successful", "{done}");

    // The container and the shared task were told the trace, each under its own span.
    let log = task_log(&api, "traced", run_id, "build").await;
    let container_parent = log
        .lines()
        .find_map(|line| line.strip_prefix("TRACEPARENT="))
        .unwrap_or_else(|| panic!("no TRACEPARENT in {log:?}"))
        .to_string();
    let parts: Vec<&str> = container_parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{container_parent}");
    assert_eq!(parts[1], TRACE_ID);
    let shared_log = task_log(&api, "traced", run_id, "inspect").await;
    assert!(
        shared_log.contains(&format!("TRACEPARENT=00-{TRACE_ID}-")),
        "{shared_log}"
    );

    // The receiver gets the request, the run, each task attempt and the plugin call, in the
    // caller's trace, linked parent to child.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.of_trace(TRACE_ID);
        let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
        if ["request", "run", "task", "plugin_call"]
            .iter()
            .all(|name| names.contains(name))
            && names.iter().filter(|name| **name == "task").count() == 2
        {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans so far: {names:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let named = |name: &str| spans.iter().find(|span| span.name == name).unwrap();
    let request = spans
        .iter()
        .find(|span| span.name == "request" && span.parent_span_id == CALLER_SPAN)
        .unwrap_or_else(|| panic!("no request span under the caller's: {spans:?}"));
    let run_span = named("run");
    assert_eq!(run_span.parent_span_id, request.span_id, "{spans:?}");
    let tasks: Vec<&ReceivedSpan> = spans.iter().filter(|span| span.name == "task").collect();
    assert!(
        tasks
            .iter()
            .all(|task| task.parent_span_id == run_span.span_id)
    );
    assert!(
        tasks.iter().any(|task| task.span_id == parts[2]),
        "the container's TRACEPARENT {container_parent} names no task span: {spans:?}"
    );
    let plugin_call = named("plugin_call");
    assert!(
        tasks
            .iter()
            .any(|task| task.span_id == plugin_call.parent_span_id)
    );
    assert!(
        request.service.contains("gofer-under-test"),
        "{}",
        request.service
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_opens_in_the_filesystem_a_failed_task_left() {
    let server = TestServer::start_with_env(&[("GOFER_RETENTION__INTERVAL_SECS", "1")]).await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "keeper", "name": "Keeper", "keep_failed": "1h", "tasks": [
            shell_task("broken", "mkdir -p /out && echo 'the task wrote this' > /out/result.txt && exit 3", json!({})),
            shell_task("fine", "echo fine", json!({})),
        ]}),
    )
    .await;
    let run_id = start_run(&api, "keeper", json!({})).await;
    let done = wait_for_run(&api, "keeper", run_id, 60).await;
    assert_eq!(done["status"], "failed", "{done}");
    let (_, task) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/keeper/runs/{run_id}/tasks/broken"
        ))
        .await;
    let kept_until = task["task_execution"]["kept_until"].as_u64().unwrap();
    assert!(
        kept_until > crate::support::now_millis() + 3_500_000,
        "{task}"
    );
    let log = task_log(&api, "keeper", run_id, "broken").await;
    assert!(
        log.contains(&format!("gofer task shell keeper {run_id} broken")),
        "{log}"
    );

    // One command: it sees what the task wrote.
    let run = run_id.to_string();
    let output = server.cli(&[
        "task",
        "shell",
        "keeper",
        &run,
        "broken",
        "--",
        "cat",
        "/out/result.txt",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "the task wrote this\n"
    );
    // Its exit code is the command's.
    let output = server.cli(&[
        "task", "shell", "keeper", &run, "broken", "--", "sh", "-c", "exit 5",
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the command exited with code 5"),
        "{output:?}"
    );
    // An interactive shell reads its commands from the input; what it changes stays in its copy.
    let mut shell = crate::support::gofer_command()
        .env("GOFER_API_BASE_URL", server.base_url())
        .args(["task", "shell", "keeper", &run, "broken"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = shell.stdin.take().unwrap();
        input
            .write_all(b"rm /out/result.txt\nls /out\necho listed\nexit\n")
            .unwrap();
    }
    let output = shell.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("listed"),
        "{output:?}"
    );
    let output = server.cli(&[
        "task",
        "shell",
        "keeper",
        &run,
        "broken",
        "--",
        "cat",
        "/out/result.txt",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "the task wrote this\n",
        "{output:?}"
    );

    // A task that succeeded keeps nothing.
    let output = server.cli(&["task", "shell", "keeper", &run, "fine", "--", "true"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("it did not fail"),
        "{output:?}"
    );

    // A short keep: the container and its shell image go when the time is up.
    let mut task = shell_task("broken", "exit 1", json!({}));
    task["keep_failed"] = json!("2s");
    deploy(
        &api,
        json!({"id": "brief", "name": "Brief", "tasks": [task]}),
    )
    .await;
    let brief = start_run(&api, "brief", json!({})).await;
    assert_eq!(
        wait_for_run(&api, "brief", brief, 60).await["status"],
        "failed"
    );
    let brief_run = brief.to_string();
    let output = server.cli(&["task", "shell", "brief", &brief_run, "broken", "--", "true"]);
    assert!(output.status.success(), "{output:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, task) = api
            .get(&format!(
                "/api/namespaces/default/pipelines/brief/runs/{brief}/tasks/broken"
            ))
            .await;
        if task["task_execution"].get("kept_until").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "still kept: {task}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let left = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            "label=dev.gofer.pipeline=brief",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "{left:?}"
    );
    let images = std::process::Command::new("docker")
        .args(["images", "-q", "gofer-kept"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&images.stdout).is_empty(),
        "the 'keeper' task's shell image should still be there"
    );
    let output = server.cli(&["task", "shell", "brief", &brief_run, "broken", "--", "true"]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("time is up"),
        "{output:?}"
    );
    // Deleting the pipeline takes its kept container and shell image with it.
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            "/api/namespaces/default/pipelines/keeper",
            None,
            Some("v0"),
        )
        .await;
    assert!(status.is_success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_ride_out_a_container_engine_that_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let mut proxy = Some(EngineProxy::start(&socket));
    let server = TestServer::start_with_env(&[
        ("DOCKER_HOST", &format!("unix://{}", socket.display())),
        ("GOFER_RUNS__ENGINE_OUTAGE_SECS", "4"),
    ])
    .await;
    let api = server.client();
    deploy(
        &api,
        json!({"id": "steady", "name": "Steady", "tasks": [
            shell_task("work", "echo before; sleep 4; echo after", json!({})),
        ]}),
    )
    .await;

    // Away for a moment while the task runs: it is followed again and ends as it really did.
    let run_id = start_run(&api, "steady", json!({})).await;
    wait_for_log(&api, "steady", run_id, "work", "before").await;
    proxy.take();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy = Some(EngineProxy::start(&socket));
    let done = wait_for_run(&api, "steady", run_id, 60).await;
    assert_eq!(done["status"], "successful", "{done}");
    let log = task_log(&api, "steady", run_id, "work").await;
    assert!(log.contains("before") && log.contains("after"), "{log:?}");

    // Away for longer than runs.engine_outage_secs: the task fails, saying so, in bounded time.
    let run_id = start_run(&api, "steady", json!({})).await;
    wait_for_log(&api, "steady", run_id, "work", "before").await;
    let went = Instant::now();
    proxy.take();
    let done = wait_for_run(&api, "steady", run_id, 30).await;
    let took = went.elapsed();
    assert_eq!(done["status"], "failed", "{done}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let (_, task) = api
        .get(&format!(
            "/api/namespaces/default/pipelines/steady/runs/{run_id}/tasks/work"
        ))
        .await;
    let reason = task["task_execution"]["status_reason"].to_string();
    assert!(
        reason.contains("went away") && reason.contains("did not come back within 4 s"),
        "{reason}"
    );
    // Back again: its leftovers are cleaned up with the pipeline.
    let _proxy = EngineProxy::start(&socket);
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            "/api/namespaces/default/pipelines/steady",
            None,
            Some("v0"),
        )
        .await;
    assert!(status.is_success(), "{status}");
}

async fn wait_for_log(
    api: &crate::support::Api,
    pipeline: &str,
    run_id: u64,
    task: &str,
    text: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !task_log(api, pipeline, run_id, task).await.contains(text) {
        assert!(
            Instant::now() < deadline,
            "'{text}' never appeared in the log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
