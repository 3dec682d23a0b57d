//! Who is calling: access tokens are checked by asking auth to introspect them, and answers are
//! cached briefly by the token's SHA-256. Auth publishes every revocation (logout, role change,
//! disable, delete, session revocation) on Redis; every gateway replica evicts the matching
//! entries at once, so those changes take effect within the pub/sub delivery time. If auth
//! cannot be reached, an uncached token is refused with 503 — never silently allowed.
//!
//! An introspection in flight while an eviction happens may carry what auth read before the
//! change (e.g. the old roles); every eviction bumps the cache's generation, and an answer is
//! only left in the cache if the generation did not move between the question and the insert
//! (checked again after the insert, which is undone if an eviction slipped in). Such an answer
//! still serves the request it was asked for (which raced the change), never a later one.
//!
//! Concurrent requests with the same uncached token (a crowd's first requests after a deploy, a
//! client's parallel calls) share one call to auth: the calls in flight are keyed by the token
//! and the generation, so an answer asked before an eviction is never shared with a request made
//! after it.
//!
//! Bounded staleness if a revocation message is lost without the subscription dropping (a
//! dropped subscription evicts everything when it comes back, and TCP keepalive detects a
//! half-open one): a cached answer lives at most `ERP_INTROSPECTION_CACHE_TTL_MS`, and auth's own
//! user cache at most `ERP_USER_CACHE_TTL_MS`; a revocation is then effective after their sum.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use erp_platform::error::{ApiError, ErrorCode};
use erp_platform::identity::{Caller, Role};
use erp_proto::auth::v1 as pb;
use moka::future::Cache;
use prometheus::{IntCounter, IntCounterVec};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How long a shared answer stays for requests that asked for it meanwhile (the session cache
/// serves the later ones), and how many tokens may be asked about at once.
const ASKING_TTL: Duration = Duration::from_secs(1);
const ASKING_CAPACITY: u64 = 100_000;

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
    client: crate::upstream::AuthClient,
    cache: SessionCache,
    hits: IntCounter,
    misses: IntCounter,
}

/// A token not in the cache (its cache key).
#[derive(Debug)]
pub struct Uncached([u8; 32]);

/// Verified sessions by the SHA-256 of their token, shared by every HTTP shard of the gateway,
/// with the generation every eviction bumps.
#[derive(Clone)]
pub struct SessionCache {
    entries: Cache<[u8; 32], Arc<Session>>,
    /// Introspections in flight (and their answers, briefly) by token and generation: the one
    /// call to auth the requests that wait for the same answer share.
    asking: Cache<([u8; 32], u64), Arc<Session>>,
    generation: Arc<AtomicU64>,
}

impl SessionCache {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Caches `session` unless an eviction happened since `generation` was read.
    async fn insert_unless_evicted(&self, key: [u8; 32], session: Arc<Session>, generation: u64) {
        if self.generation() != generation {
            return;
        }
        self.entries.insert(key, session).await;
        if self.generation() != generation {
            self.entries.invalidate(&key).await;
        }
    }
}

impl Introspector {
    /// A cache whose answers live `ttl` (revocations evict them at once).
    pub fn cache(ttl: Duration) -> SessionCache {
        SessionCache {
            entries: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            asking: Cache::builder()
                .max_capacity(ASKING_CAPACITY)
                .time_to_live(ASKING_TTL)
                .build(),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn new(
        client: crate::upstream::AuthClient,
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
        if let Some(session) = self.cache.entries.get(&key).await
            && session.expires_at > SystemTime::now()
        {
            self.hits.inc();
            return Ok(session);
        }
        Err(Uncached(key))
    }

    /// Asks auth about a token [`Self::cached`] does not know (one call for all the requests
    /// asking at once), and caches the answer.
    pub async fn introspect(
        &self,
        token: &str,
        Uncached(key): Uncached,
    ) -> Result<Arc<Session>, ApiError> {
        let generation = self.cache.generation();
        let session = self
            .cache
            .asking
            .try_get_with((key, generation), self.ask_auth(token))
            .await
            .map_err(|error| ApiError::clone(&error))?;
        self.cache
            .insert_unless_evicted(key, Arc::clone(&session), generation)
            .await;
        Ok(session)
    }

    /// One introspection call to auth (counted as a cache miss).
    async fn ask_auth(&self, token: &str) -> Result<Arc<Session>, ApiError> {
        self.misses.inc();
        let answer = self
            .client
            .clone()
            .introspect(crate::upstream::upstream(
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
        Ok(Arc::new(Session {
            caller: Caller {
                user_id: answer.user_id.ok_or_else(unauthenticated)?,
                roles: answer.roles.into_iter().filter_map(Role::from_pb).collect(),
            },
            jti: answer.jti.unwrap_or_default(),
            session_id: answer.session_id.unwrap_or_default(),
            expires_at,
        }))
    }

    /// Evicts every cached answer a revocation concerns.
    pub fn evict(&self, revocation: Revocation) {
        // Before the eviction: an introspection in flight now must not be cached after it.
        self.cache.bump();
        let entries = &self.cache.entries;
        let evicted = match revocation {
            Revocation::User { user_id } => {
                entries.invalidate_entries_if(move |_, s| s.caller.user_id == user_id)
            }
            Revocation::Token { jti } => entries.invalidate_entries_if(move |_, s| s.jti == jti),
            Revocation::Session { session_id } => {
                entries.invalidate_entries_if(move |_, s| s.session_id == session_id)
            }
        };
        if let Err(error) = evicted {
            tracing::error!(%error, "cannot evict cached sessions; dropping them all");
            entries.invalidate_all();
        }
    }

    pub fn evict_all(&self) {
        self.cache.bump();
        self.cache.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user_id: &str) -> Arc<Session> {
        Arc::new(Session {
            caller: Caller {
                user_id: user_id.to_owned(),
                roles: vec![Role::Admin],
            },
            jti: "j".to_owned(),
            session_id: "s".to_owned(),
            expires_at: SystemTime::now() + Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn an_answer_loaded_before_an_eviction_is_not_cached_after_it() {
        let cache = Introspector::cache(Duration::from_secs(60));
        // Asked before the eviction, answered after it: served once, never cached.
        let asked_at = cache.generation();
        cache.bump();
        cache
            .insert_unless_evicted([1; 32], session("u1"), asked_at)
            .await;
        assert!(cache.entries.get(&[1; 32]).await.is_none());
        // Asked after it: cached.
        let asked_at = cache.generation();
        cache
            .insert_unless_evicted([1; 32], session("u1"), asked_at)
            .await;
        assert!(cache.entries.get(&[1; 32]).await.is_some());
    }
}
