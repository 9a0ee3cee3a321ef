//! Starting, re-running and cancelling runs and tasks, deleting a task's log: who asked is
//! recorded, and a caller's run variables may reference only the secrets and objects the caller
//! may read.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{App, AppError, Caller, require_on_pipeline};
use crate::domain::RunOrigin;
use crate::models::{Action, EventKind, Run, TimelineEntry};
use crate::orchestrator::RunKey;

impl App {
    /// Queues a run for `caller`: of `version` if given, else of the version a canary or A/B
    /// test routes it to, else of the live config. A variable that references a secret or an
    /// object (`pipeline_secret{{…}}`, `pipeline_object{{…}}`, …) is filled in at launch only
    /// because the caller may read it; otherwise the start is refused naming it.
    pub async fn start_run(
        &self,
        caller: &dyn Caller,
        (namespace_id, pipeline_id): (String, String),
        variables: BTreeMap<String, String>,
        version: Option<u64>,
    ) -> Result<Run, AppError> {
        require_readable_references(caller, (&namespace_id, &pipeline_id), &variables)?;
        let origin = RunOrigin::Api(caller.actor());
        Ok(self
            .orchestrator
            .start_run(namespace_id, pipeline_id, variables, origin, version)
            .await?)
    }

    /// Re-runs a complete run for `caller` (see [`crate::orchestrator::Orchestrator::rerun`]);
    /// the caller must be able to read what its variables reference, as for a new run.
    pub async fn rerun(
        &self,
        caller: &dyn Caller,
        original: RunKey,
        failed_only: bool,
    ) -> Result<Run, AppError> {
        let (namespace, pipeline, run_id) = (
            original.namespace_id.clone(),
            original.pipeline_id.clone(),
            original.run_id,
        );
        let run = self
            .read(move |db| db.get_run(&namespace, &pipeline, run_id))
            .await?;
        let variables: BTreeMap<String, String> = run
            .variables
            .into_iter()
            .map(|variable| (variable.key, variable.value))
            .collect();
        require_readable_references(
            caller,
            (&original.namespace_id, &original.pipeline_id),
            &variables,
        )?;
        let origin = RunOrigin::Api(caller.actor());
        Ok(self
            .orchestrator
            .rerun(original, failed_only, origin)
            .await?)
    }

    /// Cancels a run on behalf of `caller` (recorded in its status reason).
    pub async fn cancel_run(&self, caller: &dyn Caller, key: RunKey) -> Result<(), AppError> {
        let by = caller.actor().to_string();
        Ok(self.orchestrator.cancel_run(key, by, None).await?)
    }

    /// Cancels one task of a running run; `grace` before it is killed (default
    /// `runs.stop_timeout_secs`).
    pub async fn cancel_task(
        &self,
        key: RunKey,
        task_id: String,
        grace: Option<Duration>,
    ) -> Result<(), AppError> {
        let grace =
            grace.unwrap_or_else(|| Duration::from_secs(self.config.runs.stop_timeout_secs));
        Ok(self.orchestrator.cancel_task(key, task_id, grace).await?)
    }

