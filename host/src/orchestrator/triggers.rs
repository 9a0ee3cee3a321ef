//! The trigger manager, the orchestration side of trigger plugins: keeps every enabled
//! subscription subscribed in its plugin (at start-up, and again whenever the plugin is
//! reloaded), applies the subscriptions a deployment declared, wakes each trigger plugin when it
//! asked to be woken, routes outside events to it, and turns its fires into runs.
//!
//! A fire starts a run only for a stored, active subscription of the plugin that sent it, named by
//! the opaque handle the server issued; its variables reach the task literally. Must not run SQL
//! (it calls storage) nor start containers (it calls the orchestrator).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::Orchestrator;
use crate::domain::{Fire, RunOrigin, SubscriptionHandle};
use crate::models::{
    Subscription, SubscriptionStatus, SubscriptionStatusReason, SubscriptionStatusReasonType,
    now_millis,
};
use crate::plugins::{ExternalOutcome, PluginError, PluginRegistry, TriggerPlugin};
use crate::storage::Storage;

struct Driver {
    plugin: Arc<dyn TriggerPlugin>,
    next_wake: Arc<Mutex<Option<u64>>>,
    wake_up: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct TriggerManager {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    orchestrator: Orchestrator,
    registry: PluginRegistry,
    drivers: Mutex<HashMap<String, Driver>>,
}

impl std::fmt::Debug for TriggerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TriggerManager")
    }
}

