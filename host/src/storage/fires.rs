//! SQL for fires: each committed as a row before it is acted on, then marked with its outcome
//! (the run it started, in that run's own transaction, or why it started none).

use rusqlite::{OptionalExtension, params};

use super::queries::{from_json, to_json};
use super::{Db, Result};
use crate::domain::{Fire, FireOutcome, SubscriptionHandle};

/// A fire as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFire {
    pub id: i64,
    pub plugin: String,
    pub fire: Fire,
}

/// What recording a fire found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new fire (or one the server stopped in the middle of): act on it.
    Pending(StoredFire),
    /// The same plugin and key fired before, with this outcome.
    Done(FireOutcome),
}

impl Db<'_> {
    /// Records a fire of `plugin`; with an idempotency key seen before, returns that fire instead
    /// (its outcome, or the fire itself if it has none yet).
    pub fn record_fire(&self, plugin: &str, fire: &Fire, received: u64) -> Result<Recorded> {
        if let Some(key) = &fire.idempotency_key {
            let earlier = self
                .conn
                .prepare_cached(
                    "SELECT id, handle, variables, run_id, refused FROM fires
                     WHERE plugin_id = ?1 AND idempotency_key = ?2",
                )?
                .query_row(params![plugin, key], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<u64>>(3)?,
                        row.get::<_, Option<String>>(4)?,
                    ))
                })
                .optional()?;
            if let Some((id, handle, variables, run, refused)) = earlier {
                return Ok(match (run, refused) {
                    (Some(run), _) => Recorded::Done(FireOutcome::Duplicate(run)),
                    (None, Some(why)) => Recorded::Done(FireOutcome::Refused(why)),
                    (None, None) => Recorded::Pending(StoredFire {
                        id,
                        plugin: plugin.to_string(),
                        fire: Fire {
                            handle: SubscriptionHandle::from_stored(handle),
                            variables: from_json("fires.variables", &variables)?,
                            idempotency_key: Some(key.clone()),
                        },
                    }),
                });
            }
        }
        self.conn
            .prepare_cached(
                "INSERT INTO fires (plugin_id, idempotency_key, handle, variables, received)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                plugin,
                fire.idempotency_key,
                fire.handle.as_str(),
                to_json(&fire.variables),
                received,
            ])?;
        Ok(Recorded::Pending(StoredFire {
            id: self.conn.last_insert_rowid(),
            plugin: plugin.to_string(),
            fire: fire.clone(),
        }))
    }

    /// Marks a fire as having started a run (call in the run's own transaction).
    pub fn fire_started(
        &self,
        id: i64,
        namespace: &str,
        pipeline: &str,
        run_id: u64,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE fires SET run_namespace = ?2, run_pipeline = ?3, run_id = ?4 WHERE id = ?1",
            )?
            .execute(params![id, namespace, pipeline, run_id])?;
        Ok(())
    }

    /// Marks a fire as having started no run, and why.
    pub fn fire_refused(&self, id: i64, why: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE fires SET refused = ?2 WHERE id = ?1")?
            .execute(params![id, why])?;
        Ok(())
    }

    /// Fires recorded but not finished (the server stopped in between), oldest first.
    pub fn pending_fires(&self) -> Result<Vec<StoredFire>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, plugin_id, idempotency_key, handle, variables FROM fires
             WHERE run_id IS NULL AND refused IS NULL ORDER BY id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (id, plugin, key, handle, variables) = row?;
            Ok(StoredFire {
                id,
                plugin,
                fire: Fire {
                    handle: SubscriptionHandle::from_stored(handle),
                    variables: from_json("fires.variables", &variables)?,
                    idempotency_key: key,
                },
            })
        })
        .collect()
    }

    /// Forgets finished fires received before `before` (epoch ms): their keys can fire again.
    pub fn prune_fires(&self, before: u64) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM fires WHERE received < ?1 AND (run_id IS NOT NULL OR refused IS NOT NULL)",
            )?
            .execute(params![before])?)
    }
}
