//! The JSON shapes of `/events/{id}/rewards`.

use chrono::{DateTime, Utc};
use erp_proto::event::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::fields::double_option;
use crate::api::time::time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum RewardType {
    Currency,
    Item,
    Coupon,
    Point,
    Buff,
    /// A value this gateway does not know; never accepted.
    #[serde(skip_deserializing)]
    Unknown,
}

impl RewardType {
    pub(crate) fn to_pb(self) -> i32 {
        (match self {
            RewardType::Currency => pb::RewardType::Currency,
            RewardType::Item => pb::RewardType::Item,
            RewardType::Coupon => pb::RewardType::Coupon,
            RewardType::Point => pb::RewardType::Point,
            RewardType::Buff => pb::RewardType::Buff,
            RewardType::Unknown => pb::RewardType::Unspecified,
        }) as i32
    }

    pub(crate) fn from_pb(value: i32) -> Self {
        match pb::RewardType::try_from(value) {
            Ok(pb::RewardType::Currency) => RewardType::Currency,
            Ok(pb::RewardType::Item) => RewardType::Item,
            Ok(pb::RewardType::Coupon) => RewardType::Coupon,
            Ok(pb::RewardType::Point) => RewardType::Point,
            Ok(pb::RewardType::Buff) => RewardType::Buff,
            _ => RewardType::Unknown,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Reward {
    pub id: String,
    pub event_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub reward_type: RewardType,
    pub item_code: Option<String>,
    pub quantity: i64,
    pub stock: Option<i64>,
    pub remaining: Option<i64>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::Reward> for Reward {
    fn from(reward: pb::Reward) -> Self {
        Self {
            id: reward.id,
            event_id: reward.event_id,
            name: reward.name,
            reward_type: RewardType::from_pb(reward.r#type),
            item_code: reward.item_code,
            quantity: reward.quantity,
            stock: reward.stock,
            remaining: reward.remaining,
            created_at: time(reward.created_at),
            updated_at: time(reward.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RewardInput {
    pub name: String,
    #[serde(rename = "type")]
    pub reward_type: RewardType,
    #[serde(default)]
    pub item_code: Option<String>,
    pub quantity: i64,
    /// `null` or absent: unlimited.
    #[serde(default)]
    pub stock: Option<i64>,
}

impl RewardInput {
    pub(crate) fn to_pb(&self) -> pb::RewardInput {
        pb::RewardInput {
            name: self.name.clone(),
            r#type: self.reward_type.to_pb(),
            item_code: self.item_code.clone(),
            quantity: self.quantity,
            stock: self.stock,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateRewardBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub reward_type: Option<RewardType>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub item_code: Option<Option<String>>,
    #[serde(default)]
    pub quantity: Option<i64>,
    /// `null` makes it unlimited.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub stock: Option<Option<i64>>,
}
