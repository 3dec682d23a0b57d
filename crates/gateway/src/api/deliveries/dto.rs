//! The JSON shapes of `/deliveries`.

use chrono::{DateTime, Utc};
use erp_proto::event::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::claims::RewardSnapshot;
use crate::api::time::time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
    /// A value this gateway does not know; never accepted.
    #[serde(skip_deserializing)]
    Unknown,
}

impl DeliveryStatus {
    pub(crate) fn to_pb(self) -> i32 {
        (match self {
            DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
            DeliveryStatus::Delivered => pb::DeliveryStatus::Delivered,
            DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
            DeliveryStatus::Unknown => pb::DeliveryStatus::Unspecified,
        }) as i32
    }

    pub(crate) fn from_pb(value: i32) -> Self {
        match pb::DeliveryStatus::try_from(value) {
            Ok(pb::DeliveryStatus::Pending) => DeliveryStatus::Pending,
            Ok(pb::DeliveryStatus::Delivered) => DeliveryStatus::Delivered,
            Ok(pb::DeliveryStatus::Failed) => DeliveryStatus::Failed,
            _ => DeliveryStatus::Unknown,
        }
    }
}

/// What to give whom, once: the game applies it idempotently by `id`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Delivery {
    pub id: String,
    pub claim_id: String,
    pub event_id: String,
    pub user_id: String,
    pub rewards: Vec<RewardSnapshot>,
    pub status: DeliveryStatus,
    /// Push attempts so far (reset by a retry).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<pb::Delivery> for Delivery {
    fn from(d: pb::Delivery) -> Self {
        Self {
            rewards: d.rewards.into_iter().map(RewardSnapshot::from).collect(),
            status: DeliveryStatus::from_pb(d.status),
            attempts: d.attempts,
            last_error: d.last_error,
            created_at: time(d.created_at),
            delivered_at: time(d.delivered_at),
            id: d.id,
            claim_id: d.claim_id,
            event_id: d.event_id,
            user_id: d.user_id,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    pub status: Option<DeliveryStatus>,
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
