//! The SQL itself: one method per query, each mapping rows to [`crate::models`] types.
//!
//! Must not start transactions (that is [`super::Storage`]'s job) nor decide policy: callers decide
//! what to check and in which order; these methods report `NotFound`/`AlreadyExists` faithfully.

use std::cell::RefCell;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Page, Result, StorageError};
use crate::models::{
    ConfigState, Deployment, DeploymentState, DeploymentStatus, Event, EventKind, Namespace,
    PipelineConfig, PipelineMetadata, PipelineState, SystemPreferences, Task, now_millis,
};

/// Query methods over one connection (inside a write transaction, or read-only).
pub struct Db<'c> {
    pub(super) conn: &'c Connection,
    events: RefCell<Vec<Event>>,
}

/// Encodes a value as JSON text for a column.
pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Decodes a JSON column, naming the column if it cannot be read.
pub(super) fn from_json<T: DeserializeOwned>(column: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| StorageError::Corrupt { column, source })
}

/// Encodes a unit enum as its bare wire spelling (`active`, `Running`, ...).
pub(super) fn enum_text<T: Serialize>(value: &T) -> String {
    to_json(value).trim_matches('"').to_string()
}

pub(super) fn enum_from_text<T: DeserializeOwned>(column: &'static str, text: &str) -> Result<T> {
    use serde::de::IntoDeserializer;
    T::deserialize(text.into_deserializer()).map_err(|error: serde::de::value::Error| {
        StorageError::Corrupt {
            column,
            source: serde::de::Error::custom(error),
        }
    })
}

