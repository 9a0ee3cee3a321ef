//! Canary and A/B deployments: starting one, judging a canary as its runs end (next step,
//! promotion, rollback), promoting and aborting by hand, and comparing the two versions' runs.
//!
//! The rules are `crate::rollouts` (pure); this module reads what they need, commits what they
//! decide in one transaction (with the events that are the deployment's log), and tells the
//! trigger plugins after, like a deploy. Routing a run is the orchestrator's, when it queues one.
//! Every decision is taken again from stored state, so a restart loses nothing: tallies are
//! counted from the runs a deployment routed.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::pipelines::{Declared, complete_deployment, in_progress, require_pipeline};
use super::{App, AppError, Caller};
use crate::models::{
    Arm, ArmTally, Deployment, DeploymentKind, DeploymentState, DeploymentStatus,
    DeploymentStatusReason, DeploymentStatusReasonType, EventKind, Rollout, now_millis,
};
use crate::rollouts::{self, Comparison, Judgement, RolloutError};
use crate::storage::{Db, StorageError};

/// What `POST …/deployments` asks for (beyond v0). A canary names `version`; an A/B test names
/// `b` (and `a`, which must be the live version, if it likes); a switch is v0's deploy of
/// `version`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    pub kind: DeploymentKind,
    /// The version to deploy (`switch`) or to try as a canary.
    #[serde(default)]
    pub version: Option<u64>,
    /// An A/B test's first version: the live one (default).
    #[serde(default)]
    pub a: Option<u64>,
    /// An A/B test's second version.
    #[serde(default)]
    pub b: Option<u64>,
    /// Percent of new runs for the canary (default 10), or for B (default 50).
    #[serde(default)]
    pub weight: Option<u64>,
    /// A canary's weights, e.g. `[10, 50, 100]` (default: `[weight, 100]`).
    #[serde(default)]
    pub steps: Vec<u64>,
    /// Canary runs in a step before it is judged for the next (default 20; 0: only by hand).
    #[serde(default)]
    pub promote_after: Option<u64>,
    /// Failed canary runs that roll it back (default 3; 0: not by count).
    #[serde(default)]
    pub rollback_after_failures: Option<u64>,
    /// How far below the stable version's success rate the canary's may be (default 0.05).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// The canary's success rate must also be at least this (0 to 1).
    #[serde(default)]
    pub min_success_rate: Option<f64>,
    /// Route by this run variable's value: the same value always to the same version.
    #[serde(default)]
    pub sticky_variable: Option<String>,
}

/// What `POST …/deployments/{id}/promote` asks for.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// An A/B test's winner (required for one); a canary goes to its next step.
    #[serde(default)]
    pub version: Option<u64>,
}

impl From<RolloutError> for AppError {
    fn from(error: RolloutError) -> Self {
        AppError::Invalid(error.to_string())
    }
}

/// A deployment read back whole: its log, and for a canary or an A/B test its tallies.
pub fn filled(db: &Db, mut deployment: Deployment) -> Result<Deployment, StorageError> {
    deployment.logs = db.deployment_events(&deployment)?;
    if let Some(rollout) = deployment.rollout.clone() {
        let tallies = db.deployment_tallies(&deployment, rollout.step_started)?;
        let arms = arms(deployment.kind);
        deployment.rollout = Some(Rollout {
            tallies: arms
                .iter()
                .map(|(arm, new)| {
                    let version = if *new {
                        deployment.end_version
                    } else {
                        deployment.start_version
                    };
                    tallies
                        .get(arm)
                        .copied()
                        .unwrap_or_else(|| empty_tally(*arm, version))
                })
                .collect(),
            ..rollout
        });
    }
    Ok(deployment)
}

/// A kind's two arms: (old side, false) then (new side, true).
fn arms(kind: DeploymentKind) -> Vec<(Arm, bool)> {
    match kind {
        DeploymentKind::Canary => vec![(Arm::Stable, false), (Arm::Canary, true)],
        DeploymentKind::Ab => vec![(Arm::A, false), (Arm::B, true)],
        DeploymentKind::Switch => Vec::new(),
    }
}

