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
        })
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}
