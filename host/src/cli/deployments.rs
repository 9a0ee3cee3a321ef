//! `gofer deployment …`: list and show deployments; start a canary or an A/B test; see its
//! status, promote or abort it; compare its two versions side by side.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::field;
use super::{ListArgs, Session, output};
use crate::models::{Deployment, DeploymentState};
use crate::rollouts::Comparison;

#[derive(Debug, Subcommand)]
pub(super) enum DeploymentCommand {
    /// List a pipeline's deployments.
    List {
        pipeline: String,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one deployment, with its log.
    Get { pipeline: String, id: u64 },
    /// Try VERSION on a share of new runs, keeping the live version live; raised step by step
    /// while its runs do as well as the live version's, rolled back when they do not.
    Canary {
        pipeline: String,
        version: u64,
        /// Percent of new runs for VERSION at first (default 10).
        #[arg(long)]
        weight: Option<u64>,
        /// The weights, in order, ending at 100: e.g. 10,50,100 (default: WEIGHT,100).
        #[arg(long, value_delimiter = ',')]
        steps: Vec<u64>,
        /// Canary runs in a step before it is judged for the next (default 20; 0: by hand).
        #[arg(long)]
        promote_after: Option<u64>,
        /// Failed canary runs that roll it back (default 3; 0: not by count).
        #[arg(long)]
        rollback_after_failures: Option<u64>,
        /// How far below the live version's success rate the canary's may be, 0 to 1
        /// (default 0.05).
        #[arg(long)]
        tolerance: Option<f64>,
        /// The canary's success rate must also be at least this, 0 to 1.
        #[arg(long)]
        min_success_rate: Option<f64>,
        /// Route by this run variable: runs with the same value go to the same version.
        #[arg(long)]
        sticky: Option<String>,
    },
    /// Run the live version (A) and B side by side at fixed weights until you promote a winner.
    Ab {
        pipeline: String,
        /// The live version.
        a: u64,
        b: u64,
        /// Percent of new runs for B (default 50).
        #[arg(long)]
        weight: Option<u64>,
        /// Route by this run variable: runs with the same value go to the same version.
        #[arg(long)]
        sticky: Option<String>,
    },
    /// The deployment in progress (or the latest): weights, rules and per-version tallies.
    Status { pipeline: String },
    /// Promote the deployment in progress: a canary to its next step (from its last step its
    /// version becomes live); an A/B test ends with --version live.
    Promote {
        pipeline: String,
        /// An A/B test's winner.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Abort the deployment in progress: the live version stays live.
    Abort { pipeline: String },
    /// The two versions of a canary or an A/B test side by side, with verdicts (default: the
    /// deployment in progress, or the latest).
    Compare {
        pipeline: String,
        /// A deployment id.
        #[arg(long)]
        id: Option<u64>,
    },
}

pub(super) async fn deployment(ctx: &Session, command: DeploymentCommand) -> anyhow::Result<()> {
    let path = |pipeline: &str| format!("{}/deployments", ctx.pipeline_path(pipeline));
    match command {
        DeploymentCommand::List { pipeline, list } => {
            let body = ctx
                .client
                .get(&format!("{}{}", path(&pipeline), list.query()))
                .await?;
            ctx.show(&body, |body| {
                Ok(output::deployments(&field::<Vec<Deployment>>(
                    body,
                    "deployments",
                )?))
            })
        }
        DeploymentCommand::Get { pipeline, id } => {
            let body = ctx.client.get(&format!("{}/{id}", path(&pipeline))).await?;
            ctx.show(&body, |body| {
                Ok(output::deployment(&field(body, "deployment")?))
            })
        }
        DeploymentCommand::Canary {
            pipeline,
            version,
            weight,
            steps,
            promote_after,
            rollback_after_failures,
            tolerance,
            min_success_rate,
            sticky,
        } => {
            let request = json!({
                "kind": "canary", "version": version, "weight": weight, "steps": steps,
                "promote_after": promote_after, "rollback_after_failures": rollback_after_failures,
                "tolerance": tolerance, "min_success_rate": min_success_rate,
                "sticky_variable": sticky,
            });
            let body = ctx
                .client
                .post(&path(&pipeline), without_nulls(request))
                .await?;
            started(ctx, &body)
        }
        DeploymentCommand::Ab {
            pipeline,
            a,
            b,
            weight,
            sticky,
        } => {
            let request = json!({
                "kind": "ab", "a": a, "b": b, "weight": weight, "sticky_variable": sticky,
            });
            let body = ctx
                .client
                .post(&path(&pipeline), without_nulls(request))
                .await?;
            started(ctx, &body)
        }
        DeploymentCommand::Status { pipeline } => {
            let deployment = current(ctx, &pipeline, false).await?;
            if ctx.json() {
                output::print_json(&json!({ "deployment": deployment }))?;
            } else {
                output::text(output::deployment(&deployment))?;
            }
            Ok(())
        }
        DeploymentCommand::Promote { pipeline, version } => {
            let deployment = current(ctx, &pipeline, true).await?;
            let body = ctx
                .client
                .post(
                    &format!("{}/{}/promote", path(&pipeline), deployment.deployment_id),
                    without_nulls(json!({ "version": version })),
                )
                .await?;
            let promoted: Deployment = field(&body, "deployment")?;
            let message = match (promoted.state, &promoted.rollout) {
                (DeploymentState::Running, Some(rollout)) => format!(
                    "Deployment {} of '{pipeline}': version {} now gets {}% of new runs",
                    promoted.deployment_id, promoted.end_version, rollout.weight
                ),
                _ => format!(
                    "Deployment {} of '{pipeline}' is complete; the live version is {}",
                    promoted.deployment_id,
                    version.unwrap_or(promoted.end_version)
                ),
            };
            ctx.done(&body, message)
        }
        DeploymentCommand::Abort { pipeline } => {
            let deployment = current(ctx, &pipeline, true).await?;
            let body = ctx
                .client
                .post(
                    &format!("{}/{}/abort", path(&pipeline), deployment.deployment_id),
                    json!({}),
                )
                .await?;
            ctx.done(
                &body,
                format!(
                    "Aborted deployment {} of '{pipeline}'; version {} stays live",
                    deployment.deployment_id, deployment.start_version
                ),
            )
        }
        DeploymentCommand::Compare { pipeline, id } => {
            let id = match id {
                Some(id) => id,
                None => current(ctx, &pipeline, false).await?.deployment_id,
            };
            let body = ctx
                .client
                .get(&format!("{}/{id}/compare", path(&pipeline)))
                .await?;
            ctx.show(&body, |body| {
                Ok(output::comparison(&field::<Comparison>(
                    body,
                    "comparison",
                )?))
            })
        }
    }
}

/// Leaves out the options not given, so that the server's defaults apply.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, value)| {
                    !value.is_null() && value.as_array().is_none_or(|array| !array.is_empty())
                })
                .collect(),
        ),
        other => other,
    }
}

