//! `gofer run …` and `gofer task …`, including following a run live.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::client::field;
use super::{ListArgs, Session, output};
use crate::models::{Event, EventKind, Run, RunStatus, TaskExecution};

#[derive(Debug, Subcommand)]
pub(super) enum RunCommand {
    /// Start a run of the pipeline's live config.
    Start {
        pipeline: String,
        /// Run variable KEY=VALUE (repeatable); overrides the tasks' variables.
        #[arg(long = "var", short = 'v', value_parser = parse_variable)]
        variables: Vec<(String, String)>,
        /// Stream task status and logs until the run ends; the exit code reflects the run.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Run this registered config version instead of the live one (or the one a canary or
        /// A/B test would route the run to).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Run a complete run again: its config version and variables; with --failed-only only the
    /// tasks that failed or were skipped and their dependents.
    Rerun {
        pipeline: String,
        run: u64,
        /// Take the original's successful tasks as done; run only what failed or was skipped,
        /// and what depends on it.
        #[arg(long)]
        failed_only: bool,
        /// Stream task status and logs until the run ends; the exit code reflects the run.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// List a pipeline's runs, newest first.
    List {
        pipeline: String,
        #[command(flatten)]
        list: ListArgs,
        /// Oldest first.
        #[arg(long)]
        oldest_first: bool,
    },
    /// Show a run and its tasks.
    Get { pipeline: String, run: u64 },
    /// What happened when: queued, dispatched, each task's attempts, exits and logs, the end.
    Timeline { pipeline: String, run: u64 },
    /// Cancel a run (its tasks get `runs.stop_timeout_secs` to stop).
    Cancel { pipeline: String, run: u64 },
}

#[derive(Debug, Subcommand)]
pub(super) enum TaskCommand {
    /// List the tasks of a run.
    List { pipeline: String, run: u64 },
    /// Show one task execution with its environment.
    Get {
        pipeline: String,
        run: u64,
        task: String,
    },
    /// Print a task's output; with --follow, until the task ends.
    Logs {
        pipeline: String,
        run: u64,
        task: String,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Run a command inside a running task's container; your input goes to it line by line.
    Attach {
        pipeline: String,
        run: u64,
        task: String,
        /// The command (split on spaces).
        #[arg(long, short = 'c', default_value = "sh")]
        command: String,
    },
    /// Open a shell in the filesystem a failed task left (kept with `keep_failed`), or run one
    /// command there: `gofer task shell PIPELINE RUN TASK -- ls -l /out`.
    Shell {
        pipeline: String,
        run: u64,
        task: String,
        /// The command and its arguments (default: an interactive `sh -i`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Cancel one task of a running run.
    Cancel {
        pipeline: String,
        run: u64,
        task: String,
        /// Seconds to let the task stop before it is killed (default: the server's).
        #[arg(long, short = 'w')]
        wait_for: Option<u64>,
    },
}

pub(super) fn parse_variable(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

pub(super) async fn run(ctx: &Session, command: RunCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        RunCommand::Start {
            pipeline,
            variables,
            follow,
            version,
        } => {
            let variables: BTreeMap<String, String> = variables.into_iter().collect();
            let mut request = json!({ "variables": variables });
            if let Some(version) = version {
                request["version"] = json!(version);
            }
            let path = format!("{}/runs", ctx.pipeline_path(&pipeline));
            if follow {
                return start_and_follow(ctx, &pipeline, &path, request).await;
            }
            let body = client.post(&path, request).await?;
            started(ctx, &pipeline, &body)
        }
        RunCommand::Rerun {
            pipeline,
            run,
            failed_only,
            follow,
        } => {
            let path = format!("{}/runs/{run}/rerun", ctx.pipeline_path(&pipeline));
            let request = json!({ "failed_only": failed_only });
            if follow {
                return start_and_follow(ctx, &pipeline, &path, request).await;
            }
            let body = client.post(&path, request).await?;
            started(ctx, &pipeline, &body)
        }
        RunCommand::List {
            pipeline,
            list,
            oldest_first,
        } => {
            let mut query = list.query();
            if !oldest_first {
                query.push_str(if query.is_empty() {
                    "?reverse=true"
                } else {
                    "&reverse=true"
                });
            }
            let body = client
                .get(&format!("{}/runs{query}", ctx.pipeline_path(&pipeline)))
                .await?;
            ctx.show(&body, |body| {
                Ok(output::runs(&field::<Vec<Run>>(body, "runs")?))
            })
        }
        RunCommand::Get { pipeline, run } => {
            let path = format!("{}/runs/{run}", ctx.pipeline_path(&pipeline));
            let body = client.get(&path).await?;
            if ctx.json() {
                output::print_json(&body)?;
                return Ok(());
            }
            let tasks = client.get(&format!("{path}/tasks")).await?;
            let tasks: Vec<TaskExecution> = field(&tasks, "task_executions")?;
            output::line(output::run(&field(&body, "run")?, &tasks))?;
            Ok(())
        }
        RunCommand::Timeline { pipeline, run } => {
            let path = format!("{}/runs/{run}/timeline", ctx.pipeline_path(&pipeline));
            let body = client.get(&path).await?;
            ctx.show(&body, |body| {
                let entries: Vec<crate::models::TimelineEntry> = field(body, "timeline")?;
                Ok(output::timeline(&entries))
            })
        }
        RunCommand::Cancel { pipeline, run } => {
            let body = client
                .delete(&format!("{}/runs/{run}", ctx.pipeline_path(&pipeline)))
                .await?;
            ctx.done(&body, format!("Cancelling run #{run} of '{pipeline}'"))?;
            Ok(())
        }
    }
}

pub(super) async fn task(ctx: &Session, command: TaskCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match command {
        TaskCommand::List { pipeline, run } => {
            let body = client
                .get(&format!(
                    "{}/runs/{run}/tasks",
                    ctx.pipeline_path(&pipeline)
                ))
                .await?;
            ctx.show(&body, |body| {
                Ok(output::task_executions(&field::<Vec<TaskExecution>>(
                    body,
                    "task_executions",
                )?))
            })
        }
        TaskCommand::Get {
            pipeline,
            run,
            task,
        } => {
            let body = client
                .get(&format!(
                    "{}/runs/{run}/tasks/{task}",
                    ctx.pipeline_path(&pipeline)
                ))
                .await?;
            ctx.show(&body, |body| {
                Ok(output::task_execution(&field(body, "task_execution")?))
            })
        }
        TaskCommand::Logs {
            pipeline,
            run,
            task,
            follow,
        } => {
            let path = format!(
                "{}/runs/{run}/tasks/{task}/logs",
                ctx.pipeline_path(&pipeline)
            );
            if !follow {
                let text = client.get_text(&path).await?;
                output::text(text)?;
                return Ok(());
            }
            stream_log(ctx, &path, None).await
        }
        TaskCommand::Attach {
            pipeline,
            run,
            task,
            command,
        } => {
            let query: String = command.split_whitespace().collect::<Vec<_>>().join("%20");
            let path = format!(
                "{}/runs/{run}/tasks/{task}/attach?command={query}",
                ctx.pipeline_path(&pipeline)
            );
            attach(ctx, &path).await
        }
        TaskCommand::Shell {
            pipeline,
            run,
            task,
            command,
        } => {
            let mut path = format!(
                "{}/runs/{run}/tasks/{task}/shell",
                ctx.pipeline_path(&pipeline)
            );
            if !command.is_empty() {
                let mut query = reqwest::Url::parse("http://query.invalid/")?;
                query
                    .query_pairs_mut()
                    .append_pair("command", &serde_json::to_string(&command)?);
                path = format!("{path}?{}", query.query().unwrap_or_default());
            }
            shell(ctx, &path).await
        }
        TaskCommand::Cancel {
            pipeline,
            run,
            task,
            wait_for,
        } => {
            let query = wait_for
                .map(|seconds| format!("?wait_for={seconds}"))
                .unwrap_or_default();
            let body = client
                .delete(&format!(
                    "{}/runs/{run}/tasks/{task}{query}",
                    ctx.pipeline_path(&pipeline)
                ))
                .await?;
            ctx.done(&body, format!("Cancelling task '{task}' of run #{run}"))?;
            Ok(())
        }
    }
}

/// Connects to a websocket endpoint, turning an HTTP refusal into the server's message.
async fn connect(
    ctx: &Session,
    path: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let request = ctx.client.websocket_request(path)?;
    match ctx.client.connect_websocket(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|body| String::from_utf8_lossy(body).to_string())
                .unwrap_or_default();
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|value| value["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            bail!("{message} (HTTP {})", response.status().as_u16());
        }
        Err(error) => Err(error).context("could not open the stream"),
    }
}

/// Bridges the terminal to a command inside a task's container until the command exits.
async fn attach(ctx: &Session, path: &str) -> anyhow::Result<()> {
    use futures_util::SinkExt;
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let socket = connect(ctx, path).await?;
    let (mut sink, mut stream) = socket.split();
    let input = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if sink.send(Message::Text(line.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });
    let mut stdout = std::io::stdout();
    while let Some(message) = stream.next().await {
        match message.context("the session broke")? {
            Message::Binary(bytes) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Message::Text(text) => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            Message::Close(Some(frame)) if u16::from(frame.code) != 1000 => {
                input.abort();
                bail!("the session ended: {}", frame.reason)
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    input.abort();
    Ok(())
}

/// A shell session: standard input goes as it comes (its end ends the command's input), the
/// output is printed, and the command's exit code becomes an error when it is not 0.
async fn shell(ctx: &Session, path: &str) -> anyhow::Result<()> {
    use futures_util::SinkExt;
    use std::io::Write;
    use tokio::io::AsyncReadExt;
    let socket = connect(ctx, path).await?;
    let (mut sink, mut stream) = socket.split();
    let input = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buffer = vec![0u8; 8192];
        loop {
            let read = stdin.read(&mut buffer).await.unwrap_or(0);
            let chunk = buffer[..read].to_vec();
            if sink.send(Message::Binary(chunk.into())).await.is_err() || read == 0 {
                break;
            }
        }
    });
    let mut stdout = std::io::stdout();
    let mut ended = None;
    while let Some(message) = stream.next().await {
        match message.context("the session broke")? {
            Message::Binary(bytes) => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Message::Close(Some(frame)) if u16::from(frame.code) != 1000 => {
                input.abort();
                bail!("the session ended: {}", frame.reason)
            }
            Message::Close(frame) => {
                ended = frame.map(|frame| frame.reason.to_string());
                break;
            }
            _ => {}
        }
    }
    input.abort();
    match ended
        .as_deref()
        .and_then(|reason| reason.strip_prefix("exited "))
    {
        Some("0") | None => Ok(()),
        Some(code) => bail!("the command exited with code {code}"),
    }
}

/// Prints a log websocket's lines (prefixed with `prefix`) until the server closes it.
pub(super) async fn stream_log(
    ctx: &Session,
    path: &str,
    prefix: Option<&str>,
) -> anyhow::Result<()> {
    let mut socket = connect(ctx, path).await?;
    while let Some(message) = socket.next().await {
        match message.context("the log stream broke")? {
            Message::Text(line) => match prefix {
                Some(prefix) => output::text(format_args!("{prefix} | {line}"))?,
                None => output::text(line)?,
            },
            Message::Close(Some(frame)) if u16::from(frame.code) != 1000 => {
                bail!("the log stream ended: {}", frame.reason)
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// Starts a run and prints its progress (task starts and ends, task output) until it completes.
/// Fails (exit code 1) unless the run succeeds.
/// Says a run was queued (and, when a canary or an A/B test chose its version, which side).
fn started(ctx: &Session, pipeline: &str, body: &serde_json::Value) -> anyhow::Result<()> {
    let run: Run = field(body, "run")?;
    let routed = run
        .routing
        .as_ref()
        .map(|routing| {
            format!(
                ", {} of deployment {}",
                routing.arm.as_str(),
                routing.deployment_id
            )
        })
        .unwrap_or_default();
    let rerun = run
        .rerun_of
        .map(|original| format!(", re-running #{original}"))
        .unwrap_or_default();
    ctx.done(
        body,
        format!(
            "Started run #{} of '{pipeline}' (config v{}{routed}{rerun}); follow it with `gofer run get {pipeline} {}`",
            run.run_id, run.pipeline_config_version, run.run_id
        ),
    )
}

/// Starts a run by POSTing `request` to `path` (a start or a re-run) and follows it.
async fn start_and_follow(
    ctx: &Session,
    pipeline: &str,
    path: &str,
    request: serde_json::Value,
) -> anyhow::Result<()> {
    // Listen before starting, so that no event of the run can be missed.
    let stream = ctx.client.websocket_request("/api/events")?;
    let (mut events, _) = ctx
        .client
        .connect_websocket(stream)
        .await
        .with_context(|| {
            format!(
                "could not open the event stream at {}",
                ctx.global.api_base_url
            )
        })?;
    let body = ctx.client.post(path, request).await?;
    let run: Run = field(&body, "run")?;
    let run_id = run.run_id;
    let interactive = std::io::stdout().is_terminal() && !ctx.json();
    let spinner = interactive.then(|| {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_message(format!("run #{run_id} of '{pipeline}' is queued"));
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner
    });
    let say = |line: String| match &spinner {
        Some(spinner) => {
            spinner.println(line);
            Ok(())
        }
        None => output::line(line),
    };
    if !ctx.json() {
        say(format!(
            "▶ run #{run_id} of '{pipeline}' queued (config v{})",
            run.pipeline_config_version
        ))?;
    }
    let namespace = ctx.global.namespace.clone();
    let mut log_streams = Vec::new();
    let mut following: HashSet<String> = HashSet::new();
    let status = loop {
        let Some(message) = events.next().await else {
            bail!("the event stream closed before run #{run_id} ended");
        };
        let Message::Text(text) = message.context("the event stream broke")? else {
            continue;
        };
        let event: Event =
            serde_json::from_str(&text).context("the server sent an unreadable event")?;
        if event.kind.run() != Some((namespace.as_str(), pipeline, run_id)) {
            continue;
        }
        if ctx.json() {
            output::line(text)?;
        }
        match &event.kind {
            EventKind::StartedRun { .. } => {
                if let Some(spinner) = &spinner {
                    spinner.set_message(format!("run #{run_id} of '{pipeline}' is running"));
                }
            }
            EventKind::StartedTaskExecution {
                task_execution_id,
                attempt,
                ..
            } => {
                if !ctx.json() {
                    let attempt = if *attempt > 1 {
                        format!(" (attempt {attempt})")
                    } else {
                        String::new()
                    };
                    say(format!("  ● {task_execution_id} started{attempt}"))?;
                }
                if !ctx.json() && following.insert(task_execution_id.clone()) {
                    let path = format!(
                        "{}/runs/{run_id}/tasks/{task_execution_id}/logs",
                        ctx.pipeline_path(pipeline)
                    );
                    let session = ctx.clone_for_streams();
                    let prefix = task_execution_id.clone();
                    log_streams.push(tokio::spawn(async move {
                        let outcome = stream_log(&session, &path, Some(&prefix)).await;
                        if let Err(error) = outcome
                            && !super::output_closed(&error)
                        {
                            eprintln!("{prefix} | (log unavailable: {error})");
                        }
                    }));
                }
            }
            EventKind::CompletedTaskExecution {
                task_execution_id,
                status,
                ..
            } if !ctx.json() => {
                let status = serde_json::to_value(status)?
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let mark = match status.as_str() {
                    "successful" => "✓",
                    "skipped" => "↷",
                    _ => "✗",
                };
                say(format!("  {mark} {task_execution_id} {status}"))?;
            }
            EventKind::CompletedRun { status, .. } => {
                break *status;
            }
            _ => {}
        }
    };
    for stream in log_streams {
        let _ = tokio::time::timeout(Duration::from_secs(10), stream).await;
    }
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let body = ctx
        .client
        .get(&format!("{}/runs/{run_id}", ctx.pipeline_path(pipeline)))
        .await?;
    let run: Run = field(&body, "run")?;
    let reason = run
        .status_reason
        .map(|reason| format!(": {}", reason.description))
        .unwrap_or_default();
    if status == RunStatus::Successful {
        if !ctx.json() {
            output::line(format_args!(
                "✓ run #{run_id} successful in {}",
                output::duration(run.started, run.ended)
            ))?;
        }
        return Ok(());
    }
    let status = serde_json::to_value(status)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    bail!("run #{run_id} of '{pipeline}' {status}{reason}")
}
