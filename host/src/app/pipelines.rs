//! Pipelines' lifecycle: registering a config version, deploying one (with the subscriptions it
//! declares, committed together), and deleting a pipeline or a whole namespace so that nothing
//! of it is left: runs stopped, triggers unsubscribed, secrets, objects, logs and run tokens
//! gone. A pipeline registered again under the same id starts empty.

use std::collections::HashSet;
use std::time::Duration;

use super::{App, AppError, Caller};
use crate::domain::SubscriptionHandle;
use crate::models::{
    ConfigState, DeclaredTrigger, Deployment, DeploymentKind, DeploymentState, DeploymentStatus,
    EventKind, Pipeline, PipelineMetadata, PipelineState, Subscription, SubscriptionStatus,
    now_millis,
};
use crate::pipeline_config::PipelineConfigInput;
use crate::storage::{Db, Page, StorageError};

/// How long a deleted pipeline's tasks get to stop before they are killed.
const DELETE_GRACE: Duration = Duration::from_secs(0);

/// Subscriptions a deployment added and removed: (subscription, its handle).
pub(super) type Declared = Vec<(Subscription, SubscriptionHandle)>;

/// Fails with 404 unless the pipeline exists (checking its namespace first, for a precise
/// message).
pub(super) fn require_pipeline(
    db: &Db,
    namespace_id: &str,
    pipeline_id: &str,
) -> Result<PipelineMetadata, StorageError> {
    db.get_namespace(namespace_id)?;
    db.get_pipeline(namespace_id, pipeline_id)
}

impl App {
    /// Registers a new config version (`unreleased` until deployed); the first one creates the
    /// pipeline. The config is checked first, and the plugins it names must be loaded. Registry
    /// passwords are sealed under the secrets key (a `pipeline_secret{{…}}` reference stays one).
    pub async fn register_config(
        &self,
        namespace_id: String,
        pipeline_id: String,
        mut input: PipelineConfigInput,
    ) -> Result<Pipeline, AppError> {
        input.validate(&pipeline_id)?;
        let registry = self.triggers.plugins().await;
        for task in &input.tasks {
            if let Some(plugin) = task
                .plugin
                .as_deref()
                .filter(|plugin| !plugin.trim().is_empty())
                && registry.task(plugin).is_none()
            {
                return Err(AppError::Invalid(format!(
                    "task '{}' names plugin '{plugin}', which is not a loaded shared-task plugin (see GET /api/plugins)",
                    task.id
                )));
            }
        }
        for trigger in &input.triggers {
            if registry.trigger(&trigger.plugin).is_none() {
                return Err(AppError::Invalid(format!(
                    "trigger '{}' names plugin '{}', which is not a loaded trigger plugin (see GET /api/plugins)",
                    trigger.id, trigger.plugin
                )));
            }
        }
        for task in &mut input.tasks {
            if let Some(auth) = task.registry_auth.as_mut()
                && !crate::secrets::is_sealed(&auth.pass)
                && !crate::orchestrator::is_reference(&auth.pass)
            {
                auth.pass = self.secrets.seal(&auth.pass)?;
            }
        }
        let now = now_millis();
        // Its version is known inside the transaction.
        let mut config = input.into_config(&namespace_id, 0, now)?;
        Ok(self
            .write(move |db| {
                db.get_namespace(&namespace_id)?;
                let metadata = match db.get_pipeline(&namespace_id, &pipeline_id) {
                    Ok(metadata) => metadata,
                    Err(StorageError::NotFound(_)) => {
                        let metadata = PipelineMetadata {
                            namespace_id: namespace_id.clone(),
                            pipeline_id: pipeline_id.clone(),
                            created: now,
                            modified: 0,
                            state: PipelineState::Active,
                        };
                        db.insert_pipeline(&metadata)?;
                        db.insert_event(EventKind::CreatedPipeline {
                            namespace_id: namespace_id.clone(),
                            pipeline_id: pipeline_id.clone(),
                        })?;
                        metadata
                    }
                    Err(other) => return Err(other),
                };
                let version = db
                    .latest_config_version(&namespace_id, &pipeline_id)?
                    .unwrap_or(0)
                    + 1;
                config.version = version;
                db.insert_config(&config)?;
                db.insert_event(EventKind::RegisteredPipelineConfig {
                    namespace_id,
                    pipeline_id,
                    version,
                })?;
                Ok(Pipeline { metadata, config })
            })
            .await?)
    }

