//! The gRPC messages to and from the domain's types, one conversion each. Roles and audit
//! entries are converted by erp-platform, which owns both their sides.

use erp_proto::auth::v1 as pb;
use erp_proto::time::timestamp;

use crate::error::AuthError;
use crate::model::{
    ClientToken, InactiveReason, Introspection, Role, ServiceAccount, ServiceAccountCredentials,
    Session, Subject, User, UserFilter,
};
use crate::service::{NewAccount, NewServiceAccount, UserChanges};

fn role_from_pb(value: i32, field: &str) -> Result<Role, AuthError> {
    Role::from_pb(value)
        .ok_or_else(|| AuthError::field(field, "must be USER, OPERATOR, AUDITOR or ADMIN"))
}

fn roles_from_pb(roles: &[i32], field: &str) -> Result<Vec<Role>, AuthError> {
    roles
        .iter()
        .map(|&value| role_from_pb(value, field))
        .collect()
}

impl From<&User> for pb::User {
    fn from(user: &User) -> Self {
        pb::User {
            id: user.id.clone(),
            email: user.email.clone(),
            username: user.username.clone(),
            roles: user.roles.iter().copied().map(Role::to_pb).collect(),
            disabled: user.disabled,
            created_at: Some(timestamp(user.created_at)),
            updated_at: Some(timestamp(user.updated_at)),
        }
    }
}

/// A user as the optional field of a response.
pub(crate) fn user(user: &User) -> Option<pb::User> {
    Some(user.into())
}

fn seconds(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The token type of every session.
const BEARER: &str = "Bearer";

impl From<Session> for pb::LoginResponse {
    fn from(session: Session) -> Self {
        pb::LoginResponse {
            access_token: session.access_token,
            refresh_token: session.refresh_token,
            token_type: BEARER.to_owned(),
            expires_in: seconds(session.access_expires_in),
            user: user(&session.user),
            refresh_expires_in: seconds(session.refresh_expires_in),
        }
    }
}

impl From<Session> for pb::RefreshResponse {
    fn from(session: Session) -> Self {
        // The same message under another name: one conversion, not two.
        let login = pb::LoginResponse::from(session);
        pb::RefreshResponse {
            access_token: login.access_token,
            refresh_token: login.refresh_token,
            token_type: login.token_type,
            expires_in: login.expires_in,
            user: login.user,
            refresh_expires_in: login.refresh_expires_in,
        }
    }
}

impl From<InactiveReason> for pb::InactiveReason {
    fn from(reason: InactiveReason) -> Self {
        match reason {
            InactiveReason::Malformed => pb::InactiveReason::Malformed,
            InactiveReason::BadSignature => pb::InactiveReason::BadSignature,
            InactiveReason::InvalidClaims => pb::InactiveReason::InvalidClaims,
            InactiveReason::Expired => pb::InactiveReason::Expired,
            InactiveReason::Revoked => pb::InactiveReason::Revoked,
            InactiveReason::UserNotFound => pb::InactiveReason::UserNotFound,
            InactiveReason::UserDisabled => pb::InactiveReason::UserDisabled,
        }
    }
}

impl From<Introspection> for pb::IntrospectResponse {
    fn from(introspection: Introspection) -> Self {
        match introspection {
            Introspection::Active {
                subject,
                jti,
                session_id,
                expires_at,
            } => {
                let (user_id, email, roles, disabled) = match subject {
                    Subject::Person(user) => (user.id, Some(user.email), user.roles, user.disabled),
                    Subject::ServiceAccount { id } => (id, None, vec![Role::GameServer], false),
                };
                pb::IntrospectResponse {
                    active: true,
                    roles: roles.into_iter().map(Role::to_pb).collect(),
                    disabled,
                    user_id: Some(user_id),
                    email,
                    jti: Some(jti),
                    expires_at: Some(timestamp(expires_at)),
                    inactive_reason: pb::InactiveReason::Unspecified as i32,
                    session_id: Some(session_id),
                }
            }
            Introspection::Inactive { reason, user_id } => pb::IntrospectResponse {
                active: false,
                user_id,
                inactive_reason: pb::InactiveReason::from(reason) as i32,
                ..Default::default()
            },
        }
    }
}

impl TryFrom<pb::CreateUserRequest> for NewAccount {
    type Error = AuthError;

    fn try_from(body: pb::CreateUserRequest) -> Result<Self, AuthError> {
        Ok(NewAccount {
            roles: roles_from_pb(&body.roles, "roles")?,
            email: body.email,
            password: body.password,
            username: body.username,
        })
    }
}

impl TryFrom<&pb::ListUsersRequest> for UserFilter {
    type Error = AuthError;

    fn try_from(body: &pb::ListUsersRequest) -> Result<Self, AuthError> {
        Ok(UserFilter {
            role: body
                .role
                .map(|value| role_from_pb(value, "role"))
                .transpose()?,
            q: body.q.clone(),
        })
    }
}

impl TryFrom<pb::UpdateUserRequest> for UserChanges {
    type Error = AuthError;

    fn try_from(body: pb::UpdateUserRequest) -> Result<Self, AuthError> {
        Ok(UserChanges {
            roles: body
                .roles
                .map(|set| roles_from_pb(&set.roles, "roles"))
                .transpose()?,
            disabled: body.disabled,
            password: body.password,
            // An empty username clears it.
            username: body
                .username
                .map(|name| if name.is_empty() { None } else { Some(name) }),
        })
    }
}

impl From<&ServiceAccount> for pb::ServiceAccount {
    fn from(account: &ServiceAccount) -> Self {
        pb::ServiceAccount {
            id: account.id.clone(),
            name: account.name.clone(),
            description: account.description.clone(),
            client_id: account.client_id.clone(),
            created_at: Some(timestamp(account.created_at)),
        }
    }
}

impl From<ServiceAccountCredentials> for pb::ServiceAccountCredentials {
    fn from(credentials: ServiceAccountCredentials) -> Self {
        pb::ServiceAccountCredentials {
            service_account: Some((&credentials.account).into()),
            client_secret: credentials.client_secret,
        }
    }
}

impl From<pb::CreateServiceAccountRequest> for NewServiceAccount {
    fn from(body: pb::CreateServiceAccountRequest) -> Self {
        NewServiceAccount {
            name: body.name,
            description: body.description,
        }
    }
}

impl From<ClientToken> for pb::IssueClientTokenResponse {
    fn from(token: ClientToken) -> Self {
        pb::IssueClientTokenResponse {
            access_token: token.access_token,
            token_type: BEARER.to_owned(),
            expires_in: seconds(token.expires_in),
        }
    }
}

pub(crate) fn jwks(keys: &crate::keys::KeyRing) -> pb::GetSigningKeysResponse {
    pb::GetSigningKeysResponse {
        keys: keys
            .public_keys()
            .iter()
            .map(|key| pb::Jwk {
                kid: key.kid.clone(),
                kty: "OKP".to_owned(),
                alg: "EdDSA".to_owned(),
                key_use: "sig".to_owned(),
                crv: Some("Ed25519".to_owned()),
                x: Some(key.x.clone()),
                y: None,
                n: None,
                e: None,
            })
            .collect(),
        current_kid: keys.current_kid().to_owned(),
    }
}
