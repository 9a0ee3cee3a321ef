//! Readiness: whether this server can do its work now. The database takes a write, the container
//! engine answers, and the plugins folder has been loaded. Each check says what it found.
//!
//! Must not change anything (the database check commits an empty transaction) and must answer
//! quickly: each check has its own short deadline, so a hung engine makes the server "not ready",
//! never a hung probe.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::App;

/// How long one check may take before it counts as failed.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessCheck {
    /// `database`, `container_engine` or `plugins`.
    pub name: String,
    pub ok: bool,
    /// What was found, or why it failed.
    pub detail: String,
}

impl App {
    /// Runs every readiness check at once.
    pub async fn readiness(&self) -> Vec<ReadinessCheck> {
        let database = async {
            match tokio::time::timeout(CHECK_DEADLINE, self.storage.write(|_| Ok(()))).await {
                Ok(Ok(_)) => (true, "writable".to_string()),
                Ok(Err(error)) => (false, format!("not writable: {error}")),
                Err(_) => (false, format!("no write within {CHECK_DEADLINE:?}")),
            }
        };
        let engine = async {
            match tokio::time::timeout(CHECK_DEADLINE, self.orchestrator.engine_reachable()).await {
                Ok(Ok(())) => (true, "reachable".to_string()),
                Ok(Err(error)) => (false, error.to_string()),
                Err(_) => (false, format!("no answer within {CHECK_DEADLINE:?}")),
            }
        };
        let ((database_ok, database), (engine_ok, engine)) = tokio::join!(database, engine);
        let registry = self.triggers.registry();
        let loaded = registry.is_loaded();
        let plugins = registry.list();
        let failed: Vec<String> = plugins
            .iter()
            .filter(|plugin| plugin.status == "failed")
            .map(|plugin| plugin.name.clone())
            .collect();
        let plugins_detail = if !loaded {
            "loading the built-in plugins and the plugins folder".to_string()
        } else if failed.is_empty() {
            format!("{} loaded", plugins.len())
        } else {
            format!(
                "{} loaded, {} failed to load ({}): see GET /api/plugins",
                plugins.len() - failed.len(),
                failed.len(),
                failed.join(", ")
            )
        };
        vec![
            ReadinessCheck {
                name: "database".into(),
                ok: database_ok,
                detail: database,
            },
            ReadinessCheck {
                name: "container_engine".into(),
                ok: engine_ok,
                detail: engine,
            },
            // Not ready until the first load is done (the server answers meanwhile); a plugin
            // that failed to load is reported here but does not make the server unready (its
            // pipelines say so).
            ReadinessCheck {
                name: "plugins".into(),
                ok: loaded,
                detail: plugins_detail,
            },
        ]
    }
}
