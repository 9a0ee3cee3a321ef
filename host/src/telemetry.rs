//! Logs and traces: the `tracing` subscriber (pretty or JSON lines on stderr), the optional
//! OpenTelemetry export of spans over OTLP/gRPC, and W3C trace context (`traceparent`) as it
//! flows from a request to the run it starts and on to the run's container tasks.
//!
//! It decides neither what gets a span (callers do) nor what a run is; and it never makes a
//! caller wait on the exporter: spans leave in batches from the SDK's own thread.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSection, TracingSection};

/// Whether spans are exported (so that they carry OpenTelemetry ids worth handing on).
static EXPORTING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("tracing.otlp_endpoint: cannot set up the OTLP exporter for '{endpoint}': {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// A W3C trace context: the `traceparent` header's version-00 form,
/// `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` for anything the W3C recommendation says to ignore
    /// (bad length or hex, version `ff`, an all-zero id).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let is_hex = |text: &str, len: usize| {
            text.len() == len
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        };
        // Version 00 has exactly four fields; a later version may append more.
        if !is_hex(version, 2)
            || version == "ff"
            || (version == "00" && parts.next().is_some())
            || !is_hex(trace, 32)
            || !is_hex(span, 16)
            || !is_hex(flags, 2)
        {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A new trace.
    pub fn fresh() -> TraceParent {
        TraceParent {
            trace_id: uuid::Uuid::new_v4().as_u128(),
            span_id: fresh_span_id(),
            sampled: true,
        }
    }

    /// The same trace, under a new span id.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            span_id: fresh_span_id(),
            ..*self
        }
    }

    /// The trace id as 32 lowercase hex digits, as trace backends show it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    fn span_context(&self) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            flags,
            true,
            TraceState::default(),
        )
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

fn fresh_span_id() -> u64 {
    // Never zero (an invalid span id): a v4 UUID's low half has at most 6 fixed bits.
    (uuid::Uuid::new_v4().as_u128() as u64) | 1
}

/// The installed subscriber; dropping it without [`Telemetry::shutdown`] may lose the last spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: log lines as `log` says and, when
    /// `tracing.otlp_endpoint` is set, span export to it. Must be called inside the Tokio
    /// runtime (the exporter's connection lives there).
    pub fn init(log: &LogSection, tracing: &TracingSection) -> Result<Telemetry, TelemetryError> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
        let provider = (!tracing.otlp_endpoint.is_empty())
            .then(|| exporting_provider(tracing))
            .transpose()?;
        let export_layer = provider
            .as_ref()
            .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("gofer")));
        let stderr = std::io::stderr;
        let (pretty, json) = match log.format {
            LogFormat::Pretty => (
                Some(tracing_subscriber::fmt::layer().with_writer(stderr)),
                None,
            ),
            LogFormat::Json => (
                None,
                Some(tracing_subscriber::fmt::layer().json().with_writer(stderr)),
            ),
        };
        tracing_subscriber::registry()
            .with(filter)
            .with(pretty)
            .with(json)
            .with(export_layer)
            .init();
        EXPORTING.store(provider.is_some(), Ordering::Relaxed);
        Ok(Telemetry { provider })
    }

    /// Sends the spans not yet exported, waiting for the exporter (off the async threads).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = flushed {
            eprintln!("gofer: the last spans may not have been exported: {error}");
        }
    }
}

fn exporting_provider(tracing: &TracingSection) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&tracing.otlp_endpoint)
        .build()
        .map_err(|error| TelemetryError::Exporter {
            endpoint: tracing.otlp_endpoint.clone(),
            reason: error.to_string(),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(tracing.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Makes `span` a child of `parent` (a caller's `traceparent`, or the context a run was started
/// in) in the exported traces. Without export there is nothing to link.
pub fn adopt_parent(span: &tracing::Span, parent: &TraceParent) {
    if EXPORTING.load(Ordering::Relaxed) {
        let context = opentelemetry::Context::new().with_remote_span_context(parent.span_context());
        let _ = span.set_parent(context);
    }
}

/// `span`'s own trace context when spans are exported (to hand on to what it starts).
pub fn context_of(span: &tracing::Span) -> Option<TraceParent> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(span_context.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(span_context.span_id().to_bytes()),
        sampled: span_context.is_sampled(),
    })
}

tokio::task_local! {
    /// The `traceparent` the request being handled came with, if valid.
    static INCOMING: Option<TraceParent>;
}

/// Runs `work` with `incoming` as the caller's trace context (see [`trace_for_new_run`]).
pub async fn with_incoming<F: Future>(incoming: Option<TraceParent>, work: F) -> F::Output {
    INCOMING.scope(incoming, work).await
}

/// The trace context a run started now belongs to: the current span's (a request's, when
/// spans are exported), else the caller's `traceparent`, else a new trace.
pub fn trace_for_new_run() -> TraceParent {
    context_of(&tracing::Span::current())
        .or_else(|| INCOMING.try_with(|incoming| *incoming).ok().flatten())
        .unwrap_or_else(TraceParent::fresh)
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    #[test]
    fn a_traceparent_round_trips_and_bad_ones_are_ignored() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(text).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(parsed.sampled);
        assert_eq!(parsed.to_string(), text);
        let child = parsed.child();
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_ne!(child.span_id, parsed.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some_and(|parsed| !parsed.sampled)
        );
        let fresh = TraceParent::fresh();
        assert_eq!(TraceParent::parse(&fresh.to_string()), Some(fresh));
    }
}
