//! Secret values, behind the [`SecretStore`] trait (so another backend, e.g. Vault, can replace the
//! default), and the default: an SQLite file of its own (`<data_dir>/secrets.db`) whose values are
//! encrypted with AES-256-GCM under the operator's key (`secrets.encryption_key`).
//!
//! Owns encryption and the value file, and the names values are stored under ([`SecretKey`]).
//! Must not know about the API, runs or which secrets exist for a pipeline: that metadata lives in
//! the main database (`storage`), and only values live here.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use rusqlite::{Connection, OptionalExtension, params};

/// The key shipped in the default config; refused outside development mode.
pub const DEFAULT_ENCRYPTION_KEY: &str = "changemechangemechangemechangeme";
/// Length of an AES-256-GCM nonce.
const NONCE_BYTES: usize = 12;

/// Why a secret could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secrets.encryption_key must be exactly 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("the secret store failed: {0}")]
    Store(#[from] rusqlite::Error),
    #[error(
        "secret '{0}' cannot be decrypted: it was stored under another secrets.encryption_key, or the file is damaged"
    )]
    Decrypt(String),
    #[error("could not encrypt a secret")]
    Encrypt,
    #[error("the secret store's worker stopped: {0}")]
    Worker(String),
}

/// Where a value is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretKey {
    Pipeline {
        namespace: String,
        pipeline: String,
        key: String,
    },
    Global {
        key: String,
    },
}

impl SecretKey {
    /// The name in the store: unambiguous, since ids cannot contain `/`.
    fn storage_name(&self) -> String {
        match self {
            Self::Pipeline {
                namespace,
                pipeline,
                key,
            } => format!("pipeline/{namespace}/{pipeline}/{key}"),
            Self::Global { key } => format!("global/{key}"),
        }
    }
}

/// Where secret values live.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    async fn get(&self, key: &SecretKey) -> Result<Option<String>, SecretError>;
    /// Stores (or replaces) a value.
    async fn put(&self, key: &SecretKey, value: &str) -> Result<(), SecretError>;
    async fn delete(&self, key: &SecretKey) -> Result<(), SecretError>;
}

/// The default store: values encrypted with AES-256-GCM (a fresh random nonce per value) in an
/// SQLite file.
pub struct EncryptedSqliteStore {
    connection: Arc<Mutex<Connection>>,
    cipher: Arc<Aes256Gcm>,
}

impl std::fmt::Debug for EncryptedSqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptedSqliteStore")
    }
}

impl EncryptedSqliteStore {
    pub fn open(path: &Path, encryption_key: &str) -> Result<Self, SecretError> {
        let key = encryption_key.as_bytes();
        if key.len() != 32 {
            return Err(SecretError::KeyLength(key.len()));
        }
        let cipher =
            Aes256Gcm::new_from_slice(key).map_err(|_| SecretError::KeyLength(key.len()))?;
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS secrets (
                 name  TEXT NOT NULL PRIMARY KEY,
                 value BLOB NOT NULL
             ) STRICT;",
        )?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            cipher: Arc::new(cipher),
        })
    }

    /// Runs `work` on the connection off the async threads.
    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, &Aes256Gcm) -> Result<T, SecretError> + Send + 'static,
    ) -> Result<T, SecretError> {
        let connection = Arc::clone(&self.connection);
        let cipher = Arc::clone(&self.cipher);
        tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&connection, &cipher)
        })
        .await
        .map_err(|error| SecretError::Worker(error.to_string()))?
    }
}

#[async_trait::async_trait]
impl SecretStore for EncryptedSqliteStore {
    async fn get(&self, key: &SecretKey) -> Result<Option<String>, SecretError> {
        let name = key.storage_name();
        self.with_connection(move |connection, cipher| {
            let sealed: Option<Vec<u8>> = connection
                .query_row(
                    "SELECT value FROM secrets WHERE name = ?1",
                    params![name],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(sealed) = sealed else {
                return Ok(None);
            };
            if sealed.len() < NONCE_BYTES {
                return Err(SecretError::Decrypt(name));
            }
            let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
            let plaintext = cipher
                .decrypt(Nonce::from_slice(nonce), ciphertext)
                .map_err(|_| SecretError::Decrypt(name.clone()))?;
            String::from_utf8(plaintext)
                .map(Some)
                .map_err(|_| SecretError::Decrypt(name))
        })
        .await
    }

    async fn put(&self, key: &SecretKey, value: &str) -> Result<(), SecretError> {
        let name = key.storage_name();
        let value = value.to_string();
        self.with_connection(move |connection, cipher| {
            let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
            let ciphertext = cipher
                .encrypt(&nonce, value.as_bytes())
                .map_err(|_| SecretError::Encrypt)?;
            let mut sealed = nonce.to_vec();
            sealed.extend_from_slice(&ciphertext);
            connection.execute(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, sealed],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &SecretKey) -> Result<(), SecretError> {
        let name = key.storage_name();
        self.with_connection(move |connection, _| {
            connection.execute("DELETE FROM secrets WHERE name = ?1", params![name])?;
            Ok(())
        })
        .await
    }
}

/// Checks global-secret namespace patterns: each a regex, matched against the whole id.
pub fn namespace_patterns(patterns: &[String]) -> Result<Vec<regex::Regex>, String> {
    if patterns.is_empty() {
        return Err(
            "namespaces is empty: list the namespaces that may use the secret (\".*\" for all)"
                .into(),
        );
    }
    patterns
        .iter()
        .map(|pattern| {
            regex::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|error| format!("namespaces: '{pattern}' is not a regex: {error}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SecretKey {
        SecretKey::Pipeline {
            namespace: "default".into(),
            pipeline: "deploy".into(),
            key: name.into(),
        }
    }

    #[tokio::test]
    async fn values_are_encrypted_at_rest_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.db");
        let store = EncryptedSqliteStore::open(&path, "0123456789abcdef0123456789abcdef").unwrap();
        store
            .put(&key("token"), "hunter2-very-secret")
            .await
            .unwrap();
        assert_eq!(
            store.get(&key("token")).await.unwrap().as_deref(),
            Some("hunter2-very-secret")
        );
        store.put(&key("token"), "replaced").await.unwrap();
        assert_eq!(
            store.get(&key("token")).await.unwrap().as_deref(),
            Some("replaced")
        );
        assert_eq!(
            store
                .get(&SecretKey::Global {
                    key: "token".into()
                })
                .await
                .unwrap(),
            None
        );
        drop(store);
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            assert!(!bytes.windows(8).any(|window| window == b"replaced"));
        }
        // Another key cannot read it, and says why.
        let other = EncryptedSqliteStore::open(&path, "ffffffffffffffffffffffffffffffff").unwrap();
        let error = other.get(&key("token")).await.unwrap_err().to_string();
        assert!(error.contains("another secrets.encryption_key"), "{error}");
        other.delete(&key("token")).await.unwrap();
        assert_eq!(other.get(&key("token")).await.unwrap(), None);
        assert!(matches!(
            EncryptedSqliteStore::open(&path, "short"),
            Err(SecretError::KeyLength(5))
        ));
    }
}
