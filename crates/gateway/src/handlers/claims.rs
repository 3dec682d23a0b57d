//! Claims: a player claims an event's rewards; operators approve or reject manual claims.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use erp_platform::error::{ApiError, FieldError};
use erp_proto::event::v1 as pb;

use super::{Auth, Conflicts, Problems};
use crate::dto::{self, Claim, ClaimsQuery, MyClaimsQuery, Page, RejectBody, timestamp};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::problem::Problem;
use crate::state::{AppState, upstream};

fn claim(claim: Option<pb::Claim>) -> Result<Json<Claim>, Problem> {
    claim
        .map(|c| Json(Claim::from(c)))
        .ok_or_else(|| Problem(ApiError::internal()))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(|v| Some(v.to_owned()))
        .ok_or_else(|| {
            Problem(ApiError::validation(vec![FieldError::new(
                "Idempotency-Key",
                "must be 1 to 200 visible characters",
            )]))
        })
}

/// Claim an event's rewards for the caller. `Idempotency-Key` replays the first answer.
#[utoipa::path(post, path = "/api/v1/events/{id}/claims", tag = "claims", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id"), ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "GRANTED (AUTO) or PENDING (MANUAL)", body = Claim), Problems, Conflicts))]
pub async fn create(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Claim>), Problem> {
    let created = state
        .event
        .clone()
        .claim(upstream(
            pb::ClaimRequest {
                event_id: id,
                idempotency_key: idempotency_key(&headers)?,
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, claim(created.claim)?))
}

/// The caller's claims, newest first.
#[utoipa::path(get, path = "/api/v1/claims/me", tag = "claims", security(("bearer" = [])), params(MyClaimsQuery),
    responses((status = 200, description = "A page of claims", body = Page<Claim>), Problems))]
pub async fn mine(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<MyClaimsQuery>,
) -> Result<Json<Page<Claim>>, Problem> {
    let page = state
        .event
        .clone()
        .list_my_claims(upstream(
            pb::ListMyClaimsRequest {
                status: query.status.map(|s| s.to_pb()),
                event_id: query.event_id,
                limit: dto::limit(query.limit)?,
                cursor: query.cursor.unwrap_or_default(),
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// Every claim, newest first, with filters.
#[utoipa::path(get, path = "/api/v1/claims", tag = "claims", security(("bearer" = [])), params(ClaimsQuery),
    responses((status = 200, description = "A page of claims", body = Page<Claim>), Problems))]
pub async fn list(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<ClaimsQuery>,
) -> Result<Json<Page<Claim>>, Problem> {
    let page = state
        .event
        .clone()
        .list_claims(upstream(
            pb::ListClaimsRequest {
                user_id: query.user_id,
                event_id: query.event_id,
                status: query.status.map(|s| s.to_pb()),
                from: query.from.map(timestamp),
                to: query.to.map(timestamp),
                limit: dto::limit(query.limit)?,
                cursor: query.cursor.unwrap_or_default(),
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// One claim: its owner or staff.
#[utoipa::path(get, path = "/api/v1/claims/{id}", tag = "claims", security(("bearer" = [])),
    params(("id" = String, Path, description = "Claim id")),
    responses((status = 200, description = "The claim", body = Claim), Problems))]
pub async fn get(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Claim>, Problem> {
    let found = state
        .event
        .clone()
        .get_claim(upstream(pb::GetClaimRequest { id }, Some(&session.caller)))
        .await?
        .into_inner();
    claim(found.claim)
}

/// Grant a pending claim.
#[utoipa::path(post, path = "/api/v1/claims/{id}/approve", tag = "claims", security(("bearer" = [])),
    params(("id" = String, Path, description = "Claim id")),
    responses((status = 200, description = "GRANTED", body = Claim), Problems, Conflicts))]
pub async fn approve(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Claim>, Problem> {
    let approved = state
        .event
        .clone()
        .approve_claim(upstream(
            pb::ApproveClaimRequest { id },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    claim(approved.claim)
}

/// Reject a pending claim with a reason; its stock is released.
#[utoipa::path(post, path = "/api/v1/claims/{id}/reject", tag = "claims", security(("bearer" = [])),
    params(("id" = String, Path, description = "Claim id")), request_body = RejectBody,
    responses((status = 200, description = "REJECTED", body = Claim), Problems, Conflicts))]
pub async fn reject(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RejectBody>,
) -> Result<Json<Claim>, Problem> {
    let rejected = state
        .event
        .clone()
        .reject_claim(upstream(
            pb::RejectClaimRequest {
                id,
                reason: body.reason,
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    claim(rejected.claim)
}
