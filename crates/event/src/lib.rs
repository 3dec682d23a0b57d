//! The event service: events, rewards, player activity and conditions, claims and approvals,
//! the audit trail, the dashboard and the lifecycle jobs.
//!
//! [`App::build`] binds its listeners and connects its stores; [`App::run`] creates indexes, then
//! serves gRPC, the admin endpoints, the cache-invalidation listener and (on the leader) the
//! background jobs until shutdown.

mod access;
mod cache;
mod claims;
mod conditions;
mod config;
mod convert;
mod deliveries;
mod error;
mod grpc;
mod jobs;
mod metrics;
mod model;
mod paging;
mod service;
mod store;
mod validate;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use erp_platform::Shutdown;
use erp_platform::cluster::{AlwaysLeader, LeaderElection};
use erp_platform::identity::{AssertionVerifier, Service};
use erp_platform::runtime::{BoxError, GrpcServiceHost, retry_until_shutdown};
use erp_proto::event::v1::event_service_server::EventServiceServer;

pub use config::{Config, SERVICE_NAME};
pub use jobs::{JobReport, Jobs};

use crate::cache::{CatalogCache, Invalidation};
use crate::claims::ClaimSettings;
use crate::deliveries::dispatcher::Dispatcher;
use crate::metrics::EventMetrics;
use crate::service::EventService;
use crate::store::{ActivityStore, CatalogStore, ClaimStore, TallyStore};

/// The event service, bound and connected, not yet serving.
pub struct App {
    config: Config,
    host: GrpcServiceHost,
    catalog: CatalogStore,
    activity: ActivityStore,
    claims: ClaimStore,
    tallies: TallyStore,
    service: Arc<EventService>,
    jobs: Jobs,
    /// Pushes deliveries to the webhook, when one is configured.
    dispatcher: Option<Dispatcher>,
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
        metrics::expose_grpc_server_errors(&host.grpc_metrics);
        let catalog = CatalogStore::new(host.database.clone());
        let activity = ActivityStore::new(host.database.clone());
        let claims = ClaimStore::new(host.database.clone());
        let tallies = TallyStore::new(host.database.clone());
        let cache = CatalogCache::new(
            config.cache_ttl,
            config.list_cache_ttl,
            host.redis.clone(),
            metrics.cache_requests.clone(),
        );
        let service = Arc::new(EventService::new(
            catalog.clone(),
            activity.clone(),
            claims.clone(),
            tallies.clone(),
            cache,
            metrics,
            ClaimSettings {
                batch_max: config.claim_batch_max,
                queue_max: config.claim_queue_max,
                call_timeout: config.grpc.request_timeout,
                pending_expiry: config.claim_pending_expiry,
                denial_audit_window: config.claim_denial_audit_window,
            },
        ));
        let jobs = Jobs::new(
            Arc::clone(&service),
            Arc::new(AlwaysLeader),
            config.jobs_interval,
        );
        let dispatcher = Dispatcher::from_config(
            service.deliveries().clone(),
            service.metrics().clone(),
            &config.delivery,
            service.delivery_wake(),
        )?;
        Ok(Self {
            config,
            host,
            catalog,
            activity,
            claims,
            tallies,
            service,
            jobs,
            dispatcher,
        })
    }

    /// Runs the background jobs only while `leader` says so (the default: always).
    #[must_use]
    pub fn with_leader_election(mut self, leader: Arc<dyn LeaderElection>) -> Self {
        self.jobs = Jobs::new(Arc::clone(&self.service), leader, self.config.jobs_interval);
        self
    }

    /// The background jobs, to run them by hand (tests, tools) beside the schedule.
    pub fn jobs(&self) -> Jobs {
        self.jobs.clone()
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.grpc_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.admin_addr()
    }

    pub async fn run(self, shutdown: Shutdown) -> Result<(), BoxError> {
        let router = self
            .host
            .grpc_router(
                &self.config.grpc,
                EventServiceServer::new(grpc::EventGrpc::new(Arc::clone(&self.service))),
                AssertionVerifier::new(Service::Event, self.config.identity.clone()),
            )
            .await?;

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
        let claims = self.claims.clone();
        let tallies = self.tallies.clone();
        let deliveries = self.service.deliveries().clone();
        let startup_shutdown = shutdown.clone();
        let (indexes_ready, indexes_done) = tokio::sync::watch::channel(false);
        let startup = async move {
            let created = retry_until_shutdown("indexes", &startup_shutdown, || async {
                catalog.ensure_indexes().await?;
                activity.ensure_indexes().await?;
                claims.ensure_indexes().await?;
                tallies.ensure_indexes().await?;
                deliveries.ensure_indexes().await?;
                Ok::<(), error::EventError>(())
            })
            .await;
            if created {
                let _ = indexes_ready.send(true);
            }
        };
        let jobs = self.jobs.clone();
        let jobs_shutdown = shutdown.clone();
        let mut jobs_ready = indexes_done.clone();
        let jobs_loop = tokio::spawn(async move {
            // The jobs start once the indexes they query exist (never, if shut down before).
            if jobs_ready.wait_for(|ready| *ready).await.is_ok() {
                jobs.run_until(jobs_shutdown).await;
            }
        });
        // The dispatcher and the backlog gauges, likewise after the indexes.
        let deliveries_task = deliveries::dispatcher::spawn_background(
            self.service.deliveries().clone(),
            self.service.metrics().clone(),
            self.dispatcher,
            indexes_done,
            shutdown.clone(),
        );

        let served = self.host.serve(router, startup, shutdown).await;
        let _ = listener_task.await;
        let _ = jobs_loop.await;
        deliveries_task.join().await;
        served
    }
}

/// Internals the crate's own tests and benchmark use (feature `test-util`, never in the binary).
#[cfg(feature = "test-util")]
pub mod testing {
    pub use crate::cache::{CatalogCache, Invalidation};
    pub use crate::error::EventError;
    pub use crate::store::EventQuery;

    /// The dashboard delta for claim documents written straight into the `claims` collection
    /// (a seed): what the service would have written with them, by its own tally code.
    pub fn dashboard_delta(
        claims: &[mongodb::bson::Document],
    ) -> Result<mongodb::bson::Document, EventError> {
        crate::store::delta_for_imported(claims)
    }
}
