//! SQL for canary and A/B deployments: the deployment in progress, each arm's tallies and
//! samples counted from the runs it routed, and the events that are its log.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::queries::{DEPLOYMENT_COLUMNS, deployment_from_row, enum_from_text, event_from_row};
use super::{Db, Result};
use crate::models::{Arm, ArmTally, Deployment, Event, EventKind, RunStatus, TaskExecutionStatus};
use crate::rollouts::ArmSamples;

impl Db<'_> {
    /// The pipeline's deployment in progress, if any (at most one is).
    pub fn deployment_in_progress(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
    ) -> Result<Option<Deployment>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND state = 'Running'
                 ORDER BY deployment_id DESC LIMIT 1"
            ))?
            .query_row([namespace_id, pipeline_id], |row| {
                Ok(deployment_from_row(row))
            })
            .optional()?
            .transpose()
    }

    /// Every deployment in progress, of every pipeline (judged again at start-up).
    pub fn deployments_in_progress(&self) -> Result<Vec<Deployment>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE state = 'Running'"
        ))?;
        let rows = statement.query_map([], |row| Ok(deployment_from_row(row)))?;
        rows.map(|row| row?).collect()
    }

    /// Per arm of a deployment: runs routed, successful and failed ones, and the complete and
    /// successful ones that ended since `since` (epoch ms). Arms with no runs are left out.
    pub fn deployment_tallies(
        &self,
        deployment: &Deployment,
        since: u64,
    ) -> Result<BTreeMap<Arm, ArmTally>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT arm, pipeline_config_version, COUNT(*),
                    SUM(status = 'successful'), SUM(status = 'failed'),
                    SUM(state = 'complete' AND status IN ('successful', 'failed') AND ended >= ?4),
                    SUM(status = 'successful' AND ended >= ?4)
             FROM runs WHERE namespace_id = ?1 AND pipeline_id = ?2 AND deployment_id = ?3
             GROUP BY arm, pipeline_config_version",
        )?;
        let rows = statement.query_map(
            params![
                deployment.namespace_id,
                deployment.pipeline_id,
                deployment.deployment_id,
                since
            ],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    ArmTally {
                        arm: Arm::Stable,
                        version: row.get(1)?,
                        runs: row.get(2)?,
                        successful: row.get::<_, Option<u64>>(3)?.unwrap_or(0),
                        failed: row.get::<_, Option<u64>>(4)?.unwrap_or(0),
                        step_complete: row.get::<_, Option<u64>>(5)?.unwrap_or(0),
                        step_successful: row.get::<_, Option<u64>>(6)?.unwrap_or(0),
                    },
                ))
            },
        )?;
        let mut tallies = BTreeMap::new();
        for row in rows {
            let (arm, tally) = row?;
            let arm: Arm = enum_from_text("runs.arm", &arm)?;
            tallies.insert(arm, ArmTally { arm, ..tally });
        }
        Ok(tallies)
    }

    /// Per arm of a deployment: its complete runs (success, and duration from the first task's
    /// start to the run's end, so time spent queued is left out) and their tasks'
    /// executions (cancelled runs and reused tasks left out), for a comparison.
    pub fn deployment_samples(&self, deployment: &Deployment) -> Result<BTreeMap<Arm, ArmSamples>> {
        let mut samples: BTreeMap<Arm, ArmSamples> = BTreeMap::new();
        let keys = params![
            deployment.namespace_id,
            deployment.pipeline_id,
            deployment.deployment_id
        ];
        let mut statement = self.conn.prepare_cached(
            "SELECT r.arm, r.status, r.ended - COALESCE(
                 (SELECT MIN(t.started) FROM task_executions t
                  WHERE t.namespace_id = r.namespace_id AND t.pipeline_id = r.pipeline_id
                    AND t.run_id = r.run_id AND t.started > 0),
                 r.started)
             FROM runs r
             WHERE r.namespace_id = ?1 AND r.pipeline_id = ?2 AND r.deployment_id = ?3
               AND r.state = 'complete' AND r.status IN ('successful', 'failed')
             ORDER BY r.run_id",
        )?;
        let rows = statement.query_map(keys, |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (arm, status, duration) = row?;
            let arm: Arm = enum_from_text("runs.arm", &arm)?;
            let status: RunStatus = enum_from_text("runs.status", &status)?;
            samples
                .entry(arm)
                .or_default()
                .runs
                .push((status == RunStatus::Successful, duration.max(0) as u64));
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT r.arm, t.task_id, t.status, t.ended - t.started FROM task_executions t
             JOIN runs r ON r.namespace_id = t.namespace_id AND r.pipeline_id = t.pipeline_id
                        AND r.run_id = t.run_id
             WHERE t.namespace_id = ?1 AND t.pipeline_id = ?2 AND r.deployment_id = ?3
               AND t.state = 'complete' AND t.status IN ('successful', 'failed') AND t.started > 0
             ORDER BY t.run_id",
        )?;
        let rows = statement.query_map(keys, |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (arm, task_id, status, duration) = row?;
            let arm: Arm = enum_from_text("runs.arm", &arm)?;
            let status: TaskExecutionStatus = enum_from_text("task_executions.status", &status)?;
            samples
                .entry(arm)
                .or_default()
                .tasks
                .entry(task_id)
                .or_default()
                .push((
                    status == TaskExecutionStatus::Successful,
                    duration.max(0) as u64,
                ));
        }
        Ok(samples)
    }

    /// A deployment's log: its pipeline's deployment events from its start to its end that
    /// name it (by id, or for v0's kinds by its two versions).
    pub fn deployment_events(&self, deployment: &Deployment) -> Result<Vec<Event>> {
        // Its last events are written in the transaction that ends it, a moment after `ended`.
        let until = match deployment.ended {
            0 => i64::MAX,
            ended => i64::try_from(ended.saturating_add(1000)).unwrap_or(i64::MAX),
        };
        let mut statement = self.conn.prepare_cached(
            "SELECT id, kind, emitted FROM events
             WHERE emitted >= ?1 AND emitted <= ?2
               AND (kind LIKE '{\"started_deployment\":%' OR kind LIKE '{\"completed_deployment\":%'
                    OR kind LIKE '{\"promoted_deployment\":%'
                    OR kind LIKE '{\"rolled_back_deployment\":%')
             ORDER BY seq",
        )?;
        let rows = statement.query_map(params![deployment.started, until], |row| {
            Ok(event_from_row(row))
        })?;
        let rows = rows.map(|row| row?);
        let mut events = Vec::new();
        for row in rows {
            let event = row?;
            if names(&event.kind, deployment) {
                events.push(event);
            }
        }
        Ok(events)
    }
}

/// Whether a deployment event is about `deployment`.
fn names(kind: &EventKind, deployment: &Deployment) -> bool {
    let pipeline = |namespace_id: &str, pipeline_id: &str| {
        namespace_id == deployment.namespace_id && pipeline_id == deployment.pipeline_id
    };
    match kind {
        EventKind::StartedDeployment {
            namespace_id,
            pipeline_id,
            start_version,
            end_version,
        }
        | EventKind::CompletedDeployment {
            namespace_id,
            pipeline_id,
            start_version,
            end_version,
        } => {
            pipeline(namespace_id, pipeline_id)
                && *start_version == deployment.start_version
                && *end_version == deployment.end_version
        }
        EventKind::PromotedDeployment {
            namespace_id,
            pipeline_id,
            deployment_id,
            ..
        }
        | EventKind::RolledBackDeployment {
            namespace_id,
            pipeline_id,
            deployment_id,
            ..
        } => pipeline(namespace_id, pipeline_id) && *deployment_id == deployment.deployment_id,
        _ => false,
    }
}
