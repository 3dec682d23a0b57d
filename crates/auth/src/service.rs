//! The auth domain: accounts, sessions and introspection. Transport calls in here with plain
//! values; this module decides, and the stores persist.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use erp_platform::client_address::limit_subject;
use erp_platform::error::FieldError;
use erp_platform::identity::Caller;
use erp_platform::pagination::{Cursor, page_request};
use moka::future::Cache;
use serde_json::json;
use tokio::sync::Notify;

use secrecy::ExposeSecret;

use crate::access::{FindPeople, Granted, ManageUsers, ReadAudit};
use crate::config::{BootstrapAdmin, LockoutConfig};
use crate::error::AuthError;
use crate::metrics::AuthMetrics;
use crate::model::{
    AuditEntry, AuditFilter, InactiveReason, Introspection, Page, Role, SYSTEM_ACTOR, Session,
    StoredUser, Subject, User, UserFilter, UserPatch,
};
use crate::password::{PasswordHasher, check_policy};
use crate::store::{
    AuthStore, LockoutSubject, LoginAttempt, OutboxItem, RefreshOutcome, Revocation, SessionStore,
};
use crate::tokens::TokenIssuer;

mod service_accounts;

pub use service_accounts::NewServiceAccount;

pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_USERNAME_CHARS: usize = 64;

/// The most ids one `FindActiveUsers` call may ask about (a grant's most users).
pub const MAX_FIND_ACTIVE_IDS: usize = 1000;

/// The lockout key of a login whose client address is not known.
pub const UNKNOWN_ADDRESS: &str = "unknown";

/// The client address as lockouts count it ([`limit_subject`]), or [`UNKNOWN_ADDRESS`].
pub fn lockout_address(client_ip: Option<IpAddr>) -> String {
    client_ip.map_or_else(|| UNKNOWN_ADDRESS.to_owned(), limit_subject)
}

/// A new account's fields, as the caller sent them.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: String,
    pub password: String,
    pub username: Option<String>,
    pub roles: Vec<Role>,
}

/// Changes an admin asks for; `password` in plain text, hashed here.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub roles: Option<Vec<Role>>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
    pub username: Option<Option<String>>,
}

pub struct AuthService {
    store: AuthStore,
    sessions: SessionStore,
    hasher: PasswordHasher,
    tokens: TokenIssuer,
    lockout: LockoutConfig,
    refresh_ttl: Duration,
    /// Users as introspection last read them; evicted on every change (here and, through the
    /// revocation channel, in other replicas).
    users: Cache<String, Option<User>>,
    /// Service accounts as introspection last read them: the id of their current secret (`None`:
    /// no such account). Evicted like `users`, by the same id.
    service_account_secrets: Cache<String, Option<String>>,
    /// Bumped by every eviction from `users` or `service_account_secrets`: a load that started
    /// before an eviction is not left in the cache after it (it may have read the subject before
    /// the change).
    users_epoch: AtomicU64,
    metrics: AuthMetrics,
    outbox_wakeup: Arc<Notify>,
}

/// Basic shape check of an email address; the account is the proof of ownership, so this only
/// refuses what can never be an address.
pub fn check_email(email: &str) -> Result<(), String> {
    let chars = email.chars().count();
    if chars == 0 {
        return Err("must not be empty".into());
    }
    if chars > MAX_EMAIL_CHARS {
        return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("is not an email address".into());
    };
    let valid = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(())
    } else {
        Err("is not an email address".into())
    }
}

fn check_username(username: &str) -> Result<(), String> {
    let chars = username.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        Err(format!("must be 1 to {MAX_USERNAME_CHARS} characters"))
    } else if username.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

fn check_roles(roles: &[Role]) -> Result<(), String> {
    if roles.is_empty() {
        Err("must hold at least one role".into())
    } else if let Some(role) = roles.iter().find(|role| !role.is_for_people()) {
        Err(format!(
            "{} belongs to service accounts only, never to a person",
            role.as_str()
        ))
    } else {
        Ok(())
    }
}

/// Roles once each, in a stable order.
fn normalise_roles(mut roles: Vec<Role>) -> Vec<Role> {
    roles.sort();
    roles.dedup();
    roles
}

