//! Plugins: triggers and shared tasks, seen by the rest of Gofer only through the
//! [`TriggerPlugin`] and [`TaskPlugin`] traits.
//!
//! Owns the plugin registry (built-ins embedded in the binary, overridable by the plugins folder:
//! `.wasm` components and `.toml` manifests of gRPC plugin processes; the folder is watched so that
//! adding, replacing or removing a file, or rebuilding a manifest's executable, takes effect within
//! about a second) and the trigger manager (`triggers.rs`: subscriptions, wake-ups, fires).
//! The WebAssembly runtime lives in `wasm.rs`, the only user of wasmtime; the gRPC bridge in
//! `grpc.rs`, the only user of tonic. Must not run SQL or talk to Docker.

pub mod check;
pub mod grpc;
pub mod identity;
pub mod logs;
mod measured;
pub mod wasm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::models::{Plugin, PluginKind, PluginParameter};

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// How often the plugins folder is looked at.
const FOLDER_POLL: Duration = Duration::from_millis(500);

/// Why a plugin could not be loaded or a call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    #[error("{0}")]
    Load(String),
    /// The plugin's own answer (e.g. invalid settings).
    #[error("{0}")]
    Refused(String),
    #[error("the plugin did not finish before its deadline")]
    Deadline,
    #[error("the plugin went over its memory limit of {0} MiB")]
    MemoryLimit(usize),
    #[error("the plugin crashed: {0}")]
    Crashed(String),
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    pub name: String,
    pub kind: PluginKind,
    pub version: String,
    pub description: String,
    pub settings: Vec<PluginParameter>,
}

use crate::domain::SubscriptionHandle;
pub use crate::domain::{Fire, FireOutcome};

/// A fire as a plugin sent it: the handle is looked up later, never trusted.
fn fire(handle: String, variables: Vec<(String, String)>, idempotency_key: Option<String>) -> Fire {
    Fire {
        handle: SubscriptionHandle::from_stored(handle),
        variables,
        idempotency_key,
    }
}

/// An HTTP request to `/api/external/{plugin}[/{path}]`, as a trigger gets it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutsideEvent {
    pub method: String,
    /// What follows `/api/external/{plugin}`: `""` or `/...`.
    pub path: String,
    /// The query string without `?`.
    pub query: String,
    /// The sender's `ip:port`.
    pub remote_address: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the host offers plugins beyond their sandbox, from the orchestration side (set once the
/// trigger manager exists): firing at once, and the operator's configuration of a plugin.
#[async_trait::async_trait]
pub trait HostServices: Send + Sync {
    /// Commits a plugin's fire and starts its run; what became of it.
    async fn fire(&self, plugin: &str, fire: Fire) -> FireOutcome;
    /// The operator's configuration of a plugin (`[plugins.config.<name>]`), references filled
    /// in; an error says which one failed.
    async fn config(&self, plugin: &str) -> Result<Vec<(String, String)>, String>;
}

/// What a trigger returns when woken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeOutcome {
    pub fires: Vec<Fire>,
    pub next_wake: Option<u64>,
}

/// What a trigger answers to an outside event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalOutcome {
    pub status: u16,
    pub message: String,
    pub fires: Vec<Fire>,
}

