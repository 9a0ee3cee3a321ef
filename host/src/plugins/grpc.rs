//! The gRPC plugin bridge: plugins that run as their own process (written in Go, or any language
//! with gRPC), launched from manifests (`NAME.toml`) in the plugins folder and seen by the rest of
//! Gofer through the same [`TriggerPlugin`] and [`TaskPlugin`] traits as WebAssembly plugins.
//!
//! Owns launching (manifest, private socket directory, handshake line, health check, `Info`),
//! supervision (stdout and stderr into the server log tagged with the plugin, restart with backoff
//! after a crash, subscriptions replayed after a restart, a clean stop, and no process outliving
//! the server even when it is killed with -9), and is the only user of tonic. Must not run SQL,
//! talk to Docker or know about runs: it answers trait calls.

// The one home of tonic (host/clippy.toml refuses its types anywhere else).
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, watch};
use tonic::transport::{Channel, Endpoint, Uri};

use super::identity::PluginIdentities;
use super::{
    ExternalOutcome, Fire, LoadedPlugin, OutsideEvent, PluginDescription, PluginError, TaskPlugin,
    TaskRequest, TriggerPlugin, WakeOutcome,
};
use crate::models::{PluginKind, PluginParameter};

/// Code generated from `proto/gofer/plugin/v1/plugin.proto` (clients only).
pub mod proto {
    tonic::include_proto!("gofer.plugin.v1");
}

use proto::task_service_client::TaskServiceClient;
use proto::trigger_service_client::TriggerServiceClient;

/// Set in a plugin's environment; plugins refuse to start without it (so running one by hand
/// explains itself instead of hanging).
pub const MAGIC_COOKIE_KEY: &str = "GOFER_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str = "d2a5f3b1-gofer-plugin-v1";
/// The unix socket the server asks the plugin to listen on (in a private directory).
pub const SOCKET_ENV: &str = "GOFER_PLUGIN_SOCKET";
/// Versions in the handshake line: `CORE|PROTOCOL|network|address|grpc`.
const CORE_PROTOCOL_VERSION: &str = "1";
const PROTOCOL_VERSION: &str = "1";
const HANDSHAKE_EXAMPLE: &str = "1|1|unix|/path/to/plugin.sock|grpc";

/// First pause before restarting a crashed plugin; doubled after each failed start.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that ran this long before exiting restarts after the shortest pause again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Pauses between reopening a trigger's stream of fires.
const FIRES_REOPEN_MIN: Duration = Duration::from_millis(100);
const FIRES_REOPEN_MAX: Duration = Duration::from_secs(5);
/// Health checks failed in a row before a process is taken for hung and restarted.
const UNHEALTHY_AFTER: u32 = 2;
/// Lines of a plugin's stderr kept to explain a failure.
const STDERR_TAIL: usize = 8;

/// A plugin manifest: how to start the plugin's process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The executable; relative paths are relative to the manifest's folder.
    pub command: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment of the process, on top of `PATH` (nothing else of the server's is passed).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self, PluginError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            PluginError::Load(format!("could not read {}: {error}", path.display()))
        })?;
        let manifest: Self = toml::from_str(&text).map_err(|error| {
            PluginError::Load(format!(
                "{} is not a valid plugin manifest: {}",
                path.display(),
                error.message()
            ))
        })?;
        if manifest.command.as_os_str().is_empty() {
            return Err(PluginError::Load(format!(
                "{}: `command` is empty; name the plugin's executable",
                path.display()
            )));
        }
        Ok(manifest)
    }

    /// The executable, resolved against the manifest's folder.
    /// The executable's path: `command` as is when absolute, else from the manifest's folder
    /// (made absolute, since the process starts in that folder).
    pub fn executable(&self, manifest_path: &Path) -> PathBuf {
        match manifest_path.parent() {
            Some(dir) if self.command.is_relative() => std::path::absolute(dir)
                .unwrap_or_else(|_| dir.to_path_buf())
                .join(&self.command),
            _ => self.command.clone(),
        }
    }
}

/// Limits of the bridge (from the `[plugins]` config section).
#[derive(Debug, Clone)]
pub struct GrpcSettings {
    /// How long a new process has to print its handshake line and answer the health check.
    pub handshake_timeout: Duration,
    /// Deadline of one trigger call (subscribe, unsubscribe, outside event).
    pub call_timeout: Duration,
    /// How long a stopping plugin gets after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// Gives each process its own API token (none: plugins get no token).
    pub identities: Option<Arc<PluginIdentities>>,
    /// Where each process's stdout and stderr lines are kept (none: the server's log only).
    pub logs: Option<super::logs::PluginLogs>,
    /// Per plugin (by name): a call deadline of its own.
    pub call_deadlines: BTreeMap<String, Duration>,
    /// How often a running process's health is checked (two failures in a row restart it).
    pub health_interval: Duration,
}

