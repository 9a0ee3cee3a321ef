//! The orchestrator: the only writer of run and task-execution state.
//!
//! Owns the durable run queue (runs wait in SQLite, dispatched within the pipeline's parallelism
//! and the global limit), one driver per running run (`run.rs`: the DAG loop), container task
//! execution (`task.rs`), cancellation, timeouts, retries, and recovery after a restart. Every
//! state transition is committed before the side effect it announces (a container name is stored
//! before the container is created), so a restarted server can always tell what was happening.
//! Must not run SQL itself (it calls `storage`) nor talk to Docker except through `scheduler`.

mod dag;
mod debugging;
pub use debugging::DEFAULT_SHELL;
mod interpolation;
pub mod triggers;

pub use interpolation::{is_reference, referenced_resource};
pub use task::log_key;
mod retention;
mod run;
mod task;

use crate::objects::ObjectStore;
use crate::secrets::SecretStore;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::config::ServerConfig;
use crate::domain::RunOrigin;
use crate::events::EventBus;
use crate::logs::LogStore;
use crate::models::{
    ConfigState, EventKind, PipelineState, Run, RunState, RunStatus, RunStatusReason,
    RunStatusReasonType, TaskExecution, TaskExecutionState, TaskExecutionStatus, Variable,
    now_millis,
};
use crate::plugins::PluginRegistry;
use crate::scheduler::Scheduler;
use crate::storage::{Db, Storage, StorageError};

/// Why a run could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(
        "runs are paused for every pipeline (system setting ignore_pipeline_run_events); \
         resume them with `gofer system resume`"
    )]
    Paused,
    #[error("pipeline '{0}' is disabled; enable it to start runs")]
    PipelineDisabled(String),
    #[error("pipeline '{0}' has no live config; deploy a config version before starting runs")]
    NoLiveConfig(String),
    #[error("run variable {key:?} is invalid: {problem}")]
    InvalidVariable { key: String, problem: &'static str },
    #[error("{0}")]
    AlreadyComplete(String),
    /// A re-run of a run that is not complete, or of failed tasks when none failed.
    #[error("{0}")]
    CannotRerun(String),
    #[error("{0}")]
    NotRunning(String),
    #[error("could not attach: {0}")]
    Attach(crate::scheduler::SchedulerError),
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::SchedulerError),
    #[error(transparent)]
    Logs(crate::logs::LogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A run about to be queued.
struct NewRun {
    variables: Vec<Variable>,
    initiator: crate::models::Initiator,
    /// The fire that asked for it (recorded with it).
    fire: Option<i64>,
    /// A version asked for; none: the live one or a rollout's choice.
    version: Option<u64>,
    /// Re-runs this run (of this pipeline); `true`: only its failed tasks.
    rerun: Option<(u64, bool)>,
}

/// Where a canary or A/B test in progress sends a new run: its version and routing. None for a
/// plain deployment.
fn route(
    deployment: &crate::models::Deployment,
    variables: &BTreeMap<String, String>,
) -> Option<(u64, crate::models::RunRouting)> {
    use crate::models::{Arm, DeploymentKind};
    let rollout = deployment.rollout.as_ref()?;
    let (new_arm, old_arm) = match deployment.kind {
        DeploymentKind::Canary => (Arm::Canary, Arm::Stable),
        DeploymentKind::Ab => (Arm::B, Arm::A),
        DeploymentKind::Switch => return None,
    };
    let random = uuid::Uuid::new_v4().as_u128();
    let (to_new, reason) =
        crate::rollouts::route(rollout, deployment.deployment_id, variables, random);
    let (arm, version) = if to_new {
        (new_arm, deployment.end_version)
    } else {
        (old_arm, deployment.start_version)
    };
    Some((
        version,
        crate::models::RunRouting {
            deployment_id: deployment.deployment_id,
            arm,
            reason,
        },
    ))
}

/// A task a re-run of failed tasks takes over as done from `original`: complete and successful,
/// with the original's times and exit code, and a reason saying so.
fn reused_task(
    db: &Db,
    run: &Run,
    original: u64,
    task: &crate::models::Task,
) -> Result<TaskExecution, StorageError> {
    let before = db.get_task_execution(&run.namespace_id, &run.pipeline_id, original, &task.id)?;
    Ok(TaskExecution {
        run_id: run.run_id,
        logs_expired: false,
        logs_removed: true,
        state: TaskExecutionState::Complete,
        status: TaskExecutionStatus::Successful,
        status_reason: Some(crate::models::TaskExecutionStatusReason {
            reason: crate::models::TaskExecutionStatusReasonType::Reused,
            description: format!(
                "not run: it succeeded in run {original}, which this run re-runs (its log is there)"
            ),
        }),
        ..before
    })
}

/// Identifies a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunKey {
    pub namespace_id: String,
    pub pipeline_id: String,
    pub run_id: u64,
}

