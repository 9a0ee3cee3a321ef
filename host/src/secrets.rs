//! Secret values, behind the [`SecretStore`] trait (so another backend, e.g. Vault, can replace the
//! default), and the default: an SQLite file of its own (`<data_dir>/secrets.db`) whose values are
//! encrypted with AES-256-GCM under the operator's key (`secrets.encryption_key`).
//!
//! Owns encryption and the value file, and the names values are stored under ([`SecretKey`]).
//! Must not know about the API, runs or which secrets exist for a pipeline: that metadata lives in
//! the main database (`storage`), and only values live here.

use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::storage::{SecretValues, StorageError};

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
    Store(#[from] StorageError),
    #[error(
        "secret '{0}' cannot be decrypted: it was stored under another secrets.encryption_key, or the file is damaged"
    )]
    Decrypt(String),
    #[error("could not encrypt a secret")]
    Encrypt,
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
            } => format!("{}{key}", pipeline_prefix(namespace, pipeline)),
            Self::Global { key } => format!("global/{key}"),
        }
    }
}

/// The start of the storage names of a pipeline's values.
fn pipeline_prefix(namespace: &str, pipeline: &str) -> String {
    format!("pipeline/{namespace}/{pipeline}/")
}

/// Where secret values live.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    async fn get(&self, key: &SecretKey) -> Result<Option<String>, SecretError>;
    /// Stores (or replaces) a value.
    async fn put(&self, key: &SecretKey, value: &str) -> Result<(), SecretError>;
    async fn delete(&self, key: &SecretKey) -> Result<(), SecretError>;
    /// Deletes every value of a pipeline (it is being deleted).
    async fn delete_pipeline(&self, namespace: &str, pipeline: &str) -> Result<(), SecretError>;
    /// Encrypts a value kept outside the store (a registry password inside a stored config)
    /// under the store's key, as text starting with [`SEALED_PREFIX`].
    fn seal(&self, value: &str) -> Result<String, SecretError>;
    /// The value [`SecretStore::seal`] sealed.
    fn unseal(&self, sealed: &str) -> Result<String, SecretError>;
}

/// How a sealed value starts (version 1: hex of nonce and AES-256-GCM ciphertext).
pub const SEALED_PREFIX: &str = "gofer-sealed:v1:";

/// Whether a value is sealed (configs stored before sealing existed hold plain passwords).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// A fresh random nonce followed by the ciphertext.
fn encrypt(cipher: &Aes256Gcm, value: &[u8]) -> Result<Vec<u8>, SecretError> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(&nonce, value)
        .map_err(|_| SecretError::Encrypt)?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// The text `encrypt` sealed; `name` says which value in errors.
fn decrypt(cipher: &Aes256Gcm, sealed: &[u8], name: &str) -> Result<String, SecretError> {
    if sealed.len() < NONCE_BYTES {
        return Err(SecretError::Decrypt(name.to_string()));
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    let plaintext = cipher
        .decrypt(Nonce::from_slice(nonce), ciphertext)
        .map_err(|_| SecretError::Decrypt(name.to_string()))?;
    String::from_utf8(plaintext).map_err(|_| SecretError::Decrypt(name.to_string()))
}

/// The default store: values encrypted with AES-256-GCM (a fresh random nonce per value), kept
/// in their own SQLite file by `storage`.
pub struct EncryptedSqliteStore {
    values: SecretValues,
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
        Ok(Self {
            values: SecretValues::open(path)?,
            cipher: Arc::new(cipher),
        })
    }
}

#[async_trait::async_trait]
impl SecretStore for EncryptedSqliteStore {
    async fn get(&self, key: &SecretKey) -> Result<Option<String>, SecretError> {
        let name = key.storage_name();
        match self.values.get(name.clone()).await? {
            Some(sealed) => decrypt(&self.cipher, &sealed, &name).map(Some),
            None => Ok(None),
        }
    }

    async fn put(&self, key: &SecretKey, value: &str) -> Result<(), SecretError> {
        let sealed = encrypt(&self.cipher, value.as_bytes())?;
        Ok(self.values.put(key.storage_name(), sealed).await?)
    }

    async fn delete(&self, key: &SecretKey) -> Result<(), SecretError> {
        Ok(self.values.delete(key.storage_name()).await?)
    }

    async fn delete_pipeline(&self, namespace: &str, pipeline: &str) -> Result<(), SecretError> {
        self.values
            .delete_prefix(pipeline_prefix(namespace, pipeline))
            .await?;
        Ok(())
    }

    fn seal(&self, value: &str) -> Result<String, SecretError> {
        let sealed = encrypt(&self.cipher, value.as_bytes())?;
        let hex: String = sealed.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(format!("{SEALED_PREFIX}{hex}"))
    }

    fn unseal(&self, sealed: &str) -> Result<String, SecretError> {
        const WHAT: &str = "a sealed value";
        let hex = sealed
            .strip_prefix(SEALED_PREFIX)
            .filter(|hex| hex.len() % 2 == 0 && hex.is_ascii())
            .ok_or_else(|| SecretError::Decrypt(WHAT.into()))?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| SecretError::Decrypt(WHAT.into()))?;
        decrypt(&self.cipher, &bytes, WHAT)
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
            // The same whole-id rule as role targets (a pattern must parse on its own).
            crate::auth::full_match(pattern)
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

    #[test]
    fn sealed_values_open_only_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = EncryptedSqliteStore::open(
            &dir.path().join("a.db"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        let sealed = store.seal("registry-password").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("registry-password"));
        assert_ne!(
            sealed,
            store.seal("registry-password").unwrap(),
            "fresh nonces"
        );
        assert_eq!(store.unseal(&sealed).unwrap(), "registry-password");
        let other = EncryptedSqliteStore::open(
            &dir.path().join("b.db"),
            "ffffffffffffffffffffffffffffffff",
        )
        .unwrap();
        assert!(other.unseal(&sealed).is_err());
        for damaged in [
            "plain",
            "gofer-sealed:v1:zz",
            "gofer-sealed:v1:abc",
            "gofer-sealed:v1:",
        ] {
            assert!(store.unseal(damaged).is_err(), "{damaged}");
        }
    }
}
