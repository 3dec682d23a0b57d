//! Everything the gateway reads from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use erp_platform::cluster::GrpcPeer;
use erp_platform::config::{CommonConfig, ConfigError, Env, RedisConfig};
use erp_platform::grpc::GrpcConfig;
use erp_platform::identity::IdentityKeys;
use erp_platform::runtime::ServiceConfig;

pub const SERVICE_NAME: &str = "erp-gateway";

/// Where the gateway finds auth and event: the URL variables used outside a cluster (checked by
/// [`Config::from_env`]) and the Service variables of in-cluster discovery.
pub(crate) const AUTH_PEER: GrpcPeer<'static> = GrpcPeer {
    url_var: "ERP_AUTH_URL",
    default_url: "http://127.0.0.1:50051",
    service_var: "ERP_AUTH_SERVICE_NAME",
};
pub(crate) const EVENT_PEER: GrpcPeer<'static> = GrpcPeer {
    url_var: "ERP_EVENT_URL",
    default_url: "http://127.0.0.1:50052",
    service_var: "ERP_EVENT_SERVICE_NAME",
};

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `ERP_GATEWAY_ADDR`: where the public HTTP API is served.
    pub http_addr: SocketAddr,
    pub grpc: GrpcConfig,
    /// `ERP_SERVICE_IDENTITY_KEY_FILE` (+ `ERP_SERVICE_IDENTITY_ACCEPT_KEY_FILES`): the key of
    /// the caller assertions between the services.
    pub identity: IdentityKeys,
    pub redis: RedisConfig,
    /// `ERP_INTROSPECTION_CACHE_TTL_MS`: how long an introspection answer is reused (revocations
    /// evict at once through Redis; never past the token's expiry).
    pub introspection_ttl: Duration,
    /// `ERP_RATE_LIMIT_PER_MINUTE`: requests per minute per user (per client IP when anonymous);
    /// 0 turns rate limiting off.
    pub rate_limit_per_minute: u32,
    /// `ERP_AUTH_RATE_LIMIT_PER_MINUTE`: the stricter limit of `/auth/login` and
    /// `/auth/register`, per client IP.
    pub auth_rate_limit_per_minute: u32,
    /// `ERP_CORS_ALLOWED_ORIGINS`: comma-separated origins allowed by CORS; empty: CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// `ERP_COOKIE_SECURE`: mark the refresh cookie `Secure` (turn off only for plain-HTTP dev).
    pub cookie_secure: bool,
    /// `ERP_HTTP_TIMEOUT_MS`: the longest one request may take end to end.
    pub request_timeout: Duration,
    /// `ERP_TRUSTED_PROXIES`: how many proxies of ours stand in front of the gateway; the client
    /// IP is then read from `X-Forwarded-For` by [`crate::client_ip`]'s rule (0: the socket
    /// peer). `ERP_TRUST_FORWARDED_FOR=true` (older name) means 1 when this is unset.
    pub trusted_proxies: usize,
    /// `ERP_AUTH_FAILURES_PER_MINUTE`: 401s per client IP and minute; over it, tokens not in the
    /// introspection cache get 429 without being introspected. 0 turns it off.
    pub auth_failures_per_minute: u32,
    /// `ERP_HTTP_*`: limits of the HTTP server (timeouts, connections, HTTP/2).
    pub http: crate::server::HttpLimits,
    /// The environment, for the gRPC peers: `ERP_AUTH_URL`, `ERP_EVENT_URL` and in-cluster
    /// discovery (`ERP_KUBERNETES_DISCOVERY`, `ERP_AUTH_SERVICE_NAME`, `ERP_EVENT_SERVICE_NAME`,
    /// `POD_NAMESPACE`).
    pub env: Env,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let cors_allowed_origins = env
            .get("ERP_CORS_ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for origin in &cors_allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::new(
                    "ERP_CORS_ALLOWED_ORIGINS",
                    origin,
                    "each origin must be http(s)://host[:port] or *",
                ));
            }
        }
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, "0.0.0.0:9464")?,
            http_addr: env.socket_addr("ERP_GATEWAY_ADDR", "0.0.0.0:8080")?,
            grpc: GrpcConfig::from_env(env)?,
            identity: IdentityKeys::from_env(env)?,
            redis: RedisConfig::from_env(env)?,
            introspection_ttl: env.duration_millis(
                "ERP_INTROSPECTION_CACHE_TTL_MS",
                Duration::from_secs(5),
                Duration::from_millis(0),
            )?,
            rate_limit_per_minute: env.int_in("ERP_RATE_LIMIT_PER_MINUTE", 6000, 0..=10_000_000)?,
            auth_rate_limit_per_minute: env.int_in(
                "ERP_AUTH_RATE_LIMIT_PER_MINUTE",
                120,
                0..=10_000_000,
            )?,
            cors_allowed_origins,
            cookie_secure: env.bool("ERP_COOKIE_SECURE", true)?,
            request_timeout: env.duration_millis(
                "ERP_HTTP_TIMEOUT_MS",
                Duration::from_secs(15),
                Duration::from_millis(10),
            )?,
            trusted_proxies: crate::client_ip::trusted_proxies_from_env(env)?,
            auth_failures_per_minute: env.int_in(
                "ERP_AUTH_FAILURES_PER_MINUTE",
                60,
                0..=10_000_000,
            )?,
            http: crate::server::HttpLimits::from_env(env)?,
            env: {
                // Read again where the channels are made; checked here so a bad value stops the
                // start with the configuration's exit code.
                for peer in [AUTH_PEER, EVENT_PEER] {
                    env.url(peer.url_var, peer.default_url, &["http", "https"])?;
                }
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
