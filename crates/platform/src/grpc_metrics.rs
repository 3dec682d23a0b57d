//! RED metrics for gRPC: a wrapper around a tonic service (server side) or a channel (client
//! side) counting calls by method and status code and timing them. The same wrapper finishes the
//! calls' spans (it is where every call's status is read): on the client side it opens the CLIENT
//! span and propagates its context; on the server side it records the status on the SERVER span
//! [`crate::grpc::server`] opened.
//!
//! The status is read from the response headers, where tonic puts it for errors (trailers-only
//! responses); a response without it is a success whose status follows in the trailers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tonic::server::NamedService;

use crate::grpc::SpanSide;

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters and histograms of one side (server or client) in one registry, labelled with a
/// service; one `Arc`, as every measured call holds a clone.
#[derive(Clone)]
pub struct GrpcMetrics(Arc<Labelled>);

struct Labelled {
    requests: IntCounterVec,
    duration: HistogramVec,
    service: String,
    side: SpanSide,
}

impl GrpcMetrics {
    /// `erp_grpc_server_*`, labelled with this process's service name.
    pub fn server(registry: &Registry, service: &str) -> Result<Self, prometheus::Error> {
        Self::register(registry, SpanSide::Server, service)
    }

    /// `erp_grpc_client_*`; label each upstream with [`GrpcMetrics::for_upstream`].
    pub fn client(registry: &Registry) -> Result<Self, prometheus::Error> {
        Self::register(registry, SpanSide::Client, "")
    }

    fn register(
        registry: &Registry,
        span_side: SpanSide,
        service: &str,
    ) -> Result<Self, prometheus::Error> {
        let side = match span_side {
            SpanSide::Server => "server",
            SpanSide::Client => "client",
        };
        let requests = IntCounterVec::new(
            Opts::new(
                format!("erp_grpc_{side}_requests_total"),
                format!("gRPC calls ({side} side) by service, method and status code"),
            ),
            &["service", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                format!("erp_grpc_{side}_request_duration_seconds"),
                format!("gRPC call duration ({side} side) until response headers"),
            )
            .buckets(BUCKETS.to_vec()),
            &["service", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self(Arc::new(Labelled {
            requests,
            duration,
            service: service.to_owned(),
            side: span_side,
        })))
    }

    /// Exports, at 0, the server-error series of every method in `method_paths` (as
    /// [`rpc_paths`] lists them): one per gRPC code the error table answers a server failure
    /// with (`ErrorCode`s of HTTP status 5xx: INTERNAL, UNAVAILABLE). Without them, a healthy
    /// service has no error series, and the error-ratio panels and alerts read "No data"
    /// instead of 0. Closed: the contract's methods times those codes.
    pub fn expose_server_errors<'a>(&self, method_paths: impl IntoIterator<Item = &'a str>) {
        let labelled = &self.0;
        let codes = server_error_codes();
        for method in method_paths {
            for code in &codes {
                labelled
                    .requests
                    .with_label_values(&[&labelled.service, method, code]);
            }
        }
    }

    /// The same metrics labelled with the upstream service called (client side).
    #[must_use]
    pub fn for_upstream(&self, service: &str) -> Self {
        Self(Arc::new(Labelled {
            requests: self.0.requests.clone(),
            duration: self.0.duration.clone(),
            service: service.to_owned(),
            side: self.0.side,
        }))
    }

    pub fn wrap<S>(&self, inner: S) -> Measured<S> {
        Measured {
            inner,
            metrics: self.clone(),
        }
    }

    fn observe(&self, method: &str, code: &str, started: Instant) {
        let labelled = &self.0;
        labelled
            .requests
            .with_label_values(&[&labelled.service, method, code])
            .inc();
        labelled
            .duration
            .with_label_values(&[&labelled.service, method])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The gRPC codes (by name) of the error table's server failures (HTTP status 5xx), each once.
fn server_error_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = crate::error::ErrorCode::ALL
        .iter()
        .filter(|code| code.http_status() >= 500)
        .map(|code| code_name(code.grpc_code() as i32))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// The method paths (`/package.Service/Method`, as a call's URI path and the `method` label
/// carry them) of every `rpc` in the `.proto` text `proto_source`: the closed set of methods a
/// server built from it answers.
pub fn rpc_paths(proto_source: &str) -> Vec<String> {
    let mut package = "";
    // The service whose block is open, and the depth of braces inside it.
    let mut service: Option<(&str, usize)> = None;
    let mut paths = Vec::new();
    for line in proto_source.lines().map(str::trim) {
        if line.starts_with("//") {
            continue;
        }
        match service {
            None => {
                if let Some(rest) = line.strip_prefix("package ") {
                    package = rest.trim_end_matches(';').trim();
                } else if let Some(rest) = line.strip_prefix("service ") {
                    let name = rest.split(['{', ' ']).next().unwrap_or_default();
                    service = Some((name, line.matches('{').count()));
                }
            }
            Some((name, depth)) => {
                if let Some(rest) = line.strip_prefix("rpc ")
                    && let Some(method) = rest.split(['(', ' ']).next()
                {
                    paths.push(format!("/{package}.{name}/{method}"));
                }
                let depth =
                    (depth + line.matches('{').count()).saturating_sub(line.matches('}').count());
                service = (depth > 0).then_some((name, depth));
            }
        }
    }
    paths
}

/// The canonical name of a gRPC status code.
pub(crate) fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// A service (or channel) whose calls are measured.
#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S: NamedService> NamedService for Measured<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower::Service<http::Request<B>> for Measured<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MeasuredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // tonic's paths are static: cloning one is a reference count, not a copy.
        let method = request.uri().path_and_query().cloned();
        let client_span = match self.metrics.0.side {
            SpanSide::Server => None,
            SpanSide::Client => {
                let span = crate::grpc::client_span(request.uri().path());
                // The callee continues the trace from this CLIENT span, not from its parent.
                crate::telemetry::inject_http_from(&span, request.headers_mut());
                Some(span)
            }
        };
        let inner = match &client_span {
            Some(span) => span.in_scope(|| self.inner.call(request)),
            None => self.inner.call(request),
        };
        MeasuredFuture {
            method,
            metrics: self.metrics.clone(),
            started: Instant::now(),
            client_span,
            inner,
        }
    }
}