fn empty_tally(arm: Arm, version: u64) -> ArmTally {
    ArmTally {
        arm,
        version,
        runs: 0,
        successful: 0,
        failed: 0,
        step_complete: 0,
        step_successful: 0,
    }
}

impl App {
    /// Starts a deployment: a `switch` is v0's deploy; a `canary` keeps the live version live and
    /// sends `weight`% of new runs to `version`; an `ab` test sends `weight`% to `b` and the rest
    /// to `a` (the live version). One deployment at a time per pipeline (409 naming the one in
    /// progress).
    pub async fn start_deployment(
        &self,
        namespace_id: String,
        pipeline_id: String,
        request: DeploymentRequest,
    ) -> Result<Deployment, AppError> {
        let invalid = |message: &str| Err(AppError::Invalid(message.to_string()));
        let rollout = match request.kind {
            DeploymentKind::Switch => {
                let Some(version) = request.version else {
                    return invalid("a switch deploys `version`; give it");
                };
                let (a, b, steps) = (request.a, request.b, request.steps.is_empty());
                if a.is_some() || b.is_some() || !steps || request.weight.is_some() {
                    return invalid(
                        "a switch takes only `version` (weights and steps are for kind canary or ab)",
                    );
                }
                return self.deploy(namespace_id, pipeline_id, version).await;
            }
            DeploymentKind::Canary => {
                if request.version.is_none() {
                    return invalid("a canary tries `version`; give it");
                }
                if request.a.is_some() || request.b.is_some() {
                    return invalid(
                        "a canary takes `version`, not `a` and `b` (those are for kind ab)",
                    );
                }
                let steps = rollouts::canary_steps(request.weight, &request.steps)?;
                Rollout {
                    weight: steps[0],
                    steps,
                    step: 0,
                    step_started: 0,
                    promote_after: request.promote_after.unwrap_or(20),
                    rollback_after_failures: request.rollback_after_failures.unwrap_or(3),
                    tolerance: rollouts::check_rate(
                        "tolerance",
                        request.tolerance.unwrap_or(0.05),
                    )?,
                    min_success_rate: request
                        .min_success_rate
                        .map(|rate| rollouts::check_rate("min_success_rate", rate))
                        .transpose()?,
                    sticky_variable: request.sticky_variable.clone(),
                    tallies: Vec::new(),
                }
            }
            DeploymentKind::Ab => {
                if request.b.is_none() {
                    return invalid(
                        "an A/B test compares `a` (the live version) with `b`; give `b`",
                    );
                }
                if request.version.is_some() || !request.steps.is_empty() {
                    return invalid(
                        "an A/B test takes `a`, `b` and `weight`, not `version` or `steps`",
                    );
                }
                let rules = [
                    request.promote_after.is_some(),
                    request.rollback_after_failures.is_some(),
                    request.tolerance.is_some(),
                    request.min_success_rate.is_some(),
                ];
                if rules.iter().any(|given| *given) {
                    return invalid(
                        "an A/B test has no promotion or rollback rules; it runs until you pick a winner",
                    );
                }
                Rollout {
                    weight: rollouts::check_weight(request.weight.unwrap_or(50))?,
                    steps: Vec::new(),
                    step: 0,
                    step_started: 0,
                    promote_after: 0,
                    rollback_after_failures: 0,
                    tolerance: 0.0,
                    min_success_rate: None,
                    sticky_variable: request.sticky_variable.clone(),
                    tallies: Vec::new(),
                }
            }
        };
        if let Some(name) = &rollout.sticky_variable {
            rollouts::check_sticky(name)?;
        }
        let kind = request.kind;
        let new_version = request.version.or(request.b).unwrap_or_default();
        let deployment = self
            .write(move |db| {
                require_pipeline(db, &namespace_id, &pipeline_id)?;
                db.get_config(&namespace_id, &pipeline_id, new_version)?;
                let Some(live) = db.live_config_version(&namespace_id, &pipeline_id)? else {
                    return Ok(Err(AppError::Invalid(format!(
                        "pipeline '{pipeline_id}' has no live version to compare with; deploy one first"
                    ))));
                };
                if let Some(a) = request.a
                    && a != live
                {
                    return Ok(Err(AppError::Invalid(format!(
                        "an A/B test starts from the live version ({live}), not {a}; \
                         deploy {a} first, or test {live} against {new_version}"
                    ))));
                }
                if new_version == live {
                    return Ok(Err(AppError::Invalid(format!(
                        "version {new_version} is already live; register a new version to try"
                    ))));
                }
                if let Some(busy) = db.deployment_in_progress(&namespace_id, &pipeline_id)? {
                    return Ok(Err(in_progress(&busy)));
                }
                let now = now_millis();
                let deployment = Deployment {
                    deployment_id: db.latest_deployment_id(&namespace_id, &pipeline_id)? + 1,
                    namespace_id: namespace_id.clone(),
                    pipeline_id: pipeline_id.clone(),
                    start_version: live,
                    end_version: new_version,
                    started: now,
                    ended: 0,
                    state: DeploymentState::Running,
                    status: DeploymentStatus::Unknown,
                    status_reason: None,
                    logs: Vec::new(),
                    kind,
                    rollout: Some(Rollout {
                        step_started: now,
                        ..rollout
                    }),
                };
                db.put_deployment(&deployment)?;
                db.insert_event(EventKind::StartedDeployment {
                    namespace_id: namespace_id.clone(),
                    pipeline_id: pipeline_id.clone(),
                    start_version: live,
                    end_version: new_version,
                })?;
                Ok(Ok(filled(db, deployment)?))
            })
            .await??;
        tracing::info!(pipeline = %deployment.pipeline_id, deployment = deployment.deployment_id, kind = ?deployment.kind, "deployment started");
        Ok(deployment)
    }

