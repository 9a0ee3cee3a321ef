//! The server process: start-up, serving, graceful shutdown.
//!
//! Owns the order of start-up (data directory, storage and migrations, the `default` namespace,
//! the listener) and of shutdown (stop accepting, end live streams, let requests finish within
//! `server.shutdown_timeout_secs`). Must not contain request handling (that is `api`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::ServiceExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiState};
use crate::config::ServerConfig;
use crate::config::{ObjectsEngine, SchedulerEngine};
use crate::events::EventBus;
use crate::logs::LogStore;
use crate::models::{EventKind, Namespace, now_millis};
use crate::objects::s3::S3ObjectStore;
use crate::objects::{FsObjectStore, ObjectStore};
use crate::orchestrator::triggers::TriggerManager;
use crate::orchestrator::{Orchestrator, OrchestratorError, RunSettings};
use crate::plugins::PluginRegistry;
use crate::plugins::grpc::GrpcSettings;
use crate::plugins::identity::{PluginIdentities, PluginObjects};
use crate::plugins::wasm::{Limits, WasmRuntime};
use crate::scheduler::docker::DockerScheduler;
use crate::scheduler::swarm::SwarmScheduler;
use crate::secrets::{EncryptedSqliteStore, SecretStore};
use crate::storage::{Storage, StorageError};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("could not open the secret store: {0}")]
    Secrets(#[from] crate::secrets::SecretError),
    #[error("could not open the object store: {0}")]
    Objects(#[from] crate::objects::ObjectError),
    #[error("could not start the plugin runtime: {0}")]
    Plugins(#[from] crate::plugins::PluginError),
    #[error("could not resume runs: {0}")]
    Orchestrator(#[from] OrchestratorError),
    #[error("could not listen on {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// The namespace every fresh server has.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: ServerConfig) -> Result<(), ServerError> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServerError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let storage = Storage::open(&config.database_path())?;
    let secrets: Arc<dyn SecretStore> = Arc::new(EncryptedSqliteStore::open(
        &config.secrets_path(),
        &config.secrets.encryption_key,
    )?);
    let objects: Arc<dyn ObjectStore> = match config.objects.engine {
        ObjectsEngine::Filesystem => Arc::new(FsObjectStore::new(config.objects_dir())),
        ObjectsEngine::S3 => Arc::new(S3ObjectStore::connect(&config.objects.s3).await?),
    };
    let events = EventBus::default();
    crate::metrics::observe_events(&events);
    ensure_default_namespace(&storage, &events).await?;
    storage
        .write(|db| {
            for role in crate::auth::system_roles() {
                db.put_role(&role, true)?;
            }
            Ok(())
        })
        .await?;
    let scheduler: Arc<dyn crate::scheduler::Scheduler> = match config.scheduler.engine {
        SchedulerEngine::Docker | SchedulerEngine::Podman => {
            Arc::new(DockerScheduler::connect(&config.scheduler))
        }
        SchedulerEngine::Swarm => Arc::new(SwarmScheduler::connect(&config.scheduler)),
    };
    let object_service =
        crate::object_service::ObjectService::new(storage.clone(), Arc::clone(&objects));
    let plugin_objects = PluginObjects::new(
        object_service.clone(),
        config.plugins.object_max_kib << 10,
        config.plugins.object_limit,
    );
    let plugin_logs = crate::plugins::logs::PluginLogs::new(
        data_dir.join("plugin-logs"),
        config.plugins.log_max_kib << 10,
    );
    let runtime = WasmRuntime::new(
        config.plugin_cache_dir(),
        Limits::from_config(&config.plugins),
        Some(Arc::new(plugin_objects)),
        plugin_logs.clone(),
    )?;
    // Listening before plugins start, so that they are told the real port (`--bind :0`).
    let tls = if config.server.tls_cert.as_os_str().is_empty() {
        None
    } else {
        Some(crate::tls::acceptor(
            &config.server.tls_cert,
            &config.server.tls_key,
        )?)
    };
    let address = config.server.bind;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind { address, source })?;
    let local_address = listener.local_addr().map_err(ServerError::Serve)?;

    crate::plugins::grpc::remove_stale_socket_dirs();
    let identities = PluginIdentities::start(
        storage.clone(),
        loopback_url(local_address, tls.is_some()),
        tls.is_some().then(|| config.server.tls_cert.clone()),
    )
    .await?;
    let grpc = GrpcSettings {
        identities: Some(Arc::new(identities)),
        logs: Some(plugin_logs),
        ..GrpcSettings::from_config(&config.plugins)
    };
    // Plugins load in the background once the trigger manager can take their fires (below):
    // the server answers meanwhile, and what needs a plugin waits for the first load.
    let registry = PluginRegistry::new(runtime, grpc, config.plugins_dir());
    let (task_api_url, task_listener) =
        task_api_address(&config, scheduler.as_ref(), local_address, tls.is_some()).await;
    let plugin_processes = registry.clone();
    let mut run_settings = RunSettings::from_config(&config);
    run_settings.api_base_url = task_api_url;
    let orchestrator = Orchestrator::new(
        storage.clone(),
        events.clone(),
        scheduler,
        registry.clone(),
        LogStore::new(config.logs_dir()),
        (Arc::clone(&secrets), Arc::clone(&objects)),
        run_settings,
    );
    orchestrator.start().await?;
    orchestrator.spawn_retention(config.retention.clone());
    let triggers = TriggerManager::start(
        storage.clone(),
        orchestrator.clone(),
        registry.clone(),
        config.plugins.config.clone(),
    )
    .await;
    registry.start_loading();

    if config.development.bypass_auth {
        tracing::warn!(
            "DEVELOPMENT MODE: authentication is off and every caller is an administrator. \
             Do not expose this server; set development.bypass_auth = false for shared use."
        );
    }
    tracing::info!(
        address = %local_address,
        data_dir = %data_dir.display(),
        schema_version = Storage::schema_version(),
        https = tls.is_some(),
        "gofer server listening"
    );

    let (shutdown_sender, shutdown) = watch::channel(false);
    let shutdown_signal = shutdown.clone();
    let shutdown_timeout = Duration::from_secs(config.server.shutdown_timeout_secs);
    let config = Arc::new(config);
    let app = crate::app::App::new(
        storage.clone(),
        events.clone(),
        (orchestrator.clone(), triggers.clone()),
        (Arc::clone(&secrets), Arc::clone(&objects)),
        Arc::clone(&config),
    );
    app.supervise_canaries();
    let state = ApiState {
        app,
        storage,
        events,
        orchestrator,
        triggers,
        config,
        secrets,
        objects,
        shutdown,
    };
    let app = api::service(state);
    let (stopped_sender, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("shutting down: no new connections; open requests get {shutdown_timeout:?}");
        let _ = shutdown_sender.send(true);
        let _ = stopped_sender.send(());
    });
    let mut serving = vec![serve_on(
        listener,
        tls.clone(),
        app.clone(),
        shutdown_signal.clone(),
    )?];
    if let Some(listener) = task_listener {
        serving.push(serve_on(listener, tls, app, shutdown_signal)?);
    }
    // Listeners stop together at shutdown; one failing stops the server.
    let serving = tokio::spawn(async move {
        futures_util::future::try_join_all(serving)
            .await
            .map(|_| ())
    });
    let outcome = tokio::select! {
        outcome = serving => outcome,
        _ = async {
            let _ = stopped.await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!("open connections did not finish within {shutdown_timeout:?}; stopping anyway");
            plugin_processes.shutdown().await;
            return Ok(());
        }
    };
    plugin_processes.shutdown().await;
    match outcome {
        Ok(Ok(())) => {
            tracing::info!("gofer server stopped");
            Ok(())
        }
        Ok(Err(error)) => Err(ServerError::Serve(error)),
        Err(join) => Err(ServerError::Serve(std::io::Error::other(join.to_string()))),
    }
}

/// Serves the API on one listener until `shutdown` turns true.
fn serve_on(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: api::ApiService,
    mut shutdown: watch::Receiver<bool>,
) -> Result<futures_util::future::BoxFuture<'static, std::io::Result<()>>, ServerError> {
    let stop = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    Ok(match tls {
        Some(acceptor) => {
            let listener =
                crate::tls::TlsListener::new(listener, acceptor).map_err(ServerError::Serve)?;
            Box::pin(
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<api::Peer>(),
                )
                .with_graceful_shutdown(stop)
                .into_future(),
            )
        }
        None => Box::pin(
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<api::Peer>(),
            )
            .with_graceful_shutdown(stop)
            .into_future(),
        ),
    })
}

