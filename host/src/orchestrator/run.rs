//! A run's driver: walks the DAG, starts each task as soon as all its parents are complete,
//! retries, cancels, times out, and records the run's end.
//!
//! One driver per running run; it alone writes that run's and its tasks' state (each task's
//! `running` transition is written by the task's own future, between the driver's writes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::dag::{self, Decision, RunInterruption};
use super::task::{Outcome, StopRequest, container_name, log_key};
use super::{Control, Orchestrator, RunKey};
use crate::logs::LogWriter;
use crate::masks::Masks;
use crate::models::{
    EventKind, RunState, TaskExecution, TaskExecutionState, TaskExecutionStatus,
    TaskExecutionStatusReason, TaskExecutionStatusReasonType, now_millis,
};
use crate::storage::StorageError;
use crate::telemetry::{self, TraceParent};

/// Longest pause between two attempts of a task.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// What a task's future reports when its attempt is over.
struct Report {
    task_id: String,
    outcome: Outcome,
    writer: Option<LogWriter>,
}

struct Driver {
    orchestrator: Orchestrator,
    key: RunKey,
    /// The run's span; each task attempt's span is its child.
    span: tracing::Span,
    /// The run's trace, handed to its tasks as `TRACEPARENT`.
    trace: TraceParent,
    tasks: BTreeMap<String, TaskExecution>,
    completed: HashMap<String, TaskExecutionStatus>,
    stops: HashMap<String, watch::Sender<Option<StopRequest>>>,
    in_flight: FuturesUnordered<BoxFuture<'static, Report>>,
    interruption: Option<RunInterruption>,
    cancelled_tasks: HashSet<String>,
}

/// Drives a run from whatever state storage holds to its end.
pub(super) async fn drive(
    orchestrator: Orchestrator,
    key: RunKey,
    control: mpsc::UnboundedReceiver<Control>,
) {
    let outcome = drive_inner(orchestrator, key.clone(), control).await;
    if let Err(error) = outcome {
        tracing::error!(run_id = key.run_id, pipeline = %key.pipeline_id, %error, "run driver failed");
    }
}

async fn drive_inner(
    orchestrator: Orchestrator,
    key: RunKey,
    control: mpsc::UnboundedReceiver<Control>,
) -> Result<(), StorageError> {
    use tracing::Instrument;
    let load_key = key.clone();
    let (run_timeout, trace_parent, tasks) = orchestrator
        .inner
        .storage
        .read(move |db| {
            let run = db.get_run(
                &load_key.namespace_id,
                &load_key.pipeline_id,
                load_key.run_id,
            )?;
            let config = db.get_config(
                &run.namespace_id,
                &run.pipeline_id,
                run.pipeline_config_version,
            )?;
            let tasks = db.list_task_executions(&run.namespace_id, &run.pipeline_id, run.run_id)?;
            Ok((config.timeout, run.trace_parent, tasks))
        })
        .await?;
    // Runs from before traces were recorded get a trace of their own.
    let trace = trace_parent
        .as_deref()
        .and_then(TraceParent::parse)
        .unwrap_or_else(TraceParent::fresh);
    let span = tracing::info_span!(
        "run",
        namespace = %key.namespace_id,
        pipeline = %key.pipeline_id,
        run_id = key.run_id,
        trace_id = %trace.trace_id_hex(),
    );
    telemetry::adopt_parent(&span, &trace);
    let driver = Driver {
        orchestrator,
        key,
        span: span.clone(),
        trace,
        tasks: BTreeMap::new(),
        completed: HashMap::new(),
        stops: HashMap::new(),
        in_flight: FuturesUnordered::new(),
        interruption: None,
        cancelled_tasks: HashSet::new(),
    };
    driver
        .drive(tasks, run_timeout, control)
        .instrument(span)
        .await
}

