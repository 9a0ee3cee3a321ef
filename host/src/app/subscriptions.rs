//! Subscribing a pipeline to a trigger plugin, enabling, disabling and deleting a subscription:
//! the plugin is told with the subscription's server-issued handle, and the row is stored with
//! it.

use std::collections::BTreeMap;

use super::{App, AppError, Caller, require_on_pipeline};
use crate::domain::SubscriptionHandle;
use crate::models::{Action, PluginKind, Subscription, SubscriptionStatus};
use crate::pipeline_config::validate_identifier;
use crate::storage::StorageError;

/// What a caller asks to subscribe.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub plugin: String,
    pub subscription_id: String,
    pub settings: BTreeMap<String, String>,
}

impl App {
    /// Subscribes a pipeline to a trigger plugin. The plugin checks the settings first (its
    /// refusal, with any value the settings reference masked, is the error); settings that
    /// reference the pipeline's secrets or objects need permission to read them.
    pub async fn subscribe(
        &self,
        caller: &dyn Caller,
        namespace_id: &str,
        pipeline_id: &str,
        request: NewSubscription,
    ) -> Result<Subscription, AppError> {
        validate_identifier("subscription id", &request.subscription_id)?;
        for value in request.settings.values() {
            if let Some(resource) = crate::orchestrator::referenced_resource(value) {
                require_on_pipeline(
                    caller,
                    (namespace_id, pipeline_id),
                    resource,
                    Action::Read,
                    &format!("the setting {value:?}"),
                )?;
            }
        }
        match self.triggers.plugins().await.get(&request.plugin) {
            Some(plugin) if plugin.kind == Some(PluginKind::Trigger) => {}
            Some(_) => {
                return Err(AppError::Invalid(format!(
                    "plugin '{}' is not a trigger (or failed to load); see GET /api/plugins",
                    request.plugin
                )));
            }
            None => {
                return Err(AppError::NotFound(format!(
                    "trigger plugin '{}'",
                    request.plugin
                )));
            }
        }
        let subscription = Subscription {
            namespace_id: namespace_id.to_string(),
            pipeline_id: pipeline_id.to_string(),
            extension_id: request.plugin,
            subscription_id: request.subscription_id,
            settings: request.settings,
            status: SubscriptionStatus::Active,
            status_reason: None,
        };
        let lookup = subscription.clone();
        let exists = self
            .read(move |db| {
                db.get_namespace(&lookup.namespace_id)?;
                db.get_pipeline(&lookup.namespace_id, &lookup.pipeline_id)?;
                match db.get_subscription(
                    &lookup.namespace_id,
                    &lookup.pipeline_id,
                    &lookup.extension_id,
                    &lookup.subscription_id,
                ) {
                    Ok(_) => Ok(true),
                    Err(StorageError::NotFound(_)) => Ok(false),
                    Err(other) => Err(other),
                }
            })
            .await?;
        if exists {
            return Err(AppError::Conflict(format!(
                "subscription '{}' of pipeline '{}' to '{}' already exists",
                subscription.subscription_id, subscription.pipeline_id, subscription.extension_id
            )));
        }
        let handle = SubscriptionHandle::new();
        self.triggers.subscribe(&subscription, &handle).await?;
        let (stored, stored_handle) = (subscription.clone(), handle.clone());
        if let Err(error) = self
            .write(move |db| db.insert_subscription(&stored, &stored_handle, false))
            .await
        {
            self.triggers.unsubscribe(&subscription, &handle).await;
            return Err(error.into());
        }
        Ok(subscription)
    }

    /// Enables (`active`: subscribed again in its plugin) or disables (`disabled`: unsubscribed)
    /// a subscription.
    pub async fn set_subscription_status(
        &self,
        key: (&str, &str, &str, &str),
        status: SubscriptionStatus,
    ) -> Result<(), AppError> {
        let (namespace, pipeline, plugin, id) = (
            key.0.to_string(),
            key.1.to_string(),
            key.2.to_string(),
            key.3.to_string(),
        );
        let (mut subscription, handle) = self
            .read(move |db| {
                let subscription = db.get_subscription(&namespace, &pipeline, &plugin, &id)?;
                let handle = db.subscription_handle(&namespace, &pipeline, &plugin, &id)?;
                Ok((subscription, handle))
            })
            .await?;
        match status {
            SubscriptionStatus::Active => {
                self.triggers.subscribe(&subscription, &handle).await?;
                subscription.status_reason = None;
            }
            SubscriptionStatus::Disabled => self.triggers.unsubscribe(&subscription, &handle).await,
            _ => {
                return Err(AppError::Invalid(
                    "status must be \"active\" or \"disabled\"".into(),
                ));
            }
        }
        subscription.status = status;
        self.write(move |db| db.update_subscription(&subscription))
            .await?;
        Ok(())
    }

    /// Deletes a subscription and unsubscribes it in its plugin; its handle fires nothing after.
    pub async fn unsubscribe(&self, key: (&str, &str, &str, &str)) -> Result<(), AppError> {
        let (namespace, pipeline, plugin, id) = (
            key.0.to_string(),
            key.1.to_string(),
            key.2.to_string(),
            key.3.to_string(),
        );
        let (subscription, handle) = self
            .write(move |db| {
                let subscription = db.get_subscription(&namespace, &pipeline, &plugin, &id)?;
                let handle = db.subscription_handle(&namespace, &pipeline, &plugin, &id)?;
                db.delete_subscription(&namespace, &pipeline, &plugin, &id)?;
                Ok((subscription, handle))
            })
            .await?;
        self.triggers.unsubscribe(&subscription, &handle).await;
        Ok(())
    }
}
