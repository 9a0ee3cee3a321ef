//! SQL for object metadata: which objects exist in each scope (pipeline, run, plugin), the
//! pipeline object limit and run object expiry. The bytes live in the object store
//! (`crate::objects`), never here.

use rusqlite::{OptionalExtension, params};

use super::{Db, Page, Result, StorageError};
use crate::models::Object;

/// Which objects a statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectScope {
    Pipeline {
        namespace_id: String,
        pipeline_id: String,
    },
    Run {
        namespace_id: String,
        pipeline_id: String,
        run_id: u64,
    },
    Plugin {
        plugin_id: String,
    },
}

impl ObjectScope {
    /// (table, WHERE clause over ?1.., the scope's values, words for messages)
    fn sql(
        &self,
    ) -> (
        &'static str,
        &'static str,
        Vec<rusqlite::types::Value>,
        String,
    ) {
        use rusqlite::types::Value;
        match self {
            Self::Pipeline {
                namespace_id,
                pipeline_id,
            } => (
                "object_keys_pipeline",
                "namespace_id = ?1 AND pipeline_id = ?2",
                vec![
                    Value::Text(namespace_id.clone()),
                    Value::Text(pipeline_id.clone()),
                ],
                format!("of pipeline '{pipeline_id}'"),
            ),
            Self::Run {
                namespace_id,
                pipeline_id,
                run_id,
            } => (
                "object_keys_run",
                "namespace_id = ?1 AND pipeline_id = ?2 AND run_id = ?3",
                vec![
                    Value::Text(namespace_id.clone()),
                    Value::Text(pipeline_id.clone()),
                    Value::Integer(*run_id as i64),
                ],
                format!("of run {run_id} of pipeline '{pipeline_id}'"),
            ),
            Self::Plugin { plugin_id } => (
                "object_keys_plugin",
                "plugin_id = ?1",
                vec![Value::Text(plugin_id.clone())],
                format!("of plugin '{plugin_id}'"),
            ),
        }
    }

    /// The scope's owner must exist (a pipeline, a run); plugins' objects need none.
    fn check_owner(&self, db: &Db<'_>) -> Result<()> {
        match self {
            Self::Pipeline {
                namespace_id,
                pipeline_id,
            } => db.get_pipeline(namespace_id, pipeline_id).map(|_| ()),
            Self::Run {
                namespace_id,
                pipeline_id,
                run_id,
            } => db.get_run(namespace_id, pipeline_id, *run_id).map(|_| ()),
            Self::Plugin { .. } => Ok(()),
        }
    }
}

