//! `/events`, their rewards and a player's progress.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use erp_platform::error::{ApiError, FieldError};
use erp_proto::event::v1 as pb;

use super::{Auth, Conflicts, Problems};
use crate::dto::{
    self, CreateEventBody, Event, EventQuery, Items, Page, Progress, ProgressQuery,
    PublicationState, Reward, RewardInput, UpdateEventBody, UpdateRewardBody, timestamp,
};
use crate::extract::{JsonBody, Path, QueryParams};
use crate::problem::Problem;
use crate::state::{AppState, upstream};

fn with_etag(event: pb::Event) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", event.version)).ok();
    let mut response = Json(Event::from(event)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

fn required_event(event: Option<pb::Event>) -> Result<pb::Event, Problem> {
    event.ok_or_else(|| Problem(ApiError::internal()))
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
#[utoipa::path(post, path = "/api/v1/events", tag = "events", security(("bearer" = [])), request_body = CreateEventBody,
    responses((status = 201, description = "Created", body = Event), Problems))]
pub async fn create(
    State(state): State<AppState>,
    session: Auth,
    JsonBody(body): JsonBody<CreateEventBody>,
) -> Result<Response, Problem> {
    let condition = match &body.condition {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(dto::condition_field(value)?),
    };
    let created = state
        .event
        .clone()
        .create_event(upstream(
            pb::CreateEventRequest {
                title: body.title,
                description: body.description,
                starts_at: Some(timestamp(body.starts_at)),
                ends_at: Some(timestamp(body.ends_at)),
                claim_policy: body.claim_policy.map(|p| p.to_pb()),
                condition,
                draft: body.draft.unwrap_or(false),
                rewards: body
                    .rewards
                    .unwrap_or_default()
                    .iter()
                    .map(RewardInput::to_pb)
                    .collect(),
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    let mut response = with_etag(required_event(created.event)?);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Events, newest first (plain players never see drafts).
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])), params(EventQuery),
    responses((status = 200, description = "A page of events", body = Page<Event>), Problems))]
