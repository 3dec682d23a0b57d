//! Sessions: refresh-token families and their rotation state durable in MongoDB, with Redis as
//! the fast path of introspection; also the login-failure counters and the revocation channel
//! (Redis only).
//!
//! MongoDB (the truth; a Redis loss loses no session and revives no revoked one):
//! - `sessions` `{_id: family, user_id, state: a|r, current: sha256(newest token), expires_at}`,
//!   living (TTL index) as long as the family's newest refresh token;
//! - `refresh_tokens` `{_id: sha256(token), user_id, family, expires_at}`, every token a family
//!   ever had (rotated ones too, for reuse detection) until it would have expired.
//!
//! Redis, under the deployment's prefix (a cache and counters; losing it costs no session):
//! - `auth:rf:<family>` `a` or `r`: the family's state as last read from or written to MongoDB
//!   (read-through on a miss; revocations write MongoDB first, then overwrite this key, and a
//!   read-through only ever fills a missing key, so a stale `a` never overwrites an `r`);
//! - `auth:deny:<jti>` present while a logged-out access token would still be valid (a second
//!   line of defence: a logout also revokes the token's family, which is durable);
//! - `auth:fail:addr:<sha256(email, client address)>` login attempts of one account from one
//!   client address in the current lockout window, and `auth:fail:acct:<sha256(email)>` those of
//!   the account from every address (the ceiling against distributed guessing);
//!   `auth:fail:caddr:<sha256(client id, client address)>` and `auth:fail:cacct:<sha256(client
//!   id)>` the same for a service account's failed client authentications (counters of their
//!   own, so a login can never count towards a client's lockout or the reverse).
//!
//! A login reserves its attempt on both counters before the password is verified, in one script
//! ([`SessionStore::reserve_login_attempt`]): parallel guesses cannot all pass a check made before
//! any of them is counted. A refused attempt is not counted, so a locked-out address cannot push
//! the account towards its all-address ceiling.
//!
//! Rotation is one conditional update of the family in MongoDB (`state: a, current: <presented
//! token>`), so concurrent refreshes of one token are serialised by the database: exactly one
//! matches and rotates it; the others find the family's current token changed, which is reuse,
//! and revoke the family. A rotated token is answered as reuse for as long as it is remembered,
//! even once its family is revoked.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use erp_platform::mongo::{from_bson_time, is_duplicate_key, to_bson_time};
use erp_platform::redis::RedisStore;
use futures::TryStreamExt;
use mongodb::bson::{DateTime as BsonDateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use rand::RngCore;
use redis::Script;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::LockoutConfig;
use crate::error::AuthError;

/// What auth announces on the revocation channel; gateways evict cached introspections matching
/// it, and auth replicas evict their cached user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Revocation {
    /// Everything about this user changed (roles, disabled, deleted, password).
    #[serde(rename_all = "camelCase")]
    User { user_id: String },
    /// One access token was logged out.
    #[serde(rename_all = "camelCase")]
    Token { jti: String },
    /// A whole session (refresh family) was revoked.
    #[serde(rename_all = "camelCase")]
    Session { session_id: String },
}

/// The result of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    Rotated {
        user_id: String,
        family: String,
        new_token: String,
    },
    /// The token had been rotated already: its family is now revoked.
    Reused {
        user_id: String,
        family: String,
    },
    Invalid,
}

/// Reserves a login attempt. KEYS: (account, address) counter, account counter. ARGV: most
/// attempts per address, most per account, window in ms. `{1, 0}`: reserved (counted on both);
/// `{0, ms}`: refused, the lockout ends in `ms`.
const RESERVE_LOGIN: &str = r"
local address = tonumber(redis.call('GET', KEYS[1]) or '0')
local account = tonumber(redis.call('GET', KEYS[2]) or '0')
local wait = -1
if address >= tonumber(ARGV[1]) then wait = math.max(wait, redis.call('PTTL', KEYS[1])) end
if account >= tonumber(ARGV[2]) then wait = math.max(wait, redis.call('PTTL', KEYS[2])) end
if wait ~= -1 then return {0, wait} end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[3]) end
end
return {1, 0}
";

