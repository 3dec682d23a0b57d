//! `/service-accounts`: game servers' own credentials, managed by admins. The secret is shown
//! once, when it is made; `POST /auth/token` exchanges it for an access token.

mod dto;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use erp_platform::error::ApiError;
use erp_proto::auth::v1 as pb;
use utoipa_axum::routes;

use self::dto::{
    CreateServiceAccountBody, ServiceAccount, ServiceAccountCredentials, ServiceAccountsQuery,
};
use super::paging::{self, Page};
use super::responses::Problems;
use super::{Auth, Endpoint};
use crate::access::{ADMIN, Access};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new(Access::Roles(ADMIN), || routes!(list)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(create)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(delete)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(rotate_secret)),
];

/// The credentials a service answered with; an answer without the account is the service's
/// failure.
fn credentials(
    answer: pb::ServiceAccountCredentials,
) -> Result<Json<ServiceAccountCredentials>, Problem> {
    if answer.service_account.is_none() {
        return Err(Problem(ApiError::internal()));
    }
    Ok(Json(ServiceAccountCredentials::from(answer)))
}

/// Service accounts, newest first. Never a secret.
#[utoipa::path(get, path = "/api/v1/service-accounts", tag = "service-accounts",
    params(ServiceAccountsQuery),
    responses((status = 200, description = "A page of service accounts", body = Page<ServiceAccount>), Problems))]
async fn list(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<ServiceAccountsQuery>,
) -> Result<Json<Page<ServiceAccount>>, Problem> {
    let page = state
        .auth()
        .list_service_accounts(session.request(pb::ListServiceAccountsRequest {
            limit: paging::limit(query.limit)?,
            cursor: query.cursor.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// Create a game server's account; the answer shows its secret, this once.
#[utoipa::path(post, path = "/api/v1/service-accounts", tag = "service-accounts",
    request_body = CreateServiceAccountBody,
    responses((status = 201, description = "Created, with its secret", body = ServiceAccountCredentials), Problems))]
async fn create(
    State(state): State<AppState>,
    session: Auth,
    JsonBody(body): JsonBody<CreateServiceAccountBody>,
) -> Result<(StatusCode, Json<ServiceAccountCredentials>), Problem> {
    let created = state
        .auth()
        .create_service_account(session.request(pb::CreateServiceAccountRequest {
            name: body.name,
            description: body.description,
        }))
        .await?;
    Ok((StatusCode::CREATED, credentials(created.into_inner())?))
}

/// Delete a service account: its secret fails at once, its tokens within a second.
#[utoipa::path(delete, path = "/api/v1/service-accounts/{id}", tag = "service-accounts",
    params(("id" = String, Path, description = "Service account id")),
    responses((status = 204, description = "Deleted"), Problems))]
async fn delete(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .auth()
        .delete_service_account(session.request(pb::DeleteServiceAccountRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret: the old one fails at once, tokens issued from it within a second.
#[utoipa::path(post, path = "/api/v1/service-accounts/{id}/rotate-secret", tag = "service-accounts",
    params(("id" = String, Path, description = "Service account id")),
    responses((status = 200, description = "The account with its new secret", body = ServiceAccountCredentials), Problems))]
async fn rotate_secret(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<ServiceAccountCredentials>, Problem> {
    let rotated = state
        .auth()
        .rotate_service_account_secret(
            session.request(pb::RotateServiceAccountSecretRequest { id }),
        )
        .await?;
    credentials(rotated.into_inner())
}
