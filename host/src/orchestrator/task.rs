//! One container task: its environment, its container, its log capture, and how it ended.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::interpolation::InterpolationError;
use super::{Orchestrator, RunSettings};
use crate::logs::{LogKey, LogWriter};
use crate::masks::Masks;
use crate::models::{
    Run, Task, TaskExecution, TaskExecutionStatusReasonType, Variable, VariableSource, now_millis,
};
use crate::plugins::{PluginError, TaskRequest};
use crate::scheduler::{ContainerSpec, ContainerState, MANAGED_LABEL, SchedulerError};

/// How long log capture may lag behind a container's exit before it is abandoned.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an engine that went away is asked whether it is back.
const ENGINE_POLL: Duration = Duration::from_millis(500);

/// A request to stop a task early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StopRequest {
    pub grace: Duration,
}

/// How one attempt of a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Exited(i64),
    /// Never ran, or its end is unknown: a reason and a sentence.
    Failed(TaskExecutionStatusReasonType, String),
    Cancelled,
    TimedOut(String),
    /// Killed with a memory limit (the limit as written): `certain` when the engine flagged the
    /// kill as out of memory (it does not always, under load).
    OutOfMemory {
        exit_code: i64,
        limit: String,
        certain: bool,
    },
}

impl Outcome {
    /// The outcome with `masks` applied to its sentence.
    pub(super) fn masked(self, masks: &Masks) -> Self {
        match self {
            Self::Failed(reason, message) => Self::Failed(reason, masks.text(&message)),
            Self::TimedOut(message) => Self::TimedOut(masks.text(&message)),
            other => other,
        }
    }
}

/// The task's environment: system variables < task variables < run variables (later wins).
pub(super) fn environment(settings: &RunSettings, run: &Run, task: &Task) -> Vec<Variable> {
    let system = [
        ("GOFER_PIPELINE_ID", run.pipeline_id.clone()),
        ("GOFER_RUN_ID", run.run_id.to_string()),
        ("GOFER_TASK_ID", task.id.clone()),
        ("GOFER_TASK_IMAGE", task.image.clone()),
        ("GOFER_NAMESPACE_ID", run.namespace_id.clone()),
        ("GOFER_NAMESPACE", run.namespace_id.clone()),
        ("GOFER_API_BASE_URL", settings.api_base_url.clone()),
    ];
    let workspace = task.workspace.then(|| Variable {
        key: "GOFER_WORKSPACE".to_string(),
        value: crate::models::WORKSPACE_PATH.to_string(),
        source: VariableSource::System,
    });
    let mut merged: Vec<Variable> = Vec::new();
    let system = system.into_iter().map(|(key, value)| Variable {
        key: key.to_string(),
        value,
        source: VariableSource::System,
    });
    for variable in system
        .chain(workspace)
        .chain(task.variables.iter().cloned())
        .chain(run.variables.iter().cloned())
    {
        match merged
            .iter_mut()
            .find(|existing| existing.key == variable.key)
        {
            Some(existing) => *existing = variable,
            None => merged.push(variable),
        }
    }
    merged
}

/// Appends a shared task's output to its log.
async fn write_output(writer: &mut LogWriter, chunk: &[u8]) {
    if let Err(error) = writer.write(chunk).await {
        tracing::warn!(%error, "could not write shared task output");
    }
}

/// Where a task execution's log is kept.
pub fn log_key(task: &TaskExecution) -> LogKey {
    LogKey {
        namespace_id: task.namespace_id.clone(),
        pipeline_id: task.pipeline_id.clone(),
        run_id: task.run_id,
        task_id: task.task_id.clone(),
    }
}

/// The volume a run's tasks with `workspace` share; removed when the run ends.
pub(super) fn workspace_volume(
    settings: &RunSettings,
    namespace_id: &str,
    pipeline_id: &str,
    run_id: u64,
) -> String {
    format!(
        "gofer_workspace_{}_{namespace_id}_{pipeline_id}_{run_id}",
        settings.instance
    )
}

