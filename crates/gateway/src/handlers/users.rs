//! `/users`: account management by admins.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use erp_platform::error::ApiError;
use erp_proto::auth::v1 as pb;

use super::{Auth, Conflicts, Problems};
use crate::dto::{self, CreateUserBody, Page, UpdateUserBody, User, UserQuery};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::problem::Problem;
use crate::state::{AppState, upstream};

fn user(user: Option<pb::User>) -> Result<Json<User>, Problem> {
    user.map(|u| Json(User::from(u)))
        .ok_or_else(|| Problem(ApiError::internal()))
}

/// List accounts, newest first.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])), params(UserQuery),
    responses((status = 200, description = "A page of users", body = Page<User>), Problems))]
pub async fn list(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<UserQuery>,
) -> Result<Json<Page<User>>, Problem> {
    let page = state
        .auth
        .clone()
        .list_users(upstream(
            pb::ListUsersRequest {
                role: query.role.map(|r| r.to_pb()),
                q: query.q,
                limit: dto::limit(query.limit)?,
                cursor: query.cursor.unwrap_or_default(),
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// Create an account with any roles.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])), request_body = CreateUserBody,
    responses((status = 201, description = "Created", body = User), Problems, Conflicts))]
pub async fn create(
    State(state): State<AppState>,
    session: Auth,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<(StatusCode, Json<User>), Problem> {
    let created = state
        .auth
        .clone()
        .create_user(upstream(
            pb::CreateUserRequest {
                email: body.email,
                password: body.password,
                roles: body.roles.into_iter().map(|r| r.to_pb()).collect(),
                username: body.username,
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, user(created.user)?))
}

/// One account.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = User), Problems))]
pub async fn get(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<User>, Problem> {
    let found = state
        .auth
        .clone()
        .get_user(upstream(pb::GetUserRequest { id }, Some(&session.caller)))
        .await?
        .into_inner();
    user(found.user)
}

/// Change roles, disabled state, password or username; sessions follow at once.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")), request_body = UpdateUserBody,
    responses((status = 200, description = "The updated user", body = User), Problems))]
pub async fn update(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Json<User>, Problem> {
    let updated = state
        .auth
        .clone()
        .update_user(upstream(
            pb::UpdateUserRequest {
                id,
                roles: body.roles.map(|roles| pb::RoleSet {
                    roles: roles.into_iter().map(|r| r.to_pb()).collect(),
                }),
                disabled: body.disabled,
                password: body.password,
                // `null` clears: sent as an empty username.
                username: body.username.map(Option::unwrap_or_default),
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    user(updated.user)
}

/// Delete an account; its sessions are revoked.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Deleted"), Problems))]
pub async fn delete(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .auth
        .clone()
        .delete_user(upstream(
            pb::DeleteUserRequest { id },
            Some(&session.caller),
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
