//! The application layer: Gofer's use cases and their rules, between the HTTP handlers and the
//! parts that do the work (storage, the orchestrator and its trigger manager, the secret and
//! object stores). Registering, deploying and deleting pipelines, deleting namespaces, starting
//! and cancelling runs, subscribing pipelines to triggers, and storing objects all happen here,
//! in one order, whoever asks (the API today; the UI and the CLI through it).
//!
//! Must not know HTTP (a [`Caller`] says who asks and what they may do), nor run SQL, Docker,
//! wasmtime or tonic itself.

mod deployments;
pub mod health;
mod objects;
mod pipelines;
mod runs;
mod subscriptions;

use std::sync::Arc;

pub use crate::object_service::Owner;
pub use deployments::{DeploymentRequest, PromoteRequest, filled as filled_deployment};
pub use subscriptions::NewSubscription;

use crate::auth::Needed;
use crate::config::ServerConfig;
use crate::domain::Actor;
use crate::events::EventBus;
use crate::models::Action;
use crate::object_service::ObjectService;
use crate::objects::{ObjectError, ObjectStore};
use crate::orchestrator::triggers::TriggerManager;
use crate::orchestrator::{Orchestrator, OrchestratorError};
use crate::pipeline_config::ConfigError;
use crate::plugins::PluginError;
use crate::secrets::{SecretError, SecretStore};
use crate::storage::{Db, Storage, StorageError};

/// Who is asking, and what their roles let them do: the API's view of a request's token.
pub trait Caller: Send + Sync {
    fn actor(&self) -> Actor;
    /// Whether one permission allows `action` on every one of `resources` (without
    /// authentication, everything is allowed).
    fn may(&self, resources: Vec<Needed>, action: Action) -> bool;
}

/// Why a use case did not happen; each says what to do differently.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is wrong (a bad id, setting or reference).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (it names what was missing, never someone else's data).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Secrets(#[from] SecretError),
    /// Cleaning up after a deletion failed part way; what is left is named.
    #[error("{0}")]
    Cleanup(String),
}

/// The application: cheap to clone.
#[derive(Clone)]
pub struct App {
    storage: Storage,
    events: EventBus,
    orchestrator: Orchestrator,
    triggers: TriggerManager,
    secrets: Arc<dyn SecretStore>,
    objects: Arc<dyn ObjectStore>,
    object_service: ObjectService,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("App")
    }
}

impl App {
    pub fn new(
        storage: Storage,
        events: EventBus,
        (orchestrator, triggers): (Orchestrator, TriggerManager),
        (secrets, objects): (Arc<dyn SecretStore>, Arc<dyn ObjectStore>),
        config: Arc<ServerConfig>,
    ) -> Self {
        let object_service = ObjectService::new(storage.clone(), Arc::clone(&objects));
        Self {
            storage,
            events,
            orchestrator,
            triggers,
            secrets,
            objects,
            object_service,
            config,
        }
    }

    /// Runs a write transaction, then announces the events it stored.
    async fn write<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StorageError> + Send + 'static,
    {
        let (value, events) = self.storage.write(work).await?;
        self.events.publish(events);
        Ok(value)
    }

    async fn read<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StorageError> + Send + 'static,
    {
        self.storage.read(work).await
    }
}

/// Refuses unless `caller` may do `action` on the pipeline's `resource` (e.g. read its
/// `secrets`), naming `what` needed it.
fn require_on_pipeline(
    caller: &dyn Caller,
    (namespace, pipeline): (&str, &str),
    resource: &'static str,
    action: Action,
    what: &str,
) -> Result<(), AppError> {
    let resources = vec![
        Needed::on("namespaces", namespace),
        Needed::on("pipelines", pipeline),
        Needed {
            name: resource,
            target: None,
        },
    ];
    if caller.may(resources, action) {
        return Ok(());
    }
    let verb = match action {
        Action::Read => "read",
        Action::Write => "write",
        Action::Delete => "delete",
    };
    Err(AppError::Forbidden(format!(
        "{what} needs permission to {verb} the {resource} of pipeline '{pipeline}', which {} lacks",
        caller.actor()
    )))
}
