//! Logs, traces and trace-context propagation.
//!
//! Logs go to stdout as JSON (default) or in a pretty form for a terminal, filtered by `RUST_LOG`.
//! A JSON line written inside a span carries that span's `trace_id` and `span_id` as top-level
//! fields (what log pipelines link to traces by), every key once ([`json_log`]).
//! Every span gets an OpenTelemetry trace id even when no collector is configured, because the trace
//! id is also what errors and audit records cite; spans are exported over OTLP/gRPC only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::str::FromStr;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod json_log;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err("expected json or pretty".to_owned()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes spans not yet exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the global subscriber and propagator. Call once, at start.
    pub fn init(
        service_name: &str,
        format: LogFormat,
        otlp_endpoint: Option<&str>,
    ) -> Result<Self, TelemetryError> {
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        if let Some(endpoint) = otlp_endpoint {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.to_owned())
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        let tracer = provider.tracer(service_name.to_owned());
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);
        let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
        let installed = match format {
            LogFormat::Json => registry.with(json_log::layer(std::io::stdout)).try_init(),
            LogFormat::Pretty => registry
                .with(tracing_subscriber::fmt::layer().with_target(true))
                .try_init(),
        };
        installed.map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
        Ok(Self { provider })
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

/// The W3C trace id of the current span, if it has one (32 lowercase hex digits).
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_str(key),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent carried by `traceparent`/`tracestate` HTTP headers.
pub(crate) fn extract_http(headers: &http::HeaderMap) -> Context {
    propagator().extract(&HeaderExtractor(headers))
}

/// Writes the current span's context into HTTP headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    inject_http_from(&tracing::Span::current(), headers);
}

/// Writes `span`'s context into HTTP headers (those of an outgoing gRPC call, say).
pub(crate) fn inject_http_from(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    propagator().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Sets an attribute of `span` for trace export only. Recording a `tracing` field instead would
/// also make the JSON log layer re-parse and re-write every field of the span, for a value no log
/// line of the span shows (it is set when the request is over).
pub fn set_span_attribute(span: &tracing::Span, key: &'static str, value: i64) {
    span.set_attribute(key, value);
}

/// Marks `span` failed (for export), with `description` (a status code, say).
pub fn set_span_error(span: &tracing::Span, description: &str) {
    span.set_status(opentelemetry::trace::Status::error(description.to_owned()));
}

/// Makes `span` a child of the remote context found in `headers`, if any.
pub fn set_parent_from_http(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = extract_http(headers);
    if parent.span().span_context().is_valid() {
        // Only fails when the span is disabled, which leaves nothing to link.
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn remote_context() -> Context {
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(span_context)
    }

    #[test]
    fn http_headers_round_trip_the_trace_context() {
        let mut headers = http::HeaderMap::new();
        propagator().inject_context(&remote_context(), &mut HeaderInjector(&mut headers));
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let extracted = extract_http(&headers);
        assert_eq!(
            extracted.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse::<LogFormat>(), Ok(LogFormat::Pretty));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