impl GrpcSettings {
    /// The operator's settings (`[plugins]`); no identities and no kept logs.
    pub fn from_config(plugins: &crate::config::PluginsSection) -> Self {
        Self {
            handshake_timeout: Duration::from_millis(plugins.handshake_timeout_ms),
            call_timeout: Duration::from_millis(plugins.trigger_call_timeout_ms),
            stop_grace: Duration::from_millis(plugins.stop_grace_ms),
            identities: None,
            logs: None,
            call_deadlines: plugins.call_deadlines(),
            health_interval: Duration::from_millis(plugins.health_interval_ms),
        }
    }

    /// The deadline of a plugin's calls: its own if the operator set one, else the default.
    pub fn deadline_of(&self, plugin: &str) -> Duration {
        self.call_deadlines
            .get(plugin)
            .copied()
            .unwrap_or(self.call_timeout)
    }
}

/// What `GET /api/plugins` shows about a plugin's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    /// `loaded` (running), `restarting` or `stopped`.
    pub state: &'static str,
    /// Why the last process ended or the last start failed.
    pub error: Option<String>,
    pub restarts: u32,
    pub pid: Option<u32>,
}

/// Starts the plugin of a manifest: launches it, checks it and asks what it is. The process is
/// supervised from then on; dropping every handle to the plugin stops it.
pub async fn load(
    manifest_path: &Path,
    settings: GrpcSettings,
) -> Result<(PluginDescription, LoadedPlugin, Arc<Supervisor>), PluginError> {
    let manifest = Manifest::read(manifest_path)?;
    let label = manifest_path
        .file_stem()
        .map(|stem| stem.to_string_lossy().to_string())
        .unwrap_or_default();
    let launcher = Launcher {
        label: label.clone(),
        executable: manifest.executable(manifest_path),
        manifest,
        settings: settings.clone(),
    };
    let process = launcher.start().await?;
    let description = match describe(&process.channel, settings.handshake_timeout).await {
        Ok(description) => description,
        Err(error) => {
            process.terminate(settings.stop_grace).await;
            return Err(error);
        }
    };
    let (stop, _) = watch::channel(false);
    let supervisor = Arc::new(Supervisor {
        name: description.name.clone(),
        kind: description.kind,
        token_id: Mutex::new(None),
        launcher,
        status: watch::channel(ProcessStatus {
            state: "loaded",
            error: None,
            restarts: 0,
            pid: Some(process.pid),
        })
        .0,
        channel: watch::channel(None).0,
        stop,
        stopped: Notify::new(),
        on_start: OnceLock::new(),
    });
    let loaded = match description.kind {
        PluginKind::Trigger => {
            let trigger = GrpcTrigger::new(Arc::clone(&supervisor));
            LoadedPlugin::Trigger(Arc::new(trigger))
        }
        PluginKind::Task => LoadedPlugin::Task(Arc::new(GrpcTask {
            supervisor: Arc::clone(&supervisor),
        })),
    };
    supervisor.started(&process).await;
    tokio::spawn(Arc::clone(&supervisor).supervise(process));
    Ok((description, loaded, supervisor))
}

/// Starts a manifest's process as loading it would, asks what it is, and stops it: for
/// `gofer plugin check`, without a server.
pub async fn describe_manifest(
    manifest_path: &Path,
    settings: GrpcSettings,
) -> Result<PluginDescription, PluginError> {
    let manifest = Manifest::read(manifest_path)?;
    let launcher = Launcher {
        label: "check".into(),
        executable: manifest.executable(manifest_path),
        manifest,
        settings: settings.clone(),
    };
    let process = launcher.start().await?;
    let described = describe(&process.channel, settings.handshake_timeout).await;
    process.terminate(settings.stop_grace).await;
    described
}

