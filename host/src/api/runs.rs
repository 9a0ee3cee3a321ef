//! Run and task-execution endpoints (`.../pipelines/{p}/runs/...`), including task logs.
//!
//! Starting and cancelling go through the orchestrator; reads go to storage; logs are read from
//! the log store. Must not touch containers.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, close_code};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Identity;
use super::events::MaybeUpgrade;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState, AppState};
use crate::logs::LogKey;
use crate::models::{Run, TaskExecution, TaskExecutionState};
use crate::orchestrator::{OrchestratorError, RunKey};
use axum::Extension;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs, start_run))
        .routes(routes!(get_run, cancel_run))
        .routes(routes!(rerun_run))
        .routes(routes!(run_timeline))
        .routes(routes!(list_task_executions))
        .routes(routes!(get_task_execution, cancel_task_execution))
        .routes(routes!(get_logs, delete_logs))
        .routes(routes!(attach_task_execution))
        .routes(routes!(shell_task_execution))
}

impl From<OrchestratorError> for ApiError {
    fn from(error: OrchestratorError) -> Self {
        match error {
            OrchestratorError::Paused | OrchestratorError::PipelineDisabled(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            OrchestratorError::NoLiveConfig(_) | OrchestratorError::InvalidVariable { .. } => {
                ApiError::bad_request(error.to_string())
            }
            OrchestratorError::AlreadyComplete(message)
            | OrchestratorError::NotRunning(message)
            | OrchestratorError::CannotRerun(message) => ApiError::conflict(message),
            OrchestratorError::Attach(_) | OrchestratorError::Scheduler(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, error.to_string())
            }
            OrchestratorError::Logs(error) => {
                tracing::error!(%error, "task log");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the task log could not be changed; the server log has the details",
                )
            }
            OrchestratorError::Storage(error) => error.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListRunsResponse {
    pub runs: Vec<Run>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetRunResponse)]
pub struct RunResponse {
    pub run: Run,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRunRequest {
    /// Run variables; they override the tasks' own variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Run this registered config version instead of the live one (or the one a canary or A/B
    /// test would route the run to; beyond v0).
    #[serde(default)]
    pub version: Option<u64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// Run only the tasks that failed or were skipped, and their dependents; take the
    /// original's other successful tasks as done.
    #[serde(default)]
    pub failed_only: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListTaskExecutionsResponse {
    pub task_executions: Vec<TaskExecution>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = GetTaskExecutionResponse)]
pub struct TaskExecutionResponse {
    pub task_execution: TaskExecution,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Page size (default `api.default_page_limit`).
    pub limit: Option<u64>,
    /// Runs to skip.
    pub offset: Option<u64>,
    /// Newest first (default: oldest first).
    pub reverse: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CancelTaskQuery {
    /// Seconds the task gets to stop before it is killed; 0 kills at once. Default:
    /// `runs.stop_timeout_secs`.
    pub wait_for: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachQuery {
    /// The command to run, split on spaces (e.g. `sh`).
    pub command: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShellQuery {
    /// The command as a JSON array of strings (e.g. `["sh","-c","ls /"]`); absent: `sh -i`.
    pub command: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PipelinePath {
    namespace_id: String,
    pipeline_id: String,
}

#[derive(Debug, Deserialize)]
struct RunPath {
    namespace_id: String,
    pipeline_id: String,
    run_id: u64,
}

impl RunPath {
    fn key(&self) -> RunKey {
        RunKey {
            namespace_id: self.namespace_id.clone(),
            pipeline_id: self.pipeline_id.clone(),
            run_id: self.run_id,
        }
    }
}

#[derive(Debug, Deserialize)]
struct TaskPath {
    namespace_id: String,
    pipeline_id: String,
    run_id: u64,
    task_id: String,
}

impl TaskPath {
    fn log_key(&self) -> LogKey {
        LogKey {
            namespace_id: self.namespace_id.clone(),
            pipeline_id: self.pipeline_id.clone(),
            run_id: self.run_id,
            task_id: self.task_id.clone(),
        }
    }
}

/// Who is calling; in development mode everyone is the anonymous administrator.
fn redacted(mut task: TaskExecution) -> TaskExecution {
    task.task = task.task.redacted();
    task
}

/// List a pipeline's runs.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs", tag = "Runs", operation_id = "list_runs",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ListRunsQuery),
    responses((status = 200, body = ListRunsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_runs(
    state: AppState,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiQuery(query): ApiQuery<ListRunsQuery>,
) -> Result<ApiJson<ListRunsResponse>, ApiError> {
    let page = state.page(&super::PageQuery {
        limit: query.limit,
        offset: query.offset,
    })?;
    let reverse = query.reverse.unwrap_or(false);
    let runs = state
        .read(move |db| {
            db.get_namespace(&path.namespace_id)?;
            db.get_pipeline(&path.namespace_id, &path.pipeline_id)?;
            db.list_runs(&path.namespace_id, &path.pipeline_id, page, reverse)
        })
        .await?;
    Ok(ApiJson(ListRunsResponse { runs }))
}

/// Start a run of the pipeline's live config. Returns at once with the run `pending`: runs wait
/// in a durable queue until the pipeline's `parallelism` and the server's limit allow them.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs", tag = "Runs", operation_id = "start_run",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path)),
    request_body = StartRunRequest,
    responses((status = 201, body = RunResponse), (status = "4XX", body = super::ErrorBody), (status = 503, body = super::ErrorBody)))]
async fn start_run(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(path): ApiPath<PipelinePath>,
    ApiJson(request): ApiJson<StartRunRequest>,
) -> Result<(StatusCode, ApiJson<RunResponse>), ApiError> {
    let run = state
        .app
        .start_run(
            &identity,
            (path.namespace_id, path.pipeline_id),
            request.variables,
            request.version,
        )
        .await?;
    Ok((StatusCode::CREATED, ApiJson(RunResponse { run })))
}

/// `GET …/runs/{run_id}/timeline`'s answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimelineResponse {
    pub timeline: Vec<crate::models::TimelineEntry>,
}

/// A run's timeline (beyond v0): queued, dispatched, and per task created, each attempt
/// started, its log closed and its end (status, exit code), then the run's end, oldest first.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/timeline", tag = "Runs", operation_id = "get_run_timeline",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path)),
    responses((status = 200, body = TimelineResponse), (status = "4XX", body = super::ErrorBody)))]
async fn run_timeline(
    state: AppState,
    ApiPath(path): ApiPath<RunPath>,
) -> Result<ApiJson<TimelineResponse>, ApiError> {
    let timeline = state.app.run_timeline(path.key()).await?;
    Ok(ApiJson(TimelineResponse { timeline }))
}

/// Re-run a complete run (beyond v0): a new run of the same config version with the same
/// variables (references to secrets and objects are resolved again at launch), recording which
/// run it re-runs. With `failed_only`, only the tasks that failed or were skipped and their
/// dependents run; the original's other successful tasks are taken over as done (status reason
/// `reused`). 409 if the run is not complete, or has nothing to re-run with `failed_only`.
#[utoipa::path(post, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/rerun", tag = "Runs", operation_id = "rerun_run",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path)),
    request_body = RerunRequest,
    responses((status = 201, body = RunResponse), (status = "4XX", body = super::ErrorBody), (status = 503, body = super::ErrorBody)))]
async fn rerun_run(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(path): ApiPath<RunPath>,
    ApiJson(request): ApiJson<RerunRequest>,
) -> Result<(StatusCode, ApiJson<RunResponse>), ApiError> {
    let run = state
        .app
        .rerun(&identity, path.key(), request.failed_only)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(RunResponse { run })))
}

