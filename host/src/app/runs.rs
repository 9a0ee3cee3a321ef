//! Starting and cancelling runs and tasks, deleting a task's log: who asked is recorded, and a
//! caller's run variables may reference only the secrets and objects the caller may read.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{App, AppError, Caller, require_on_pipeline};
use crate::domain::RunOrigin;
use crate::models::{Action, Run};
use crate::orchestrator::RunKey;

impl App {
    /// Queues a run of the pipeline's live config for `caller`. A variable that references a
    /// secret or an object (`pipeline_secret{{…}}`, `pipeline_object{{…}}`, …) is filled in at
    /// launch only because the caller may read it; otherwise the start is refused naming it.
    pub async fn start_run(
        &self,
        caller: &dyn Caller,
        namespace_id: String,
        pipeline_id: String,
        variables: BTreeMap<String, String>,
    ) -> Result<Run, AppError> {
        for (name, value) in &variables {
            if let Some(resource) = crate::orchestrator::referenced_resource(value) {
                require_on_pipeline(
                    caller,
                    (&namespace_id, &pipeline_id),
                    resource,
                    Action::Read,
                    &format!("run variable {name}={value}"),
                )?;
            }
        }
        let origin = RunOrigin::Api(caller.actor());
        Ok(self
            .orchestrator
            .start_run(namespace_id, pipeline_id, variables, origin)
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
