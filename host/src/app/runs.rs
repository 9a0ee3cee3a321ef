//! Starting, re-running and cancelling runs and tasks, deleting a task's log: who asked is
//! recorded, and a caller's run variables may reference only the secrets and objects the caller
//! may read.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{App, AppError, Caller, require_on_pipeline};
use crate::domain::RunOrigin;
use crate::models::{Action, Run};
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
