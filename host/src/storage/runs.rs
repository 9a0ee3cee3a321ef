//! SQL for runs, the run queue and task executions.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Row, params};

use super::queries::{enum_from_text, enum_text, from_json, to_json};
use super::{Db, Page, Result, StorageError};
use crate::models::{Run, RunRouting, RunState, TaskExecution, TaskExecutionState};

const RUN_COLUMNS: &str = "namespace_id, pipeline_id, run_id, pipeline_config_version, started, ended, \
     state, status, status_reason, initiator, variables, token_id, store_objects_expired, event_id, \
     deployment_id, arm, routing_reason, rerun_of, reused_tasks, trace_parent";
pub(super) const TASK_COLUMNS: &str = "namespace_id, pipeline_id, run_id, task_id, task, created, started, ended, \
     exit_code, logs_expired, logs_removed, state, status, status_reason, variables, attempt, image_digest, kept_until";

/// A failed task whose container is kept (`keep_failed`).
#[derive(Debug, Clone)]
pub struct KeptTask {
    pub namespace_id: String,
    pub pipeline_id: String,
    pub run_id: u64,
    pub task_id: String,
    pub container: String,
}

/// A queued run with what dispatching needs to know.
#[derive(Debug, Clone)]
pub struct QueuedRun {
    pub namespace_id: String,
    pub pipeline_id: String,
    pub run_id: u64,
    /// The `parallelism` of the run's config version (0: server default).
    pub parallelism: u64,
    /// Its place in the queue.
    pub queued_at: u64,
}

