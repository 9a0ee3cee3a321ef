//! Retention queries: which ended runs are past their pipeline's count or age, deleting them
//! with what hangs off them, and deleting old events, each in batches the caller sizes.

use rusqlite::params;

use super::runs::{TASK_COLUMNS, task_from_row};
use super::{Db, Result};
use crate::models::TaskExecution;

/// What deleting a batch of runs left for the caller to remove outside the database.
#[derive(Debug, Default)]
pub struct PrunedRuns {
    pub runs: usize,
    /// Their task executions (whose logs are files).
    pub tasks: Vec<TaskExecution>,
    /// Their run objects: (run id, key).
    pub objects: Vec<(u64, String)>,
}

impl Db<'_> {
    /// Pipelines that have runs.
    pub fn pipelines_with_runs(&self) -> Result<Vec<(String, String)>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT DISTINCT namespace_id, pipeline_id FROM runs")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Up to `limit` ended runs of a pipeline, oldest first, that are older than its newest
    /// `keep` (0: no count limit) or ended before `ended_before` (0: no age limit). Runs a
    /// deployment in progress routed are kept: its tallies are counted from them.
    pub fn prunable_runs(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        keep: u64,
        ended_before: u64,
        limit: u64,
    ) -> Result<Vec<u64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT r.run_id FROM runs r
             WHERE r.namespace_id = ?1 AND r.pipeline_id = ?2 AND r.state = 'complete'
               AND ((?3 > 0 AND r.run_id <= (SELECT COALESCE(MAX(run_id), 0) FROM runs
                                            WHERE namespace_id = ?1 AND pipeline_id = ?2) - ?3)
                    OR (?4 > 0 AND r.ended > 0 AND r.ended < ?4))
               AND NOT EXISTS (SELECT 1 FROM deployments d
                               WHERE d.namespace_id = ?1 AND d.pipeline_id = ?2
                                 AND d.deployment_id = r.deployment_id AND d.state = 'Running')
               AND NOT EXISTS (SELECT 1 FROM task_executions t
                               WHERE t.namespace_id = ?1 AND t.pipeline_id = ?2
                                 AND t.run_id = r.run_id AND t.kept_until IS NOT NULL)
             ORDER BY r.run_id LIMIT ?5",
        )?;
        let rows = statement.query_map(
            params![namespace_id, pipeline_id, keep, ended_before, limit],
            |row| row.get(0),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes these runs of a pipeline with their task executions, object keys and tokens;
    /// returns what must go from disk.
    pub fn delete_runs(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        run_ids: &[u64],
    ) -> Result<PrunedRuns> {
        let mut pruned = PrunedRuns::default();
        for &run_id in run_ids {
            let keys = params![namespace_id, pipeline_id, run_id];
            let mut statement = self.conn.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM task_executions
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3"
            ))?;
            for task in statement.query_map(keys, |row| Ok(task_from_row(row)))? {
                pruned.tasks.push(task??);
            }
            let mut statement = self.conn.prepare_cached(
                "SELECT key FROM object_keys_run
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3",
            )?;
            for key in statement.query_map(keys, |row| row.get::<_, String>(0))? {
                pruned.objects.push((run_id, key?));
            }
            // Task executions and object keys go with the run (ON DELETE CASCADE).
            pruned.runs += self
                .conn
                .prepare_cached(
                    "DELETE FROM runs WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3",
                )?
                .execute(keys)?;
        }
        Ok(pruned)
    }

    /// Deletes up to `limit` of the oldest events emitted before `before`; returns how many.
    pub fn prune_events(&self, before: u64, limit: u64) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM events WHERE seq IN
                     (SELECT seq FROM events WHERE emitted < ?1 ORDER BY seq LIMIT ?2)",
            )?
            .execute(params![before, limit])?)
    }
}