/// A trigger, whatever runs it (WebAssembly or a gRPC process).
#[async_trait::async_trait]
pub trait TriggerPlugin: Send + Sync {
    /// Starts watching; an error is the plugin's message for the user. Returns the next wake time.
    async fn subscribe(
        &self,
        handle: &str,
        settings: &[(String, String)],
        now: u64,
    ) -> Result<Option<u64>, PluginError>;
    async fn unsubscribe(&self, handle: &str) -> Result<(), PluginError>;
    async fn wake(&self, now: u64) -> Result<WakeOutcome, PluginError>;
    async fn external_event(&self, event: OutsideEvent) -> Result<ExternalOutcome, PluginError>;
    /// For plugins that push fires instead of asking to be woken: notified when fires wait, which
    /// the next `wake` returns.
    fn pushed_fires(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// One run of a shared task.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    pub settings: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub deadline: Duration,
    /// The task's output (its log): chunks sent as the plugin writes them.
    pub output: tokio::sync::mpsc::Sender<Vec<u8>>,
}

/// A shared task, whatever runs it.
#[async_trait::async_trait]
pub trait TaskPlugin: Send + Sync {
    /// Runs the task to its exit code. Dropping the future cancels the task (a gRPC plugin sees
    /// its context cancelled).
    async fn run(&self, request: TaskRequest) -> Result<u8, PluginError>;
}

/// A loaded plugin.
#[derive(Clone)]
pub enum LoadedPlugin {
    Trigger(Arc<dyn TriggerPlugin>),
    Task(Arc<dyn TaskPlugin>),
}

#[derive(Clone)]
struct Entry {
    plugin: Plugin,
    loaded: Option<LoadedPlugin>,
    /// The process behind a gRPC plugin.
    process: Option<Arc<grpc::Supervisor>>,
}

impl Entry {
    /// The plugin as the API shows it, with its process's current state.
    fn current(&self) -> Plugin {
        let mut plugin = self.plugin.clone();
        if let Some(process) = &self.process {
            let status = process.status();
            plugin.status = status.state.into();
            plugin.error = status.error;
            plugin.restarts = Some(status.restarts);
            plugin.pid = status.pid;
        }
        plugin
    }
}

/// A file's modified time and size: enough to notice a replaced plugin.
type FileStamp = (SystemTime, u64);

/// The plugins folder as last seen.
type FolderState = BTreeMap<PathBuf, FileStamp>;

/// Every plugin the server knows; cheap to clone.
#[derive(Clone)]
pub struct PluginRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    runtime: Arc<wasm::WasmRuntime>,
    grpc: grpc::GrpcSettings,
    dir: PathBuf,
    /// Set once the built-ins are compiled (or read from the compile cache).
    builtins: std::sync::OnceLock<Vec<Entry>>,
    /// True once the built-ins and the folder's plugins have been loaded the first time.
    loaded: watch::Sender<bool>,
    entries: RwLock<BTreeMap<String, Entry>>,
    /// Loaded folder plugins by file, reused while the file is unchanged.
    files: std::sync::Mutex<BTreeMap<PathBuf, (FileStamp, Entry)>>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// How a plugin is run: `wasm` or `grpc`.
#[derive(Debug, Clone, Copy)]
enum Runtime {
    Wasm,
    Grpc,
}

impl Runtime {
    fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "wasm" => Some(Self::Wasm),
            "toml" => Some(Self::Grpc),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Wasm => "wasm",
            Self::Grpc => "grpc",
        }
    }
}

fn entry(
    description: PluginDescription,
    loaded: LoadedPlugin,
    source: &str,
    runtime: Runtime,
) -> Entry {
    let loaded = measured::measured(loaded, &description.name);
    Entry {
        plugin: Plugin {
            name: description.name,
            kind: Some(description.kind),
            version: description.version,
            description: description.description,
            settings: description.settings,
            runtime: runtime.name().into(),
            source: source.into(),
            status: "loaded".into(),
            error: None,
            restarts: None,
            pid: None,
        },
        loaded: Some(loaded),
        process: None,
    }
}

fn failed(name: String, source: &str, runtime: Runtime, error: &PluginError) -> Entry {
    Entry {
        plugin: Plugin {
            name,
            kind: None,
            version: String::new(),
            description: String::new(),
            settings: Vec::new(),
            runtime: runtime.name().into(),
            source: source.into(),
            status: "failed".into(),
            error: Some(error.to_string()),
            restarts: None,
            pid: None,
        },
        loaded: None,
        process: None,
    }
}

impl PluginRegistry {
    /// The plugins' own logs.
    pub fn logs(&self) -> &logs::PluginLogs {
        self.inner.runtime.logs()
    }

