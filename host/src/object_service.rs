//! Objects as Gofer keeps them, for every owner (a pipeline, a run, a plugin) and every caller
//! (the API, a WebAssembly plugin's `objects` interface): the row in the main database (which
//! objects exist, limits, eviction) and the bytes in the object store, always in one order.
//!
//! A new object's row comes first (so a limit holds when uploads race), then its bytes; the row is
//! undone if the bytes fail. A replaced object keeps its old bytes until the new ones are whole
//! (the store renames a complete file into place). Deleting drops the row, then the bytes. Must
//! not know HTTP or plugins: callers map [`ObjectServiceError`].

use std::sync::Arc;

use crate::models::{Object, now_millis};
use crate::objects::{ByteStream, ObjectError, ObjectKey, ObjectStore, validate_key};
use crate::storage::{ObjectScope, Page, Storage, StorageError};

/// Whose object it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Pipeline {
        namespace: String,
        pipeline: String,
    },
    Run {
        namespace: String,
        pipeline: String,
        run: u64,
    },
    Plugin {
        plugin: String,
    },
}

impl Owner {
    fn scope(&self) -> ObjectScope {
        match self.clone() {
            Self::Pipeline {
                namespace,
                pipeline,
            } => ObjectScope::Pipeline {
                namespace_id: namespace,
                pipeline_id: pipeline,
            },
            Self::Run {
                namespace,
                pipeline,
                run,
            } => ObjectScope::Run {
                namespace_id: namespace,
                pipeline_id: pipeline,
                run_id: run,
            },
            Self::Plugin { plugin } => ObjectScope::Plugin { plugin_id: plugin },
        }
    }

    fn key(&self, key: &str) -> ObjectKey {
        let key = key.to_string();
        match self.clone() {
            Self::Pipeline {
                namespace,
                pipeline,
            } => ObjectKey::Pipeline {
                namespace,
                pipeline,
                key,
            },
            Self::Run {
                namespace,
                pipeline,
                run,
            } => ObjectKey::Run {
                namespace,
                pipeline,
                run,
                key,
            },
            Self::Plugin { plugin } => ObjectKey::Plugin { plugin, key },
        }
    }
}

/// How many objects an owner keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    /// A new object past the limit evicts the oldest (pipeline objects).
    EvictOldest(u64),
    /// A new object past the limit is refused (a plugin's own objects).
    Refuse(u64),
}

/// Why an object was not stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectServiceError {
    #[error("{0}")]
    InvalidKey(String),
    #[error("object '{0}' already exists; add ?force=true to replace it")]
    Exists(String),
    #[error("there are already {0} objects; delete some first")]
    Full(u64),
    #[error("object '{0}': its contents are missing")]
    Missing(String),
    #[error(transparent)]
    Store(#[from] ObjectError),
    #[error(transparent)]
    Index(#[from] StorageError),
}

/// Rows and bytes together; cheap to clone.
#[derive(Clone)]
pub struct ObjectService {
    storage: Storage,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for ObjectService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectService")
    }
}

impl ObjectService {
    pub fn new(storage: Storage, store: Arc<dyn ObjectStore>) -> Self {
        Self { storage, store }
    }

    /// The owner's objects, oldest first (its owner must exist).
    pub async fn list(&self, owner: &Owner, page: Page) -> Result<Vec<Object>, ObjectServiceError> {
        let scope = owner.scope();
        Ok(self
            .storage
            .read(move |db| db.list_objects(&scope, page))
            .await?)
    }

    /// An object's bytes; `None` when there is no such object (a missing owner is an error).
    pub async fn get(
        &self,
        owner: &Owner,
        key: &str,
    ) -> Result<Option<ByteStream>, ObjectServiceError> {
        let (scope, name) = (owner.scope(), key.to_string());
        if self
            .storage
            .read(move |db| db.find_object(&scope, &name))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        match self.store.get(&owner.key(key)).await? {
            Some(stream) => Ok(Some(stream)),
            None => Err(ObjectServiceError::Missing(key.to_string())),
        }
    }

    /// Whether the object may be stored before its bytes are read: its key is valid, its owner
    /// exists, and it is new or `force` replaces it.
    pub async fn check_put(
        &self,
        owner: &Owner,
        key: &str,
        force: bool,
    ) -> Result<(), ObjectServiceError> {
        validate_key(key).map_err(ObjectServiceError::InvalidKey)?;
        let (scope, name) = (owner.scope(), key.to_string());
        let existing = self
            .storage
            .read(move |db| db.find_object(&scope, &name))
            .await?;
        match existing {
            Some(_) if !force => Err(ObjectServiceError::Exists(key.to_string())),
            _ => Ok(()),
        }
    }

    /// Stores (or with `force` replaces) an object from `body`, at most `max_bytes`.
    pub async fn put(
        &self,
        owner: &Owner,
        key: &str,
        body: ByteStream,
        (max_bytes, limit, force): (u64, Limit, bool),
    ) -> Result<Object, ObjectServiceError> {
        validate_key(key).map_err(ObjectServiceError::InvalidKey)?;
        let (scope, name) = (owner.scope(), key.to_string());
        // The row first: a new object is counted against the limit before its bytes exist.
        let admitted = self
            .storage
            .write(move |db| {
                let existing = db.find_object(&scope, &name)?;
                if existing.is_some() {
                    if !force {
                        return Ok(Err(ObjectServiceError::Exists(name)));
                    }
                    return Ok(Ok((None, Vec::new())));
                }
                let evicting = match limit {
                    Limit::Refuse(most) => {
                        let count = db
                            .list_objects(
                                &scope,
                                Page {
                                    limit: most.saturating_add(1).min(i64::MAX as u64),
                                    offset: 0,
                                },
                            )?
                            .len() as u64;
                        if count >= most {
                            return Ok(Err(ObjectServiceError::Full(most)));
                        }
                        None
                    }
                    Limit::EvictOldest(most) => Some(most),
                    Limit::Unlimited => None,
                };
                let (object, evicted) =
                    db.put_object(&scope, &name, now_millis(), false, evicting)?;
                Ok(Ok((Some(object), evicted)))
            })
            .await?
            .0;
        let (new, evicted) = admitted?;
        if let Err(error) = self.store.put(&owner.key(key), body, max_bytes).await {
            if new.is_some() {
                let (scope, name) = (owner.scope(), key.to_string());
                let _ = self
                    .storage
                    .write(move |db| db.delete_object(&scope, &name))
                    .await;
            }
            return Err(error.into());
        }
        let object = match new {
            Some(object) => object,
            None => {
                // Replaced: its time is the new bytes'.
                let (scope, name) = (owner.scope(), key.to_string());
                self.storage
                    .write(move |db| db.put_object(&scope, &name, now_millis(), true, None))
                    .await?
                    .0
                    .0
            }
        };
        for evicted in evicted {
            self.store.delete(&owner.key(&evicted)).await?;
        }
        Ok(object)
    }

    /// Deletes an object: the row, then the bytes.
    pub async fn delete(&self, owner: &Owner, key: &str) -> Result<(), ObjectServiceError> {
        let (scope, name) = (owner.scope(), key.to_string());
        self.storage
            .write(move |db| db.delete_object(&scope, &name))
            .await?;
        self.store.delete(&owner.key(key)).await?;
        Ok(())
    }
}