/// The container name of one attempt; unique, and stored before the container is created.
pub(super) fn container_name(settings: &RunSettings, task: &TaskExecution) -> String {
    format!(
        "gofer_{}_{}_{}_{}_{}_{}",
        settings.instance,
        task.namespace_id,
        task.pipeline_id,
        task.run_id,
        task.task_id,
        task.attempt
    )
}

fn spec(
    settings: &RunSettings,
    task: &TaskExecution,
    name: &str,
    env: Vec<(String, String)>,
    registry_auth: Option<(String, String)>,
) -> ContainerSpec {
    let labels = BTreeMap::from([
        (MANAGED_LABEL.to_string(), "true".to_string()),
        ("dev.gofer.instance".to_string(), settings.instance.clone()),
        ("dev.gofer.namespace".to_string(), task.namespace_id.clone()),
        ("dev.gofer.pipeline".to_string(), task.pipeline_id.clone()),
        ("dev.gofer.run".to_string(), task.run_id.to_string()),
        ("dev.gofer.task".to_string(), task.task_id.clone()),
        ("dev.gofer.attempt".to_string(), task.attempt.to_string()),
    ]);
    ContainerSpec {
        name: name.to_string(),
        image: task.task.image.clone(),
        registry_auth,
        always_pull: task.task.always_pull_newest_image,
        env,
        entrypoint: task.task.entrypoint.clone(),
        command: task.task.command.clone(),
        labels,
        nano_cpus: task.task.resources.as_ref().and_then(|r| r.nano_cpus()),
        memory_bytes: task
            .task
            .resources
            .as_ref()
            .and_then(|r| r.memory_bytes())
            .and_then(|bytes| i64::try_from(bytes).ok()),
        volume: task.task.workspace.then(|| {
            (
                workspace_volume(settings, &task.namespace_id, &task.pipeline_id, task.run_id),
                crate::models::WORKSPACE_PATH.to_string(),
            )
        }),
        placement: task.task.placement.clone(),
    }
}

impl Orchestrator {
    /// The attempt's environment with secrets and objects filled in, and the secret values used;
    /// or why the task cannot start.
    pub(super) async fn interpolated_environment(
        &self,
        task: &TaskExecution,
    ) -> Result<super::interpolation::Resolved, InterpolationError> {
        let sources = self.interpolation_sources();
        super::interpolation::resolve(&sources, task).await
    }

    /// A subscription's settings with secrets and pipeline objects filled in (before they go to
    /// the trigger plugin), and masks for the values filled in (a plugin's message about them
    /// must not echo them); or why they cannot be.
    pub async fn resolve_settings(
        &self,
        namespace: &str,
        pipeline: &str,
        settings: Vec<(String, String)>,
    ) -> Result<(Vec<(String, String)>, Masks), InterpolationError> {
        let sources = self.interpolation_sources();
        let scope = super::interpolation::Scope {
            namespace,
            pipeline,
            run: None,
        };
        let resolved =
            super::interpolation::resolve_pairs(&sources, &scope, settings, "setting").await?;
        let masks = resolved.masks();
        Ok((resolved.pairs, masks))
    }

