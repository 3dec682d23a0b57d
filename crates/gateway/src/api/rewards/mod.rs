//! `/events/{id}/rewards`: what claiming an event grants.

pub(super) mod dto;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use erp_proto::event::v1 as pb;
use utoipa_axum::routes;

use self::dto::{Reward, UpdateRewardBody};
pub(crate) use self::dto::{RewardInput, RewardType};
use super::paging::Items;
use super::responses::Problems;
use super::{Auth, Endpoint, required};
use crate::access::{ADMIN, Access, EDITORS, EVERYONE};
use crate::extract::{JsonBody, Path};
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new(Access::Roles(EDITORS), || routes!(create_reward)),
    Endpoint::new(Access::Roles(EVERYONE), || routes!(list_rewards)),
    Endpoint::new(Access::Roles(EVERYONE), || routes!(get_reward)),
    Endpoint::new(Access::Roles(EDITORS), || routes!(update_reward)),
    Endpoint::new(Access::Roles(ADMIN), || routes!(delete_reward)),
];

/// Add a reward to an event.
#[utoipa::path(post, path = "/api/v1/events/{id}/rewards", tag = "rewards",
    params(("id" = String, Path, description = "Event id")), request_body = RewardInput,
    responses((status = 201, description = "Created", body = Reward), Problems))]
async fn create_reward(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RewardInput>,
) -> Result<(StatusCode, Json<Reward>), Problem> {
    let created = state
        .event()
        .create_reward(session.request(pb::CreateRewardRequest {
            event_id: id,
            reward: Some(body.to_pb()),
        }))
        .await?;
    Ok((StatusCode::CREATED, required(created.into_inner().reward)?))
}

/// The rewards of an event.
#[utoipa::path(get, path = "/api/v1/events/{id}/rewards", tag = "rewards",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, description = "Rewards", body = Items<Reward>), Problems))]
async fn list_rewards(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Items<Reward>>, Problem> {
    let rewards = state
        .event()
        .list_rewards(session.request(pb::ListRewardsRequest { event_id: id }))
        .await?
        .into_inner();
    Ok(Json(Items {
        items: rewards.items.into_iter().map(Reward::from).collect(),
    }))
}

/// One reward.
#[utoipa::path(get, path = "/api/v1/events/{id}/rewards/{rewardId}", tag = "rewards",
    params(("id" = String, Path, description = "Event id"), ("rewardId" = String, Path, description = "Reward id")),
    responses((status = 200, description = "The reward", body = Reward), Problems))]
async fn get_reward(
    State(state): State<AppState>,
    session: Auth,
    Path((id, reward_id)): Path<(String, String)>,
) -> Result<Json<Reward>, Problem> {
    let found = state
        .event()
        .get_reward(session.request(pb::GetRewardRequest {
            event_id: id,
            reward_id,
        }))
        .await?;
    required(found.into_inner().reward)
}

/// Change a reward; `stock: null` makes it unlimited.
#[utoipa::path(patch, path = "/api/v1/events/{id}/rewards/{rewardId}", tag = "rewards",
    params(("id" = String, Path, description = "Event id"), ("rewardId" = String, Path, description = "Reward id")),
    request_body = UpdateRewardBody,
    responses((status = 200, description = "The updated reward", body = Reward), Problems))]
async fn update_reward(
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
        .event()
        .update_reward(session.request(pb::UpdateRewardRequest {
            event_id: id,
            reward_id,
            name: body.name,
            r#type: body.reward_type.map(RewardType::to_pb),
            item_code: body.item_code.map(Option::unwrap_or_default),
            quantity: body.quantity,
            stock,
        }))
        .await?;
    required(updated.into_inner().reward)
}

/// Delete a reward.
#[utoipa::path(delete, path = "/api/v1/events/{id}/rewards/{rewardId}", tag = "rewards",
    params(("id" = String, Path, description = "Event id"), ("rewardId" = String, Path, description = "Reward id")),
    responses((status = 204, description = "Deleted"), Problems))]
async fn delete_reward(
    State(state): State<AppState>,
    session: Auth,
    Path((id, reward_id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    state
        .event()
        .delete_reward(session.request(pb::DeleteRewardRequest {
            event_id: id,
            reward_id,
        }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
