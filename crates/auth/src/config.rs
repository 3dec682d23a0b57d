//! Everything the auth service reads from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use erp_platform::config::{CommonConfig, ConfigError, Env, MongoConfig, RedisConfig};
use erp_platform::grpc::GrpcConfig;
use erp_platform::runtime::ServiceConfig;

pub const SERVICE_NAME: &str = "erp-auth";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `ERP_AUTH_ADDR`: where gRPC is served.
    pub grpc_addr: SocketAddr,
    pub grpc: GrpcConfig,
    pub mongo: MongoConfig,
    pub redis: RedisConfig,
    /// `ERP_EVENT_URL`: where login activity is delivered.
    pub event_url: String,
    pub tokens: TokenConfig,
    pub password: PasswordConfig,
    pub lockout: LockoutConfig,
    pub bootstrap_admin: Option<BootstrapAdmin>,
    pub outbox: OutboxConfig,
    /// `ERP_USER_CACHE_TTL_MS`: how long introspection may use a user's roles and state without
    /// reading them again (changes also evict at once through the revocation channel).
    pub user_cache_ttl: Duration,
    /// The environment, for in-cluster discovery of the event service
    /// (`ERP_KUBERNETES_DISCOVERY`, `ERP_EVENT_SERVICE_NAME`, `POD_NAMESPACE`).
    pub env: Env,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub private_key_file: Option<PathBuf>,
    pub previous_public_key_files: Vec<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Debug, Clone)]
pub struct LockoutConfig {
    pub max_failures: u32,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub poll_interval: Duration,
    pub max_backoff: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let bootstrap_admin = match (
            env.get("ERP_BOOTSTRAP_ADMIN_EMAIL"),
            env.get("ERP_BOOTSTRAP_ADMIN_PASSWORD"),
        ) {
            (None, None) => None,
            (Some(email), Some(password)) => Some(BootstrapAdmin {
                email: email.to_owned(),
                password: password.to_owned(),
            }),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "ERP_BOOTSTRAP_ADMIN_PASSWORD",
                    "",
                    "must be set when ERP_BOOTSTRAP_ADMIN_EMAIL is",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "ERP_BOOTSTRAP_ADMIN_EMAIL",
                    "",
                    "must be set when ERP_BOOTSTRAP_ADMIN_PASSWORD is",
                ));
            }
        };
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, "0.0.0.0:9465")?,
            grpc_addr: env.socket_addr("ERP_AUTH_ADDR", "0.0.0.0:50051")?,
            grpc: GrpcConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env, "erp_auth")?,
            redis: RedisConfig::from_env(env)?,
            event_url: env.url(
                "ERP_EVENT_URL",
                "http://127.0.0.1:50052",
                &["http", "https"],
            )?,
            tokens: TokenConfig {
                private_key_file: env.get("ERP_JWT_PRIVATE_KEY_FILE").map(PathBuf::from),
                previous_public_key_files: env
                    .get("ERP_JWT_PREVIOUS_PUBLIC_KEY_FILES")
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .map(PathBuf::from)
                            .collect()
                    })
                    .unwrap_or_default(),
                issuer: env.string("ERP_JWT_ISSUER", "erp-auth"),
                audience: env.string("ERP_JWT_AUDIENCE", "erp"),
                access_ttl: env.duration_secs(
                    "ERP_ACCESS_TOKEN_TTL_SECS",
                    Duration::from_secs(15 * 60),
                    Duration::from_secs(1),
                )?,
                refresh_ttl: env.duration_secs(
                    "ERP_REFRESH_TOKEN_TTL_SECS",
                    Duration::from_secs(14 * 24 * 3600),
                    Duration::from_secs(60),
                )?,
            },
            password: PasswordConfig {
                // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
                memory_kib: env.int_in("ERP_ARGON2_MEMORY_KIB", 19_456, 1024..=1_048_576)?,
                iterations: env.int_in("ERP_ARGON2_ITERATIONS", 2, 1..=20)?,
                parallelism: env.int_in("ERP_ARGON2_PARALLELISM", 1, 1..=16)?,
            },
            lockout: LockoutConfig {
                max_failures: env.int_in("ERP_LOGIN_MAX_FAILURES", 5, 1..=1000)?,
                window: env.duration_secs(
                    "ERP_LOGIN_LOCKOUT_WINDOW_SECS",
                    Duration::from_secs(15 * 60),
                    Duration::from_secs(1),
                )?,
            },
            bootstrap_admin,
            outbox: OutboxConfig {
                poll_interval: env.duration_millis(
                    "ERP_OUTBOX_POLL_MS",
                    Duration::from_millis(500),
                    Duration::from_millis(10),
                )?,
                max_backoff: env.duration_secs(
                    "ERP_OUTBOX_MAX_BACKOFF_SECS",
                    Duration::from_secs(60),
                    Duration::from_secs(1),
                )?,
            },
            user_cache_ttl: env.duration_millis(
                "ERP_USER_CACHE_TTL_MS",
                Duration::from_secs(30),
                Duration::from_millis(0),
            )?,
            env: {
                env.bool("ERP_KUBERNETES_DISCOVERY", false)?;
                env.clone()
            },
        })
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