    /// Deploys a config version at once (v0's deploy): it becomes live, the one before is
    /// deprecated, and the subscriptions it declares replace the previous version's, all in one
    /// transaction; the plugins are told after. Refused (409) while a canary or an A/B test is in
    /// progress.
    pub async fn deploy(
        &self,
        namespace_id: String,
        pipeline_id: String,
        version: u64,
    ) -> Result<Deployment, AppError> {
        let (deployment, added, removed) = self
            .write(move |db| {
                require_pipeline(db, &namespace_id, &pipeline_id)?;
                db.get_config(&namespace_id, &pipeline_id, version)?;
                if let Some(busy) = db.deployment_in_progress(&namespace_id, &pipeline_id)? {
                    return Ok(Err(in_progress(&busy)));
                }
                let live = db.live_config_version(&namespace_id, &pipeline_id)?;
                let start_version = live.unwrap_or(version);
                let mut deployment = Deployment {
                    namespace_id: namespace_id.clone(),
                    pipeline_id: pipeline_id.clone(),
                    deployment_id: db.latest_deployment_id(&namespace_id, &pipeline_id)? + 1,
                    start_version,
                    end_version: version,
                    started: now_millis(),
                    ended: 0,
                    state: DeploymentState::Running,
                    status: DeploymentStatus::Unknown,
                    status_reason: None,
                    logs: Vec::new(),
                    kind: DeploymentKind::Switch,
                    rollout: None,
                };
                db.put_deployment(&deployment)?;
                db.insert_event(EventKind::StartedDeployment {
                    namespace_id: namespace_id.clone(),
                    pipeline_id: pipeline_id.clone(),
                    start_version,
                    end_version: version,
                })?;
                let (added, removed) = complete_deployment(db, &mut deployment, version)?;
                Ok(Ok((deployment, added, removed)))
            })
            .await??;
        crate::failpoints::reached("deploy-committed");
        self.triggers.apply(added, removed).await;
        Ok(deployment)
    }

