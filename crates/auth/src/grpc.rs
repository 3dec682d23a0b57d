//! The gRPC face of the auth service: each handler converts the request ([`crate::convert`]),
//! hands the domain the caller the verified assertion names, and converts the answer. Who may
//! call what is the domain's rule ([`crate::access`]); errors leave through
//! `From<AuthError> for Status`, which logs them once.

use std::sync::Arc;

use erp_platform::audit::{self, AuditFilter};
use erp_platform::identity::{Caller, VerifiedCall};
use erp_proto::auth::v1 as pb;
use erp_proto::auth::v1::auth_service_server::AuthService as AuthRpc;
use erp_proto::common::v1 as common;
use tonic::{Request, Response, Status};

use crate::access::{self, FindPeople, ManageServiceAccounts, ManageUsers, ReadAudit};
use crate::convert;
use crate::model::UserFilter;
use crate::service::{AuthService, NewAccount, UserChanges};

/// The `service` of this service's audit entries in `GET /audit`.
const AUDIT_SERVICE: &str = "auth";

pub(crate) struct AuthGrpc {
    service: Arc<AuthService>,
}

impl AuthGrpc {
    pub(crate) fn new(service: Arc<AuthService>) -> Self {
        Self { service }
    }
}

/// The person the verified caller assertion names, if any (never an id from the body).
fn caller<T>(request: &Request<T>) -> Option<Caller> {
    VerifiedCall::of(request)
        .ok()
        .and_then(|call| call.caller.clone())
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
            user: convert::user(&user),
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
        Ok(Response::new(session.into()))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> RpcResult<pb::RefreshResponse> {
        let session = self
            .service
            .refresh(request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(session.into()))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> RpcResult<pb::LogoutResponse> {
        let caller = access::signed_in(caller(&request))?;
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
        let introspection = self
            .service
            .introspect(&request.into_inner().access_token)
            .await?;
        Ok(Response::new(introspection.into()))
    }

    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> RpcResult<pb::GetSigningKeysResponse> {
        Ok(Response::new(convert::jwks(self.service.tokens().keys())))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> RpcResult<pb::GetMeResponse> {
        let caller = access::signed_in(caller(&request))?;
        let user = self.service.me(&caller).await?;
        Ok(Response::new(pb::GetMeResponse {
            user: convert::user(&user),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> RpcResult<pb::CreateUserResponse> {
        let admin = access::authorize::<ManageUsers>(caller(&request))?;
        let account = NewAccount::try_from(request.into_inner())?;
        let user = self.service.create_user(&admin, account).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: convert::user(&user),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> RpcResult<pb::ListUsersResponse> {
        let admin = access::authorize::<ManageUsers>(caller(&request))?;
        let body = request.into_inner();
        let filter = UserFilter::try_from(&body)?;
        let page = self
            .service
            .list_users(&admin, filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            items: page.items.iter().map(pb::User::from).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> RpcResult<pb::GetUserResponse> {
        let admin = access::authorize::<ManageUsers>(caller(&request))?;
        let user = self
            .service
            .get_user(&admin, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::GetUserResponse {
            user: convert::user(&user),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> RpcResult<pb::UpdateUserResponse> {
        let admin = access::authorize::<ManageUsers>(caller(&request))?;
        let body = request.into_inner();
        let id = body.id.clone();
        let changes = UserChanges::try_from(body)?;
        let user = self.service.update_user(&admin, &id, changes).await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: convert::user(&user),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> RpcResult<pb::DeleteUserResponse> {
        let admin = access::authorize::<ManageUsers>(caller(&request))?;
        self.service
            .delete_user(&admin, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_audit(
        &self,
        request: Request<common::ListAuditRequest>,
    ) -> RpcResult<common::ListAuditResponse> {
        let auditor = access::authorize::<ReadAudit>(caller(&request))?;
        let body = request.into_inner();
        let page = self
            .service
            .list_audit(&auditor, AuditFilter::from(&body), body.limit, &body.cursor)
            .await?;
        Ok(Response::new(audit::page_to_pb(page, AUDIT_SERVICE)))
    }

    async fn find_active_users(
        &self,
        request: Request<pb::FindActiveUsersRequest>,
    ) -> RpcResult<pb::FindActiveUsersResponse> {
        let operator = access::authorize::<FindPeople>(caller(&request))?;
        let active_ids = self
            .service
            .find_active_users(&operator, request.into_inner().ids)
            .await?;
        Ok(Response::new(pb::FindActiveUsersResponse { active_ids }))
    }

    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> RpcResult<pb::ServiceAccountCredentials> {
        let admin = access::authorize::<ManageServiceAccounts>(caller(&request))?;
        let credentials = self
            .service
            .create_service_account(&admin, request.into_inner().into())
            .await?;
        Ok(Response::new(credentials.into()))
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> RpcResult<pb::ListServiceAccountsResponse> {
        let admin = access::authorize::<ManageServiceAccounts>(caller(&request))?;
        let body = request.into_inner();
        let page = self
            .service
            .list_service_accounts(&admin, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListServiceAccountsResponse {
            items: page.items.iter().map(pb::ServiceAccount::from).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> RpcResult<pb::DeleteServiceAccountResponse> {
        let admin = access::authorize::<ManageServiceAccounts>(caller(&request))?;
        self.service
            .delete_service_account(&admin, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeleteServiceAccountResponse {}))
    }

    async fn rotate_service_account_secret(
        &self,
        request: Request<pb::RotateServiceAccountSecretRequest>,
    ) -> RpcResult<pb::ServiceAccountCredentials> {
        let admin = access::authorize::<ManageServiceAccounts>(caller(&request))?;
        let credentials = self
            .service
            .rotate_service_account_secret(&admin, &request.into_inner().id)
            .await?;
        Ok(Response::new(credentials.into()))
    }

    async fn issue_client_token(
        &self,
        request: Request<pb::IssueClientTokenRequest>,
    ) -> RpcResult<pb::IssueClientTokenResponse> {
        // The client address the calling service signed (lockouts count per address).
        let client_ip = VerifiedCall::of(&request)
            .ok()
            .and_then(|call| call.client_ip);
        let body = request.into_inner();
        let token = self
            .service
            .issue_client_token(&body.client_id, &body.client_secret, client_ip)
            .await?;
        Ok(Response::new(token.into()))
    }
}
