//! The WebAssembly runtime: the only module that uses wasmtime.
//!
//! Compiles components once and caches the machine code on disk (keyed by content hash and engine
//! compatibility), refuses components built for another `gofer:plugin` version before
//! instantiating them, and runs every call with a wall-clock deadline and a memory cap, in a
//! sandbox with no filesystem, network or host environment. Calls are async (wasmtime fibers):
//! the guest yields to tokio every epoch tick while it computes, and every host call it makes
//! (WASI clocks and sleep, `wasi:http`, objects, log) is an await, so a deadline or a cancel
//! (dropping the call) stops it within a tick, blocked or not. An instance whose call did not
//! finish (trap, deadline) is discarded; a trigger's is re-created with its subscriptions
//! replayed.

// The one home of wasmtime (host/clippy.toml refuses its types anywhere else).
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::identity::{PluginObjectError, PluginObjects};
use super::logs::PluginLogs;
use super::{
    ExternalOutcome, FireOutcome, HostServices, LoadedPlugin, OutsideEvent, PluginDescription,
    PluginError, TaskPlugin, TaskRequest, TriggerPlugin, WakeOutcome,
};
use crate::models::{PluginKind, PluginParameter};

/// The WIT package this server implements (the current version; older ones are still loaded,
/// see [`WIT_VERSIONS`]).
pub const WIT_PACKAGE: &str = "gofer:plugin@0.2.0";

/// How often the epoch ticks; deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most output a shared task may print; the rest is cut.
const MAX_TASK_OUTPUT: usize = 16 * 1024 * 1024;

/// `gofer:plugin@0.1.0`, still loaded: plugins built before 0.2 keep working unchanged.
mod v1 {
    pub mod trigger {
        wasmtime::component::bindgen!({
            world: "trigger",
            path: "../wit/0.1.0",
            imports: { default: async },
            exports: { default: async },
        });
    }

    pub mod task {
        // The interfaces both worlds import are the trigger bindings' (one host implementation).
        wasmtime::component::bindgen!({
            world: "task",
            path: "../wit/0.1.0",
            imports: { default: async },
            exports: { default: async },
            with: {
                "gofer:plugin/types": super::trigger::gofer::plugin::types,
                "gofer:plugin/host": super::trigger::gofer::plugin::host,
                "gofer:plugin/objects": super::trigger::gofer::plugin::objects,
            },
        });
    }
}

/// `gofer:plugin@0.2.0`, the current interface.
mod v2 {
    pub mod trigger {
        wasmtime::component::bindgen!({
            world: "trigger",
            path: "../wit/0.2.0",
            imports: { default: async },
            exports: { default: async },
        });
    }

    pub mod task {
        wasmtime::component::bindgen!({
            world: "task",
            path: "../wit/0.2.0",
            imports: { default: async },
            exports: { default: async },
            with: {
                "gofer:plugin/types": super::trigger::gofer::plugin::types,
                "gofer:plugin/host": super::trigger::gofer::plugin::host,
                "gofer:plugin/objects": super::trigger::gofer::plugin::objects,
            },
        });
    }
}

/// The interface versions this server loads, oldest first.
pub const WIT_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// Limits every call runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    /// Deadline of a trigger call (subscribe, wake, outside event) and of loading a plugin.
    pub trigger_call: Duration,
    /// Per plugin (by name): a deadline of its own for those calls.
    pub call_deadlines: BTreeMap<String, Duration>,
    /// Hosts each plugin (by name) may send HTTP requests to.
    pub http_hosts: BTreeMap<String, Vec<String>>,
    /// Directories each plugin (by name) may read, or read and write (`true`).
    pub dirs: BTreeMap<String, Vec<(PathBuf, bool)>>,
}

impl Limits {
    /// The operator's limits and grants (`[plugins]`).
    pub fn from_config(plugins: &crate::config::PluginsSection) -> Self {
        Self {
            memory_bytes: (plugins.memory_limit_mb as usize) << 20,
            trigger_call: Duration::from_millis(plugins.trigger_call_timeout_ms),
            call_deadlines: plugins.call_deadlines(),
            http_hosts: plugins
                .grants
                .iter()
                .map(|(plugin, grants)| (plugin.clone(), grants.http_hosts.clone()))
                .collect(),
            dirs: plugins
                .grants
                .iter()
                .map(|(plugin, grants)| {
                    let read = grants.read_dirs.iter().map(|dir| (dir.clone(), false));
                    let write = grants.write_dirs.iter().map(|dir| (dir.clone(), true));
                    (plugin.clone(), read.chain(write).collect())
                })
                .collect(),
        }
    }