    /// Deletes a pipeline and everything of it: new runs are refused at once, its triggers are
    /// unsubscribed, its queued and running runs cancelled (their containers killed and removed),
    /// then its secret values, objects and logs deleted, and last its rows (configs,
    /// deployments, runs, subscriptions, secret and object keys) and its runs' tokens. A failure
    /// part way leaves the pipeline (disabled) for another try.
    pub async fn delete_pipeline(
        &self,
        caller: &dyn Caller,
        namespace_id: &str,
        pipeline_id: &str,
    ) -> Result<(), AppError> {
        let (namespace, pipeline) = (namespace_id.to_string(), pipeline_id.to_string());
        let subscriptions = self
            .write(move |db| {
                let metadata = require_pipeline(db, &namespace, &pipeline)?;
                if metadata.state != PipelineState::Disabled {
                    db.update_pipeline_state(
                        &namespace,
                        &pipeline,
                        PipelineState::Disabled,
                        now_millis(),
                    )?;
                }
                db.subscriptions_of_pipeline(&namespace, &pipeline)
            })
            .await?;
        for (subscription, handle) in &subscriptions {
            self.triggers.unsubscribe(subscription, handle).await;
        }
        let by = format!("{} (deleting the pipeline)", caller.actor());
        self.orchestrator
            .stop_pipeline_runs(namespace_id, pipeline_id, by, DELETE_GRACE)
            .await?;
        self.secrets
            .delete_pipeline(namespace_id, pipeline_id)
            .await?;
        self.objects
            .delete_pipeline(namespace_id, pipeline_id)
            .await?;
        self.orchestrator
            .logs()
            .remove_pipeline(namespace_id, pipeline_id)
            .await
            .map_err(|error| AppError::Cleanup(format!("the pipeline's logs: {error}")))?;
        let (namespace, pipeline) = (namespace_id.to_string(), pipeline_id.to_string());
        self.write(move |db| {
            db.delete_pipeline_run_tokens(&namespace, &pipeline)?;
            db.delete_pipeline(&namespace, &pipeline)?;
            db.insert_event(EventKind::DeletedPipeline {
                namespace_id: namespace,
                pipeline_id: pipeline,
            })?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Deletes a namespace: each of its pipelines as [`App::delete_pipeline`] does, then the
    /// namespace.
    pub async fn delete_namespace(
        &self,
        caller: &dyn Caller,
        namespace_id: &str,
    ) -> Result<(), AppError> {
        let namespace = namespace_id.to_string();
        let pipelines = self
            .read(move |db| {
                db.get_namespace(&namespace)?;
                db.list_pipelines(
                    &namespace,
                    Page {
                        limit: i64::MAX as u64,
                        offset: 0,
                    },
                )
            })
            .await?;
        for pipeline in pipelines {
            self.delete_pipeline(caller, namespace_id, &pipeline.pipeline_id)
                .await?;
        }
        let namespace = namespace_id.to_string();
        self.write(move |db| {
            if !db.delete_namespace(&namespace)? {
                return Err(StorageError::NotFound(format!("namespace '{namespace}'")));
            }
            db.insert_event(EventKind::DeletedNamespace {
                namespace_id: namespace,
            })?;
            Ok(())
        })
        .await?;
        Ok(())
    }
}

/// The refusal of a second deployment while one is in progress.
pub(super) fn in_progress(busy: &Deployment) -> AppError {
    let what = match busy.kind {
        DeploymentKind::Switch => "a deploy".to_string(),
        DeploymentKind::Canary => format!("a canary of version {}", busy.end_version),
        DeploymentKind::Ab => format!(
            "an A/B test of versions {} and {}",
            busy.start_version, busy.end_version
        ),
    };
    AppError::Conflict(format!(
        "deployment {} of pipeline '{}' is in progress ({what}); promote or abort it first \
         (`gofer deployment promote|abort {}`)",
        busy.deployment_id, busy.pipeline_id, busy.pipeline_id
    ))
}

/// Ends a deployment by making `winner` the live version (the version live before, if another,
/// is deprecated) with the subscriptions it declares, and recording the deployment `Successful`,
/// within the caller's transaction. Returns the subscriptions added and removed, for the plugins
/// to be told once it commits.
pub(super) fn complete_deployment(
    db: &Db,
    deployment: &mut Deployment,
    winner: u64,
) -> Result<(Declared, Declared), StorageError> {
    let (namespace_id, pipeline_id) = (
        deployment.namespace_id.clone(),
        deployment.pipeline_id.clone(),
    );
    let live = db.live_config_version(&namespace_id, &pipeline_id)?;
    if let Some(previous) = live.filter(|previous| *previous != winner) {
        db.set_config_state(
            &namespace_id,
            &pipeline_id,
            previous,
            ConfigState::Deprecated,
            now_millis(),
        )?;
    }
    db.set_config_state(&namespace_id, &pipeline_id, winner, ConfigState::Live, 0)?;
    let triggers = db.get_config(&namespace_id, &pipeline_id, winner)?.triggers;
    let changes = commit_declared(db, &namespace_id, &pipeline_id, triggers)?;
    deployment.state = DeploymentState::Complete;
    deployment.status = DeploymentStatus::Successful;
    deployment.ended = now_millis();
    if let Some(rollout) = &mut deployment.rollout
        && winner == deployment.end_version
    {
        rollout.weight = 100;
    }
    db.put_deployment(deployment)?;
    db.insert_event(EventKind::CompletedDeployment {
        namespace_id,
        pipeline_id,
        start_version: deployment.start_version,
        end_version: winner,
    })?;
    Ok(changes)
}

/// Makes the stored declared subscriptions of a pipeline what `declared` says, within the
/// deployment's transaction: a subscription dropped or changed is deleted, a new or changed one
/// stored (`active`, with a new handle). Returns (added, removed) for the plugins to be told.
/// Subscriptions made through the API are left alone.
fn commit_declared(
    db: &Db,
    namespace_id: &str,
    pipeline_id: &str,
    declared: Vec<DeclaredTrigger>,
) -> Result<(Declared, Declared), StorageError> {
    let existing = db.declared_subscriptions(namespace_id, pipeline_id)?;
    let same = |want: &DeclaredTrigger, old: &Subscription| {
        want.plugin == old.extension_id
            && want.id == old.subscription_id
            && want.settings == old.settings
    };
    let mut removed = Vec::new();
    let mut kept = HashSet::new();
    for (old, handle) in existing {
        if declared.iter().any(|want| same(want, &old)) {
            kept.insert((old.extension_id.clone(), old.subscription_id.clone()));
            continue;
        }
        db.delete_subscription(
            &old.namespace_id,
            &old.pipeline_id,
            &old.extension_id,
            &old.subscription_id,
        )?;
        removed.push((old, handle));
    }
    let mut added = Vec::new();
    for want in declared {
        if kept.contains(&(want.plugin.clone(), want.id.clone())) {
            continue;
        }
        let subscription = Subscription {
            namespace_id: namespace_id.to_string(),
            pipeline_id: pipeline_id.to_string(),
            extension_id: want.plugin,
            subscription_id: want.id,
            settings: want.settings,
            status: SubscriptionStatus::Active,
            status_reason: None,
        };
        let handle = SubscriptionHandle::new();
        db.insert_subscription(&subscription, &handle, true)?;
        added.push((subscription, handle));
    }
    Ok((added, removed))
}
