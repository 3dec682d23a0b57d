//! The gRPC face of the auth service: decodes requests, checks the caller from metadata, calls
//! the domain and encodes answers. Errors leave as statuses built by the platform's error table.

use std::sync::Arc;

use erp_platform::identity::{Caller, VerifiedCall};
use erp_proto::auth::v1 as pb;
use erp_proto::auth::v1::auth_service_server::AuthService as AuthRpc;
pub use erp_proto::time::{from_timestamp, timestamp};
use tonic::{Request, Response, Status};

use crate::error::AuthError;
use crate::model::{self, InactiveReason, Introspection, Role};
use crate::service::{AuthService, NewAccount, UserChanges};

pub struct AuthGrpc {
    service: Arc<AuthService>,
}

impl AuthGrpc {
    pub fn new(service: Arc<AuthService>) -> Self {
        Self { service }
    }
}

fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::User => pb::Role::User,
        Role::Operator => pb::Role::Operator,
        Role::Auditor => pb::Role::Auditor,
        Role::Admin => pb::Role::Admin,
    }
}

fn roles_from_pb(roles: &[i32], field: &str) -> Result<Vec<Role>, AuthError> {
    roles
        .iter()
        .map(|&value| match pb::Role::try_from(value) {
            Ok(pb::Role::User) => Ok(Role::User),
            Ok(pb::Role::Operator) => Ok(Role::Operator),
            Ok(pb::Role::Auditor) => Ok(Role::Auditor),
            Ok(pb::Role::Admin) => Ok(Role::Admin),
            _ => Err(AuthError::field(
                field,
                "must be USER, OPERATOR, AUDITOR or ADMIN",
            )),
        })
        .collect()
}

pub fn user_to_pb(user: &model::User) -> pb::User {
    pb::User {
        id: user.id.clone(),
        email: user.email.clone(),
        username: user.username.clone(),
        roles: user.roles.iter().map(|&r| role_to_pb(r) as i32).collect(),
        disabled: user.disabled,
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
    }
}

fn session_parts(session: model::Session) -> (String, String, i64, pb::User, i64) {
    (
        session.access_token,
        session.refresh_token,
        i64::try_from(session.access_expires_in.as_secs()).unwrap_or(i64::MAX),
        user_to_pb(&session.user),
        i64::try_from(session.refresh_expires_in.as_secs()).unwrap_or(i64::MAX),
    )
}

