//! What every handler shares: the upstream clients, the introspection cache, the rate limiter,
//! configuration and metrics.

use std::sync::Arc;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use erp_platform::error::ErrorCode;

use crate::access::API_PREFIX;
use crate::config::Config;
use crate::introspection::Introspector;
use crate::middleware::RATE_LIMIT_POLICIES;
use crate::ratelimit::RateLimiter;
use crate::route_table::ROUTE_TABLE;
use crate::upstream::{AuthClient, EventClient};

#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub introspection_cache: IntCounterVec,
    pub rate_limited: IntCounterVec,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "erp_http_requests_total",
                    "HTTP requests by route template, method and status",
                ),
                &["route", "method", "status"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "erp_http_request_duration_seconds",
                    "HTTP request duration by route template",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["route", "method"],
            )?,
            introspection_cache: IntCounterVec::new(
                Opts::new(
                    "erp_gateway_introspection_cache_total",
                    "Introspection cache lookups by result",
                ),
                &["result"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "erp_gateway_rate_limited_total",
                    "Requests refused by a rate limit, by policy",
                ),
                &["policy"],
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.introspection_cache.clone()))?;
        registry.register(Box::new(metrics.rate_limited.clone()))?;
        metrics.expose_error_series();
        Ok(metrics)
    }

    /// Exports at 0, from the start, the series a healthy gateway never counts but the
    /// dashboards and alerts select (5xx ratios, rate-limited requests): without them those
    /// panels read "No data" instead of 0. Closed sets: the route table's routes times the
    /// error table's 5xx statuses, and the rate-limit policies.
    fn expose_error_series(&self) {
        let server_errors = server_error_statuses();
        for (method, template, _) in ROUTE_TABLE {
            // The labels the request metrics give: the matched template (which carries the
            // API prefix) and the method's name (the table's are all standard ones).
            let route = format!("{API_PREFIX}{template}");
            for status in &server_errors {
                self.requests
                    .with_label_values(&[&route, method.as_str(), status]);
            }
        }
        for policy in RATE_LIMIT_POLICIES {
            self.rate_limited.with_label_values(&[policy]);
        }
    }
}

/// The HTTP statuses (as labelled) the error table answers a server failure with, each once.
fn server_error_statuses() -> Vec<String> {
    let mut statuses: Vec<u16> = ErrorCode::ALL
        .iter()
        .map(|code| code.http_status())
        .filter(|status| *status >= 500)
        .collect();
    statuses.sort_unstable();
    statuses.dedup();
    statuses.iter().map(u16::to_string).collect()
}

/// A cheap handle on [`Shared`]: axum clones the state for every extractor and middleware, so
/// it is one `Arc` rather than the clients, caches and metrics themselves.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What the handlers use.
pub struct Shared {
    pub auth: AuthClient,
    pub event: EventClient,
    pub introspector: Introspector,
    pub limiter: RateLimiter,
    pub metrics: HttpMetrics,
    pub config: Arc<Config>,
}

impl Shared {
    /// A handle on the auth client for one call (tonic clients are cheap to clone, and each call
    /// needs its own).
    pub fn auth(&self) -> AuthClient {
        self.auth.clone()
    }

    /// A handle on the event client for one call.
    pub fn event(&self) -> EventClient {
        self.event.clone()
    }
}
