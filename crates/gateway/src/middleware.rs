//! The gateway's request pipeline: request id, trace context, metrics, security headers, and
//! authentication/authorisation from the route table with rate limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use erp_platform::error::{ApiError, ErrorCode};
use erp_platform::telemetry;
use tracing::Instrument;

use crate::problem::Problem;
use crate::routes::{self, Access};
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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

/// Outermost layer: opens the request span (continuing the caller's trace), bounds the request
/// by `ERP_HTTP_TIMEOUT_MS` (503 after it), echoes the request id and `traceparent`, adds
/// security headers and records HTTP metrics by route template.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_from(&request);
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.method = %method,
        http.route = %route,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        http.status = tracing::field::Empty,
    );
    telemetry::set_parent_from_http(&span, request.headers());
    if let Some(trace_id) = span.in_scope(telemetry::current_trace_id) {
        span.record("trace_id", trace_id.as_str());
    }
    let mut response = match tokio::time::timeout(state.config.request_timeout, next.run(request))
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(_) => Problem(ApiError::unavailable("a service behind the gateway")).into_response(),
    };
    span.record("http.status", response.status().as_u16());

    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
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

    state
        .metrics
        .requests
        .with_label_values(&[route, method.as_str(), response.status().as_str()])
        .inc();
    state
        .metrics
        .duration
        .with_label_values(&[route, method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

fn client_ip(request: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for
        && let Some(forwarded) = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    {
        return forwarded.to_owned();
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// The bearer token of the `Authorization` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Authentication and authorisation from [`routes::ROUTE_TABLE`], then rate limits. Verified
/// sessions go into the request's extensions for the handlers.
pub async fn authorize(
    State(state): State<AppState>,
    matched: MatchedPath,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let Some(access) = routes::access(&method, matched.as_str()) else {
        tracing::error!(route = matched.as_str(), %method, "route missing from the route table");
        return Problem(ApiError::new(
            ErrorCode::Forbidden,
            "this route is not open",
        ))
        .into_response();
    };
    let ip = client_ip(&request, state.config.trust_forwarded_for);
    if access == Access::Public {
        let limited = if routes::is_credential_route(&method, matched.as_str()) {
            state
                .limiter
                .check("credentials", &ip, state.config.auth_rate_limit_per_minute)
                .await
        } else {
            state
                .limiter
                .check("anonymous", &ip, state.config.rate_limit_per_minute)
                .await
        };
        if let Err(error) = limited {
            return Problem(error).into_response();
        }
        return next.run(request).await;
    }
    let Some(token) = bearer_token(request.headers()) else {
        return Problem(ApiError::new(
            ErrorCode::Unauthenticated,
            "this route needs Authorization: Bearer <access token>",
        ))
        .into_response();
    };
    let session = match state.introspector.session(token).await {
        Ok(session) => session,
        Err(error) => return Problem(error).into_response(),
    };
    if !routes::allows(access, &session.caller.roles) {
        return Problem(ApiError::new(
            ErrorCode::Forbidden,
            "your roles do not allow this",
        ))
        .into_response();
    }
    if let Err(error) = state
        .limiter
        .check(
            "user",
            &session.caller.user_id,
            state.config.rate_limit_per_minute,
        )
        .await
    {
        return Problem(error).into_response();
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// Helper for handlers: the verified session.
pub type SessionExt = axum::Extension<Arc<crate::introspection::Session>>;
