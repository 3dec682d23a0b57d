//! The public JSON shapes of the domain's records (the REST shapes): what the audit trail keeps
//! as an entry's `before`/`after`, and what a CONDITIONS_NOT_MET refusal carries. Typed, so a
//! field is named once; [`json`] turns a view into the `serde_json::Value` the audit log stores.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conditions::{Evaluation, LeafResult, json as condition_json};
use crate::model::{Claim, Event, Reward};

/// A view as JSON. Views have string keys and plain values only, so this cannot fail.
pub(crate) fn json(view: &impl Serialize) -> Value {
    serde_json::to_value(view).unwrap_or_default()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventView<'a> {
    title: &'a str,
    description: Option<&'a str>,
    starts_at: String,
    ends_at: String,
    state: String,
    claim_policy: &'static str,
    condition: Option<Value>,
    version: i64,
}

impl<'a> From<&'a Event> for EventView<'a> {
    fn from(event: &'a Event) -> Self {
        Self {
            title: &event.title,
            description: event.description.as_deref(),
            starts_at: event.starts_at.to_rfc3339(),
            ends_at: event.ends_at.to_rfc3339(),
            state: event.publication.as_str().to_uppercase(),
            claim_policy: event.claim_policy.as_str(),
            condition: event.condition.as_ref().map(condition_json::to_json),
            version: event.version,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RewardView<'a> {
    event_id: &'a str,
    name: &'a str,
    #[serde(rename = "type")]
    reward_type: &'static str,
    item_code: Option<&'a str>,
    quantity: i64,
    stock: Option<i64>,
    remaining: Option<i64>,
}

impl<'a> From<&'a Reward> for RewardView<'a> {
    fn from(reward: &'a Reward) -> Self {
        Self {
            event_id: &reward.event_id,
            name: &reward.name,
            reward_type: reward.reward_type.as_str(),
            item_code: reward.item_code.as_deref(),
            quantity: reward.quantity,
            stock: reward.stock,
            remaining: reward.remaining,
        }
    }
}

/// An evaluation of one player's activity against one event's condition (GetProgress, a
/// claim's evaluation, the details of a CONDITIONS_NOT_MET refusal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationView {
    pub event_id: String,
    pub user_id: String,
    pub passed: bool,
    /// One entry per leaf, in tree order.
    pub details: Vec<LeafResult>,
}

impl EvaluationView {
    pub(crate) fn new(event_id: &str, user_id: &str, evaluation: &Evaluation) -> Self {
        Self {
            event_id: event_id.to_owned(),
            user_id: user_id.to_owned(),
            passed: evaluation.passed,
            details: evaluation.details.clone(),
        }
    }

    /// The view as kept with an idempotency key's refusal (the JSON text the API shows).
    pub(crate) fn to_json_text(&self) -> String {
        json(self).to_string()
    }

    pub(crate) fn from_json_text(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RewardSnapshotView<'a> {
    id: &'a str,
    name: &'a str,
    #[serde(rename = "type")]
    reward_type: &'static str,
    item_code: Option<&'a str>,
    quantity: i64,
}

/// An event as a claim's snapshot and the lifecycle records show it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventSnapshotView<'a> {
    title: &'a str,
    starts_at: String,
    ends_at: String,
}

impl<'a> EventSnapshotView<'a> {
    pub(crate) fn new(title: &'a str, starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Self {
        Self {
            title,
            starts_at: starts_at.to_rfc3339(),
            ends_at: ends_at.to_rfc3339(),
        }
    }
}

/// A claim as the audit trail shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClaimView<'a> {
    id: &'a str,
    event_id: &'a str,
    user_id: &'a str,
    status: &'static str,
    rewards: Vec<RewardSnapshotView<'a>>,
    event: EventSnapshotView<'a>,
    evaluation: EvaluationView,
    requested_at: String,
    decided_at: Option<String>,
    decided_by: Option<&'a str>,
    reason: Option<&'a str>,
    /// `CLAIM` (a player's claim) or `GRANT` (an operator's grant, with `grantedBy`).
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    granted_by: Option<&'a str>,
}

impl<'a> From<&'a Claim> for ClaimView<'a> {
    fn from(claim: &'a Claim) -> Self {
        Self {
            id: &claim.id,
            event_id: &claim.event_id,
            user_id: &claim.user_id,
            status: claim.status.as_str(),
            rewards: claim
                .rewards
                .iter()
                .map(|r| RewardSnapshotView {
                    id: &r.id,
                    name: &r.name,
                    reward_type: r.reward_type.as_str(),
                    item_code: r.item_code.as_deref(),
                    quantity: r.quantity,
                })
                .collect(),
            event: EventSnapshotView::new(
                &claim.event.title,
                claim.event.starts_at,
                claim.event.ends_at,
            ),
            evaluation: EvaluationView::new(&claim.event_id, &claim.user_id, &claim.evaluation),
            requested_at: claim.requested_at.to_rfc3339(),
            decided_at: claim.decided_at.map(|t| t.to_rfc3339()),
            decided_by: claim.decided_by.as_deref(),
            reason: claim.reason.as_deref(),
            source: claim.source.as_str(),
            granted_by: claim.granted_by.as_deref(),
        }
    }
}

/// The `after` of a PROGRESS_REPORTED record: the batch's size, what it changed, and which
/// metrics it named (distinct, sorted).
#[derive(Debug, Serialize)]
pub(crate) struct ProgressReportView<'a> {
    pub(crate) items: usize,
    pub(crate) accepted: u32,
    pub(crate) duplicates: u32,
    pub(crate) metrics: Vec<&'a str>,
}

