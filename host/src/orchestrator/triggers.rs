//! The trigger manager, the orchestration side of trigger plugins: keeps every enabled
//! subscription subscribed in its plugin (at start-up, and again whenever the plugin is
//! reloaded), applies the subscriptions a deployment declared, wakes each trigger plugin when it
//! asked to be woken, routes outside events to it, and turns its fires into runs.
//!
//! A fire is committed before it is acted on (and, with an idempotency key, once per plugin and
//! key), and starts a run only for a stored, active subscription of the plugin that sent it,
//! named by the opaque handle the server issued; its variables reach the task literally. A fire
//! the server stopped in the middle of is finished at the next start. Must not run SQL (it calls
//! storage) nor start containers (it calls the orchestrator).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use super::Orchestrator;
use crate::domain::{Fire, FireOutcome, RunOrigin, SubscriptionHandle};
use crate::models::{
    Subscription, SubscriptionStatus, SubscriptionStatusReason, SubscriptionStatusReasonType,
    now_millis,
};
use crate::plugins::{
    ExternalOutcome, HostServices, OutsideEvent, PluginError, PluginRegistry, TriggerPlugin,
};
use crate::storage::{Recorded, Storage, StoredFire};

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
    /// The operator's configuration of plugins (`[plugins.config.<name>]`), by plugin.
    plugin_config: BTreeMap<String, BTreeMap<String, String>>,
    /// Fires committed by a wake, waiting for their runs to be started (in order, one at a
    /// time), so that a wake is never held up by the runs of the one before.
    starter: mpsc::UnboundedSender<(String, Vec<Recorded>)>,
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
        plugin_config: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Self {
        let (starter, mut waiting) = mpsc::unbounded_channel();
        let manager = Self {
            inner: Arc::new(Inner {
                storage,
                orchestrator,
                registry,
                drivers: Mutex::new(HashMap::new()),
                plugin_config,
                starter,
            }),
        };
        let runs_starter = manager.clone();
        tokio::spawn(async move {
            while let Some((plugin, recorded)) = waiting.recv().await {
                runs_starter.act_on_all(&plugin, recorded).await;
            }
        });
        manager
            .inner
            .registry
            .set_services(Arc::new(manager.clone()));
        manager.recover_fires().await;
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

    /// The registry as it is now, perhaps still loading (for health and shutdown).
    pub fn registry(&self) -> &PluginRegistry {
        &self.inner.registry
    }

    /// The registry once the first load is done: what a request about plugins reads.
    pub async fn plugins(&self) -> &PluginRegistry {
        self.inner.registry.loaded().await;
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
                            manager
                                .fire_in_background(&plugin_name, outcome.fires)
                                .await;
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
        self.inner.registry.loaded().await;
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
        self.inner.registry.loaded().await;
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
        event: OutsideEvent,
    ) -> Result<ExternalOutcome, PluginError> {
        self.inner.registry.loaded().await;
        let plugin = self.inner.registry.trigger(name).ok_or_else(|| {
            PluginError::Load(format!("no trigger plugin named '{name}' is loaded"))
        })?;
        let outcome = plugin.external_event(event).await?;
        self.fire(name, outcome.fires.clone()).await;
        Ok(outcome)
    }

    /// Acts on fires a plugin returned (their outcomes are logged), before returning.
    async fn fire(&self, plugin: &str, fires: Vec<Fire>) {
        if let Some(recorded) = self.record_fires(plugin, fires).await {
            self.act_on_all(plugin, recorded).await;
        }
    }

    /// Commits the fires a wake returned and leaves starting their runs to the run starter: the
    /// driver goes back to waking the plugin at once, so a fire due while thousands of runs are
    /// being started is still recorded when it comes.
    async fn fire_in_background(&self, plugin: &str, fires: Vec<Fire>) {
        if let Some(recorded) = self.record_fires(plugin, fires).await {
            // The starter lives as long as the manager; a fire it never took is recovered at
            // the next start (it is committed).
            let _ = self.inner.starter.send((plugin.to_string(), recorded));
        }
    }

    /// Commits fires in one transaction (a key seen before answers with that fire's outcome).
    async fn record_fires(&self, plugin: &str, fires: Vec<Fire>) -> Option<Vec<Recorded>> {
        if fires.is_empty() {
            return None;
        }
        let (name, count) = (plugin.to_string(), fires.len());
        let recorded = self
            .inner
            .storage
            .write(move |db| {
                let received = now_millis();
                fires
                    .iter()
                    .map(|fire| db.record_fire(&name, fire, received))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        match recorded {
            Ok((recorded, _)) => Some(recorded),
            Err(error) => {
                tracing::error!(plugin, %error, count, "could not record fires");
                for _ in 0..count {
                    count_fire(plugin, &FireOutcome::Refused(String::new()));
                }
                None
            }
        }
    }

    /// Starts the runs of committed fires, one after the other.
    async fn act_on_all(&self, plugin: &str, recorded: Vec<Recorded>) {
        for recorded in recorded {
            let outcome = self.act_on_recorded(recorded).await;
            count_fire(plugin, &outcome);
            if let FireOutcome::Refused(why) = outcome {
                tracing::warn!(plugin, reason = %why, "a fire started no run");
            }
        }
    }

    /// Commits a fire (before anything else; a key seen before answers with that fire's
    /// outcome), then starts its run: only for a stored, active subscription of `plugin` holding
    /// the fire's handle. The run and the fire's outcome are written in one transaction, so a
    /// fire starts at most one run, also across a crash.
    async fn fire_one(&self, plugin: &str, fire: Fire) -> FireOutcome {
        let (name, pending) = (plugin.to_string(), fire);
        let recorded = self
            .inner
            .storage
            .write(move |db| db.record_fire(&name, &pending, now_millis()))
            .await;
        let outcome = match recorded {
            Ok((recorded, _)) => self.act_on_recorded(recorded).await,
            Err(error) => {
                tracing::error!(plugin, %error, "could not record a fire");
                FireOutcome::Refused(format!("the fire could not be recorded: {error}"))
            }
        };
        count_fire(plugin, &outcome);
        outcome
    }

    /// Starts the run of a fire just committed, or answers with the outcome of the earlier fire
    /// with the same key.
    async fn act_on_recorded(&self, recorded: Recorded) -> FireOutcome {
        match recorded {
            Recorded::Pending(stored) => {
                crate::failpoints::reached("fire-committed");
                self.act_on(stored).await
            }
            Recorded::Done(outcome) => outcome,
        }
    }

    /// Starts the run of a recorded fire, or records why not.
    async fn act_on(&self, stored: StoredFire) -> FireOutcome {
        let (name, handle) = (stored.plugin.clone(), stored.fire.handle.clone());
        let found = self
            .inner
            .storage
            .read(move |db| db.subscription_by_handle(&name, &handle))
            .await;
        let subscription = match found {
            Ok(Some(subscription)) if subscription.status == SubscriptionStatus::Active => {
                subscription
            }
            Ok(found) => {
                tracing::warn!(
                    plugin = %stored.plugin,
                    handle = %stored.fire.handle,
                    found = found.is_some(),
                    "ignored a fire for no active subscription of this plugin"
                );
                let why = match found {
                    Some(_) => "the subscription is disabled or in error",
                    None => "no subscription of this plugin has that handle",
                };
                return self.refuse(stored.id, why.to_string()).await;
            }
            Err(error) => {
                tracing::error!(plugin = %stored.plugin, %error, "could not look up a fired subscription");
                return FireOutcome::Refused(format!(
                    "the subscription could not be read: {error}"
                ));
            }
        };
        let origin = RunOrigin::Trigger {
            plugin: stored.plugin.clone(),
            subscription: subscription.subscription_id.clone(),
            fire: Some(stored.id),
        };
        match self
            .inner
            .orchestrator
            .start_run(
                subscription.namespace_id.clone(),
                subscription.pipeline_id.clone(),
                stored.fire.variables.into_iter().collect(),
                origin,
                None,
            )
            .await
        {
            Ok(run) => {
                tracing::info!(
                    plugin = %stored.plugin,
                    pipeline = %subscription.pipeline_id,
                    run_id = run.run_id,
                    "trigger started a run"
                );
                FireOutcome::Started(run.run_id)
            }
            Err(error) => self.refuse(stored.id, error.to_string()).await,
        }
    }

    async fn refuse(&self, fire: i64, why: String) -> FireOutcome {
        let reason = why.clone();
        if let Err(error) = self
            .inner
            .storage
            .write(move |db| db.fire_refused(fire, &reason))
            .await
        {
            tracing::error!(%error, "could not record a refused fire");
        }
        FireOutcome::Refused(why)
    }

    /// Finishes the fires the server stopped in the middle of (recorded, no outcome), and forgets
    /// finished ones older than [`FIRE_MEMORY`]. Called at start-up.
    async fn recover_fires(&self) {
        let forget_before = now_millis().saturating_sub(FIRE_MEMORY.as_millis() as u64);
        let pending = self
            .inner
            .storage
            .write(move |db| {
                db.prune_fires(forget_before)?;
                db.pending_fires()
            })
            .await;
        match pending {
            Ok((pending, _)) => {
                for stored in pending {
                    tracing::info!(plugin = %stored.plugin, fire = stored.id, "finishing a fire the server stopped in the middle of");
                    self.act_on(stored).await;
                }
            }
            Err(error) => tracing::error!(%error, "could not read unfinished fires"),
        }
    }
}

/// How long a finished fire (and so its idempotency key) is remembered.
const FIRE_MEMORY: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[async_trait::async_trait]
impl HostServices for TriggerManager {
    async fn fire(&self, plugin: &str, fire: Fire) -> FireOutcome {
        self.fire_one(plugin, fire).await
    }

    async fn config(&self, plugin: &str) -> Result<Vec<(String, String)>, String> {
        let Some(config) = self.inner.plugin_config.get(plugin) else {
            return Ok(Vec::new());
        };
        let pairs: Vec<(String, String)> = config
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        self.inner
            .orchestrator
            .resolve_operator_values(pairs)
            .await
            .map_err(|error| error.to_string())
    }
}

/// Counts a fire's outcome in the metrics.
fn count_fire(plugin: &str, outcome: &FireOutcome) {
    let name = match outcome {
        FireOutcome::Started(_) => "started",
        FireOutcome::Duplicate(_) => "duplicate",
        FireOutcome::Refused(_) => "refused",
    };
    crate::metrics::metrics()
        .trigger_fires
        .get_or_create(&vec![
            ("plugin", plugin.to_string()),
            ("outcome", name.to_string()),
        ])
        .inc();
}