impl Db<'_> {
    pub fn latest_run_id(&self, namespace_id: &str, pipeline_id: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COALESCE(MAX(run_id), 0) FROM runs WHERE namespace_id = ?1 AND pipeline_id = ?2",
            )?
            .query_row([namespace_id, pipeline_id], |row| row.get(0))?)
    }

    /// Inserts a run; `queued` puts it at the end of the run queue.
    pub fn insert_run(&self, run: &Run, queued: bool) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO runs ({RUN_COLUMNS}, queued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                         ?16, ?17, ?18, ?19, ?20, ?21,
                         CASE WHEN ?15 THEN (SELECT COALESCE(MAX(queued_at), 0) + 1 FROM runs) END)"
            ))?
            .execute(params![
                run.namespace_id,
                run.pipeline_id,
                run.run_id,
                run.pipeline_config_version,
                run.started,
                run.ended,
                enum_text(&run.state),
                enum_text(&run.status),
                run.status_reason.as_ref().map(to_json),
                to_json(&run.initiator),
                to_json(&run.variables),
                run.token_id,
                run.store_objects_expired,
                run.event_id,
                queued,
                run.routing.as_ref().map(|routing| routing.deployment_id),
                run.routing.as_ref().map(|routing| routing.arm.as_str()),
                run.routing.as_ref().map(|routing| routing.reason.as_str()),
                run.rerun_of,
                (!run.reused_tasks.is_empty()).then(|| to_json(&run.reused_tasks)),
                run.trace_parent,
            ])?;
        Ok(())
    }

    /// Writes a run's changeable fields; `dequeue` also takes it off the run queue.
    pub fn update_run(&self, run: &Run, dequeue: bool) -> Result<()> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE runs SET ended = ?4, state = ?5, status = ?6, status_reason = ?7, token_id = ?8,
                     store_objects_expired = ?9, event_id = ?10,
                     queued_at = CASE WHEN ?11 THEN NULL ELSE queued_at END
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3",
            )?
            .execute(params![
                run.namespace_id,
                run.pipeline_id,
                run.run_id,
                run.ended,
                enum_text(&run.state),
                enum_text(&run.status),
                run.status_reason.as_ref().map(to_json),
                run.token_id,
                run.store_objects_expired,
                run.event_id,
                dequeue,
            ])?;
        if changed == 0 {
            return Err(run_not_found(
                &run.namespace_id,
                &run.pipeline_id,
                run.run_id,
            ));
        }
        Ok(())
    }

    pub fn get_run(&self, namespace_id: &str, pipeline_id: &str, run_id: u64) -> Result<Run> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3"
            ))?
            .query_row(params![namespace_id, pipeline_id, run_id], |row| Ok(run_from_row(row)))
            .optional()?
            .unwrap_or_else(|| Err(run_not_found(namespace_id, pipeline_id, run_id)))
    }

    /// Runs of a pipeline by run id (`reverse`: newest first).
    pub fn list_runs(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        page: Page,
        reverse: bool,
    ) -> Result<Vec<Run>> {
        // One snapshot for the count and the page.
        let snapshot = self.conn.unchecked_transaction()?;
        let total: u64 = snapshot
            .prepare_cached(
                "SELECT runs FROM pipeline_run_counts WHERE namespace_id = ?1 AND pipeline_id = ?2",
            )?
            .query_row([namespace_id, pipeline_id], |row| row.get(0))
            .optional()?
            .unwrap_or(0);
        let Some(read) = page.read_from_nearer_end(total, reverse) else {
            return Ok(Vec::new());
        };
        let (order, from) = if read.reverse {
            ("DESC", "<=")
        } else {
            ("ASC", ">=")
        };
        // The page's first run id is found in the primary key's index alone (no run is read for
        // the ones skipped), then only the page's runs are read.
        let mut statement = snapshot.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE namespace_id = ?1 AND pipeline_id = ?2
               AND run_id {from} (SELECT run_id FROM runs WHERE namespace_id = ?1 AND pipeline_id = ?2
                                  ORDER BY run_id {order} LIMIT 1 OFFSET ?4)
             ORDER BY run_id {order} LIMIT ?3"
        ))?;
        let rows = statement.query_map(
            params![namespace_id, pipeline_id, read.limit, read.offset],
            |row| Ok(run_from_row(row)),
        )?;
        let mut runs = rows.map(|row| row?).collect::<Result<Vec<Run>>>()?;
        if read.flipped {
            runs.reverse();
        }
        Ok(runs)
    }

    /// Every run in `state`, oldest first (recovery).
    pub fn runs_in_state(&self, state: RunState) -> Result<Vec<Run>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = ?1 ORDER BY started, run_id"
        ))?;
        let rows = statement.query_map([enum_text(&state)], |row| Ok(run_from_row(row)))?;
        rows.map(|row| row?).collect()
    }

    /// A pipeline's runs that are queued or running.
    pub fn unfinished_runs(&self, namespace_id: &str, pipeline_id: &str) -> Result<Vec<Run>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE namespace_id = ?1 AND pipeline_id = ?2
             AND state IN ('pending', 'running') ORDER BY run_id"
        ))?;
        let rows = statement.query_map([namespace_id, pipeline_id], |row| Ok(run_from_row(row)))?;
        rows.map(|row| row?).collect()
    }

    /// The run queue, first come first.
    /// The pipelines with queued runs.
    pub fn queued_pipelines(&self) -> Result<Vec<(String, String)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT namespace_id, pipeline_id FROM runs INDEXED BY runs_queued_by_pipeline
             WHERE queued_at IS NOT NULL GROUP BY namespace_id, pipeline_id",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A pipeline's queued runs, oldest first, as long as `wanted` says it wants the next one
    /// (only the runs looked at are read).
    pub fn queued_runs_of(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        mut wanted: impl FnMut(&QueuedRun) -> bool,
    ) -> Result<Vec<QueuedRun>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT r.namespace_id, r.pipeline_id, r.run_id, c.parallelism, r.queued_at
             FROM runs r INDEXED BY runs_queued_by_pipeline
             JOIN pipeline_configs c ON c.namespace_id = r.namespace_id AND c.pipeline_id = r.pipeline_id
                  AND c.version = r.pipeline_config_version
             WHERE r.namespace_id = ?1 AND r.pipeline_id = ?2 AND r.queued_at IS NOT NULL
             ORDER BY r.queued_at",
        )?;
        let mut rows = statement.query([namespace_id, pipeline_id])?;
        let mut taken = Vec::new();
        while let Some(row) = rows.next()? {
            let queued = QueuedRun {
                namespace_id: row.get(0)?,
                pipeline_id: row.get(1)?,
                run_id: row.get(2)?,
                parallelism: row.get(3)?,
                queued_at: row.get(4)?,
            };
            if !wanted(&queued) {
                break;
            }
            taken.push(queued);
        }
        Ok(taken)
    }

    /// How many runs wait in the queue.
    pub fn queue_depth(&self) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM runs WHERE queued_at IS NOT NULL")?
            .query_row([], |row| row.get(0))?)
    }

    /// How many runs are running, per (namespace, pipeline).
    pub fn running_run_counts(&self) -> Result<HashMap<(String, String), u64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT namespace_id, pipeline_id, COUNT(*) FROM runs WHERE state = 'running'
             GROUP BY namespace_id, pipeline_id",
        )?;
        let rows = statement.query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Task executions of runs older than the newest `keep` runs of the pipeline whose logs are
    /// still kept.
    pub fn task_executions_with_expiring_logs(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        keep: u64,
    ) -> Result<Vec<TaskExecution>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM task_executions INDEXED BY task_executions_logs_kept
             WHERE namespace_id = ?1 AND pipeline_id = ?2 AND logs_expired = 0 AND state = 'complete'
               AND run_id <= (SELECT COALESCE(MAX(run_id), 0) FROM runs
                              WHERE namespace_id = ?1 AND pipeline_id = ?2) - ?3"
        ))?;
        let rows = statement.query_map(params![namespace_id, pipeline_id, keep], |row| {
            Ok(task_from_row(row))
        })?;
        rows.map(|row| row?).collect()
    }

    pub fn insert_task_execution(&self, task: &TaskExecution) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO task_executions ({TASK_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
            ))?
            .execute(params![
                task.namespace_id,
                task.pipeline_id,
                task.run_id,
                task.task_id,
                to_json(&task.task),
                task.created,
                task.started,
                task.ended,
                task.exit_code,
                task.logs_expired,
                task.logs_removed,
                enum_text(&task.state),
                enum_text(&task.status),
                task.status_reason.as_ref().map(to_json),
                to_json(&task.variables),
                task.attempt,
                task.image_digest,
                task.kept_until,
            ])?;
        Ok(())
    }

    /// Writes a task execution's changeable fields and the name of its current container.
    pub fn update_task_execution(
        &self,
        task: &TaskExecution,
        container_name: Option<&str>,
    ) -> Result<()> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE task_executions SET started = ?5, ended = ?6, exit_code = ?7, logs_expired = ?8,
                     logs_removed = ?9, state = ?10, status = ?11, status_reason = ?12, attempt = ?13,
                     container_name = COALESCE(?14, container_name),
                     image_digest = COALESCE(?15, image_digest)
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3 AND task_id = ?4",
            )?
            .execute(params![
                task.namespace_id,
                task.pipeline_id,
                task.run_id,
                task.task_id,
                task.started,
                task.ended,
                task.exit_code,
                task.logs_expired,
                task.logs_removed,
                enum_text(&task.state),
                enum_text(&task.status),
                task.status_reason.as_ref().map(to_json),
                task.attempt,
                container_name,
                task.image_digest,
            ])?;
        if changed == 0 {
            return Err(StorageError::NotFound(format!(
                "task '{}' of run {} of pipeline '{}'",
                task.task_id, task.run_id, task.pipeline_id
            )));
        }
        Ok(())
    }

    /// Records until when a failed task's container is kept (`None`: no longer kept).
    pub fn set_task_kept_until(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        run_id: u64,
        task_id: &str,
        kept_until: Option<u64>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE task_executions SET kept_until = ?5
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3 AND task_id = ?4",
            )?
            .execute(params![
                namespace_id,
                pipeline_id,
                run_id,
                task_id,
                kept_until
            ])?;
        Ok(())
    }

    /// Kept task containers whose time is up at `now`.
    pub fn expired_kept_tasks(&self, now: u64) -> Result<Vec<KeptTask>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT namespace_id, pipeline_id, run_id, task_id, container_name FROM task_executions
             WHERE kept_until IS NOT NULL AND kept_until <= ?1 AND container_name IS NOT NULL",
        )?;
        let rows = statement.query_map([now], |row| {
            Ok(KeptTask {
                namespace_id: row.get(0)?,
                pipeline_id: row.get(1)?,
                run_id: row.get(2)?,
                task_id: row.get(3)?,
                container: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Writes a task execution's changeable fields, keeping the start time already stored (each
    /// attempt records its own start); returns the task as stored.
    pub fn update_task_execution_keeping_start(
        &self,
        task: &TaskExecution,
    ) -> Result<TaskExecution> {
        let mut task = task.clone();
        task.started = self
            .get_task_execution(
                &task.namespace_id,
                &task.pipeline_id,
                task.run_id,
                &task.task_id,
            )?
            .started;
        self.update_task_execution(&task, None)?;
        Ok(task)
    }

    pub fn get_task_execution(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        run_id: u64,
        task_id: &str,
    ) -> Result<TaskExecution> {
        Ok(self
            .get_task_execution_with_container(namespace_id, pipeline_id, run_id, task_id)?
            .0)
    }

    /// A task execution and the name of its current container, if one was created.
    pub fn get_task_execution_with_container(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        run_id: u64,
        task_id: &str,
    ) -> Result<(TaskExecution, Option<String>)> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS}, container_name FROM task_executions
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3 AND task_id = ?4"
            ))?
            .query_row(params![namespace_id, pipeline_id, run_id, task_id], |row| {
                Ok(task_from_row(row).and_then(|task| Ok((task, row.get("container_name")?))))
            })
            .optional()?
            .unwrap_or_else(|| {
                Err(StorageError::NotFound(format!(
                    "task '{task_id}' of run {run_id} of pipeline '{pipeline_id}' in namespace '{namespace_id}'"
                )))
            })
    }

    /// The task executions of a run, by task id, each with its container name.
    pub fn list_task_executions(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        run_id: u64,
    ) -> Result<Vec<(TaskExecution, Option<String>)>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {TASK_COLUMNS}, container_name FROM task_executions
             WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3 ORDER BY task_id"
        ))?;
        let rows = statement.query_map(params![namespace_id, pipeline_id, run_id], |row| {
            Ok(task_from_row(row).and_then(|task| Ok((task, row.get("container_name")?))))
        })?;
        rows.map(|row| row?).collect()
    }

    /// How many task executions are in `state` (for tests and metrics).
    pub fn count_task_executions_in_state(&self, state: TaskExecutionState) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM task_executions WHERE state = ?1")?
            .query_row([enum_text(&state)], |row| row.get(0))?)
    }
}

