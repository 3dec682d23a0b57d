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
        subject: Subject,
        jti: String,
        session_id: String,
        expires_at: DateTime<Utc>,
    },
    Inactive {
        reason: InactiveReason,
        user_id: Option<String>,
    },
}

/// Whom an active access token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A person, as the store knows them now.
    Person(User),
    /// A service account (client-credentials token): always and only the `GAME_SERVER` role.
    ServiceAccount { id: String },
}

impl Subject {
    pub fn id(&self) -> &str {
        match self {
            Subject::Person(user) => &user.id,
            Subject::ServiceAccount { id } => id,
        }
    }
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

/// A game server's account (REST `ServiceAccount`): what admins see of it. Never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The subject of its tokens.
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// The public OAuth `client_id` it authenticates with.
    pub client_id: String,
    pub created_at: DateTime<Utc>,
}

/// What is kept of a service account's current secret: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// Names this secret (a new one at every rotation); tokens issued from it carry it as their
    /// `sid`, so a rotation makes them inactive.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
}

/// A service account with the fields only the service itself reads.
#[derive(Debug, Clone)]
pub struct StoredServiceAccount {
    pub account: ServiceAccount,
    pub secret: StoredSecret,
}

/// A service account with its secret in plain text: the answer of create and rotate-secret, the
/// only time the secret is ever shown.
#[derive(Debug, Clone)]
pub struct ServiceAccountCredentials {
    pub account: ServiceAccount,
    pub client_secret: String,
}

/// An access token issued to a service account (RFC 6749 §4.4 client credentials).
#[derive(Debug, Clone)]
pub struct ClientToken {
    pub access_token: String,
    pub expires_in: std::time::Duration,
}
