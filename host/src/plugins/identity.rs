//! Plugins' own identities: the API token each gRPC plugin process calls Gofer's REST API with,
//! and where that API is.
//!
//! Owns issuing a process's token (stored by hash, one per plugin: a new process's token replaces
//! the last one) and revoking it when the process stops. What the token may do is derived from its
//! metadata by `auth::plugin_token_role`. Must not decide permissions or run SQL itself.

use std::path::PathBuf;

use crate::auth;
use crate::models::{PluginKind, Token, now_millis};
use crate::storage::{Storage, StorageError};

/// Environment variables a gRPC plugin process gets.
pub const TOKEN_ENV: &str = "GOFER_PLUGIN_TOKEN";
pub const API_BASE_URL_ENV: &str = "GOFER_API_BASE_URL";
/// Set when the API is served over TLS: the certificate file to trust.
pub const API_CA_CERT_ENV: &str = "GOFER_API_CA_CERT";

/// Issues and revokes plugins' tokens, and says where the API is.
pub struct PluginIdentities {
    storage: Storage,
    /// The API's address as plugins on this machine reach it, e.g. `http://127.0.0.1:8080`.
    pub api_base_url: String,
    /// The API's certificate when it is served over TLS.
    pub api_ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for PluginIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginIdentities")
            .field("api_base_url", &self.api_base_url)
            .finish()
    }
}

impl PluginIdentities {
    /// Forgets the tokens of earlier server processes' plugins (those processes are gone).
    pub async fn start(
        storage: Storage,
        api_base_url: String,
        api_ca_cert: Option<PathBuf>,
    ) -> Result<Self, StorageError> {
        let removed = storage.write(|db| db.delete_plugin_tokens()).await?.0;
        if removed > 0 {
            tracing::debug!(removed, "deleted the plugin tokens of an earlier start");
        }
        Ok(Self {
            storage,
            api_base_url,
            api_ca_cert,
        })
    }

    /// The environment a plugin process starts with, given the token secret it will hold.
    pub fn environment(&self, secret: &str) -> Vec<(&'static str, String)> {
        let mut environment = vec![
            (TOKEN_ENV, secret.to_string()),
            (API_BASE_URL_ENV, self.api_base_url.clone()),
        ];
        if let Some(certificate) = &self.api_ca_cert {
            environment.push((API_CA_CERT_ENV, certificate.display().to_string()));
        }
        environment
    }

    /// Makes `secret` plugin `name`'s token (replacing the token of its previous process);
    /// returns the token's id.
    pub async fn grant(
        &self,
        name: &str,
        kind: PluginKind,
        secret: &str,
    ) -> Result<String, StorageError> {
        let kind = match kind {
            PluginKind::Trigger => "trigger",
            PluginKind::Task => "task",
        };
        let token = Token {
            id: uuid::Uuid::now_v7().to_string(),
            created: now_millis(),
            metadata: [
                (auth::PLUGIN_ID.to_string(), name.to_string()),
                (auth::PLUGIN_KIND.to_string(), kind.to_string()),
            ]
            .into(),
            expires: 0,
            disabled: false,
            user: format!("{name} (plugin)"),
            roles: Vec::new(),
        };
        let id = token.id.clone();
        let hash = auth::hash_secret(secret);
        let plugin = name.to_string();
        self.storage
            .write(move |db| db.replace_plugin_token(&plugin, &token, &hash))
            .await?;
        Ok(id)
    }

    /// Deletes a stopped process's token (a token already replaced is gone already).
    pub async fn revoke(&self, token_id: &str) {
        let id = token_id.to_string();
        match self.storage.write(move |db| db.delete_token(&id)).await {
            Ok(_) | Err(StorageError::NotFound(_)) => {}
            Err(error) => tracing::warn!(%error, "could not delete a stopped plugin's token"),
        }
    }
}