    /// The deadline of a plugin's calls: its own if the operator set one, else the default.
    pub fn deadline_of(&self, plugin: &str) -> Duration {
        self.call_deadlines
            .get(plugin)
            .copied()
            .unwrap_or(self.trigger_call)
    }
}

/// Whether `host` (with `port`) matches a granted pattern: `example.com`, `*.example.com`, `*`,
/// each optionally with `:port`.
pub fn host_allowed(patterns: &[String], host: &str, port: u16) -> bool {
    patterns.iter().any(|pattern| {
        let (pattern_host, pattern_port) = match pattern.rsplit_once(':') {
            Some((pattern_host, pattern_port)) if pattern_port.parse::<u16>().is_ok() => {
                (pattern_host, pattern_port.parse::<u16>().ok())
            }
            _ => (pattern.as_str(), None),
        };
        let host_matches = pattern_host == "*"
            || pattern_host.eq_ignore_ascii_case(host)
            || pattern_host.strip_prefix("*.").is_some_and(|domain| {
                host.len() > domain.len() + 1
                    && host
                        .to_ascii_lowercase()
                        .ends_with(&format!(".{}", domain.to_ascii_lowercase()))
            });
        host_matches && pattern_port.is_none_or(|pattern_port| pattern_port == port)
    })
}

/// The network hooks of one plugin instance: requests go only to granted hosts.
struct HttpGrants {
    plugin: String,
    hosts: Vec<String>,
}

impl wasmtime_wasi_http::WasiHttpHooks for HttpGrants {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<
                            dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                                + Send,
                        >,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        if !host_allowed(&self.hosts, &host, port) {
            tracing::warn!(plugin = %self.plugin, host = %host, port, "refused an HTTP request to a host the plugin was not granted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io)
                    as Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
            ))
        })
    }
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// The plugin's name (its objects' scope, its grants' key).
    plugin: String,
    http: wasmtime_wasi_http::WasiHttpCtx,
    grants: HttpGrants,
    objects: Option<Arc<PluginObjects>>,
    /// Firing and the operator's configuration (none until the trigger manager exists).
    services: Option<Arc<dyn HostServices>>,
    /// Where the plugin's own log lines go.
    logs: PluginLogs,
}

impl State {
    /// Writes a line to the plugin's log and to the server's (what is awaited holds no borrow
    /// of the store).
    fn log(&self, level: u8, message: String) -> impl std::future::Future<Output = ()> + Send {
        log(&self.plugin, level, &message);
        let source = ["trace", "debug", "info", "warn", "error"][usize::from(level.min(4))];
        let (logs, plugin) = (self.logs.clone(), self.plugin.clone());
        async move { logs.append(&plugin, source, &message).await }
    }
}

impl wasmtime_wasi_http::WasiHttpView for State {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.grants,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn log(plugin: &str, level: u8, message: &str) {
    match level {
        0 => tracing::trace!(plugin, "{message}"),
        1 => tracing::debug!(plugin, "{message}"),
        2 => tracing::info!(plugin, "{message}"),
        3 => tracing::warn!(plugin, "{message}"),
        _ => tracing::error!(plugin, "{message}"),
    }
}

impl State {
    /// The object store for a call in the calling plugin's own scope.
    fn objects(&self) -> Result<(Arc<PluginObjects>, String), String> {
        let objects = self
            .objects
            .clone()
            .ok_or("this server gives plugins no object store")?;
        Ok((objects, self.plugin.clone()))
    }
}

fn message(error: PluginObjectError) -> String {
    error.to_string()
}

/// The host interfaces both versions share (`host`'s log and clock, `objects`), implemented once
/// per version's generated traits.
macro_rules! shared_host {
    ($version:ident) => {
        impl $version::trigger::gofer::plugin::types::Host for State {}

        impl $version::trigger::gofer::plugin::objects::Host for State {
            async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
                let (objects, plugin) = self.objects()?;
                objects.get(&plugin, &key).await.map_err(message)
            }

            async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
                let (objects, plugin) = self.objects()?;
                objects.put(&plugin, &key, value).await.map_err(message)
            }

            async fn delete(&mut self, key: String) -> Result<(), String> {
                let (objects, plugin) = self.objects()?;
                objects.delete(&plugin, &key).await.map_err(message)
            }

            async fn keys(&mut self) -> Result<Vec<String>, String> {
                let (objects, plugin) = self.objects()?;
                objects.list(&plugin).await.map_err(message)
            }
        }
    };
}

shared_host!(v1);
shared_host!(v2);

impl v1::trigger::gofer::plugin::host::Host for State {
    async fn log(&mut self, level: v1::trigger::gofer::plugin::host::LogLevel, message: String) {
        State::log(self, level as u8, message).await;
    }

    async fn now_millis(&mut self) -> u64 {
        crate::models::now_millis()
    }
}

