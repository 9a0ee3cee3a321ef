//! The file of secret values (`<data_dir>/secrets.db`, apart from the main database so that the
//! two can be kept and backed up with different care): sealed bytes by name, nothing else. What
//! the names mean and how the bytes are sealed is `crate::secrets`'.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, StorageError};

/// Sealed values by name; cheap to clone.
#[derive(Clone)]
pub struct SecretValues {
    connection: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValues")
    }
}

impl SecretValues {
    /// Opens (creating if needed) the file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let open_error = |source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS secrets (
                     name  TEXT NOT NULL PRIMARY KEY,
                     value BLOB NOT NULL
                 ) STRICT;",
            )
            .map_err(open_error)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `work` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&connection)
        })
        .await
        .map_err(|error| StorageError::Worker(error.to_string()))?
    }

    pub async fn get(&self, name: String) -> Result<Option<Vec<u8>>> {
        self.with(move |connection| {
            Ok(connection
                .query_row(
                    "SELECT value FROM secrets WHERE name = ?1",
                    params![name],
                    |row| row.get(0),
                )
                .optional()?)
        })
        .await
    }

    pub async fn put(&self, name: String, sealed: Vec<u8>) -> Result<()> {
        self.with(move |connection| {
            connection.execute(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, sealed],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete(&self, name: String) -> Result<()> {
        self.with(move |connection| {
            connection.execute("DELETE FROM secrets WHERE name = ?1", params![name])?;
            Ok(())
        })
        .await
    }

    /// Deletes every value whose name starts with `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: String) -> Result<usize> {
        self.with(move |connection| {
            Ok(connection.execute(
                "DELETE FROM secrets WHERE substr(name, 1, length(?1)) = ?1",
                params![prefix],
            )?)
        })
        .await
    }
}
