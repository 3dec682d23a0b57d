//! The gateway: the only public entry of the platform. It serves `/api/v1` (API.md) over HTTP,
//! checks tokens by introspection (cached, evicted on revocation), authorises from one route
//! table, rate-limits, and calls the auth and event services over gRPC.

pub mod config;
pub mod dto;
pub mod extract;
pub mod handlers;
pub mod introspection;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod routes;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use erp_platform::admin::{self, Readiness};
use erp_platform::cluster::{self, GrpcPeer};
use erp_platform::error::ApiError;
use erp_platform::grpc::GrpcHealthCheck;
use erp_platform::grpc_metrics::GrpcMetrics;
use erp_platform::redis::{RedisCheck, RedisStore};
use erp_platform::runtime::{self, BoxError};
use erp_platform::{Shutdown, metrics};
use erp_proto::auth::v1::auth_service_client::AuthServiceClient;
use erp_proto::event::v1::event_service_client::EventServiceClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::{Config, SERVICE_NAME};

use crate::introspection::{Introspector, Revocation};
use crate::problem::Problem;
use crate::ratelimit::RateLimiter;
use crate::state::{AppState, HttpMetrics};

/// The gateway, bound and connected, not yet serving.
pub struct App {
    config: Arc<Config>,
    http_listener: TcpListener,
    admin_listener: TcpListener,
    auth_channel: Channel,
    event_channel: Channel,
    redis: RedisStore,
    registry: prometheus::Registry,
    state: AppState,
    /// Stops the EndpointSlice watches (in a cluster) once the gateway has stopped.
    discovery: Shutdown,
}

impl App {
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        let config = Arc::new(config);
        let discovery = Shutdown::new();
        let auth_channel = cluster::grpc_channel_from_env(
            &config.env,
            GrpcPeer {
                url_var: "ERP_AUTH_URL",
                default_url: "http://127.0.0.1:50051",
                service_var: "ERP_AUTH_SERVICE_NAME",
            },
            &config.grpc,
            &discovery,
        )
        .await?;
        let event_channel = cluster::grpc_channel_from_env(
            &config.env,
            GrpcPeer {
                url_var: "ERP_EVENT_URL",
                default_url: "http://127.0.0.1:50052",
                service_var: "ERP_EVENT_SERVICE_NAME",
            },
            &config.grpc,
            &discovery,
        )
        .await?;
        let redis = RedisStore::connect(&config.redis)?;
        let registry = metrics::new_registry();
        let http_metrics = HttpMetrics::register(&registry)?;
        let grpc_metrics = GrpcMetrics::client(&registry)?;
        let auth =
            AuthServiceClient::new(grpc_metrics.for_upstream("auth").wrap(auth_channel.clone()));
        let event = EventServiceClient::new(
            grpc_metrics
                .for_upstream("event")
                .wrap(event_channel.clone()),
        );
        let state = AppState {
            introspector: Introspector::new(
                auth.clone(),
                config.introspection_ttl,
                http_metrics.introspection_cache.clone(),
            ),
            limiter: RateLimiter::new(redis.clone(), http_metrics.rate_limited.clone()),
            auth,
            event,
            metrics: http_metrics,
            config: Arc::clone(&config),
        };
        Ok(Self {
            http_listener: runtime::bind(config.http_addr, "ERP_GATEWAY_ADDR").await?,
            admin_listener: runtime::bind(config.common.admin_addr, "ERP_ADMIN_ADDR").await?,
            config,
            auth_channel,
            event_channel,
            redis,
            registry,
            state,
            discovery,
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http_listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    pub async fn run(self, shutdown: Shutdown) -> Result<(), BoxError> {
        let readiness = Readiness::new(shutdown.clone())
            .with_check(RedisCheck::new(self.redis.clone()))
            .with_check(GrpcHealthCheck::new("auth", self.auth_channel.clone()))
            .with_check(GrpcHealthCheck::new("event", self.event_channel.clone()));

        let introspector = self.state.introspector.clone();
        let reconnect = introspector.clone();
        let listener_task = tokio::spawn(erp_platform::redis::subscribe_until_shutdown(
            self.redis.client().clone(),
            self.redis.key("auth:revocations"),
            shutdown.clone(),
            move |payload| match serde_json::from_str::<Revocation>(&payload) {
                Ok(revocation) => introspector.evict(revocation),
                Err(error) => tracing::warn!(%error, "unreadable revocation message"),
            },
            // Revocations may have been missed while disconnected.
            move || reconnect.evict_all(),
        ));

        tracing::info!(
            service = SERVICE_NAME,
            http_addr = %self.http_listener.local_addr()?,
            admin_addr = %self.admin_listener.local_addr()?,
            "listening"
        );
        let drain = self.config.common.shutdown_timeout;
        let served = runtime::run_with_admin(
            runtime::serve_http(
                self.http_listener,
                public_router(self.state),
                shutdown.clone(),
                drain,
            ),
            self.admin_listener,
            admin::router(self.registry, readiness),
            shutdown,
        )
        .await;
        self.discovery.trigger();
        let _ = listener_task.await;
        served
    }
}

/// Every public route with the gateway's pipeline.
pub fn public_router(state: AppState) -> Router {
    let (api, document) = openapi::api().split_for_parts();
    let document = document.to_pretty_json().unwrap_or_else(|error| {
        tracing::error!(%error, "cannot render the OpenAPI document");
        "{}".to_owned()
    });
    let api = api.route_layer(from_fn_with_state(state.clone(), middleware::authorize));
    let timeout = state.config.request_timeout;
    let mut router = Router::new()
        .merge(api)
        .merge(openapi::docs_router(document))
        .fallback(|| async { problem::not_found() })
        .method_not_allowed_fallback(|| async { problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(move |request, next| {
            with_timeout(timeout, request, next)
        }))
        .layer(from_fn_with_state(state.clone(), middleware::observe));
    if let Some(cors) = cors(&state.config.cors_allowed_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

async fn with_timeout(
    timeout: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem(ApiError::unavailable("a service behind the gateway")).into_response(),
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::PATCH,
                axum::http::Method::DELETE,
            ])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                axum::http::header::IF_MATCH,
                axum::http::HeaderName::from_static("idempotency-key"),
                axum::http::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                axum::http::header::ETAG,
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
