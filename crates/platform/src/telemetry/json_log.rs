//! The JSON log line: one object per event with `timestamp`, `level`, `target`, the event's own
//! fields (`message` among them), `trace_id` and `span_id` of the span the event happened in (the
//! W3C ids its trace is exported under), and `span` (that span's name and fields).
//!
//! tracing-subscriber's own JSON format nests the trace id inside `span` at best, and writes a key
//! twice when an event field repeats one of its own; here every key appears once (the line is
//! built as a map: the formatter's keys win over event fields of the same name).

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::Layer;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// The layer writing JSON lines to `writer`.
pub(crate) fn layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let dispatch = Arc::new(OnceLock::new());
    DispatchCapture(Arc::clone(&dispatch)).and_then(
        tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine { dispatch })
            .with_writer(writer),
    )
}

/// Hands the formatter the dispatcher it is installed in. The OpenTelemetry context of a span is
/// looked up through it, and while an event is being written `tracing::dispatcher::get_default`
/// answers no dispatcher at all (re-entrance guard).
struct DispatchCapture(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for DispatchCapture {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }
}

/// The JSON event format (with `JsonFields` as the span field formatter).
struct JsonLine {
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = EventFields::default();
        event.record(&mut line);
        let EventFields {
            fields: mut line,
            log_target,
        } = line;

        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = &span {
            // Before reading the span's extensions: the OpenTelemetry layer locks them.
            let dispatch = self.dispatch.get().and_then(WeakDispatch::upgrade);
            if let Some((trace_id, span_id)) =
                dispatch.and_then(|dispatch| trace_and_span_id(&span.id(), &dispatch))
            {
                line.insert("trace_id".to_owned(), Value::String(trace_id));
                line.insert("span_id".to_owned(), Value::String(span_id));
            }
            line.insert("span".to_owned(), span_object::<S, N>(span));
        }

        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let metadata = event.metadata();
        line.insert("timestamp".to_owned(), Value::String(timestamp));
        line.insert(
            "level".to_owned(),
            Value::String(metadata.level().as_str().to_owned()),
        );
        let target = log_target.unwrap_or_else(|| metadata.target().to_owned());
        line.insert("target".to_owned(), Value::String(target));

        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writer.write_str(&text)?;
        writeln!(writer)
    }
}

/// The W3C trace id and span id of the span `id`, if it has a valid OpenTelemetry context.
fn trace_and_span_id(id: &tracing::span::Id, dispatch: &Dispatch) -> Option<(String, String)> {
    let context = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// `{"name": …, <the span's fields>}`, from the fields the fmt layer stored as JSON.
fn span_object<S, N>(span: &SpanRef<'_, S>) -> Value
where
    S: for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let mut object = span
        .extensions()
        .get::<FormattedFields<N>>()
        .and_then(|fields| serde_json::from_str::<Map<String, Value>>(fields).ok())
        .unwrap_or_default();
    object.insert(
        "name".to_owned(),
        Value::String(span.metadata().name().to_owned()),
    );
    Value::Object(object)
}

/// An event's fields as JSON values. Events bridged from the `log` crate carry their metadata as
/// `log.*` fields: their target replaces the bridge's, the rest is dropped.
#[derive(Default)]
struct EventFields {
    fields: Map<String, Value>,
    log_target: Option<String>,
}

impl EventFields {
    fn insert(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if let Some(log_field) = name.strip_prefix("log.") {
            if log_field == "target"
                && let Value::String(target) = value
            {
                self.log_target = Some(target);
            }
            return;
        }
        self.fields.insert(name.to_owned(), value);
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::String(value.to_owned()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects what the format writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_in_a_span_carries_its_ids_once_at_the_top() {
        use opentelemetry::trace::TracerProvider as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(layer(move || writer.clone()));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", route = "/x");
            let _entered = span.enter();
            // An event field named like one of the line's own keys.
            tracing::info!(level = "mine", answer = 42, "inside");
            let context = tracing_opentelemetry::OpenTelemetrySpanExt::context(&span);
            let otel_span = context.span();
            let span_context = otel_span.span_context();
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["trace_id"], trace_id.as_str(), "{text}");
        assert_eq!(line["span_id"], span_id.as_str(), "{text}");
        assert_eq!(line["message"], "inside");
        assert_eq!(line["answer"], 42);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["name"], "request");
        assert_eq!(line["span"]["route"], "/x");
        assert_eq!(text.matches("\"level\"").count(), 1, "{text}");
    }

    #[test]
    fn a_line_outside_spans_has_no_ids() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || tracing::warn!("alone"));
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "alone");
        assert_eq!(line["level"], "WARN");
        assert!(line.get("trace_id").is_none() && line.get("span").is_none());
    }
}
