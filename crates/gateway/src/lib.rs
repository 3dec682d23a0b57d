//! The gateway: the only public entry of the platform. It serves `/api/v1` (API.md) over HTTP,
//! checks tokens by introspection (cached, evicted on revocation), authorises from one route
//! table, rate-limits, and calls the auth and event services over gRPC.

pub mod client_ip;
pub mod config;
pub mod connections;
pub mod dto;
pub mod extract;
pub mod handlers;
pub mod introspection;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::Route;
use erp_platform::admin::{self, Readiness};
use erp_platform::cluster::{self, GrpcPeer};
use erp_platform::grpc::GrpcHealthCheck;
use erp_platform::grpc_metrics::GrpcMetrics;
use erp_platform::identity::{AssertionSigner, Service};
use erp_platform::redis::{RedisCheck, RedisStore};
use erp_platform::runtime::{self, BoxError};
use erp_platform::{Shutdown, metrics};
use erp_proto::auth::v1::auth_service_client::AuthServiceClient;
use erp_proto::event::v1::event_service_client::EventServiceClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tower::layer::layer_fn;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::{Config, SERVICE_NAME};

use crate::connections::{Dispatcher, Handoff};
use crate::introspection::{Introspector, Revocation, SessionCache};
use crate::ratelimit::RateLimiter;
use crate::state::{AppState, HttpMetrics, Shared};

/// The gateway, bound and connected, not yet serving.
///
/// It serves HTTP on one thread per `ERP_WORKER_THREADS` (default: the CPUs it may use), each a
/// single-threaded runtime with its own connections to auth and event ("shards"; the first
/// accepts and deals the connections out in turn, [`connections`]). A shard batches the gRPC
/// frames of its requests into few writes, and shards do not wait on each other: measured, two
/// shards serve about a fifth more than one, and a multi-threaded runtime of two workers less
/// than one shard (docs/benchmarks.md). The shards share configuration, metrics and the
/// introspection cache.
pub struct App {
    common: Common,
    http_listener: Dispatcher,
    /// The connections of every further shard.
    shard_listeners: Vec<Handoff>,
    admin_listener: TcpListener,
    upstreams: Upstreams,
    registry: prometheus::Registry,
    /// Stops the EndpointSlice watches (in a cluster) once the gateway has stopped.
    discovery: Shutdown,
}

/// What every HTTP shard shares.
#[derive(Clone)]
struct Common {
    config: Arc<Config>,
    http_metrics: HttpMetrics,
    grpc_metrics: GrpcMetrics,
    sessions: SessionCache,
    connection_metrics: server::ConnectionMetrics,
}

/// One shard's connections to the services and the state its handlers use.
struct Upstreams {
    auth_channel: Channel,
    event_channel: Channel,
    redis: RedisStore,
    state: AppState,
}

impl Upstreams {
    /// Channels made on the calling thread's runtime, which then drives them.
    async fn connect(common: &Common, discovery: &Shutdown) -> Result<Self, BoxError> {
        let config = &common.config;
        let auth_channel = cluster::grpc_channel_from_env(
            &config.env,
            GrpcPeer {
                url_var: "ERP_AUTH_URL",
                default_url: "http://127.0.0.1:50051",
                service_var: "ERP_AUTH_SERVICE_NAME",
            },
            &config.grpc,
            discovery,
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
            discovery,
        )
        .await?;
        let redis = RedisStore::connect(&config.redis)?;
        let metrics = &common.grpc_metrics;
        let signer = AssertionSigner::new(Service::Gateway, config.identity.clone());
        let auth = AuthServiceClient::new(signer.wrap(
            Service::Auth,
            metrics.for_upstream("auth").wrap(auth_channel.clone()),
        ));
        let event = EventServiceClient::new(signer.wrap(
            Service::Event,
            metrics.for_upstream("event").wrap(event_channel.clone()),
        ));
        let http_metrics = common.http_metrics.clone();
        let state = AppState::new(Shared {
            introspector: Introspector::new(
                auth.clone(),
                common.sessions.clone(),
                http_metrics.introspection_cache.clone(),
            ),
            limiter: RateLimiter::new(redis.clone(), http_metrics.rate_limited.clone()),
            auth,
            event,
            metrics: http_metrics,
            config: Arc::clone(config),
        });
        Ok(Self {
            auth_channel,
            event_channel,
            redis,
            state,
        })
    }
}

