//! Server configuration: the layered `ServerConfig` and its loading.
//!
//! Owns the layering (embedded defaults < TOML file < `GOFER_<SECTION>__<KEY>` environment <
//! command-line flags), the check of every value (unknown keys and bad values stop start-up with the
//! key named), and the commented default file printed by `gofer service init-config`. Must not start
//! anything: it only produces a validated `ServerConfig`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The commented default configuration, printed by `gofer service init-config`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_config.toml");

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "GOFER_CONFIG";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(
        "no data directory given and none could be derived (set HOME or XDG_DATA_HOME, or pass --data-dir)"
    )]
    NoDataDir,
}

/// Everything the server reads from configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub server: ServerSection,
    pub api: ApiSection,
    pub runs: RunsSection,
    pub scheduler: SchedulerSection,
    pub plugins: PluginsSection,
    pub secrets: SecretsSection,
    pub objects: ObjectsSection,
    pub log: LogSection,
    pub tracing: TracingSection,
    pub metrics: MetricsSection,
    pub retention: RetentionSection,
    pub development: DevelopmentSection,
}

/// What is pruned, and how often (see `docs/operations.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Ended runs kept per pipeline, the newest (0: no count limit). Older ones are deleted with
    /// their task executions, logs and run objects.
    pub runs_per_pipeline: u64,
    /// Ended runs older than this many seconds are deleted (0: no age limit).
    pub runs_max_age_secs: u64,
    /// Events older than this many seconds are deleted (0: kept forever).
    pub events_max_age_secs: u64,
    /// Seconds between pruning passes.
    pub interval_secs: u64,
    /// Rows deleted per transaction, so that writers never wait long.
    pub batch: u64,
}

/// Where spans go besides the log (see `docs/operations.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// An OpenTelemetry collector's OTLP/gRPC address (e.g. `http://127.0.0.1:4317`) to send
    /// the spans of requests, runs, task attempts and plugin calls to; empty: no export.
    pub otlp_endpoint: String,
    /// The `service.name` the spans carry.
    pub service_name: String,
}

/// Who may read `GET /metrics` when development mode is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Anyone may scrape (for a server whose port only the scraper can reach).
    pub public: bool,
    /// Else a scraper sends `Authorization: Bearer <scrape_token>` (empty: no scraping).
    pub scrape_token: String,
}

/// The container engine that runs container tasks (see `docs/configuration.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    pub engine: SchedulerEngine,
    /// The engine's API address: `unix:///path/to.sock`, a socket path, or `tcp://host:port`.
    /// Empty: the engine's usual one (see [`SchedulerEngine`]).
    pub socket: String,
    /// How long a task may wait for a node that satisfies its placement (`swarm`) before it
    /// fails with the engine's reason.
    pub placement_timeout_secs: u64,
}

/// Engines that run container tasks; all speak the Docker Engine API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerEngine {
    /// The Docker engine: `DOCKER_HOST`, else `/var/run/docker.sock`.
    Docker,
    /// Podman's Docker-compatible service (`podman system service`): the user's
    /// `$XDG_RUNTIME_DIR/podman/podman.sock` when it exists (rootless), else
    /// `/run/podman/podman.sock`.
    Podman,
    /// Docker Swarm: each task attempt a `replicated-job` service, through a manager's engine
    /// (the socket as for `docker`).
    Swarm,
}

/// Where secret values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretsEngine {
    /// AES-256-GCM encrypted values in `<data_dir>/secrets.db`.
    Sqlite,
}

/// Where pipeline, run and plugin objects are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectsEngine {
    /// Files under `<data_dir>/objects`.
    Filesystem,
    /// An S3-compatible bucket ([`S3Settings`]).
    S3,
}

