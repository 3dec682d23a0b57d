//! What every service of the platform shares: configuration from the environment, telemetry
//! (logs, traces, metrics), the admin HTTP server, graceful shutdown, MongoDB/Redis/gRPC setup and
//! the error kinds that travel between services.

pub mod admin;
#[cfg(feature = "mongo")]
pub mod audit;
pub mod client_address;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod error;
pub mod grpc;
pub mod grpc_metrics;
pub mod identity;
pub mod metrics;
#[cfg(feature = "mongo")]
pub mod mongo;
pub mod pagination;
#[cfg(feature = "redis")]
pub mod redis;
pub mod runtime;
pub mod shutdown;
pub mod telemetry;

pub use config::{CommonConfig, ConfigError, Env};
pub use shutdown::Shutdown;