    /// Where interpolated values come from.
    fn interpolation_sources(&self) -> super::interpolation::Sources<'_> {
        super::interpolation::Sources {
            storage: &self.inner.storage,
            secrets: self.inner.secrets.as_ref(),
            objects: self.inner.objects.as_ref(),
        }
    }

    /// The operator's configuration of a plugin, its `global_secret{{…}}` references filled in.
    pub async fn resolve_operator_values(
        &self,
        pairs: Vec<(String, String)>,
    ) -> Result<Vec<(String, String)>, InterpolationError> {
        let sources = self.interpolation_sources();
        super::interpolation::resolve_operator(&sources, pairs).await
    }

    /// The task's registry user and password: unsealed, or the secret it references (a password
    /// in a config registered before sealing existed is used as it is).
    async fn registry_credentials(
        &self,
        task: &TaskExecution,
    ) -> Result<Option<(String, String)>, String> {
        let Some(auth) = &task.task.registry_auth else {
            return Ok(None);
        };
        let password = if crate::secrets::is_sealed(&auth.pass) {
            self.inner
                .secrets
                .unseal(&auth.pass)
                .map_err(|error| format!("registry password: {error}"))?
        } else {
            let sources = self.interpolation_sources();
            let scope = super::interpolation::Scope {
                namespace: &task.namespace_id,
                pipeline: &task.pipeline_id,
                run: Some(task.run_id),
            };
            let pair = vec![("password".to_string(), auth.pass.clone())];
            let resolved = super::interpolation::resolve_pairs(&sources, &scope, pair, "registry")
                .await
                .map_err(|error| error.to_string())?;
            resolved
                .pairs
                .into_iter()
                .next()
                .map(|(_, password)| password)
                .unwrap_or_default()
        };
        Ok(Some((auth.user.clone(), password)))
    }

    /// Creates and starts the attempt's container, then follows it to its end.
    /// `on_started` records the `running` state once the container runs.
    pub(super) async fn run_container(
        &self,
        task: &TaskExecution,
        env: Vec<(String, String)>,
        writer: LogWriter,
        stop: watch::Receiver<Option<StopRequest>>,
        timeout: Option<(Duration, String)>,
    ) -> (Outcome, Option<LogWriter>) {
        let name = container_name(&self.inner.settings, task);
        let scheduler = &self.inner.scheduler;
        let registry_auth = match self.registry_credentials(task).await {
            Ok(credentials) => credentials,
            Err(message) => {
                let mut writer = writer;
                let _ = writer
                    .write(format!("[gofer] the task cannot start: {message}\n").as_bytes())
                    .await;
                return (
                    Outcome::Failed(TaskExecutionStatusReasonType::FailedPrecondition, message),
                    Some(writer),
                );
            }
        };
        let spec = spec(&self.inner.settings, task, &name, env, registry_auth);
        let starting = std::time::Instant::now();
        let started = scheduler.start(&spec).await;
        crate::metrics::metrics()
            .container_start_seconds
            .observe(starting.elapsed().as_secs_f64());
        if let Err(error) = started {
            // A container created but not started (bad entrypoint, say) is not left behind.
            let _ = scheduler.remove(&name).await;
            let mut writer = writer;
            let _ = writer
                .write(
                    format!("[gofer] the task's container could not start: {error}\n").as_bytes(),
                )
                .await;
            return (
                Outcome::Failed(
                    TaskExecutionStatusReasonType::SchedulerError,
                    error.to_string(),
                ),
                Some(writer),
            );
        }
        // When the container started, not when the image it runs was looked up.
        let started_at = now_millis();
        let image_digest = match scheduler.image_digest(&name).await {
            Ok(digest) => digest,
            Err(error) => {
                tracing::warn!(%error, container = name, "could not read the image a task runs");
                None
            }
        };
        if let Err(error) = self.record_started(task, image_digest, started_at).await {
            tracing::error!(%error, container = name, "could not record that a task started");
        }
        self.follow_container(task, &name, writer, stop, timeout, true)
            .await
    }

    /// Picks up a task that was processing or running when the server stopped: follows a live
    /// container, records an exited one with its real exit code. Returns `None` if the container
    /// was never created (the task can be started normally).
    pub(super) async fn reattach(
        &self,
        task: &TaskExecution,
        name: &str,
        stop: watch::Receiver<Option<StopRequest>>,
        timeout: Option<(Duration, String)>,
    ) -> Option<(Outcome, Option<LogWriter>)> {
        let writer = match self.inner.logs.writer(&log_key(task), true).await {
            Ok(writer) => writer,
            Err(error) => {
                return Some((
                    Outcome::Failed(
                        TaskExecutionStatusReasonType::SchedulerError,
                        error.to_string(),
                    ),
                    None,
                ));
            }
        };
        match self.inner.scheduler.state(name).await {
            Ok(ContainerState::Running) => {
                tracing::info!(container = name, "reattached to a running task container");
                Some(
                    self.follow_container(task, name, writer, stop, timeout, true)
                        .await,
                )
            }
            Ok(ContainerState::Exited { exit_code }) => {
                tracing::info!(
                    container = name,
                    exit_code,
                    "recorded a task that ended while the server was down"
                );
                let (_, writer) = self
                    .follow_container(task, name, writer, stop, None, false)
                    .await;
                Some((Outcome::Exited(exit_code), writer))
            }
            Ok(ContainerState::Missing) if task.started == 0 => None,
            Ok(ContainerState::Missing) => Some((
                Outcome::Failed(
                    TaskExecutionStatusReasonType::Orphaned,
                    format!(
                        "the task's container '{name}' disappeared while the server was down; its outcome is unknown"
                    ),
                ),
                Some(writer),
            )),
            Err(error) => Some((
                Outcome::Failed(
                    TaskExecutionStatusReasonType::SchedulerError,
                    error.to_string(),
                ),
                Some(writer),
            )),
        }
    }

    /// Copies the container's output into the log while waiting for it to exit, to be stopped,
    /// or to time out; then removes the container (if so configured).
    async fn follow_container(
        &self,
        task: &TaskExecution,
        name: &str,
        mut writer: LogWriter,
        mut stop: watch::Receiver<Option<StopRequest>>,
        timeout: Option<(Duration, String)>,
        wait: bool,
    ) -> (Outcome, Option<LogWriter>) {
        let scheduler = self.inner.scheduler.clone();
        let mut output = scheduler.logs(name, wait);
        let capture = tokio::spawn(async move {
            let mut written = 0usize;
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(bytes) => {
                        written += bytes.len();
                        if let Err(error) = writer.write(&bytes).await {
                            tracing::warn!(%error, "could not write task output");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "task output stream broke");
                        break;
                    }
                }
            }
            (writer, written)
        });
        let outcome = if !wait {
            Outcome::Exited(0)
        } else {
            let stop_requested = async {
                let request = stop.wait_for(Option::is_some).await.map(|request| *request);
                match request {
                    Ok(request) => request,
                    Err(_) => std::future::pending().await,
                }
            };
            let deadline = async {
                match &timeout {
                    Some((limit, _)) => tokio::time::sleep(*limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                exit = self.wait_through_engine_outages(name) => match exit {
                    Ok(code) => Outcome::Exited(code),
                    Err(why) => Outcome::Failed(TaskExecutionStatusReasonType::SchedulerError, why),
                },
                request = stop_requested => {
                    let grace = request.map(|request| request.grace).unwrap_or_default();
                    self.stop_container(name, grace).await;
                    Outcome::Cancelled
                }
                () = deadline => {
                    self.stop_container(name, self.inner.settings.stop_timeout.min(Duration::from_secs(10))).await;
                    Outcome::TimedOut(timeout.map(|(_, text)| text).unwrap_or_default())
                }
            }
        };
        let outcome = match outcome {
            // The kernel's OOM killer ends a container with SIGKILL (137).
            Outcome::Exited(exit_code @ 137) => {
                let limit = task.task.resources.as_ref().and_then(|r| r.memory.clone());
                match limit {
                    Some(limit) => Outcome::OutOfMemory {
                        exit_code,
                        limit,
                        certain: self.inner.scheduler.out_of_memory(name).await,
                    },
                    None => Outcome::Exited(exit_code),
                }
            }
            other => other,
        };
        let abort = capture.abort_handle();
        let writer = match tokio::time::timeout(LOG_DRAIN_TIMEOUT, capture).await {
            Ok(Ok((mut writer, written))) => {
                if wait {
                    self.catch_up_output(name, &mut writer, written).await;
                }
                Some(writer)
            }
            _ => {
                // The capture must stop writing before the log is reopened: left running, it
                // went on writing after the end marker (seen with 200 live followers on two
                // cores), and followers stopped at the marker.
                abort.abort();
                tracing::warn!(
                    container = name,
                    "task output did not finish; reopening the log"
                );
                let mut writer = self.inner.logs.writer(&log_key(task), false).await.ok();
                if let Some(writer) = writer.as_mut() {
                    let note = "\n[gofer] the task's output could not be saved in time; this log may miss its end\n";
                    let _ = writer.write(note.as_bytes()).await;
                }
                writer
            }
        };
        let kept_until = self.kept_until(task, &outcome);
        if kept_until.is_none()
            && self.inner.settings.remove_containers
            && let Err(error) = scheduler.remove(name).await
        {
            tracing::warn!(container = name, %error, "could not remove a finished task container");
        }
        let mut writer = writer;
        if let Some(until) = kept_until {
            self.record_kept(task, until).await;
            if let Some(writer) = writer.as_mut() {
                let note = format!(
                    "[gofer] the task failed; its filesystem is kept until {} (keep_failed): gofer task shell {} {} {}\n",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(until)
                    ),
                    task.pipeline_id,
                    task.run_id,
                    task.task_id
                );
                let _ = writer.write(note.as_bytes()).await;
            }
        }
        (outcome, writer)
    }

    /// Waits for the container to exit. When the engine goes away meanwhile (restarting, say),
    /// waits up to `runs.engine_outage_secs` for it to come back, then follows the container again
    /// if it still runs, takes its exit code if it ended with 0, or says what happened.
    async fn wait_through_engine_outages(&self, name: &str) -> Result<i64, String> {
        let scheduler = &self.inner.scheduler;
        loop {
            let detail = match scheduler.wait(name).await {
                // An engine shutting down stops its containers first (SIGTERM, then SIGKILL).
                Ok(code @ (137 | 143)) => match self.engine_going_away().await {
                    Some(endpoint) => {
                        return Err(format!(
                            "the container engine at {endpoint} shut down while the task ran and stopped its container (exit code {code}); Docker's live-restore keeps containers running across engine restarts"
                        ));
                    }
                    None => return Ok(code),
                },
                Ok(code) => return Ok(code),
                Err(SchedulerError::Unreachable { endpoint, detail }) => {
                    format!("the container engine at {endpoint} went away ({detail})")
                }
                Err(error) => return Err(error.to_string()),
            };
            let outage = std::time::Instant::now();
            tracing::warn!(container = name, %detail, "waiting for the container engine to come back");
            loop {
                tokio::time::sleep(ENGINE_POLL).await;
                if scheduler.ping().await.is_ok() {
                    break;
                }
                if outage.elapsed() >= self.inner.settings.engine_outage {
                    return Err(format!(
                        "{detail} while the task ran, and did not come back within {} s",
                        self.inner.settings.engine_outage.as_secs()
                    ));
                }
            }
            let away = outage.elapsed().as_secs_f64();
            match scheduler.state(name).await {
                Ok(ContainerState::Running) => {
                    tracing::info!(
                        container = name,
                        away,
                        "the container engine is back; following the task again"
                    );
                }
                Ok(ContainerState::Exited { exit_code: 0 }) => return Ok(0),
                Ok(ContainerState::Exited { exit_code }) => {
                    return Err(format!(
                        "{detail} while the task ran; back after {away:.1} s, it reported the container ended with exit code {exit_code} (an engine restart stops containers)"
                    ));
                }
                Ok(ContainerState::Missing) => {
                    return Err(format!(
                        "{detail} while the task ran; back after {away:.1} s, it no longer knows the container"
                    ));
                }
                // Gone again: wait again.
                Err(_) => {}
            }
        }
    }

    /// The engine's address if it stops answering within a second (it is shutting down).
    async fn engine_going_away(&self) -> Option<String> {
        for _ in 0..5 {
            if let Err(SchedulerError::Unreachable { endpoint, .. }) =
                self.inner.scheduler.ping().await
            {
                return Some(endpoint);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// The engine can end a live log stream a little before the container's last output (seen
    /// with Docker 20.10 under load). Once the container has exited, its stored output is read
    /// again and whatever the live stream missed is appended.
    async fn catch_up_output(&self, name: &str, writer: &mut LogWriter, already: usize) {
        let mut stored = self.inner.scheduler.logs(name, false);
        let mut seen = 0usize;
        let mut recovered = 0usize;
        while let Some(chunk) = stored.next().await {
            let Ok(bytes) = chunk else { break };
            let start = already.saturating_sub(seen).min(bytes.len());
            seen += bytes.len();
            if start < bytes.len() {
                recovered += bytes.len() - start;
                if let Err(error) = writer.write(&bytes[start..]).await {
                    tracing::warn!(%error, "could not write task output");
                    return;
                }
            }
        }
        if recovered > 0 {
            tracing::debug!(
                container = name,
                recovered,
                "appended output the live log stream missed"
            );
        }
    }

    /// Runs a shared task in its plugin: the task's variables are the environment, the output
    /// goes to the log, the task's timeout (or `plugins.task_timeout_secs`) is the CPU deadline.
    pub(super) async fn run_shared_task(
        &self,
        task: &TaskExecution,
        plugin_name: &str,
        env: Vec<(String, String)>,
        mut writer: LogWriter,
        mut stop: watch::Receiver<Option<StopRequest>>,
    ) -> (Outcome, Option<LogWriter>) {
        self.inner.plugins.loaded().await;
        let Some(plugin) = self.inner.plugins.task(plugin_name) else {
            let message = format!(
                "no shared-task plugin named '{plugin_name}' is loaded (see `gofer plugin list`)"
            );
            let _ = writer
                .write(format!("[gofer] {message}\n").as_bytes())
                .await;
            return (
                Outcome::Failed(TaskExecutionStatusReasonType::FailedPrecondition, message),
                Some(writer),
            );
        };
        if let Err(error) = self.record_started(task, None, now_millis()).await {
            tracing::error!(%error, plugin = plugin_name, "could not record that a shared task started");
        }
        let (deadline, deadline_text) = super::run::task_timeout(task).unwrap_or_else(|| {
            let limit = self.inner.settings.shared_task_timeout;
            (limit, format!("{}s", limit.as_secs()))
        });
        let (output, mut chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let request = TaskRequest {
            settings: task.task.settings.clone().into_iter().collect(),
            env,
            deadline,
            output,
        };
        let stopped = async {
            let request = stop.wait_for(Option::is_some).await.map(|request| *request);
            match request {
                Ok(_) => {}
                Err(_) => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        let run = plugin.run(request);
        tokio::pin!(run);
        // The output goes to the log as it comes, so followers see it while the task runs.
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                Some(chunk) = chunks.recv() => write_output(&mut writer, &chunk).await,
                () = &mut stopped => {
                    while let Ok(chunk) = chunks.try_recv() {
                        write_output(&mut writer, &chunk).await;
                    }
                    return (Outcome::Cancelled, Some(writer));
                }
            }
        };
        while let Ok(chunk) = chunks.try_recv() {
            write_output(&mut writer, &chunk).await;
        }
        let outcome = match result {
            Ok(code) => Outcome::Exited(i64::from(code)),
            Err(PluginError::Deadline) => Outcome::TimedOut(deadline_text),
            Err(error) => {
                let _ = writer
                    .write(format!("\n[gofer] {error}\n").as_bytes())
                    .await;
                Outcome::Failed(
                    TaskExecutionStatusReasonType::AbnormalExit,
                    format!("plugin '{plugin_name}': {error}"),
                )
            }
        };
        (outcome, Some(writer))
    }

    async fn stop_container(&self, name: &str, grace: Duration) {
        if let Err(error) = self.inner.scheduler.stop(name, grace).await {
            tracing::warn!(container = name, %error, "could not stop a task container");
        }
        let _ = self.inner.scheduler.wait(name).await;
    }
}