fn run_not_found(namespace_id: &str, pipeline_id: &str, run_id: u64) -> StorageError {
    StorageError::NotFound(format!(
        "run {run_id} of pipeline '{pipeline_id}' in namespace '{namespace_id}'"
    ))
}

fn text(row: &Row, index: usize) -> Result<String> {
    Ok(row.get(index)?)
}

fn optional_json<T: serde::de::DeserializeOwned>(
    row: &Row,
    index: usize,
    column: &'static str,
) -> Result<Option<T>> {
    let value: Option<String> = row.get(index)?;
    value.map(|value| from_json(column, &value)).transpose()
}

fn run_from_row(row: &Row) -> Result<Run> {
    Ok(Run {
        namespace_id: row.get(0)?,
        pipeline_id: row.get(1)?,
        run_id: row.get(2)?,
        pipeline_config_version: row.get(3)?,
        started: row.get(4)?,
        ended: row.get(5)?,
        state: enum_from_text("runs.state", &text(row, 6)?)?,
        status: enum_from_text("runs.status", &text(row, 7)?)?,
        status_reason: optional_json(row, 8, "runs.status_reason")?,
        initiator: from_json("runs.initiator", &text(row, 9)?)?,
        variables: from_json("runs.variables", &text(row, 10)?)?,
        token_id: row.get(11)?,
        store_objects_expired: row.get(12)?,
        event_id: row.get(13)?,
        routing: match (
            row.get::<_, Option<u64>>(14)?,
            row.get::<_, Option<String>>(15)?,
        ) {
            (Some(deployment_id), Some(arm)) => Some(RunRouting {
                deployment_id,
                arm: enum_from_text("runs.arm", &arm)?,
                reason: row.get::<_, Option<String>>(16)?.unwrap_or_default(),
            }),
            _ => None,
        },
        rerun_of: row.get(17)?,
        reused_tasks: optional_json(row, 18, "runs.reused_tasks")?.unwrap_or_default(),
        trace_parent: row.get(19)?,
    })
}