fn audit_view(user: &User) -> serde_json::Value {
    json!({
        "email": user.email,
        "username": user.username,
        "roles": user.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "disabled": user.disabled,
    })
}

fn audit_entry(
    actor_id: &str,
    action: &str,
    user_id: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> AuditEntry {
    AuditEntry::new(actor_id, action, "user", user_id, before, after)
}

impl AuthService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: AuthStore,
        sessions: SessionStore,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        lockout: LockoutConfig,
        refresh_ttl: Duration,
        user_cache_ttl: Duration,
        metrics: AuthMetrics,
        outbox_wakeup: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            sessions,
            hasher,
            tokens,
            lockout,
            refresh_ttl,
            users: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(user_cache_ttl)
                .build(),
            service_account_secrets: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(user_cache_ttl)
                .build(),
            users_epoch: AtomicU64::new(0),
            metrics,
            outbox_wakeup,
        }
    }

    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    async fn validate_new_account(&self, account: &NewAccount) -> Result<(), AuthError> {
        let mut errors = Vec::new();
        if let Err(message) = check_email(&account.email) {
            errors.push(FieldError::new("email", message));
        }
        if let Err(message) = check_policy(&account.password) {
            errors.push(FieldError::new("password", message));
        }
        if let Some(username) = &account.username
            && let Err(message) = check_username(username)
        {
            errors.push(FieldError::new("username", message));
        }
        if let Err(message) = check_roles(&account.roles) {
            errors.push(FieldError::new("roles", message));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AuthError::Validation(errors))
        }
    }

    /// Creates an account. `actor` is who creates it (`None`: the new user, registering).
    async fn create_account(
        &self,
        account: NewAccount,
        actor: Option<&str>,
    ) -> Result<User, AuthError> {
        let (stored, audit) = self.prepare_account(account, actor).await?;
        self.store.insert_user(&stored, &audit).await?;
        Ok(stored.user)
    }

    /// A new account, validated and hashed, with its `USER_CREATED` record; not yet stored.
    async fn prepare_account(
        &self,
        account: NewAccount,
        actor: Option<&str>,
    ) -> Result<(StoredUser, AuditEntry), AuthError> {
        self.validate_new_account(&account).await?;
        let password_hash = self.hasher.hash(account.password).await?;
        let now = Utc::now();
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            email: account.email.trim().to_owned(),
            username: account.username,
            roles: normalise_roles(account.roles),
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        let audit = audit_entry(
            actor.unwrap_or(&user.id),
            "USER_CREATED",
            &user.id,
            None,
            Some(audit_view(&user)),
        );
        Ok((
            StoredUser {
                user,
                password_hash,
            },
            audit,
        ))
    }

    /// Self-registration: always exactly the `USER` role.
    pub async fn register(
        &self,
        email: String,
        password: String,
        username: Option<String>,
    ) -> Result<User, AuthError> {
        self.create_account(
            NewAccount {
                email,
                password,
                username,
                roles: vec![Role::User],
            },
            None,
        )
        .await
    }

    /// An admin creates an account with any roles.
    pub async fn create_user(
        &self,
        admin: &Granted<ManageUsers>,
        account: NewAccount,
    ) -> Result<User, AuthError> {
        self.create_account(account, Some(&admin.caller().user_id))
            .await
    }

    /// Creates the configured admin at most once in the life of the deployment: only while no
    /// user holds ADMIN and the `bootstrap_admin_created` marker is not recorded. The marker is
    /// written in the admin's own transaction, so a deleted bootstrap admin is never re-created at
    /// a restart, and two replicas starting together create one. A deployment that already has an
    /// admin (bootstrapped before the marker existed) records the marker and creates nothing.
    pub async fn ensure_bootstrap_admin(&self, admin: &BootstrapAdmin) -> Result<bool, AuthError> {
        if self.store.bootstrap_admin_recorded().await? {
            return Ok(false);
        }
        if self.store.any_admin().await? {
            self.store.record_bootstrap_admin_marker().await?;
            return Ok(false);
        }
        if self.store.find_by_email(&admin.email).await?.is_some() {
            tracing::warn!(
                email = %admin.email,
                "no admin exists, but ERP_BOOTSTRAP_ADMIN_EMAIL belongs to an account that is not \
                 an admin: no bootstrap admin created"
            );
            return Ok(false);
        }
        let (stored, audit) = self
            .prepare_account(
                NewAccount {
                    email: admin.email.clone(),
                    password: admin.password.expose_secret().to_owned(),
                    username: Some("admin".to_owned()),
                    roles: vec![Role::Admin],
                },
                Some(SYSTEM_ACTOR),
            )
            .await?;
        self.store.insert_bootstrap_admin(&stored, &audit).await
    }

    /// Logs in with email and password. `client_ip` is the end client's address as the gateway
    /// asserted it (lockouts count per account and address; `None` counts as `unknown`).
    pub async fn login(
        &self,
        email: String,
        password: String,
        client_ip: Option<IpAddr>,
    ) -> Result<Session, AuthError> {
        let mut errors = Vec::new();
        if email.trim().is_empty() {
            errors.push(FieldError::new("email", "must not be empty"));
        }
        if password.is_empty() {
            errors.push(FieldError::new("password", "must not be empty"));
        }
        if !errors.is_empty() {
            self.metrics
                .logins
                .with_label_values(&["invalid_request"])
                .inc();
            return Err(AuthError::Validation(errors));
        }
        let email = email.trim().to_owned();
        let address = lockout_address(client_ip);
        // The attempt is counted before the password is looked at, atomically, so parallel
        // guesses cannot all slip under the limit; locked accounts are refused the same whether or
        // not they exist.
        if let LoginAttempt::Refused { retry_after } = self
            .sessions
            .reserve_login_attempt(LockoutSubject::Email(&email), &address, &self.lockout)
            .await?
        {
            self.metrics.logins.with_label_values(&["locked_out"]).inc();
            return Err(AuthError::TooManyAttempts {
                retry_after: retry_after.max(Duration::from_secs(1)),
            });
        }
        let checked = async {
            let stored = self.store.find_by_email(&email).await?;
            let matches = self
                .hasher
                .verify(password, stored.as_ref().map(|s| s.password_hash.clone()))
                .await?;
            Ok::<_, AuthError>(stored.filter(|_| matches))
        }
        .await;
        let stored = match checked {
            Ok(stored) => stored,
            Err(error) => {
                // Nothing was verified: the attempt does not count.
                if let Err(release) = self
                    .sessions
                    .release_login_attempt(LockoutSubject::Email(&email), &address)
                    .await
                {
                    tracing::warn!(error = %release, "login attempt not released");
                }
                if matches!(error, AuthError::Overloaded { .. }) {
                    self.metrics.logins.with_label_values(&["overloaded"]).inc();
                }
                return Err(error);
            }
        };
        let Some(stored) = stored else {
            // The reserved attempt stays counted: it is the failure.
            self.metrics
                .logins
                .with_label_values(&["invalid_credentials"])
                .inc();
            return Err(AuthError::InvalidCredentials);
        };
        self.sessions
            .login_succeeded(LockoutSubject::Email(&email), &address)
            .await?;
        if stored.user.disabled {
            self.metrics.logins.with_label_values(&["disabled"]).inc();
            return Err(AuthError::AccountDisabled);
        }
        let user = stored.user;
        let now = Utc::now();
        self.store
            .record_login(
                &user.id,
                &OutboxItem {
                    id: uuid::Uuid::now_v7().to_string(),
                    user_id: user.id.clone(),
                    occurred_at: now,
                    attempts: 0,
                },
            )
            .await?;
        self.outbox_wakeup.notify_one();
        let (family, refresh_token) = self.sessions.start(&user.id, self.refresh_ttl).await?;
        let session = self.session_for(user, &family, refresh_token)?;
        self.metrics.logins.with_label_values(&["success"]).inc();
        Ok(session)
    }

    fn session_for(
        &self,
        user: User,
        family: &str,
        refresh_token: String,
    ) -> Result<Session, AuthError> {
        let (access_token, _) = self
            .tokens
            .issue(&user.id, &user.roles, family, Utc::now())?;
        self.metrics.tokens_issued.inc();
        Ok(Session {
            access_token,
            access_expires_in: self.tokens.ttl(),
            refresh_token,
            refresh_expires_in: self.refresh_ttl,
            user,
        })
    }

    pub async fn refresh(&self, refresh_token: String) -> Result<Session, AuthError> {
        if refresh_token.is_empty() {
            self.metrics.refreshes.with_label_values(&["invalid"]).inc();
            return Err(AuthError::InvalidRefreshToken);
        }
        match self
            .sessions
            .refresh(&refresh_token, self.refresh_ttl)
            .await?
        {
            RefreshOutcome::Invalid => {
                self.metrics.refreshes.with_label_values(&["invalid"]).inc();
                Err(AuthError::InvalidRefreshToken)
            }
            RefreshOutcome::Reused { user_id, family } => {
                self.metrics.refreshes.with_label_values(&["reused"]).inc();
                tracing::warn!(
                    user_id,
                    session_id = family,
                    "refresh token reused; session revoked"
                );
                self.sessions
                    .publish(&Revocation::Session { session_id: family })
                    .await?;
                Err(AuthError::RefreshTokenReused)
            }
            RefreshOutcome::Rotated {
                user_id,
                family,
                new_token,
            } => {
                let user = match self.store.find_by_id(&user_id).await? {
                    Some(stored) if !stored.user.disabled => stored.user,
                    found => {
                        self.sessions.revoke_family(&family).await?;
                        let disabled = found.is_some();
                        self.metrics
                            .refreshes
                            .with_label_values(&[if disabled { "disabled" } else { "invalid" }])
                            .inc();
                        return Err(if disabled {
                            AuthError::AccountDisabled
                        } else {
                            AuthError::InvalidRefreshToken
                        });
                    }
                };
                let session = self.session_for(user, &family, new_token)?;
                self.metrics.refreshes.with_label_values(&["success"]).inc();
                Ok(session)
            }
        }
    }

    /// Ends the session of `access_token` (and of `refresh_token`, if given and the caller's).
    pub async fn logout(
        &self,
        caller: &Caller,
        access_token: &str,
        refresh_token: Option<&str>,
    ) -> Result<(), AuthError> {
        let claims = self
            .tokens
            .verify(access_token)
            .map_err(|_| AuthError::Unauthenticated)?;
        // A service account's token ends with its secret (rotation or deletion), not by logout.
        if claims.sub != caller.user_id || claims.is_client() {
            return Err(AuthError::Forbidden);
        }
        let remaining = (claims.expires_at() - Utc::now())
            .to_std()
            .unwrap_or(Duration::from_secs(1));
        self.sessions
            .deny_access_token(&claims.jti, remaining)
            .await?;
        self.sessions.revoke_family(&claims.sid).await?;
        if let Some(token) = refresh_token.filter(|t| !t.is_empty())
            && let Some((owner, family)) = self.sessions.refresh_token_owner(token).await?
            && owner == caller.user_id
            && family != claims.sid
        {
            self.sessions.revoke_family(&family).await?;
            self.sessions
                .publish(&Revocation::Session { session_id: family })
                .await?;
        }
        self.sessions
            .publish(&Revocation::Token {
                jti: claims.jti.clone(),
            })
            .await?;
        self.sessions
            .publish(&Revocation::Session {
                session_id: claims.sid,
            })
            .await?;
        Ok(())
    }

    /// `key`'s entry of `cache`, or what `load` reads, cached unless an eviction happened while
    /// it read.
    async fn cached<V>(
        &self,
        cache: &Cache<String, V>,
        key: &str,
        load: impl Future<Output = Result<V, AuthError>>,
    ) -> Result<V, AuthError>
    where
        V: Clone + Send + Sync + 'static,
    {
        if let Some(cached) = cache.get(key).await {
            return Ok(cached);
        }
        let epoch = self.users_epoch.load(Ordering::SeqCst);
        let value = load.await?;
        if self.users_epoch.load(Ordering::SeqCst) == epoch {
            cache.insert(key.to_owned(), value.clone()).await;
            // An eviction between the check and the insert: undo the insert.
            if self.users_epoch.load(Ordering::SeqCst) != epoch {
                cache.invalidate(key).await;
            }
        }
        Ok(value)
    }

    /// The user as introspection sees it, from the cache or the store.
    async fn current_user(&self, user_id: &str) -> Result<Option<User>, AuthError> {
        self.cached(&self.users, user_id, async {
            Ok(self.store.find_by_id(user_id).await?.map(|s| s.user))
        })
        .await
    }

    /// Evicts a user or service account from the introspection caches (after a local change or
    /// a revocation message, which names either by the id its tokens carry as subject).
    pub async fn forget_user(&self, user_id: &str) {
        self.users_epoch.fetch_add(1, Ordering::SeqCst);
        self.users.invalidate(user_id).await;
        self.service_account_secrets.invalidate(user_id).await;
    }

    /// Evicts every cached user and service account (the revocation channel was reconnected:
    /// messages may be lost).
    pub fn forget_all_users(&self) {
        self.users_epoch.fetch_add(1, Ordering::SeqCst);
        self.users.invalidate_all();
        self.service_account_secrets.invalidate_all();
    }

    pub async fn introspect(&self, access_token: &str) -> Result<Introspection, AuthError> {
        let outcome = self.introspect_inner(access_token).await;
        let label = match &outcome {
            Ok(Introspection::Active { .. }) => "active",
            Ok(Introspection::Inactive { reason, .. }) => match reason {
                InactiveReason::Malformed => "malformed",
                InactiveReason::BadSignature => "bad_signature",
                InactiveReason::InvalidClaims => "invalid_claims",
                InactiveReason::Expired => "expired",
                InactiveReason::Revoked => "revoked",
                InactiveReason::UserNotFound => "user_not_found",
                InactiveReason::UserDisabled => "user_disabled",
            },
            Err(_) => "error",
        };
        self.metrics
            .introspections
            .with_label_values(&[label])
            .inc();
        outcome
    }

    async fn introspect_inner(&self, access_token: &str) -> Result<Introspection, AuthError> {
        let claims = match self.tokens.verify(access_token) {
            Ok(claims) => claims,
            Err(reason) => {
                return Ok(Introspection::Inactive {
                    reason,
                    user_id: None,
                });
            }
        };
        let inactive = |reason| {
            Ok(Introspection::Inactive {
                reason,
                user_id: Some(claims.sub.clone()),
            })
        };
        if claims.is_client() {
            // A service account's token lives as long as the secret it was issued from: no
            // session, no Redis round trip once the account's current secret is cached.
            return match self.current_secret_id(&claims.sub).await? {
                None => inactive(InactiveReason::UserNotFound),
                Some(secret_id) if secret_id != claims.sid => inactive(InactiveReason::Revoked),
                Some(_) => Ok(Introspection::Active {
                    expires_at: claims.expires_at(),
                    subject: Subject::ServiceAccount {
                        id: claims.sub.clone(),
                    },
                    jti: claims.jti.clone(),
                    session_id: claims.sid.clone(),
                }),
            };
        }
        let Some(user) = self.current_user(&claims.sub).await? else {
            return inactive(InactiveReason::UserNotFound);
        };
        if user.disabled {
            return inactive(InactiveReason::UserDisabled);
        }
        if !self
            .sessions
            .access_token_usable(&claims.jti, &claims.sid)
            .await?
        {
            return inactive(InactiveReason::Revoked);
        }
        Ok(Introspection::Active {
            expires_at: claims.expires_at(),
            jti: claims.jti,
            session_id: claims.sid,
            subject: Subject::Person(user),
        })
    }

    /// The caller's own account.
    pub async fn me(&self, caller: &Caller) -> Result<User, AuthError> {
        self.find_user(&caller.user_id).await
    }

    pub async fn get_user(
        &self,
        _admin: &Granted<ManageUsers>,
        id: &str,
    ) -> Result<User, AuthError> {
        self.find_user(id).await
    }

    async fn find_user(&self, id: &str) -> Result<User, AuthError> {
        self.store
            .find_by_id(id)
            .await?
            .map(|s| s.user)
            .ok_or(AuthError::NotFound)
    }

    pub async fn list_users(
        &self,
        _admin: &Granted<ManageUsers>,
        filter: UserFilter,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<User>, AuthError> {
        let (limit, cursor) = paging(limit, cursor)?;
        self.store.list_users(&filter, limit, cursor.as_ref()).await
    }

    pub async fn update_user(
        &self,
        admin: &Granted<ManageUsers>,
        id: &str,
        changes: UserChanges,
    ) -> Result<User, AuthError> {
        let caller = admin.caller();
        // An admin cannot lock themselves out (disable, or drop their own ADMIN role): someone
        // must always be left to manage accounts.
        let removes_own_admin = caller.user_id == id
            && (changes.disabled == Some(true)
                || changes
                    .roles
                    .as_ref()
                    .is_some_and(|roles| !roles.contains(&Role::Admin)));
        if removes_own_admin {
            return Err(AuthError::SelfLockout);
        }
        let mut errors = Vec::new();
        if let Some(roles) = &changes.roles
            && let Err(message) = check_roles(roles)
        {
            errors.push(FieldError::new("roles", message));
        }
        if let Some(password) = &changes.password
            && let Err(message) = check_policy(password)
        {
            errors.push(FieldError::new("password", message));
        }
        if let Some(Some(username)) = &changes.username
            && let Err(message) = check_username(username)
        {
            errors.push(FieldError::new("username", message));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let password_changed = changes.password.is_some();
        let password_hash = match changes.password {
            Some(password) => Some(self.hasher.hash(password).await?),
            None => None,
        };
        let patch = UserPatch {
            roles: changes.roles.map(normalise_roles),
            disabled: changes.disabled,
            password_hash,
            username: changes.username,
        };
        let actor = caller.user_id.clone();
        let (before, after) = self
            .store
            .update_user(id, &patch, Utc::now(), |before, after| {
                let mut after_view = audit_view(after);
                if password_changed {
                    after_view["passwordChanged"] = json!(true);
                }
                audit_entry(
                    &actor,
                    "USER_UPDATED",
                    id,
                    Some(audit_view(before)),
                    Some(after_view),
                )
            })
            .await?;
        self.forget_user(id).await;
        if after.disabled || password_changed {
            self.sessions.revoke_user(id).await?;
        }
        if before.roles != after.roles || before.disabled != after.disabled || password_changed {
            self.sessions
                .publish(&Revocation::User {
                    user_id: id.to_owned(),
                })
                .await?;
        }
        Ok(after)
    }

    pub async fn delete_user(
        &self,
        admin: &Granted<ManageUsers>,
        id: &str,
    ) -> Result<(), AuthError> {
        let caller = admin.caller();
        if caller.user_id == id {
            return Err(AuthError::SelfLockout);
        }
        let actor = caller.user_id.clone();
        self.store
            .delete_user(id, |user| {
                audit_entry(&actor, "USER_DELETED", id, Some(audit_view(user)), None)
            })
            .await?;
        self.forget_user(id).await;
        self.sessions.revoke_user(id).await?;
        self.sessions
            .publish(&Revocation::User {
                user_id: id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Which of `ids` are existing, enabled people, in one store query.
    pub async fn find_active_users(
        &self,
        _operator: &Granted<FindPeople>,
        mut ids: Vec<String>,
    ) -> Result<Vec<String>, AuthError> {
        if ids.len() > MAX_FIND_ACTIVE_IDS {
            return Err(AuthError::field(
                "ids",
                &format!("must name at most {MAX_FIND_ACTIVE_IDS} ids"),
            ));
        }
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| !id.is_empty());
        self.store.find_active_user_ids(&ids).await
    }

    pub async fn list_audit(
        &self,
        _auditor: &Granted<ReadAudit>,
        filter: AuditFilter,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<AuditEntry>, AuthError> {
        let (limit, cursor) = paging(limit, cursor)?;
        self.store.list_audit(&filter, limit, cursor.as_ref()).await
    }
}

fn paging(limit: u32, cursor: &str) -> Result<(u32, Option<Cursor>), AuthError> {
    page_request(limit, cursor).map_err(AuthError::Validation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_for_shape() {
        assert!(check_email("player@example.com").is_ok());
        assert!(check_email("Player.One+tag@sub.example.org").is_ok());
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@@b.com",
            "a@.com",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert!(check_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn lockouts_count_ipv4_addresses_and_ipv6_networks() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(lockout_address(None), "unknown");
        assert_eq!(lockout_address(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(lockout_address(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(
            lockout_address(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            lockout_address(ip("2001:db8:1:2::1")),
            lockout_address(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            lockout_address(ip("2001:db8:1:2::1")),
            lockout_address(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn roles_are_deduplicated_and_ordered() {
        assert_eq!(
            normalise_roles(vec![Role::Admin, Role::User, Role::Admin]),
            vec![Role::User, Role::Admin]
        );
        assert!(check_roles(&[]).is_err());
    }
}
