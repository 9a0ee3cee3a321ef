//! Retention: in the background, deletes ended runs past their pipeline's count or age (their
//! task executions, logs and run objects with them) and events past their age, and discards
//! failed tasks' containers kept (`keep_failed`) past their time. A run with a kept task is
//! deleted only once its containers are gone.
//!
//! Works in small batches, one short write transaction each with a pause between, so that
//! writers (runs, the API) never wait behind it. Never touches a run that has not ended, nor the
//! runs a deployment in progress is counting. Rows go first, then files: a crash in between
//! leaves files nothing refers to, never a row whose files are gone.

use std::time::Duration;

use super::{Orchestrator, task};
use crate::config::RetentionSection;
use crate::models::now_millis;

/// The pause between two batches.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub runs: usize,
    pub events: usize,
    /// Kept failed-task containers discarded.
    pub kept: usize,
}

impl Orchestrator {
    /// Prunes every `interval_secs`, from now on.
    pub fn spawn_retention(&self, settings: RetentionSection) {
        let orchestrator = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(settings.interval_secs));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let pruned = orchestrator.prune(&settings).await;
                if pruned != Pruned::default() {
                    tracing::info!(
                        runs = pruned.runs,
                        events = pruned.events,
                        kept_containers = pruned.kept,
                        "retention pruned"
                    );
                }
            }
        });
    }

    /// One pass over every pipeline's runs, then the events.
    pub async fn prune(&self, settings: &RetentionSection) -> Pruned {
        let now = now_millis();
        let mut pruned = Pruned {
            kept: self.discard_expired_kept(now).await,
            ..Pruned::default()
        };
        let before = |secs: u64| {
            if secs == 0 {
                0
            } else {
                now.saturating_sub(secs.saturating_mul(1000))
            }
        };
        let (keep, runs_before) = (
            settings.runs_per_pipeline,
            before(settings.runs_max_age_secs),
        );
        if keep > 0 || runs_before > 0 {
            let pipelines = match self.inner.storage.read(|db| db.pipelines_with_runs()).await {
                Ok(pipelines) => pipelines,
                Err(error) => {
                    tracing::warn!(%error, "retention could not list pipelines");
                    Vec::new()
                }
            };
            for (namespace_id, pipeline_id) in pipelines {
                pruned.runs += self
                    .prune_runs(
                        &namespace_id,
                        &pipeline_id,
                        keep,
                        runs_before,
                        settings.batch,
                    )
                    .await;
            }
        }
        let events_before = before(settings.events_max_age_secs);
        if events_before > 0 {
            let batch = settings.batch;
            loop {
                match self
                    .write(move |db| db.prune_events(events_before, batch))
                    .await
                {
                    Ok(deleted) => {
                        pruned.events += deleted;
                        if (deleted as u64) < batch {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "retention could not delete events");
                        break;
                    }
                }
                tokio::time::sleep(BETWEEN_BATCHES).await;
            }
        }
        pruned
    }

    async fn prune_runs(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        keep: u64,
        runs_before: u64,
        batch: u64,
    ) -> usize {
        let mut deleted = 0;
        loop {
            let (namespace, pipeline) = (namespace_id.to_string(), pipeline_id.to_string());
            let batch_of = self
                .write(move |db| {
                    let ids = db.prunable_runs(&namespace, &pipeline, keep, runs_before, batch)?;
                    db.delete_runs(&namespace, &pipeline, &ids)
                })
                .await;
            let pruned = match batch_of {
                Ok(pruned) => pruned,
                Err(error) => {
                    tracing::warn!(%error, pipeline = pipeline_id, "retention could not delete runs");
                    return deleted;
                }
            };
            for task in &pruned.tasks {
                if let Err(error) = self.inner.logs.remove(&task::log_key(task)).await {
                    tracing::debug!(%error, "a pruned run's log was already gone");
                }
            }
            for (run, key) in pruned.objects {
                let object = crate::objects::ObjectKey::Run {
                    namespace: namespace_id.to_string(),
                    pipeline: pipeline_id.to_string(),
                    run,
                    key,
                };
                if let Err(error) = self.inner.objects.delete(&object).await {
                    tracing::warn!(%error, "could not delete a pruned run's object");
                }
            }
            deleted += pruned.runs;
            if (pruned.runs as u64) < batch {
                return deleted;
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
    }
}