/// How long start-up waits for the container engine to say where containers reach this host.
const HOST_ADDRESS_TIMEOUT: Duration = Duration::from_secs(3);

/// Where task containers reach the API (`GOFER_API_BASE_URL`): `runs.api_base_url` when set;
/// else this server as containers see it. A container cannot reach the host's loopback, so with
/// a loopback bind (the default) the server also listens on the host's address on the Docker
/// bridge, same port when free, and returns that listener too.
async fn task_api_address(
    config: &ServerConfig,
    scheduler: &dyn crate::scheduler::Scheduler,
    listening: std::net::SocketAddr,
    tls: bool,
) -> (String, Option<TcpListener>) {
    if !config.runs.api_base_url.is_empty() {
        return (config.runs.api_base_url.clone(), None);
    }
    let scheme = if tls { "https" } else { "http" };
    let ip = listening.ip();
    if !ip.is_loopback() && !ip.is_unspecified() {
        return (format!("{scheme}://{listening}"), None);
    }
    let fallback = loopback_url(listening, tls);
    let asked = tokio::time::timeout(HOST_ADDRESS_TIMEOUT, scheduler.host_address()).await;
    let host = match asked {
        Ok(Ok(Some(host))) => host,
        outcome => {
            let problem = match outcome {
                Ok(Ok(_)) => "the engine's bridge network names no host address".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("the engine did not answer within {HOST_ADDRESS_TIMEOUT:?}"),
            };
            tracing::warn!(
                %problem,
                "cannot tell where task containers reach this server; tasks get {fallback} as \
                 GOFER_API_BASE_URL (set runs.api_base_url to choose)"
            );
            return (fallback, None);
        }
    };
    if ip.is_unspecified() {
        let address = std::net::SocketAddr::new(host, listening.port());
        return (format!("{scheme}://{address}"), None);
    }
    let mut bound = TcpListener::bind((host, listening.port())).await;
    if bound.is_err() {
        bound = TcpListener::bind((host, 0)).await;
    }
    match bound.and_then(|listener| Ok((listener.local_addr()?, listener))) {
        Ok((address, listener)) => {
            tracing::info!(%address, "listening for task containers on the Docker bridge");
            (format!("{scheme}://{address}"), Some(listener))
        }
        Err(error) => {
            tracing::warn!(
                %host, %error,
                "cannot listen on the Docker bridge; tasks get {fallback} as GOFER_API_BASE_URL \
                 (set runs.api_base_url to choose)"
            );
            (fallback, None)
        }
    }
}

