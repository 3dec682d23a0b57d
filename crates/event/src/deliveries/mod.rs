//! Reward deliveries: what the game must put into a player's account for each granted claim.
//!
//! A delivery is written in the same transaction that grants its claim (an outbox, see
//! `store::deliveries`), so none is lost and none exists for a claim that was not granted. Game
//! servers pull them (list, ack), and when a webhook is configured the [`dispatcher`] pushes each
//! pending one, signed ([`webhook`]), until it is delivered or out of attempts.

pub(crate) mod dispatcher;
pub(crate) mod webhook;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::RewardSnapshot;

/// Who records what no person did: the dispatcher's outcomes.
pub(crate) const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting to be pulled and acked, or pushed.
    Pending,
    /// Acked by a game server, or a 2xx from the webhook.
    Delivered,
    /// The webhook refused or timed out on every attempt; a retry re-queues it.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// What to give whom, once: the game applies it idempotently by `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub claim_id: String,
    pub event_id: String,
    pub user_id: String,
    /// The claim's reward snapshots.
    pub rewards: Vec<RewardSnapshot>,
    pub status: DeliveryStatus,
    /// Push attempts so far (reset by a retry).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The delivery of a granted claim as the claim shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClaimDelivery {
    pub(crate) id: String,
    pub(crate) status: DeliveryStatus,
    pub(crate) delivered_at: Option<DateTime<Utc>>,
}

impl From<&Delivery> for ClaimDelivery {
    fn from(delivery: &Delivery) -> Self {
        Self {
            id: delivery.id.clone(),
            status: delivery.status,
            delivered_at: delivery.delivered_at,
        }
    }
}

/// Filters of the delivery listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DeliveryFilter {
    pub(crate) status: Option<DeliveryStatus>,
    pub(crate) user_id: Option<String>,
    pub(crate) event_id: Option<String>,
}

/// The dashboard's delivery figures; every status is present, with 0 when there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFigures {
    pub by_status: Vec<(DeliveryStatus, i64)>,
    /// Age in whole seconds of the oldest pending delivery; `None` when none is pending.
    pub oldest_pending_seconds: Option<i64>,
}

/// A delivery in the REST shape (`GET /deliveries/{id}`): the webhook's body and the audit
/// trail's `before`/`after`. Absent optionals are `null`, times RFC 3339 UTC, as the gateway
/// writes them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeliveryView<'a> {
    id: &'a str,
    claim_id: &'a str,
    event_id: &'a str,
    user_id: &'a str,
    rewards: Vec<RewardView<'a>>,
    status: &'static str,
    attempts: u32,
    last_error: Option<&'a str>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RewardView<'a> {
    id: &'a str,
    name: &'a str,
    #[serde(rename = "type")]
    reward_type: &'static str,
    item_code: Option<&'a str>,
    quantity: i64,
}

impl<'a> From<&'a Delivery> for DeliveryView<'a> {
    fn from(delivery: &'a Delivery) -> Self {
        Self {
            id: &delivery.id,
            claim_id: &delivery.claim_id,
            event_id: &delivery.event_id,
            user_id: &delivery.user_id,
            rewards: delivery
                .rewards
                .iter()
                .map(|r| RewardView {
                    id: &r.id,
                    name: &r.name,
                    reward_type: r.reward_type.as_str(),
                    item_code: r.item_code.as_deref(),
                    quantity: r.quantity,
                })
                .collect(),
            status: delivery.status.as_str(),
            attempts: delivery.attempts,
            last_error: delivery.last_error.as_deref(),
            created_at: delivery.created_at,
            delivered_at: delivery.delivered_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RewardType;
    use chrono::TimeZone;

    #[test]
    fn the_view_is_the_rest_shape() {
        let delivery = Delivery {
            id: "d1".into(),
            claim_id: "c1".into(),
            event_id: "e1".into(),
            user_id: "u1".into(),
            rewards: vec![RewardSnapshot {
                id: "r1".into(),
                name: "Gold".into(),
                reward_type: RewardType::Currency,
                item_code: None,
                quantity: 100,
            }],
            status: DeliveryStatus::Pending,
            attempts: 2,
            last_error: Some("HTTP 500".into()),
            created_at: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            delivered_at: None,
        };
        let json = serde_json::to_value(DeliveryView::from(&delivery)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "d1", "claimId": "c1", "eventId": "e1", "userId": "u1",
                "rewards": [{"id": "r1", "name": "Gold", "type": "CURRENCY", "itemCode": null, "quantity": 100}],
                "status": "PENDING", "attempts": 2, "lastError": "HTTP 500",
                "createdAt": "2026-12-01T00:00:00Z", "deliveredAt": null,
            })
        );
    }
}