/// Calls `Info` and checks the answer.
async fn describe(channel: &Channel, timeout: Duration) -> Result<PluginDescription, PluginError> {
    // Both services have an `Info`; a trigger answers on one, a task on the other.
    let trigger = tokio::time::timeout(
        timeout,
        TriggerServiceClient::new(channel.clone()).info(proto::TriggerServiceInfoRequest {}),
    )
    .await;
    let info =
        match trigger {
            Ok(Ok(response)) => response.into_inner().info,
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => tokio::time::timeout(
                timeout,
                TaskServiceClient::new(channel.clone()).info(proto::TaskServiceInfoRequest {}),
            )
            .await
            .map_err(|_| PluginError::Load(format!("Info did not answer within {timeout:?}")))?
            .map_err(|status| {
                PluginError::Load(format!(
                    "the plugin serves neither gofer.plugin.v1.TriggerService nor TaskService: {}",
                    status.message()
                ))
            })?
            .into_inner()
            .info,
            Ok(Err(status)) => {
                return Err(PluginError::Load(format!(
                    "Info failed: {}",
                    status.message()
                )));
            }
            Err(_) => {
                return Err(PluginError::Load(format!(
                    "Info did not answer within {timeout:?}"
                )));
            }
        };
    let info =
        info.ok_or_else(|| PluginError::Load("Info answered without a description".into()))?;
    let kind = match proto::PluginKind::try_from(info.kind) {
        Ok(proto::PluginKind::Trigger) => PluginKind::Trigger,
        Ok(proto::PluginKind::Task) => PluginKind::Task,
        _ => {
            return Err(PluginError::Load(format!(
                "Info says kind {}; a plugin is a trigger or a task",
                info.kind
            )));
        }
    };
    crate::pipeline_config::validate_identifier("plugin name", &info.name)
        .map_err(|error| PluginError::Load(format!("Info: {error}")))?;
    Ok(PluginDescription {
        name: info.name,
        kind,
        version: info.version,
        description: info.description,
        settings: info
            .settings
            .into_iter()
            .map(|parameter| PluginParameter {
                key: parameter.key,
                required: parameter.required,
                documentation: parameter.documentation,
            })
            .collect(),
    })
}

/// What a trigger does with each new process before calls reach it.
type StartHook = Arc<dyn Fn(Channel) -> BoxFuture<'static, ()> + Send + Sync>;

/// Keeps one plugin's process running: restarts it after a crash, stops it on request.
pub struct Supervisor {
    name: String,
    kind: PluginKind,
    /// The API token of the running process.
    token_id: Mutex<Option<String>>,
    launcher: Launcher,
    status: watch::Sender<ProcessStatus>,
    /// The connection to the running process; `None` while it is down.
    channel: watch::Sender<Option<Channel>>,
    stop: watch::Sender<bool>,
    stopped: Notify,
    on_start: OnceLock<StartHook>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Supervisor {
    pub fn status(&self) -> ProcessStatus {
        self.status.borrow().clone()
    }

    /// Stops the process (SIGTERM, then SIGKILL after the grace period) and waits until it is gone.
    pub async fn stop(&self) {
        let stopped = self.stopped.notified();
        let already = *self.stop.borrow();
        self.stop.send_replace(true);
        if !already || self.status.borrow().state != "stopped" {
            let _ = tokio::time::timeout(self.launcher.settings.stop_grace * 2, stopped).await;
        }
    }

    /// Makes the new process's token valid, runs the start hook, then lets calls reach it.
    async fn started(&self, process: &Process) {
        if let Some(identities) = &self.launcher.settings.identities {
            match identities
                .grant(&self.name, self.kind, &process.token)
                .await
            {
                Ok(id) => *self.token_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id),
                Err(error) => {
                    tracing::warn!(plugin = %self.name, %error, "could not store the plugin's API token; its API calls will be refused");
                }
            }
        }
        if let Some(hook) = self.on_start.get() {
            hook(process.channel.clone()).await;
        }
        self.channel.send_replace(Some(process.channel.clone()));
    }

    /// The connection to the running process, waiting up to `wait` for a restart.
    async fn channel(&self, wait: Duration) -> Result<Channel, PluginError> {
        let mut receiver = self.channel.subscribe();
        let ready = tokio::time::timeout(wait, receiver.wait_for(Option::is_some)).await;
        match ready {
            Ok(Ok(channel)) => Ok(channel.clone().expect("waited for Some")),
            _ => {
                let status = self.status();
                Err(PluginError::Crashed(format!(
                    "the plugin's process is not running ({}){}",
                    status.state,
                    status
                        .error
                        .map(|error| format!(": {error}"))
                        .unwrap_or_default()
                )))
            }
        }
    }

