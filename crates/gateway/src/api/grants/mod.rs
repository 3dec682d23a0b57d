//! Grants: an operator compensates players, skipping the condition, the window and review but
//! nothing else (one claim per player and event, stock, a delivery per grant).

mod dto;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use erp_platform::error::{ApiError, FieldError};
use erp_proto::auth::v1 as auth_pb;
use erp_proto::event::v1 as pb;
use utoipa_axum::routes;

use self::dto::{GrantBody, GrantResult, GrantResults, MAX_USERS};
use super::responses::{Conflicts, Problems};
use super::{Auth, Endpoint, idempotency};
use crate::access::{Access, EDITORS};
use crate::extract::JsonBody;
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] =
    &[Endpoint::new(Access::Roles(EDITORS), || routes!(grant))];

/// Grant an event's rewards to up to 1,000 players; per-player outcomes in the order given.
/// `Idempotency-Key` is required: a repeat answers the first answer.
#[utoipa::path(post, path = "/api/v1/grants", tag = "grants", request_body = GrantBody,
    params(("Idempotency-Key" = String, Header, description = "Repeat-safe key (required)")),
    responses((status = 200, description = "One result per user id, in order", body = GrantResults), Problems, Conflicts))]
async fn grant(
    State(state): State<AppState>,
    session: Auth,
    headers: HeaderMap,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Json<GrantResults>, Problem> {
    let key = idempotency::required_key(&headers)?;
    if body.user_ids.is_empty() || body.user_ids.len() > MAX_USERS {
        return Err(Problem(ApiError::validation(vec![FieldError::new(
            "userIds",
            format!("must name 1 to {MAX_USERS} users"),
        )])));
    }
    // Which ids are people who exist and are enabled: one question to auth for the whole list.
    let active = state
        .auth()
        .find_active_users(session.request(auth_pb::FindActiveUsersRequest {
            ids: body.user_ids.clone(),
        }))
        .await?
        .into_inner()
        .active_ids;
    let granted = state
        .event()
        .grant(session.request(pb::GrantRequest {
            event_id: body.event_id,
            user_ids: body.user_ids,
            active_user_ids: active,
            reason: body.reason,
            idempotency_key: key,
        }))
        .await?
        .into_inner();
    let results = granted
        .results
        .into_iter()
        .map(GrantResult::of)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Problem(ApiError::internal()))?;
    Ok(Json(GrantResults { results }))
}