pub(super) fn task_from_row(row: &Row) -> Result<TaskExecution> {
    Ok(TaskExecution {
        namespace_id: row.get(0)?,
        pipeline_id: row.get(1)?,
        run_id: row.get(2)?,
        task_id: row.get(3)?,
        task: from_json("task_executions.task", &text(row, 4)?)?,
        created: row.get(5)?,
        started: row.get(6)?,
        ended: row.get(7)?,
        exit_code: row.get(8)?,
        logs_expired: row.get(9)?,
        logs_removed: row.get(10)?,
        state: enum_from_text("task_executions.state", &text(row, 11)?)?,
        status: enum_from_text("task_executions.status", &text(row, 12)?)?,
        status_reason: optional_json(row, 13, "task_executions.status_reason")?,
        variables: from_json("task_executions.variables", &text(row, 14)?)?,
        attempt: row.get(15)?,
        image_digest: row.get(16)?,
        kept_until: row.get(17)?,
    })
}

impl Db<'_> {
    /// The events about one run and its tasks, in order: those emitted between its start and a
    /// moment after its end, of the run and task kinds, naming it.
    pub fn run_events(&self, run: &Run) -> Result<Vec<crate::models::Event>> {
        let until = match run.ended {
            0 => i64::MAX,
            ended => i64::try_from(ended.saturating_add(1000)).unwrap_or(i64::MAX),
        };
        let from = run.started.saturating_sub(1000);
        let mut statement = self.conn.prepare_cached(
            "SELECT id, kind, emitted FROM events
             WHERE emitted >= ?1 AND emitted <= ?2
               AND (kind LIKE '{\"queued_run\":%' OR kind LIKE '{\"started_run\":%'
                    OR kind LIKE '{\"completed_run\":%' OR kind LIKE '{\"started_run_cancellation\":%'
                    OR kind LIKE '{\"started_task_execution\":%'
                    OR kind LIKE '{\"completed_task_execution\":%'
                    OR kind LIKE '{\"started_task_execution_cancellation\":%')
             ORDER BY seq",
        )?;
        let rows = statement.query_map(params![from, until], |row| {
            Ok(super::queries::event_from_row(row))
        })?;
        let mut events = Vec::new();
        for row in rows {
            let event = row??;
            let about = event.kind.run()
                == Some((
                    run.namespace_id.as_str(),
                    run.pipeline_id.as_str(),
                    run.run_id,
                ));
            if about {
                events.push(event);
            }
        }
        Ok(events)
    }
}
