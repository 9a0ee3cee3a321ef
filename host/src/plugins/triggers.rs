//! The trigger manager: keeps every enabled subscription subscribed in its plugin (at start-up,
//! and again whenever the plugin is reloaded), wakes each trigger plugin when it asked to be
//! woken, routes outside events to it, and turns its fires into runs of the pipeline's live
//! config. Must not run SQL (it calls storage) nor start containers (it calls the orchestrator).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{ExternalOutcome, PluginError, PluginRegistry, TriggerPlugin};
use crate::models::{
    DeclaredTrigger, Initiator, Subscription, SubscriptionStatus, SubscriptionStatusReason,
    SubscriptionStatusReasonType, now_millis,
};
use crate::orchestrator::Orchestrator;
use crate::storage::Storage;

/// The opaque handle a plugin gets for a subscription.
pub fn handle(subscription: &Subscription) -> String {
    format!(
        "{}/{}/{}",
        subscription.namespace_id, subscription.pipeline_id, subscription.subscription_id
    )
}

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
            for subscription in subscriptions {
                let outcome = self.subscribe_in_plugin(&name, &subscription).await;
                let mut updated = subscription.clone();
                match outcome {
                    Ok(()) => {
                        updated.status = SubscriptionStatus::Active;
                        updated.status_reason = None;
                    }
                    Err(error) => {
                        tracing::warn!(plugin = %name, subscription = %handle(&subscription), %error, "could not resubscribe");
                        updated.status = SubscriptionStatus::Error;
                        updated.status_reason = Some(SubscriptionStatusReason {
                            reason: SubscriptionStatusReasonType::Failed,
                            description: error.to_string(),
                        });
                    }
                }
                if updated != subscription {
                    let _ = self
                        .inner
                        .storage
                        .write(move |db| db.update_subscription(&updated))
                        .await;
                }
            }
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
            .map_err(PluginError::Refused)?;
        // The plugin's answer goes back to whoever made the subscription, who may not read the
        // secrets and objects it references: never with their values in it.
        let next = plugin
            .subscribe(&handle(subscription), &settings, now_millis())
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

    /// Validates a new subscription with its plugin and starts it (the caller stores it).
    pub async fn subscribe(&self, subscription: &Subscription) -> Result<(), PluginError> {
        self.subscribe_in_plugin(&subscription.extension_id, subscription)
            .await
    }

    /// Stops a subscription in its plugin (if the plugin is loaded).
    pub async fn unsubscribe(&self, subscription: &Subscription) {
        if let Some(plugin) = self.inner.registry.trigger(&subscription.extension_id)
            && let Err(error) = plugin.unsubscribe(&handle(subscription)).await
        {
            tracing::warn!(plugin = %subscription.extension_id, %error, "unsubscribe failed");
        }
    }

    /// Makes a pipeline's declared subscriptions match what its newly deployed config declares:
    /// new ones are subscribed, changed ones re-subscribed, dropped ones unsubscribed. Refused
    /// settings are kept as a subscription with status `error` and the plugin's message.
    /// Subscriptions made through the API are left alone.
    pub async fn reconcile_declared(
        &self,
        namespace_id: &str,
        pipeline_id: &str,
        declared: Vec<DeclaredTrigger>,
    ) {
        let (namespace, pipeline) = (namespace_id.to_string(), pipeline_id.to_string());
        let existing = match self
            .inner
            .storage
            .read(move |db| db.declared_subscriptions(&namespace, &pipeline))
            .await
        {
            Ok(existing) => existing,
            Err(error) => {
                tracing::error!(pipeline = pipeline_id, %error, "could not read declared subscriptions");
                return;
            }
        };
        let same = |want: &DeclaredTrigger, old: &Subscription| {
            want.plugin == old.extension_id
                && want.id == old.subscription_id
                && want.settings == old.settings
        };
        for old in &existing {
            if !declared.iter().any(|want| same(want, old)) {
                self.unsubscribe(old).await;
                let gone = old.clone();
                let _ = self
                    .inner
                    .storage
                    .write(move |db| {
                        db.delete_subscription(
                            &gone.namespace_id,
                            &gone.pipeline_id,
                            &gone.extension_id,
                            &gone.subscription_id,
                        )
                    })
                    .await;
            }
        }
        for want in declared {
            if existing.iter().any(|old| same(&want, old)) {
                continue;
            }
            let mut subscription = Subscription {
                namespace_id: namespace_id.to_string(),
                pipeline_id: pipeline_id.to_string(),
                extension_id: want.plugin,
                subscription_id: want.id,
                settings: want.settings,
                status: SubscriptionStatus::Active,
                status_reason: None,
            };
            if let Err(error) = self.subscribe(&subscription).await {
                subscription.status = SubscriptionStatus::Error;
                subscription.status_reason = Some(SubscriptionStatusReason {
                    reason: SubscriptionStatusReasonType::Failed,
                    description: error.to_string(),
                });
            }
            let stored = subscription.clone();
            if let Err(error) = self
                .inner
                .storage
                .write(move |db| db.insert_subscription(&stored, true))
                .await
            {
                tracing::warn!(pipeline = pipeline_id, subscription = %subscription.subscription_id, %error, "could not store a declared subscription");
                self.unsubscribe(&subscription).await;
            }
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

    /// Starts a run of the live config of each fired subscription's pipeline.
    async fn fire(&self, plugin: &str, fires: Vec<(String, Vec<(String, String)>)>) {
        for (fired, variables) in fires {
            let mut parts = fired.splitn(3, '/');
            let (Some(namespace), Some(pipeline), Some(subscription)) =
                (parts.next(), parts.next(), parts.next())
            else {
                tracing::warn!(plugin, handle = %fired, "the plugin fired an unknown subscription");
                continue;
            };
            let initiator = Initiator {
                id: format!("plugin:{plugin}"),
                user: format!("{plugin} trigger ({subscription})"),
            };
            match self
                .inner
                .orchestrator
                .start_run(
                    namespace.to_string(),
                    pipeline.to_string(),
                    variables.into_iter().collect(),
                    initiator,
                )
                .await
            {
                Ok(run) => tracing::info!(
                    plugin,
                    pipeline,
                    run_id = run.run_id,
                    "trigger started a run"
                ),
                Err(error) => {
                    tracing::warn!(plugin, pipeline, %error, "trigger could not start a run")
                }
            }
        }
    }
}
