//! The event service: events, rewards, player activity and conditions (claims, approvals and the
//! dashboard build on these).
//!
//! [`App::build`] binds its listeners and connects its stores; [`App::run`] creates indexes, then
//! serves gRPC, the admin endpoints and the cache-invalidation listener until shutdown.

pub mod cache;
pub mod conditions;
pub mod config;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod service;
pub mod store;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use erp_platform::Shutdown;
use erp_platform::grpc as platform_grpc;
use erp_platform::runtime::{BoxError, GrpcServiceHost, retry_until_shutdown};
use erp_proto::event::v1::event_service_server::EventServiceServer;

pub use config::{Config, SERVICE_NAME};

use crate::cache::{CatalogCache, Invalidation};
use crate::metrics::EventMetrics;
use crate::service::EventService;
use crate::store::{ActivityStore, CatalogStore};

/// The event service, bound and connected, not yet serving.
pub struct App {
    config: Config,
    host: GrpcServiceHost,
    catalog: CatalogStore,
    activity: ActivityStore,
    service: Arc<EventService>,
}

impl App {
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        let host = GrpcServiceHost::start(
            &config.common,
            config.grpc_addr,
            &config.mongo,
            &config.redis,
        )
        .await?;
        let metrics = EventMetrics::register(&host.registry)?;
        let catalog = CatalogStore::new(host.database.clone());
        let activity = ActivityStore::new(host.database.clone());
        let cache = CatalogCache::new(
            config.cache_ttl,
            config.list_cache_ttl,
            host.redis.clone(),
            metrics.cache_requests.clone(),
        );
        let service = Arc::new(EventService::new(
            catalog.clone(),
            activity.clone(),
            cache,
            metrics,
        ));
        Ok(Self {
            config,
            host,
            catalog,
            activity,
            service,
        })
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.grpc_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.admin_addr()
    }

    pub async fn run(self, shutdown: Shutdown) -> Result<(), BoxError> {
        let (health_reporter, health_service) = platform_grpc::health();
        health_reporter
            .set_serving::<EventServiceServer<grpc::EventGrpc>>()
            .await;
        let router = platform_grpc::server(&self.config.grpc)
            .add_service(health_service)
            .add_service(self.host.grpc_metrics.wrap(EventServiceServer::new(
                grpc::EventGrpc::new(Arc::clone(&self.service)),
            )));

        let cache = self.service.cache().clone();
        let reconnect_cache = cache.clone();
        let listener_task = tokio::spawn(erp_platform::redis::subscribe_until_shutdown(
            self.host.redis.client().clone(),
            cache.channel(),
            shutdown.clone(),
            move |payload| {
                if let Ok(invalidation) = serde_json::from_str::<Invalidation>(&payload) {
                    let cache = cache.clone();
                    tokio::spawn(async move { cache.evict(&invalidation).await });
                }
            },
            // Messages may have been missed while disconnected.
            move || reconnect_cache.evict_all(),
        ));

        let catalog = self.catalog.clone();
        let activity = self.activity.clone();
        let startup_shutdown = shutdown.clone();
        let startup = async move {
            retry_until_shutdown("indexes", &startup_shutdown, || async {
                catalog.ensure_indexes().await?;
                activity.ensure_indexes().await?;
                Ok::<(), error::EventError>(())
            })
            .await;
        };

        let served = self.host.serve(router, startup, shutdown).await;
        let _ = listener_task.await;
        served
    }
}