/// Get one run.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}", tag = "Runs", operation_id = "get_run",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path)),
    responses((status = 200, body = RunResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_run(
    state: AppState,
    ApiPath(path): ApiPath<RunPath>,
) -> Result<ApiJson<RunResponse>, ApiError> {
    let run = state
        .read(move |db| db.get_run(&path.namespace_id, &path.pipeline_id, path.run_id))
        .await?;
    Ok(ApiJson(RunResponse { run }))
}

/// Cancel a run: queued, it ends at once; running, its tasks are stopped (SIGTERM, then SIGKILL
/// after `runs.stop_timeout_secs`). 409 if it is already complete.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}", tag = "Runs", operation_id = "cancel_run",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn cancel_run(
    state: AppState,
    Extension(identity): Extension<Identity>,
    ApiPath(path): ApiPath<RunPath>,
) -> Result<StatusCode, ApiError> {
    state.app.cancel_run(&identity, path.key()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List the task executions of a run.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks", tag = "Tasks", operation_id = "list_task_executions",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path)),
    responses((status = 200, body = ListTaskExecutionsResponse), (status = "4XX", body = super::ErrorBody)))]
async fn list_task_executions(
    state: AppState,
    ApiPath(path): ApiPath<RunPath>,
) -> Result<ApiJson<ListTaskExecutionsResponse>, ApiError> {
    let tasks = state
        .read(move |db| {
            db.get_run(&path.namespace_id, &path.pipeline_id, path.run_id)?;
            db.list_task_executions(&path.namespace_id, &path.pipeline_id, path.run_id)
        })
        .await?;
    Ok(ApiJson(ListTaskExecutionsResponse {
        task_executions: tasks.into_iter().map(|(task, _)| redacted(task)).collect(),
    }))
}

/// Get one task execution.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}", tag = "Tasks", operation_id = "get_task_execution",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("task_id" = String, Path)),
    responses((status = 200, body = TaskExecutionResponse), (status = "4XX", body = super::ErrorBody)))]
