//! Wire types of the Gofer v0 REST API: the JSON shapes clients see.
//!
//! Owns field names, enum spellings and wrapper-free resource structs exactly as Gofer v0 serialised
//! them (epoch-millisecond `u64` times, snake_case enums except the PascalCase deployment enums).
//! Must not contain behaviour beyond small conversions: no SQL, no HTTP, no validation of user input
//! (that lives in `pipeline_config`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Milliseconds since the Unix epoch, the only time format on the wire.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// A grouping of pipelines, usually one per team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Namespace {
    /// Unique identifier (3-32 characters of `[a-zA-Z0-9-]`).
    pub id: String,
    /// Humanized name.
    pub name: String,
    /// What the namespace is used for.
    pub description: String,
    /// Creation time in epoch milliseconds.
    pub created: u64,
    /// Last update in epoch milliseconds; 0 until the first update.
    pub modified: u64,
}

/// Whether a pipeline accepts new runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    Unknown,
    Active,
    Disabled,
}

/// The system-managed part of a pipeline; created by its first config registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Metadata)]
pub struct PipelineMetadata {
    pub namespace_id: String,
    pub pipeline_id: String,
    /// Creation time in epoch milliseconds.
    pub created: u64,
    /// Last state change in epoch milliseconds; 0 until then.
    pub modified: u64,
    pub state: PipelineState,
}

/// Lifecycle of one config version: `unreleased` → `live` → `deprecated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConfigState {
    Unknown,
    Unreleased,
    Live,
    Deprecated,
}

/// Where a variable came from; decides precedence and visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VariableSource {
    Unknown,
    PipelineConfig,
    System,
    RunOptions,
    Extension,
}

/// A key/value pair that becomes an environment variable of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Variable {
    pub key: String,
    pub value: String,
    pub source: VariableSource,
}

/// The status a parent task must finish with for its child to run.
///
/// Serialised in snake_case; both `Any` and `any` spellings are accepted on input, since Gofer v0's
/// SDKs print the PascalCase form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequiredParentStatus {
    #[serde(alias = "Unknown")]
    Unknown,
    #[serde(alias = "Any")]
    Any,
    #[serde(alias = "Success")]
    Success,
    #[serde(alias = "Failure")]
    Failure,
}

/// Credentials for a private registry. The password never leaves the server: API output carries
/// [`RegistryAuth::REDACTED`] in its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistryAuth {
    pub user: String,
    pub pass: String,
}

impl RegistryAuth {
    /// What API output shows instead of a registry password.
    pub const REDACTED: &'static str = "[redacted]";

    /// A copy safe to send to clients.
    pub fn redacted(&self) -> Self {
        Self {
            user: self.user.clone(),
            pass: Self::REDACTED.to_string(),
        }
    }
}

/// One unit of work of a pipeline config, as stored and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: String,
    pub description: String,
    /// Container image, e.g. `busybox:latest` (empty for a shared task).
    pub image: String,
    /// The shared-task plugin this task runs instead of a container (beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The shared task's settings (beyond v0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    pub registry_auth: Option<RegistryAuth>,
    /// Parent task id → the status that parent must end with.
    pub depends_on: BTreeMap<String, RequiredParentStatus>,
    pub variables: Vec<Variable>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub inject_api_token: bool,
    pub always_pull_newest_image: bool,
    /// Longest the task may run, e.g. `"90s"` or `"5m"` (beyond v0); absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub timeout: Option<crate::domain::Timeout>,
    /// How many more times a failed task is tried, with a growing pause (beyond v0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// How long the container of a failed last attempt is kept for `gofer task shell` (the
    /// task's or its pipeline's `keep_failed`; beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub keep_failed: Option<crate::domain::Timeout>,
    /// CPU and memory limits of the task's container (beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<TaskResources>,
    /// Mount the run's shared workspace volume at [`WORKSPACE_PATH`] (beyond v0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workspace: bool,
    /// Where a cluster engine may run the task: Swarm placement constraints such as
    /// `node.labels.gpu == true`, its pipeline's first, then its own (beyond v0). Single-host
    /// engines run every task on their host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
}