impl v2::trigger::gofer::plugin::host::Host for State {
    async fn log(&mut self, level: v2::trigger::gofer::plugin::host::LogLevel, message: String) {
        State::log(self, level as u8, message).await;
    }

    async fn now_millis(&mut self) -> u64 {
        crate::models::now_millis()
    }

    async fn config(&mut self) -> Vec<(String, String)> {
        let Some(services) = self.services.clone() else {
            return Vec::new();
        };
        match services.config(&self.plugin).await {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(plugin = %self.plugin, %error, "could not give the plugin its configuration");
                Vec::new()
            }
        }
    }
}

impl v2::trigger::gofer::plugin::fires::Host for State {
    async fn send(
        &mut self,
        fire: v2::trigger::gofer::plugin::types::Fire,
    ) -> v2::trigger::gofer::plugin::types::FireOutcome {
        use v2::trigger::gofer::plugin::types::FireOutcome as Wit;
        let Some(services) = self.services.clone() else {
            return Wit::Refused("this server cannot take fires yet".into());
        };
        let fire = super::fire(fire.subscription, fire.variables, fire.idempotency_key);
        match services.fire(&self.plugin, fire).await {
            FireOutcome::Started(run) => Wit::Started(run),
            FireOutcome::Duplicate(run) => Wit::Duplicate(run),
            FireOutcome::Refused(why) => Wit::Refused(why),
        }
    }
}

/// The engine, linkers and code cache; shared by every plugin.
pub struct WasmRuntime {
    engine: Engine,
    /// Per interface version ([`WIT_VERSIONS`] order): the trigger and the task linker.
    linkers: [(Linker<State>, Linker<State>); 2],
    cache_dir: PathBuf,
    limits: Limits,
    objects: Option<Arc<PluginObjects>>,
    services: std::sync::OnceLock<Arc<dyn HostServices>>,
    logs: PluginLogs,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

fn runtime_error(error: impl std::fmt::Display) -> PluginError {
    PluginError::Load(error.to_string())
}

impl WasmRuntime {
    /// The engine for every plugin; `objects` backs the plugins' `objects` interface (none:
    /// every object call fails with a message).
    pub fn new(
        cache_dir: PathBuf,
        limits: Limits,
        objects: Option<Arc<PluginObjects>>,
        logs: PluginLogs,
    ) -> Result<Arc<Self>, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(runtime_error)?;
        // Every world gets WASI and outgoing `wasi:http` (requests go only to granted hosts).
        let base = || -> Result<Linker<State>, PluginError> {
            let mut linker = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(runtime_error)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
                .map_err(runtime_error)?;
            Ok(linker)
        };
        type Own = wasmtime::component::HasSelf<State>;
        let (mut trigger_v1, mut task_v1) = (base()?, base()?);
        v1::trigger::Trigger::add_to_linker::<State, Own>(&mut trigger_v1, |state| state)
            .map_err(runtime_error)?;
        v1::task::Task::add_to_linker::<State, Own>(&mut task_v1, |state| state)
            .map_err(runtime_error)?;
        let (mut trigger_v2, mut task_v2) = (base()?, base()?);
        v2::trigger::Trigger::add_to_linker::<State, Own>(&mut trigger_v2, |state| state)
            .map_err(runtime_error)?;
        v2::task::Task::add_to_linker::<State, Own>(&mut task_v2, |state| state)
            .map_err(runtime_error)?;
        std::fs::create_dir_all(&cache_dir).map_err(|error| {
            PluginError::Load(format!(
                "could not create the plugin cache {}: {error}",
                cache_dir.display()
            ))
        })?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("gofer-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(runtime_error)?;
        Ok(Arc::new(Self {
            engine,
            linkers: [(trigger_v1, task_v1), (trigger_v2, task_v2)],
            cache_dir,
            limits,
            objects,
            services: std::sync::OnceLock::new(),
            logs,
        }))
    }

    /// The plugins' own logs.
    pub fn logs(&self) -> &PluginLogs {
        &self.logs
    }

    /// Gives plugins firing and their configuration (once; the trigger manager comes after the
    /// plugins, which it drives).
    pub fn set_services(&self, services: Arc<dyn HostServices>) {
        let _ = self.services.set(services);
    }

    /// Compiles a component, or loads its machine code from the cache.
    fn compile(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        use std::hash::{Hash, Hasher};
        let digest = Sha256::digest(bytes);
        let content: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let cached = self
            .cache_dir
            .join(format!("{content}-{:016x}.cwasm", hasher.finish()));
        if cached.exists() {
            // SAFETY: the cache directory is the server's own; only artefacts this server
            // serialised (for an engine with the same compatibility hash) are stored there.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, &cached) };
            match loaded {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(path = %cached.display(), %error, "ignoring an unreadable cached plugin")
                }
            }
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(PluginError::Load(
                "not a WebAssembly file (it lacks the \\0asm header)".into(),
            ));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|error| PluginError::Load(format!("{error:#}")))?;
        if let Ok(serialized) = component.serialize() {
            let temporary = cached.with_extension("tmp");
            if std::fs::write(&temporary, serialized).is_ok() {
                let _ = std::fs::rename(&temporary, &cached);
            }
        }
        Ok(component)
    }

