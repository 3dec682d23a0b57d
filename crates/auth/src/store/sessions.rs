//! Sessions in Redis: refresh tokens (stored only as SHA-256 hashes) grouped in families, the
//! access-token deny list, login-failure counters and the revocation channel.
//!
//! Keys, under the deployment's prefix:
//! - `auth:rt:<sha256(token)>` hash `{u: user, f: family, s: a|r}` (active or rotated), expiring
//!   with the token;
//! - `auth:rf:<family>` `a` (active) or `r` (revoked), living as long as the family's newest token;
//! - `auth:uf:<user>` set of the user's families, to revoke them all;
//! - `auth:deny:<jti>` present while a logged-out access token would still be valid;
//! - `auth:fail:addr:<sha256(email, client address)>` login attempts of one account from one
//!   client address in the current lockout window, and `auth:fail:acct:<sha256(email)>` those of
//!   the account from every address (the ceiling against distributed guessing).
//!
//! A login reserves its attempt on both counters before the password is verified, in one script
//! ([`SessionStore::reserve_login_attempt`]): parallel guesses cannot all pass a check made before
//! any of them is counted. A refused attempt is not counted, so a locked-out address cannot push
//! the account towards its all-address ceiling.
//!
//! Rotation is one Lua script, so concurrent refreshes of one token are serialised by Redis:
//! exactly one sees it active and rotates it; the others see it rotated, which is reuse. A rotated
//! token is answered as reuse for as long as it is remembered, even once its family is revoked.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use erp_platform::redis::RedisStore;
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

const ROTATE: &str = r"
local t = redis.call('HMGET', KEYS[1], 'u', 'f', 's')
if not t[1] then return {'invalid'} end
local family_key = ARGV[2] .. t[2]
if t[3] ~= 'a' then
  redis.call('SET', family_key, 'r', 'KEEPTTL', 'XX')
  return {'reused', t[1], t[2]}
end
if redis.call('GET', family_key) ~= 'a' then return {'invalid'} end
redis.call('HSET', KEYS[1], 's', 'r')
redis.call('HSET', KEYS[2], 'u', t[1], 'f', t[2], 's', 'a')
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('EXPIRE', family_key, ARGV[1])
redis.call('EXPIRE', ARGV[3] .. t[1], ARGV[1])
return {'ok', t[1], t[2]}
";

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

const REVOKE_USER: &str = r"
local families = redis.call('SMEMBERS', KEYS[1])
for _, family in ipairs(families) do
  redis.call('SET', ARGV[1] .. family, 'r', 'KEEPTTL')
end
return #families
";

#[derive(Clone)]
pub struct SessionStore {
    redis: RedisStore,
    rotate: Script,
    revoke_user: Script,
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

impl SessionStore {
    pub fn new(redis: RedisStore) -> Self {
        Self {
            redis,
            rotate: Script::new(ROTATE),
            revoke_user: Script::new(REVOKE_USER),
            reserve_login: Script::new(RESERVE_LOGIN),
            release_login: Script::new(RELEASE_LOGIN),
        }
    }

    fn token_key(&self, token: &str) -> String {
        self.redis.key(&format!("auth:rt:{}", sha256_hex(token)))
    }

    fn family_prefix(&self) -> String {
        self.redis.key("auth:rf:")
    }

    fn user_families_prefix(&self) -> String {
        self.redis.key("auth:uf:")
    }

    pub fn channel(&self) -> String {
        self.redis.key("auth:revocations")
    }

    /// Starts a session: a new family with its first refresh token. Returns (family, token).
    pub async fn start(&self, user_id: &str, ttl: Duration) -> Result<(String, String), AuthError> {
        let family = uuid::Uuid::now_v7().to_string();
        let token = new_refresh_token();
        let ttl = secs(ttl);
        let user_families = format!("{}{user_id}", self.user_families_prefix());
        let mut connection = self.redis.connection();
        redis::pipe()
            .atomic()
            .hset_multiple(
                self.token_key(&token),
                &[("u", user_id), ("f", family.as_str()), ("s", "a")],
            )
            .ignore()
            .expire(self.token_key(&token), ttl as i64)
            .ignore()
            .set_ex(format!("{}{family}", self.family_prefix()), "a", ttl)
            .ignore()
            .sadd(&user_families, &family)
            .ignore()
            .expire(&user_families, ttl as i64)
            .ignore()
            .query_async::<()>(&mut connection)
            .await?;
        Ok((family, token))
    }

