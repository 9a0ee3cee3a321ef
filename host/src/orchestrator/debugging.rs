//! Debugging failed tasks: keeps the container of a failed last attempt when its task asks
//! (`keep_failed`), opens shells in a copy of its filesystem, and discards it when its time is up.
//!
//! It never changes a task's outcome or its log (beyond one line saying the container is kept),
//! and a shell never touches the kept container itself: each opens in a fresh copy.

use std::time::Duration;

use super::task::Outcome;
use super::{Orchestrator, OrchestratorError, RunKey};
use crate::models::{TaskExecution, TaskExecutionState, TaskExecutionStatus, now_millis};
use crate::scheduler::ExecSession;

/// The command a shell runs when none is given: an interactive shell without a terminal.
pub const DEFAULT_SHELL: [&str; 2] = ["sh", "-i"];

impl Orchestrator {
    /// Until when (epoch ms) a finished attempt's container is kept: only a failed (non-zero
    /// exit, out of memory or timed out) last attempt of a task with `keep_failed`.
    pub(super) fn kept_until(&self, task: &TaskExecution, outcome: &Outcome) -> Option<u64> {
        let keep = task.task.keep_failed.as_ref()?;
        let failed = matches!(outcome, Outcome::Exited(code) if *code != 0)
            || matches!(outcome, Outcome::TimedOut(_) | Outcome::OutOfMemory { .. });
        let last_attempt = task.attempt > task.task.retries;
        (failed && last_attempt).then(|| now_millis().saturating_add(millis(keep.duration())))
    }

    /// Records that `task`'s container is kept until `until`.
    pub(super) async fn record_kept(&self, task: &TaskExecution, until: u64) {
        let key = (
            task.namespace_id.clone(),
            task.pipeline_id.clone(),
            task.run_id,
            task.task_id.clone(),
        );
        let recorded = self
            .write(move |db| db.set_task_kept_until(&key.0, &key.1, key.2, &key.3, Some(until)))
            .await;
        if let Err(error) = recorded {
            tracing::error!(%error, task = task.task_id, "could not record a kept container");
        }
    }

    /// Runs `command` (default [`DEFAULT_SHELL`]) in a copy of the filesystem a failed task left,
    /// if it is kept. What the session prints is masked like the task's log.
    pub async fn shell(
        &self,
        key: RunKey,
        task_id: String,
        command: Vec<String>,
    ) -> Result<ExecSession, OrchestratorError> {
        let (task, container) = self.task_with_container(key, task_id).await?;
        let kept = task.kept_until.filter(|until| *until > now_millis());
        let container = match (task.state, kept, container) {
            (TaskExecutionState::Complete, Some(_), Some(container)) => container,
            _ => {
                let why = if task.task.keep_failed.is_none() {
                    "its pipeline does not keep failed tasks (set keep_failed on the task or the pipeline)"
                } else if task.state != TaskExecutionState::Complete {
                    "it has not finished"
                } else if task.status != TaskExecutionStatus::Failed {
                    "it did not fail (only a failed last attempt is kept)"
                } else {
                    "its keep_failed time is up and its container is gone, or its container never ran"
                };
                return Err(OrchestratorError::NotRunning(format!(
                    "task '{}' has no kept filesystem to open a shell in: {why}",
                    task.task_id
                )));
            }
        };
        let command = if command.is_empty() {
            DEFAULT_SHELL.iter().map(|part| part.to_string()).collect()
        } else {
            command
        };
        let session = self
            .inner
            .scheduler
            .shell_in_copy(&container, command)
            .await
            .map_err(OrchestratorError::Attach)?;
        Ok(self.masked_session(&task, session).await)
    }

    /// Discards the kept containers whose time is up at `now`; returns how many.
    pub(super) async fn discard_expired_kept(&self, now: u64) -> usize {
        let expired = match self
            .inner
            .storage
            .read(move |db| db.expired_kept_tasks(now))
            .await
        {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "could not list kept task containers");
                return 0;
            }
        };
        let mut discarded = 0;
        for kept in expired {
            if let Err(error) = self.inner.scheduler.discard_kept(&kept.container).await {
                tracing::warn!(%error, kept.container, "could not discard a kept task container");
                continue;
            }
            // The run's workspace, if it had one, was left for this container; it goes now
            // (the engine refuses while another kept container of the run still holds it).
            let volume = super::task::workspace_volume(
                &self.inner.settings,
                &kept.namespace_id,
                &kept.pipeline_id,
                kept.run_id,
            );
            let _ = self.inner.scheduler.remove_volume(&volume).await;
            let cleared = self
                .write(move |db| {
                    db.set_task_kept_until(
                        &kept.namespace_id,
                        &kept.pipeline_id,
                        kept.run_id,
                        &kept.task_id,
                        None,
                    )
                })
                .await;
            match cleared {
                Ok(()) => discarded += 1,
                Err(error) => tracing::warn!(%error, "could not record a discarded container"),
            }
        }
        discarded
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