/// What is wrong with a placement constraint, if anything: it must read `ATTRIBUTE == VALUE` or
/// `ATTRIBUTE != VALUE`, with one of the attributes Docker Swarm places by.
pub fn placement_problem(constraint: &str) -> Option<String> {
    const ATTRIBUTES: [&str; 6] = [
        "node.id",
        "node.hostname",
        "node.role",
        "node.platform.os",
        "node.platform.arch",
        "node.labels.",
    ];
    let Some((attribute, value)) = constraint
        .split_once("==")
        .or_else(|| constraint.split_once("!="))
    else {
        return Some(format!(
            "'{constraint}' is not a constraint: use ATTRIBUTE == VALUE or ATTRIBUTE != VALUE, e.g. \"node.labels.gpu == true\""
        ));
    };
    let (attribute, value) = (attribute.trim(), value.trim());
    // Labels need a name after their prefix; the other attributes are whole.
    let named_label =
        |prefix: &str| attribute.len() > prefix.len() && attribute.starts_with(prefix);
    let known = named_label("engine.labels.")
        || ATTRIBUTES.iter().any(|known| {
            if known.ends_with('.') {
                named_label(known)
            } else {
                attribute == *known
            }
        });
    if !known {
        return Some(format!(
            "'{attribute}' in '{constraint}' is not an attribute to place by (node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME, engine.labels.NAME)"
        ));
    }
    if value.is_empty() || value.contains(['=', '!']) || value.chars().any(char::is_control) {
        return Some(format!("'{constraint}' has no value to compare with"));
    }
    None
}

/// Where a task with `workspace` finds the run's shared workspace (also in `GOFER_WORKSPACE`).
pub const WORKSPACE_PATH: &str = "/gofer/workspace";

/// Limits on what a container task may use; past its memory the task is killed and fails saying
/// so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskResources {
    /// CPUs the task may use, e.g. `0.5` or `2` (a share of the machine's cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory the task may use: a number of bytes with a unit, e.g. `"256m"` or `"1g"` (k, m, g:
    /// KiB, MiB, GiB); at least `6m`. No swap beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl TaskResources {
    /// Most CPUs a task may ask for.
    pub const MAX_CPUS: f64 = 1024.0;
    /// Least memory an engine accepts as a limit (Docker's minimum).
    pub const MIN_MEMORY_BYTES: u64 = 6 << 20;

    /// What is wrong with these limits, if anything.
    pub fn problem(&self) -> Option<String> {
        if let Some(cpus) = self.cpus
            && !(cpus > 0.0 && cpus <= Self::MAX_CPUS)
        {
            return Some(format!(
                "cpus must be above 0 and at most {}, got {cpus}",
                Self::MAX_CPUS
            ));
        }
        if let Some(memory) = &self.memory {
            match parse_memory(memory) {
                Err(problem) => return Some(problem),
                Ok(bytes) if bytes < Self::MIN_MEMORY_BYTES => {
                    return Some(format!("memory must be at least 6m, got '{memory}'"));
                }
                Ok(_) => {}
            }
        }
        None
    }

    /// The memory limit in bytes (checked by [`Self::problem`] when the config was registered).
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory
            .as_deref()
            .and_then(|memory| parse_memory(memory).ok())
    }

    /// The CPU limit in billionths of a CPU (the engines' unit).
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpus.map(|cpus| (cpus * 1e9).round() as i64)
    }
}

/// `"512m"`, `"1g"`, `"65536k"`, `"300MiB"` or a plain number of bytes.
fn parse_memory(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let problem = || format!("memory '{text}' is not a size (use e.g. \"256m\" or \"1g\")");
    let number: u64 = number.parse().map_err(|_| problem())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(problem()),
    };
    number.checked_mul(1 << shift).ok_or_else(problem)
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl Task {
    /// A copy safe to send to clients (registry password redacted).
    pub fn redacted(&self) -> Self {
        Self {
            registry_auth: self.registry_auth.as_ref().map(RegistryAuth::redacted),
            ..self.clone()
        }
    }
}

/// One registered version of a pipeline's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Config)]
pub struct PipelineConfig {
    pub namespace_id: String,
    pub pipeline_id: String,
    /// 1-based; each registration takes the next number, never reused.
    pub version: u64,
    /// Maximum concurrent runs of this pipeline; 0 means the server's default.
    pub parallelism: u64,
    pub name: String,
    pub description: String,
    /// Task id → task.
    pub tasks: BTreeMap<String, Task>,
    pub state: ConfigState,
    /// Registration time in epoch milliseconds.
    pub registered: u64,
    /// When this version stopped being live, in epoch milliseconds; 0 if never.
    pub deprecated: u64,
    /// Longest a run may take, e.g. `"30m"` (beyond v0); absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub timeout: Option<crate::domain::Timeout>,
    /// Triggers this config subscribes the pipeline to when it is deployed (beyond v0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<DeclaredTrigger>,
}

