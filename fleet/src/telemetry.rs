//! Logs and traces of both binaries (`[telemetry]`): logs as text or JSON lines, spans exported
//! over OTLP/HTTP when a collector is configured, and the W3C trace context (`traceparent`) that
//! ties an API request to the jobs it made, across the queue, into the worker and onto the stored
//! images.
//!
//! Every span gets an OpenTelemetry identity even with no collector configured: trace ids are
//! what the `traceparent` carries from the scheduler to the workers and the S3 metadata, so they
//! must exist whether or not anyone collects the spans.

use std::collections::HashMap;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The W3C header and AMQP header name of the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// `[telemetry]`: how a binary logs and whether it exports its spans.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (for people) or `json` (one object per line, for log pipelines).
    #[serde(default)]
    pub log_format: LogFormat,
    /// An OpenTelemetry collector's OTLP/HTTP base address (`http://otel-collector:4318`); spans
    /// go to `{otlp_endpoint}/v1/traces`. Absent = no export.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "telemetry.otlp_endpoint `{endpoint}`: {reason} (an OTLP/HTTP address such as http://otel-collector:4318)"
    )]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// Flushes the spans still buffered when the process ends.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // A collector that is away must not keep a stopping process; the spans are then lost.
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry: spans not flushed: {error}");
        }
    }
}

/// Installs the process' log subscriber (filtered by `RAPID_LOG`, else `default_filter`) and its
/// tracer. Call once, early, and keep the guard until the end of `main`.
pub fn init(
    config: &TelemetryConfig,
    service: &'static str,
    default_filter: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    let mut provider =
        SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(service).build());
    if let Some(endpoint) = &config.otlp_endpoint {
        let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = {
            use opentelemetry_otlp::WithExportConfig;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&traces)
                .build()
                .map_err(|e| TelemetryError::Endpoint { endpoint: endpoint.clone(), reason: e.to_string() })?
        };
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer(service);

    let filter = EnvFilter::try_from_env("RAPID_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        // Colours only for a person at a terminal, not into a container's or a test's log file.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // `RAPID_LOG` quiets the logs only: the project's spans are always made, because their trace
    // context is what the jobs and the images carry, whatever the log level.
    let spans =
        Targets::new().with_targets(["rapid_scheduler", "rapid_worker", "rapid_fleet"].map(|t| (t, Level::INFO)));
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(spans))
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// The span's W3C `traceparent`, to hand on to whoever continues its work; `None` where no
/// tracer is installed (tests, the `generate` command).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the work a `traceparent` names (a caller's HTTP request, the request
/// that made a job). A malformed value is ignored: the span starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    // Fails only when no tracer is installed; the span then simply has no parent.
    let _ = span.set_parent(context);
}