pub async fn list(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<EventQuery>,
) -> Result<Json<Page<Event>>, Problem> {
    let page = state
        .event
        .clone()
        .list_events(upstream(
            pb::ListEventsRequest {
                status: query.status.map(|s| s.to_pb()),
                limit: dto::limit(query.limit)?,
                cursor: query.cursor.unwrap_or_default(),
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// One event; `ETag` is its version.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, description = "The event", body = Event), Problems))]
pub async fn get(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let found = state
        .event
        .clone()
        .get_event(upstream(pb::GetEventRequest { id }, Some(&session.caller)))
        .await?
        .into_inner();
    Ok(with_etag(required_event(found.event)?))
}

/// Change an event; `If-Match` makes it conditional on the version.
#[utoipa::path(patch, path = "/api/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id"), ("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\"")),
    request_body = UpdateEventBody,
    responses((status = 200, description = "The updated event", body = Event), Problems, Conflicts))]
pub async fn update(
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
            condition: Some(dto::condition_field(value)?),
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
        .event
        .clone()
        .update_event(upstream(
            pb::UpdateEventRequest {
                id,
                title: body.title,
                description: body.description.map(Option::unwrap_or_default),
                starts_at: body.starts_at.map(timestamp),
                ends_at: body.ends_at.map(timestamp),
                claim_policy: body.claim_policy.map(|p| p.to_pb()),
                condition,
                state: state_change,
                expected_version,
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(with_etag(required_event(updated.event)?))
}

/// Delete an event: it disappears from reads; claims keep their snapshots.
#[utoipa::path(delete, path = "/api/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses((status = 204, description = "Deleted"), Problems))]
pub async fn delete(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state
        .event
        .clone()
        .delete_event(upstream(
            pb::DeleteEventRequest { id },
            Some(&session.caller),
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn reward(reward: Option<pb::Reward>) -> Result<Json<Reward>, Problem> {
    reward
        .map(|r| Json(Reward::from(r)))
        .ok_or_else(|| Problem(ApiError::internal()))
}

/// Add a reward to an event.
#[utoipa::path(post, path = "/api/v1/events/{id}/rewards", tag = "rewards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")), request_body = RewardInput,
    responses((status = 201, description = "Created", body = Reward), Problems))]
pub async fn create_reward(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RewardInput>,
) -> Result<(StatusCode, Json<Reward>), Problem> {
    let created = state
        .event
        .clone()
        .create_reward(upstream(
            pb::CreateRewardRequest {
                event_id: id,
                reward: Some(body.to_pb()),
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, reward(created.reward)?))
}

/// The rewards of an event.
#[utoipa::path(get, path = "/api/v1/events/{id}/rewards", tag = "rewards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, description = "Rewards", body = Items<Reward>), Problems))]
pub async fn list_rewards(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Items<Reward>>, Problem> {
    let rewards = state
        .event
        .clone()
        .list_rewards(upstream(
            pb::ListRewardsRequest { event_id: id },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(Json(Items {
        items: rewards.items.into_iter().map(Reward::from).collect(),
    }))
}

/// One reward.
#[utoipa::path(get, path = "/api/v1/events/{id}/rewards/{rewardId}", tag = "rewards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id"), ("rewardId" = String, Path, description = "Reward id")),
    responses((status = 200, description = "The reward", body = Reward), Problems))]
pub async fn get_reward(
    State(state): State<AppState>,
    session: Auth,
    Path((id, reward_id)): Path<(String, String)>,
) -> Result<Json<Reward>, Problem> {
    let found = state
        .event
        .clone()
        .get_reward(upstream(
            pb::GetRewardRequest {
                event_id: id,
                reward_id,
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    reward(found.reward)
}

/// Change a reward; `stock: null` makes it unlimited.
#[utoipa::path(patch, path = "/api/v1/events/{id}/rewards/{rewardId}", tag = "rewards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id"), ("rewardId" = String, Path, description = "Reward id")),
    request_body = UpdateRewardBody,
    responses((status = 200, description = "The updated reward", body = Reward), Problems))]
pub async fn update_reward(
    State(state): State<AppState>,
    session: Auth,
    Path((id, reward_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateRewardBody>,
) -> Result<Json<Reward>, Problem> {
    let stock = body.stock.map(|stock| pb::StockUpdate {
        value: Some(match stock {
            None => pb::stock_update::Value::Unlimited(true),
            Some(limited) => pb::stock_update::Value::Limited(limited),
        }),
    });
    let updated = state
        .event
        .clone()
        .update_reward(upstream(
            pb::UpdateRewardRequest {
                event_id: id,
                reward_id,
                name: body.name,
                r#type: body.reward_type.map(|t| t.to_pb()),
                item_code: body.item_code.map(Option::unwrap_or_default),
                quantity: body.quantity,
                stock,
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    reward(updated.reward)
}

/// Delete a reward.
#[utoipa::path(delete, path = "/api/v1/events/{id}/rewards/{rewardId}", tag = "rewards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id"), ("rewardId" = String, Path, description = "Reward id")),
    responses((status = 204, description = "Deleted"), Problems))]
pub async fn delete_reward(
    State(state): State<AppState>,
    session: Auth,
    Path((id, reward_id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    state
        .event
        .clone()
        .delete_reward(upstream(
            pb::DeleteRewardRequest {
                event_id: id,
                reward_id,
            },
            Some(&session.caller),
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A player's progress toward an event's condition (own, or `userId` for staff).
#[utoipa::path(get, path = "/api/v1/events/{id}/progress", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id"), ProgressQuery),
    responses((status = 200, description = "The evaluation", body = Progress), Problems))]
pub async fn progress(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<ProgressQuery>,
) -> Result<Json<Progress>, Problem> {
    let answer = state
        .event
        .clone()
        .get_progress(upstream(
            pb::GetProgressRequest {
                event_id: id,
                user_id: query
                    .user_id
                    .unwrap_or_else(|| session.caller.user_id.clone()),
            },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(Json(Progress {
        event_id: answer.event_id,
        user_id: answer.user_id,
        passed: answer.passed,
        details: dto::details(answer.details),
    }))
}