impl PipelineConfig {
    /// A copy safe to send to clients (registry passwords redacted).
    pub fn redacted(mut self) -> Self {
        for task in self.tasks.values_mut() {
            *task = task.redacted();
        }
        self
    }
}

/// Pipeline metadata with one config, as returned by config registration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Pipeline2)]
pub struct Pipeline {
    pub metadata: PipelineMetadata,
    pub config: PipelineConfig,
}

/// Deployment state; PascalCase on the wire as in Gofer v0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DeploymentState {
    Unknown,
    Running,
    Complete,
}

/// Deployment outcome; PascalCase on the wire as in Gofer v0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DeploymentStatus {
    Unknown,
    Failed,
    Successful,
}

/// Why a deployment ended the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DeploymentStatusReasonType {
    Unknown,
    /// A canary's rules rolled it back (beyond v0).
    RolledBack,
    /// Stopped by hand; the stable version stays live (beyond v0).
    Aborted,
}

/// How a deployment moves a pipeline between versions (beyond v0, whose deploy only switched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    /// `end_version` is live at once (v0's deploy).
    #[default]
    Switch,
    /// `end_version` gets a share of new runs, raised step by step while its runs do as well as
    /// the stable version's, rolled back when they do not.
    Canary,
    /// `start_version` (A) and `end_version` (B) both take new runs at fixed weights until the
    /// operator picks the winner.
    Ab,
}

/// Which side of a canary or an A/B test a run went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// A canary's `start_version`.
    Stable,
    /// A canary's `end_version`.
    Canary,
    /// An A/B test's `start_version`.
    A,
    /// An A/B test's `end_version`.
    B,
}

impl Arm {
    /// Whether runs of this arm run `end_version`.
    pub fn is_new(self) -> bool {
        matches!(self, Self::Canary | Self::B)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Canary => "canary",
            Self::A => "a",
            Self::B => "b",
        }
    }
}

/// A canary's or an A/B test's routing and rules, and what its runs did (beyond v0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    /// Percent of new runs that go to `end_version` (the canary, or B) now.
    pub weight: u8,
    /// A canary's weights in order (the last is 100); empty for an A/B test.
    pub steps: Vec<u8>,
    /// Index into `steps` of the current weight.
    pub step: usize,
    /// When the current step began (epoch ms): promotion looks at runs since then.
    pub step_started: u64,
    /// Promote to the next step after this many canary runs in the current step (0: by hand).
    pub promote_after: u64,
    /// Roll back after this many failed canary runs (0: not by count).
    pub rollback_after_failures: u64,
    /// Promotion needs the canary's success rate to be at least the stable version's over the
    /// same window minus this (0 to 1); below it, the canary is rolled back.
    pub tolerance: f64,
    /// Promotion also needs at least this success rate (0 to 1); below it, rolled back.
    pub min_success_rate: Option<f64>,
    /// Routes by this run variable: runs with the same value go to the same version.
    pub sticky_variable: Option<String>,
    /// Per arm, counted from the runs this deployment routed (filled in when read).
    #[serde(default)]
    pub tallies: Vec<ArmTally>,
}

/// What one arm's runs did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArmTally {
    pub arm: Arm,
    pub version: u64,
    /// Runs routed to it.
    pub runs: u64,
    pub successful: u64,
    pub failed: u64,
    /// Complete runs of the current step (since `step_started`), and how many succeeded.
    pub step_complete: u64,
    pub step_successful: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeploymentStatusReason {
    pub reason: DeploymentStatusReasonType,
    pub description: String,
}