impl TriggerManager {
    /// Subscribes every stored subscription and follows plugin reloads.
    pub async fn start(
        storage: Storage,
        orchestrator: Orchestrator,
        registry: PluginRegistry,
    ) -> Self {
        let manager = Self {
            inner: Arc::new(Inner {
                storage,
                orchestrator,
                registry,
                drivers: Mutex::new(HashMap::new()),
            }),
        };
        manager.reconcile().await;
        let watcher = manager.clone();
        let mut changes = manager.inner.registry.changes();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                watcher.reconcile().await;
            }
        });
        manager
    }

    pub fn registry(&self) -> &PluginRegistry {
        &self.inner.registry
    }

    /// Starts a driver for every trigger plugin that is new or was reloaded, and replays its
    /// subscriptions into it.
    async fn reconcile(&self) {
        let triggers = self.inner.registry.triggers();
        let stale: Vec<String> = {
            let mut drivers = self
                .inner
                .drivers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let gone: Vec<String> = drivers
                .iter()
                .filter(|(name, driver)| {
                    triggers
                        .get(*name)
                        .is_none_or(|plugin| !Arc::ptr_eq(plugin, &driver.plugin))
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in &gone {
                if let Some(driver) = drivers.remove(name) {
                    driver.task.abort();
                }
            }
            triggers
                .keys()
                .filter(|name| !drivers.contains_key(*name))
                .cloned()
                .collect()
        };
        for name in stale {
            let plugin = Arc::clone(&triggers[&name]);
            self.start_driver(&name, Arc::clone(&plugin));
            let plugin_name = name.clone();
            let subscriptions = match self
                .inner
                .storage
                .read(move |db| db.enabled_subscriptions_of(&plugin_name))
                .await
            {
                Ok(subscriptions) => subscriptions,
                Err(error) => {
                    tracing::error!(plugin = %name, %error, "could not read subscriptions");
                    continue;
                }
            };
            for (subscription, handle) in subscriptions {
                let outcome = self
                    .subscribe_in_plugin(&name, &subscription, &handle)
                    .await;
                self.record_outcome(&subscription, outcome).await;
            }
        }
    }

    /// Records whether a subscription is live in its plugin (`active`) or refused (`error`, with
    /// the plugin's message), if that changed.
    async fn record_outcome(&self, subscription: &Subscription, outcome: Result<(), PluginError>) {
        let mut updated = subscription.clone();
        match outcome {
            Ok(()) => {
                updated.status = SubscriptionStatus::Active;
                updated.status_reason = None;
            }
            Err(error) => {
                tracing::warn!(plugin = %subscription.extension_id, pipeline = %subscription.pipeline_id, subscription = %subscription.subscription_id, %error, "could not subscribe");
                updated.status = SubscriptionStatus::Error;
                updated.status_reason = Some(SubscriptionStatusReason {
                    reason: SubscriptionStatusReasonType::Failed,
                    description: error.to_string(),
                });
            }
        }
        if updated != *subscription
            && let Err(error) = self
                .inner
                .storage
                .write(move |db| db.update_subscription(&updated))
                .await
        {
            tracing::warn!(%error, "could not record a subscription's state");
        }
    }

    fn start_driver(&self, name: &str, plugin: Arc<dyn TriggerPlugin>) {
        let next_wake = Arc::new(Mutex::new(None::<u64>));
        let wake_up = Arc::new(Notify::new());
        let manager = self.clone();
        let (driver_plugin, driver_next, driver_wake, plugin_name) = (
            Arc::clone(&plugin),
            Arc::clone(&next_wake),
            Arc::clone(&wake_up),
            name.to_string(),
        );
        let pushed = plugin.pushed_fires();
        let task = tokio::spawn(async move {
            loop {
                let next = *driver_next
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let sleep = async {
                    match next {
                        Some(at) => {
                            let wait = at.saturating_sub(now_millis());
                            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let pushed = async {
                    match &pushed {
                        Some(pushed) => pushed.notified().await,
                        None => std::future::pending().await,
                    }
                };
                let woken = tokio::select! {
                    () = sleep => true,
                    () = pushed => true,
                    () = driver_wake.notified() => false,
                };
                if woken {
                    match driver_plugin.wake(now_millis()).await {
                        Ok(outcome) => {
                            *driver_next
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                                outcome.next_wake;
                            manager.fire(&plugin_name, outcome.fires).await;
                        }
                        Err(error) => {
                            tracing::warn!(plugin = %plugin_name, %error, "wake failed; retrying in a second");
                            *driver_next
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                                Some(now_millis() + 1000);
                        }
                    }
                }
            }
        });
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                name.to_string(),
                Driver {
                    plugin,
                    next_wake,
                    wake_up,
                    task,
                },
            );
    }

    /// Subscribes in the plugin and moves its next wake time earlier if needed.
    async fn subscribe_in_plugin(
        &self,
        name: &str,
        subscription: &Subscription,
        handle: &SubscriptionHandle,
    ) -> Result<(), PluginError> {
        let plugin = self.inner.registry.trigger(name).ok_or_else(|| {
            PluginError::Load(format!("no trigger plugin named '{name}' is loaded"))
        })?;
        let settings: Vec<(String, String)> = subscription.settings.clone().into_iter().collect();
        // Secrets in settings (e.g. a webhook's shared secret) are filled in for the plugin only;
        // the stored subscription keeps the reference.
        let (settings, masks) = self
            .inner
            .orchestrator
            .resolve_settings(
                &subscription.namespace_id,
                &subscription.pipeline_id,
                settings,
            )
            .await
            .map_err(|error| PluginError::Refused(error.to_string()))?;
        // The plugin's answer goes back to whoever made the subscription, who may not read the
        // secrets and objects it references: never with their values in it.
        let next = plugin
            .subscribe(handle.as_str(), &settings, now_millis())
            .await
            .map_err(|error| match error {
                PluginError::Refused(message) => PluginError::Refused(masks.text(&message)),
                PluginError::Load(message) => PluginError::Load(masks.text(&message)),
                PluginError::Crashed(message) => PluginError::Crashed(masks.text(&message)),
                other => other,
            })?;
        if let Some(next) = next {
            let drivers = self
                .inner
                .drivers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(driver) = drivers.get(name) {
                let mut current = driver
                    .next_wake
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *current = Some(current.map_or(next, |current| current.min(next)));
                driver.wake_up.notify_one();
            }
        }
        Ok(())
    }

    /// Validates a new subscription with its plugin and starts it (the caller stores it with the
    /// same handle).
    pub async fn subscribe(
        &self,
        subscription: &Subscription,
        handle: &SubscriptionHandle,
    ) -> Result<(), PluginError> {
        self.subscribe_in_plugin(&subscription.extension_id, subscription, handle)
            .await
    }

    /// Stops a subscription in its plugin (if the plugin is loaded).
    pub async fn unsubscribe(&self, subscription: &Subscription, handle: &SubscriptionHandle) {
        if let Some(plugin) = self.inner.registry.trigger(&subscription.extension_id)
            && let Err(error) = plugin.unsubscribe(handle.as_str()).await
        {
            tracing::warn!(plugin = %subscription.extension_id, %error, "unsubscribe failed");
        }
    }

    /// Makes the plugins match what a deployment committed: `removed` subscriptions are
    /// unsubscribed, `added` ones subscribed (a refusal is recorded on the subscription, status
    /// `error` with the plugin's message). Whatever a crash leaves undone here is done at the next
    /// start, which subscribes every stored subscription.
    pub async fn apply(
        &self,
        added: Vec<(Subscription, SubscriptionHandle)>,
        removed: Vec<(Subscription, SubscriptionHandle)>,
    ) {
        for (subscription, handle) in removed {
            self.unsubscribe(&subscription, &handle).await;
        }
        for (subscription, handle) in added {
            let outcome = self.subscribe(&subscription, &handle).await;
            self.record_outcome(&subscription, outcome).await;
        }
    }

    /// Hands an outside HTTP event to a trigger plugin and starts the runs it asks for.
    pub async fn external_event(
        &self,
        name: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<ExternalOutcome, PluginError> {
        let plugin = self.inner.registry.trigger(name).ok_or_else(|| {
            PluginError::Load(format!("no trigger plugin named '{name}' is loaded"))
        })?;
        let outcome = plugin.external_event(headers, body).await?;
        self.fire(name, outcome.fires.clone()).await;
        Ok(outcome)
    }

    /// Starts a run of the live config of each fired subscription's pipeline: only for a stored,
    /// active subscription of `plugin` holding the fire's handle. Anything else starts nothing and
    /// is logged with the plugin's name.
    async fn fire(&self, plugin: &str, fires: Vec<Fire>) {
        for fire in fires {
            let (name, handle) = (plugin.to_string(), fire.handle.clone());
            let subscription = match self
                .inner
                .storage
                .read(move |db| db.subscription_by_handle(&name, &handle))
                .await
            {
                Ok(Some(subscription)) if subscription.status == SubscriptionStatus::Active => {
                    subscription
                }
                Ok(found) => {
                    tracing::warn!(
                        plugin,
                        handle = %fire.handle,
                        found = found.is_some(),
                        "ignored a fire for no active subscription of this plugin"
                    );
                    continue;
                }
                Err(error) => {
                    tracing::error!(plugin, %error, "could not look up a fired subscription");
                    continue;
                }
            };
            let origin = RunOrigin::Trigger {
                plugin: plugin.to_string(),
                subscription: subscription.subscription_id.clone(),
            };
            match self
                .inner
                .orchestrator
                .start_run(
                    subscription.namespace_id.clone(),
                    subscription.pipeline_id.clone(),
                    fire.variables.into_iter().collect(),
                    origin,
                )
                .await
            {
                Ok(run) => tracing::info!(
                    plugin,
                    pipeline = %subscription.pipeline_id,
                    run_id = run.run_id,
                    "trigger started a run"
                ),
                Err(error) => {
                    tracing::warn!(plugin, pipeline = %subscription.pipeline_id, %error, "trigger could not start a run")
                }
            }
        }
    }
}