fn inactive_to_pb(reason: InactiveReason) -> pb::InactiveReason {
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

/// The person the verified caller assertion names; refuses anonymous calls.
fn caller<T>(request: &Request<T>) -> Result<Caller, AuthError> {
    VerifiedCall::of(request)
        .ok()
        .and_then(|call| call.caller.clone())
        .ok_or(AuthError::Unauthenticated)
}

/// The caller, who must hold one of `roles`.
fn caller_with<T>(request: &Request<T>, roles: &[Role]) -> Result<Caller, AuthError> {
    let caller = caller(request)?;
    if caller.has_any(roles) {
        Ok(caller)
    } else {
        Err(AuthError::Forbidden)
    }
}

fn audit_to_pb(entry: model::AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        id: entry.id,
        at: Some(timestamp(entry.at)),
        service: "auth".to_owned(),
        actor_id: entry.actor_id,
        action: entry.action,
        entity_type: entry.entity_type,
        entity_id: entry.entity_id,
        before_json: entry.before.map(|v| v.to_string()),
        after_json: entry.after.map(|v| v.to_string()),
        trace_id: entry.trace_id,
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AuthRpc for AuthGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> RpcResult<pb::RegisterResponse> {
        let body = request.into_inner();
        let user = self
            .service
            .register(body.email, body.password, body.username)
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> RpcResult<pb::LoginResponse> {
        // The client address the calling service signed, never the request body's field.
        let client_ip = VerifiedCall::of(&request)
            .ok()
            .and_then(|call| call.client_ip);
        let body = request.into_inner();
        let session = self
            .service
            .login(body.email, body.password, client_ip)
            .await?;
        let (access_token, refresh_token, expires_in, user, refresh_expires_in) =
            session_parts(session);
        Ok(Response::new(pb::LoginResponse {
            access_token,
            refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in,
            user: Some(user),
            refresh_expires_in,
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> RpcResult<pb::RefreshResponse> {
        let session = self
            .service
            .refresh(request.into_inner().refresh_token)
            .await?;
        let (access_token, refresh_token, expires_in, user, refresh_expires_in) =
            session_parts(session);
        Ok(Response::new(pb::RefreshResponse {
            access_token,
            refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in,
            user: Some(user),
            refresh_expires_in,
        }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> RpcResult<pb::LogoutResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        self.service
            .logout(&caller, &body.access_token, body.refresh_token.as_deref())
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn introspect(
        &self,
        request: Request<pb::IntrospectRequest>,
    ) -> RpcResult<pb::IntrospectResponse> {
        let answer = match self
            .service
            .introspect(&request.into_inner().access_token)
            .await?
        {
            Introspection::Active {
                user,
                jti,
                session_id,
                expires_at,
            } => pb::IntrospectResponse {
                active: true,
                user_id: Some(user.id.clone()),
                email: Some(user.email.clone()),
                roles: user.roles.iter().map(|&r| role_to_pb(r) as i32).collect(),
                disabled: user.disabled,
                jti: Some(jti),
                expires_at: Some(timestamp(expires_at)),
                inactive_reason: pb::InactiveReason::Unspecified as i32,
                session_id: Some(session_id),
            },
            Introspection::Inactive { reason, user_id } => pb::IntrospectResponse {
                active: false,
                user_id,
                inactive_reason: inactive_to_pb(reason) as i32,
                ..Default::default()
            },
        };
        Ok(Response::new(answer))
    }

    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> RpcResult<pb::GetSigningKeysResponse> {
        let keys = self.service.tokens().keys();
        Ok(Response::new(pb::GetSigningKeysResponse {
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
        }))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> RpcResult<pb::GetMeResponse> {
        // The caller in metadata, never an id from the body.
        let caller = caller(&request)?;
        let user = self.service.get_user(&caller.user_id).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> RpcResult<pb::CreateUserResponse> {
        let caller = caller_with(&request, &[Role::Admin])?;
        let body = request.into_inner();
        let roles = roles_from_pb(&body.roles, "roles")?;
        let user = self
            .service
            .create_user(
                &caller,
                NewAccount {
                    email: body.email,
                    password: body.password,
                    username: body.username,
                    roles,
                },
            )
            .await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> RpcResult<pb::ListUsersResponse> {
        caller_with(&request, &[Role::Admin])?;
        let body = request.into_inner();
        let role = match body.role {
            None => None,
            Some(value) => roles_from_pb(&[value], "role")?.first().copied(),
        };
        let page = self
            .service
            .list_users(
                model::UserFilter { role, q: body.q },
                body.limit,
                &body.cursor,
            )
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            items: page.items.iter().map(user_to_pb).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> RpcResult<pb::GetUserResponse> {
        caller_with(&request, &[Role::Admin])?;
        let user = self.service.get_user(&request.into_inner().id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> RpcResult<pb::UpdateUserResponse> {
        let caller = caller_with(&request, &[Role::Admin])?;
        let body = request.into_inner();
        let roles = match body.roles {
            None => None,
            Some(set) => Some(roles_from_pb(&set.roles, "roles")?),
        };
        let username = body
            .username
            .map(|name| if name.is_empty() { None } else { Some(name) });
        let user = self
            .service
            .update_user(
                &caller,
                &body.id,
                UserChanges {
                    roles,
                    disabled: body.disabled,
                    password: body.password,
                    username,
                },
            )
            .await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> RpcResult<pb::DeleteUserResponse> {
        let caller = caller_with(&request, &[Role::Admin])?;
        self.service
            .delete_user(&caller, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> RpcResult<pb::ListAuditResponse> {
        caller_with(&request, &[Role::Auditor, Role::Admin])?;
        let body = request.into_inner();
        let filter = model::AuditFilter {
            action: body.action.filter(|a| !a.is_empty()),
            actor_id: body.actor_id.filter(|a| !a.is_empty()),
            entity_id: body.entity_id.filter(|a| !a.is_empty()),
            from: from_timestamp(body.from),
            to: from_timestamp(body.to),
        };
        let page = self
            .service
            .list_audit(filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListAuditResponse {
            items: page.items.into_iter().map(audit_to_pb).collect(),
            next_cursor: page.next_cursor,
        }))
    }
}