    async fn supervise(self: Arc<Self>, mut process: Process) {
        let mut stop = self.stop.subscribe();
        let mut backoff = RESTART_BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let health = unhealthy(
                process.channel.clone(),
                self.launcher.settings.health_interval,
                self.launcher.settings.deadline_of(&self.name),
            );
            let exit = tokio::select! {
                status = process.spawned.child.wait() => Some(Ok(status)),
                hung = health => Some(Err(hung)),
                _ = stop.wait_for(|stop| *stop) => None,
            };
            self.channel.send_replace(None);
            let Some(exit) = exit else {
                process.terminate(self.launcher.settings.stop_grace).await;
                break;
            };
            let mut reason = match exit {
                Ok(exit) => format!(
                    "the process exited ({}){}",
                    exit.map(|status| status.to_string())
                        .unwrap_or_else(|error| error.to_string()),
                    process.spawned.stderr_tail().await
                ),
                Err(hung) => format!("the process stopped answering ({hung}); it was killed"),
            };
            process.terminate(self.launcher.settings.stop_grace).await;
            if started.elapsed() >= STABLE_AFTER {
                backoff = RESTART_BACKOFF_MIN;
            }
            let next = loop {
                self.status.send_modify(|status| {
                    status.state = "restarting";
                    status.error = Some(reason.clone());
                    status.restarts += 1;
                    status.pid = None;
                });
                crate::metrics::metrics()
                    .grpc_plugin_restarts
                    .get_or_create(&vec![("plugin", self.name.clone())])
                    .inc();
                tracing::warn!(plugin = %self.name, %reason, "plugin process down; restarting in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|stop| *stop) => break None,
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                match self.launcher.start().await {
                    Ok(process) => break Some(process),
                    Err(error) => reason = error.to_string(),
                }
            };
            let Some(next) = next else { break };
            process = next;
            self.started(&process).await;
            tracing::info!(plugin = %self.name, pid = process.pid, "plugin process restarted");
            self.status.send_modify(|status| {
                status.state = "loaded";
                status.pid = Some(process.pid);
            });
        }
        self.status.send_modify(|status| {
            status.state = "stopped";
            status.pid = None;
        });
        let token_id = self
            .token_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let (Some(identities), Some(token_id)) = (&self.launcher.settings.identities, token_id) {
            identities.revoke(&token_id).await;
        }
        self.stopped.notify_waiters();
    }
}

/// How to start one plugin's process.
struct Launcher {
    label: String,
    executable: PathBuf,
    manifest: Manifest,
    settings: GrpcSettings,
}

/// A started plugin process (handshaken or not).
struct Spawned {
    child: Child,
    pid: u32,
    /// Held open: its end tells a plugin that the server is gone.
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_reader: tokio::task::JoinHandle<()>,
}

impl Spawned {
    /// The last lines the process wrote to stderr, to explain a failure (waits briefly for them).
    async fn stderr_tail(&mut self) -> String {
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.stderr_reader).await;
        let lines = self
            .stderr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.is_empty() {
            String::new()
        } else {
            format!(
                "; its stderr ended with: {}",
                lines.iter().cloned().collect::<Vec<_>>().join(" | ")
            )
        }
    }

    /// SIGTERM to the process group (and closed stdin), SIGKILL after `grace`; removes its
    /// socket directory.
    async fn terminate(mut self, grace: Duration) {
        drop(self.stdin.take());
        signal_group(self.pid, libc::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pid = self.pid,
                "plugin process ignored SIGTERM for {grace:?}; killing it"
            );
        }
        self.kill().await;
    }

    /// SIGKILL to the whole process group; removes the socket directory.
    async fn kill(mut self) {
        signal_group(self.pid, libc::SIGKILL);
        let _ = self.child.wait().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running, handshaken plugin process.
struct Process {
    spawned: Spawned,
    pid: u32,
    channel: Channel,
    /// The secret of its API token (in its environment; valid once granted).
    token: String,
}

impl Process {
    async fn terminate(self, grace: Duration) {
        self.spawned.terminate(grace).await;
    }
}

/// Where the handshake says the plugin listens.
#[derive(Debug, PartialEq, Eq)]
enum Address {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix socket {}", path.display()),
            Self::Tcp(address) => write!(f, "tcp {address}"),
        }
    }
}

