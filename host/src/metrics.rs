//! Prometheus metrics: the families Gofer records, the one process-wide registry, and its text
//! exposition (`GET /metrics`).
//!
//! Owns the numbers, not their sources. Modules record into [`metrics()`] where something happens
//! (an HTTP request ends, a plugin call returns, a write commits, a container starts); runs and
//! tasks are counted from the event bus by [`observe_events`], so the orchestrator does not know
//! about metrics. It must not read storage or call engines itself, and labels stay bounded:
//! namespace and pipeline ids, plugin names, route templates, statuses; never run or task ids.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::events::EventBus;
use crate::models::EventKind;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A metric's labels: bounded names and values.
pub type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Latencies: 0.5 ms to 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Durations of runs, tasks and queue waits: 50 ms to about 55 minutes.
fn durations() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub runs_started: Family<Labels, Counter>,
    pub runs_finished: Family<Labels, Counter>,
    pub run_seconds: Histograms,
    pub queue_wait_seconds: Histogram,
    pub queue_depth: Gauge,
    pub tasks_finished: Family<Labels, Counter>,
    pub task_seconds: Histograms,
    pub container_start_seconds: Histogram,
    pub plugin_calls: Family<Labels, Counter>,
    pub plugin_call_seconds: Histograms,
    pub trigger_fires: Family<Labels, Counter>,
    pub http_requests: Family<Labels, Counter>,
    pub http_request_seconds: Histograms,
    pub sqlite_write_seconds: Histogram,
    pub log_followers: Gauge,
    pub event_stream_clients: Gauge,
    pub grpc_plugin_restarts: Family<Labels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("gofer");
        let runs_started = Family::default();
        let runs_finished = Family::default();
        let run_seconds = Histograms::new_with_constructor(durations);
        let queue_wait_seconds = durations();
        let queue_depth = Gauge::default();
        let tasks_finished = Family::default();
        let task_seconds = Histograms::new_with_constructor(durations);
        let container_start_seconds = latency();
        let plugin_calls = Family::default();
        let plugin_call_seconds = Histograms::new_with_constructor(latency);
        let trigger_fires = Family::default();
        let http_requests = Family::default();
        let http_request_seconds = Histograms::new_with_constructor(latency);
        let sqlite_write_seconds = latency();
        let log_followers = Gauge::default();
        let event_stream_clients = Gauge::default();
        let grpc_plugin_restarts = Family::default();
        registry.register(
            "runs_started",
            "Runs queued, by namespace and pipeline",
            runs_started.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs ended, by namespace, pipeline and status",
            runs_finished.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "From a run's start (dispatch) to its end, by status",
            run_seconds.clone(),
        );
        registry.register(
            "run_queue_wait_seconds",
            "From a run's queueing to its dispatch",
            queue_wait_seconds.clone(),
        );
        registry.register(
            "run_queue_depth",
            "Runs waiting for a slot, at the scrape",
            queue_depth.clone(),
        );
        registry.register(
            "tasks_finished",
            "Task executions ended, by status",
            tasks_finished.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "From a task attempt's start to its end, by status",
            task_seconds.clone(),
        );
        registry.register(
            "container_start_seconds",
            "Creating and starting a task's container",
            container_start_seconds.clone(),
        );
        registry.register(
            "plugin_calls",
            "Calls into plugins, by plugin, kind, call and result (ok or error)",
            plugin_calls.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Latency of calls into plugins, by plugin and call",
            plugin_call_seconds.clone(),
        );
        registry.register(
            "trigger_fires",
            "Fires received from triggers, by plugin and outcome (started, duplicate, refused)",
            trigger_fires.clone(),
        );
        registry.register(
            "http_requests",
            "API requests, by route template, method and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "API request latency, by route template and method",
            http_request_seconds.clone(),
        );
        registry.register(
            "sqlite_write_seconds",
            "Write transactions on the database, waiting for the writer included",
            sqlite_write_seconds.clone(),
        );
        registry.register(
            "log_followers",
            "Clients following a task's log live",
            log_followers.clone(),
        );
        registry.register(
            "event_stream_clients",
            "Clients streaming events",
            event_stream_clients.clone(),
        );
        registry.register(
            "grpc_plugin_restarts",
            "Restarts of gRPC plugin processes, by plugin",
            grpc_plugin_restarts.clone(),
        );
        Self {
            registry,
            runs_started,
            runs_finished,
            run_seconds,
            queue_wait_seconds,
            queue_depth,
            tasks_finished,
            task_seconds,
            container_start_seconds,
            plugin_calls,
            plugin_call_seconds,
            trigger_fires,
            http_requests,
            http_request_seconds,
            sqlite_write_seconds,
            log_followers,
            event_stream_clients,
            grpc_plugin_restarts,
        }
    }

    /// Records one plugin call.
    pub fn plugin_call(
        &self,
        plugin: &str,
        kind: &'static str,
        call: &'static str,
        ok: bool,
        took: Duration,
    ) {
        let result = if ok { "ok" } else { "error" };
        self.plugin_calls
            .get_or_create(&vec![
                ("plugin", plugin.to_string()),
                ("kind", kind.to_string()),
                ("call", call.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
        self.plugin_call_seconds
            .get_or_create(&vec![
                ("plugin", plugin.to_string()),
                ("call", call.to_string()),
            ])
            .observe(took.as_secs_f64());
    }

    /// Records one API request (`route` is its template, e.g. `/api/namespaces/{namespace_id}`).
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_request_seconds
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method.to_string()),
            ])
            .observe(took.as_secs_f64());
    }
}

