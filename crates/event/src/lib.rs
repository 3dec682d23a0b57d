//! The event service: events, rewards, player activity, claims, approvals, audit and dashboard.
//!
//! [`App::build`] binds its listeners and connects its stores; [`App::run`] serves gRPC and the
//! admin endpoints until shutdown.

use std::net::SocketAddr;

use erp_platform::Shutdown;
use erp_platform::config::{CommonConfig, ConfigError, Env, MongoConfig, RedisConfig};
use erp_platform::grpc::{self, GrpcConfig};
use erp_platform::runtime::{BoxError, GrpcServiceHost, ServiceConfig};

pub const SERVICE_NAME: &str = "erp-event";

/// Everything the event service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `ERP_EVENT_ADDR`: where gRPC is served.
    pub grpc_addr: SocketAddr,
    pub grpc: GrpcConfig,
    pub mongo: MongoConfig,
    pub redis: RedisConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, "0.0.0.0:9466")?,
            grpc_addr: env.socket_addr("ERP_EVENT_ADDR", "0.0.0.0:50052")?,
            grpc: GrpcConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env, "erp_event")?,
            redis: RedisConfig::from_env(env)?,
        })
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

/// The event service, bound and connected, not yet serving.
pub struct App {
    config: Config,
    host: GrpcServiceHost,
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
        Ok(Self { config, host })
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.grpc_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.host.admin_addr()
    }

    pub async fn run(self, shutdown: Shutdown) -> Result<(), BoxError> {
        let (_health_reporter, health_service) = grpc::health();
        let router = grpc::server(&self.config.grpc).add_service(health_service);
        self.host.serve(router, async {}, shutdown).await
    }
}