/// Reads the text of column `index`, then decodes it with `decode`.
pub(super) fn column<T>(
    row: &Row,
    index: usize,
    decode: impl FnOnce(&str) -> Result<T>,
) -> Result<T> {
    let text: String = row.get(index)?;
    decode(&text)
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

const NAMESPACE_COLUMNS: &str = "id, name, description, created, modified";
const PIPELINE_COLUMNS: &str = "namespace_id, pipeline_id, created, modified, state";
const CONFIG_COLUMNS: &str = "namespace_id, pipeline_id, version, parallelism, name, description, registered, deprecated, state, timeout, triggers";
pub(super) const DEPLOYMENT_COLUMNS: &str = "namespace_id, pipeline_id, deployment_id, start_version, \
     end_version, started, ended, state, status, status_reason, kind, rollout";

impl<'c> Db<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            events: RefCell::new(Vec::new()),
        }
    }

    pub(super) fn take_events(&self) -> Vec<Event> {
        self.events.take()
    }

    // ---- namespaces -------------------------------------------------------------------------

    pub fn list_namespaces(&self, page: Page) -> Result<Vec<Namespace>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {NAMESPACE_COLUMNS} FROM namespaces ORDER BY id LIMIT ?1 OFFSET ?2"
        ))?;
        let rows = statement.query_map(params![page.limit, page.offset], namespace_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_namespace(&self, id: &str) -> Result<Namespace> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {NAMESPACE_COLUMNS} FROM namespaces WHERE id = ?1"
            ))?
            .query_row([id], namespace_from_row)
            .optional()?
            .ok_or_else(|| StorageError::NotFound(format!("namespace '{id}'")))
    }

    pub fn insert_namespace(&self, namespace: &Namespace) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO namespaces (id, name, description, created, modified)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                namespace.id,
                namespace.name,
                namespace.description,
                namespace.created,
                namespace.modified
            ])
            .map_err(|error| {
                if is_unique_violation(&error) {
                    StorageError::AlreadyExists(format!("namespace '{}'", namespace.id))
                } else {
                    error.into()
                }
            })?;
        Ok(())
    }

    pub fn update_namespace(&self, namespace: &Namespace) -> Result<()> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE namespaces SET name = ?2, description = ?3, modified = ?4 WHERE id = ?1",
            )?
            .execute(params![
                namespace.id,
                namespace.name,
                namespace.description,
                namespace.modified
            ])?;
        if changed == 0 {
            return Err(StorageError::NotFound(format!(
                "namespace '{}'",
                namespace.id
            )));
        }
        Ok(())
    }

    /// Deletes a namespace and, by cascade, everything in it. Returns whether it existed.
    pub fn delete_namespace(&self, id: &str) -> Result<bool> {
        let changed = self
            .conn
            .prepare_cached("DELETE FROM namespaces WHERE id = ?1")?
            .execute([id])?;
        Ok(changed > 0)
    }

    // ---- pipelines --------------------------------------------------------------------------

    pub fn list_pipelines(&self, namespace_id: &str, page: Page) -> Result<Vec<PipelineMetadata>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipeline_metadata WHERE namespace_id = ?1
             ORDER BY pipeline_id LIMIT ?2 OFFSET ?3"
        ))?;
        let rows = statement.query_map(params![namespace_id, page.limit, page.offset], |row| {
            Ok(pipeline_from_row(row))
        })?;
        rows.map(|row| row?).collect()
    }

    pub fn get_pipeline(&self, namespace_id: &str, pipeline_id: &str) -> Result<PipelineMetadata> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {PIPELINE_COLUMNS} FROM pipeline_metadata
                 WHERE namespace_id = ?1 AND pipeline_id = ?2"
            ))?
            .query_row([namespace_id, pipeline_id], |row| {
                Ok(pipeline_from_row(row))
            })
            .optional()?
            .unwrap_or_else(|| {
                Err(StorageError::NotFound(format!(
                    "pipeline '{pipeline_id}' in namespace '{namespace_id}'"
                )))
            })
    }

    pub fn insert_pipeline(&self, pipeline: &PipelineMetadata) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO pipeline_metadata (namespace_id, pipeline_id, created, modified, state)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                pipeline.namespace_id,
                pipeline.pipeline_id,
                pipeline.created,
                pipeline.modified,
                enum_text(&pipeline.state)
            ])?;
        Ok(())
    }

    pub fn update_pipeline_state(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        state: PipelineState,
        modified: u64,
    ) -> Result<()> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE pipeline_metadata SET state = ?3, modified = ?4
                 WHERE namespace_id = ?1 AND pipeline_id = ?2",
            )?
            .execute(params![
                namespace_id,
                pipeline_id,
                enum_text(&state),
                modified
            ])?;
        if changed == 0 {
            return Err(StorageError::NotFound(format!(
                "pipeline '{pipeline_id}' in namespace '{namespace_id}'"
            )));
        }
        Ok(())
    }

    /// Deletes a pipeline with its configs, deployments, runs and keys. Returns whether it existed.
    pub fn delete_pipeline(&self, namespace_id: &str, pipeline_id: &str) -> Result<bool> {
        let changed = self
            .conn
            .prepare_cached(
                "DELETE FROM pipeline_metadata WHERE namespace_id = ?1 AND pipeline_id = ?2",
            )?
            .execute([namespace_id, pipeline_id])?;
        Ok(changed > 0)
    }

    // ---- pipeline configs -------------------------------------------------------------------

    /// Configs of a pipeline, newest version first.
    pub fn list_configs(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        page: Page,
    ) -> Result<Vec<PipelineConfig>> {
        let versions: Vec<u64> = self
            .conn
            .prepare_cached(
                "SELECT version FROM pipeline_configs WHERE namespace_id = ?1 AND pipeline_id = ?2
                 ORDER BY version DESC LIMIT ?3 OFFSET ?4",
            )?
            .query_map(
                params![namespace_id, pipeline_id, page.limit, page.offset],
                |row| row.get(0),
            )?
            .collect::<Result<_, _>>()?;
        versions
            .into_iter()
            .map(|version| self.get_config(namespace_id, pipeline_id, version))
            .collect()
    }

    pub fn get_config(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        version: u64,
    ) -> Result<PipelineConfig> {
        let mut config = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CONFIG_COLUMNS} FROM pipeline_configs
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND version = ?3"
            ))?
            .query_row(params![namespace_id, pipeline_id, version], |row| {
                Ok(config_from_row(row))
            })
            .optional()?
            .unwrap_or_else(|| {
                Err(StorageError::NotFound(format!(
                    "config version {version} of pipeline '{pipeline_id}' in namespace '{namespace_id}'"
                )))
            })?;
        let mut statement = self.conn.prepare_cached(
            "SELECT task FROM tasks WHERE namespace_id = ?1 AND pipeline_id = ?2
             AND config_version = ?3 ORDER BY task_id",
        )?;
        let tasks = statement.query_map(params![namespace_id, pipeline_id, version], |row| {
            row.get::<_, String>(0)
        })?;
        for task in tasks {
            let task: Task = from_json("tasks.task", &task?)?;
            config.tasks.insert(task.id.clone(), task);
        }
        Ok(config)
    }

    /// The highest registered version, if any.
    pub fn latest_config_version(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
    ) -> Result<Option<u64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT MAX(version) FROM pipeline_configs WHERE namespace_id = ?1 AND pipeline_id = ?2",
            )?
            .query_row([namespace_id, pipeline_id], |row| row.get(0))?)
    }

    /// The version currently `live`, if any.
    pub fn live_config_version(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
    ) -> Result<Option<u64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT version FROM pipeline_configs
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND state = 'live'",
            )?
            .query_row([namespace_id, pipeline_id], |row| row.get(0))
            .optional()?)
    }

    pub fn insert_config(&self, config: &PipelineConfig) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO pipeline_configs ({CONFIG_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?
            .execute(params![
                config.namespace_id,
                config.pipeline_id,
                config.version,
                config.parallelism,
                config.name,
                config.description,
                config.registered,
                config.deprecated,
                enum_text(&config.state),
                config.timeout.as_ref().map(|timeout| timeout.text()),
                to_json(&config.triggers),
            ])?;
        let mut insert_task = self.conn.prepare_cached(
            "INSERT INTO tasks (namespace_id, pipeline_id, config_version, task_id, task)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for task in config.tasks.values() {
            insert_task.execute(params![
                config.namespace_id,
                config.pipeline_id,
                config.version,
                task.id,
                to_json(task)
            ])?;
        }
        Ok(())
    }

    pub fn set_config_state(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        version: u64,
        state: ConfigState,
        deprecated: u64,
    ) -> Result<()> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE pipeline_configs SET state = ?4, deprecated = ?5
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND version = ?3",
            )?
            .execute(params![
                namespace_id,
                pipeline_id,
                version,
                enum_text(&state),
                deprecated
            ])?;
        if changed == 0 {
            return Err(StorageError::NotFound(format!(
                "config version {version} of pipeline '{pipeline_id}' in namespace '{namespace_id}'"
            )));
        }
        Ok(())
    }

    /// Whether any run was made from this config version (such a version is kept).
    pub fn config_has_runs(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        version: u64,
    ) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE namespace_id = ?1 AND pipeline_id = ?2
                 AND pipeline_config_version = ?3)",
            )?
            .query_row(params![namespace_id, pipeline_id, version], |row| {
                row.get(0)
            })?)
    }

    pub fn delete_config(&self, namespace_id: &str, pipeline_id: &str, version: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "DELETE FROM pipeline_configs WHERE namespace_id = ?1 AND pipeline_id = ?2 AND version = ?3",
            )?
            .execute(params![namespace_id, pipeline_id, version])?;
        Ok(())
    }

    // ---- deployments ------------------------------------------------------------------------

    /// Deployments of a pipeline, oldest first (`reverse`: newest first).
    pub fn list_deployments(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        page: Page,
        reverse: bool,
    ) -> Result<Vec<Deployment>> {
        let order = if reverse { "DESC" } else { "ASC" };
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE namespace_id = ?1 AND pipeline_id = ?2
             ORDER BY deployment_id {order} LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = statement.query_map(
            params![namespace_id, pipeline_id, page.limit, page.offset],
            |row| Ok(deployment_from_row(row)),
        )?;
        rows.map(|row| row?).collect()
    }

    pub fn get_deployment(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        deployment_id: u64,
    ) -> Result<Deployment> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND deployment_id = ?3"
            ))?
            .query_row(params![namespace_id, pipeline_id, deployment_id], |row| {
                Ok(deployment_from_row(row))
            })
            .optional()?
            .unwrap_or_else(|| {
                Err(StorageError::NotFound(format!(
                    "deployment {deployment_id} of pipeline '{pipeline_id}' in namespace '{namespace_id}'"
                )))
            })
    }

    pub fn latest_deployment_id(&self, namespace_id: &str, pipeline_id: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COALESCE(MAX(deployment_id), 0) FROM deployments
                 WHERE namespace_id = ?1 AND pipeline_id = ?2",
            )?
            .query_row([namespace_id, pipeline_id], |row| row.get(0))?)
    }

    /// Inserts or replaces a deployment record.
    pub fn put_deployment(&self, deployment: &Deployment) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO deployments ({DEPLOYMENT_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                deployment.namespace_id,
                deployment.pipeline_id,
                deployment.deployment_id,
                deployment.start_version,
                deployment.end_version,
                deployment.started,
                deployment.ended,
                enum_text(&deployment.state),
                enum_text(&deployment.status),
                deployment.status_reason.as_ref().map(to_json),
                enum_text(&deployment.kind),
                // Tallies are counted from the runs when read, never stored.
                deployment
                    .rollout
                    .as_ref()
                    .map(|rollout| to_json(&crate::models::Rollout {
                        tallies: Vec::new(),
                        ..rollout.clone()
                    })),
            ])?;
        Ok(())
    }

    // ---- events -----------------------------------------------------------------------------

    /// Stores an event; it is handed to subscribers once the surrounding write commits.
    pub fn insert_event(&self, kind: EventKind) -> Result<Event> {
        let event = Event {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            emitted: now_millis(),
        };
        self.conn
            .prepare_cached("INSERT INTO events (id, kind, emitted) VALUES (?1, ?2, ?3)")?
            .execute(params![event.id, to_json(&event.kind), event.emitted])?;
        self.events.borrow_mut().push(event.clone());
        Ok(event)
    }

    /// A page of events in the order they were stored (`reverse`: newest first).
    /// A page of the event log. A page past the first is found by skipping positions in the
    /// small `events_by_seq` index, then reading only the page's events.
    pub fn list_events(&self, page: Page, reverse: bool) -> Result<Vec<Event>> {
        // One snapshot for the count and the page.
        let snapshot = self.conn.unchecked_transaction()?;
        let total: u64 = snapshot
            .prepare_cached("SELECT events FROM event_count")?
            .query_row([], |row| row.get(0))?;
        let Some(read) = page.read_from_nearer_end(total, reverse) else {
            return Ok(Vec::new());
        };
        let (order, from) = if read.reverse {
            ("DESC", "<=")
        } else {
            ("ASC", ">=")
        };
        let mut statement = snapshot.prepare_cached(&format!(
            "SELECT id, kind, emitted FROM events
             WHERE seq {from} (SELECT seq FROM events INDEXED BY events_by_seq
                               ORDER BY seq {order} LIMIT 1 OFFSET ?2)
             ORDER BY seq {order} LIMIT ?1"
        ))?;
        let rows = statement.query_map(params![read.limit, read.offset], |row| {
            Ok(event_from_row(row))
        })?;
        let mut events = rows.map(|row| row?).collect::<Result<Vec<Event>>>()?;
        if read.flipped {
            events.reverse();
        }
        Ok(events)
    }

    /// Up to `limit` events stored after position `after_seq` (0: from the start), oldest first,
    /// each with its position. Lets a live stream catch up without gaps or repeats.
    pub fn events_after(&self, after_seq: i64, limit: u64) -> Result<Vec<(i64, Event)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, kind, emitted, seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after_seq, limit], |row| {
            Ok(row
                .get::<_, i64>(3)
                .map_err(StorageError::from)
                .and_then(|seq| Ok((seq, event_from_row(row)?))))
        })?;
        rows.map(|row| row?).collect()
    }

    /// Position of the newest stored event (0 if there is none).
    pub fn latest_event_seq(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")?
            .query_row([], |row| row.get(0))?)
    }

    pub fn get_event(&self, id: &str) -> Result<Event> {
        self.conn
            .prepare_cached("SELECT id, kind, emitted FROM events WHERE id = ?1")?
            .query_row([id], |row| Ok(event_from_row(row)))
            .optional()?
            .unwrap_or_else(|| Err(StorageError::NotFound(format!("event '{id}'"))))
    }

    pub fn delete_event(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM events WHERE id = ?1")?
            .execute([id])?
            > 0)
    }

    // ---- system -----------------------------------------------------------------------------

    pub fn get_system(&self) -> Result<SystemPreferences> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT bootstrap_token_created, ignore_pipeline_run_events FROM system WHERE id = 1",
            )?
            .query_row([], |row| {
                Ok(SystemPreferences {
                    bootstrap_token_created: row.get(0)?,
                    ignore_pipeline_run_events: row.get(1)?,
                })
            })?)
    }

    pub fn set_ignore_pipeline_run_events(&self, ignore: bool) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE system SET ignore_pipeline_run_events = ?1 WHERE id = 1")?
            .execute([ignore])?;
        Ok(())
    }
}