impl Launcher {
    async fn start(&self) -> Result<Process, PluginError> {
        let dir = private_dir(&self.label)?;
        let socket = dir.join("plugin.sock");
        let token = crate::auth::new_secret();
        let mut command = Command::new(&self.executable);
        command
            .args(&self.manifest.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&self.manifest.env)
            .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
            .env(SOCKET_ENV, &socket)
            // go-plugin plugins put their socket in TMPDIR.
            .env("TMPDIR", &dir)
            .envs(
                self.settings
                    .identities
                    .iter()
                    .flat_map(|identities| identities.environment(&token)),
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(folder) = self.executable.parent().filter(|dir| dir.is_dir()) {
            command.current_dir(folder);
        }
        die_with_server(&mut command);
        let mut child = command.spawn().map_err(|error| {
            let _ = std::fs::remove_dir_all(&dir);
            PluginError::Load(format!(
                "could not start {}: {error}",
                self.executable.display()
            ))
        })?;
        let pid = child.id().unwrap_or_default();
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_reader = tokio::spawn(log_lines(
            self.label.clone(),
            "stderr",
            child.stderr.take().map(BufReader::new),
            Some(Arc::clone(&stderr)),
            self.settings.logs.clone(),
        ));
        let mut stdout = child.stdout.take().map(BufReader::new);
        let mut spawned = Spawned {
            stdin: child.stdin.take(),
            child,
            pid,
            dir,
            stderr,
            stderr_reader,
        };
        match self.handshake(&mut spawned.child, stdout.as_mut()).await {
            Ok(channel) => {
                tokio::spawn(log_lines(
                    self.label.clone(),
                    "stdout",
                    stdout,
                    None,
                    self.settings.logs.clone(),
                ));
                Ok(Process {
                    spawned,
                    pid,
                    channel,
                    token,
                })
            }
            Err(reason) => {
                let tail = spawned.stderr_tail().await;
                spawned.kill().await;
                Err(PluginError::Load(format!("{reason}{tail}")))
            }
        }
    }

    /// Reads the handshake line, connects and checks health.
    async fn handshake(
        &self,
        child: &mut Child,
        stdout: Option<&mut BufReader<tokio::process::ChildStdout>>,
    ) -> Result<Channel, String> {
        let timeout = self.settings.handshake_timeout;
        let mut line = String::new();
        let Some(stdout) = stdout else {
            return Err("its stdout is not readable".into());
        };
        match tokio::time::timeout(timeout, stdout.read_line(&mut line)).await {
            Err(_) => {
                return Err(format!(
                    "it did not print a handshake line (like \"{HANDSHAKE_EXAMPLE}\") within {timeout:?}"
                ));
            }
            Ok(Err(error)) => return Err(format!("could not read its handshake: {error}")),
            Ok(Ok(0)) => {
                let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await
                {
                    Ok(Ok(status)) => status.to_string(),
                    _ => "it closed its stdout".into(),
                };
                return Err(format!(
                    "it exited ({status}) before printing its handshake line"
                ));
            }
            Ok(Ok(_)) => {}
        }
        let address = parse_handshake(&line)?;
        let channel = tokio::time::timeout(timeout, connect(&address))
            .await
            .map_err(|_| format!("could not connect to its {address} within {timeout:?}"))?
            .map_err(|error| format!("could not connect to its {address}: {error}"))?;
        let health = tokio::time::timeout(
            timeout,
            tonic_health::pb::health_client::HealthClient::new(channel.clone()).check(
                tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                },
            ),
        )
        .await
        .map_err(|_| format!("its health check did not answer within {timeout:?}"))?
        .map_err(|status| format!("its health check failed: {}", status.message()))?
        .into_inner();
        if health.status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            return Err(format!(
                "its health check says it is not serving (status {})",
                health.status
            ));
        }
        Ok(channel)
    }
}

/// Checks a running process's health every `interval`; returns (with why) once it failed
/// [`UNHEALTHY_AFTER`] times in a row: no answer within `deadline`, an error, or not serving.
async fn unhealthy(channel: Channel, interval: Duration, deadline: Duration) -> String {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut failed = 0;
    loop {
        tokio::time::sleep(interval).await;
        let check = client.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        });
        let problem = match tokio::time::timeout(deadline, check).await {
            Err(_) => Some(format!(
                "its health check did not answer within {deadline:?}"
            )),
            Ok(Err(status)) => Some(format!("its health check failed: {}", status.message())),
            Ok(Ok(response))
                if response.get_ref().status
                    != tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
            {
                Some("its health check says it is not serving".to_string())
            }
            Ok(Ok(_)) => None,
        };
        match problem {
            None => failed = 0,
            Some(problem) => {
                failed += 1;
                if failed >= UNHEALTHY_AFTER {
                    return problem;
                }
            }
        }
    }
}