/// The `after` of a CLAIM_DENIED record: who, which event, why, and the refusal's one fact
/// (the evaluation, the reward out of stock or the claim already made), absent otherwise.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DenialView<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) evaluation: Option<&'a EvaluationView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reward_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) claim_id: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::conditions::{Condition, Leaf, Op, Window};
    use crate::model::{
        ClaimPolicy, ClaimSource, ClaimStatus, EventSnapshot, Publication, RewardSnapshot,
        RewardType,
    };

    fn at(hour: u32) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 2, hour, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn evaluation() -> Evaluation {
        Evaluation {
            passed: false,
            details: vec![LeafResult {
                metric: "kills".into(),
                op: Op::Gte,
                value: 3,
                actual: 1,
                passed: false,
            }],
        }
    }

    /// The views give exactly the JSON the hand-built objects gave (the audit trail's shapes).
    #[test]
    fn views_keep_the_rest_shapes() {
        let event = Event {
            id: "e1".into(),
            title: "Spring".into(),
            description: None,
            starts_at: at(1),
            ends_at: at(2),
            publication: Publication::Published,
            claim_policy: ClaimPolicy::Manual,
            condition: Some(Condition::Leaf(Leaf {
                metric: "kills".into(),
                op: Op::Gte,
                value: 3,
                window: Window::Event,
            })),
            version: 2,
            created_by: "op".into(),
            created_at: at(0),
            updated_at: at(0),
        };
        assert_eq!(
            json(&EventView::from(&event)).to_string(),
            json!({
                "title": "Spring",
                "description": null,
                "startsAt": at(1).to_rfc3339(),
                "endsAt": at(2).to_rfc3339(),
                "state": "PUBLISHED",
                "claimPolicy": "MANUAL",
                "condition": {"metric": "kills", "op": "GTE", "value": 3, "window": "EVENT"},
                "version": 2,
            })
            .to_string()
        );
        let reward = Reward {
            id: "r1".into(),
            event_id: "e1".into(),
            name: "Gold".into(),
            reward_type: RewardType::Currency,
            item_code: None,
            quantity: 100,
            stock: Some(5),
            remaining: Some(4),
            created_at: at(0),
            updated_at: at(0),
        };
        assert_eq!(
            json(&RewardView::from(&reward)).to_string(),
            json!({
                "eventId": "e1", "name": "Gold", "type": "CURRENCY", "itemCode": null,
                "quantity": 100, "stock": 5, "remaining": 4,
            })
            .to_string()
        );
        let evaluation_json = json!({
            "eventId": "e1",
            "userId": "u1",
            "passed": false,
            "details": [{"metric": "kills", "op": "GTE", "value": 3, "actual": 1, "passed": false}],
        });
        let view = EvaluationView::new("e1", "u1", &evaluation());
        assert_eq!(view.to_json_text(), evaluation_json.to_string());
        assert_eq!(
            EvaluationView::from_json_text(&view.to_json_text()).ok(),
            Some(view.clone())
        );
        let claim = Claim {
            id: "c1".into(),
            event_id: "e1".into(),
            user_id: "u1".into(),
            status: ClaimStatus::Rejected,
            rewards: vec![RewardSnapshot {
                id: "r1".into(),
                name: "Gold".into(),
                reward_type: RewardType::Item,
                item_code: Some("sword".into()),
                quantity: 1,
            }],
            event: EventSnapshot {
                title: "Spring".into(),
                starts_at: at(1),
                ends_at: at(2),
            },
            evaluation: evaluation(),
            requested_at: at(1),
            decided_at: Some(at(2)),
            decided_by: Some("op".into()),
            reason: None,
            idempotency_key: Some("k".into()),
            source: ClaimSource::Claim,
            granted_by: None,
        };
        assert_eq!(
            json(&ClaimView::from(&claim)).to_string(),
            json!({
                "id": "c1",
                "eventId": "e1",
                "userId": "u1",
                "status": "REJECTED",
                "rewards": [{"id": "r1", "name": "Gold", "type": "ITEM", "itemCode": "sword", "quantity": 1}],
                "event": {"title": "Spring", "startsAt": at(1).to_rfc3339(), "endsAt": at(2).to_rfc3339()},
                "evaluation": evaluation_json,
                "requestedAt": at(1).to_rfc3339(),
                "decidedAt": at(2).to_rfc3339(),
                "decidedBy": "op",
                "reason": null,
                "source": "CLAIM",
            })
            .to_string()
        );
        let granted = Claim {
            status: ClaimStatus::Granted,
            reason: Some("lost progress".into()),
            source: ClaimSource::Grant,
            granted_by: Some("op".into()),
            idempotency_key: None,
            ..claim.clone()
        };
        let granted_json = json(&ClaimView::from(&granted));
        assert_eq!(granted_json["source"], "GRANT");
        assert_eq!(granted_json["grantedBy"], "op");
        assert_eq!(granted_json["reason"], "lost progress");
        let denial = |reason| DenialView {
            event_id: "e1",
            user_id: "u1",
            reason,
            evaluation: None,
            reward_id: None,
            claim_id: None,
        };
        let mut expected = json!({"eventId": "e1", "userId": "u1", "reason": "CONDITIONS_NOT_MET"});
        expected["evaluation"] = evaluation_json;
        assert_eq!(
            json(&DenialView {
                evaluation: Some(&view),
                ..denial("CONDITIONS_NOT_MET")
            })
            .to_string(),
            expected.to_string()
        );
        assert_eq!(
            json(&DenialView {
                claim_id: Some("c1"),
                ..denial("ALREADY_CLAIMED")
            })
            .to_string(),
            json!({"eventId": "e1", "userId": "u1", "reason": "ALREADY_CLAIMED", "claimId": "c1"})
                .to_string()
        );
    }
}