    /// Promotes by hand: a canary to its next step (from its last step: its version becomes
    /// live); an A/B test ends with `version` (A or B) live.
    pub async fn promote_deployment(
        &self,
        caller: &dyn Caller,
        (namespace_id, pipeline_id): (String, String),
        deployment_id: u64,
        request: PromoteRequest,
    ) -> Result<Deployment, AppError> {
        let by = caller.actor().to_string();
        let (deployment, changes) = self
            .write(move |db| {
                let mut deployment =
                    match running(db, &namespace_id, &pipeline_id, deployment_id)? {
                        Ok(deployment) => deployment,
                        Err(refusal) => return Ok(Err(refusal)),
                    };
                let deployment = &mut deployment;
                let changes = match deployment.kind {
                    DeploymentKind::Canary => {
                        if request.version.is_some_and(|v| v != deployment.end_version) {
                            return Ok(Err(AppError::Invalid(format!(
                                "a canary promotes its own version ({}); to end it keeping {} live, abort it",
                                deployment.end_version, deployment.start_version
                            ))));
                        }
                        let why = format!("promoted by {by}");
                        next_step(db, deployment, &why)?
                    }
                    DeploymentKind::Ab => {
                        let Some(winner) = request.version else {
                            return Ok(Err(AppError::Invalid(format!(
                                "name the winner: version {} or {}",
                                deployment.start_version, deployment.end_version
                            ))));
                        };
                        if winner != deployment.start_version && winner != deployment.end_version
                        {
                            return Ok(Err(AppError::Invalid(format!(
                                "version {winner} is not in this A/B test; pick {} or {}",
                                deployment.start_version, deployment.end_version
                            ))));
                        }
                        Some(complete_deployment(db, deployment, winner)?)
                    }
                    DeploymentKind::Switch => None,
                };
                Ok(Ok((filled(db, deployment.clone())?, changes)))
            })
            .await??;
        if let Some((added, removed)) = changes {
            self.triggers.apply(added, removed).await;
        }
        Ok(deployment)
    }