/// The switch of a pipeline's live config from `start_version` to `end_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub namespace_id: String,
    pub pipeline_id: String,
    /// Per pipeline, 1-based.
    pub deployment_id: u64,
    /// The version that was live before; equal to `end_version` if none was.
    pub start_version: u64,
    /// The version made live.
    pub end_version: u64,
    pub started: u64,
    pub ended: u64,
    pub state: DeploymentState,
    pub status: DeploymentStatus,
    pub status_reason: Option<DeploymentStatusReason>,
    /// What happened to it, as events (started, promoted, rolled back, completed...).
    pub logs: Vec<Event>,
    /// `switch` (v0's deploy), `canary` or `ab` (beyond v0).
    #[serde(default)]
    pub kind: DeploymentKind,
    /// A canary's or A/B test's routing, rules and tallies (beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// What happened, externally tagged: `{"created_namespace": {"namespace_id": "x"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    CreatedNamespace {
        namespace_id: String,
    },
    DeletedNamespace {
        namespace_id: String,
    },
    DisabledPipeline {
        namespace_id: String,
        pipeline_id: String,
    },
    EnabledPipeline {
        namespace_id: String,
        pipeline_id: String,
    },
    CreatedPipeline {
        namespace_id: String,
        pipeline_id: String,
    },
    DeletedPipeline {
        namespace_id: String,
        pipeline_id: String,
    },
    RegisteredPipelineConfig {
        namespace_id: String,
        pipeline_id: String,
        version: u64,
    },
    DeletedPipelineConfig {
        namespace_id: String,
        pipeline_id: String,
        version: u64,
    },
    StartedDeployment {
        namespace_id: String,
        pipeline_id: String,
        start_version: u64,
        end_version: u64,
    },
    CompletedDeployment {
        namespace_id: String,
        pipeline_id: String,
        start_version: u64,
        end_version: u64,
    },
    /// A canary moved to its next weight, or an A/B test began (beyond v0).
    PromotedDeployment {
        namespace_id: String,
        pipeline_id: String,
        deployment_id: u64,
        end_version: u64,
        weight: u8,
        reason: String,
    },
    /// A canary or an A/B test ended without `end_version` becoming live: rolled back by its
    /// rules or aborted (beyond v0).
    RolledBackDeployment {
        namespace_id: String,
        pipeline_id: String,
        deployment_id: u64,
        start_version: u64,
        end_version: u64,
        reason: String,
    },
    QueuedRun {
        namespace_id: String,
        pipeline_id: String,
        run_id: u64,
    },
    StartedRun {
        namespace_id: String,
        pipeline_id: String,
        run_id: u64,
    },
    CompletedRun {
        namespace_id: String,
        pipeline_id: String,
        run_id: u64,
        status: RunStatus,
    },
    StartedRunCancellation {
        namespace_id: String,
        pipeline_id: String,
        run_id: u64,
    },
    StartedTaskExecution {
        namespace_id: String,
        pipeline_id: String,
        run_id: u64,
        task_execution_id: String,
        /// 1 for the first try, then 2, 3... for retries (beyond v0).
        attempt: u32,
    },
    CompletedTaskExecution {
        namespace_id: String,
        pipeline_id: String,
        run_id: u64,
        task_execution_id: String,
        status: TaskExecutionStatus,
    },
    StartedTaskExecutionCancellation {
        namespace_id: String,
        pipeline_id: String,
        run_id: u64,
        task_execution_id: String,
        /// Seconds of grace before the task is killed.
        timeout: u64,
    },
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// UUIDv7, so ids sort by time.
    pub id: String,
    pub kind: EventKind,
    /// Emission time in epoch milliseconds.
    pub emitted: u64,
}

/// Server-wide switches (`GET /api/system`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = GetSystemPreferencesResponse)]
pub struct SystemPreferences {
    pub bootstrap_token_created: bool,
    /// When true, no new runs start.
    pub ignore_pipeline_run_events: bool,
}

/// Build information (`GET /api/system/metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = GetSystemMetadataResponse)]
pub struct SystemMetadata {
    /// Commit the binary was built from, or `unknown`.
    pub commit: String,
    /// Version of the binary.
    pub semver: String,
}

/// Who started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Initiator {
    pub id: String,
    pub user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = run_state)]
pub enum RunState {
    Unknown,
    /// Queued: waiting for a free slot (pipeline parallelism, global limit).
    Pending,
    Running,
    Complete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = run_status)]
pub enum RunStatus {
    Unknown,
    Failed,
    Successful,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = run_status_reason_type)]
pub enum RunStatusReasonType {
    Unknown,
    AbnormalExit,
    SchedulerError,
    FailedPrecondition,
    UserCancelled,
    AdminCancelled,
    /// The run took longer than its `timeout` (beyond v0).
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = run_status_reason)]
pub struct RunStatusReason {
    pub reason: RunStatusReasonType,
    pub description: String,
}

