//! `/users`: account management by admins.

mod dto;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use erp_proto::auth::v1 as pb;
use utoipa_axum::routes;

use self::dto::{CreateUserBody, UpdateUserBody, UserQuery};
pub(crate) use self::dto::{RoleName, User};
use super::paging::{self, Page};
use super::responses::{Conflicts, Problems};
use super::{Auth, Endpoint, required};
use crate::access::{ADMIN, Access};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new(Access::Roles(ADMIN), || routes!(list)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(create)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(get)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(update)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(delete)),
];

/// List accounts, newest first.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserQuery),
    responses((status = 200, description = "A page of users", body = Page<User>), Problems))]
async fn list(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<UserQuery>,
) -> Result<Json<Page<User>>, Problem> {
    let page = state
        .auth()
        .list_users(session.request(pb::ListUsersRequest {
            role: query.role.map(RoleName::to_pb),
            q: query.q,
            limit: paging::limit(query.limit)?,
            cursor: query.cursor.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// Create an account with any roles.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUserBody,
    responses((status = 201, description = "Created", body = User), Problems, Conflicts))]
async fn create(
    State(state): State<AppState>,
    session: Auth,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<(StatusCode, Json<User>), Problem> {
    let created = state
        .auth()
        .create_user(session.request(pb::CreateUserRequest {
            email: body.email,
            password: body.password,
            roles: body.roles.into_iter().map(RoleName::to_pb).collect(),
            username: body.username,
        }))
        .await?;
    Ok((StatusCode::CREATED, required(created.into_inner().user)?))
}

/// One account.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = User), Problems))]
async fn get(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<User>, Problem> {
    let found = state
        .auth()
        .get_user(session.request(pb::GetUserRequest { id }))
        .await?;
    required(found.into_inner().user)
}

/// Change roles, disabled state, password or username; sessions follow at once.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")), request_body = UpdateUserBody,
    responses((status = 200, description = "The updated user", body = User), Problems))]
async fn update(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Json<User>, Problem> {
    let updated = state
        .auth()
        .update_user(session.request(pb::UpdateUserRequest {
            id,
            roles: body.roles.map(|roles| pb::RoleSet {
                roles: roles.into_iter().map(RoleName::to_pb).collect(),
            }),
            disabled: body.disabled,
            password: body.password,
            // `null` clears: sent as an empty username.
            username: body.username.map(Option::unwrap_or_default),
        }))
        .await?;
    required(updated.into_inner().user)
}

/// Delete an account; its sessions are revoked.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Deleted"), Problems))]
async fn delete(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .auth()
        .delete_user(session.request(pb::DeleteUserRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