    /// Aborts a canary or an A/B test: no more runs go to its new version, the live version
    /// stays live, and the deployment ends `Failed` (reason `Aborted`).
    pub async fn abort_deployment(
        &self,
        caller: &dyn Caller,
        (namespace_id, pipeline_id): (String, String),
        deployment_id: u64,
    ) -> Result<Deployment, AppError> {
        let by = caller.actor().to_string();
        self.write(move |db| {
            let mut deployment = match running(db, &namespace_id, &pipeline_id, deployment_id)? {
                Ok(deployment) => deployment,
                Err(refusal) => return Ok(Err(refusal)),
            };
            end_failed(
                db,
                &mut deployment,
                DeploymentStatusReasonType::Aborted,
                format!("aborted by {by}"),
            )?;
            Ok(Ok(filled(db, deployment)?))
        })
        .await?
    }

    /// The two versions of a canary or an A/B test side by side, with verdicts.
    pub async fn compare_deployment(
        &self,
        namespace_id: String,
        pipeline_id: String,
        deployment_id: u64,
    ) -> Result<Comparison, AppError> {
        let (deployment, samples) = self
            .read(move |db| {
                require_pipeline(db, &namespace_id, &pipeline_id)?;
                let deployment = db.get_deployment(&namespace_id, &pipeline_id, deployment_id)?;
                let samples = db.deployment_samples(&deployment)?;
                Ok((deployment, samples))
            })
            .await?;
        let sides = arms(deployment.kind);
        let [(old_arm, _), (new_arm, _)] = sides.as_slice() else {
            return Err(AppError::Invalid(format!(
                "deployment {deployment_id} switched versions at once; only a canary or an A/B test has two versions to compare"
            )));
        };
        let empty = Default::default();
        Ok(rollouts::compare(
            (
                *old_arm,
                deployment.start_version,
                samples.get(old_arm).unwrap_or(&empty),
            ),
            (
                *new_arm,
                deployment.end_version,
                samples.get(new_arm).unwrap_or(&empty),
            ),
        ))
    }

    /// Judges the pipeline's canary in progress, if any, from its tallies: a next step,
    /// promotion or rollback is committed (with its event) and the plugins told.
    pub async fn judge_canary(&self, namespace_id: String, pipeline_id: String) {
        let judged = self
            .write(move |db| {
                let Some(mut deployment) =
                    db.deployment_in_progress(&namespace_id, &pipeline_id)?
                else {
                    return Ok(None);
                };
                if deployment.kind != DeploymentKind::Canary {
                    return Ok(None);
                }
                let Some(rollout) = deployment.rollout.clone() else {
                    return Ok(None);
                };
                let tallies = db.deployment_tallies(&deployment, rollout.step_started)?;
                let tally = |arm: Arm, version: u64| {
                    tallies
                        .get(&arm)
                        .copied()
                        .unwrap_or_else(|| empty_tally(arm, version))
                };
                let stable = tally(Arm::Stable, deployment.start_version);
                let canary = tally(Arm::Canary, deployment.end_version);
                let changes = match rollouts::judge(&rollout, &stable, &canary) {
                    Judgement::Hold => return Ok(None),
                    Judgement::NextStep { why, .. } | Judgement::Promote { why } => {
                        next_step(db, &mut deployment, &why)?
                    }
                    Judgement::RollBack { why } => {
                        end_failed(
                            db,
                            &mut deployment,
                            DeploymentStatusReasonType::RolledBack,
                            why,
                        )?;
                        None
                    }
                };
                Ok(Some((deployment, changes)))
            })
            .await;
        match judged {
            Ok(Some((deployment, changes))) => {
                tracing::info!(
                    pipeline = %deployment.pipeline_id,
                    deployment = deployment.deployment_id,
                    state = ?deployment.state,
                    status = ?deployment.status,
                    weight = deployment.rollout.as_ref().map(|rollout| rollout.weight),
                    "canary judged"
                );
                if let Some((added, removed)) = changes {
                    self.triggers.apply(added, removed).await;
                }
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "could not judge a canary"),
        }
    }