async fn get_task_execution(
    state: AppState,
    ApiPath(path): ApiPath<TaskPath>,
) -> Result<ApiJson<TaskExecutionResponse>, ApiError> {
    let task = state
        .read(move |db| {
            db.get_task_execution(
                &path.namespace_id,
                &path.pipeline_id,
                path.run_id,
                &path.task_id,
            )
        })
        .await?;
    Ok(ApiJson(TaskExecutionResponse {
        task_execution: redacted(task),
    }))
}

/// Cancel one task of a running run. The rest of the run goes on (children of a cancelled task
/// are skipped unless they only need it to finish).
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}", tag = "Tasks", operation_id = "cancel_task_execution",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("task_id" = String, Path), CancelTaskQuery),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn cancel_task_execution(
    state: AppState,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<CancelTaskQuery>,
) -> Result<StatusCode, ApiError> {
    let grace = query.wait_for.map(Duration::from_secs);
    let key = RunKey {
        namespace_id: path.namespace_id,
        pipeline_id: path.pipeline_id,
        run_id: path.run_id,
    };
    state.app.cancel_task(key, path.task_id, grace).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A task's output (stdout and stderr interleaved). Plain GET: the log so far as `text/plain`.
/// Websocket: each line as a text frame, following the task live until it ends, then close 1000
/// "out of events".
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}/logs", tag = "Tasks", operation_id = "get_logs",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("task_id" = String, Path)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 101, description = "Websocket stream of log lines"),
              (status = "4XX", body = super::ErrorBody)))]
async fn get_logs(
    state: AppState,
    MaybeUpgrade(upgrade): MaybeUpgrade,
    ApiPath(path): ApiPath<TaskPath>,
) -> Result<Response, ApiError> {
    let lookup = TaskPath { ..path };
    let key = lookup.log_key();
    let task = state
        .read(move |db| {
            db.get_task_execution(
                &lookup.namespace_id,
                &lookup.pipeline_id,
                lookup.run_id,
                &lookup.task_id,
            )
        })
        .await?;
    if task.logs_removed || task.logs_expired {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!("the logs of task '{}' were removed", task.task_id),
        ));
    }
    let logs = state.orchestrator.logs().clone();
    if !logs.exists(&key) {
        return Err(ApiError::not_found(format!(
            "task '{}' has no logs yet: it is {}",
            task.task_id,
            describe_state(&task)
        )));
    }
    let Some(upgrade) = upgrade else {
        let text = logs
            .read_all(&key)
            .await
            .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    };
    let mut shutdown = state.shutdown.clone();
    Ok(upgrade.on_upgrade(move |mut socket: WebSocket| async move {
        let _counted = crate::metrics::Live::new(&crate::metrics::metrics().log_followers);
        let mut lines = logs.follow(&key);
        let end = loop {
            tokio::select! {
                batch = lines.recv() => match batch {
                    Some(Ok(batch)) => {
                        // One frame per line (v0's wire format), flushed once per batch.
                        for line in batch {
                            if socket.feed(Message::Text(line.into())).await.is_err() {
                                return;
                            }
                        }
                        if socket.flush().await.is_err() {
                            return;
                        }
                    }
                    Some(Err(error)) => break (close_code::ERROR, error.to_string()),
                    None => break (close_code::NORMAL, "out of events".to_string()),
                },
                _ = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => {
                    break (close_code::AWAY, "server shutting down".to_string());
                }
            }
        };
        let _ = super::events::close(&mut socket, end.0, &end.1).await;
    }))
}