impl RunKey {
    fn of(run: &Run) -> Self {
        Self {
            namespace_id: run.namespace_id.clone(),
            pipeline_id: run.pipeline_id.clone(),
            run_id: run.run_id,
        }
    }
}

/// The run-related settings, from `[runs]`.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub max_concurrent_runs: u64,
    pub default_parallelism: u64,
    pub stop_timeout: Duration,
    pub log_retention_runs: u64,
    /// Runs whose objects are kept (the newest ones).
    pub run_object_expiry: u64,
    pub remove_containers: bool,
    /// How long a task waits for a container engine that went away.
    pub engine_outage: Duration,
    pub api_base_url: String,
    /// Deadline of a shared task without its own timeout.
    pub shared_task_timeout: Duration,
    /// Distinguishes this server's containers from another server's on the same engine.
    pub instance: String,
}

impl RunSettings {
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            max_concurrent_runs: config.runs.max_concurrent_runs,
            default_parallelism: config.runs.default_parallelism,
            stop_timeout: Duration::from_secs(config.runs.stop_timeout_secs),
            log_retention_runs: config.runs.log_retention_runs,
            run_object_expiry: config.objects.run_object_expiry,
            remove_containers: config.runs.remove_containers,
            engine_outage: Duration::from_secs(config.runs.engine_outage_secs),
            api_base_url: config.task_api_base_url(),
            shared_task_timeout: Duration::from_secs(config.plugins.task_timeout_secs),
            instance: instance_tag(&config.database_path()),
        }
    }
}

/// How long a deleted pipeline's runs get to wind up after their tasks' grace.
const STOP_DRIVERS_TIMEOUT: Duration = Duration::from_secs(30);

/// How long output that could be the start of a secret value is held back, waiting for the rest.
const MASK_HOLD_BACK: Duration = Duration::from_millis(100);

/// `output` with `masks` applied. The end of a piece that could begin a value is held back until
/// the next piece shows whether it does (or [`MASK_HOLD_BACK`] passes with nothing new: then it
/// did not, and an interactive echo must not wait).
fn masked_output(
    output: crate::scheduler::LogStream,
    masks: crate::masks::Masks,
) -> crate::scheduler::LogStream {
    use futures_util::StreamExt;
    if masks.is_empty() {
        return output;
    }
    struct Masking {
        output: crate::scheduler::LogStream,
        masks: crate::masks::Masks,
        pending: Vec<u8>,
        ended: bool,
    }
    let state = Masking {
        output,
        masks,
        pending: Vec::new(),
        ended: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            let next = if state.ended {
                None
            } else if state.pending.is_empty() {
                state.output.next().await
            } else {
                match tokio::time::timeout(MASK_HOLD_BACK, state.output.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let held = std::mem::take(&mut state.pending);
                        let masked = bytes::Bytes::from(state.masks.apply(&held));
                        return Some((Ok(masked), state));
                    }
                }
            };
            match next {
                None => {
                    state.ended = true;
                    if state.pending.is_empty() {
                        return None;
                    }
                    let rest = std::mem::take(&mut state.pending);
                    return Some((Ok(bytes::Bytes::from(state.masks.apply(&rest))), state));
                }
                Some(Err(error)) => return Some((Err(error), state)),
                Some(Ok(chunk)) => {
                    state.pending.extend_from_slice(&chunk);
                    let held = state.masks.partial_suffix(&state.pending);
                    let ready: Vec<u8> =
                        state.pending.drain(..state.pending.len() - held).collect();
                    if !ready.is_empty() {
                        return Some((Ok(bytes::Bytes::from(state.masks.apply(&ready))), state));
                    }
                }
            }
        }
    })
    .boxed()
}

