//! Everything the event service reads from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use erp_platform::config::{CommonConfig, ConfigError, Env, MongoConfig, RedisConfig};
use erp_platform::grpc::GrpcConfig;
use erp_platform::runtime::ServiceConfig;

pub const SERVICE_NAME: &str = "erp-event";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `ERP_EVENT_ADDR`: where gRPC is served.
    pub grpc_addr: SocketAddr,
    pub grpc: GrpcConfig,
    pub mongo: MongoConfig,
    pub redis: RedisConfig,
    /// `ERP_EVENT_CACHE_TTL_MS`: the longest an event or its rewards are served from memory
    /// without reading them again (writes evict at once, in every replica).
    pub cache_ttl: Duration,
    /// `ERP_EVENT_LIST_CACHE_TTL_MS`: the same for event lists, short because a list filtered
    /// by status changes with the clock.
    pub list_cache_ttl: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, "0.0.0.0:9466")?,
            grpc_addr: env.socket_addr("ERP_EVENT_ADDR", "0.0.0.0:50052")?,
            grpc: GrpcConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env, "erp_event")?,
            redis: RedisConfig::from_env(env)?,
            cache_ttl: env.duration_millis(
                "ERP_EVENT_CACHE_TTL_MS",
                Duration::from_secs(30),
                Duration::from_millis(1),
            )?,
            list_cache_ttl: env.duration_millis(
                "ERP_EVENT_LIST_CACHE_TTL_MS",
                Duration::from_secs(1),
                Duration::from_millis(1),
            )?,
        })
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