    /// Loads a plugin: compile (or read the cache, on the blocking pool), find its interface
    /// version and world, read its info (within the plugin's deadline).
    pub async fn load(
        self: &Arc<Self>,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<(PluginDescription, LoadedPlugin), PluginError> {
        let runtime = Arc::clone(self);
        let component = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
            .await
            .map_err(|error| PluginError::Crashed(error.to_string()))??;
        let (version, kind) = self.world_of(&component)?;
        let deadline = self.limits.deadline_of(file_name);
        let (trigger_linker, task_linker) = &self.linkers[version];
        let load_error = |error: wasmtime::Error| PluginError::Load(format!("{error:#}"));
        match kind {
            PluginKind::Trigger => {
                let pre = trigger_linker
                    .instantiate_pre(&component)
                    .map_err(load_error)?;
                let pre = match version {
                    0 => TriggerPre::V1(v1::trigger::TriggerPre::new(pre).map_err(load_error)?),
                    _ => TriggerPre::V2(v2::trigger::TriggerPre::new(pre).map_err(load_error)?),
                };
                let mut store = self.new_store(file_name, WasiCtxBuilder::new().build());
                let info = within(deadline, &self.limits, async {
                    pre.instantiate(&mut store).await?.info(&mut store).await
                })
                .await?;
                check_description(&info, PluginKind::Trigger)?;
                // From now on the plugin acts as the name it gave (its objects' scope, its
                // grants' key), whatever its file is called.
                let trigger = Arc::new(WasmTrigger {
                    runtime: Arc::clone(self),
                    pre,
                    name: info.name.clone(),
                    live: tokio::sync::Mutex::new(None),
                    subscriptions: Mutex::new(BTreeMap::new()),
                });
                Ok((info, LoadedPlugin::Trigger(Arc::new(trigger))))
            }
            PluginKind::Task => {
                let pre = task_linker
                    .instantiate_pre(&component)
                    .map_err(load_error)?;
                let pre = match version {
                    0 => TaskPre::V1(v1::task::TaskPre::new(pre).map_err(load_error)?),
                    _ => TaskPre::V2(v2::task::TaskPre::new(pre).map_err(load_error)?),
                };
                let task = WasmTask {
                    runtime: Arc::clone(self),
                    pre,
                    name: file_name.to_string(),
                };
                let mut store = task.store(&[], None);
                let info = within(deadline, &self.limits, task.pre.info(&mut store)).await?;
                check_description(&info, PluginKind::Task)?;
                // Grants and objects are keyed by the plugin's own name, whatever its file is
                // called.
                let task = Arc::new(WasmTask {
                    name: info.name.clone(),
                    ..task
                });
                Ok((info, LoadedPlugin::Task(Arc::new(task))))
            }
        }
    }

    /// The interface a component was built for (`gofer:plugin@0.2.0`) and its world, or why
    /// this server cannot load it; compiles it (or reads the cache) on the blocking pool.
    pub async fn interface_of(
        self: &Arc<Self>,
        bytes: Vec<u8>,
    ) -> Result<(String, PluginKind), PluginError> {
        let runtime = Arc::clone(self);
        let component = tokio::task::spawn_blocking(move || runtime.compile(&bytes))
            .await
            .map_err(|error| PluginError::Crashed(error.to_string()))??;
        let (version, kind) = self.world_of(&component)?;
        Ok((format!("gofer:plugin@{}", WIT_VERSIONS[version]), kind))
    }

    /// A component's interface version (an index into [`WIT_VERSIONS`]) and world, or why this
    /// server cannot load it.
    fn world_of(&self, component: &Component) -> Result<(usize, PluginKind), PluginError> {
        let component_type = component.component_type();
        let mut names: Vec<String> = component_type
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports: Vec<String> = component_type
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        names.extend(exports.iter().cloned());
        let mut versions: Vec<&str> = names
            .iter()
            .filter(|name| name.starts_with("gofer:plugin/"))
            .filter_map(|name| name.rsplit_once('@').map(|(_, version)| version))
            .collect();
        versions.sort_unstable();
        versions.dedup();
        let supported = WIT_VERSIONS
            .iter()
            .map(|version| format!("gofer:plugin@{version}"))
            .collect::<Vec<_>>()
            .join(" and ");
        let version = match versions.as_slice() {
            [version] => WIT_VERSIONS
                .iter()
                .position(|known| known == version)
                .ok_or_else(|| {
                    PluginError::Load(format!(
                        "it was built for gofer:plugin@{version}, but this server supports {supported}; rebuild it against this server's wit/"
                    ))
                })?,
            [] => {
                return Err(PluginError::Load(format!(
                    "it uses no gofer:plugin interface; build it for {supported}"
                )));
            }
            several => {
                return Err(PluginError::Load(format!(
                    "it mixes interface versions ({}); build it for one of {supported}",
                    several.join(", ")
                )));
            }
        };
        let kind = if exports.iter().any(|name| name == "run") {
            PluginKind::Task
        } else if exports.iter().any(|name| name == "wake") {
            PluginKind::Trigger
        } else {
            return Err(PluginError::Load(format!(
                "it exports neither the `trigger` nor the `task` world of gofer:plugin@{}",
                WIT_VERSIONS[version]
            )));
        };
        Ok((version, kind))
    }

    fn new_store(&self, plugin: &str, wasi: WasiCtx) -> Store<State> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            State {
                wasi,
                table: ResourceTable::new(),
                limits,
                plugin: plugin.to_string(),
                objects: self.objects.clone(),
                services: self.services.get().cloned(),
                logs: self.logs.clone(),
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
                grants: HttpGrants {
                    plugin: plugin.to_string(),
                    hosts: self
                        .limits
                        .http_hosts
                        .get(plugin)
                        .cloned()
                        .unwrap_or_default(),
                },
            },
        );
        store.limiter(|state| &mut state.limits);
        // A computing guest hands the thread back at every epoch tick, so the wall-clock deadline
        // around each call (and a cancel) is noticed within a tick.
        store.epoch_deadline_async_yield_and_update(1);
        store.set_epoch_deadline(1);
        store
    }
}