/// The process's metrics. One registry per process: a server is one process.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// The Prometheus text exposition of every metric.
pub fn encode() -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_text::encode(&mut text, &metrics().registry) {
        tracing::error!(%error, "could not encode the metrics");
    }
    text
}

/// Counts a live client in a gauge for as long as it is held.
pub struct Live(&'static Gauge);

impl Live {
    pub fn new(gauge: &'static Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts runs and tasks from the event bus: queued, dispatched (queue wait), ended (status and
/// duration). Times come from the events' emission, so they are what the database recorded.
pub fn observe_events(events: &EventBus) {
    let mut receiver = events.subscribe();
    tokio::spawn(async move {
        // Runs and task attempts in flight: when they were queued or started (epoch ms).
        let mut queued: HashMap<(String, String, u64), u64> = HashMap::new();
        let mut started: HashMap<(String, String, u64), u64> = HashMap::new();
        let mut tasks: HashMap<(String, String, u64, String), u64> = HashMap::new();
        let seconds = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
        loop {
            let event = match receiver.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "metrics missed events; durations of runs in flight are lost"
                    );
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let at = event.emitted;
            let metrics = metrics();
            match event.kind {
                EventKind::QueuedRun {
                    namespace_id,
                    pipeline_id,
                    run_id,
                } => {
                    metrics
                        .runs_started
                        .get_or_create(&vec![
                            ("namespace", namespace_id.clone()),
                            ("pipeline", pipeline_id.clone()),
                        ])
                        .inc();
                    queued.insert((namespace_id, pipeline_id, run_id), at);
                }
                EventKind::StartedRun {
                    namespace_id,
                    pipeline_id,
                    run_id,
                } => {
                    let key = (namespace_id, pipeline_id, run_id);
                    if let Some(queued_at) = queued.remove(&key) {
                        metrics.queue_wait_seconds.observe(seconds(queued_at, at));
                    }
                    started.insert(key, at);
                }
                EventKind::CompletedRun {
                    namespace_id,
                    pipeline_id,
                    run_id,
                    status,
                } => {
                    let status = format!("{status:?}").to_lowercase();
                    metrics
                        .runs_finished
                        .get_or_create(&vec![
                            ("namespace", namespace_id.clone()),
                            ("pipeline", pipeline_id.clone()),
                            ("status", status.clone()),
                        ])
                        .inc();
                    let key = (namespace_id, pipeline_id, run_id);
                    queued.remove(&key);
                    if let Some(started_at) = started.remove(&key) {
                        metrics
                            .run_seconds
                            .get_or_create(&vec![("status", status)])
                            .observe(seconds(started_at, at));
                    }
                }
                EventKind::StartedTaskExecution {
                    namespace_id,
                    pipeline_id,
                    run_id,
                    task_execution_id,
                    ..
                } => {
                    tasks.insert((namespace_id, pipeline_id, run_id, task_execution_id), at);
                }
                EventKind::CompletedTaskExecution {
                    namespace_id,
                    pipeline_id,
                    run_id,
                    task_execution_id,
                    status,
                } => {
                    let status = format!("{status:?}").to_lowercase();
                    metrics
                        .tasks_finished
                        .get_or_create(&vec![("status", status.clone())])
                        .inc();
                    let key = (namespace_id, pipeline_id, run_id, task_execution_id);
                    if let Some(started_at) = tasks.remove(&key) {
                        metrics
                            .task_seconds
                            .get_or_create(&vec![("status", status)])
                            .observe(seconds(started_at, at));
                    }
                }
                _ => {}
            }
            // Entries whose end was missed (a lagged receiver) must not pile up.
            for map_len in [queued.len(), started.len(), tasks.len()] {
                if map_len > 100_000 {
                    queued.clear();
                    started.clear();
                    tasks.clear();
                    break;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_is_prometheus_text_with_bounded_labels() {
        metrics().http_request(
            "/api/namespaces/{namespace_id}",
            "GET",
            200,
            Duration::from_millis(3),
        );
        let text = encode();
        assert!(
            text.contains("# TYPE gofer_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "gofer_http_requests_total{route=\"/api/namespaces/{namespace_id}\",method=\"GET\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("gofer_http_request_seconds_bucket"), "{text}");
    }
}
