//! A loaded plugin wrapped so that every call into it is counted and timed in the metrics
//! (`gofer_plugin_calls_total`, `gofer_plugin_call_seconds`) and runs in a `plugin_call` span
//! (exported with the rest when tracing export is on), whatever runs it.
//!
//! Adds nothing else: it passes each call through unchanged and must not retry, time out or
//! change results (deadlines belong to the runtimes).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::{
    ExternalOutcome, LoadedPlugin, OutsideEvent, PluginError, TaskPlugin, TaskRequest,
    TriggerPlugin, WakeOutcome,
};

/// `loaded`, its calls recorded under `name`.
pub(super) fn measured(loaded: LoadedPlugin, name: &str) -> LoadedPlugin {
    match loaded {
        LoadedPlugin::Trigger(inner) => LoadedPlugin::Trigger(Arc::new(MeasuredTrigger {
            name: name.to_string(),
            inner,
        })),
        LoadedPlugin::Task(inner) => LoadedPlugin::Task(Arc::new(MeasuredTask {
            name: name.to_string(),
            inner,
        })),
    }
}

async fn record<T>(
    plugin: &str,
    kind: &'static str,
    call: &'static str,
    work: impl Future<Output = Result<T, PluginError>>,
) -> Result<T, PluginError> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "plugin_call",
        plugin,
        kind,
        call,
        error = tracing::field::Empty
    );
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.record("error", tracing::field::display(error));
    }
    crate::metrics::metrics().plugin_call(plugin, kind, call, result.is_ok(), started.elapsed());
    result
}

struct MeasuredTrigger {
    name: String,
    inner: Arc<dyn TriggerPlugin>,
}

#[async_trait::async_trait]
impl TriggerPlugin for MeasuredTrigger {
    async fn subscribe(
        &self,
        handle: &str,
        settings: &[(String, String)],
        now: u64,
    ) -> Result<Option<u64>, PluginError> {
        let call = self.inner.subscribe(handle, settings, now);
        record(&self.name, "trigger", "subscribe", call).await
    }

    async fn unsubscribe(&self, handle: &str) -> Result<(), PluginError> {
        let call = self.inner.unsubscribe(handle);
        record(&self.name, "trigger", "unsubscribe", call).await
    }

    async fn wake(&self, now: u64) -> Result<WakeOutcome, PluginError> {
        record(&self.name, "trigger", "wake", self.inner.wake(now)).await
    }

    async fn external_event(&self, event: OutsideEvent) -> Result<ExternalOutcome, PluginError> {
        let call = self.inner.external_event(event);
        record(&self.name, "trigger", "external_event", call).await
    }

    fn pushed_fires(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.pushed_fires()
    }
}

struct MeasuredTask {
    name: String,
    inner: Arc<dyn TaskPlugin>,
}

#[async_trait::async_trait]
impl TaskPlugin for MeasuredTask {
    async fn run(&self, request: TaskRequest) -> Result<u8, PluginError> {
        record(&self.name, "task", "run", self.inner.run(request)).await
    }
}