    /// Judges canaries as their runs end, for as long as the server runs; first every canary in
    /// progress (runs may have ended while the server was down).
    pub fn supervise_canaries(&self) {
        let app = self.clone();
        let mut events = self.events.subscribe();
        tokio::spawn(async move {
            app.judge_every_canary().await;
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let EventKind::CompletedRun {
                            namespace_id,
                            pipeline_id,
                            ..
                        } = event.kind
                        {
                            app.judge_canary(namespace_id, pipeline_id).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        app.judge_every_canary().await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    async fn judge_every_canary(&self) {
        match self.read(|db| db.deployments_in_progress()).await {
            Ok(deployments) => {
                for deployment in deployments {
                    self.judge_canary(deployment.namespace_id, deployment.pipeline_id)
                        .await;
                }
            }
            Err(error) => tracing::error!(%error, "could not list deployments in progress"),
        }
    }
}

/// The deployment, if it is a canary or an A/B test in progress; else why not.
fn running(
    db: &Db,
    namespace_id: &str,
    pipeline_id: &str,
    deployment_id: u64,
) -> Result<Result<Deployment, AppError>, StorageError> {
    require_pipeline(db, namespace_id, pipeline_id)?;
    let deployment = db.get_deployment(namespace_id, pipeline_id, deployment_id)?;
    if deployment.state != DeploymentState::Running {
        return Ok(Err(AppError::Conflict(format!(
            "deployment {deployment_id} of pipeline '{pipeline_id}' has ended ({:?})",
            deployment.status
        ))));
    }
    if deployment.kind == DeploymentKind::Switch {
        return Ok(Err(AppError::Conflict(format!(
            "deployment {deployment_id} of pipeline '{pipeline_id}' is a switch, not a canary or an A/B test"
        ))));
    }
    Ok(Ok(deployment))
}

/// Moves a canary to its next step, or from its last step makes its version live. Returns the
/// subscriptions to tell the plugins about when it completed.
fn next_step(
    db: &Db,
    deployment: &mut Deployment,
    why: &str,
) -> Result<Option<(Declared, Declared)>, StorageError> {
    let Some(rollout) = deployment.rollout.as_mut() else {
        return Ok(None);
    };
    match rollout.steps.get(rollout.step + 1) {
        Some(&weight) if weight < 100 => {
            rollout.step += 1;
            rollout.weight = weight;
            rollout.step_started = now_millis();
            db.put_deployment(deployment)?;
            db.insert_event(EventKind::PromotedDeployment {
                namespace_id: deployment.namespace_id.clone(),
                pipeline_id: deployment.pipeline_id.clone(),
                deployment_id: deployment.deployment_id,
                end_version: deployment.end_version,
                weight,
                reason: why.to_string(),
            })?;
            Ok(None)
        }
        _ => {
            let winner = deployment.end_version;
            db.insert_event(EventKind::PromotedDeployment {
                namespace_id: deployment.namespace_id.clone(),
                pipeline_id: deployment.pipeline_id.clone(),
                deployment_id: deployment.deployment_id,
                end_version: winner,
                weight: 100,
                reason: why.to_string(),
            })?;
            Ok(Some(complete_deployment(db, deployment, winner)?))
        }
    }
}

/// Ends a canary or an A/B test without its new version: the live version stays live.
fn end_failed(
    db: &Db,
    deployment: &mut Deployment,
    reason: DeploymentStatusReasonType,
    why: String,
) -> Result<(), StorageError> {
    deployment.state = DeploymentState::Complete;
    deployment.status = DeploymentStatus::Failed;
    deployment.ended = now_millis();
    deployment.status_reason = Some(DeploymentStatusReason {
        reason,
        description: why.clone(),
    });
    db.put_deployment(deployment)?;
    db.insert_event(EventKind::RolledBackDeployment {
        namespace_id: deployment.namespace_id.clone(),
        pipeline_id: deployment.pipeline_id.clone(),
        deployment_id: deployment.deployment_id,
        start_version: deployment.start_version,
        end_version: deployment.end_version,
        reason: why,
    })?;
    Ok(())
}