/// Parses `CORE|PROTOCOL|NETWORK|ADDRESS|grpc`, also go-plugin's form with a sixth (empty)
/// certificate field.
fn parse_handshake(line: &str) -> Result<Address, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let fields: Vec<&str> = line.split('|').collect();
    if !(fields.len() == 5 || fields.len() == 6) {
        let shown: String = line.chars().take(120).collect();
        return Err(format!(
            "it printed {shown:?} instead of a handshake line like \"{HANDSHAKE_EXAMPLE}\""
        ));
    }
    if fields[0] != CORE_PROTOCOL_VERSION {
        return Err(format!(
            "its handshake speaks core protocol version {:?}; this server speaks {CORE_PROTOCOL_VERSION}",
            fields[0]
        ));
    }
    if fields[1] != PROTOCOL_VERSION {
        return Err(format!(
            "its handshake speaks plugin protocol version {:?}; this server speaks {PROTOCOL_VERSION} (gofer.plugin.v1)",
            fields[1]
        ));
    }
    if fields[4] != "grpc" {
        return Err(format!(
            "its handshake asks for protocol {:?}; only \"grpc\" is supported",
            fields[4]
        ));
    }
    if fields
        .get(5)
        .is_some_and(|certificate| !certificate.is_empty())
    {
        return Err(
            "its handshake asks for automatic mutual TLS, which Gofer does not use (the socket is private)"
                .into(),
        );
    }
    match fields[2] {
        "unix" if !fields[3].is_empty() => Ok(Address::Unix(PathBuf::from(fields[3]))),
        "tcp" if !fields[3].is_empty() => Ok(Address::Tcp(fields[3].to_string())),
        network => Err(format!(
            "its handshake names network {network:?} and address {:?}; use unix (or tcp) and an address",
            fields[3]
        )),
    }
}

async fn connect(address: &Address) -> Result<Channel, tonic::transport::Error> {
    match address {
        Address::Unix(path) => {
            let path = path.clone();
            // The URI is a placeholder; the connector opens the socket.
            Endpoint::from_static("http://[::]:50051")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
        }
        Address::Tcp(address) => {
            Endpoint::from_shared(format!("http://{address}"))?
                .connect()
                .await
        }
    }
}