pin_project_lite::pin_project! {
    /// A measured call: records its status code and duration when the response (headers) comes.
    pub struct MeasuredFuture<F> {
        #[pin]
        inner: F,
        method: Option<http::uri::PathAndQuery>,
        metrics: GrpcMetrics,
        started: Instant,
        // The CLIENT span of an outgoing call (client side only).
        client_span: Option<tracing::Span>,
    }
}

impl<F, R, E> Future for MeasuredFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = this.client_span.as_ref().map(tracing::Span::enter);
        let result = std::task::ready!(this.inner.poll(cx));
        drop(entered);
        let status = match &result {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            // The call did not reach the server (or its answer was lost): UNAVAILABLE.
            Err(_) => 14,
        };
        match this.client_span.take() {
            Some(span) => crate::grpc::record_status(&span, SpanSide::Client, status),
            // tonic polls a server call inside the span its `trace_fn` opened.
            None => {
                crate::grpc::record_status(&tracing::Span::current(), SpanSide::Server, status);
            }
        }
        let code = code_name(status);
        // A path no service implements is the caller's invention: one label for all of them,
        // so made-up paths cannot add series.
        let method = match code {
            "UNIMPLEMENTED" => "other",
            _ => this
                .method
                .as_ref()
                .map_or("", http::uri::PathAndQuery::path),
        };
        this.metrics.observe(method, code, *this.started);
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use prometheus::core::Collector;
    use tower::{Service, ServiceExt};

    use super::*;

    /// A server that answers every path as tonic's router answers an unknown one, except
    /// `/known`.
    fn server() -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<()>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<Result<http::Response<()>, std::convert::Infallible>>,
    > + Clone {
        tower::service_fn(|request: http::Request<()>| {
            let mut response = http::Response::new(());
            if request.uri().path() != "/known" {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("12"));
            }
            std::future::ready(Ok(response))
        })
    }

    #[test]
    fn rpc_paths_of_a_proto() {
        let proto = "syntax = \"proto3\";\npackage erp.test.v1;\n\nservice TestService {\n  // Says hi.\n  rpc SayHi(HiRequest) returns (HiResponse);\n  rpc ListThings (ListRequest) returns (stream Thing) {\n    option deprecated = true;\n  }\n  rpc Last(LastRequest) returns (LastResponse);\n}\n\nmessage HiRequest {\n  string name = 1;\n}\n";
        assert_eq!(
            rpc_paths(proto),
            [
                "/erp.test.v1.TestService/SayHi",
                "/erp.test.v1.TestService/ListThings",
                "/erp.test.v1.TestService/Last"
            ]
        );
    }

    #[test]
    fn server_errors_are_exported_at_zero() {
        let registry = Registry::new();
        let metrics = GrpcMetrics::server(&registry, "erp-test").unwrap();
        metrics.expose_server_errors(["/erp.test.v1.TestService/SayHi"]);
        let text = crate::metrics::render(&registry).unwrap();
        for code in ["INTERNAL", "UNAVAILABLE"] {
            let series = format!(
                "erp_grpc_server_requests_total{{code=\"{code}\",method=\"/erp.test.v1.TestService/SayHi\",service=\"erp-test\"}} 0"
            );
            assert!(text.contains(&series), "no {series} in:\n{text}");
        }
        assert_eq!(metrics.0.requests.collect()[0].get_metric().len(), 2);
    }

    #[tokio::test]
    async fn made_up_method_paths_share_one_label() {
        let registry = Registry::new();
        let metrics = GrpcMetrics::server(&registry, "erp-test").unwrap();
        let mut measured = metrics.wrap(server());
        for path in ["/known", "/made.Up/One", "/made.Up/Two", "/x"] {
            let request = http::Request::builder().uri(path).body(()).unwrap();
            measured.ready().await.unwrap().call(request).await.unwrap();
        }
        let requests = &metrics.0.requests;
        assert_eq!(requests.collect()[0].get_metric().len(), 2);
        assert_eq!(
            requests
                .with_label_values(&["erp-test", "other", "UNIMPLEMENTED"])
                .get(),
            3
        );
        assert_eq!(
            requests
                .with_label_values(&["erp-test", "/known", "OK"])
                .get(),
            1
        );
    }
}
