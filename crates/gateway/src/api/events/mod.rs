//! `/events`: the catalog of events, each with its window, claim policy and condition.

mod condition;
pub(super) mod dto;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use erp_platform::error::{ApiError, FieldError};
use erp_proto::event::v1 as pb;
use utoipa_axum::routes;

use self::condition::condition_field;
pub(crate) use self::condition::{ComparisonOp, Condition};
pub(crate) use self::dto::{ClaimPolicy, EventStatus, PublicationState};
use self::dto::{CreateEventBody, Event, EventQuery, UpdateEventBody};
use super::paging::{self, Page};
use super::responses::{Conflicts, Problems};
use super::rewards::RewardInput;
use super::time::timestamp;
use super::{Auth, Endpoint};
use crate::access::{ADMIN, Access, EDITORS, EVERYONE};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new(Access::Roles(EDITORS), || routes!(create)),
    Endpoint::new(Access::Roles(EVERYONE), || routes!(list)),
    Endpoint::new(Access::Roles(EVERYONE), || routes!(get)),
    Endpoint::new(Access::Roles(EDITORS), || routes!(update)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(delete)),
];

/// An event with its version as `ETag`; a service that sent none has failed.
fn with_etag(event: Option<pb::Event>) -> Result<Response, Problem> {
    let event = event.ok_or_else(|| Problem(ApiError::internal()))?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", event.version)).ok();
    let mut response = Json(Event::from(event)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// `If-Match: "3"` (or `3`, or `W/"3"`) as an expected version.
fn expected_version(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Problem(ApiError::validation(vec![FieldError::new(
                "If-Match",
                "must be the event's version, e.g. \"3\"",
            )]))
        })
}

/// Create an event, optionally with its rewards.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = CreateEventBody,
    responses((status = 201, description = "Created", body = Event), Problems))]
async fn create(
    State(state): State<AppState>,
    session: Auth,
    JsonBody(body): JsonBody<CreateEventBody>,
) -> Result<Response, Problem> {
    let condition = match &body.condition {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(condition_field(value)?),
    };
    let created = state
        .event()
        .create_event(
            session.request(pb::CreateEventRequest {
                title: body.title,
                description: body.description,
                starts_at: Some(timestamp(body.starts_at)),
                ends_at: Some(timestamp(body.ends_at)),
                claim_policy: body.claim_policy.map(ClaimPolicy::to_pb),
                condition,
                draft: body.draft.unwrap_or(false),
                rewards: body
                    .rewards
                    .unwrap_or_default()
                    .iter()
                    .map(RewardInput::to_pb)
                    .collect(),
            }),
        )
        .await?;
    let mut response = with_etag(created.into_inner().event)?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Events, newest first (plain players never see drafts).
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, description = "A page of events", body = Page<Event>), Problems))]
async fn list(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<EventQuery>,
) -> Result<Json<Page<Event>>, Problem> {
    let page = state
        .event()
        .list_events(session.request(pb::ListEventsRequest {
            status: query.status.map(EventStatus::to_pb),
            limit: paging::limit(query.limit)?,
            cursor: query.cursor.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// One event; `ETag` is its version.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, description = "The event", body = Event), Problems))]
async fn get(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let found = state
        .event()
        .get_event(session.request(pb::GetEventRequest { id }))
        .await?;
    with_etag(found.into_inner().event)
}

/// Change an event; `If-Match` makes it conditional on the version.
#[utoipa::path(patch, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id"), ("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\"")),
    request_body = UpdateEventBody,
    responses((status = 200, description = "The updated event", body = Event), Problems, Conflicts))]
async fn update(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<UpdateEventBody>,
) -> Result<Response, Problem> {
    let expected_version = expected_version(&headers)?;
    let condition = match &body.condition {
        None => None,
        Some(None) | Some(Some(serde_json::Value::Null)) => {
            Some(pb::ConditionUpdate { condition: None })
        }
        Some(Some(value)) => Some(pb::ConditionUpdate {
            condition: Some(condition_field(value)?),
        }),
    };
    let state_change = match (body.state, body.draft) {
        (Some(PublicationState::Published), _) | (None, Some(false)) => {
            Some(pb::PublicationState::Published as i32)
        }
        (Some(PublicationState::Canceled), _) => Some(pb::PublicationState::Canceled as i32),
        (None, Some(true)) => {
            return Err(Problem(ApiError::validation(vec![FieldError::new(
                "draft",
                "an event cannot go back to draft; cancel it instead",
            )])));
        }
        (None, None) => None,
    };
    let updated = state
        .event()
        .update_event(session.request(pb::UpdateEventRequest {
            id,
            title: body.title,
            description: body.description.map(Option::unwrap_or_default),
            starts_at: body.starts_at.map(timestamp),
            ends_at: body.ends_at.map(timestamp),
            claim_policy: body.claim_policy.map(ClaimPolicy::to_pb),
            condition,
            state: state_change,
            expected_version,
        }))
        .await?;
    with_etag(updated.into_inner().event)
}

/// Delete an event: it disappears from reads; claims keep their snapshots.
#[utoipa::path(delete, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 204, description = "Deleted"), Problems))]
async fn delete(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .event()
        .delete_event(session.request(pb::DeleteEventRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