/// One execution of a pipeline's live config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub namespace_id: String,
    pub pipeline_id: String,
    /// The config version it executes: the live one when it was started, the one a canary or an
    /// A/B test routed it to (see `routing`), or its original's for a re-run.
    pub pipeline_config_version: u64,
    /// Per pipeline, 1-based.
    pub run_id: u64,
    /// When the run was requested (epoch ms).
    pub started: u64,
    /// When it completed (epoch ms); 0 until then.
    pub ended: u64,
    pub state: RunState,
    pub status: RunStatus,
    pub status_reason: Option<RunStatusReason>,
    pub initiator: Initiator,
    /// Run variables; they override task and system variables.
    pub variables: Vec<Variable>,
    pub token_id: Option<String>,
    pub store_objects_expired: bool,
    /// Id of the run's `queued_run` event.
    pub event_id: Option<String>,
    /// The deployment that chose this run's version, the arm and why (beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RunRouting>,
    /// The run this one re-runs (beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<u64>,
    /// Tasks of `rerun_of` taken over as done (a re-run of failed tasks only; beyond v0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reused_tasks: Vec<String>,
    /// The W3C `traceparent` of what started the run (the caller's, or the request's span when
    /// spans are exported); its trace id is the run's trace (beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
}

/// How a canary or an A/B test routed a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunRouting {
    pub deployment_id: u64,
    pub arm: Arm,
    /// E.g. `weight 10%` or `sticky BRANCH=main`.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = task_execution_state)]
pub enum TaskExecutionState {
    Unknown,
    /// Being started (image check, container creation).
    Processing,
    /// Waiting for parent tasks.
    Waiting,
    Running,
    Complete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = task_execution_status)]
pub enum TaskExecutionStatus {
    Unknown,
    Failed,
    Successful,
    Cancelled,
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = task_execution_status_reason_type)]
pub enum TaskExecutionStatusReasonType {
    Unknown,
    AbnormalExit,
    SchedulerError,
    FailedPrecondition,
    Cancelled,
    Orphaned,
    /// The task took longer than its `timeout` (beyond v0).
    Timeout,
    /// Not run: a re-run of failed tasks took it over as done from the run it re-runs (beyond
    /// v0).
    Reused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = task_execution_status_reason)]
pub struct TaskExecutionStatusReason {
    pub reason: TaskExecutionStatusReasonType,
    pub description: String,
}

/// One task of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskExecution {
    pub namespace_id: String,
    pub pipeline_id: String,
    pub run_id: u64,
    pub task_id: String,
    pub created: u64,
    /// When its container started (epoch ms); 0 if it never did.
    pub started: u64,
    pub ended: u64,
    pub exit_code: Option<u8>,
    pub logs_expired: bool,
    pub logs_removed: bool,
    pub state: TaskExecutionState,
    pub status: TaskExecutionStatus,
    pub status_reason: Option<TaskExecutionStatusReason>,
    /// The task's environment before secrets are filled in.
    pub variables: Vec<Variable>,
    pub task: Task,
    /// Which try this is: 1, then 2, 3... when the task is retried (beyond v0).
    pub attempt: u32,
    /// The image a container task ran: its content-addressed id (`sha256:…`), recorded when the
    /// container started; a tag can move, this cannot (beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// A failed task kept with `keep_failed`: until when (epoch ms) its container is kept for
    /// `gofer task shell` (beyond v0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_until: Option<u64>,
}

/// What a plugin is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    Trigger,
    Task,
}

impl PluginKind {
    /// `trigger` or `task`, as the API and the WIT worlds name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Task => "task",
        }
    }
}

/// One setting a plugin understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PluginParameter {
    pub key: String,
    pub required: bool,
    pub documentation: String,
}

/// A plugin as `GET /api/plugins` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Plugin {
    /// The plugin's name (a plugin that failed to load: its file name without `.wasm`/`.toml`).
    pub name: String,
    /// Absent when the plugin failed to load.
    pub kind: Option<PluginKind>,
    pub version: String,
    pub description: String,
    pub settings: Vec<PluginParameter>,
    /// `wasm` (a WebAssembly component) or `grpc` (a process).
    pub runtime: String,
    /// `builtin` (embedded in the binary) or `folder` (the plugins folder).
    pub source: String,
    /// `loaded` or `failed`; a gRPC plugin's process may also be `restarting` or `stopped`.
    pub status: String,
    /// Why loading failed, or why a gRPC plugin's process last went down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// gRPC plugins: how many times the process was restarted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    /// gRPC plugins: the running process's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// An API token (its secret is shown once, at creation; only its SHA-256 is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// UUIDv7.
    pub id: String,
    pub created: u64,
    /// Free labels; the server sets e.g. `bootstrap_token: "true"`.
    pub metadata: BTreeMap<String, String>,
    /// When it stops working (epoch ms); 0: never.
    pub expires: u64,
    pub disabled: bool,
    /// Who it is for.
    pub user: String,
    /// Role ids.
    pub roles: Vec<String>,
}