/// Runs `call` (instantiation or a call of the guest) within `deadline` of wall-clock time: at
/// the deadline the call is dropped, whatever the guest is doing (computing, or blocked in a host
/// call), and its instance must not be used again.
async fn within<T>(
    deadline: Duration,
    limits: &Limits,
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> Result<T, PluginError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(error, limits)),
        Err(_) => Err(PluginError::Deadline),
    }
}

/// Names what went wrong in a call, in the plugin author's and operator's terms.
fn classify(error: wasmtime::Error, limits: &Limits) -> PluginError {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return PluginError::Deadline;
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") {
        return PluginError::MemoryLimit(limits.memory_bytes / (1024 * 1024));
    }
    PluginError::Crashed(text)
}

/// A trigger component's pre-instantiated form, of its interface version.
enum TriggerPre {
    V1(v1::trigger::TriggerPre<State>),
    V2(v2::trigger::TriggerPre<State>),
}

/// A trigger instance's exports, of its interface version: one call each, in the current
/// version's terms.
enum TriggerInstance {
    V1(v1::trigger::Trigger),
    V2(v2::trigger::Trigger),
}

impl TriggerPre {
    async fn instantiate(&self, store: &mut Store<State>) -> wasmtime::Result<TriggerInstance> {
        Ok(match self {
            Self::V1(pre) => TriggerInstance::V1(pre.instantiate_async(store).await?),
            Self::V2(pre) => TriggerInstance::V2(pre.instantiate_async(store).await?),
        })
    }
}

/// What a plugin says about itself must fit its world and name a plugin plainly.
fn check_description(info: &PluginDescription, world: PluginKind) -> Result<(), PluginError> {
    crate::pipeline_config::validate_identifier("plugin name", &info.name)
        .map_err(|error| PluginError::Load(format!("its info: {error}")))?;
    if info.kind != world {
        return Err(PluginError::Load(format!(
            "its info says it is a {}, but it exports the {} world",
            info.kind.as_str(),
            world.as_str()
        )));
    }
    Ok(())
}

/// The `plugin-info` of either version as the registry describes a plugin.
macro_rules! description {
    ($info:expr, $types:path) => {{
        use $types as types;
        let info = $info;
        PluginDescription {
            name: info.name,
            kind: match info.kind {
                types::PluginKind::Trigger => PluginKind::Trigger,
                types::PluginKind::Task => PluginKind::Task,
            },
            version: info.version,
            description: info.description,
            settings: info
                .settings
                .into_iter()
                .map(|p| PluginParameter {
                    key: p.key,
                    required: p.required,
                    documentation: p.documentation,
                })
                .collect(),
        }
    }};
}