fn namespace_from_row(row: &Row) -> rusqlite::Result<Namespace> {
    Ok(Namespace {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        created: row.get(3)?,
        modified: row.get(4)?,
    })
}

fn pipeline_from_row(row: &Row) -> Result<PipelineMetadata> {
    Ok(PipelineMetadata {
        namespace_id: row.get(0)?,
        pipeline_id: row.get(1)?,
        created: row.get(2)?,
        modified: row.get(3)?,
        state: column(row, 4, |text| {
            enum_from_text("pipeline_metadata.state", text)
        })?,
    })
}

fn config_from_row(row: &Row) -> Result<PipelineConfig> {
    Ok(PipelineConfig {
        namespace_id: row.get(0)?,
        pipeline_id: row.get(1)?,
        version: row.get(2)?,
        parallelism: row.get(3)?,
        name: row.get(4)?,
        description: row.get(5)?,
        registered: row.get(6)?,
        deprecated: row.get(7)?,
        state: column(row, 8, |text| {
            enum_from_text("pipeline_configs.state", text)
        })?,
        tasks: Default::default(),
        timeout: row
            .get::<_, Option<String>>(9)?
            .map(|text| {
                let quoted = serde_json::Value::String(text).to_string();
                from_json("pipeline_configs.timeout", &quoted)
            })
            .transpose()?,
        triggers: column(row, 10, |text| from_json("pipeline_configs.triggers", text))?,
    })
}

pub(super) fn deployment_from_row(row: &Row) -> Result<Deployment> {
    let status_reason: Option<String> = row.get(9)?;
    Ok(Deployment {
        namespace_id: row.get(0)?,
        pipeline_id: row.get(1)?,
        deployment_id: row.get(2)?,
        start_version: row.get(3)?,
        end_version: row.get(4)?,
        started: row.get(5)?,
        ended: row.get(6)?,
        state: column::<DeploymentState>(row, 7, |text| enum_from_text("deployments.state", text))?,
        status: column::<DeploymentStatus>(row, 8, |text| {
            enum_from_text("deployments.status", text)
        })?,
        status_reason: status_reason
            .map(|text| from_json("deployments.status_reason", &text))
            .transpose()?,
        logs: Vec::new(),
        kind: column(row, 10, |text| enum_from_text("deployments.kind", text))?,
        rollout: row
            .get::<_, Option<String>>(11)?
            .map(|text| from_json("deployments.rollout", &text))
            .transpose()?,
    })
}

pub(super) fn event_from_row(row: &Row) -> Result<Event> {
    Ok(Event {
        id: row.get(0)?,
        kind: column(row, 1, |text| from_json("events.kind", text))?,
        emitted: row.get(2)?,
    })
}