/// What a permission allows doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Read,
    Write,
    Delete,
}

/// Actions on resources: `all`, `configs`, `deployments`, `events`, `namespaces:<regex>`,
/// `objects`, `permissions`, `pipelines:<regex>`, `extensions:<regex>` (plugins), `runs`,
/// `secrets`, `subscriptions`, `system`, `task_executions`, `tokens`. A regex must match the whole
/// id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Permission {
    pub resources: Vec<String>,
    pub actions: Vec<Action>,
}

/// A named set of permissions; tokens hold roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Role {
    pub id: String,
    pub description: String,
    pub permissions: Vec<Permission>,
    /// Built in; cannot be changed or deleted.
    pub system_role: bool,
}

/// An object's metadata; its bytes come from the object endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Object {
    /// The object's name, as used in `pipeline_object{{key}}` / `run_object{{key}}`.
    pub key: String,
    /// When it was stored (epoch ms).
    pub created: u64,
}

/// A secret's metadata; its value is only returned by an explicit get with `include_secret=true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    /// The secret's name, as used in `pipeline_secret{{key}}` / `global_secret{{key}}`.
    pub key: String,
    /// Pipeline secrets: the pipeline's namespace. Global secrets: the namespaces (regexes,
    /// matched against the whole namespace id) whose pipelines may use it.
    pub namespaces: Vec<String>,
    /// When it was stored (epoch ms).
    pub created: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = subscription_status)]
pub enum SubscriptionStatus {
    Unknown,
    Active,
    Error,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = subscription_status_reason_type)]
pub enum SubscriptionStatusReasonType {
    Unknown,
    NotFound,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = subscription_status_reason)]
pub struct SubscriptionStatusReason {
    pub reason: SubscriptionStatusReasonType,
    pub description: String,
}

/// A pipeline subscribed to a trigger plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    pub namespace_id: String,
    pub pipeline_id: String,
    /// The trigger plugin's name (v0 called plugins extensions).
    pub extension_id: String,
    /// The user's label for this subscription.
    pub subscription_id: String,
    pub settings: BTreeMap<String, String>,
    pub status: SubscriptionStatus,
    pub status_reason: Option<SubscriptionStatusReason>,
}

/// A trigger subscription declared in a pipeline config; deploying the config makes it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredTrigger {
    /// The trigger plugin, e.g. `interval`.
    pub plugin: String,
    /// The subscription's label (3-32 characters of `[a-zA-Z0-9-]`).
    pub id: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// One moment of a run's life, for debugging it (beyond v0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    /// When (epoch ms).
    pub at: u64,
    /// `queued`, `task_created`, `dispatched`, `cancel_requested`, `task_started`,
    /// `task_cancel_requested`, `log_closed`, `task_ended` (with the exit code) or `ended`.
    pub what: String,
    /// The task it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The task's attempt (1, then 2, 3... when retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What else is known: a status, an exit code, a reason.
    pub detail: String,
}

impl EventKind {
    /// The run an event is about, if any: (namespace, pipeline, run).
    pub fn run(&self) -> Option<(&str, &str, u64)> {
        match self {
            EventKind::QueuedRun {
                namespace_id,
                pipeline_id,
                run_id,
            }
            | EventKind::StartedRun {
                namespace_id,
                pipeline_id,
                run_id,
            }
            | EventKind::CompletedRun {
                namespace_id,
                pipeline_id,
                run_id,
                ..
            }
            | EventKind::StartedRunCancellation {
                namespace_id,
                pipeline_id,
                run_id,
            }
            | EventKind::StartedTaskExecution {
                namespace_id,
                pipeline_id,
                run_id,
                ..
            }
            | EventKind::CompletedTaskExecution {
                namespace_id,
                pipeline_id,
                run_id,
                ..
            }
            | EventKind::StartedTaskExecutionCancellation {
                namespace_id,
                pipeline_id,
                run_id,
                ..
            } => Some((namespace_id.as_str(), pipeline_id.as_str(), *run_id)),
            _ => None,
        }
    }
}
