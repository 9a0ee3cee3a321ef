//! SQL for trigger subscriptions.

use rusqlite::{OptionalExtension, Row, params};

use super::queries::{enum_from_text, enum_text, from_json, to_json};
use super::{Db, Page, Result, StorageError};
use crate::domain::SubscriptionHandle;
use crate::models::{Subscription, SubscriptionStatus};

const COLUMNS: &str =
    "namespace_id, pipeline_id, plugin_id, subscription_id, settings, status, status_reason";

/// [`COLUMNS`] and the handle.
const WITH_HANDLE: &str = "namespace_id, pipeline_id, plugin_id, subscription_id, settings, status, status_reason, handle";

impl Db<'_> {
    /// Stores a subscription with the handle its plugin knows it by; `declared`: made by deploying
    /// a config that declares it.
    pub fn insert_subscription(
        &self,
        subscription: &Subscription,
        handle: &SubscriptionHandle,
        declared: bool,
    ) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO subscriptions ({COLUMNS}, declared, handle) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                subscription.namespace_id,
                subscription.pipeline_id,
                subscription.extension_id,
                subscription.subscription_id,
                to_json(&subscription.settings),
                enum_text(&subscription.status),
                subscription.status_reason.as_ref().map(to_json),
                declared,
                handle.as_str(),
            ])
            .map_err(|error| match error {
                rusqlite::Error::SqliteFailure(failure, _)
                    if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    StorageError::AlreadyExists(format!(
                        "subscription '{}' of pipeline '{}' to '{}'",
                        subscription.subscription_id,
                        subscription.pipeline_id,
                        subscription.extension_id
                    ))
                }
                other => other.into(),
            })?;
        Ok(())
    }

    pub fn update_subscription(&self, subscription: &Subscription) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE subscriptions SET settings = ?5, status = ?6, status_reason = ?7
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND plugin_id = ?3 AND subscription_id = ?4",
            )?
            .execute(params![
                subscription.namespace_id,
                subscription.pipeline_id,
                subscription.extension_id,
                subscription.subscription_id,
                to_json(&subscription.settings),
                enum_text(&subscription.status),
                subscription.status_reason.as_ref().map(to_json),
            ])?;
        Ok(())
    }

    pub fn get_subscription(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        plugin: &str,
        subscription_id: &str,
    ) -> Result<Subscription> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM subscriptions
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND plugin_id = ?3 AND subscription_id = ?4"
            ))?
            .query_row([namespace_id, pipeline_id, plugin, subscription_id], |row| Ok(subscription_from_row(row)))
            .optional()?
            .unwrap_or_else(|| {
                Err(StorageError::NotFound(format!(
                    "subscription '{subscription_id}' of pipeline '{pipeline_id}' to '{plugin}'"
                )))
            })
    }

    pub fn list_subscriptions(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        page: Page,
    ) -> Result<Vec<Subscription>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE namespace_id = ?1 AND pipeline_id = ?2
             ORDER BY plugin_id, subscription_id LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = statement.query_map(
            params![namespace_id, pipeline_id, page.limit, page.offset],
            |row| Ok(subscription_from_row(row)),
        )?;
        rows.map(|row| row?).collect()
    }

    /// The subscriptions of a pipeline that its live config declared, with their handles.
    pub fn declared_subscriptions(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
    ) -> Result<Vec<(Subscription, SubscriptionHandle)>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {WITH_HANDLE} FROM subscriptions WHERE namespace_id = ?1 AND pipeline_id = ?2 AND declared = 1"
        ))?;
        let rows = statement.query_map([namespace_id, pipeline_id], |row| {
            Ok(with_handle_from_row(row))
        })?;
        rows.map(|row| row?).collect()
    }

    /// Every subscription of a pipeline, with its handle (to unsubscribe them all).
    pub fn subscriptions_of_pipeline(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
    ) -> Result<Vec<(Subscription, SubscriptionHandle)>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {WITH_HANDLE} FROM subscriptions WHERE namespace_id = ?1 AND pipeline_id = ?2"
        ))?;
        let rows = statement.query_map([namespace_id, pipeline_id], |row| {
            Ok(with_handle_from_row(row))
        })?;
        rows.map(|row| row?).collect()
    }

    /// The handle a subscription's plugin knows it by.
    pub fn subscription_handle(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        plugin: &str,
        subscription_id: &str,
    ) -> Result<SubscriptionHandle> {
        let handle: Option<Option<String>> = self
            .conn
            .prepare_cached(
                "SELECT handle FROM subscriptions
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND plugin_id = ?3 AND subscription_id = ?4",
            )?
            .query_row([namespace_id, pipeline_id, plugin, subscription_id], |row| {
                row.get(0)
            })
            .optional()?;
        match handle.flatten() {
            Some(handle) => Ok(SubscriptionHandle::from_stored(handle)),
            None => Err(StorageError::NotFound(format!(
                "subscription '{subscription_id}' of pipeline '{pipeline_id}' to '{plugin}'"
            ))),
        }
    }

    /// The subscription of `plugin` holding `handle`, if there is one.
    pub fn subscription_by_handle(
        &self,
        plugin: &str,
        handle: &SubscriptionHandle,
    ) -> Result<Option<Subscription>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM subscriptions WHERE plugin_id = ?1 AND handle = ?2"
            ))?
            .query_row([plugin, handle.as_str()], |row| {
                Ok(subscription_from_row(row))
            })
            .optional()?
            .transpose()
    }

    /// A page of every subscription to a plugin, by namespace, pipeline and id.
    pub fn list_subscriptions_of(&self, plugin: &str, page: Page) -> Result<Vec<Subscription>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE plugin_id = ?1
             ORDER BY namespace_id, pipeline_id, subscription_id LIMIT ?2 OFFSET ?3"
        ))?;
        let rows = statement.query_map(params![plugin, page.limit, page.offset], |row| {
            Ok(subscription_from_row(row))
        })?;
        rows.map(|row| row?).collect()
    }

    /// Every subscription to a plugin that is not disabled, with its handle.
    pub fn enabled_subscriptions_of(
        &self,
        plugin: &str,
    ) -> Result<Vec<(Subscription, SubscriptionHandle)>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {WITH_HANDLE} FROM subscriptions WHERE plugin_id = ?1 AND status != 'disabled'"
        ))?;
        let rows = statement.query_map([plugin], |row| Ok(with_handle_from_row(row)))?;
        rows.map(|row| row?).collect()
    }

    pub fn delete_subscription(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        plugin: &str,
        subscription_id: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "DELETE FROM subscriptions
                 WHERE namespace_id = ?1 AND pipeline_id = ?2 AND plugin_id = ?3 AND subscription_id = ?4",
            )?
            .execute([namespace_id, pipeline_id, plugin, subscription_id])?;
        Ok(())
    }
}

fn subscription_from_row(row: &Row) -> Result<Subscription> {
    let settings: String = row.get(4)?;
    let status: String = row.get(5)?;
    let reason: Option<String> = row.get(6)?;
    Ok(Subscription {
        namespace_id: row.get(0)?,
        pipeline_id: row.get(1)?,
        extension_id: row.get(2)?,
        subscription_id: row.get(3)?,
        settings: from_json("subscriptions.settings", &settings)?,
        status: enum_from_text::<SubscriptionStatus>("subscriptions.status", &status)?,
        status_reason: reason
            .map(|reason| from_json("subscriptions.status_reason", &reason))
            .transpose()?,
    })
}

fn with_handle_from_row(row: &Row) -> Result<(Subscription, SubscriptionHandle)> {
    let handle: Option<String> = row.get(7)?;
    Ok((
        subscription_from_row(row)?,
        // Every row has one since migration 0002; a missing one matches no fire.
        SubscriptionHandle::from_stored(handle.unwrap_or_default()),
    ))
}
