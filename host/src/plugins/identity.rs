//! Plugins' own identities: what a plugin reaches as itself.
//!
//! Owns the API token each gRPC plugin process calls Gofer's REST API with (stored by hash, one
//! per plugin: a new process's token replaces the last one, and it is revoked when the process
//! stops; what it may do is derived from its metadata by `auth::plugin_token_role`), and the
//! WebAssembly plugins' objects interface, always scoped to the calling plugin. Must not decide
//! permissions, run SQL or handle object bytes itself.

use futures_util::StreamExt;
use std::path::PathBuf;

use crate::auth;
use crate::models::{PluginKind, Token, now_millis};
use crate::object_service::{Limit, ObjectService, ObjectServiceError, Owner};
use crate::objects::{ObjectError, validate_key};
use crate::storage::{Page, Storage, StorageError};

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

/// A plugin's own objects as the plugin reaches them (the WIT `objects` interface): always in its
/// own scope, whatever it asks for, bounded in size and count, through the one
/// [`ObjectService`].
pub struct PluginObjects {
    objects: ObjectService,
    /// Largest value (`plugins.object_max_kib`).
    max_bytes: u64,
    /// Most keys one plugin may hold (`plugins.object_limit`).
    max_count: u64,
}

impl std::fmt::Debug for PluginObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginObjects")
            .field("max_bytes", &self.max_bytes)
            .field("max_count", &self.max_count)
            .finish()
    }
}

/// Why a plugin's object call failed, as the plugin is told.
#[derive(Debug, thiserror::Error)]
pub enum PluginObjectError {
    #[error(
        "the value is {size} bytes; a plugin object may be at most {max} bytes (plugins.object_max_kib)"
    )]
    TooLarge { size: usize, max: u64 },
    #[error("the plugin already has {0} objects (plugins.object_limit); delete some first")]
    Full(u64),
    #[error("{0}")]
    Objects(ObjectServiceError),
}

impl From<ObjectServiceError> for PluginObjectError {
    fn from(error: ObjectServiceError) -> Self {
        match error {
            ObjectServiceError::Full(limit) => Self::Full(limit),
            other => Self::Objects(other),
        }
    }
}

impl PluginObjects {
    pub fn new(objects: ObjectService, max_bytes: u64, max_count: u64) -> Self {
        Self {
            objects,
            max_bytes,
            max_count,
        }
    }

    fn owner(plugin: &str) -> Owner {
        Owner::Plugin {
            plugin: plugin.to_string(),
        }
    }

    pub async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, PluginObjectError> {
        validate_key(key).map_err(ObjectServiceError::InvalidKey)?;
        let Some(mut stream) = self.objects.get(&Self::owner(plugin), key).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|error| ObjectServiceError::Store(ObjectError::Upload(error)))?;
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(PluginObjectError::TooLarge {
                    size: bytes.len() + chunk.len(),
                    max: self.max_bytes,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    pub async fn put(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), PluginObjectError> {
        if value.len() as u64 > self.max_bytes {
            return Err(PluginObjectError::TooLarge {
                size: value.len(),
                max: self.max_bytes,
            });
        }
        let body = futures_util::stream::once(async { Ok(bytes::Bytes::from(value)) }).boxed();
        let bounds = (self.max_bytes, Limit::Refuse(self.max_count), true);
        self.objects
            .put(&Self::owner(plugin), key, body, bounds)
            .await?;
        Ok(())
    }

    pub async fn delete(&self, plugin: &str, key: &str) -> Result<(), PluginObjectError> {
        validate_key(key).map_err(ObjectServiceError::InvalidKey)?;
        match self.objects.delete(&Self::owner(plugin), key).await {
            Ok(()) | Err(ObjectServiceError::Index(StorageError::NotFound(_))) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The plugin's keys, oldest first.
    pub async fn list(&self, plugin: &str) -> Result<Vec<String>, PluginObjectError> {
        let all = Page {
            limit: i64::MAX as u64,
            offset: 0,
        };
        let objects = self.objects.list(&Self::owner(plugin), all).await?;
        Ok(objects.into_iter().map(|object| object.key).collect())
    }
}
