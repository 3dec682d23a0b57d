//! The outermost layer: opens the request's SERVER span (continuing the caller's trace; named and
//! attributed by the OpenTelemetry HTTP conventions: `GET /api/v1/events/{id}`,
//! `http.request.method`, `http.route`, `http.response.status_code`, failed on 5xx), bounds the
//! request by `ERP_HTTP_TIMEOUT_MS` (503 after it), echoes the request id and `traceparent`, adds
//! security headers, records HTTP metrics by route template and writes the access log line.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use erp_platform::error::ApiError;
use erp_platform::telemetry;
use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tower::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::REQUEST_ID;
use super::access_log::AccessLog;
use crate::client_ip::ClientIp;
use crate::problem::Problem;
use crate::state::AppState;

#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    state: AppState,
    access_log: AccessLog,
}

impl<S> Observe<S> {
    pub(crate) fn new(inner: S, state: AppState, access_log: AccessLog) -> Self {
        Self {
            inner,
            state,
            access_log,
        }
    }
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Some(peer) = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
        {
            let client =
                ClientIp::resolve(request.headers(), peer, self.state.config.trusted_proxies);
            request.extensions_mut().insert(client);
        }
        let exchange = Exchange {
            started: Instant::now(),
            request_id: request_id_from(&request),
            method: request.method().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
            state: self.state.clone(),
            access_log: self.access_log,
        };
        let span = exchange.server_span();
        telemetry::set_parent_from_http(&span, request.headers());
        if let Some(trace_id) = span.in_scope(telemetry::current_trace_id) {
            span.record("trace_id", trace_id.as_str());
        }
        let response = span.in_scope(|| self.inner.call(request));
        ObservedFuture {
            response: tokio::time::timeout(self.state.config.request_timeout, response)
                .instrument(span),
            exchange: Some(exchange),
        }
    }
}

pin_project! {
    /// The inner route's response, finished by [`Observe`] once it is ready.
    pub struct ObservedFuture<F> {
        #[pin]
        response: Instrumented<Timeout<F>>,
        exchange: Option<Exchange>,
    }
}

impl<F> Future for ObservedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = match ready!(this.response.as_mut().poll(cx)) {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_elapsed) => {
                Problem(ApiError::unavailable("a service behind the gateway")).into_response()
            }
        };
        let span = this.response.as_ref().get_ref().span();
        Poll::Ready(Ok(match this.exchange.take() {
            Some(exchange) => exchange.finish(response, span),
            // Only reachable if polled again after completion.
            None => response,
        }))
    }
}

/// What the layer remembers of a request until its response.
struct Exchange {
    started: Instant,
    request_id: String,
    method: Method,
    route: Option<MatchedPath>,
    state: AppState,
    access_log: AccessLog,
}

impl Exchange {
    fn route(&self) -> &str {
        self.route.as_ref().map_or("unmatched", MatchedPath::as_str)
    }

    /// The request's SERVER span: `METHOD /route/template`, or the method alone when no route
    /// matched (a name per made-up path would be unbounded).
    fn server_span(&self) -> tracing::Span {
        let method = semconv_method(&self.method);
        match &self.route {
            Some(route) => tracing::info_span!(
                "http.server",
                otel.name = %format_args!("{method} {}", route.as_str()),
                otel.kind = "server",
                http.request.method = method,
                http.route = route.as_str(),
                request_id = %self.request_id,
                trace_id = tracing::field::Empty,
            ),
            None => tracing::info_span!(
                "http.server",
                otel.name = if method == OTHER_METHOD { "HTTP" } else { method },
                otel.kind = "server",
                http.request.method = method,
                request_id = %self.request_id,
                trace_id = tracing::field::Empty,
            ),
        }
    }

    fn finish(self, mut response: Response, span: &tracing::Span) -> Response {
        let status = response.status();
        // Export-only attributes: the span's log fields are fixed when it opens.
        telemetry::set_span_attribute(
            span,
            "http.response.status_code",
            i64::from(status.as_u16()),
        );
        if status.is_server_error() {
            telemetry::set_span_error(span, status.as_str());
        }
        span.in_scope(|| self.access_log.write(status, self.started.elapsed()));
        let route = self.route();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID, value);
        }
        span.in_scope(|| telemetry::inject_http(headers));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        if !route.starts_with("/docs") {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            );
        }
        // Labels from closed sets only: route templates (or `unmatched`), the standard methods
        // (or `other`), the statuses the gateway answers.
        let method = method_label(&self.method);
        let metrics = &self.state.metrics;
        metrics
            .requests
            .with_label_values(&[route, method, response.status().as_str()])
            .inc();
        metrics
            .duration
            .with_label_values(&[route, method])
            .observe(self.started.elapsed().as_secs_f64());
        response
    }
}

/// The metric label of a method: a standard one, else `other` (clients can send any token).
pub(super) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `http.request.method` of a method the HTTP conventions do not know.
const OTHER_METHOD: &str = "_OTHER";

/// `http.request.method`: a method the conventions know, else `_OTHER` (clients can send any
/// token).
fn semconv_method(method: &Method) -> &'static str {
    match *method {
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => match method_label(method) {
            "other" => OTHER_METHOD,
            known => known,
        },
    }
}

/// The request id a client sent (if sane) or a new one.
fn request_id_from(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned)
}

/// A random (v4) UUID from the thread-local generator: `Uuid::new_v4` asks the kernel for
/// randomness on every call, once per request here.
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn method_labels_are_a_closed_set() {
        for (method, label) in [
            (Method::GET, "GET"),
            (Method::HEAD, "HEAD"),
            (Method::POST, "POST"),
            (Method::PUT, "PUT"),
            (Method::PATCH, "PATCH"),
            (Method::DELETE, "DELETE"),
            (Method::OPTIONS, "OPTIONS"),
            (Method::TRACE, "other"),
            (Method::CONNECT, "other"),
        ] {
            assert_eq!(method_label(&method), label);
        }
        for made_up in ["FOO", "get", "XYZZY1", "PROPFIND"] {
            let method = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other");
        }
    }
}
