//! The auth domain's types, free of transport and store types.

use chrono::{DateTime, Utc};
pub use erp_platform::audit::{AuditEntry, AuditFilter};
pub use erp_platform::identity::Role;
pub use erp_platform::pagination::Page;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub username: Option<String>,
    pub roles: Vec<Role>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user with the secret fields only the service itself reads.
#[derive(Debug, Clone)]
pub struct StoredUser {
    pub user: User,
    pub password_hash: String,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub roles: Option<Vec<Role>>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
    /// `Some(None)` clears the username.
    pub username: Option<Option<String>>,
}

/// Tokens handed out by login and refresh.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub access_expires_in: std::time::Duration,
    pub refresh_token: String,
    pub refresh_expires_in: std::time::Duration,
    pub user: User,
}

/// What introspection found out about an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    Active {
        user: User,
        jti: String,
        session_id: String,
        expires_at: DateTime<Utc>,
    },
    Inactive {
        reason: InactiveReason,
        user_id: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InactiveReason {
    Malformed,
    BadSignature,
    InvalidClaims,
    Expired,
    Revoked,
    UserNotFound,
    UserDisabled,
}

/// Filters of the user listing.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub q: Option<String>,
}

/// The system's own identity in audit records (bootstrap, background work).
pub const SYSTEM_ACTOR: &str = "system";