/// A short tag derived from the database path: two servers with different data directories never
/// pick the same container names. (Container names are stored, so the tag need not be stable
/// across versions.)
fn instance_tag(database: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let path = database
        .canonicalize()
        .unwrap_or_else(|_| database.to_path_buf());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

/// What a run's driver can be told while it runs.
#[derive(Debug)]
enum Control {
    /// `grace`: how long each task gets to stop; `None`: `runs.stop_timeout_secs`.
    CancelRun {
        by: String,
        grace: Option<Duration>,
    },
    CancelTask {
        task_id: String,
        grace: Duration,
    },
}

/// Handle to the orchestrator; cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    events: EventBus,
    scheduler: Arc<dyn Scheduler>,
    plugins: PluginRegistry,
    logs: LogStore,
    secrets: Arc<dyn SecretStore>,
    objects: Arc<dyn ObjectStore>,
    settings: RunSettings,
    dispatch: Notify,
    active: Mutex<HashMap<RunKey, mpsc::UnboundedSender<Control>>>,
    /// The secret of each running run's token (`inject_api_token`), made on first use.
    run_tokens: tokio::sync::Mutex<HashMap<RunKey, String>>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl Orchestrator {
    pub fn new(
        storage: Storage,
        events: EventBus,
        scheduler: Arc<dyn Scheduler>,
        plugins: PluginRegistry,
        logs: LogStore,
        stores: (Arc<dyn SecretStore>, Arc<dyn ObjectStore>),
        settings: RunSettings,
    ) -> Self {
        let (secrets, objects) = stores;
        Self {
            inner: Arc::new(Inner {
                storage,
                events,
                scheduler,
                plugins,
                logs,
                secrets,
                objects,
                settings,
                dispatch: Notify::new(),
                active: Mutex::new(HashMap::new()),
                run_tokens: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn logs(&self) -> &LogStore {
        &self.inner.logs
    }

    /// Whether the container engine answers.
    pub async fn engine_reachable(&self) -> Result<(), crate::scheduler::SchedulerError> {
        self.inner.scheduler.ping().await
    }

    /// Runs a write transaction and announces its events once committed.
    async fn write<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StorageError> + Send + 'static,
    {
        let (value, events) = self.inner.storage.write(work).await?;
        self.inner.events.publish(events);
        Ok(value)
    }

    /// Resumes every run that was executing when the server stopped, then starts dispatching
    /// queued runs. Call once at start-up.
    pub async fn start(&self) -> Result<(), OrchestratorError> {
        let running = self
            .inner
            .storage
            .read(|db| db.runs_in_state(RunState::Running))
            .await?;
        for run in running {
            tracing::info!(run_id = run.run_id, pipeline = %run.pipeline_id, "resuming run after restart");
            self.spawn_driver(RunKey::of(&run));
        }
        let dispatcher = self.clone();
        tokio::spawn(async move { dispatcher.dispatch_forever().await });
        Ok(())
    }

    /// Queues a run: of `version` if given (it must be registered), else of the version a
    /// canary or A/B test in progress routes it to, else of the live config. Refused while runs
    /// are paused, for a disabled pipeline, or with a bad variable.
    pub async fn start_run(
        &self,
        namespace_id: String,
        pipeline_id: String,
        variables: BTreeMap<String, String>,
        origin: RunOrigin,
        version: Option<u64>,
    ) -> Result<Run, OrchestratorError> {
        for (key, value) in &variables {
            if let Some(problem) = crate::pipeline_config::variable_problem(key, value) {
                return Err(OrchestratorError::InvalidVariable {
                    key: key.clone(),
                    problem,
                });
            }
        }
        let source = origin.variable_source();
        let request = NewRun {
            variables: variables
                .into_iter()
                .map(|(key, value)| Variable { key, value, source })
                .collect(),
            initiator: origin.actor().initiator(),
            fire: match &origin {
                RunOrigin::Trigger { fire, .. } => *fire,
                RunOrigin::Api(_) => None,
            },
            version,
            rerun: None,
        };
        self.queue_run(namespace_id, pipeline_id, request).await
    }

    /// Queues a re-run of a complete run: its config version and variables (references are
    /// resolved again at launch, never copied), recording which run it re-runs. With
    /// `failed_only`, only the tasks that failed or were skipped and their dependents run; the
    /// original's other successful tasks are taken over as done.
    pub async fn rerun(
        &self,
        original: RunKey,
        failed_only: bool,
        origin: RunOrigin,
    ) -> Result<Run, OrchestratorError> {
        let request = NewRun {
            variables: Vec::new(),
            initiator: origin.actor().initiator(),
            fire: None,
            version: None,
            rerun: Some((original.run_id, failed_only)),
        };
        self.queue_run(original.namespace_id, original.pipeline_id, request)
            .await
    }

    async fn queue_run(
        &self,
        namespace_id: String,
        pipeline_id: String,
        mut request: NewRun,
    ) -> Result<Run, OrchestratorError> {
        let trace_parent = crate::telemetry::trace_for_new_run().to_string();
        let run = self
            .inner
            .storage
            .write(move |db| {
                if db.get_system()?.ignore_pipeline_run_events {
                    return Ok(Err(OrchestratorError::Paused));
                }
                db.get_namespace(&namespace_id)?;
                let pipeline = db.get_pipeline(&namespace_id, &pipeline_id)?;
                if pipeline.state != PipelineState::Active {
                    return Ok(Err(OrchestratorError::PipelineDisabled(pipeline_id)));
                }
                let mut reused_tasks = Vec::new();
                let mut rerun_of = None;
                if let Some((original_id, failed_only)) = request.rerun {
                    let original = db.get_run(&namespace_id, &pipeline_id, original_id)?;
                    if original.state != RunState::Complete {
                        return Ok(Err(OrchestratorError::CannotRerun(format!(
                            "run {original_id} of '{pipeline_id}' is not complete; re-run it when it is"
                        ))));
                    }
                    if failed_only {
                        let config = db.get_config(
                            &namespace_id,
                            &pipeline_id,
                            original.pipeline_config_version,
                        )?;
                        let statuses: BTreeMap<String, TaskExecutionStatus> = db
                            .list_task_executions(&namespace_id, &pipeline_id, original_id)?
                            .into_iter()
                            .map(|(task, _)| (task.task_id, task.status))
                            .collect();
                        reused_tasks = dag::reusable_tasks(&config.tasks, &statuses);
                        if reused_tasks.len() == config.tasks.len() {
                            return Ok(Err(OrchestratorError::CannotRerun(format!(
                                "run {original_id} of '{pipeline_id}' has no failed or skipped tasks; re-run it whole (without failed-only)"
                            ))));
                        }
                    }
                    request.version = Some(original.pipeline_config_version);
                    request.variables = original.variables;
                    rerun_of = Some(original_id);
                }
                let (version, routing) = match request.version {
                    Some(version) => {
                        db.get_config(&namespace_id, &pipeline_id, version)?;
                        (version, None)
                    }
                    None => {
                        let Some(live) = db.live_config_version(&namespace_id, &pipeline_id)?
                        else {
                            return Ok(Err(OrchestratorError::NoLiveConfig(pipeline_id)));
                        };
                        let variables: BTreeMap<String, String> = request
                            .variables
                            .iter()
                            .map(|variable| (variable.key.clone(), variable.value.clone()))
                            .collect();
                        match db.deployment_in_progress(&namespace_id, &pipeline_id)? {
                            Some(deployment) => match route(&deployment, &variables) {
                                Some((version, routing)) => (version, Some(routing)),
                                None => (live, None),
                            },
                            None => (live, None),
                        }
                    }
                };
                let mut run = Run {
                    run_id: db.latest_run_id(&namespace_id, &pipeline_id)? + 1,
                    namespace_id,
                    pipeline_id,
                    pipeline_config_version: version,
                    started: now_millis(),
                    ended: 0,
                    state: RunState::Pending,
                    status: RunStatus::Unknown,
                    status_reason: None,
                    initiator: request.initiator,
                    variables: request.variables,
                    token_id: None,
                    store_objects_expired: false,
                    event_id: None,
                    routing,
                    rerun_of,
                    reused_tasks,
                    trace_parent: Some(trace_parent),
                };
                db.insert_run(&run, true)?;
                if let Some(fire) = request.fire {
                    db.fire_started(fire, &run.namespace_id, &run.pipeline_id, run.run_id)?;
                }
                let event = db.insert_event(EventKind::QueuedRun {
                    namespace_id: run.namespace_id.clone(),
                    pipeline_id: run.pipeline_id.clone(),
                    run_id: run.run_id,
                })?;
                run.event_id = Some(event.id);
                db.update_run(&run, false)?;
                Ok(Ok(run))
            })
            .await;
        let (run, events) = run?;
        let run = run?;
        self.inner.events.publish(events);
        self.inner.dispatch.notify_one();
        Ok(run)
    }

    /// Cancels a run: a queued run ends at once; a running one stops its tasks (SIGTERM, then
    /// SIGKILL after `grace`, by default `runs.stop_timeout_secs`). Cancelling a completed run is
    /// refused.
    pub async fn cancel_run(
        &self,
        key: RunKey,
        by: String,
        grace: Option<Duration>,
    ) -> Result<(), OrchestratorError> {
        let reason_by = by.clone();
        let cancel_key = key.clone();
        let outcome = self
            .write(move |db| {
                let mut run = db.get_run(&key.namespace_id, &key.pipeline_id, key.run_id)?;
                match run.state {
                    RunState::Complete | RunState::Unknown => Ok(Some(format!(
                        "run {} is already complete; there is nothing to cancel",
                        run.run_id
                    ))),
                    RunState::Pending => {
                        run.state = RunState::Complete;
                        run.status = RunStatus::Cancelled;
                        run.status_reason = Some(RunStatusReason {
                            reason: RunStatusReasonType::UserCancelled,
                            description: format!(
                                "The run was cancelled by {reason_by} before it started"
                            ),
                        });
                        run.ended = now_millis();
                        db.update_run(&run, true)?;
                        db.insert_event(EventKind::StartedRunCancellation {
                            namespace_id: run.namespace_id.clone(),
                            pipeline_id: run.pipeline_id.clone(),
                            run_id: run.run_id,
                        })?;
                        db.insert_event(EventKind::CompletedRun {
                            namespace_id: run.namespace_id,
                            pipeline_id: run.pipeline_id,
                            run_id: run.run_id,
                            status: RunStatus::Cancelled,
                        })?;
                        Ok(None)
                    }
                    RunState::Running => {
                        db.insert_event(EventKind::StartedRunCancellation {
                            namespace_id: run.namespace_id,
                            pipeline_id: run.pipeline_id,
                            run_id: run.run_id,
                        })?;
                        Ok(None)
                    }
                }
            })
            .await?;
        if let Some(message) = outcome {
            return Err(OrchestratorError::AlreadyComplete(message));
        }
        self.send(&cancel_key, Control::CancelRun { by, grace });
        Ok(())
    }

    /// Stops a pipeline for good (it is being deleted): cancels its queued and running runs,
    /// giving tasks `grace` to stop, waits until their drivers have finished (tasks stopped,
    /// containers removed), and removes any container of the pipeline still left (kept by
    /// `runs.remove_containers = false`, say). The caller has disabled the pipeline first, so no
    /// run can start meanwhile.
    pub async fn stop_pipeline_runs(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        by: String,
        grace: Duration,
    ) -> Result<(), OrchestratorError> {
        let (namespace, pipeline) = (namespace_id.to_string(), pipeline_id.to_string());
        let runs = self
            .inner
            .storage
            .read(move |db| db.unfinished_runs(&namespace, &pipeline))
            .await?;
        for run in &runs {
            match self
                .cancel_run(RunKey::of(run), by.clone(), Some(grace))
                .await
            {
                Ok(()) | Err(OrchestratorError::AlreadyComplete(_)) => {}
                Err(error) => return Err(error),
            }
        }
        // Drivers end after their tasks have stopped and their containers are gone.
        let deadline = tokio::time::Instant::now() + grace + STOP_DRIVERS_TIMEOUT;
        loop {
            let active = self
                .inner
                .active
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .keys()
                .any(|key| key.namespace_id == namespace_id && key.pipeline_id == pipeline_id);
            if !active {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    pipeline = pipeline_id,
                    "runs of a deleted pipeline did not stop in time; removing their containers"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let labels = [
            ("dev.gofer.instance", self.inner.settings.instance.as_str()),
            ("dev.gofer.namespace", namespace_id),
            ("dev.gofer.pipeline", pipeline_id),
        ];
        let left = self.inner.scheduler.list(&labels).await?;
        for container in left {
            // Kept failed tasks' containers take their shell images with them.
            self.inner.scheduler.discard_kept(&container).await?;
        }
        Ok(())
    }

    /// Cancels one task of a running run, giving it `grace` to stop before it is killed.
    pub async fn cancel_task(
        &self,
        key: RunKey,
        task_id: String,
        grace: Duration,
    ) -> Result<(), OrchestratorError> {
        let cancel_key = key.clone();
        let id = task_id.clone();
        let outcome = self
            .write(move |db| {
                let task =
                    db.get_task_execution(&key.namespace_id, &key.pipeline_id, key.run_id, &id)?;
                if task.state == TaskExecutionState::Complete {
                    return Ok(Some(format!(
                        "task '{id}' of run {} is already complete",
                        key.run_id
                    )));
                }
                db.insert_event(EventKind::StartedTaskExecutionCancellation {
                    namespace_id: key.namespace_id,
                    pipeline_id: key.pipeline_id,
                    run_id: key.run_id,
                    task_execution_id: id,
                    timeout: grace.as_secs(),
                })?;
                Ok(None)
            })
            .await?;
        if let Some(message) = outcome {
            return Err(OrchestratorError::AlreadyComplete(message));
        }
        self.send(&cancel_key, Control::CancelTask { task_id, grace });
        Ok(())
    }

    /// Deletes a finished task's log and records that it is gone (the orchestrator is the only
    /// writer of task executions).
    pub async fn delete_task_log(
        &self,
        key: RunKey,
        task_id: String,
    ) -> Result<(), OrchestratorError> {
        let task = self
            .inner
            .storage
            .read(move |db| {
                db.get_task_execution(&key.namespace_id, &key.pipeline_id, key.run_id, &task_id)
            })
            .await?;
        if task.state != TaskExecutionState::Complete {
            return Err(OrchestratorError::NotRunning(format!(
                "cannot delete the logs of task '{}' while it is in progress",
                task.task_id
            )));
        }
        if task.logs_removed {
            return Err(OrchestratorError::Storage(StorageError::NotFound(format!(
                "the logs of task '{}' (they were already removed)",
                task.task_id
            ))));
        }
        self.inner
            .logs
            .remove(&task::log_key(&task))
            .await
            .map_err(OrchestratorError::Logs)?;
        let mut task = task;
        task.logs_removed = true;
        self.write(move |db| db.update_task_execution(&task, None))
            .await?;
        Ok(())
    }

    /// Starts `command` inside a running task's container, attached with a TTY.
    pub async fn attach(
        &self,
        key: RunKey,
        task_id: String,
        command: Vec<String>,
    ) -> Result<crate::scheduler::ExecSession, OrchestratorError> {
        let (task, container) = self.task_with_container(key, task_id).await?;
        let container = match (task.state, container) {
            (TaskExecutionState::Running, Some(container)) => container,
            _ => {
                return Err(OrchestratorError::NotRunning(format!(
                    "task '{}' is not running, so there is nothing to attach to",
                    task.task_id
                )));
            }
        };
        let session = self
            .inner
            .scheduler
            .exec(&container, command)
            .await
            .map_err(OrchestratorError::Attach)?;
        Ok(self.masked_session(&task, session).await)
    }

    /// A task execution with the name of its latest container.
    async fn task_with_container(
        &self,
        key: RunKey,
        task_id: String,
    ) -> Result<(TaskExecution, Option<String>), OrchestratorError> {
        Ok(self
            .inner
            .storage
            .read(move |db| {
                db.get_task_execution_with_container(
                    &key.namespace_id,
                    &key.pipeline_id,
                    key.run_id,
                    &task_id,
                )
            })
            .await?)
    }

    /// A command session in (a copy of) `task`'s container, its output masked like the task's
    /// log. (A convenience, not a boundary: a shell can print the task's secrets in any disguise;
    /// hence opening one needs permission to read them.)
    async fn masked_session(
        &self,
        task: &TaskExecution,
        mut session: crate::scheduler::ExecSession,
    ) -> crate::scheduler::ExecSession {
        let masks = match self.interpolated_environment(task).await {
            Ok(resolved) => crate::masks::Masks::of(resolved.secrets),
            Err(_) => crate::masks::Masks::default(),
        };
        session.output = masked_output(session.output, masks);
        session
    }

    fn send(&self, key: &RunKey, control: Control) {
        let active = self
            .inner
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = active.get(key) {
            let _ = sender.send(control);
        }
    }

    async fn dispatch_forever(&self) {
        loop {
            if let Err(error) = self.dispatch_ready().await {
                tracing::error!(%error, "could not dispatch queued runs");
            }
            // Woken when a run is queued or ends; the timer is only a safety net.
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.inner.dispatch.notified()).await;
        }
    }

    /// Starts every queued run that fits within the pipeline's parallelism and the global limit.
    async fn dispatch_ready(&self) -> Result<(), StorageError> {
        let settings = self.inner.settings.clone();
        let started = self
            .write(move |db| {
                let mut counts = db.running_run_counts()?;
                let mut total: u64 = counts.values().sum();
                let mut started = Vec::new();
                // Each pipeline's oldest queued runs, as many as it has free slots (a pipeline's
                // queue is first in, first out), then all of them oldest first under the global
                // limit. Only the runs that may start are read, however long the queue.
                let mut candidates = Vec::new();
                for (namespace_id, pipeline_id) in db.queued_pipelines()? {
                    let running = counts
                        .get(&(namespace_id.clone(), pipeline_id.clone()))
                        .copied()
                        .unwrap_or(0);
                    let mut taken = 0;
                    candidates.extend(db.queued_runs_of(
                        &namespace_id,
                        &pipeline_id,
                        |queued| {
                            let limit = if queued.parallelism > 0 {
                                queued.parallelism
                            } else {
                                settings.default_parallelism
                            };
                            let free = limit == 0 || running + taken < limit;
                            taken += 1;
                            free
                        },
                    )?);
                }
                candidates.sort_by_key(|queued| queued.queued_at);
                for queued in candidates {
                    if settings.max_concurrent_runs > 0 && total >= settings.max_concurrent_runs {
                        break;
                    }
                    let pipeline = (queued.namespace_id.clone(), queued.pipeline_id.clone());
                    let mut run =
                        db.get_run(&queued.namespace_id, &queued.pipeline_id, queued.run_id)?;
                    run.state = RunState::Running;
                    db.update_run(&run, true)?;
                    let config = db.get_config(
                        &run.namespace_id,
                        &run.pipeline_id,
                        run.pipeline_config_version,
                    )?;
                    debug_assert_ne!(config.state, ConfigState::Unknown);
                    let now = now_millis();
                    for task in config.tasks.values() {
                        if let (Some(original), true) =
                            (run.rerun_of, run.reused_tasks.contains(&task.id))
                        {
                            db.insert_task_execution(&reused_task(db, &run, original, task)?)?;
                            continue;
                        }
                        db.insert_task_execution(&TaskExecution {
                            namespace_id: run.namespace_id.clone(),
                            pipeline_id: run.pipeline_id.clone(),
                            run_id: run.run_id,
                            task_id: task.id.clone(),
                            created: now,
                            started: 0,
                            ended: 0,
                            exit_code: None,
                            logs_expired: false,
                            logs_removed: false,
                            state: TaskExecutionState::Waiting,
                            status: TaskExecutionStatus::Unknown,
                            status_reason: None,
                            variables: task::environment(&settings, &run, task),
                            task: task.clone(),
                            attempt: 1,
                            image_digest: None,
                            kept_until: None,
                        })?;
                    }
                    db.insert_event(EventKind::StartedRun {
                        namespace_id: run.namespace_id.clone(),
                        pipeline_id: run.pipeline_id.clone(),
                        run_id: run.run_id,
                    })?;
                    *counts.entry(pipeline).or_default() += 1;
                    total += 1;
                    started.push(RunKey::of(&run));
                }
                Ok(started)
            })
            .await?;
        for key in started {
            self.spawn_driver(key);
        }
        Ok(())
    }

    fn spawn_driver(&self, key: RunKey) {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.inner
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.clone(), sender);
        let orchestrator = self.clone();
        tokio::spawn(async move {
            run::drive(orchestrator.clone(), key.clone(), receiver).await;
            orchestrator
                .inner
                .active
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&key);
            orchestrator.inner.dispatch.notify_one();
            orchestrator.revoke_run_token(&key).await;
            orchestrator.expire_logs(&key).await;
            orchestrator.expire_run_objects(&key).await;
        });
    }

    /// The run's API token for tasks with `inject_api_token`, made on first use: it may act on
    /// its own pipeline only (see `auth::run_token_role`) and is deleted when the run ends.
    pub(super) async fn run_token(&self, key: &RunKey) -> Result<String, String> {
        let mut tokens = self.inner.run_tokens.lock().await;
        if let Some(secret) = tokens.get(key) {
            return Ok(secret.clone());
        }
        let secret = crate::auth::new_secret();
        let hash = crate::auth::hash_secret(&secret);
        let now = crate::models::now_millis();
        let token = crate::models::Token {
            id: uuid::Uuid::now_v7().to_string(),
            created: now,
            metadata: [
                (
                    crate::auth::RUN_NAMESPACE.to_string(),
                    key.namespace_id.clone(),
                ),
                (
                    crate::auth::RUN_PIPELINE.to_string(),
                    key.pipeline_id.clone(),
                ),
                (crate::auth::RUN_ID.to_string(), key.run_id.to_string()),
            ]
            .into(),
            // A backstop: the token is deleted when the run ends.
            expires: now + 7 * 24 * 3600 * 1000,
            disabled: false,
            user: format!(
                "run {} of {}/{}",
                key.run_id, key.namespace_id, key.pipeline_id
            ),
            roles: Vec::new(),
        };
        self.write(move |db| db.insert_token(&token, &hash))
            .await
            .map_err(|error| format!("could not make the run's API token: {error}"))?;
        tokens.insert(key.clone(), secret.clone());
        Ok(secret)
    }

    /// Deletes a finished run's tokens.
    async fn revoke_run_token(&self, key: &RunKey) {
        self.inner.run_tokens.lock().await.remove(key);
        let (namespace_id, pipeline_id, run_id) = (
            key.namespace_id.clone(),
            key.pipeline_id.clone(),
            key.run_id,
        );
        if let Err(error) = self
            .write(move |db| db.delete_run_tokens(&namespace_id, &pipeline_id, run_id))
            .await
        {
            tracing::warn!(%error, "could not delete a finished run's API token");
        }
    }

    /// Deletes the objects of runs older than the newest `objects.run_object_expiry` of the
    /// pipeline.
    async fn expire_run_objects(&self, key: &RunKey) {
        let keep = self.inner.settings.run_object_expiry;
        let (namespace_id, pipeline_id) = (key.namespace_id.clone(), key.pipeline_id.clone());
        let expired = match self
            .write(move |db| db.expire_run_objects(&namespace_id, &pipeline_id, keep))
            .await
        {
            Ok(expired) => expired,
            Err(error) => {
                tracing::warn!(%error, "could not expire run objects");
                return;
            }
        };
        for (run, object) in expired {
            let object_key = crate::objects::ObjectKey::Run {
                namespace: key.namespace_id.clone(),
                pipeline: key.pipeline_id.clone(),
                run,
                key: object,
            };
            if let Err(error) = self.inner.objects.delete(&object_key).await {
                tracing::warn!(%error, "could not delete an expired run object");
            }
        }
    }

    /// Deletes the logs of runs older than the newest `runs.log_retention_runs` of the pipeline.
    async fn expire_logs(&self, key: &RunKey) {
        let keep = self.inner.settings.log_retention_runs;
        let (namespace_id, pipeline_id) = (key.namespace_id.clone(), key.pipeline_id.clone());
        let expiring = match self
            .inner
            .storage
            .read(move |db| {
                db.task_executions_with_expiring_logs(&namespace_id, &pipeline_id, keep)
            })
            .await
        {
            Ok(expiring) => expiring,
            Err(error) => {
                tracing::warn!(%error, "could not look for expired logs");
                return;
            }
        };
        for mut task in expiring {
            let log = task::log_key(&task);
            if let Err(error) = self.inner.logs.remove(&log).await {
                tracing::warn!(%error, "could not delete an expired log");
                continue;
            }
            task.logs_expired = true;
            task.logs_removed = true;
            if let Err(error) = self
                .write(move |db| db.update_task_execution(&task, None))
                .await
            {
                tracing::warn!(%error, "could not record an expired log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(pieces: Vec<&'static str>, gap: Duration) -> String {
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            for piece in pieces {
                let _ = sender.send(Ok(bytes::Bytes::from(piece))).await;
                tokio::time::sleep(gap).await;
            }
        });
        let output = tokio_stream_of(receiver);
        let masks = crate::masks::Masks::of(["hunter2".to_string()]);
        let chunks: Vec<_> = masked_output(output, masks).collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|chunk| chunk.unwrap().to_vec())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    fn tokio_stream_of(
        mut receiver: tokio::sync::mpsc::Receiver<
            Result<bytes::Bytes, crate::scheduler::SchedulerError>,
        >,
    ) -> crate::scheduler::LogStream {
        futures_util::stream::poll_fn(move |context| receiver.poll_recv(context)).boxed()
    }

    #[tokio::test]
    async fn attach_output_is_masked_even_when_a_value_is_split() {
        let masked = collect(
            vec!["$ echo $PASSWORD\r\nhun", "ter2\r\n$ ", "h", "i\r\n"],
            Duration::from_millis(5),
        )
        .await;
        assert_eq!(masked, "$ echo $PASSWORD\r\n********\r\n$ hi\r\n");
    }

    #[tokio::test]
    async fn held_back_output_is_released_when_nothing_follows() {
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        let masks = crate::masks::Masks::of(["hunter2".to_string()]);
        let mut output = masked_output(tokio_stream_of(receiver), masks);
        sender.send(Ok(bytes::Bytes::from("$ h"))).await.unwrap();
        let first = output.next().await.unwrap().unwrap();
        assert_eq!(first, "$ ");
        // The typed "h" shows up without waiting for another keystroke.
        let started = std::time::Instant::now();
        let second = output.next().await.unwrap().unwrap();
        assert_eq!(second, "h");
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(sender);
        assert!(output.next().await.is_none());
    }
}
