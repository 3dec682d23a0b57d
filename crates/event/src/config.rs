//! Everything the event service reads from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use erp_platform::config::{CommonConfig, ConfigError, Env, MongoConfig, RedisConfig};
use erp_platform::grpc::GrpcConfig;
use erp_platform::identity::IdentityKeys;
use erp_platform::runtime::ServiceConfig;

pub const SERVICE_NAME: &str = "erp-event";

#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) common: CommonConfig,
    /// `ERP_EVENT_ADDR`: where gRPC is served.
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) grpc: GrpcConfig,
    /// `ERP_SERVICE_IDENTITY_KEY_FILE` (+ `ERP_SERVICE_IDENTITY_ACCEPT_KEY_FILES`): the key of
    /// the caller assertions between the services.
    pub(crate) identity: IdentityKeys,
    pub(crate) mongo: MongoConfig,
    pub(crate) redis: RedisConfig,
    /// `ERP_EVENT_CACHE_TTL_MS`: the longest an event or its rewards are served from memory
    /// without reading them again (writes evict at once, in every replica).
    pub(crate) cache_ttl: Duration,
    /// `ERP_EVENT_LIST_CACHE_TTL_MS`: the same for event lists, short because a list filtered
    /// by status changes with the clock.
    pub(crate) list_cache_ttl: Duration,
    /// `ERP_CLAIM_PENDING_EXPIRY_SECS` (default 604800, 7 days): how long after its event ends a
    /// PENDING claim waits for an operator before the expiry job releases its stock (0: at once).
    pub(crate) claim_pending_expiry: Duration,
    /// `ERP_CLAIM_DENIAL_AUDIT_WINDOW_SECS` (default 3600): repeated identical refusals of one
    /// player's claim (same event and reason) within this window are one `CLAIM_DENIED` audit
    /// record whose `after.count` counts them, so no account can flood the audit trail.
    pub(crate) claim_denial_audit_window: Duration,
    /// `ERP_JOBS_INTERVAL_SECS` (default 30): how often the leader runs the background jobs.
    pub(crate) jobs_interval: Duration,
    /// `ERP_CLAIM_BATCH_MAX` (default 64, 0..=1000): the most claims of one event placed in one
    /// transaction. Claims of one event arriving while its previous transaction runs wait and
    /// go together in the next, so a hot reward is written once per batch instead of once per
    /// claim (with write conflicts between all of them). 0 turns batching off: each claim is its
    /// own transaction, and concurrent ones retry on conflicts.
    pub(crate) claim_batch_max: usize,
    /// `ERP_CLAIM_QUEUE_MAX` (default 1000, 1..=1000000): the most claims of one event waiting
    /// for their batch in this replica (the batch in flight not counted). A claim arriving over
    /// it is refused at once with `503 UNAVAILABLE` and a `Retry-After`, and counted in
    /// `erp_event_claims_shed_total{reason="queue_full"}`, instead of queueing behind a hot event
    /// past its caller's deadline. A waiting claim whose caller has gone (cancelled, or past its
    /// gRPC deadline: the `grpc-timeout` header, at most `ERP_GRPC_TIMEOUT_MS`) is skipped when
    /// its batch starts, and one whose deadline is nearer than a typical batch is answered
    /// `UNAVAILABLE` instead of placed: a claim is only placed if its caller was still waiting
    /// when its batch started. Not used when `ERP_CLAIM_BATCH_MAX` is 0.
    pub(crate) claim_queue_max: usize,
    /// The reward deliveries' push (`ERP_DELIVERY_*`).
    pub(crate) delivery: DeliveryConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, "0.0.0.0:9466")?,
            grpc_addr: env.socket_addr("ERP_EVENT_ADDR", "0.0.0.0:50052")?,
            grpc: GrpcConfig::from_env(env)?,
            identity: IdentityKeys::from_env(env)?,
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
            claim_pending_expiry: env.duration_secs(
                "ERP_CLAIM_PENDING_EXPIRY_SECS",
                Duration::from_secs(7 * 24 * 3600),
                Duration::ZERO,
            )?,
            claim_denial_audit_window: env.duration_secs(
                "ERP_CLAIM_DENIAL_AUDIT_WINDOW_SECS",
                Duration::from_secs(3600),
                Duration::from_secs(1),
            )?,
            jobs_interval: env.duration_secs(
                "ERP_JOBS_INTERVAL_SECS",
                Duration::from_secs(30),
                Duration::from_secs(1),
            )?,
            claim_batch_max: env.int_in("ERP_CLAIM_BATCH_MAX", 64, 0..=1000)?,
            claim_queue_max: env.int_in("ERP_CLAIM_QUEUE_MAX", 1000, 1..=1_000_000)?,
            delivery: DeliveryConfig::from_env(env)?,
        })
    }
}

