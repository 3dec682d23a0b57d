//! Player activity: reports by operators (`POST /progress`) and a player's standing against an
//! event's condition (`GET /events/{id}/progress`).

pub(super) mod dto;

use axum::Json;
use axum::extract::State;
use erp_proto::event::v1 as pb;
use utoipa_axum::routes;

pub(crate) use self::dto::{Progress, ProgressMode};
use self::dto::{ProgressAccepted, ProgressBody, ProgressQuery};
use super::responses::Problems;
use super::{Auth, Endpoint};
use crate::access::{Access, REPORTERS};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new(Access::Roles(REPORTERS), || routes!(report)),
    // Own progress for anyone; `?userId=` of someone else is checked by the event service.
    Endpoint::new(Access::Authenticated, || routes!(progress)),
];

/// Report player activity (1..1000 items).
#[utoipa::path(post, path = "/api/v1/progress", tag = "progress", request_body = ProgressBody,
    responses((status = 200, description = "Accepted and duplicate counts", body = ProgressAccepted), Problems))]
async fn report(
    State(state): State<AppState>,
    session: Auth,
    JsonBody(body): JsonBody<ProgressBody>,
) -> Result<Json<ProgressAccepted>, Problem> {
    let answer = state
        .event()
        .report_progress(session.request(pb::ReportProgressRequest {
            items: body.items.into_iter().map(pb::ProgressItem::from).collect(),
        }))
        .await?
        .into_inner();
    Ok(Json(ProgressAccepted {
        accepted: answer.accepted,
        duplicates: answer.duplicates,
    }))
}

/// A player's progress toward an event's condition (own, or `userId` for staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/progress", tag = "events",
    params(("id" = String, Path, description = "Event id"), ProgressQuery),
    responses((status = 200, description = "The evaluation", body = Progress), Problems))]
async fn progress(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<ProgressQuery>,
) -> Result<Json<Progress>, Problem> {
    let user_id = query
        .user_id
        .unwrap_or_else(|| session.caller.user_id.clone());
    let answer = state
        .event()
        .get_progress(session.request(pb::GetProgressRequest {
            event_id: id,
            user_id,
        }))
        .await?;
    Ok(Json(Progress::from(answer.into_inner())))
}
