//! Traces end to end: the real binaries export over OTLP/gRPC to a receiver in the test (the
//! collector service generated from the OTLP protos, so what is checked is what the exporters
//! sent). One request is one tree of spans named and attributed by the OpenTelemetry conventions:
//! gateway SERVER `GET /api/v1/events` → gateway CLIENT `erp.event.v1.EventService/ListEvents` →
//! event SERVER of the same name (and the same for the token's introspection by auth); probes and
//! `/metrics` are not exported; and the request's log lines carry the exported span's ids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatusCode;
use reqwest::StatusCode;

use crate::common::{Platform, trace_id_of};

/// One exported span, flattened: hex ids, its service's name and its attributes as text.
#[derive(Debug, Clone)]
struct ExportedSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: SpanKind,
    failed: bool,
    attributes: BTreeMap<String, String>,
}

impl ExportedSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn text_of(attribute: &KeyValue) -> String {
    match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/gRPC trace receiver on a free loopback port, keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportedSpan>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(text_of)
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                kept.push(ExportedSpan {
                    service: service.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    failed: span
                        .status
                        .as_ref()
                        .is_some_and(|s| s.code == SpanStatusCode::Error as i32),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text_of(a)))
                        .collect(),
                    name: span.name,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves until the test's runtime ends; returns the receiver and its endpoint URL.
    async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (receiver, endpoint)
    }

    fn spans(&self) -> Vec<ExportedSpan> {
        self.0.lock().unwrap().clone()
    }

    /// The spans of `trace_id`, once `enough` says they have all arrived (10 s at most).
    async fn trace(
        &self,
        trace_id: &str,
        enough: impl Fn(&[ExportedSpan]) -> bool,
    ) -> Vec<ExportedSpan> {
        let of_trace = || -> Vec<ExportedSpan> {
            self.spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect()
        };
        let _ = erp_testkit::eventually(Duration::from_secs(10), || async {
            let spans = of_trace();
            if enough(&spans) {
                Ok(())
            } else {
                Err(spans.len())
            }
        })
        .await;
        of_trace()
    }
}

/// The platform exporting to `endpoint`.
async fn platform_exporting_to(endpoint: &str) -> Platform {
    Platform::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .start()
        .await
}

/// The one span of `service` named `name` among `spans`.
fn one<'a>(spans: &'a [ExportedSpan], service: &str, name: &str) -> &'a ExportedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one span {name} of {service} expected in:\n{}",
        describe(spans)
    );
    found[0]
}