    /// Presents a refresh token: rotates it when active, revokes its family when reused.
    pub async fn refresh(&self, token: &str, ttl: Duration) -> Result<RefreshOutcome, AuthError> {
        let new_token = new_refresh_token();
        let mut connection = self.redis.connection();
        let answer: Vec<String> = self
            .rotate
            .key(self.token_key(token))
            .key(self.token_key(&new_token))
            .arg(secs(ttl))
            .arg(self.family_prefix())
            .arg(self.user_families_prefix())
            .invoke_async(&mut connection)
            .await?;
        Ok(match answer.as_slice() {
            [status, user_id, family] if status == "ok" => RefreshOutcome::Rotated {
                user_id: user_id.clone(),
                family: family.clone(),
                new_token,
            },
            [status, user_id, family] if status == "reused" => RefreshOutcome::Reused {
                user_id: user_id.clone(),
                family: family.clone(),
            },
            _ => RefreshOutcome::Invalid,
        })
    }

    /// The (user, family) a refresh token belongs to, if it is known.
    pub async fn refresh_token_owner(
        &self,
        token: &str,
    ) -> Result<Option<(String, String)>, AuthError> {
        let mut connection = self.redis.connection();
        let (user, family): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.token_key(token))
            .arg("u")
            .arg("f")
            .query_async(&mut connection)
            .await?;
        Ok(user.zip(family))
    }

    pub async fn revoke_family(&self, family: &str) -> Result<(), AuthError> {
        let mut connection = self.redis.connection();
        redis::cmd("SET")
            .arg(format!("{}{family}", self.family_prefix()))
            .arg("r")
            .arg("KEEPTTL")
            .arg("XX")
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// Revokes every session of a user; returns how many there were.
    pub async fn revoke_user(&self, user_id: &str) -> Result<u64, AuthError> {
        let mut connection = self.redis.connection();
        Ok(self
            .revoke_user
            .key(format!("{}{user_id}", self.user_families_prefix()))
            .arg(self.family_prefix())
            .invoke_async(&mut connection)
            .await?)
    }

    /// Deny-lists an access token until it would have expired anyway.
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
    pub async fn access_token_usable(
        &self,
        jti: &str,
        session_id: &str,
    ) -> Result<bool, AuthError> {
        let mut connection = self.redis.connection();
        let (denied, family): (Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(self.redis.key(&format!("auth:deny:{jti}")))
            .arg(format!("{}{session_id}", self.family_prefix()))
            .query_async(&mut connection)
            .await?;
        Ok(denied.is_none() && family.as_deref() == Some("a"))
    }

    /// The (account, address) and account counters of `email` from `address`.
    fn attempt_keys(&self, email: &str, address: &str) -> [String; 2] {
        let email = email.to_lowercase();
        [
            self.redis.key(&format!(
                "auth:fail:addr:{}",
                sha256_hex(&format!("{email}\n{address}"))
            )),
            self.redis
                .key(&format!("auth:fail:acct:{}", sha256_hex(&email))),
        ]
    }

    /// Counts a login attempt of `email` from `address` before its password is verified, unless
    /// the address has used up `limits.max_failures` or the account
    /// `limits.max_failures_per_account` in the window (which starts at the first attempt).
    pub async fn reserve_login_attempt(
        &self,
        email: &str,
        address: &str,
        limits: &LockoutConfig,
    ) -> Result<LoginAttempt, AuthError> {
        let [address_key, account_key] = self.attempt_keys(email, address);
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
    pub async fn release_login_attempt(&self, email: &str, address: &str) -> Result<(), AuthError> {
        self.release(email, address, "release").await
    }

    /// A successful login from `address`: that address's failures are forgotten, and the account
    /// counter gives back this attempt only.
    pub async fn login_succeeded(&self, email: &str, address: &str) -> Result<(), AuthError> {
        self.release(email, address, "clear").await
    }

    async fn release(&self, email: &str, address: &str, mode: &str) -> Result<(), AuthError> {
        let [address_key, account_key] = self.attempt_keys(email, address);
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
        let message = serde_json::to_string(revocation)
            .map_err(|e| AuthError::Internal(format!("encode revocation: {e}")))?;
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