impl TriggerInstance {
    async fn info(&self, store: &mut Store<State>) -> wasmtime::Result<PluginDescription> {
        Ok(match self {
            Self::V1(trigger) => description!(
                trigger.call_info(store).await?,
                v1::trigger::gofer::plugin::types
            ),
            Self::V2(trigger) => description!(
                trigger.call_info(store).await?,
                v2::trigger::gofer::plugin::types
            ),
        })
    }

    async fn subscribe(
        &self,
        store: &mut Store<State>,
        handle: &str,
        settings: &Vec<(String, String)>,
        now: u64,
    ) -> wasmtime::Result<Result<Option<u64>, String>> {
        match self {
            Self::V1(trigger) => trigger.call_subscribe(store, handle, settings, now).await,
            Self::V2(trigger) => trigger.call_subscribe(store, handle, settings, now).await,
        }
    }

    async fn unsubscribe(&self, store: &mut Store<State>, handle: &str) -> wasmtime::Result<()> {
        match self {
            Self::V1(trigger) => trigger.call_unsubscribe(store, handle).await,
            Self::V2(trigger) => trigger.call_unsubscribe(store, handle).await,
        }
    }

    async fn wake(&self, store: &mut Store<State>, now: u64) -> wasmtime::Result<WakeOutcome> {
        Ok(match self {
            Self::V1(trigger) => {
                let result = trigger.call_wake(store, now).await?;
                WakeOutcome {
                    fires: fires_v1(result.fires),
                    next_wake: result.next_wake,
                }
            }
            Self::V2(trigger) => {
                let result = trigger.call_wake(store, now).await?;
                WakeOutcome {
                    fires: fires_v2(result.fires),
                    next_wake: result.next_wake,
                }
            }
        })
    }

    async fn external_event(
        &self,
        store: &mut Store<State>,
        event: OutsideEvent,
    ) -> wasmtime::Result<ExternalOutcome> {
        Ok(match self {
            Self::V1(trigger) => {
                // 0.1 knows headers and body only.
                let event = v1::trigger::gofer::plugin::types::ExternalEvent {
                    headers: event.headers,
                    body: event.body,
                };
                let result = trigger.call_external_event(store, &event).await?;
                ExternalOutcome {
                    status: result.status,
                    message: result.message,
                    fires: fires_v1(result.fires),
                }
            }
            Self::V2(trigger) => {
                let event = v2::trigger::gofer::plugin::types::ExternalEvent {
                    method: event.method,
                    path: event.path,
                    query: event.query,
                    remote_address: event.remote_address,
                    headers: event.headers,
                    body: event.body,
                };
                let result = trigger.call_external_event(store, &event).await?;
                ExternalOutcome {
                    status: result.status,
                    message: result.message,
                    fires: fires_v2(result.fires),
                }
            }
        })
    }
}

fn fires_v1(fires: Vec<v1::trigger::gofer::plugin::types::Fire>) -> Vec<super::Fire> {
    fires
        .into_iter()
        .map(|fire| super::fire(fire.subscription, fire.variables, None))
        .collect()
}

fn fires_v2(fires: Vec<v2::trigger::gofer::plugin::types::Fire>) -> Vec<super::Fire> {
    fires
        .into_iter()
        .map(|fire| super::fire(fire.subscription, fire.variables, fire.idempotency_key))
        .collect()
}

/// A trigger plugin: one long-lived instance, re-created after a call that did not finish.
struct WasmTrigger {
    runtime: Arc<WasmRuntime>,
    pre: TriggerPre,
    name: String,
    /// The live instance; calls take turns.
    live: tokio::sync::Mutex<Option<(Store<State>, TriggerInstance)>>,
    /// What to replay into a fresh instance.
    subscriptions: Mutex<BTreeMap<String, Vec<(String, String)>>>,
}

/// Runs one call on a trigger's live instance (made, with its subscriptions replayed, if there is
/// none) within the plugin's deadline; a call that does not finish discards the instance.
macro_rules! on_instance {
    ($trigger:expr, |$store:ident, $instance:ident| $call:expr) => {{
        let trigger = $trigger;
        let deadline = trigger.runtime.limits.deadline_of(&trigger.name);
        let mut live = trigger.live.lock().await;
        if live.is_none() {
            *live = Some(trigger.instantiate(deadline).await?);
        }
        let (store, instance) = live.as_mut().expect("instantiated above");
        let ($store, $instance) = (store, &*instance);
        let outcome = within(deadline, &trigger.runtime.limits, $call).await;
        if let Err(error) = &outcome {
            *live = None;
            tracing::warn!(plugin = %trigger.name, %error, "trigger call failed; the instance is discarded");
        }
        outcome
    }};
}

