//! Everything the auth service reads from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use erp_platform::config::{CommonConfig, ConfigError, Env, MongoConfig, RedisConfig};
use erp_platform::grpc::GrpcConfig;
use erp_platform::identity::IdentityKeys;
use erp_platform::runtime::ServiceConfig;
use secrecy::SecretString;

pub const SERVICE_NAME: &str = "erp-auth";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `ERP_AUTH_ADDR`: where gRPC is served.
    pub grpc_addr: SocketAddr,
    pub grpc: GrpcConfig,
    /// `ERP_SERVICE_IDENTITY_KEY_FILE` (+ `ERP_SERVICE_IDENTITY_ACCEPT_KEY_FILES`): the key of
    /// the caller assertions between the services.
    pub identity: IdentityKeys,
    pub mongo: MongoConfig,
    pub redis: RedisConfig,
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
    /// `ERP_JWT_NEXT_PUBLIC_KEY_FILES`: public keys that verify tokens and are published before
    /// any replica signs with them (step 1 of a rotation).
    pub next_public_key_files: Vec<PathBuf>,
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
    /// `ERP_PASSWORD_HASH_CONCURRENCY`: hashes and verifications running at once (each holds
    /// `memory_kib`); default: the CPUs the process may use.
    pub concurrency: usize,
    /// `ERP_PASSWORD_HASH_QUEUE_TIMEOUT_MS`: the longest a login or registration waits for a
    /// hashing slot before it is answered 503 `UNAVAILABLE` with `Retry-After`.
    pub queue_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct LockoutConfig {
    /// `ERP_LOGIN_MAX_FAILURES`: failed logins of one account from one client address.
    pub max_failures: u32,
    /// `ERP_LOGIN_MAX_FAILURES_PER_ACCOUNT`: failed logins of one account from all addresses.
    pub max_failures_per_account: u32,
    pub window: Duration,
}

/// The first admin, created once (`ERP_BOOTSTRAP_ADMIN_EMAIL`, `ERP_BOOTSTRAP_ADMIN_PASSWORD`);
/// its password never shows in `Debug` output.
#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: SecretString,
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
                password: SecretString::from(password),
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
            identity: IdentityKeys::from_env(env)?,
            mongo: MongoConfig::from_env(env, "erp_auth")?,
            redis: RedisConfig::from_env(env)?,
            tokens: TokenConfig {
                private_key_file: env.get("ERP_JWT_PRIVATE_KEY_FILE").map(PathBuf::from),
                previous_public_key_files: path_list(env, "ERP_JWT_PREVIOUS_PUBLIC_KEY_FILES"),
                next_public_key_files: path_list(env, "ERP_JWT_NEXT_PUBLIC_KEY_FILES"),
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
                concurrency: env.int_in(
                    "ERP_PASSWORD_HASH_CONCURRENCY",
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
                    1..=1024,
                )?,
                queue_timeout: env.duration_millis(
                    "ERP_PASSWORD_HASH_QUEUE_TIMEOUT_MS",
                    Duration::from_millis(2000),
                    Duration::from_millis(1),
                )?,
            },
            lockout: LockoutConfig {
                max_failures: env.int_in("ERP_LOGIN_MAX_FAILURES", 5, 1..=1000)?,
                max_failures_per_account: env.int_in(
                    "ERP_LOGIN_MAX_FAILURES_PER_ACCOUNT",
                    50,
                    1..=1_000_000,
                )?,
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

/// A comma-separated list of paths; empty when unset.
fn path_list(env: &Env, name: &str) -> Vec<PathBuf> {
    env.get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_password_is_not_in_debug_output() {
        let key_file =
            std::env::temp_dir().join(format!("erp-auth-config-{}.key", std::process::id()));
        std::fs::write(&key_file, [b'k'; 48]).unwrap();
        let env = Env::from_pairs([
            ("ERP_SERVICE_IDENTITY_KEY_FILE", key_file.to_str().unwrap()),
            ("ERP_BOOTSTRAP_ADMIN_EMAIL", "root@example.com"),
            ("ERP_BOOTSTRAP_ADMIN_PASSWORD", "hunter2-secret"),
            ("ERP_MONGODB_URI", "mongodb://app:db-secret@127.0.0.1:27017"),
        ]);
        let printed = format!("{:?}", Config::from_env(&env).unwrap());
        assert!(printed.contains("root@example.com"), "{printed}");
        assert!(!printed.contains("hunter2-secret"), "{printed}");
        assert!(!printed.contains("db-secret"), "{printed}");
    }
}