/// Where and how pending deliveries are pushed. Configuration, not user input: the URL is the
/// deployment's own game backend (no SSRF surface), checked once at start.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryConfig {
    /// `ERP_DELIVERY_WEBHOOK_URL` (an http or https URL) and `ERP_DELIVERY_WEBHOOK_SECRET`
    /// (required with it): the push is on exactly when the URL is set.
    pub(crate) webhook: Option<Webhook>,
    /// `ERP_DELIVERY_MAX_ATTEMPTS` (default 8, 1..=1000): failed pushes before a delivery is
    /// `FAILED`.
    pub(crate) max_attempts: u32,
    /// `ERP_DELIVERY_BACKOFF_BASE_MS` (default 1000): the wait after the first failed push,
    /// doubled after each further one (with jitter: between half and all of it) ...
    pub(crate) backoff_base: Duration,
    /// ... up to `ERP_DELIVERY_BACKOFF_MAX_MS` (default 300000).
    pub(crate) backoff_max: Duration,
    /// `ERP_DELIVERY_TIMEOUT_MS` (default 5000): the most one push may take.
    pub(crate) timeout: Duration,
    /// `ERP_DELIVERY_CONCURRENCY` (default 16, 1..=1000): pushes in flight per replica.
    pub(crate) concurrency: usize,
    /// `ERP_DELIVERY_POLL_INTERVAL_MS` (default 500): how often a replica looks for due
    /// deliveries when it has nothing in flight to wait for.
    pub(crate) poll_interval: Duration,
    /// `ERP_DELIVERY_LEASE_MS` (default 30000, more than the timeout): how long a replica owns a
    /// delivery it is pushing. One that dies mid-push leaves it to the others after this.
    pub(crate) lease: Duration,
}

/// The webhook's address and signing secret.
#[derive(Clone)]
pub(crate) struct Webhook {
    pub(crate) url: reqwest::Url,
    pub(crate) secret: String,
}