    /// A run's timeline from its events and its task executions, oldest first: queued,
    /// dispatched, and per task created, each attempt started, its log closed, and its end
    /// (status and exit code); then the run's end.
    pub async fn run_timeline(&self, key: RunKey) -> Result<Vec<TimelineEntry>, AppError> {
        let (namespace_id, pipeline_id, run_id) = (
            key.namespace_id.clone(),
            key.pipeline_id.clone(),
            key.run_id,
        );
        let (run, tasks, events) = self
            .storage
            .read(move |db| {
                let run = db.get_run(&namespace_id, &pipeline_id, run_id)?;
                let tasks = db.list_task_executions(&namespace_id, &pipeline_id, run_id)?;
                let events = db.run_events(&run)?;
                Ok((run, tasks, events))
            })
            .await?;
        let entry =
            |at: u64, what: &str, task: Option<&str>, attempt: Option<u32>, detail: String| {
                TimelineEntry {
                    at,
                    what: what.into(),
                    task_id: task.map(str::to_string),
                    attempt,
                    detail,
                }
            };
        let mut timeline = Vec::new();
        for event in &events {
            let at = event.emitted;
            match &event.kind {
                EventKind::QueuedRun { .. } => timeline.push(entry(
                    at,
                    "queued",
                    None,
                    None,
                    format!("config v{}", run.pipeline_config_version),
                )),
                EventKind::StartedRun { .. } => {
                    timeline.push(entry(at, "dispatched", None, None, String::new()))
                }
                EventKind::StartedRunCancellation { .. } => {
                    timeline.push(entry(at, "cancel_requested", None, None, String::new()))
                }
                EventKind::StartedTaskExecution {
                    task_execution_id,
                    attempt,
                    ..
                } => timeline.push(entry(
                    at,
                    "task_started",
                    Some(task_execution_id),
                    Some(*attempt),
                    String::new(),
                )),
                EventKind::StartedTaskExecutionCancellation {
                    task_execution_id,
                    timeout,
                    ..
                } => timeline.push(entry(
                    at,
                    "task_cancel_requested",
                    Some(task_execution_id),
                    None,
                    format!("{timeout} s of grace"),
                )),
                EventKind::CompletedTaskExecution {
                    task_execution_id,
                    status,
                    ..
                } => {
                    let status = format!("{status:?}").to_lowercase();
                    let row = tasks
                        .iter()
                        .find(|(task, _)| &task.task_id == task_execution_id);
                    let detail = match row.map(|(task, _)| (task.exit_code, &task.status_reason)) {
                        Some((Some(code), _)) => format!("{status}, exit code {code}"),
                        Some((None, Some(reason))) => format!("{status}: {}", reason.description),
                        _ => status,
                    };
                    timeline.push(entry(
                        at,
                        "task_ended",
                        Some(task_execution_id),
                        None,
                        detail,
                    ))
                }
                EventKind::CompletedRun { status, .. } => timeline.push(entry(
                    at,
                    "ended",
                    None,
                    None,
                    format!("{status:?}").to_lowercase(),
                )),
                _ => {}
            }
        }
        for (task, _) in &tasks {
            let id = Some(task.task_id.as_str());
            if task.created > 0 {
                timeline.push(entry(task.created, "task_created", id, None, String::new()));
            }
            // The log is closed (its end marker written) just before the task's end is recorded.
            let log = self
                .orchestrator
                .logs()
                .path(&crate::orchestrator::log_key(task));
            if task.state == crate::models::TaskExecutionState::Complete
                && let Ok(modified) = std::fs::metadata(&log).and_then(|meta| meta.modified())
                && let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH)
            {
                timeline.push(entry(
                    since.as_millis() as u64,
                    "log_closed",
                    id,
                    None,
                    String::new(),
                ));
            }
        }
        // Same millisecond: in the order things happen.
        let rank = |what: &str| {
            [
                "queued",
                "task_created",
                "dispatched",
                "cancel_requested",
                "task_started",
                "task_cancel_requested",
                "log_closed",
                "task_ended",
                "ended",
            ]
            .iter()
            .position(|known| *known == what)
        };
        timeline.sort_by_key(|entry| (entry.at, rank(&entry.what)));
        Ok(timeline)
    }

    /// Deletes a finished task's log.
    pub async fn delete_task_log(&self, key: RunKey, task_id: String) -> Result<(), AppError> {
        Ok(self.orchestrator.delete_task_log(key, task_id).await?)
    }
}

/// Refuses run variables that reference secrets or objects `caller` may not read.
fn require_readable_references(
    caller: &dyn Caller,
    pipeline: (&str, &str),
    variables: &BTreeMap<String, String>,
) -> Result<(), AppError> {
    for (name, value) in variables {
        if let Some(resource) = crate::orchestrator::referenced_resource(value) {
            require_on_pipeline(
                caller,
                pipeline,
                resource,
                Action::Read,
                &format!("run variable {name}={value}"),
            )?;
        }
    }
    Ok(())
}