impl Driver {
    async fn drive(
        mut self,
        tasks: Vec<(TaskExecution, Option<String>)>,
        run_timeout: Option<crate::domain::Timeout>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) -> Result<(), StorageError> {
        let driver = &mut self;
        for (task, container) in tasks {
            match task.state {
                TaskExecutionState::Complete => {
                    driver.completed.insert(task.task_id.clone(), task.status);
                }
                TaskExecutionState::Processing | TaskExecutionState::Running => match container {
                    Some(name) => driver.resume(task.clone(), name),
                    None => driver.launch(task.clone(), Duration::ZERO, None),
                },
                TaskExecutionState::Waiting | TaskExecutionState::Unknown => {}
            }
            driver.tasks.insert(task.task_id.clone(), task);
        }
        let run_limit = run_timeout.map(|timeout| (timeout.duration(), timeout.text().to_string()));
        // Counted from when the run was dispatched (its tasks were created then), so a run resumed
        // after a restart keeps its original deadline.
        let dispatched = driver
            .tasks
            .values()
            .map(|task| task.created)
            .min()
            .unwrap_or(0);
        let deadline = run_limit.as_ref().map(|(limit, _)| {
            tokio::time::Instant::now() + limit.saturating_sub(elapsed_since(dispatched))
        });
        let mut control_open = true;
        loop {
            driver.advance().await?;
            if driver.in_flight.is_empty() && driver.waiting().is_empty() {
                break;
            }
            let timer = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(report) = driver.in_flight.next() => driver.handle_report(report).await?,
                command = control.recv(), if control_open => match command {
                    Some(command) => driver.handle_control(command).await?,
                    None => control_open = false,
                },
                () = timer, if driver.interruption.is_none() => {
                    let after = run_limit.as_ref().map(|(_, text)| text.clone()).unwrap_or_default();
                    let grace = driver.orchestrator.inner.settings.stop_timeout.min(Duration::from_secs(10));
                    driver.interrupt(RunInterruption::TimedOut { after }, grace).await?;
                }
            }
        }
        self.finish().await
    }

    fn waiting(&self) -> Vec<String> {
        self.tasks
            .values()
            .filter(|task| {
                matches!(
                    task.state,
                    TaskExecutionState::Waiting | TaskExecutionState::Unknown
                )
            })
            .filter(|task| !self.stops.contains_key(&task.task_id))
            .map(|task| task.task_id.clone())
            .collect()
    }

    /// Starts or skips every waiting task whose parents are all complete, until nothing changes.
    async fn advance(&mut self) -> Result<(), StorageError> {
        loop {
            let mut changed = false;
            for task_id in self.waiting() {
                let task = self.tasks[&task_id].clone();
                if let Some(interruption) = &self.interruption {
                    let why = match interruption {
                        RunInterruption::Cancelled { by } => {
                            format!("the run was cancelled by {by} before this task started")
                        }
                        RunInterruption::TimedOut { after } => {
                            format!("the run timed out ({after}) before this task started")
                        }
                    };
                    self.complete_without_running(
                        task,
                        TaskExecutionStatus::Cancelled,
                        TaskExecutionStatusReasonType::Cancelled,
                        why,
                    )
                    .await?;
                    changed = true;
                    continue;
                }
                if !dag::parents_complete(&task.task.depends_on, &self.completed) {
                    continue;
                }
                changed = true;
                match dag::decide(&task_id, &task.task.depends_on, &self.completed) {
                    Decision::Skip(why) => {
                        self.complete_without_running(
                            task,
                            TaskExecutionStatus::Skipped,
                            TaskExecutionStatusReasonType::FailedPrecondition,
                            why,
                        )
                        .await?;
                    }
                    Decision::Run => self.launch(task, Duration::ZERO, None),
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }

    /// The span of a task's attempt, a child of the run's.
    fn attempt_span(&self, task: &TaskExecution) -> tracing::Span {
        tracing::info_span!(parent: &self.span, "task", task_id = %task.task_id, attempt = task.attempt)
    }

    /// Starts an attempt of a task after `delay`.
    fn launch(&mut self, task: TaskExecution, delay: Duration, writer: Option<LogWriter>) {
        use tracing::Instrument;
        let (stop_sender, mut stop) = watch::channel(None);
        self.stops.insert(task.task_id.clone(), stop_sender);
        let orchestrator = self.orchestrator.clone();
        let span = self.attempt_span(&task);
        let trace = self.trace;
        self.in_flight.push(
            async move {
                let task_id = task.task_id.clone();
                if !delay.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = async { drop(stop.wait_for(Option::is_some).await) } => {
                            return Report { task_id, outcome: Outcome::Cancelled, writer };
                        }
                    }
                }
                let (outcome, writer) = orchestrator.attempt(task, writer, stop, trace).await;
                Report {
                    task_id,
                    outcome,
                    writer,
                }
            }
            .instrument(span)
            .boxed(),
        );
    }

    /// Picks up a task that was processing or running when the server stopped.
    fn resume(&mut self, task: TaskExecution, container: String) {
        use tracing::Instrument;
        let (stop_sender, stop) = watch::channel(None);
        self.stops.insert(task.task_id.clone(), stop_sender);
        let orchestrator = self.orchestrator.clone();
        let span = self.attempt_span(&task);
        let trace = self.trace;
        self.in_flight.push(
            async move {
                let task_id = task.task_id.clone();
                // What is left of the timeout of the attempt that was running.
                let timeout = task_timeout(&task)
                    .map(|(limit, text)| (limit.saturating_sub(elapsed_since(task.started)), text));
                match orchestrator
                    .reattach(&task, &container, stop.clone(), timeout)
                    .await
                {
                    Some((outcome, writer)) => Report {
                        task_id,
                        outcome,
                        writer,
                    },
                    // The container was never created: start the attempt now.
                    None => {
                        let (outcome, writer) = orchestrator.attempt(task, None, stop, trace).await;
                        Report {
                            task_id,
                            outcome,
                            writer,
                        }
                    }
                }
            }
            .instrument(span)
            .boxed(),
        );
    }

    async fn handle_report(&mut self, report: Report) -> Result<(), StorageError> {
        self.stops.remove(&report.task_id);
        let mut task = self.tasks[&report.task_id].clone();
        let failed = match &report.outcome {
            Outcome::Exited(code) => *code != 0,
            Outcome::Failed(..) | Outcome::TimedOut(_) | Outcome::OutOfMemory { .. } => true,
            Outcome::Cancelled => false,
        };
        let may_retry = failed
            && task.attempt <= task.task.retries
            && self.interruption.is_none()
            && !self.cancelled_tasks.contains(&task.task_id);
        if !may_retry {
            return self.complete(task, report.outcome, report.writer).await;
        }
        let pause = Duration::from_secs(1u64 << (task.attempt - 1).min(5)).min(MAX_RETRY_PAUSE);
        let what = describe(&report.outcome);
        let total = task.task.retries + 1;
        let note = format!(
            "attempt {} of {total} {what}; attempt {} starts in {}s",
            task.attempt,
            task.attempt + 1,
            pause.as_secs()
        );
        let mut writer = report.writer;
        if let Some(writer) = writer.as_mut() {
            let _ = writer.write(format!("\n[gofer] {note}\n").as_bytes()).await;
        }
        task.attempt += 1;
        task.state = TaskExecutionState::Waiting;
        task.status_reason = Some(TaskExecutionStatusReason {
            reason: reason_of(&report.outcome),
            description: note,
        });
        let stored = task.clone();
        let task = self
            .orchestrator
            .write(move |db| db.update_task_execution_keeping_start(&stored))
            .await?;
        self.tasks.insert(task.task_id.clone(), task.clone());
        self.launch(task, pause, writer);
        Ok(())
    }

    async fn handle_control(&mut self, command: Control) -> Result<(), StorageError> {
        match command {
            Control::CancelRun { by, grace } => {
                let grace = grace.unwrap_or(self.orchestrator.inner.settings.stop_timeout);
                self.interrupt(RunInterruption::Cancelled { by }, grace)
                    .await
            }
            Control::CancelTask { task_id, grace } => {
                self.cancelled_tasks.insert(task_id.clone());
                if let Some(stop) = self.stops.get(&task_id) {
                    stop.send_replace(Some(StopRequest { grace }));
                } else if let Some(task) = self.tasks.get(&task_id).cloned()
                    && task.state != TaskExecutionState::Complete
                {
                    self.complete_without_running(
                        task,
                        TaskExecutionStatus::Cancelled,
                        TaskExecutionStatusReasonType::Cancelled,
                        "The task was cancelled before it started".into(),
                    )
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Stops everything in flight; waiting tasks are cancelled by the next `advance`.
    async fn interrupt(
        &mut self,
        interruption: RunInterruption,
        grace: Duration,
    ) -> Result<(), StorageError> {
        tracing::info!(run_id = self.key.run_id, pipeline = %self.key.pipeline_id, ?interruption, "interrupting run");
        self.interruption = Some(interruption);
        for stop in self.stops.values() {
            stop.send_replace(Some(StopRequest { grace }));
        }
        Ok(())
    }

    async fn complete(
        &mut self,
        mut task: TaskExecution,
        outcome: Outcome,
        writer: Option<LogWriter>,
    ) -> Result<(), StorageError> {
        let (status, exit_code, reason) = match &outcome {
            Outcome::Exited(0) => (TaskExecutionStatus::Successful, Some(0), None),
            Outcome::Exited(code) => (
                TaskExecutionStatus::Failed,
                Some(u8::try_from(*code).unwrap_or(u8::MAX)),
                Some(TaskExecutionStatusReason {
                    reason: TaskExecutionStatusReasonType::AbnormalExit,
                    description: format!("The task exited with code {code}"),
                }),
            ),
            Outcome::OutOfMemory {
                exit_code,
                limit,
                certain,
            } => (
                TaskExecutionStatus::Failed,
                Some(u8::try_from(*exit_code).unwrap_or(u8::MAX)),
                Some(TaskExecutionStatusReason {
                    reason: TaskExecutionStatusReasonType::AbnormalExit,
                    description: if *certain {
                        format!(
                            "The task used more than its memory limit of {limit} and was killed (exit code {exit_code})"
                        )
                    } else {
                        format!(
                            "The task was killed (exit code {exit_code}), most likely for using more than its memory limit of {limit}"
                        )
                    },
                }),
            ),
            Outcome::Failed(reason, description) => (
                TaskExecutionStatus::Failed,
                None,
                Some(TaskExecutionStatusReason {
                    reason: *reason,
                    description: description.clone(),
                }),
            ),
            Outcome::Cancelled => (
                TaskExecutionStatus::Cancelled,
                None,
                Some(TaskExecutionStatusReason {
                    reason: TaskExecutionStatusReasonType::Cancelled,
                    description: match &self.interruption {
                        Some(RunInterruption::Cancelled { by }) => {
                            format!("The run was cancelled by {by}")
                        }
                        Some(RunInterruption::TimedOut { after }) => {
                            format!("The run timed out ({after})")
                        }
                        None => "The task was cancelled".into(),
                    },
                }),
            ),
            Outcome::TimedOut(after) => (
                TaskExecutionStatus::Failed,
                None,
                Some(TaskExecutionStatusReason {
                    reason: TaskExecutionStatusReasonType::Timeout,
                    description: format!("The task did not finish within its timeout of {after}"),
                }),
            ),
        };
        if let Some(writer) = writer
            && let Err(error) = writer.finish().await
        {
            tracing::warn!(%error, "could not close a task log");
        }
        task.state = TaskExecutionState::Complete;
        task.status = status;
        task.exit_code = exit_code;
        task.status_reason = reason;
        task.ended = now_millis();
        self.record_completion(task).await
    }

    async fn complete_without_running(
        &mut self,
        mut task: TaskExecution,
        status: TaskExecutionStatus,
        reason: TaskExecutionStatusReasonType,
        description: String,
    ) -> Result<(), StorageError> {
        task.state = TaskExecutionState::Complete;
        task.status = status;
        task.status_reason = Some(TaskExecutionStatusReason {
            reason,
            description,
        });
        task.ended = now_millis();
        self.record_completion(task).await
    }

    async fn record_completion(&mut self, task: TaskExecution) -> Result<(), StorageError> {
        let stored = task.clone();
        let task = self
            .orchestrator
            .write(move |db| {
                // The attempt's future recorded when its container started.
                let stored = db.update_task_execution_keeping_start(&stored)?;
                db.insert_event(EventKind::CompletedTaskExecution {
                    namespace_id: stored.namespace_id.clone(),
                    pipeline_id: stored.pipeline_id.clone(),
                    run_id: stored.run_id,
                    task_execution_id: stored.task_id.clone(),
                    status: stored.status,
                })?;
                Ok(stored)
            })
            .await?;
        self.completed.insert(task.task_id.clone(), task.status);
        self.tasks.insert(task.task_id.clone(), task);
        Ok(())
    }

    async fn finish(self) -> Result<(), StorageError> {
        let statuses: BTreeMap<String, TaskExecutionStatus> = self
            .tasks
            .values()
            .map(|task| (task.task_id.clone(), task.status))
            .collect();
        let (status, reason) = dag::run_outcome(&statuses, self.interruption.as_ref());
        if self.tasks.values().any(|task| task.task.workspace) {
            let settings = &self.orchestrator.inner.settings;
            let volume = super::task::workspace_volume(
                settings,
                &self.key.namespace_id,
                &self.key.pipeline_id,
                self.key.run_id,
            );
            // A kept failed task's container still holds it; it goes when that is discarded.
            if let Err(error) = self
                .orchestrator
                .inner
                .scheduler
                .remove_volume(&volume)
                .await
            {
                tracing::info!(%volume, %error, "the run's workspace was not removed");
            }
        }
        let key = self.key.clone();
        self.orchestrator
            .write(move |db| {
                let mut run = db.get_run(&key.namespace_id, &key.pipeline_id, key.run_id)?;
                run.state = RunState::Complete;
                run.status = status;
                run.status_reason = reason;
                run.ended = now_millis();
                db.update_run(&run, true)?;
                db.insert_event(EventKind::CompletedRun {
                    namespace_id: run.namespace_id,
                    pipeline_id: run.pipeline_id,
                    run_id: run.run_id,
                    status,
                })
            })
            .await?;
        tracing::info!(run_id = self.key.run_id, pipeline = %self.key.pipeline_id, ?status, "run complete");
        Ok(())
    }
}

/// How long ago an epoch-millisecond time was (zero for 0, "not yet").
fn elapsed_since(millis: u64) -> Duration {
    match millis {
        0 => Duration::ZERO,
        millis => Duration::from_millis(crate::models::now_millis().saturating_sub(millis)),
    }
}

pub(super) fn task_timeout(task: &TaskExecution) -> Option<(Duration, String)> {
    let timeout = task.task.timeout.as_ref()?;
    Some((timeout.duration(), timeout.text().to_string()))
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Exited(code) => format!("exited with code {code}"),
        Outcome::Failed(_, description) => format!("failed: {description}"),
        Outcome::Cancelled => "was cancelled".into(),
        Outcome::TimedOut(after) => format!("timed out after {after}"),
        Outcome::OutOfMemory { limit, .. } => {
            format!("was killed for using more than its memory limit of {limit}")
        }
    }
}

fn reason_of(outcome: &Outcome) -> TaskExecutionStatusReasonType {
    match outcome {
        Outcome::Exited(_) | Outcome::OutOfMemory { .. } => {
            TaskExecutionStatusReasonType::AbnormalExit
        }
        Outcome::Failed(reason, _) => *reason,
        Outcome::Cancelled => TaskExecutionStatusReasonType::Cancelled,
        Outcome::TimedOut(_) => TaskExecutionStatusReasonType::Timeout,
    }
}

impl Orchestrator {
    /// One attempt: record `processing` with the container name (before the container exists),
    /// open the log, run the container (or the shared task) with `TRACEPARENT` naming the
    /// attempt's span in the run's trace.
    async fn attempt(
        &self,
        mut task: TaskExecution,
        writer: Option<LogWriter>,
        stop: watch::Receiver<Option<StopRequest>>,
        trace: TraceParent,
    ) -> (Outcome, Option<LogWriter>) {
        let stopped = stop.borrow().is_some();
        if stopped {
            return (Outcome::Cancelled, writer);
        }
        task.state = TaskExecutionState::Processing;
        let name = container_name(&self.inner.settings, &task);
        let stored = task.clone();
        let recorded_name = name.clone();
        if let Err(error) = self
            .write(move |db| db.update_task_execution(&stored, Some(&recorded_name)))
            .await
        {
            return (
                Outcome::Failed(
                    TaskExecutionStatusReasonType::SchedulerError,
                    format!("could not record the task: {error}"),
                ),
                writer,
            );
        }
        let writer = match writer {
            Some(writer) => writer,
            None => match self
                .inner
                .logs
                .writer(&log_key(&task), task.attempt == 1)
                .await
            {
                Ok(writer) => writer,
                Err(error) => {
                    return (
                        Outcome::Failed(
                            TaskExecutionStatusReasonType::SchedulerError,
                            error.to_string(),
                        ),
                        None,
                    );
                }
            },
        };
        let mut writer = writer;
        let resolved = match self.interpolated_environment(&task).await {
            Ok(resolved) if task.task.inject_api_token => {
                let (mut env, mut secrets) = (resolved.pairs, resolved.secrets);
                let key = RunKey {
                    namespace_id: task.namespace_id.clone(),
                    pipeline_id: task.pipeline_id.clone(),
                    run_id: task.run_id,
                };
                self.run_token(&key).await.map(|secret| {
                    env.retain(|(name, _)| name != "GOFER_TOKEN");
                    env.push(("GOFER_TOKEN".to_string(), secret.clone()));
                    secrets.push(secret);
                    (env, secrets)
                })
            }
            other => other
                .map(|resolved| (resolved.pairs, resolved.secrets))
                .map_err(|error| error.to_string()),
        };
        let (mut env, secrets) = match resolved {
            Ok(resolved) => resolved,
            Err(message) => {
                let _ = writer
                    .write(format!("[gofer] the task cannot start: {message}\n").as_bytes())
                    .await;
                return (
                    Outcome::Failed(TaskExecutionStatusReasonType::FailedPrecondition, message),
                    Some(writer),
                );
            }
        };
        let attempt_trace =
            telemetry::context_of(&tracing::Span::current()).unwrap_or_else(|| trace.child());
        env.retain(|(name, _)| name != "TRACEPARENT");
        env.push(("TRACEPARENT".to_string(), attempt_trace.to_string()));
        // Secret values stay out of the log, and out of the reason an attempt failed (an
        // engine's error may quote the environment).
        let masks = Masks::of(secrets);
        writer.mask(masks.clone());
        let (outcome, writer) = if let Some(plugin) = task.task.plugin.clone() {
            self.run_shared_task(&task, &plugin, env, writer, stop)
                .await
        } else {
            let timeout = task_timeout(&task);
            self.run_container(&task, env, writer, stop, timeout).await
        };
        (outcome.masked(&masks), writer)
    }

    /// Records that a task's attempt started at `started` (epoch ms; a container task: with the
    /// image it runs).
    pub(super) async fn record_started(
        &self,
        task: &TaskExecution,
        image_digest: Option<String>,
        started: u64,
    ) -> Result<(), StorageError> {
        let mut task = task.clone();
        task.state = TaskExecutionState::Running;
        task.started = started;
        task.image_digest = image_digest;
        self.write(move |db| {
            db.update_task_execution(&task, None)?;
            db.insert_event(EventKind::StartedTaskExecution {
                namespace_id: task.namespace_id.clone(),
                pipeline_id: task.pipeline_id.clone(),
                run_id: task.run_id,
                task_execution_id: task.task_id.clone(),
                attempt: task.attempt,
            })
        })
        .await?;
        Ok(())
    }
}