fn describe(spans: &[ExportedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {} id={} parent={} failed={} {:?}",
                s.service, s.kind, s.name, s.span_id, s.parent_span_id, s.failed, s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `child` is a `kind` span whose parent is `parent`.
fn assert_child(child: &ExportedSpan, parent: &ExportedSpan, kind: SpanKind) {
    assert_eq!(child.kind, kind, "{child:?}");
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{} should be a child of {}",
        child.name, parent.name
    );
}

/// A CLIENT span and the SERVER span it called carry the RPC conventions' attributes.
fn assert_rpc_pair(client: &ExportedSpan, server: &ExportedSpan, service: &str, method: &str) {
    for span in [client, server] {
        assert_eq!(span.name, format!("{service}/{method}"));
        assert_eq!(span.attribute("rpc.system"), Some("grpc"), "{span:?}");
        assert_eq!(span.attribute("rpc.service"), Some(service), "{span:?}");
        assert_eq!(span.attribute("rpc.method"), Some(method), "{span:?}");
        assert_eq!(
            span.attribute("rpc.grpc.status_code"),
            Some("0"),
            "{span:?}"
        );
        assert!(!span.failed, "{span:?}");
    }
    assert_child(server, client, SpanKind::Server);
}

#[tokio::test]
async fn one_request_is_one_tree_of_spans_across_the_services() {
    let (receiver, endpoint) = Receiver::start().await;
    let mut platform = platform_exporting_to(&endpoint).await;
    let admin = platform.admin().await;

    let trace_id = platform.read_events_traced(&admin.access_token).await;

    // Probes and scrapes of every service, which must not be exported.
    for process in [platform.gateway(), platform.auth(), platform.event()] {
        let admin_addr = process.addr("admin");
        for path in ["/healthz", "/readyz", "/healthz/dependencies", "/metrics"] {
            let _ = platform
                .http
                .get(format!("http://{admin_addr}{path}"))
                .send()
                .await
                .unwrap();
        }
    }

    // Stopping flushes every service's exporter.
    assert!(platform.stop_gateway().await);
    platform.stop_auth().await;
    assert!(platform.stop_event().await);
    let spans = receiver
        .trace(&trace_id, |spans| {
            spans.iter().any(|s| s.service == "erp-event") && spans.len() >= 5
        })
        .await;

    let gateway = one(&spans, "erp-gateway", "GET /api/v1/events");
    assert_eq!(gateway.kind, SpanKind::Server);
    assert_eq!(gateway.attribute("http.request.method"), Some("GET"));
    assert_eq!(gateway.attribute("http.route"), Some("/api/v1/events"));
    assert_eq!(gateway.attribute("http.response.status_code"), Some("200"));
    assert!(!gateway.failed);

    let list = "erp.event.v1.EventService/ListEvents";
    let client = one(&spans, "erp-gateway", list);
    assert_child(client, gateway, SpanKind::Client);
    let server = one(&spans, "erp-event", list);
    assert_rpc_pair(client, server, "erp.event.v1.EventService", "ListEvents");

    // The token is new to the gateway: it asked auth, in the same trace.
    let introspect = "erp.auth.v1.AuthService/Introspect";
    let client = one(&spans, "erp-gateway", introspect);
    assert_child(client, gateway, SpanKind::Client);
    let server = one(&spans, "erp-auth", introspect);
    assert_rpc_pair(client, server, "erp.auth.v1.AuthService", "Introspect");

    // Every span of every trace: no health check, no scrape.
    let all = receiver.spans();
    let probes: Vec<_> = all
        .iter()
        .filter(|s| {
            s.attribute("rpc.service") == Some("grpc.health.v1.Health")
                || s.name.contains("grpc.health")
                || s.name.contains("healthz")
                || s.name.contains("readyz")
                || s.name.contains("metrics")
        })
        .collect();
    assert!(probes.is_empty(), "probes exported:\n{}", describe(&all));
}

#[tokio::test]
async fn server_failures_are_recorded_as_span_errors() {
    let (receiver, endpoint) = Receiver::start().await;
    let mut platform = platform_exporting_to(&endpoint).await;
    let admin = platform.admin().await;
    // Not found is the caller's business: answered, not failed.
    let missing = platform
        .http
        .get(platform.url("/events/000000000000000000000000"))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing_trace_id = trace_id_of(&missing);
    // The event service is gone: the gateway answers 503.
    assert!(platform.stop_event().await);
    let response = platform
        .http
        .get(platform.url("/events"))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let trace_id = trace_id_of(&response);
    assert!(platform.stop_gateway().await);
    platform.stop_auth().await;

    let spans = receiver.trace(&trace_id, |spans| spans.len() >= 2).await;
    let gateway = one(&spans, "erp-gateway", "GET /api/v1/events");
    assert_eq!(gateway.attribute("http.response.status_code"), Some("503"));
    assert!(gateway.failed, "{gateway:?}");
    let client = one(
        &spans,
        "erp-gateway",
        "erp.event.v1.EventService/ListEvents",
    );
    assert_child(client, gateway, SpanKind::Client);
    assert_eq!(client.attribute("rpc.grpc.status_code"), Some("14"));
    assert!(client.failed, "{client:?}");

    let spans = receiver
        .trace(&missing_trace_id, |spans| spans.len() >= 2)
        .await;
    let gateway = one(&spans, "erp-gateway", "GET /api/v1/events/{id}");
    assert_eq!(gateway.attribute("http.response.status_code"), Some("404"));
    assert!(!gateway.failed, "{gateway:?}");
}

#[tokio::test]
async fn a_requests_log_lines_carry_the_exported_spans_ids() {
    let (receiver, endpoint) = Receiver::start().await;
    // The chart's defaults: JSON at `info` (as every test process logs), the access log as
    // shipped.
    let mut platform = platform_exporting_to(&endpoint).await;
    let admin = platform.admin().await;
    let trace_id = platform.read_events_traced(&admin.access_token).await;

    let gateway = platform.gateway();
    let lines_of_trace = || -> Vec<serde_json::Value> {
        gateway
            .output()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["trace_id"] == trace_id.as_str())
            .collect()
    };
    let _ = erp_testkit::eventually(Duration::from_secs(5), || async {
        if lines_of_trace().is_empty() {
            Err(())
        } else {
            Ok(())
        }
    })
    .await;
    let lines = lines_of_trace();
    let output = gateway.output();
    // Every line written inside a span says which, at the top level.
    for line in output.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        if value.get("span").is_some() {
            assert!(
                value["trace_id"].is_string() && value["span_id"].is_string(),
                "a line inside a span without its ids: {line}"
            );
        }
    }
    assert!(platform.stop_gateway().await);
    platform.stop_auth().await;
    assert!(platform.stop_event().await);

    let spans = receiver.trace(&trace_id, |spans| spans.len() >= 3).await;
    let server = one(&spans, "erp-gateway", "GET /api/v1/events");
    let access: Vec<_> = lines
        .iter()
        .filter(|line| line["target"] == "erp_gateway::access")
        .collect();
    assert_eq!(access.len(), 1, "one access line per request:\n{output}");
    let access = access[0];
    assert_eq!(access["span_id"], server.span_id.as_str(), "{access}");
    assert_eq!(access["http.response.status_code"], 200, "{access}");
    assert_eq!(access["span"]["http.route"], "/api/v1/events", "{access}");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
    assert!(access["span"]["request_id"].is_string(), "{access}");
}