/// Neither the secret nor a password in the URL reaches a log.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("[REDACTED]"));
        }
        f.debug_struct("Webhook")
            .field("url", &url.as_str())
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl DeliveryConfig {
    pub(crate) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        const URL: &str = "ERP_DELIVERY_WEBHOOK_URL";
        const SECRET: &str = "ERP_DELIVERY_WEBHOOK_SECRET";
        let webhook = match env.get(URL) {
            None => None,
            Some(raw) => {
                let url = reqwest::Url::parse(raw)
                    .map_err(|e| ConfigError::new(URL, raw, format!("not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(ConfigError::new(
                        URL,
                        raw,
                        "expected an http:// or https:// URL with a host",
                    ));
                }
                let secret = env.get(SECRET).ok_or_else(|| {
                    ConfigError::new(SECRET, "", format!("required when {URL} is set"))
                })?;
                Some(Webhook {
                    url,
                    secret: secret.to_owned(),
                })
            }
        };
        let millis = |name: &str, default: u64| {
            env.duration_millis(
                name,
                Duration::from_millis(default),
                Duration::from_millis(1),
            )
        };
        let config = Self {
            webhook,
            max_attempts: env.int_in("ERP_DELIVERY_MAX_ATTEMPTS", 8, 1..=1000)?,
            backoff_base: millis("ERP_DELIVERY_BACKOFF_BASE_MS", 1000)?,
            backoff_max: millis("ERP_DELIVERY_BACKOFF_MAX_MS", 300_000)?,
            timeout: millis("ERP_DELIVERY_TIMEOUT_MS", 5000)?,
            concurrency: env.int_in("ERP_DELIVERY_CONCURRENCY", 16, 1..=1000)?,
            poll_interval: millis("ERP_DELIVERY_POLL_INTERVAL_MS", 500)?,
            lease: millis("ERP_DELIVERY_LEASE_MS", 30_000)?,
        };
        if config.lease <= config.timeout {
            return Err(ConfigError::new(
                "ERP_DELIVERY_LEASE_MS",
                &config.lease.as_millis().to_string(),
                "must be more than ERP_DELIVERY_TIMEOUT_MS (a push must end before its lease)",
            ));
        }
        if config.backoff_max < config.backoff_base {
            return Err(ConfigError::new(
                "ERP_DELIVERY_BACKOFF_MAX_MS",
                &config.backoff_max.as_millis().to_string(),
                "must be at least ERP_DELIVERY_BACKOFF_BASE_MS",
            ));
        }
        Ok(config)
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(pairs: &[(&str, &str)]) -> Result<DeliveryConfig, ConfigError> {
        DeliveryConfig::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn deliveries_default_to_pull_only() {
        let config = delivery(&[]).unwrap();
        assert!(config.webhook.is_none());
        assert_eq!(config.max_attempts, 8);
        assert_eq!(config.backoff_base, Duration::from_secs(1));
        assert_eq!(config.backoff_max, Duration::from_secs(300));
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.concurrency, 16);
        assert_eq!(config.poll_interval, Duration::from_millis(500));
        assert_eq!(config.lease, Duration::from_secs(30));
    }

    #[test]
    fn bad_delivery_settings_are_refused_naming_the_variable() {
        let url = ("ERP_DELIVERY_WEBHOOK_URL", "https://game.example/hooks");
        let secret = ("ERP_DELIVERY_WEBHOOK_SECRET", "s3cret");
        let webhook = delivery(&[url, secret]).unwrap().webhook.unwrap();
        assert_eq!(webhook.url.as_str(), "https://game.example/hooks");
        assert!(!format!("{webhook:?}").contains("s3cret"));
        for (pairs, variable) in [
            (
                vec![("ERP_DELIVERY_WEBHOOK_URL", "ftp://game.example/"), secret],
                "ERP_DELIVERY_WEBHOOK_URL",
            ),
            (
                vec![("ERP_DELIVERY_WEBHOOK_URL", "file:///etc/passwd"), secret],
                "ERP_DELIVERY_WEBHOOK_URL",
            ),
            (
                vec![("ERP_DELIVERY_WEBHOOK_URL", "not a url"), secret],
                "ERP_DELIVERY_WEBHOOK_URL",
            ),
            (vec![url], "ERP_DELIVERY_WEBHOOK_SECRET"),
            (
                vec![("ERP_DELIVERY_MAX_ATTEMPTS", "0")],
                "ERP_DELIVERY_MAX_ATTEMPTS",
            ),
            (
                vec![("ERP_DELIVERY_CONCURRENCY", "0")],
                "ERP_DELIVERY_CONCURRENCY",
            ),
            (
                vec![("ERP_DELIVERY_BACKOFF_BASE_MS", "0")],
                "ERP_DELIVERY_BACKOFF_BASE_MS",
            ),
            (
                vec![("ERP_DELIVERY_TIMEOUT_MS", "0")],
                "ERP_DELIVERY_TIMEOUT_MS",
            ),
            (
                vec![("ERP_DELIVERY_POLL_INTERVAL_MS", "0")],
                "ERP_DELIVERY_POLL_INTERVAL_MS",
            ),
            (
                vec![
                    ("ERP_DELIVERY_TIMEOUT_MS", "5000"),
                    ("ERP_DELIVERY_LEASE_MS", "5000"),
                ],
                "ERP_DELIVERY_LEASE_MS",
            ),
            (
                vec![
                    ("ERP_DELIVERY_BACKOFF_BASE_MS", "1000"),
                    ("ERP_DELIVERY_BACKOFF_MAX_MS", "10"),
                ],
                "ERP_DELIVERY_BACKOFF_MAX_MS",
            ),
        ] {
            assert_eq!(
                delivery(&pairs).unwrap_err().variable,
                variable,
                "{pairs:?}"
            );
        }
    }
}