    /// Gives WebAssembly plugins firing and their configuration (the trigger manager).
    pub fn set_services(&self, services: Arc<dyn HostServices>) {
        self.inner.runtime.set_services(services);
    }

    /// Loads the built-ins and the plugins folder, and starts watching the folder; returns once
    /// everything is loaded.
    pub async fn start(
        runtime: Arc<wasm::WasmRuntime>,
        grpc: grpc::GrpcSettings,
        dir: PathBuf,
    ) -> Self {
        let registry = Self::new(runtime, grpc, dir);
        registry.start_loading();
        registry.loaded().await;
        registry
    }

    /// A registry with nothing loaded yet (see [`PluginRegistry::start_loading`]).
    pub fn new(runtime: Arc<wasm::WasmRuntime>, grpc: grpc::GrpcSettings, dir: PathBuf) -> Self {
        if let Err(error) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), %error, "could not create the plugins folder");
        }
        Self {
            inner: Arc::new(RegistryInner {
                runtime,
                grpc,
                dir,
                builtins: std::sync::OnceLock::new(),
                loaded: watch::channel(false).0,
                entries: RwLock::new(BTreeMap::new()),
                files: std::sync::Mutex::new(BTreeMap::new()),
                changes: watch::channel(0).0,
            }),
        }
    }

    /// In the background: loads the built-ins (compiled, or read from the compile cache), then
    /// the plugins folder, says so ([`PluginRegistry::loaded`]), and keeps watching the folder.
    /// The server answers meanwhile; what needs a plugin waits for the first load.
    pub fn start_loading(&self) {
        let registry = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut builtins = Vec::new();
            for (name, bytes) in BUILTIN_PLUGINS {
                match registry.inner.runtime.load(name, bytes.to_vec()).await {
                    Ok((description, loaded)) => {
                        builtins.push(entry(description, loaded, "builtin", Runtime::Wasm));
                    }
                    Err(error) => {
                        tracing::error!(plugin = name, %error, "a built-in plugin failed to load");
                        builtins.push(failed(name.to_string(), "builtin", Runtime::Wasm, &error));
                    }
                }
            }
            let _ = registry.inner.builtins.set(builtins);
            let mut seen = FolderState::new();
            registry.rescan(&mut seen).await;
            release_freed_heap();
            registry.inner.loaded.send_replace(true);
            tracing::info!(
                plugins = registry.read().len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "plugins loaded"
            );
            loop {
                tokio::time::sleep(FOLDER_POLL).await;
                registry.rescan(&mut seen).await;
            }
        });
    }

    /// Waits until the built-ins and the plugins folder have been loaded once.
    pub async fn loaded(&self) {
        let mut loaded = self.inner.loaded.subscribe();
        let _ = loaded.wait_for(|loaded| *loaded).await;
    }

    /// Whether the first load is done.
    pub fn is_loaded(&self) -> bool {
        *self.inner.loaded.borrow()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bumped whenever the set of loaded plugins changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub fn list(&self) -> Vec<Plugin> {
        self.read().values().map(Entry::current).collect()
    }

    pub fn get(&self, name: &str) -> Option<Plugin> {
        self.read().get(name).map(Entry::current)
    }

    /// Stops every plugin process (on server shutdown) and waits until they are gone.
    pub async fn shutdown(&self) {
        let processes: Vec<Arc<grpc::Supervisor>> = self
            .inner
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .filter_map(|(_, entry)| entry.process.clone())
            .collect();
        futures_util::future::join_all(processes.iter().map(|process| process.stop())).await;
    }

    pub fn trigger(&self, name: &str) -> Option<Arc<dyn TriggerPlugin>> {
        match self.read().get(name)?.loaded.as_ref()? {
            LoadedPlugin::Trigger(trigger) => Some(Arc::clone(trigger)),
            LoadedPlugin::Task(_) => None,
        }
    }

    pub fn task(&self, name: &str) -> Option<Arc<dyn TaskPlugin>> {
        match self.read().get(name)?.loaded.as_ref()? {
            LoadedPlugin::Task(task) => Some(Arc::clone(task)),
            LoadedPlugin::Trigger(_) => None,
        }
    }

    /// Loaded trigger plugins by name.
    pub fn triggers(&self) -> BTreeMap<String, Arc<dyn TriggerPlugin>> {
        self.read()
            .iter()
            .filter_map(|(name, entry)| match entry.loaded.as_ref()? {
                LoadedPlugin::Trigger(trigger) => Some((name.clone(), Arc::clone(trigger))),
                LoadedPlugin::Task(_) => None,
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.inner
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks at the folder; if anything changed, reloads what changed and rebuilds the registry.
    async fn rescan(&self, seen: &mut FolderState) {
        let now = folder_state(&self.inner.dir);
        if !self.read().is_empty() && now == *seen {
            return;
        }
        let mut loaded = BTreeMap::new();
        for (path, stamp) in &now {
            let reuse = self
                .inner
                .files
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(path)
                .filter(|(old, _)| old == stamp)
                .map(|(_, entry)| entry.clone());
            let entry = match reuse {
                Some(entry) => entry,
                None => self.load_file(path).await,
            };
            loaded.insert(path.clone(), (*stamp, entry));
        }
        let mut entries: BTreeMap<String, Entry> = self
            .inner
            .builtins
            .get()
            .into_iter()
            .flatten()
            .map(|entry| (entry.plugin.name.clone(), entry.clone()))
            .collect();
        for (_, entry) in loaded.values() {
            // A folder plugin overrides a built-in of the same name.
            entries.insert(entry.plugin.name.clone(), entry.clone());
        }
        *self
            .inner
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = loaded;
        *self
            .inner
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = entries;
        *seen = now;
        self.inner
            .changes
            .send_modify(|generation| *generation += 1);
    }

    async fn load_file(&self, path: &Path) -> Entry {
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().to_string())
            .unwrap_or_default();
        let runtime = Runtime::of(path).unwrap_or(Runtime::Wasm);
        let loaded = match runtime {
            Runtime::Wasm => match std::fs::read(path) {
                Ok(bytes) => self
                    .inner
                    .runtime
                    .load(&stem, bytes)
                    .await
                    .map(|(description, loaded)| (description, loaded, None)),
                Err(error) => Err(PluginError::Load(format!(
                    "could not read {}: {error}",
                    path.display()
                ))),
            },
            Runtime::Grpc => grpc::load(path, self.inner.grpc.clone())
                .await
                .map(|(description, loaded, process)| (description, loaded, Some(process))),
        };
        match loaded {
            Ok((description, loaded, process)) => {
                tracing::info!(plugin = %description.name, file = %path.display(), runtime = runtime.name(), "loaded plugin");
                Entry {
                    process,
                    ..entry(description, loaded, "folder", runtime)
                }
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "could not load plugin");
                failed(stem, "folder", runtime, &error)
            }
        }
    }
}

fn folder_state(dir: &Path) -> FolderState {
    let Ok(read) = std::fs::read_dir(dir) else {
        return FolderState::new();
    };
    read.filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter_map(|path| {
            let runtime = Runtime::of(&path)?;
            let stamp = file_stamp(&path)?;
            // A rebuilt executable restarts its gRPC plugin as a changed manifest does.
            let stamp = match runtime {
                Runtime::Wasm => stamp,
                Runtime::Grpc => grpc::Manifest::read(&path)
                    .ok()
                    .and_then(|manifest| file_stamp(&manifest.executable(&path)))
                    .map_or(stamp, |executable| {
                        (
                            stamp.0.max(executable.0),
                            stamp.1.wrapping_add(executable.1),
                        )
                    }),
            };
            Some((path, stamp))
        })
        .collect()
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Hands the heap that compiling plugins used and freed back to the operating system: glibc keeps
/// freed memory in its arenas, which after a first start (every built-in compiled) held about
/// 16 MiB of the idle server's resident memory.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it is safe to call at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