impl App {
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        let config = Arc::new(config);
        let discovery = Shutdown::new();
        let registry = metrics::new_registry();
        let common = Common {
            http_metrics: HttpMetrics::register(&registry)?,
            grpc_metrics: GrpcMetrics::client(&registry)?,
            sessions: Introspector::cache(config.introspection_ttl),
            connection_metrics: server::ConnectionMetrics::register(&registry)?,
            config: Arc::clone(&config),
        };
        let upstreams = Upstreams::connect(&common, &discovery).await?;
        let http_listener = runtime::bind(config.http_addr, "ERP_GATEWAY_ADDR").await?;
        let (http_listener, shard_listeners) = connections::spread(
            http_listener,
            runtime::worker_threads(&config.common),
            config.http.max_connections,
            common.connection_metrics.refused.clone(),
        )?;
        Ok(Self {
            http_listener,
            shard_listeners,
            admin_listener: runtime::bind(config.common.admin_addr, "ERP_ADMIN_ADDR").await?,
            upstreams,
            common,
            registry,
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
        // Ready while this process serves; auth, event and Redis are reported
        // (`/healthz/dependencies`, `erp_dependency_up`), never gating: a request that needs one
        // that is down is answered 503 `UNAVAILABLE` on its own.
        let readiness = Readiness::new(shutdown.clone())
            .with_dependency(RedisCheck::new(self.upstreams.redis.clone()))
            .with_dependency(GrpcHealthCheck::new(
                "auth",
                self.upstreams.auth_channel.clone(),
            ))
            .with_dependency(GrpcHealthCheck::new(
                "event",
                self.upstreams.event_channel.clone(),
            ));

        let introspector = self.upstreams.state.introspector.clone();
        let reconnect = introspector.clone();
        let listener_task = tokio::spawn(erp_platform::redis::subscribe_until_shutdown(
            self.upstreams.redis.client().clone(),
            self.upstreams.redis.key("auth:revocations"),
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
            http_addr = %self.http_addr()?,
            admin_addr = %self.admin_listener.local_addr()?,
            http_threads = self.shard_listeners.len() + 1,
            "listening"
        );
        let drain = self.common.config.common.shutdown_timeout;
        let shards: Vec<_> = self
            .shard_listeners
            .into_iter()
            .enumerate()
            .map(|(index, listener)| {
                spawn_shard(
                    index + 1,
                    listener,
                    self.common.clone(),
                    self.discovery.clone(),
                    shutdown.clone(),
                )
            })
            .collect::<Result<_, _>>()?;
        let served = runtime::run_with_admin(
            server::serve(
                self.http_listener,
                public_router(self.upstreams.state),
                Arc::new(self.common.config.http.clone()),
                self.common.connection_metrics.clone(),
                shutdown.clone(),
                drain,
            ),
            self.admin_listener,
            admin::router(self.registry, readiness),
            shutdown.clone(),
        )
        .await;
        // A shard that failed stops the others too.
        shutdown.trigger();
        let mut outcome = served;
        for shard in shards {
            let finished = shard
                .await
                .unwrap_or_else(|_| Err("an HTTP shard stopped".into()));
            if let Err(error) = finished {
                tracing::error!(%error, "HTTP shard failed");
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        self.discovery.trigger();
        let _ = listener_task.await;
        outcome
    }
}

/// Serves HTTP on a thread of its own with a single-threaded runtime and its own upstream
/// connections, until `shutdown`. The receiver yields how it ended.
fn spawn_shard(
    index: usize,
    listener: Handoff,
    common: Common,
    discovery: Shutdown,
    shutdown: Shutdown,
) -> Result<tokio::sync::oneshot::Receiver<Result<(), BoxError>>, BoxError> {
    let (finished, outcome) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("http-shard-{index}"))
        .spawn(move || {
            let stop_all = shutdown.clone();
            let served = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async move {
                    let upstreams = Upstreams::connect(&common, &discovery).await?;
                    let drain = common.config.common.shutdown_timeout;
                    let router = public_router(upstreams.state);
                    server::serve(
                        listener,
                        router,
                        Arc::new(common.config.http.clone()),
                        common.connection_metrics.clone(),
                        shutdown,
                        drain,
                    )
                    .await
                }),
                Err(error) => Err(error.into()),
            };
            if served.is_err() {
                stop_all.trigger();
            }
            let _ = finished.send(served);
        })?;
    Ok(outcome)
}

/// Every public route with the gateway's pipeline.
pub fn public_router(state: AppState) -> Router {
    let (api, document) = openapi::api().split_for_parts();
    let document = document.to_pretty_json().unwrap_or_else(|error| {
        tracing::error!(%error, "cannot render the OpenAPI document");
        "{}".to_owned()
    });
    let api = api.route_layer(layer_fn({
        let state = state.clone();
        move |route: Route| middleware::Authorize::new(route, state.clone())
    }));
    let mut router = Router::new()
        .merge(api)
        .merge(openapi::docs_router(document))
        .fallback(middleware::unknown_route)
        .method_not_allowed_fallback(middleware::wrong_method)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(layer_fn({
            let state = state.clone();
            move |route: Route| middleware::Observe::new(route, state.clone())
        }));
    if let Some(cors) = cors(&state.config.cors_allowed_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
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