impl Db<'_> {
    /// A scope's objects, oldest first.
    pub fn list_objects(&self, scope: &ObjectScope, page: Page) -> Result<Vec<Object>> {
        scope.check_owner(self)?;
        let (table, filter, mut values, _) = scope.sql();
        let count = values.len();
        values.push(rusqlite::types::Value::Integer(page.limit as i64));
        values.push(rusqlite::types::Value::Integer(page.offset as i64));
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT key, created FROM {table} WHERE {filter} ORDER BY created, key LIMIT ?{} OFFSET ?{}",
            count + 1,
            count + 2
        ))?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
            Ok(Object {
                key: row.get(0)?,
                created: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// An object, which must exist (its owner too).
    pub fn get_object(&self, scope: &ObjectScope, key: &str) -> Result<Object> {
        self.find_object(scope, key)?.ok_or_else(|| {
            let (_, _, _, words) = scope.sql();
            StorageError::NotFound(format!("object '{key}' {words}"))
        })
    }

    /// An object if it exists; an error if its owner (pipeline or run) does not.
    pub fn find_object(&self, scope: &ObjectScope, key: &str) -> Result<Option<Object>> {
        scope.check_owner(self)?;
        let (table, filter, mut values, _) = scope.sql();
        let position = values.len() + 1;
        values.push(rusqlite::types::Value::Text(key.to_string()));
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT created FROM {table} WHERE {filter} AND key = ?{position}"
            ))?
            .query_row(rusqlite::params_from_iter(values), |row| row.get(0))
            .optional()?
            .map(|created| Object {
                key: key.to_string(),
                created,
            }))
    }

    /// Records an object (an existing one is replaced only with `force`). With `limit`, the
    /// oldest objects beyond it are dropped; their keys are returned so their bytes can go too.
    pub fn put_object(
        &self,
        scope: &ObjectScope,
        key: &str,
        created: u64,
        force: bool,
        limit: Option<u64>,
    ) -> Result<(Object, Vec<String>)> {
        if self.find_object(scope, key)?.is_some() {
            if !force {
                let (_, _, _, words) = scope.sql();
                return Err(StorageError::Conflict(format!(
                    "object '{key}' {words} already exists; add ?force=true to replace it"
                )));
            }
            self.delete_object(scope, key)?;
        }
        let (table, _, mut values, _) = scope.sql();
        let columns = match scope {
            ObjectScope::Pipeline { .. } => "namespace_id, pipeline_id",
            ObjectScope::Run { .. } => "namespace_id, pipeline_id, run_id",
            ObjectScope::Plugin { .. } => "plugin_id",
        };
        let count = values.len();
        values.push(rusqlite::types::Value::Text(key.to_string()));
        values.push(rusqlite::types::Value::Integer(created as i64));
        let placeholders: Vec<String> = (1..=count + 2).map(|i| format!("?{i}")).collect();
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {table} ({columns}, key, created) VALUES ({})",
                placeholders.join(", ")
            ))?
            .execute(rusqlite::params_from_iter(values))?;
        let mut evicted = Vec::new();
        if let Some(limit) = limit {
            let all = self.list_objects(
                scope,
                Page {
                    limit: u64::MAX >> 1,
                    offset: 0,
                },
            )?;
            let excess = all.len().saturating_sub(limit as usize);
            for object in all.into_iter().take(excess) {
                self.delete_object(scope, &object.key)?;
                evicted.push(object.key);
            }
        }
        Ok((
            Object {
                key: key.to_string(),
                created,
            },
            evicted,
        ))
    }

    pub fn delete_object(&self, scope: &ObjectScope, key: &str) -> Result<()> {
        self.get_object(scope, key)?;
        let (table, filter, mut values, _) = scope.sql();
        let position = values.len() + 1;
        values.push(rusqlite::types::Value::Text(key.to_string()));
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE {filter} AND key = ?{position}"
            ))?
            .execute(rusqlite::params_from_iter(values))?;
        Ok(())
    }

    /// Expires the objects of the complete runs of a pipeline older than its `keep` newest runs:
    /// drops their rows, marks the runs expired, and returns (run id, key) of what was dropped.
    pub fn expire_run_objects(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        keep: u64,
    ) -> Result<Vec<(u64, String)>> {
        let expired: Vec<(u64, String)> = {
            let mut statement = self.conn.prepare_cached(
                "SELECT o.run_id, o.key FROM object_keys_run o
                 WHERE o.namespace_id = ?1 AND o.pipeline_id = ?2 AND o.run_id <= (
                     SELECT COALESCE(MAX(run_id), 0) FROM runs
                     WHERE namespace_id = ?1 AND pipeline_id = ?2) - ?3
                 AND EXISTS (SELECT 1 FROM runs r WHERE r.namespace_id = ?1 AND r.pipeline_id = ?2
                     AND r.run_id = o.run_id AND r.state = 'complete')",
            )?;
            let rows = statement.query_map(params![namespace_id, pipeline_id, keep], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        self.conn
            .prepare_cached(
                "DELETE FROM object_keys_run WHERE namespace_id = ?1 AND pipeline_id = ?2 AND run_id <= (
                     SELECT COALESCE(MAX(run_id), 0) FROM runs
                     WHERE namespace_id = ?1 AND pipeline_id = ?2) - ?3
                 AND EXISTS (SELECT 1 FROM runs r WHERE r.namespace_id = ?1 AND r.pipeline_id = ?2
                     AND r.run_id = object_keys_run.run_id AND r.state = 'complete')",
            )?
            .execute(params![namespace_id, pipeline_id, keep])?;
        self.conn
            .prepare_cached(
                "UPDATE runs INDEXED BY runs_objects_kept SET store_objects_expired = 1
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND store_objects_expired = 0
                   AND state = 'complete' AND run_id <= (
                     SELECT COALESCE(MAX(run_id), 0) FROM runs
                     WHERE namespace_id = ?1 AND pipeline_id = ?2) - ?3",
            )?
            .execute(params![namespace_id, pipeline_id, keep])?;
        Ok(expired)
    }
}
