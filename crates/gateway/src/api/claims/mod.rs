//! Claims: a player claims an event's rewards; operators approve or reject manual claims.

mod dto;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use erp_proto::event::v1 as pb;
use utoipa_axum::routes;

use self::dto::{Claim, ClaimsQuery, MyClaimsQuery, RejectBody};
pub(crate) use self::dto::{ClaimStatus, RewardSnapshot};
use super::idempotency;
use super::paging::{self, Page};
use super::responses::{Conflicts, Problems};
use super::time::timestamp;
use super::{Auth, Endpoint, required};
use crate::access::{Access, CLAIMANTS, EDITORS, STAFF};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new(Access::Roles(CLAIMANTS), || routes!(create)),
    Endpoint::new(Access::Authenticated, || routes!(mine)),
    Endpoint::new(Access::Roles(STAFF), || routes!(list)),
    // The owner or staff: ownership is checked by the event service.
    Endpoint::new(Access::Authenticated, || routes!(get)),
    Endpoint::new(Access::Roles(EDITORS), || routes!(approve)),
    Endpoint::new(Access::Roles(EDITORS), || routes!(reject)),
];

/// Claim an event's rewards for the caller. `Idempotency-Key` replays the first answer.
#[utoipa::path(post, path = "/api/v1/events/{id}/claims", tag = "claims",
    params(("id" = String, Path, description = "Event id"), ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "GRANTED (AUTO) or PENDING (MANUAL)", body = Claim), Problems, Conflicts))]
async fn create(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Claim>), Problem> {
    let created = state
        .event()
        .claim(session.request(pb::ClaimRequest {
            event_id: id,
            idempotency_key: idempotency::key(&headers)?,
        }))
        .await?;
    Ok((StatusCode::CREATED, required(created.into_inner().claim)?))
}

/// The caller's claims, newest first.
#[utoipa::path(get, path = "/api/v1/claims/me", tag = "claims", params(MyClaimsQuery),
    responses((status = 200, description = "A page of claims", body = Page<Claim>), Problems))]
async fn mine(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<MyClaimsQuery>,
) -> Result<Json<Page<Claim>>, Problem> {
    let page = state
        .event()
        .list_my_claims(session.request(pb::ListMyClaimsRequest {
            status: query.status.map(ClaimStatus::to_pb),
            event_id: query.event_id,
            limit: paging::limit(query.limit)?,
            cursor: query.cursor.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// Every claim, newest first, with filters.
#[utoipa::path(get, path = "/api/v1/claims", tag = "claims", params(ClaimsQuery),
    responses((status = 200, description = "A page of claims", body = Page<Claim>), Problems))]
async fn list(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<ClaimsQuery>,
) -> Result<Json<Page<Claim>>, Problem> {
    let page = state
        .event()
        .list_claims(session.request(pb::ListClaimsRequest {
            user_id: query.user_id,
            event_id: query.event_id,
            status: query.status.map(ClaimStatus::to_pb),
            from: query.from.map(timestamp),
            to: query.to.map(timestamp),
            limit: paging::limit(query.limit)?,
            cursor: query.cursor.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// One claim: its owner or staff.
#[utoipa::path(get, path = "/api/v1/claims/{id}", tag = "claims",
    params(("id" = String, Path, description = "Claim id")),
    responses((status = 200, description = "The claim", body = Claim), Problems))]
async fn get(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Claim>, Problem> {
    let found = state
        .event()
        .get_claim(session.request(pb::GetClaimRequest { id }))
        .await?;
    required(found.into_inner().claim)
}

/// Grant a pending claim.
#[utoipa::path(post, path = "/api/v1/claims/{id}/approve", tag = "claims",
    params(("id" = String, Path, description = "Claim id")),
    responses((status = 200, description = "GRANTED", body = Claim), Problems, Conflicts))]
async fn approve(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Claim>, Problem> {
    let approved = state
        .event()
        .approve_claim(session.request(pb::ApproveClaimRequest { id }))
        .await?;
    required(approved.into_inner().claim)
}

/// Reject a pending claim with a reason; its stock is released.
#[utoipa::path(post, path = "/api/v1/claims/{id}/reject", tag = "claims",
    params(("id" = String, Path, description = "Claim id")), request_body = RejectBody,
    responses((status = 200, description = "REJECTED", body = Claim), Problems, Conflicts))]
async fn reject(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RejectBody>,
) -> Result<Json<Claim>, Problem> {
    let rejected = state
        .event()
        .reject_claim(session.request(pb::RejectClaimRequest {
            id,
            reason: body.reason,
        }))
        .await?;
    required(rejected.into_inner().claim)
}
