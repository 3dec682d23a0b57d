//! Deliveries both ways, and a claim with its delivery.

use std::collections::HashMap;

use erp_proto::event::v1 as pb;
use erp_proto::time::timestamp;

use crate::deliveries::{ClaimDelivery, Delivery, DeliveryFigures, DeliveryFilter, DeliveryStatus};
use crate::error::EventError;
use crate::model::Claim;

impl From<DeliveryStatus> for pb::DeliveryStatus {
    fn from(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
            DeliveryStatus::Delivered => pb::DeliveryStatus::Delivered,
            DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
        }
    }
}

fn delivery_status_from_pb(value: i32) -> Result<DeliveryStatus, EventError> {
    match pb::DeliveryStatus::try_from(value) {
        Ok(pb::DeliveryStatus::Pending) => Ok(DeliveryStatus::Pending),
        Ok(pb::DeliveryStatus::Delivered) => Ok(DeliveryStatus::Delivered),
        Ok(pb::DeliveryStatus::Failed) => Ok(DeliveryStatus::Failed),
        _ => Err(EventError::field(
            "status",
            "must be PENDING, DELIVERED or FAILED",
        )),
    }
}

impl TryFrom<&pb::ListDeliveriesRequest> for DeliveryFilter {
    type Error = EventError;

    fn try_from(request: &pb::ListDeliveriesRequest) -> Result<Self, EventError> {
        let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        Ok(Self {
            status: request.status.map(delivery_status_from_pb).transpose()?,
            user_id: given(&request.user_id),
            event_id: given(&request.event_id),
        })
    }
}

impl From<&Delivery> for pb::Delivery {
    fn from(delivery: &Delivery) -> Self {
        pb::Delivery {
            id: delivery.id.clone(),
            claim_id: delivery.claim_id.clone(),
            event_id: delivery.event_id.clone(),
            user_id: delivery.user_id.clone(),
            rewards: delivery
                .rewards
                .iter()
                .map(|r| pb::RewardSnapshot {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    r#type: pb::RewardType::from(r.reward_type) as i32,
                    item_code: r.item_code.clone(),
                    quantity: r.quantity,
                })
                .collect(),
            status: pb::DeliveryStatus::from(delivery.status) as i32,
            attempts: delivery.attempts,
            last_error: delivery.last_error.clone(),
            created_at: Some(timestamp(delivery.created_at)),
            delivered_at: delivery.delivered_at.map(timestamp),
        }
    }
}

impl From<&ClaimDelivery> for pb::ClaimDelivery {
    fn from(delivery: &ClaimDelivery) -> Self {
        pb::ClaimDelivery {
            id: delivery.id.clone(),
            status: pb::DeliveryStatus::from(delivery.status) as i32,
            delivered_at: delivery.delivered_at.map(timestamp),
        }
    }
}

/// Claims as messages, each with its delivery from `deliveries` (by claim id) when it has one.
pub(crate) fn claims_to_pb(
    claims: &[Claim],
    deliveries: &HashMap<String, ClaimDelivery>,
) -> Vec<pb::Claim> {
    claims
        .iter()
        .map(|claim| pb::Claim {
            delivery: deliveries.get(&claim.id).map(pb::ClaimDelivery::from),
            ..pb::Claim::from(claim)
        })
        .collect()
}

impl From<&DeliveryFigures> for pb::DashboardDeliveries {
    fn from(figures: &DeliveryFigures) -> Self {
        pb::DashboardDeliveries {
            by_status: figures
                .by_status
                .iter()
                .map(|(status, n)| (status.as_str().to_owned(), *n))
                .collect(),
            oldest_pending_seconds: figures.oldest_pending_seconds,
        }
    }
}