/// Writes a plugin's output lines to the server log, keeping the last ones in `tail`.
async fn log_lines<R: tokio::io::AsyncRead + Unpin>(
    plugin: String,
    stream: &'static str,
    reader: Option<BufReader<R>>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    logs: Option<super::logs::PluginLogs>,
) {
    let Some(reader) = reader else { return };
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(plugin = %plugin, stream, "{line}");
        if let Some(logs) = &logs {
            logs.append(&plugin, stream, &line).await;
        }
        if let Some(tail) = &tail {
            let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// Per-server folder of the plugins' private socket directories.
fn sockets_root() -> PathBuf {
    std::env::temp_dir().join(format!("gofer-plugins-{}", std::process::id()))
}

/// A new directory only this user can enter, for one process's socket.
fn private_dir(label: &str) -> Result<PathBuf, PluginError> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = sockets_root();
    let dir = root.join(format!("{label}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|error| {
            PluginError::Load(format!(
                "could not create the socket directory {}: {error}",
                dir.display()
            ))
        })?;
    Ok(dir)
}

/// Removes socket directories left by servers that are gone (killed with -9).
pub fn remove_stale_socket_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("gofer-plugins-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes the kernel kill the plugin when the server dies, however it dies.
///
/// `PR_SET_PDEATHSIG` fires when the thread that forked exits; plugins are started from tokio's
/// worker threads, which live as long as the server. Plugins built with the Go SDK also exit when
/// their stdin (held by the server) closes.
#[allow(unsafe_code)]
fn die_with_server(command: &mut Command) {
    let server = std::process::id();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid, _exit); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The server may have died before prctl took effect.
            if libc::getppid() as u32 != server {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Sends a signal to a plugin's process group (the plugin and anything it started).
#[allow(unsafe_code)]
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions; a group that is gone gives ESRCH.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// A trigger plugin in its own process.
pub struct GrpcTrigger {
    supervisor: Arc<Supervisor>,
    shared: Arc<TriggerShared>,
}

/// What a trigger's start hook and its calls share.
struct TriggerShared {
    name: String,
    call_timeout: Duration,
    /// Live subscriptions, replayed into every new process.
    subscriptions: Mutex<BTreeMap<String, Vec<(String, String)>>>,
    /// Fires streamed by the plugin, handed over at the next wake.
    pending: Mutex<Vec<Fire>>,
    pushed: Arc<Notify>,
    /// Counts processes started: a stream follower stops when a newer process has its own.
    generation: AtomicU64,
}

impl GrpcTrigger {
    fn new(supervisor: Arc<Supervisor>) -> Self {
        let shared = Arc::new(TriggerShared {
            name: supervisor.name.clone(),
            call_timeout: supervisor.launcher.settings.deadline_of(&supervisor.name),
            subscriptions: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(Vec::new()),
            pushed: Arc::new(Notify::new()),
            generation: AtomicU64::new(0),
        });
        let hook_shared = Arc::clone(&shared);
        let hook: StartHook = Arc::new(move |channel| {
            let shared = Arc::clone(&hook_shared);
            Box::pin(async move { shared.start(channel).await })
        });
        let _ = supervisor.on_start.set(hook);
        Self { supervisor, shared }
    }

    async fn client(&self) -> Result<TriggerServiceClient<Channel>, PluginError> {
        Ok(TriggerServiceClient::new(
            self.supervisor.channel(self.shared.call_timeout).await?,
        ))
    }
}

impl TriggerShared {
    /// On a new process: replays the subscriptions and follows its stream of fires.
    async fn start(self: Arc<Self>, channel: Channel) {
        let mut client = TriggerServiceClient::new(channel);
        let subscriptions = self
            .subscriptions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for (handle, settings) in subscriptions {
            let request = subscribe_request(&handle, &settings);
            if let Err(status) = client.subscribe(request).await {
                tracing::warn!(plugin = %self.name, subscription = %handle, error = %status.message(), "could not renew a subscription in the restarted plugin");
            }
        }
        // Follow the stream of fires in the background, opening it again (with a growing pause)
        // whenever it ends while this process lives; a newer process's start ends this loop.
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(async move {
            let mut pause = FIRES_REOPEN_MIN;
            while self.generation.load(Ordering::SeqCst) == generation {
                match client.fires(proto::FiresRequest {}).await {
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        while let Ok(Some(response)) = stream.message().await {
                            pause = FIRES_REOPEN_MIN;
                            let Some(fire) = response.fire else { continue };
                            self.pending
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .push(proto_fire(fire));
                            self.pushed.notify_one();
                        }
                        tracing::info!(plugin = %self.name, "the plugin's stream of fires ended; opening it again");
                    }
                    Err(status) => {
                        tracing::warn!(plugin = %self.name, error = %status.message(), "could not open the plugin's stream of fires; trying again in {pause:?}");
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(FIRES_REOPEN_MAX);
            }
        });
    }
}

/// A fire as a gRPC plugin sent it.
fn proto_fire(fire: proto::Fire) -> super::Fire {
    let key = Some(fire.idempotency_key).filter(|key| !key.is_empty());
    super::fire(fire.subscription, fire.variables.into_iter().collect(), key)
}

fn subscribe_request(handle: &str, settings: &[(String, String)]) -> proto::SubscribeRequest {
    proto::SubscribeRequest {
        subscription: handle.to_string(),
        settings: settings.iter().cloned().collect(),
    }
}

/// Turns a failed call into the plugin's refusal or a crash.
fn call_error(status: tonic::Status) -> PluginError {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
            PluginError::Refused(status.message().to_string())
        }
        tonic::Code::DeadlineExceeded => PluginError::Deadline,
        _ => PluginError::Crashed(format!("{}: {}", status.code(), status.message())),
    }
}

#[async_trait::async_trait]
impl TriggerPlugin for GrpcTrigger {
    async fn subscribe(
        &self,
        handle: &str,
        settings: &[(String, String)],
        _now: u64,
    ) -> Result<Option<u64>, PluginError> {
        let mut client = self.client().await?;
        let call = client.subscribe(subscribe_request(handle, settings));
        tokio::time::timeout(self.shared.call_timeout, call)
            .await
            .map_err(|_| PluginError::Deadline)?
            .map_err(call_error)?;
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(handle.to_string(), settings.to_vec());
        Ok(None)
    }

    async fn unsubscribe(&self, handle: &str) -> Result<(), PluginError> {
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(handle);
        let mut client = self.client().await?;
        let call = client.unsubscribe(proto::UnsubscribeRequest {
            subscription: handle.to_string(),
        });
        tokio::time::timeout(self.shared.call_timeout, call)
            .await
            .map_err(|_| PluginError::Deadline)?
            .map_err(call_error)?;
        Ok(())
    }

    async fn wake(&self, _now: u64) -> Result<WakeOutcome, PluginError> {
        let fires = std::mem::take(
            &mut *self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        Ok(WakeOutcome {
            fires,
            next_wake: None,
        })
    }

    async fn external_event(&self, event: OutsideEvent) -> Result<ExternalOutcome, PluginError> {
        let mut client = self.client().await?;
        let call = client.external_event(proto::ExternalEventRequest {
            headers: event
                .headers
                .into_iter()
                .map(|(name, value)| proto::Header { name, value })
                .collect(),
            body: event.body,
            method: event.method,
            path: event.path,
            query: event.query,
            remote_address: event.remote_address,
        });
        let response = tokio::time::timeout(self.shared.call_timeout, call)
            .await
            .map_err(|_| PluginError::Deadline)?
            .map_err(call_error)?
            .into_inner();
        Ok(ExternalOutcome {
            status: u16::try_from(response.status)
                .ok()
                .filter(|status| (100..=599).contains(status))
                .unwrap_or(500),
            message: response.message,
            fires: response.fires.into_iter().map(proto_fire).collect(),
        })
    }

    fn pushed_fires(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.shared.pushed))
    }
}

impl Drop for GrpcTrigger {
    fn drop(&mut self) {
        self.supervisor.stop.send_replace(true);
    }
}

/// A shared-task plugin in its own process.
pub struct GrpcTask {
    supervisor: Arc<Supervisor>,
}

impl Drop for GrpcTask {
    fn drop(&mut self) {
        self.supervisor.stop.send_replace(true);
    }
}

#[async_trait::async_trait]
impl TaskPlugin for GrpcTask {
    async fn run(&self, request: TaskRequest) -> Result<u8, PluginError> {
        let deadline = tokio::time::Instant::now() + request.deadline;
        let output = request.output;
        tokio::time::timeout_at(deadline, async {
            let channel = self.supervisor.channel(request.deadline).await?;
            let mut stream = TaskServiceClient::new(channel)
                .run(proto::RunRequest {
                    settings: request.settings.into_iter().collect(),
                    env: request.env.into_iter().collect(),
                })
                .await
                .map_err(call_error)?
                .into_inner();
            loop {
                let message = stream.message().await.map_err(call_error)?;
                match message.and_then(|message| message.event) {
                    Some(proto::run_response::Event::Output(chunk)) => {
                        // Waits while the log writer catches up (backpressure to the plugin).
                        let _ = output.send(chunk.data).await;
                    }
                    Some(proto::run_response::Event::Exit(exit)) if !exit.error.is_empty() => {
                        return Err(PluginError::Refused(exit.error));
                    }
                    Some(proto::run_response::Event::Exit(exit)) => {
                        return u8::try_from(exit.code).map_err(|_| {
                            PluginError::Refused(format!(
                                "the plugin ended with exit code {}, which is out of range (0 to 255)",
                                exit.code
                            ))
                        });
                    }
                    None => {
                        return Err(PluginError::Crashed(
                            "the plugin ended the run without an exit status".into(),
                        ));
                    }
                }
            }
        })
        .await
        .unwrap_or(Err(PluginError::Deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_lines() {
        assert_eq!(
            parse_handshake("1|1|unix|/tmp/x/plugin.sock|grpc\n"),
            Ok(Address::Unix("/tmp/x/plugin.sock".into()))
        );
        // go-plugin's six-field form with an empty certificate.
        assert_eq!(
            parse_handshake("1|1|unix|/tmp/plugin123|grpc|\n"),
            Ok(Address::Unix("/tmp/plugin123".into()))
        );
        assert_eq!(
            parse_handshake("1|1|tcp|127.0.0.1:1234|grpc"),
            Ok(Address::Tcp("127.0.0.1:1234".into()))
        );
        let garbage = parse_handshake("hello world\n").unwrap_err();
        assert!(
            garbage.contains("\"hello world\" instead of a handshake line"),
            "{garbage}"
        );
        let version = parse_handshake("1|2|unix|/s|grpc").unwrap_err();
        assert!(
            version.contains("plugin protocol version \"2\""),
            "{version}"
        );
        let netrpc = parse_handshake("1|1|unix|/s|netrpc").unwrap_err();
        assert!(netrpc.contains("\"netrpc\""), "{netrpc}");
        let mtls = parse_handshake("1|1|unix|/s|grpc|MIIBcert").unwrap_err();
        assert!(mtls.contains("mutual TLS"), "{mtls}");
        let empty = parse_handshake("1|1|unix||grpc").unwrap_err();
        assert!(empty.contains("an address"), "{empty}");
    }

    #[test]
    fn manifests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ticker.toml");
        std::fs::write(
            &path,
            "command = \"bin/ticker\"\nargs = [\"-v\"]\n[env]\nA = \"1\"\n",
        )
        .unwrap();
        let manifest = Manifest::read(&path).unwrap();
        assert_eq!(manifest.executable(&path), dir.path().join("bin/ticker"));
        assert_eq!(manifest.args, ["-v"]);
        std::fs::write(&path, "comand = \"x\"\n").unwrap();
        let error = Manifest::read(&path).unwrap_err().to_string();
        assert!(error.contains("unknown field `comand`"), "{error}");
        std::fs::write(&path, "command = \"/usr/bin/x\"\n").unwrap();
        assert_eq!(
            Manifest::read(&path).unwrap().executable(&path),
            PathBuf::from("/usr/bin/x")
        );
    }
}
