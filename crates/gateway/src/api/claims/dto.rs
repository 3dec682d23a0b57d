//! The JSON shapes of claims.

use chrono::{DateTime, Utc};
use erp_proto::event::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::deliveries::DeliveryStatus;
use crate::api::progress::Progress;
use crate::api::rewards::RewardType;
use crate::api::time::{bounded_time_option, time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ClaimStatus {
    Pending,
    Granted,
    Rejected,
    Expired,
    /// A value this gateway does not know; never accepted.
    #[serde(skip_deserializing)]
    Unknown,
}

impl ClaimStatus {
    pub(crate) fn to_pb(self) -> i32 {
        (match self {
            ClaimStatus::Pending => pb::ClaimStatus::Pending,
            ClaimStatus::Granted => pb::ClaimStatus::Granted,
            ClaimStatus::Rejected => pb::ClaimStatus::Rejected,
            ClaimStatus::Expired => pb::ClaimStatus::Expired,
            ClaimStatus::Unknown => pb::ClaimStatus::Unspecified,
        }) as i32
    }

    pub(crate) fn from_pb(value: i32) -> Self {
        match pb::ClaimStatus::try_from(value) {
            Ok(pb::ClaimStatus::Pending) => ClaimStatus::Pending,
            Ok(pb::ClaimStatus::Granted) => ClaimStatus::Granted,
            Ok(pb::ClaimStatus::Rejected) => ClaimStatus::Rejected,
            Ok(pb::ClaimStatus::Expired) => ClaimStatus::Expired,
            _ => ClaimStatus::Unknown,
        }
    }
}

/// A reward as it was when the claim was made.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RewardSnapshot {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub reward_type: RewardType,
    pub item_code: Option<String>,
    pub quantity: i64,
}

impl From<pb::RewardSnapshot> for RewardSnapshot {
    fn from(r: pb::RewardSnapshot) -> Self {
        Self {
            id: r.id,
            name: r.name,
            reward_type: RewardType::from_pb(r.r#type),
            item_code: r.item_code,
            quantity: r.quantity,
        }
    }
}

/// Where a claim came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum ClaimSource {
    /// The player claimed it.
    Claim,
    /// An operator granted it (`POST /grants`).
    Grant,
}

impl ClaimSource {
    fn from_pb(value: i32) -> Self {
        match pb::ClaimSource::try_from(value) {
            Ok(pb::ClaimSource::Grant) => ClaimSource::Grant,
            // Claims made before grants existed carry no source: players made them.
            _ => ClaimSource::Claim,
        }
    }
}

/// The delivery of a granted claim.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClaimDelivery {
    pub id: String,
    pub status: DeliveryStatus,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The event as it was when the claim was made.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventSnapshot {
    pub title: String,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Claim {
    pub id: String,
    pub event_id: String,
    pub user_id: String,
    pub status: ClaimStatus,
    pub rewards: Vec<RewardSnapshot>,
    pub event: Option<EventSnapshot>,
    pub evaluation: Option<Progress>,
    pub requested_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// Present exactly when the claim is `GRANTED`.
    pub delivery: Option<ClaimDelivery>,
    pub source: ClaimSource,
    /// The operator who granted it (`source` `GRANT` only).
    pub granted_by: Option<String>,
}

impl From<pb::Claim> for Claim {
    fn from(claim: pb::Claim) -> Self {
        Self {
            status: ClaimStatus::from_pb(claim.status),
            rewards: claim
                .rewards
                .into_iter()
                .map(RewardSnapshot::from)
                .collect(),
            delivery: claim.delivery.map(|d| ClaimDelivery {
                id: d.id,
                status: DeliveryStatus::from_pb(d.status),
                delivered_at: time(d.delivered_at),
            }),
            source: ClaimSource::from_pb(claim.source),
            granted_by: claim.granted_by,
            event: claim.event.map(|e| EventSnapshot {
                title: e.title,
                starts_at: time(e.starts_at),
                ends_at: time(e.ends_at),
            }),
            evaluation: claim.evaluation.map(Progress::from),
            requested_at: time(claim.requested_at),
            decided_at: time(claim.decided_at),
            decided_by: claim.decided_by,
            reason: claim.reason,
            id: claim.id,
            event_id: claim.event_id,
            user_id: claim.user_id,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RejectBody {
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct MyClaimsQuery {
    pub status: Option<ClaimStatus>,
    pub event_id: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct ClaimsQuery {
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<ClaimStatus>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
