//! The gateway process: its listeners, its HTTP shards and their connections to auth, event and
//! Redis.

use std::net::SocketAddr;
use std::sync::Arc;

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

use crate::config::{AUTH_PEER, Config, EVENT_PEER, SERVICE_NAME};
use crate::connections::{self, Dispatcher, Handoff};
use crate::introspection::{Introspector, Revocation, SessionCache};
use crate::ratelimit::RateLimiter;
use crate::router::router;
use crate::server;
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

impl Common {
    fn new(config: Arc<Config>, registry: &prometheus::Registry) -> Result<Self, BoxError> {
        Ok(Self {
            http_metrics: HttpMetrics::register(registry)?,
            grpc_metrics: GrpcMetrics::client(registry)?,
            sessions: Introspector::cache(config.introspection_ttl),
            connection_metrics: server::ConnectionMetrics::register(registry)?,
            config,
        })
    }
}

impl Upstreams {
    /// Channels made on the calling thread's runtime, which then drives them (balanced over the
    /// peers' pods when in-cluster discovery is on).
    async fn connect(common: &Common, discovery: &Shutdown) -> Result<Self, BoxError> {
        let config = &common.config;
        let auth_channel =
            cluster::grpc_channel_from_env(&config.env, AUTH_PEER, &config.grpc, discovery).await?;
        let event_channel =
            cluster::grpc_channel_from_env(&config.env, EVENT_PEER, &config.grpc, discovery)
                .await?;
        Self::over(common, auth_channel, event_channel)
    }

    /// The clients, Redis and handler state over these channels.
    fn over(
        common: &Common,
        auth_channel: Channel,
        event_channel: Channel,
    ) -> Result<Self, BoxError> {
        let config = &common.config;
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

impl AppState {
    /// The state of a router served in-process (e.g. with `tower::ServiceExt::oneshot`): channels
    /// to `ERP_AUTH_URL` and `ERP_EVENT_URL` and the Redis connection open on first use (no
    /// in-cluster discovery), metrics go to a registry of their own. Needs a Tokio runtime.
    pub fn connect_lazy(config: Config) -> Result<Self, BoxError> {
        let common = Common::new(Arc::new(config), &metrics::new_registry())?;
        let channel = |peer: GrpcPeer<'_>| -> Result<Channel, BoxError> {
            let url = common
                .config
                .env
                .url(peer.url_var, peer.default_url, &["http", "https"])?;
            Ok(erp_platform::grpc::channel(&url, &common.config.grpc)?)
        };
        let (auth, event) = (channel(AUTH_PEER)?, channel(EVENT_PEER)?);
        Ok(Upstreams::over(&common, auth, event)?.state)
    }
}

impl App {
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        // Checked here, where a bad value can stop the start (the router reads it again).
        crate::middleware::AccessLog::from_env(&config.env)?;
        let config = Arc::new(config);
        let discovery = Shutdown::new();
        let registry = metrics::new_registry();
        let common = Common::new(Arc::clone(&config), &registry)?;
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
                router(self.upstreams.state),
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
                    let router = router(upstreams.state);
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