/// The API's address as a process on this machine reaches it: the listening port on loopback
/// (`localhost` with TLS, the name certificates are made for).
fn loopback_url(listening: std::net::SocketAddr, tls: bool) -> String {
    let port = listening.port();
    if tls {
        return format!("https://localhost:{port}");
    }
    let ip = listening.ip();
    let host = match ip {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    format!("http://{host}:{port}")
}

async fn ensure_default_namespace(
    storage: &Storage,
    events: &EventBus,
) -> Result<(), StorageError> {
    let (_, stored_events) = storage
        .write(|db| match db.get_namespace(DEFAULT_NAMESPACE) {
            Ok(_) => Ok(()),
            Err(StorageError::NotFound(_)) => {
                db.insert_namespace(&Namespace {
                    id: DEFAULT_NAMESPACE.into(),
                    name: "Default".into(),
                    description:
                        "The original namespace created automatically by the Gofer system.".into(),
                    created: now_millis(),
                    modified: 0,
                })?;
                db.insert_event(EventKind::CreatedNamespace {
                    namespace_id: DEFAULT_NAMESPACE.into(),
                })?;
                Ok(())
            }
            Err(other) => Err(other),
        })
        .await?;
    events.publish(stored_events);
    Ok(())
}

async fn wait_for_stop_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