fn describe_state(task: &TaskExecution) -> String {
    match task.state {
        TaskExecutionState::Complete => format!(
            "{} and never ran",
            serde_json::to_value(task.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        _ => "waiting to start".into(),
    }
}

/// Delete a completed task's log.
#[utoipa::path(delete, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}/logs", tag = "Tasks", operation_id = "delete_logs",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("task_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = super::ErrorBody)))]
async fn delete_logs(
    state: AppState,
    ApiPath(path): ApiPath<TaskPath>,
) -> Result<StatusCode, ApiError> {
    let key = RunKey {
        namespace_id: path.namespace_id,
        pipeline_id: path.pipeline_id,
        run_id: path.run_id,
    };
    state.app.delete_task_log(key, path.task_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a command inside a running task's container, interactively (websocket only). Text frames
/// from the client are the command's input (a newline is added to each); the command's output
/// (with a TTY) comes back as binary frames. Ends with close 1000 when the command exits.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}/attach", tag = "Tasks", operation_id = "attach_task_execution",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("task_id" = String, Path), AttachQuery),
    responses((status = 101, description = "Websocket session with the command"), (status = "4XX", body = super::ErrorBody)))]
async fn attach_task_execution(
    state: AppState,
    MaybeUpgrade(upgrade): MaybeUpgrade,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<AttachQuery>,
) -> Result<Response, ApiError> {
    let Some(upgrade) = upgrade else {
        return Err(ApiError::bad_request("attach needs a websocket connection"));
    };
    let command: Vec<String> = query
        .command
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if command.is_empty() {
        return Err(ApiError::bad_request("the command is empty"));
    }
    let key = RunKey {
        namespace_id: path.namespace_id,
        pipeline_id: path.pipeline_id,
        run_id: path.run_id,
    };
    let session = state
        .orchestrator
        .attach(key, path.task_id, command)
        .await?;
    Ok(serve_session(upgrade, session, state.shutdown.clone()))
}

/// Open a shell in a copy of the filesystem a failed task left, when its pipeline keeps failed
/// tasks (`keep_failed`; websocket only). The command runs without a TTY in a new container made
/// from the kept one, which stays as it was. Frames as for `attach`; an empty binary frame ends
/// the command's input. Ends with close 1000 and the reason `exited <code>`.
#[utoipa::path(get, path = "/api/namespaces/{namespace_id}/pipelines/{pipeline_id}/runs/{run_id}/tasks/{task_id}/shell", tag = "Tasks", operation_id = "shell_task_execution",
    params(("namespace_id" = String, Path), ("pipeline_id" = String, Path), ("run_id" = u64, Path), ("task_id" = String, Path), ShellQuery),
    responses((status = 101, description = "Websocket session with the command"), (status = "4XX", body = super::ErrorBody)))]
async fn shell_task_execution(
    state: AppState,
    MaybeUpgrade(upgrade): MaybeUpgrade,
    ApiPath(path): ApiPath<TaskPath>,
    ApiQuery(query): ApiQuery<ShellQuery>,
) -> Result<Response, ApiError> {
    let Some(upgrade) = upgrade else {
        return Err(ApiError::bad_request(
            "a shell needs a websocket connection",
        ));
    };
    let command: Vec<String> = match query.command.as_deref() {
        None | Some("") => Vec::new(),
        Some(json) => serde_json::from_str(json).map_err(|_| {
            ApiError::bad_request(
                "command: must be a JSON array of strings, e.g. [\"sh\",\"-c\",\"ls /\"]",
            )
        })?,
    };
    let key = RunKey {
        namespace_id: path.namespace_id,
        pipeline_id: path.pipeline_id,
        run_id: path.run_id,
    };
    let session = state.orchestrator.shell(key, path.task_id, command).await?;
    Ok(serve_session(upgrade, session, state.shutdown.clone()))
}

/// Carries a command session over a websocket: text frames are input lines, binary frames raw
/// input (an empty one ends the input); the output goes out as binary frames; the close reason
/// says how the command ended.
fn serve_session(
    upgrade: axum::extract::ws::WebSocketUpgrade,
    mut session: crate::scheduler::ExecSession,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Response {
    upgrade.on_upgrade(move |mut socket: WebSocket| async move {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let end = loop {
            tokio::select! {
                output = session.output.next() => match output {
                    Some(Ok(bytes)) => {
                        if socket.send(Message::Binary(bytes)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(error)) => break (close_code::ERROR, error.to_string()),
                    None => break (close_code::NORMAL, exit_reason(session.exit_code.take()).await),
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let mut line = text.to_string();
                        if !line.ends_with('\n') {
                            line.push('\n');
                        }
                        // A command that stopped reading still has output to deliver.
                        let _ = session.input.write_all(line.as_bytes()).await;
                    }
                    Some(Ok(Message::Binary(bytes))) if bytes.is_empty() => {
                        let _ = session.input.shutdown().await;
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        let _ = session.input.write_all(&bytes).await;
                    }
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                },
                _ = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => {
                    break (close_code::AWAY, "server shutting down".to_string());
                }
            }
        };
        let _ = super::events::close(&mut socket, end.0, &end.1).await;
    })
}

/// `exited <code>` when the engine tells the code (within a few seconds), else `command exited`.
async fn exit_reason(exit_code: Option<tokio::sync::oneshot::Receiver<i64>>) -> String {
    let Some(exit_code) = exit_code else {
        return "command exited".into();
    };
    match tokio::time::timeout(Duration::from_secs(5), exit_code).await {
        Ok(Ok(code)) => format!("exited {code}"),
        _ => "command exited".into(),
    }
}
