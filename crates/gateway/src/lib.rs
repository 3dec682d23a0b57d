//! The gateway: the only public entry of the platform. It serves `/api/v1` over HTTP and calls the
//! auth and event services over gRPC.

pub mod problem;

use std::net::SocketAddr;

use axum::Router;
use erp_platform::admin::{self, Readiness};
use erp_platform::config::{CommonConfig, ConfigError, Env, RedisConfig};
use erp_platform::error::{ApiError, ErrorCode};
use erp_platform::grpc::{self, GrpcConfig, GrpcHealthCheck};
use erp_platform::redis::{RedisCheck, RedisStore};
use erp_platform::runtime::{self, BoxError, ServiceConfig};
use erp_platform::{Shutdown, metrics};
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub const SERVICE_NAME: &str = "erp-gateway";

/// Everything the gateway reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `ERP_GATEWAY_ADDR`: where the public HTTP API is served.
    pub http_addr: SocketAddr,
    /// `ERP_AUTH_URL`, `ERP_EVENT_URL`: the gRPC services behind the gateway.
    pub auth_url: String,
    pub event_url: String,
    pub grpc: GrpcConfig,
    pub redis: RedisConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, "0.0.0.0:9464")?,
            http_addr: env.socket_addr("ERP_GATEWAY_ADDR", "0.0.0.0:8080")?,
            auth_url: env.url("ERP_AUTH_URL", "http://127.0.0.1:50051", &["http", "https"])?,
            event_url: env.url(
                "ERP_EVENT_URL",
                "http://127.0.0.1:50052",
                &["http", "https"],
            )?,
            grpc: GrpcConfig::from_env(env)?,
            redis: RedisConfig::from_env(env)?,
        })
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

/// The gateway, bound and connected, not yet serving.
pub struct App {
    config: Config,
    http_listener: TcpListener,
    admin_listener: TcpListener,
    auth_channel: Channel,
    event_channel: Channel,
    redis: RedisStore,
}

impl App {
    pub async fn build(config: Config) -> Result<Self, BoxError> {
        let auth_channel = grpc::channel(&config.auth_url, &config.grpc)?;
        let event_channel = grpc::channel(&config.event_url, &config.grpc)?;
        let redis = RedisStore::connect(&config.redis)?;
        Ok(Self {
            http_listener: runtime::bind(config.http_addr, "ERP_GATEWAY_ADDR").await?,
            admin_listener: runtime::bind(config.common.admin_addr, "ERP_ADMIN_ADDR").await?,
            config,
            auth_channel,
            event_channel,
            redis,
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
        let registry = metrics::new_registry();
        tracing::info!(
            service = SERVICE_NAME,
            http_addr = %self.http_listener.local_addr()?,
            admin_addr = %self.admin_listener.local_addr()?,
            "listening"
        );
        let drain = self.config.common.shutdown_timeout;
        runtime::run_with_admin(
            runtime::serve_http(self.http_listener, public_router(), shutdown.clone(), drain),
            self.admin_listener,
            admin::router(registry, readiness),
            shutdown,
        )
        .await
    }
}

/// The public routes. Every unknown path answers 404 problem+json.
fn public_router() -> Router {
    Router::new().fallback(|| async {
        problem::render(&ApiError::new(ErrorCode::NotFound, "no such route"))
    })
}