impl WasmTrigger {
    async fn instantiate(
        &self,
        deadline: Duration,
    ) -> Result<(Store<State>, TriggerInstance), PluginError> {
        let output = PluginOutput::new(self.runtime.logs.clone(), &self.name);
        let wasi = self.runtime.trigger_wasi(&self.name, output);
        let mut store = self.runtime.new_store(&self.name, wasi);
        let limits = &self.runtime.limits;
        let instance = within(deadline, limits, self.pre.instantiate(&mut store)).await?;
        let replay: Vec<(String, Vec<(String, String)>)> = self
            .subscriptions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(handle, settings)| (handle.clone(), settings.clone()))
            .collect();
        for (handle, settings) in replay {
            let now = crate::models::now_millis();
            let call = instance.subscribe(&mut store, &handle, &settings, now);
            if let Err(message) = within(deadline, limits, call).await? {
                tracing::warn!(plugin = %self.name, subscription = %handle, %message, "a replayed subscription was refused");
            }
        }
        Ok((store, instance))
    }
}

#[async_trait::async_trait]
impl TriggerPlugin for Arc<WasmTrigger> {
    async fn subscribe(
        &self,
        handle: &str,
        settings: &[(String, String)],
        now: u64,
    ) -> Result<Option<u64>, PluginError> {
        let pairs = settings.to_vec();
        let result = on_instance!(self.as_ref(), |store, instance| instance.subscribe(
            &mut *store,
            handle,
            &pairs,
            now
        ))?;
        match result {
            Ok(next) => {
                self.subscriptions
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(handle.to_string(), pairs);
                Ok(next)
            }
            Err(message) => Err(PluginError::Refused(message)),
        }
    }

    async fn unsubscribe(&self, handle: &str) -> Result<(), PluginError> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(handle);
        on_instance!(self.as_ref(), |store, instance| instance
            .unsubscribe(&mut *store, handle))
    }

    async fn wake(&self, now: u64) -> Result<WakeOutcome, PluginError> {
        on_instance!(self.as_ref(), |store, instance| instance
            .wake(&mut *store, now))
    }

    async fn external_event(&self, event: OutsideEvent) -> Result<ExternalOutcome, PluginError> {
        on_instance!(self.as_ref(), |store, instance| instance
            .external_event(&mut *store, event))
    }
}

/// A shared-task plugin: a fresh instance for every run.
struct WasmTask {
    runtime: Arc<WasmRuntime>,
    pre: TaskPre,
    name: String,
}

/// A task component's pre-instantiated form, of its interface version.
enum TaskPre {
    V1(v1::task::TaskPre<State>),
    V2(v2::task::TaskPre<State>),
}

impl TaskPre {
    async fn info(&self, store: &mut Store<State>) -> wasmtime::Result<PluginDescription> {
        Ok(match self {
            Self::V1(pre) => description!(
                pre.instantiate_async(&mut *store)
                    .await?
                    .call_info(store)
                    .await?,
                v1::trigger::gofer::plugin::types
            ),
            Self::V2(pre) => description!(
                pre.instantiate_async(&mut *store)
                    .await?
                    .call_info(store)
                    .await?,
                v2::trigger::gofer::plugin::types
            ),
        })
    }

    async fn run(
        &self,
        store: &mut Store<State>,
        settings: &Vec<(String, String)>,
    ) -> wasmtime::Result<Result<u8, String>> {
        match self {
            Self::V1(pre) => {
                let task = pre.instantiate_async(&mut *store).await?;
                task.call_run(store, settings).await
            }
            Self::V2(pre) => {
                let task = pre.instantiate_async(&mut *store).await?;
                task.call_run(store, settings).await
            }
        }
    }
}

/// A shared task's stdout and stderr: each write goes to the task's log as it happens, up to
/// [`MAX_TASK_OUTPUT`] bytes (then a note, once, that the rest was cut).
#[derive(Clone)]
struct TaskOutput {
    sink: tokio::sync::mpsc::Sender<Vec<u8>>,
    remaining: Arc<AtomicUsize>,
}

impl TaskOutput {
    fn new(sink: tokio::sync::mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            sink,
            remaining: Arc::new(AtomicUsize::new(MAX_TASK_OUTPUT)),
        }
    }

    /// What of `bytes` fits in what is left, with the note when this write reaches the limit.
    fn admit(&self, bytes: &[u8]) -> Vec<u8> {
        let left = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                Some(left.saturating_sub(bytes.len()))
            })
            .unwrap_or_default();
        let mut chunk = bytes[..bytes.len().min(left)].to_vec();
        if bytes.len() > left && left > 0 {
            chunk.extend_from_slice(
                format!("\n[gofer: output cut at {} MiB]\n", MAX_TASK_OUTPUT >> 20).as_bytes(),
            );
        }
        chunk
    }
}

