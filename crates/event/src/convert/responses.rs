//! Domain values into messages.

use chrono::{DateTime, Utc};
use erp_proto::event::v1 as pb;
use erp_proto::time::timestamp;

use crate::conditions::{Evaluation, LeafResult};
use crate::model::{Claim, ClaimSource, Dashboard, Event, Reward};

/// An event with its status at `now`.
pub(crate) fn event_to_pb(event: &Event, now: DateTime<Utc>) -> pb::Event {
    pb::Event {
        id: event.id.clone(),
        title: event.title.clone(),
        description: event.description.clone(),
        starts_at: Some(timestamp(event.starts_at)),
        ends_at: Some(timestamp(event.ends_at)),
        status: pb::EventStatus::from(event.status_at(now)) as i32,
        claim_policy: pb::ClaimPolicy::from(event.claim_policy) as i32,
        condition: event.condition.as_ref().map(pb::Condition::from),
        version: event.version,
        created_by: event.created_by.clone(),
        created_at: Some(timestamp(event.created_at)),
        updated_at: Some(timestamp(event.updated_at)),
    }
}

impl From<&Reward> for pb::Reward {
    fn from(reward: &Reward) -> Self {
        pb::Reward {
            id: reward.id.clone(),
            event_id: reward.event_id.clone(),
            name: reward.name.clone(),
            r#type: pb::RewardType::from(reward.reward_type) as i32,
            item_code: reward.item_code.clone(),
            quantity: reward.quantity,
            stock: reward.stock,
            remaining: reward.remaining,
            created_at: Some(timestamp(reward.created_at)),
            updated_at: Some(timestamp(reward.updated_at)),
        }
    }
}

impl From<&LeafResult> for pb::ConditionDetail {
    fn from(detail: &LeafResult) -> Self {
        pb::ConditionDetail {
            metric: detail.metric.clone(),
            op: pb::ComparisonOp::from(detail.op) as i32,
            value: detail.value,
            actual: detail.actual,
            passed: detail.passed,
        }
    }
}

pub(crate) fn details_to_pb(evaluation: &Evaluation) -> Vec<pb::ConditionDetail> {
    evaluation
        .details
        .iter()
        .map(pb::ConditionDetail::from)
        .collect()
}

impl From<&Claim> for pb::Claim {
    fn from(claim: &Claim) -> Self {
        pb::Claim {
            id: claim.id.clone(),
            event_id: claim.event_id.clone(),
            user_id: claim.user_id.clone(),
            status: pb::ClaimStatus::from(claim.status) as i32,
            rewards: claim
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
            event: Some(pb::EventSnapshot {
                title: claim.event.title.clone(),
                starts_at: Some(timestamp(claim.event.starts_at)),
                ends_at: Some(timestamp(claim.event.ends_at)),
            }),
            evaluation: Some(pb::Evaluation {
                event_id: claim.event_id.clone(),
                user_id: claim.user_id.clone(),
                passed: claim.evaluation.passed,
                details: details_to_pb(&claim.evaluation),
            }),
            requested_at: Some(timestamp(claim.requested_at)),
            decided_at: claim.decided_at.map(timestamp),
            decided_by: claim.decided_by.clone(),
            reason: claim.reason.clone(),
            // Joined from the deliveries at the edge (`convert::claims_to_pb`): its status is
            // current, not a copy.
            delivery: None,
            source: match claim.source {
                ClaimSource::Claim => pb::ClaimSource::Claim,
                ClaimSource::Grant => pb::ClaimSource::Grant,
            } as i32,
            granted_by: claim.granted_by.clone(),
        }
    }
}

impl From<&Dashboard> for pb::Dashboard {
    fn from(dashboard: &Dashboard) -> Self {
        pb::Dashboard {
            events: Some(pb::DashboardEvents {
                by_status: dashboard
                    .events_by_status
                    .iter()
                    .map(|(status, n)| (status.as_str().to_owned(), *n))
                    .collect(),
            }),
            claims: Some(pb::DashboardClaims {
                by_status: dashboard
                    .claims_by_status
                    .iter()
                    .map(|(status, n)| (status.as_str().to_owned(), *n))
                    .collect(),
                per_day: dashboard
                    .claims_per_day
                    .iter()
                    .map(|d| pb::DayCount {
                        day: d.day.format("%Y-%m-%d").to_string(),
                        count: d.count,
                    })
                    .collect(),
            }),
            rewards: Some(pb::DashboardRewards {
                granted_by_type: dashboard
                    .granted_by_type
                    .iter()
                    .map(|(t, n)| (t.as_str().to_owned(), *n))
                    .collect(),
            }),
            top_events: dashboard
                .top_events
                .iter()
                .map(|e| pb::TopEvent {
                    event_id: e.event_id.clone(),
                    title: e.title.clone(),
                    claims: e.claims,
                })
                .collect(),
            deliveries: Some(pb::DashboardDeliveries::from(&dashboard.deliveries)),
        }
    }
}
