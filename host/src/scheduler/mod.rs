//! The scheduler: where container tasks run.
//!
//! Owns the [`Scheduler`] trait (start, wait, logs, stop, remove, find by label) and its Docker
//! implementation in [`docker`], the only user of bollard. Must not know about runs, DAGs or
//! storage: it starts and watches containers it is told to.

pub mod docker;
pub mod swarm;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::stream::BoxStream;

/// Label every Gofer container carries, so it can be found again after a restart.
pub const MANAGED_LABEL: &str = "dev.gofer.managed";

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Unique container name.
    pub name: String,
    pub image: String,
    /// Credentials for pulling `image`.
    pub registry_auth: Option<(String, String)>,
    /// Pull even if the image is present locally.
    pub always_pull: bool,
    pub env: Vec<(String, String)>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes (and no swap beyond it).
    pub memory_bytes: Option<i64>,
    /// A named volume to mount (created on first use), and where.
    pub volume: Option<(String, String)>,
    /// Placement constraints for a cluster engine (`node.labels.gpu == true`); a single-host
    /// engine runs the container on its host.
    pub placement: Vec<String>,
}

/// What a container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, running, paused or restarting.
    Running,
    Exited {
        exit_code: i64,
    },
    /// No container by that name.
    Missing,
}

/// Why the scheduler could not do something; each message says what to check.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("the container engine cannot be reached at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("image '{image}' is not available: {detail}")]
    ImageUnavailable { image: String, detail: String },
    #[error("container '{0}' does not exist")]
    NotFound(String),
    #[error("the Docker engine refused: {0}")]
    Engine(String),
}

/// A container's output, as it is written (stdout and stderr interleaved).
pub type LogStream = BoxStream<'static, Result<bytes::Bytes, SchedulerError>>;

/// An interactive command running inside a container.
pub struct ExecSession {
    /// What the command prints.
    pub output: LogStream,
    /// The command's standard input.
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// The command's exit code, once it has exited, when the engine tells.
    pub exit_code: Option<tokio::sync::oneshot::Receiver<i64>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecSession")
    }
}

/// Runs containers. Implementations must be safe to call concurrently.
#[async_trait::async_trait]
pub trait Scheduler: Send + Sync + 'static {
    /// Makes sure the image is there (pulling when missing or when `always_pull`), then creates
    /// and starts the container.
    async fn start(&self, spec: &ContainerSpec) -> Result<(), SchedulerError>;

    /// Waits until the container exits and returns its exit code.
    async fn wait(&self, name: &str) -> Result<i64, SchedulerError>;

    /// What the container is doing now.
    async fn state(&self, name: &str) -> Result<ContainerState, SchedulerError>;

    /// Removes a named volume (missing is fine).
    async fn remove_volume(&self, _name: &str) -> Result<(), SchedulerError> {
        Ok(())
    }

    /// Whether the (exited) container was killed for using more than its memory limit.
    async fn out_of_memory(&self, _name: &str) -> bool {
        false
    }

    /// The container's output from its start; with `follow`, until it exits.
    fn logs(&self, name: &str, follow: bool) -> LogStream;

    /// Asks the container to stop (SIGTERM), killing it after `grace`.
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), SchedulerError>;

    /// Removes the container (it must have exited, or is killed).
    async fn remove(&self, name: &str) -> Result<(), SchedulerError>;

    /// Runs `command` inside the running container, attached, with a TTY.
    async fn exec(&self, name: &str, command: Vec<String>) -> Result<ExecSession, SchedulerError>;

    /// Runs `command`, attached (no TTY), in a new container holding the filesystem a stopped
    /// container left (Docker: committed once to a temporary image); the new container is
    /// removed when the command exits, and the stopped one is left as it was.
    async fn shell_in_copy(
        &self,
        name: &str,
        command: Vec<String>,
    ) -> Result<ExecSession, SchedulerError>;

    /// Removes a kept container and whatever [`Scheduler::shell_in_copy`] made of it.
    async fn discard_kept(&self, name: &str) -> Result<(), SchedulerError>;

    /// Names of the containers carrying all of `labels`.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, SchedulerError>;

    /// The address at which containers reach the machine this server runs on, when the engine
    /// can tell (Docker: its default bridge's gateway). `None` when it cannot.
    async fn host_address(&self) -> Result<Option<std::net::IpAddr>, SchedulerError>;

    /// Whether the engine answers (for readiness).
    async fn ping(&self) -> Result<(), SchedulerError>;

    /// The content-addressed id of the image a container runs (`sha256:…`), if the engine says.
    async fn image_digest(&self, name: &str) -> Result<Option<String>, SchedulerError>;
}