impl OutputStream for TaskOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let chunk = self.admit(&bytes);
        if !chunk.is_empty() {
            // `check_write` said there is room; a log that is gone (the task was cancelled)
            // just drops the output.
            let _ = self.sink.try_send(chunk);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    /// Room for a write when the log has room (so a guest printing faster than the log is
    /// written waits, in `ready`), or when there is no log any more.
    fn check_write(&mut self) -> StreamResult<usize> {
        if self.sink.capacity() > 0 || self.sink.is_closed() {
            Ok(64 * 1024)
        } else {
            Ok(0)
        }
    }
}

#[async_trait::async_trait]
impl Pollable for TaskOutput {
    async fn ready(&mut self) {
        if let Ok(permit) = self.sink.reserve().await {
            drop(permit);
        }
    }
}

impl tokio::io::AsyncWrite for TaskOutput {
    // Only WASIp2 streams are linked (component-model-async is off); this form exists for the
    // trait and forwards without waiting (a full log channel drops the chunk).
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let chunk = self.admit(bytes);
        if !chunk.is_empty() {
            let _ = self.sink.try_send(chunk);
        }
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for TaskOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for TaskOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl WasmTask {
    /// A store for one run (or for `info`, with no output); the task's output goes to `output`.
    fn store(&self, env: &[(String, String)], output: Option<TaskOutput>) -> Store<State> {
        let wasi = self.runtime.wasi(&self.name, env, output);
        self.runtime.new_store(&self.name, wasi)
    }
}

impl WasmRuntime {
    /// A task's WASI context: `env`, its output (else none), and the directories the operator
    /// granted the plugin.
    fn wasi(&self, plugin: &str, env: &[(String, String)], output: Option<TaskOutput>) -> WasiCtx {
        let mut builder = WasiCtxBuilder::new();
        builder.envs(env);
        if let Some(output) = output {
            builder.stdout(output.clone()).stderr(output);
        }
        self.grant_dirs(plugin, &mut builder);
        builder.build()
    }

    /// A trigger's WASI context: what it prints goes to its log, and the directories the operator
    /// granted it.
    fn trigger_wasi(&self, plugin: &str, output: PluginOutput) -> WasiCtx {
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(output.clone()).stderr(output);
        self.grant_dirs(plugin, &mut builder);
        builder.build()
    }

    fn grant_dirs(&self, plugin: &str, builder: &mut WasiCtxBuilder) {
        for (dir, writable) in self.limits.dirs.get(plugin).into_iter().flatten() {
            let perms = if *writable {
                wasmtime_wasi::FsPerms::ReadWrite
            } else {
                wasmtime_wasi::FsPerms::ReadOnly
            };
            if let Err(error) = builder.preopened_dir(dir, dir.to_string_lossy(), perms) {
                tracing::warn!(plugin, dir = %dir.display(), %error, "could not grant a directory");
            }
        }
    }
}

/// A trigger's stdout and stderr: complete lines go to its log, in order, through one writer.
#[derive(Clone)]
struct PluginOutput {
    lines: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

impl PluginOutput {
    fn new(logs: PluginLogs, plugin: &str) -> Self {
        let (lines, mut received) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let plugin = plugin.to_string();
        tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(bytes) = received.recv().await {
                pending.extend_from_slice(&bytes);
                while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    logs.append(&plugin, "output", &text).await;
                }
                // Runaway output without newlines is cut into lines.
                if pending.len() > 64 * 1024 {
                    let text = String::from_utf8_lossy(&pending).into_owned();
                    logs.append(&plugin, "output", &text).await;
                    pending.clear();
                }
            }
        });
        Self { lines }
    }
}

impl OutputStream for PluginOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let _ = self.lines.send(bytes.to_vec());
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for PluginOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for PluginOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let _ = self.lines.send(bytes.to_vec());
        std::task::Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl TaskPlugin for Arc<WasmTask> {
    /// Runs in the caller's future: dropping it (the task was cancelled) drops the guest at
    /// once, even when it is blocked in a host call.
    async fn run(&self, request: TaskRequest) -> Result<u8, PluginError> {
        let output = TaskOutput::new(request.output.clone());
        let mut store = self.store(&request.env, Some(output));
        let limits = &self.runtime.limits;
        let mut unfinished = Unfinished(Some(self.name.clone()));
        let result = within(
            request.deadline,
            limits,
            self.pre.run(&mut store, &request.settings),
        )
        .await;
        unfinished.0 = None;
        result?.map_err(PluginError::Refused)
    }
}

/// Says, when dropped before its call finished (a cancel), that the guest was stopped: the call's
/// future, the guest's fiber and its store go with it.
struct Unfinished(Option<String>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(plugin) = &self.0 {
            tracing::info!(plugin = %plugin, "a cancelled shared task was stopped");
        }
    }
}
