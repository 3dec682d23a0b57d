//! The auth service: accounts, credentials, sessions, token introspection and user management.
//!
//! [`App::build`] binds its listeners, loads keys and connects its stores; [`App::run`] creates
//! indexes and the bootstrap admin, then serves gRPC, the admin endpoints, the outbox relay and
//! the revocation listener until shutdown.

mod access;
mod client_secret;
mod config;
mod convert;
mod error;
mod grpc;
mod keys;
mod metrics;
mod model;
mod password;
mod relay;
mod service;
mod store;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use erp_platform::Shutdown;
use erp_platform::cluster::{self, GrpcPeer};
use erp_platform::grpc as platform_grpc;
use erp_platform::grpc_metrics::GrpcMetrics;
use erp_platform::identity::{AssertionSigner, AssertionVerifier, Service};
use erp_platform::runtime::{BoxError, GrpcServiceHost, retry_until_shutdown};
use erp_proto::auth::v1::auth_service_server::AuthServiceServer;
use tokio::sync::Notify;

pub use config::{
    BootstrapAdmin, Config, LockoutConfig, OutboxConfig, PasswordConfig, SERVICE_NAME, TokenConfig,
};

use crate::keys::KeyRing;
use crate::metrics::AuthMetrics;
use crate::password::PasswordHasher;
use crate::relay::OutboxRelay;
use crate::service::AuthService;
use crate::store::{AuthStore, Revocation, SessionStore};
use crate::tokens::TokenIssuer;

/// The auth service, bound and connected, not yet serving.
pub struct App {
    config: Config,
    host: GrpcServiceHost,
    store: AuthStore,
    service: Arc<AuthService>,
    metrics: AuthMetrics,
    outbox_wakeup: Arc<Notify>,
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
        let metrics = AuthMetrics::register(&host.registry)?;
        metrics::expose_grpc_server_errors(&host.grpc_metrics);
        let (keys, generated) = KeyRing::load(
            config.tokens.private_key_file.as_deref(),
            &config.tokens.previous_public_key_files,
            &config.tokens.next_public_key_files,
        )?;
        if generated {
            tracing::warn!(
                "ERP_JWT_PRIVATE_KEY_FILE is not set: signing with a key generated at start; \
                 tokens will not survive a restart and replicas will not accept each other's \
                 tokens (development only)"
            );
        }
        let hasher = PasswordHasher::new(&config.password, metrics.clone())?;
        let store = AuthStore::new(host.database.clone());
        let outbox_wakeup = Arc::new(Notify::new());
        let service = Arc::new(AuthService::new(
            store.clone(),
            SessionStore::new(
                host.redis.clone(),
                &host.database,
                config.tokens.refresh_ttl,
            ),
            hasher,
            TokenIssuer::new(Arc::new(keys), &config.tokens),
            config.lockout.clone(),
            config.tokens.refresh_ttl,
            config.user_cache_ttl,
            metrics.clone(),
            Arc::clone(&outbox_wakeup),
        ));
        Ok(Self {
            config,
            host,
            store,
            service,
            metrics,
            outbox_wakeup,
        })
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
                AuthServiceServer::new(grpc::AuthGrpc::new(Arc::clone(&self.service))),
                AssertionVerifier::new(Service::Auth, self.config.identity.clone()),
            )
            .await?;

        let discovery = Shutdown::new();
        let signer = AssertionSigner::new(Service::Auth, self.config.identity.clone());
        let raw_event_channel = cluster::grpc_channel_from_env(
            &self.config.env,
            GrpcPeer {
                url_var: "ERP_EVENT_URL",
                default_url: "http://127.0.0.1:50052",
                service_var: "ERP_EVENT_SERVICE_NAME",
            },
            &self.config.grpc,
            &discovery,
        )
        .await?;
        let mut host = self.host;
        // The outbox relay delivers logins to event: reported, never gating readiness.
        host.add_dependency(platform_grpc::GrpcHealthCheck::new(
            "event",
            raw_event_channel.clone(),
        ));
        let measured_event_channel = GrpcMetrics::client(&host.registry)?
            .for_upstream("event")
            .wrap(raw_event_channel);
        let event_channel = signer.wrap(Service::Event, measured_event_channel);
        let relay = OutboxRelay::new(
            self.store.clone(),
            event_channel,
            self.metrics.clone(),
            Arc::clone(&self.outbox_wakeup),
            self.config.outbox.clone(),
        );
        let relay_task = tokio::spawn(relay.run(shutdown.clone()));

        let listener_service = Arc::clone(&self.service);
        let reconnect_service = Arc::clone(&self.service);
        let listener_task = tokio::spawn(erp_platform::redis::subscribe_until_shutdown(
            host.redis.client().clone(),
            self.service.sessions().channel(),
            shutdown.clone(),
            move |payload| {
                if let Ok(Revocation::User { user_id }) = serde_json::from_str(&payload) {
                    let service = Arc::clone(&listener_service);
                    tokio::spawn(async move { service.forget_user(&user_id).await });
                }
            },
            // Messages may have been missed while the subscription was down: forget every
            // cached user (as gateways and the event service drop their caches).
            move || reconnect_service.forget_all_users(),
        ));

        let store = self.store.clone();
        let service = Arc::clone(&self.service);
        let bootstrap = self.config.bootstrap_admin.clone();
        let startup_shutdown = shutdown.clone();
        let startup = async move {
            retry_until_shutdown("indexes and bootstrap admin", &startup_shutdown, || async {
                store.ensure_indexes().await?;
                service.sessions().ensure_indexes().await?;
                if let Some(admin) = &bootstrap
                    && service.ensure_bootstrap_admin(admin).await?
                {
                    tracing::info!(email = %admin.email, "bootstrap admin created");
                }
                Ok::<(), error::AuthError>(())
            })
            .await;
        };

        let served = host.serve(router, startup, shutdown).await;
        discovery.trigger();
        let _ = relay_task.await;
        let _ = listener_task.await;
        served
    }
}