/// Gives a reserved attempt back. KEYS: (account, address) counter, account counter. ARGV[1]:
/// `clear` to forget the address's failures (a successful login), else only this attempt is
/// returned. The account counter only ever loses this attempt: a success from one address never
/// erases what other addresses did.
const RELEASE_LOGIN: &str = r"
if ARGV[1] == 'clear' then
  redis.call('DEL', KEYS[1])
elseif redis.call('EXISTS', KEYS[1]) == 1 and redis.call('DECR', KEYS[1]) <= 0 then
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('DECR', KEYS[2]) <= 0 then
  redis.call('DEL', KEYS[2])
end
return 1
";

/// Whether a login may go on to verify the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginAttempt {
    /// Counted; verify, then keep it (a failure) or release it.
    Reserved,
    /// Too many failures in the window; try again after this long.
    Refused { retry_after: Duration },
}

/// Whose failed authentications a lockout counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockoutSubject<'a> {
    /// A person logging in, by email (compared ignoring case).
    Email(&'a str),
    /// A service account authenticating, by client id (exact).
    Client(&'a str),
}

/// A refresh family in MongoDB.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionDoc {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    /// `a` (active) or `r` (revoked).
    state: String,
    /// SHA-256 of the family's newest refresh token: the only one that rotates.
    current: String,
    created_at: BsonDateTime,
    expires_at: BsonDateTime,
}

/// A refresh token (by its SHA-256) a family has had.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefreshTokenDoc {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    family: String,
    expires_at: BsonDateTime,
}

const ACTIVE: &str = "a";
const REVOKED: &str = "r";

/// How long Redis caches that a family is active. Short, so that in the one case a revocation
/// cannot overwrite it (Redis unreachable, yet keeping its data, for longer than the revocation
/// keeps retrying) the stale entry is gone soon; MongoDB answers the next read.
const ACTIVE_CACHE_TTL: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct SessionStore {
    redis: RedisStore,
    families: Collection<SessionDoc>,
    refresh_tokens: Collection<RefreshTokenDoc>,
    /// How long Redis remembers a family's state (a cache entry; MongoDB answers after).
    cache_ttl: Duration,
    reserve_login: Script,
    release_login: Script,
}