fn started(ctx: &Session, body: &Value) -> anyhow::Result<()> {
    let deployment: Deployment = field(body, "deployment")?;
    let weight = deployment
        .rollout
        .as_ref()
        .map(|rollout| rollout.weight)
        .unwrap_or(100);
    ctx.done(
        body,
        format!(
            "Started deployment {} of '{}': version {} gets {weight}% of new runs, version {} the rest; \
             `gofer deployment status {}`",
            deployment.deployment_id,
            deployment.pipeline_id,
            deployment.end_version,
            deployment.start_version,
            deployment.pipeline_id
        ),
    )
}

/// The pipeline's deployment in progress, or (unless `in_progress`) its latest one.
async fn current(ctx: &Session, pipeline: &str, in_progress: bool) -> anyhow::Result<Deployment> {
    let body = ctx
        .client
        .get(&format!(
            "{}/deployments?reverse=true&limit=1",
            ctx.pipeline_path(pipeline)
        ))
        .await?;
    let latest = field::<Vec<Deployment>>(&body, "deployments")?
        .into_iter()
        .next()
        .with_context(|| format!("pipeline '{pipeline}' has no deployments"))?;
    if in_progress && latest.state != DeploymentState::Running {
        bail!(
            "pipeline '{pipeline}' has no deployment in progress (the latest, {}, has ended)",
            latest.deployment_id
        );
    }
    Ok(latest)
}