impl S3Settings {
    /// What is wrong with these settings, naming the key.
    fn problem(&self) -> Option<String> {
        let bucket = &self.bucket;
        // S3's bucket naming rules: 3 to 63 of [a-z0-9.-], starting and ending alphanumeric.
        let bucket_valid = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if bucket.is_empty() {
            return Some(
                "objects.s3.bucket: required when objects.engine = \"s3\" (the bucket must exist)"
                    .into(),
            );
        }
        if !bucket_valid {
            return Some(format!(
                "objects.s3.bucket: '{bucket}' is not a bucket name (3 to 63 lowercase letters, digits, '.' and '-')"
            ));
        }
        let endpoint = &self.endpoint;
        if !is_empty_or_http_address(endpoint) {
            return Some(format!(
                "objects.s3.endpoint: '{endpoint}' is not an http:// or https:// address (e.g. \"http://127.0.0.1:9000\"; empty for AWS S3)"
            ));
        }
        if self.region.trim().is_empty() {
            return Some("objects.s3.region: must not be empty (e.g. \"us-east-1\")".into());
        }
        let prefix_valid = self
            .prefix
            .split('/')
            .filter(|part| !part.is_empty())
            .all(|part| {
                part != "."
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if !prefix_valid {
            return Some(format!(
                "objects.s3.prefix: '{}' is not a key prefix (names of letters, digits, '-', '_' and '.', separated by '/')",
                self.prefix
            ));
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return Some("objects.s3.access_key_id and objects.s3.secret_access_key: give both, or neither to use the AWS_* environment".into());
        }
        None
    }
}

/// Whether an optional address setting is unset or an `http://` / `https://` address.
fn is_empty_or_http_address(address: &str) -> bool {
    address.is_empty() || address.starts_with("http://") || address.starts_with("https://")
}

/// The bucket of `objects.engine = "s3"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket's name (it must exist).
    pub bucket: String,
    /// The S3 API's address, e.g. `http://127.0.0.1:9000` for an S3-compatible server. Empty:
    /// AWS S3 for the region.
    pub endpoint: String,
    pub region: String,
    /// A key prefix every object is kept under, e.g. `gofer/prod` (empty: the bucket's root).
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), as most S3-compatible servers want;
    /// `false`: virtual-hosted (`bucket.endpoint/key`), as AWS prefers.
    pub path_style: bool,
    /// Empty: the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) environment.
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    pub engine: SecretsEngine,
    /// The AES-256-GCM key secret values are encrypted with: exactly 32 bytes. The default is
    /// refused outside development mode.
    pub encryption_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsSection {
    pub engine: ObjectsEngine,
    /// Used when `engine = "s3"`.
    pub s3: S3Settings,
    /// Most objects a pipeline keeps; storing one more evicts the oldest.
    pub pipeline_object_limit: u64,
    /// A run's objects are deleted when this many newer runs of its pipeline have started.
    pub run_object_expiry: u64,
    /// Largest object accepted, in MiB.
    pub max_object_size_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address the REST API listens on, `IP:PORT`.
    pub bind: SocketAddr,
    /// Where the database, logs and objects live. Empty: `$XDG_DATA_HOME/gofer`.
    pub data_dir: PathBuf,
    /// Seconds to let open requests and streams finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// PEM certificate chain for HTTPS; with `tls_key`. Empty: plain HTTP.
    #[serde(default)]
    pub tls_cert: PathBuf,
    /// PEM private key for HTTPS; with `tls_cert`.
    #[serde(default)]
    pub tls_key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Page size of list endpoints when the request gives no `limit`.
    pub default_page_limit: u64,
    /// Largest `limit` a list request may ask for.
    pub max_page_limit: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsSection {
    /// Most runs executing at once across all pipelines; more wait in the queue. 0: no limit.
    pub max_concurrent_runs: u64,
    /// Runs of one pipeline executing at once when its config sets `parallelism = 0`. 0: no limit.
    pub default_parallelism: u64,
    /// Seconds a cancelled task gets to stop (SIGTERM) before it is killed.
    pub stop_timeout_secs: u64,
    /// Task logs are kept for this many most recent runs of each pipeline.
    pub log_retention_runs: u64,
    /// Remove each task's container once its exit code and logs are recorded.
    pub remove_containers: bool,
    /// How long a running task waits for a container engine that went away (restarting, say)
    /// to come back before the task fails saying so, in seconds.
    pub engine_outage_secs: u64,
    /// The API address given to tasks as GOFER_API_BASE_URL. Empty: `http://` + `server.bind`.
    pub api_base_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    /// Folder of `.wasm` plugins, watched for changes. Empty: `<data_dir>/plugins`.
    pub dir: PathBuf,
    /// Where compiled plugins are cached. Empty: `<data_dir>/plugin-cache`.
    pub cache_dir: PathBuf,
    /// Memory one plugin instance may use, in MiB.
    pub memory_limit_mb: u64,
    /// CPU deadline of one trigger call (subscribe, wake, outside event), in milliseconds.
    pub trigger_call_timeout_ms: u64,
    /// Deadline of a shared task without its own `timeout`, in seconds.
    pub task_timeout_secs: u64,
    /// How long a gRPC plugin's new process has to print its handshake line and answer its
    /// health check, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// How long a stopping gRPC plugin gets after SIGTERM before SIGKILL, in milliseconds.
    pub stop_grace_ms: u64,
    /// How often a running gRPC plugin's health is checked, in milliseconds; two failed checks in
    /// a row (no answer within its call deadline) restart it.
    pub health_interval_ms: u64,
    /// Most objects a WebAssembly plugin may keep through its `objects` interface.
    pub object_limit: u64,
    /// Largest value a WebAssembly plugin may store as one object, in KiB.
    pub object_max_kib: u64,
    /// Largest body of an outside event (`POST /api/external/{plugin}`), in KiB.
    pub external_event_max_kib: u64,
    /// A plugin's own log is rotated past this many KiB (so at most twice that is kept).
    pub log_max_kib: u64,
    /// Outside events one plugin accepts per minute (bursts up to that many); more get 429.
    /// 0: no limit.
    pub external_events_per_minute: u64,
    /// What each plugin may reach beyond its sandbox, by plugin name.
    #[serde(default)]
    pub grants: BTreeMap<String, PluginGrants>,
    /// The operator's settings of each plugin, by plugin name (a plugin reads them with
    /// `host.config`); values may be `global_secret{{k}}` references.
    #[serde(default)]
    pub config: BTreeMap<String, BTreeMap<String, String>>,
}

/// Access granted to one plugin (`[plugins.grants.<plugin>]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginGrants {
    /// Hosts the plugin may send HTTP requests to: `example.com`, `*.example.com`, `*`, each
    /// optionally with `:port` (e.g. `127.0.0.1:8099`).
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Host directories the plugin may read, mounted at the same path (absolute paths).
    #[serde(default)]
    pub read_dirs: Vec<PathBuf>,
    /// Host directories the plugin may read and write, mounted at the same path.
    #[serde(default)]
    pub write_dirs: Vec<PathBuf>,
    /// The deadline of this plugin's trigger calls (and of its gRPC calls), in milliseconds,
    /// instead of `plugins.trigger_call_timeout_ms`.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
}

impl PluginsSection {
    /// Deadlines the operator set for particular plugins (`grants.<name>.call_timeout_ms`).
    pub fn call_deadlines(&self) -> BTreeMap<String, Duration> {
        self.grants
            .iter()
            .filter_map(|(plugin, grants)| {
                Some((
                    plugin.clone(),
                    Duration::from_millis(grants.call_timeout_ms?),
                ))
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `trace`, `debug`, `info`, `warn` or `error` (a full `RUST_LOG`-style filter also works).
    pub level: String,
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevelopmentSection {
    /// Everyone is an administrator and no token is needed. On by default so that a bare `gofer
    /// service start` just works on a laptop; the server says so loudly at start.
    pub bypass_auth: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            server: ServerSection {
                bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
                data_dir: PathBuf::new(),
                shutdown_timeout_secs: 10,
                tls_cert: PathBuf::new(),
                tls_key: PathBuf::new(),
            },
            api: ApiSection {
                default_page_limit: 100,
                max_page_limit: 1000,
            },
            runs: RunsSection {
                max_concurrent_runs: 2000,
                default_parallelism: 200,
                stop_timeout_secs: 30,
                log_retention_runs: 50,
                remove_containers: true,
                engine_outage_secs: 60,
                api_base_url: String::new(),
            },
            scheduler: SchedulerSection {
                engine: SchedulerEngine::Docker,
                socket: String::new(),
                placement_timeout_secs: 60,
            },
            plugins: PluginsSection {
                dir: PathBuf::new(),
                cache_dir: PathBuf::new(),
                memory_limit_mb: 64,
                trigger_call_timeout_ms: 1000,
                task_timeout_secs: 300,
                handshake_timeout_ms: 10_000,
                stop_grace_ms: 5_000,
                health_interval_ms: 5_000,
                object_limit: 1000,
                object_max_kib: 1024,
                external_event_max_kib: 1024,
                log_max_kib: 1024,
                external_events_per_minute: 600,
                grants: Default::default(),
                config: Default::default(),
            },
            log: LogSection {
                level: "info".into(),
                format: LogFormat::Pretty,
            },
            secrets: SecretsSection {
                engine: SecretsEngine::Sqlite,
                encryption_key: crate::secrets::DEFAULT_ENCRYPTION_KEY.into(),
            },
            objects: ObjectsSection {
                engine: ObjectsEngine::Filesystem,
                s3: S3Settings {
                    bucket: String::new(),
                    endpoint: String::new(),
                    region: "us-east-1".into(),
                    prefix: String::new(),
                    path_style: false,
                    access_key_id: String::new(),
                    secret_access_key: String::new(),
                },
                pipeline_object_limit: 50,
                run_object_expiry: 2,
                max_object_size_mb: 1024,
            },
            tracing: TracingSection {
                otlp_endpoint: String::new(),
                service_name: "gofer".into(),
            },
            metrics: MetricsSection {
                public: false,
                scrape_token: String::new(),
            },
            retention: RetentionSection {
                runs_per_pipeline: 0,
                runs_max_age_secs: 0,
                events_max_age_secs: 30 * 24 * 3600,
                interval_secs: 60,
                batch: 200,
            },
            development: DevelopmentSection { bypass_auth: true },
        }
    }
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    pub bind: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// `--auth`: development mode off (tokens required), whatever the lower layers say.
    pub auth: bool,
}

impl ServerConfig {
    /// Loads the layers. `file` is `--config`; without it the file named by `GOFER_CONFIG`, if set.
    pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> Result<Self, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(file) = &file {
            if !file.is_file() {
                return Err(ConfigError::MissingFile(file.clone()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only `GOFER_<SECTION>__<KEY>` variables are server configuration; `GOFER_TOKEN`,
        // `GOFER_API_BASE_URL` and friends belong to the CLI.
        figment = figment.merge(
            Env::prefixed("GOFER_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        if let Some(bind) = overrides.bind {
            figment = figment.merge(Serialized::default("server.bind", bind));
        }
        if let Some(data_dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("server.data_dir", data_dir));
        }
        if overrides.auth {
            figment = figment.merge(Serialized::default("development.bypass_auth", false));
        }
        let mut config: ServerConfig = figment
            .extract()
            .map_err(|error| ConfigError::Invalid(describe_figment_error(error)))?;
        config.check()?;
        if config.server.data_dir.as_os_str().is_empty() {
            config.server.data_dir = dirs::data_dir()
                .ok_or(ConfigError::NoDataDir)?
                .join("gofer");
        }
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.api.default_page_limit == 0 {
            return invalid("api.default_page_limit: must be at least 1".into());
        }
        let socket = self.scheduler.socket.as_str();
        if !socket.is_empty()
            && !["unix:///", "tcp://", "http://", "/"]
                .iter()
                .any(|prefix| socket.starts_with(prefix))
        {
            return invalid(format!(
                "scheduler.socket: '{socket}' is not an engine address (use e.g. \"unix:///run/podman/podman.sock\", \"/var/run/docker.sock\" or \"tcp://127.0.0.1:2375\")"
            ));
        }
        if self.api.max_page_limit < self.api.default_page_limit {
            return invalid(format!(
                "api.max_page_limit: {} is smaller than api.default_page_limit ({})",
                self.api.max_page_limit, self.api.default_page_limit
            ));
        }
        if self.plugins.memory_limit_mb == 0
            || self.plugins.trigger_call_timeout_ms == 0
            || self.plugins.task_timeout_secs == 0
            || self.plugins.handshake_timeout_ms == 0
            || self.plugins.object_max_kib == 0
            || self.plugins.external_event_max_kib == 0
            || self.plugins.health_interval_ms == 0
        {
            return invalid("plugins: memory_limit_mb, trigger_call_timeout_ms, task_timeout_secs, handshake_timeout_ms, health_interval_ms, object_max_kib and external_event_max_kib must be above 0".into());
        }
        for (plugin, grants) in &self.plugins.grants {
            for host in &grants.http_hosts {
                let valid = !host.is_empty()
                    && !host.contains("://")
                    && !host.contains('/')
                    && host
                        .rsplit_once(':')
                        .is_none_or(|(_, port)| port.parse::<u16>().is_ok());
                if !valid {
                    return invalid(format!(
                        "plugins.grants.{plugin}.http_hosts: '{host}' is not a host pattern (use e.g. \"api.example.com\", \"*.example.com\", \"127.0.0.1:8099\" or \"*\")"
                    ));
                }
            }
        }
        for (plugin, grants) in &self.plugins.grants {
            for (key, dirs) in [
                ("read_dirs", &grants.read_dirs),
                ("write_dirs", &grants.write_dirs),
            ] {
                if let Some(dir) = dirs.iter().find(|dir| !dir.is_absolute() || !dir.is_dir()) {
                    return invalid(format!(
                        "plugins.grants.{plugin}.{key}: '{}' is not an absolute path to an existing directory",
                        dir.display()
                    ));
                }
            }
        }
        if self.server.tls_cert.as_os_str().is_empty() != self.server.tls_key.as_os_str().is_empty()
        {
            return invalid(
                "server.tls_cert and server.tls_key: give both (HTTPS) or neither (HTTP)".into(),
            );
        }
        if self.secrets.encryption_key.len() != 32 {
            return invalid(format!(
                "secrets.encryption_key: must be exactly 32 bytes, got {}",
                self.secrets.encryption_key.len()
            ));
        }
        if !self.development.bypass_auth
            && self.secrets.encryption_key == crate::secrets::DEFAULT_ENCRYPTION_KEY
        {
            return invalid(
                "secrets.encryption_key: still the shipped default, which anyone can read; set your own 32-byte key (e.g. GOFER_SECRETS__ENCRYPTION_KEY) before turning development mode off".into(),
            );
        }
        if self.objects.pipeline_object_limit == 0
            || self.objects.run_object_expiry == 0
            || self.objects.max_object_size_mb == 0
        {
            return invalid("objects: pipeline_object_limit, run_object_expiry and max_object_size_mb must be above 0".into());
        }
        if self.scheduler.placement_timeout_secs == 0 {
            return invalid("scheduler.placement_timeout_secs must be above 0".into());
        }
        if self.objects.engine == ObjectsEngine::S3
            && let Some(problem) = self.objects.s3.problem()
        {
            return invalid(problem);
        }
        if self.retention.interval_secs == 0 || self.retention.batch == 0 {
            return invalid("retention.interval_secs and retention.batch must be above 0".into());
        }
        let endpoint = &self.tracing.otlp_endpoint;
        if !is_empty_or_http_address(endpoint) {
            return invalid(format!(
                "tracing.otlp_endpoint: '{endpoint}' is not an http:// or https:// address (e.g. \"http://127.0.0.1:4317\")"
            ));
        }
        if self.tracing.service_name.trim().is_empty() {
            return invalid("tracing.service_name: must not be empty".into());
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid(format!(
                "log.level: '{}' is not a log level or filter: {error}",
                self.log.level
            ));
        }
        Ok(())
    }

    /// The plugins folder.
    pub fn plugins_dir(&self) -> PathBuf {
        if self.plugins.dir.as_os_str().is_empty() {
            self.server.data_dir.join("plugins")
        } else {
            self.plugins.dir.clone()
        }
    }

    /// Where compiled plugins are cached.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        if self.plugins.cache_dir.as_os_str().is_empty() {
            self.server.data_dir.join("plugin-cache")
        } else {
            self.plugins.cache_dir.clone()
        }
    }

    /// Where task logs are kept.
    pub fn logs_dir(&self) -> PathBuf {
        self.server.data_dir.join("logs")
    }

    /// The API address tasks are told about.
    pub fn task_api_base_url(&self) -> String {
        if self.runs.api_base_url.is_empty() {
            format!("http://{}", self.server.bind)
        } else {
            self.runs.api_base_url.clone()
        }
    }

    /// Path of the SQLite database.
    pub fn database_path(&self) -> PathBuf {
        self.server.data_dir.join("gofer.db")
    }

    /// The encrypted secret values.
    pub fn secrets_path(&self) -> PathBuf {
        self.server.data_dir.join("secrets.db")
    }

    /// The object store's folder.
    pub fn objects_dir(&self) -> PathBuf {
        self.server.data_dir.join("objects")
    }
}

/// Turns figment's errors into one line per problem, each naming the key and where it came from
/// (the file, or the environment variable).
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".");
            let origin = match &error.metadata {
                Some(metadata) if metadata.name.contains("environment") => {
                    let variable = error
                        .path
                        .iter()
                        .map(|part| part.to_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .join("__");
                    format!(" (from environment variable GOFER_{variable})")
                }
                Some(metadata) => match &metadata.source {
                    Some(source) => format!(" (from {source})"),
                    None => format!(" (from {})", metadata.name),
                },
                None => String::new(),
            };
            if key.is_empty() {
                format!("{}{origin}", error.kind)
            } else {
                format!("{key}: {}{origin}", error.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_file_parses_to_the_defaults() {
        let parsed: ServerConfig = Figment::from(Toml::string(DEFAULT_CONFIG_TOML))
            .extract()
            .unwrap();
        assert_eq!(parsed, ServerConfig::default());
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gofer.toml");
        std::fs::write(
            &file,
            "[server]\nbind = \"127.0.0.1:9000\"\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let config = ServerConfig::load(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(config.server.bind.port(), 9000);
        assert_eq!(config.log.level, "debug");
        assert!(config.development.bypass_auth);
        assert!(config.server.data_dir.ends_with("gofer"));
    }
}
