//! Who is calling: access tokens are checked by asking auth to introspect them, and answers are
//! cached briefly by the token's SHA-256. Auth publishes every revocation (logout, role change,
//! disable, delete, session revocation) on Redis; every gateway replica evicts the matching
//! entries at once, so those changes take effect within the pub/sub delivery time. If auth
//! cannot be reached, an uncached token is refused with 503 — never silently allowed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use erp_platform::error::{ApiError, ErrorCode};
use erp_platform::identity::{Caller, Role};
use erp_proto::auth::v1 as pb;
use moka::future::Cache;
use prometheus::{IntCounter, IntCounterVec};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub caller: Caller,
    pub jti: String,
    pub session_id: String,
    pub expires_at: SystemTime,
}

/// A revocation as auth publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Revocation {
    #[serde(rename_all = "camelCase")]
    User { user_id: String },
    #[serde(rename_all = "camelCase")]
    Token { jti: String },
    #[serde(rename_all = "camelCase")]
    Session { session_id: String },
}

#[derive(Clone)]
pub struct Introspector {
    client: crate::state::AuthClient,
    cache: Cache<[u8; 32], Arc<Session>>,
    hits: IntCounter,
    misses: IntCounter,
}

fn role_from_pb(value: i32) -> Option<Role> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::User) => Some(Role::User),
        Ok(pb::Role::Operator) => Some(Role::Operator),
        Ok(pb::Role::Auditor) => Some(Role::Auditor),
        Ok(pb::Role::Admin) => Some(Role::Admin),
        _ => None,
    }
}

/// A token not in the cache (its cache key).
#[derive(Debug)]
pub struct Uncached([u8; 32]);

/// Verified sessions by the SHA-256 of their token, shared by every HTTP shard of the gateway.
pub type SessionCache = Cache<[u8; 32], Arc<Session>>;

impl Introspector {
    /// A cache whose answers live `ttl` (revocations evict them at once).
    pub fn cache(ttl: Duration) -> SessionCache {
        Cache::builder()
            .max_capacity(200_000)
            .time_to_live(ttl)
            .support_invalidation_closures()
            .build()
    }

    pub fn new(
        client: crate::state::AuthClient,
        cache: SessionCache,
        lookups: IntCounterVec,
    ) -> Self {
        Self {
            client,
            cache,
            hits: lookups.with_label_values(&["hit"]),
            misses: lookups.with_label_values(&["miss"]),
        }
    }

    /// The session of `token`, or `UNAUTHENTICATED` / `UNAVAILABLE`.
    pub async fn session(&self, token: &str) -> Result<Arc<Session>, ApiError> {
        match self.cached(token).await {
            Ok(session) => Ok(session),
            Err(uncached) => self.introspect(token, uncached).await,
        }
    }

    /// The cached session of `token`, else what [`Self::introspect`] needs to ask auth.
    pub async fn cached(&self, token: &str) -> Result<Arc<Session>, Uncached> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(session) = self.cache.get(&key).await
            && session.expires_at > SystemTime::now()
        {
            self.hits.inc();
            return Ok(session);
        }
        Err(Uncached(key))
    }

    /// Asks auth about a token [`Self::cached`] does not know, and caches the answer.
    pub async fn introspect(
        &self,
        token: &str,
        Uncached(key): Uncached,
    ) -> Result<Arc<Session>, ApiError> {
        self.misses.inc();
        let answer = self
            .client
            .clone()
            .introspect(crate::state::upstream(
                pb::IntrospectRequest {
                    access_token: token.to_owned(),
                },
                None,
            ))
            .await
            .map_err(|status| {
                tracing::warn!(code = ?status.code(), "introspection failed");
                ApiError::unavailable("the auth service")
            })?
            .into_inner();
        let unauthenticated = || {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "the access token is missing, malformed, expired or revoked",
            )
        };
        if !answer.active {
            return Err(unauthenticated());
        }
        let expires_at = answer
            .expires_at
            .and_then(|t| {
                SystemTime::UNIX_EPOCH
                    .checked_add(Duration::from_secs(u64::try_from(t.seconds).ok()?))
            })
            .ok_or_else(unauthenticated)?;
        let session = Arc::new(Session {
            caller: Caller {
                user_id: answer.user_id.ok_or_else(unauthenticated)?,
                roles: answer.roles.into_iter().filter_map(role_from_pb).collect(),
            },
            jti: answer.jti.unwrap_or_default(),
            session_id: answer.session_id.unwrap_or_default(),
            expires_at,
        });
        self.cache.insert(key, Arc::clone(&session)).await;
        Ok(session)
    }

    /// Evicts every cached answer a revocation concerns.
    pub fn evict(&self, revocation: Revocation) {
        let evicted = match revocation {
            Revocation::User { user_id } => self
                .cache
                .invalidate_entries_if(move |_, s| s.caller.user_id == user_id),
            Revocation::Token { jti } => self.cache.invalidate_entries_if(move |_, s| s.jti == jti),
            Revocation::Session { session_id } => self
                .cache
                .invalidate_entries_if(move |_, s| s.session_id == session_id),
        };
        if let Err(error) = evicted {
            tracing::error!(%error, "cannot evict cached sessions; dropping them all");
            self.cache.invalidate_all();
        }
    }

    pub fn evict_all(&self) {
        self.cache.invalidate_all();
    }
}