/// A new opaque refresh token: 256 random bits.
fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256_hex(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn secs(duration: Duration) -> u64 {
    duration.as_secs().max(1)
}

/// The insert of a document under a fresh random id (256-bit token hash, UUIDv7): a duplicate key
/// can only be this very insert, retried by the driver after its first attempt was applied (a
/// store without retryable-write deduplication answers the retry so).
fn fresh<T>(inserted: mongodb::error::Result<T>) -> Result<(), AuthError> {
    match inserted {
        Ok(_) => Ok(()),
        Err(error) if is_duplicate_key(&error) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn bson_in(ttl: Duration) -> BsonDateTime {
    to_bson_time(Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX))
}

impl SessionStore {
    /// `cache_ttl`: how long Redis caches a family's state (the refresh-token lifetime).
    pub fn new(redis: RedisStore, database: &Database, cache_ttl: Duration) -> Self {
        Self {
            redis,
            families: database.collection("sessions"),
            refresh_tokens: database.collection("refresh_tokens"),
            cache_ttl,
            reserve_login: Script::new(RESERVE_LOGIN),
            release_login: Script::new(RELEASE_LOGIN),
        }
    }

    /// Creates the indexes sessions rely on (expiry by TTL index). Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), AuthError> {
        let expiring = || {
            IndexModel::builder()
                .keys(doc! { "expires_at": 1 })
                .options(
                    IndexOptions::builder()
                        .expire_after(Duration::from_secs(0))
                        .build(),
                )
                .build()
        };
        self.families
            .create_indexes([
                expiring(),
                IndexModel::builder().keys(doc! { "user_id": 1 }).build(),
            ])
            .await?;
        self.refresh_tokens.create_indexes([expiring()]).await?;
        Ok(())
    }

    fn family_key(&self, family: &str) -> String {
        self.redis.key(&format!("auth:rf:{family}"))
    }

    pub fn channel(&self) -> String {
        self.redis.key("auth:revocations")
    }

    /// Starts a session: a new family with its first refresh token. Returns (family, token).
    pub async fn start(&self, user_id: &str, ttl: Duration) -> Result<(String, String), AuthError> {
        let family = uuid::Uuid::now_v7().to_string();
        let token = new_refresh_token();
        let hash = sha256_hex(&token);
        let expires_at = bson_in(ttl);
        // Independent documents (a token is only ever looked up after both exist): written in
        // parallel, one round trip of latency.
        let (token_inserted, family_inserted) = tokio::join!(
            self.refresh_tokens
                .insert_one(RefreshTokenDoc {
                    id: hash.clone(),
                    user_id: user_id.to_owned(),
                    family: family.clone(),
                    expires_at,
                })
                .into_future(),
            self.families
                .insert_one(SessionDoc {
                    id: family.clone(),
                    user_id: user_id.to_owned(),
                    state: ACTIVE.to_owned(),
                    current: hash,
                    created_at: BsonDateTime::now(),
                    expires_at,
                })
                .into_future(),
        );
        fresh(token_inserted)?;
        fresh(family_inserted)?;
        // Warms the cache for the first introspections; never overwrites a revocation.
        let mut connection = self.redis.connection();
        if let Err(error) = redis::cmd("SET")
            .arg(self.family_key(&family))
            .arg(ACTIVE)
            .arg("NX")
            .arg("EX")
            .arg(secs(ttl.min(ACTIVE_CACHE_TTL)))
            .query_async::<()>(&mut connection)
            .await
        {
            tracing::warn!(%error, "session state not cached");
        }
        Ok((family, token))
    }

    /// Presents a refresh token: rotates it when it is its active family's newest, revokes its
    /// family when it had been rotated already.
    pub async fn refresh(&self, token: &str, ttl: Duration) -> Result<RefreshOutcome, AuthError> {
        let hash = sha256_hex(token);
        let now = BsonDateTime::now();
        let found = self
            .refresh_tokens
            .find_one(doc! { "_id": &hash, "expires_at": { "$gt": now } })
            .await?;
        let presented = match found {
            Some(presented) => presented,
            None => match self.adopt_legacy(&hash, ttl).await? {
                Some(presented) => presented,
                None => return Ok(RefreshOutcome::Invalid),
            },
        };
        let new_token = new_refresh_token();
        let new_hash = sha256_hex(&new_token);
        let expires_at = bson_in(ttl);
        // Recorded before the rotation makes it current, so the family's current token is always
        // findable; if the rotation loses, nobody ever saw this token.
        fresh(
            self.refresh_tokens
                .insert_one(RefreshTokenDoc {
                    id: new_hash.clone(),
                    user_id: presented.user_id.clone(),
                    family: presented.family.clone(),
                    expires_at,
                })
                .await,
        )?;
        let rotated = self
            .families
            .update_one(
                doc! {
                    "_id": &presented.family,
                    "state": ACTIVE,
                    "current": &hash,
                    "expires_at": { "$gt": now },
                },
                doc! { "$set": { "current": &new_hash, "expires_at": expires_at } },
            )
            .await?;
        if rotated.matched_count == 1 {
            return Ok(RefreshOutcome::Rotated {
                user_id: presented.user_id,
                family: presented.family,
                new_token,
            });
        }
        // Not matched. If the family's newest token is the one just made, this very update was
        // applied and then retried by the driver (a store without retryable-write deduplication
        // answers the retry so): rotated. Else either the family moved on from this token
        // (reuse: revoke it), or this is still its newest token and the family is revoked or gone
        // (invalid).
        let reused = self
            .families
            .update_one(
                doc! {
                    "_id": &presented.family,
                    "current": { "$nin": [&hash, &new_hash] },
                },
                doc! { "$set": { "state": REVOKED } },
            )
            .await?;
        if reused.matched_count == 0
            && self
                .families
                .find_one(doc! { "_id": &presented.family, "current": &new_hash })
                .await?
                .is_some()
        {
            return Ok(RefreshOutcome::Rotated {
                user_id: presented.user_id,
                family: presented.family,
                new_token,
            });
        }
        if let Err(error) = self
            .refresh_tokens
            .delete_one(doc! { "_id": &new_hash })
            .await
        {
            tracing::debug!(%error, "unused refresh token not deleted (it expires)");
        }
        if reused.matched_count == 1 {
            self.cache_revoked(std::slice::from_ref(&presented.family))
                .await?;
            Ok(RefreshOutcome::Reused {
                user_id: presented.user_id,
                family: presented.family,
            })
        } else {
            Ok(RefreshOutcome::Invalid)
        }
    }

    /// A refresh token issued before sessions were kept in MongoDB (only in Redis, as
    /// `auth:rt:<sha256>` `{u, f, s}` with its family at `auth:rf:<family>`): its family is
    /// recorded in MongoDB on first use, so an upgrade logs nobody out. An active token becomes its
    /// family's current one; a rotated one is recorded as such (presenting it is then reuse).
    async fn adopt_legacy(
        &self,
        hash: &str,
        ttl: Duration,
    ) -> Result<Option<RefreshTokenDoc>, AuthError> {
        let mut connection = self.redis.connection();
        let (user, family, state): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.redis.key(&format!("auth:rt:{hash}")))
                .arg("u")
                .arg("f")
                .arg("s")
                .query_async(&mut connection)
                .await?;
        let (Some(user_id), Some(family), Some(state)) = (user, family, state) else {
            return Ok(None);
        };
        let family_active: Option<String> = redis::cmd("GET")
            .arg(self.family_key(&family))
            .query_async(&mut connection)
            .await?;
        let expires_at = bson_in(ttl);
        let token = RefreshTokenDoc {
            id: hash.to_owned(),
            user_id: user_id.clone(),
            family: family.clone(),
            expires_at,
        };
        fresh(self.refresh_tokens.insert_one(&token).await)?;
        // Inserted only if the family is not recorded yet (by a concurrent adoption, say).
        let current = if state == ACTIVE { hash } else { "" };
        let family_state = if family_active.as_deref() == Some(ACTIVE) {
            ACTIVE
        } else {
            REVOKED
        };
        fresh(
            self.families
                .insert_one(SessionDoc {
                    id: family,
                    user_id,
                    state: family_state.to_owned(),
                    current: current.to_owned(),
                    created_at: BsonDateTime::now(),
                    expires_at,
                })
                .await,
        )?;
        Ok(Some(token))
    }

    /// The (user, family) a refresh token belongs to, if it is known.
    pub async fn refresh_token_owner(
        &self,
        token: &str,
    ) -> Result<Option<(String, String)>, AuthError> {
        Ok(self
            .refresh_tokens
            .find_one(doc! { "_id": sha256_hex(token) })
            .await?
            .map(|t| (t.user_id, t.family)))
    }

    /// Overwrites the cached state of `families` with revoked (after MongoDB recorded it). If
    /// Redis cannot be written, the revocation stands (MongoDB has it, and introspection reads
    /// MongoDB while Redis is unreachable); the write is retried in the background for as long as
    /// an `a` cached before could live, so a Redis that comes back with its data revives nothing.
    async fn cache_revoked(&self, families: &[String]) -> Result<(), AuthError> {
        let Err(error) = self.write_revoked(families).await else {
            return Ok(());
        };
        tracing::warn!(%error, "revocation not cached in Redis; retrying in the background");
        let store = self.clone();
        let families = families.to_vec();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + ACTIVE_CACHE_TTL;
            let mut pause = Duration::from_millis(100);
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(pause).await;
                if store.write_revoked(&families).await.is_ok() {
                    return;
                }
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        });
        Ok(())
    }

    async fn write_revoked(&self, families: &[String]) -> Result<(), AuthError> {
        if families.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for family in families {
            pipe.set_ex(self.family_key(family), REVOKED, secs(self.cache_ttl))
                .ignore();
        }
        let mut connection = self.redis.connection();
        pipe.query_async::<()>(&mut connection).await?;
        Ok(())
    }

    pub async fn revoke_family(&self, family: &str) -> Result<(), AuthError> {
        self.families
            .update_one(
                doc! { "_id": family },
                doc! { "$set": { "state": REVOKED } },
            )
            .await?;
        self.cache_revoked(&[family.to_owned()]).await
    }

    /// Revokes every session of a user; returns how many were active.
    pub async fn revoke_user(&self, user_id: &str) -> Result<u64, AuthError> {
        let revoked = self
            .families
            .update_many(
                doc! { "user_id": user_id, "state": ACTIVE },
                doc! { "$set": { "state": REVOKED } },
            )
            .await?;
        // Every family of the user, read after the update: also one started (and cached active)
        // while it ran.
        let families: Vec<String> = self
            .families
            .clone_with_type::<Document>()
            .find(doc! { "user_id": user_id })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .filter_map(|f| f.get_str("_id").ok().map(str::to_owned))
            .collect();
        // Sessions issued before they were kept in MongoDB (see `adopt_legacy`).
        let mut connection = self.redis.connection();
        let legacy: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.redis.key(&format!("auth:uf:{user_id}")))
            .query_async(&mut connection)
            .await
            .unwrap_or_default();
        let families: Vec<String> = families.into_iter().chain(legacy).collect();
        self.cache_revoked(&families).await?;
        Ok(revoked.modified_count)
    }

    /// Deny-lists an access token until it would have expired anyway (Redis only: the logout
    /// that does this also revokes the token's family, durably).
    pub async fn deny_access_token(&self, jti: &str, remaining: Duration) -> Result<(), AuthError> {
        let mut connection = self.redis.connection();
        redis::cmd("SET")
            .arg(self.redis.key(&format!("auth:deny:{jti}")))
            .arg(1)
            .arg("EX")
            .arg(secs(remaining))
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// Whether an access token is still usable: not deny-listed and its session not revoked.
    /// One Redis round trip when the family's state is cached; else one MongoDB read, cached.
    pub async fn access_token_usable(
        &self,
        jti: &str,
        session_id: &str,
    ) -> Result<bool, AuthError> {
        let mut connection = self.redis.connection();
        let cached: Result<(Option<String>, Option<String>), _> = redis::cmd("MGET")
            .arg(self.redis.key(&format!("auth:deny:{jti}")))
            .arg(self.family_key(session_id))
            .query_async(&mut connection)
            .await;
        match cached {
            Ok((Some(_), _)) => Ok(false),
            Ok((None, Some(state))) => Ok(state == ACTIVE),
            Ok((None, None)) => Ok(self.load_family_state(session_id).await? == ACTIVE),
            // Redis unreachable: MongoDB has every revocation (a logout also revokes the family,
            // so the deny list is not needed to refuse a logged-out token).
            Err(error) => {
                tracing::debug!(%error, "Redis unavailable; session state read from MongoDB");
                Ok(self.stored_family_state(session_id).await?.0 == ACTIVE)
            }
        }
    }

    /// A family's state in MongoDB (unknown or expired: revoked), and how long to cache it.
    async fn stored_family_state(
        &self,
        family: &str,
    ) -> Result<(&'static str, Duration), AuthError> {
        let now = Utc::now();
        let found = self.families.find_one(doc! { "_id": family }).await?;
        Ok(match found {
            Some(doc) if doc.state == ACTIVE && from_bson_time(doc.expires_at) > now => {
                let left = (from_bson_time(doc.expires_at) - now)
                    .to_std()
                    .unwrap_or(Duration::from_secs(1));
                (ACTIVE, left.min(ACTIVE_CACHE_TTL))
            }
            _ => (REVOKED, self.cache_ttl),
        })
    }

    /// Reads a family's state from MongoDB into the cache. `SET NX GET`: a revocation cached in
    /// the meantime wins over what was read before it.
    async fn load_family_state(&self, family: &str) -> Result<String, AuthError> {
        let (state, ttl) = self.stored_family_state(family).await?;
        let mut connection = self.redis.connection();
        let previous: Option<String> = redis::cmd("SET")
            .arg(self.family_key(family))
            .arg(state)
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(secs(ttl))
            .query_async(&mut connection)
            .await?;
        Ok(previous.unwrap_or_else(|| state.to_owned()))
    }

    /// The (account, address) and account counters of `subject` from `address`.
    fn attempt_keys(&self, subject: LockoutSubject<'_>, address: &str) -> [String; 2] {
        let (address_kind, account_kind, account) = match subject {
            LockoutSubject::Email(email) => ("addr", "acct", email.to_lowercase()),
            LockoutSubject::Client(client_id) => ("caddr", "cacct", client_id.to_owned()),
        };
        [
            self.redis.key(&format!(
                "auth:fail:{address_kind}:{}",
                sha256_hex(&format!("{account}\n{address}"))
            )),
            self.redis.key(&format!(
                "auth:fail:{account_kind}:{}",
                sha256_hex(&account)
            )),
        ]
    }

    /// Counts an authentication attempt of `subject` from `address` before its password or secret
    /// is verified, unless the address has used up `limits.max_failures` or the account
    /// `limits.max_failures_per_account` in the window (which starts at the first attempt).
    pub async fn reserve_login_attempt(
        &self,
        subject: LockoutSubject<'_>,
        address: &str,
        limits: &LockoutConfig,
    ) -> Result<LoginAttempt, AuthError> {
        let [address_key, account_key] = self.attempt_keys(subject, address);
        let mut connection = self.redis.connection();
        let (reserved, wait_ms): (i64, i64) = self
            .reserve_login
            .key(address_key)
            .key(account_key)
            .arg(limits.max_failures)
            .arg(limits.max_failures_per_account)
            .arg(
                u64::try_from(limits.window.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .invoke_async(&mut connection)
            .await?;
        Ok(if reserved == 1 {
            LoginAttempt::Reserved
        } else {
            LoginAttempt::Refused {
                retry_after: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)),
            }
        })
    }

    /// A reserved attempt that verified nothing (the store or hashing was unavailable): it does
    /// not count.
    pub async fn release_login_attempt(
        &self,
        subject: LockoutSubject<'_>,
        address: &str,
    ) -> Result<(), AuthError> {
        self.release(subject, address, "release").await
    }

    /// A successful login from `address`: that address's failures are forgotten, and the account
    /// counter gives back this attempt only.
    pub async fn login_succeeded(
        &self,
        subject: LockoutSubject<'_>,
        address: &str,
    ) -> Result<(), AuthError> {
        self.release(subject, address, "clear").await
    }

    async fn release(
        &self,
        subject: LockoutSubject<'_>,
        address: &str,
        mode: &str,
    ) -> Result<(), AuthError> {
        let [address_key, account_key] = self.attempt_keys(subject, address);
        let mut connection = self.redis.connection();
        self.release_login
            .key(address_key)
            .key(account_key)
            .arg(mode)
            .invoke_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// Announces a revocation to every gateway and auth replica.
    pub async fn publish(&self, revocation: &Revocation) -> Result<(), AuthError> {
        let message =
            serde_json::to_string(revocation).map_err(AuthError::internal("encode revocation"))?;
        let mut connection = self.redis.connection();
        redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(message)
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_carry_256_bits() {
        let token = new_refresh_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
        assert_ne!(token, new_refresh_token());
    }

    #[test]
    fn revocations_have_a_stable_wire_form() {
        let json = serde_json::to_string(&Revocation::User {
            user_id: "u1".into(),
        })
        .unwrap();
        assert_eq!(json, r#"{"type":"user","userId":"u1"}"#);
        let json = serde_json::to_string(&Revocation::Session {
            session_id: "s1".into(),
        })
        .unwrap();
        assert_eq!(json, r#"{"type":"session","sessionId":"s1"}"#);
    }
}
