//! SQL for secret metadata (which secrets exist, and where global ones may be used). The values
//! themselves live in the secret store (`crate::secrets`), never here.

use rusqlite::{OptionalExtension, params};

use super::queries::{from_json, to_json};
use super::{Db, Page, Result, StorageError};
use crate::models::Secret;

impl Db<'_> {
    pub fn list_pipeline_secrets(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        page: Page,
    ) -> Result<Vec<Secret>> {
        self.get_pipeline(namespace_id, pipeline_id)?;
        let mut statement = self.conn.prepare_cached(
            "SELECT key, created FROM secret_keys_pipeline
             WHERE namespace_id = ?1 AND pipeline_id = ?2 ORDER BY key LIMIT ?3 OFFSET ?4",
        )?;
        let rows = statement.query_map(
            params![namespace_id, pipeline_id, page.limit, page.offset],
            |row| {
                Ok(Secret {
                    key: row.get(0)?,
                    namespaces: vec![namespace_id.to_string()],
                    created: row.get(1)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn get_pipeline_secret(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        key: &str,
    ) -> Result<Secret> {
        self.get_pipeline(namespace_id, pipeline_id)?;
        self.conn
            .prepare_cached(
                "SELECT created FROM secret_keys_pipeline
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND key = ?3",
            )?
            .query_row(params![namespace_id, pipeline_id, key], |row| row.get(0))
            .optional()?
            .map(|created| Secret {
                key: key.to_string(),
                namespaces: vec![namespace_id.to_string()],
                created,
            })
            .ok_or_else(|| {
                StorageError::NotFound(format!("secret '{key}' of pipeline '{pipeline_id}'"))
            })
    }

    /// Records a pipeline secret; an existing one is replaced only with `force`.
    pub fn put_pipeline_secret(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        key: &str,
        created: u64,
        force: bool,
    ) -> Result<Secret> {
        self.get_pipeline(namespace_id, pipeline_id)?;
        match self.get_pipeline_secret(namespace_id, pipeline_id, key) {
            Ok(_) if !force => {
                return Err(StorageError::Conflict(format!(
                    "secret '{key}' of pipeline '{pipeline_id}' already exists; set \"force\": true to replace it"
                )));
            }
            Ok(_) | Err(StorageError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        self.conn
            .prepare_cached(
                "INSERT INTO secret_keys_pipeline (namespace_id, pipeline_id, key, created)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace_id, pipeline_id, key) DO UPDATE SET created = excluded.created",
            )?
            .execute(params![namespace_id, pipeline_id, key, created])?;
        Ok(Secret {
            key: key.to_string(),
            namespaces: vec![namespace_id.to_string()],
            created,
        })
    }

    pub fn delete_pipeline_secret(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        key: &str,
    ) -> Result<()> {
        self.get_pipeline_secret(namespace_id, pipeline_id, key)?;
        self.conn
            .prepare_cached(
                "DELETE FROM secret_keys_pipeline WHERE namespace_id = ?1 AND pipeline_id = ?2 AND key = ?3",
            )?
            .execute(params![namespace_id, pipeline_id, key])?;
        Ok(())
    }

    pub fn list_global_secrets(&self, page: Page) -> Result<Vec<Secret>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT key, namespaces, created FROM secret_keys_global ORDER BY key LIMIT ?1 OFFSET ?2",
        )?;
        let rows = statement.query_map(params![page.limit, page.offset], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get(2)?,
            ))
        })?;
        rows.map(|row| {
            let (key, namespaces, created) = row?;
            Ok(Secret {
                key,
                namespaces: from_json("secret_keys_global.namespaces", &namespaces)?,
                created,
            })
        })
        .collect()
    }

    pub fn get_global_secret(&self, key: &str) -> Result<Secret> {
        let row: Option<(String, u64)> = self
            .conn
            .prepare_cached("SELECT namespaces, created FROM secret_keys_global WHERE key = ?1")?
            .query_row(params![key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let (namespaces, created) =
            row.ok_or_else(|| StorageError::NotFound(format!("global secret '{key}'")))?;
        Ok(Secret {
            key: key.to_string(),
            namespaces: from_json("secret_keys_global.namespaces", &namespaces)?,
            created,
        })
    }

    /// Records a global secret; an existing one is replaced only with `force`.
    pub fn put_global_secret(&self, secret: &Secret, force: bool) -> Result<()> {
        match self.get_global_secret(&secret.key) {
            Ok(_) if !force => {
                return Err(StorageError::Conflict(format!(
                    "global secret '{}' already exists; set \"force\": true to replace it",
                    secret.key
                )));
            }
            Ok(_) | Err(StorageError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        self.conn
            .prepare_cached(
                "INSERT INTO secret_keys_global (key, namespaces, created) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET namespaces = excluded.namespaces, created = excluded.created",
            )?
            .execute(params![
                secret.key,
                to_json(&secret.namespaces),
                secret.created
            ])?;
        Ok(())
    }

    pub fn delete_global_secret(&self, key: &str) -> Result<()> {
        self.get_global_secret(key)?;
        self.conn
            .prepare_cached("DELETE FROM secret_keys_global WHERE key = ?1")?
            .execute(params![key])?;
        Ok(())
    }
}
