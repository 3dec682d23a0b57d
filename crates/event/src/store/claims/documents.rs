//! The claim collections' documents (`claims`, `claim_requests`) and their conversions to and
//! from the domain's claims and refusals.

use chrono::Utc;
use erp_platform::mongo::{from_bson_time, to_bson_time};
use mongodb::bson::DateTime as BsonDateTime;
use serde::{Deserialize, Serialize};

use super::{RecordedAnswer, RecordedRequest};
use crate::conditions::{Evaluation, LeafResult, json as condition_json};
use crate::error::EventError;
use crate::model::{Claim, ClaimSource, ClaimStatus, EventSnapshot, RewardSnapshot, RewardType};
use crate::store::catalog::RewardDoc;
use crate::views::EvaluationView;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RewardSnapshotDoc {
    pub(super) id: String,
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) reward_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) item_code: Option<String>,
    pub(super) quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EventSnapshotDoc {
    pub(super) title: String,
    pub(super) starts_at: BsonDateTime,
    pub(super) ends_at: BsonDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LeafResultDoc {
    pub(super) metric: String,
    pub(super) op: String,
    pub(super) value: i64,
    pub(super) actual: i64,
    pub(super) passed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EvaluationDoc {
    pub(super) passed: bool,
    pub(super) details: Vec<LeafResultDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ClaimDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) event_id: String,
    pub(super) user_id: String,
    pub(super) status: String,
    pub(super) rewards: Vec<RewardSnapshotDoc>,
    pub(super) event: EventSnapshotDoc,
    pub(super) evaluation: EvaluationDoc,
    pub(super) requested_at: BsonDateTime,
    #[serde(default)]
    pub(super) decided_at: Option<BsonDateTime>,
    #[serde(default)]
    pub(super) decided_by: Option<String>,
    #[serde(default)]
    pub(super) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) idempotency_key: Option<String>,
    /// `CLAIM` or `GRANT`; absent on claims stored before grants existed (players' claims).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) granted_by: Option<String>,
}

impl ClaimDoc {
    pub(super) fn from_claim(claim: &Claim) -> Self {
        Self {
            id: claim.id.clone(),
            event_id: claim.event_id.clone(),
            user_id: claim.user_id.clone(),
            status: claim.status.as_str().to_owned(),
            rewards: claim
                .rewards
                .iter()
                .map(|r| RewardSnapshotDoc {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    reward_type: r.reward_type.as_str().to_owned(),
                    item_code: r.item_code.clone(),
                    quantity: r.quantity,
                })
                .collect(),
            event: EventSnapshotDoc {
                title: claim.event.title.clone(),
                starts_at: to_bson_time(claim.event.starts_at),
                ends_at: to_bson_time(claim.event.ends_at),
            },
            evaluation: EvaluationDoc {
                passed: claim.evaluation.passed,
                details: claim
                    .evaluation
                    .details
                    .iter()
                    .map(|d| LeafResultDoc {
                        metric: d.metric.clone(),
                        op: d.op.as_str().to_owned(),
                        value: d.value,
                        actual: d.actual,
                        passed: d.passed,
                    })
                    .collect(),
            },
            requested_at: to_bson_time(claim.requested_at),
            decided_at: claim.decided_at.map(to_bson_time),
            decided_by: claim.decided_by.clone(),
            reason: claim.reason.clone(),
            idempotency_key: claim.idempotency_key.clone(),
            source: Some(claim.source.as_str().to_owned()),
            granted_by: claim.granted_by.clone(),
        }
    }

    pub(super) fn into_claim(self) -> Result<Claim, EventError> {
        let status = ClaimStatus::parse(&self.status).ok_or_else(|| {
            EventError::Corrupt(format!("claim {} has status {}", self.id, self.status))
        })?;
        let source = match self.source.as_deref() {
            None => ClaimSource::Claim,
            Some(name) => ClaimSource::parse(name).ok_or_else(|| {
                EventError::Corrupt(format!("claim {} has source {name}", self.id))
            })?,
        };
        let details = self
            .evaluation
            .details
            .into_iter()
            .map(|d| {
                Ok(LeafResult {
                    op: condition_json::op_from_str(&d.op).ok_or_else(|| {
                        EventError::Corrupt(format!("claim {} has operator {}", self.id, d.op))
                    })?,
                    metric: d.metric,
                    value: d.value,
                    actual: d.actual,
                    passed: d.passed,
                })
            })
            .collect::<Result<Vec<_>, EventError>>()?;
        Ok(Claim {
            status,
            rewards: self
                .rewards
                .into_iter()
                .map(|r| RewardSnapshot {
                    reward_type: RewardType::parse(&r.reward_type).unwrap_or(RewardType::Item),
                    id: r.id,
                    name: r.name,
                    item_code: r.item_code,
                    quantity: r.quantity,
                })
                .collect(),
            event: EventSnapshot {
                title: self.event.title,
                starts_at: from_bson_time(self.event.starts_at),
                ends_at: from_bson_time(self.event.ends_at),
            },
            evaluation: Evaluation {
                passed: self.evaluation.passed,
                details,
            },
            requested_at: from_bson_time(self.requested_at),
            decided_at: self.decided_at.map(from_bson_time),
            decided_by: self.decided_by,
            reason: self.reason,
            idempotency_key: self.idempotency_key,
            source,
            granted_by: self.granted_by,
            id: self.id,
            event_id: self.event_id,
            user_id: self.user_id,
        })
    }
}

/// A refusal kept as the answer of an idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum RefusalDoc {
    NotFound,
    EventNotActive,
    ConditionsNotMet { evaluation: String },
    OutOfStock { reward_id: String },
    AlreadyClaimed { claim_id: String },
}

impl RefusalDoc {
    pub(super) fn from_error(error: &EventError) -> Option<Self> {
        Some(match error {
            EventError::NotFound(_) => Self::NotFound,
            EventError::EventNotActive => Self::EventNotActive,
            EventError::ConditionsNotMet { evaluation } => Self::ConditionsNotMet {
                evaluation: evaluation.to_json_text(),
            },
            EventError::OutOfStock { reward_id } => Self::OutOfStock {
                reward_id: reward_id.clone(),
            },
            EventError::AlreadyClaimed { claim_id } => Self::AlreadyClaimed {
                claim_id: claim_id.clone(),
            },
            _ => return None,
        })
    }

    /// The refusal as it was answered; `Err` when its stored evaluation does not read back.
    pub(super) fn into_error(self) -> Result<EventError, EventError> {
        Ok(match self {
            Self::NotFound => EventError::NotFound("event"),
            Self::EventNotActive => EventError::EventNotActive,
            Self::ConditionsNotMet { evaluation } => EventError::ConditionsNotMet {
                evaluation: EvaluationView::from_json_text(&evaluation).map_err(|source| {
                    EventError::Decode {
                        what: "a recorded evaluation",
                        source,
                    }
                })?,
            },
            Self::OutOfStock { reward_id } => EventError::OutOfStock { reward_id },
            Self::AlreadyClaimed { claim_id } => EventError::AlreadyClaimed { claim_id },
        })
    }
}

/// The first answer given to an idempotency key: (user_id, key) is unique.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RequestDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) key: String,
    pub(super) event_id: String,
    pub(super) at: BsonDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) claim_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) refusal: Option<RefusalDoc>,
}

impl RequestDoc {
    pub(super) fn new(user_id: &str, key: &str, event_id: &str) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            key: key.to_owned(),
            event_id: event_id.to_owned(),
            at: to_bson_time(Utc::now()),
            claim_id: None,
            refusal: None,
        }
    }

    pub(super) fn into_recorded(self) -> Result<Option<RecordedRequest>, EventError> {
        let answer = match (self.claim_id, self.refusal) {
            (Some(claim_id), _) => RecordedAnswer::Claim(claim_id),
            (None, Some(refusal)) => RecordedAnswer::Refusal(refusal.into_error()?),
            (None, None) => return Ok(None),
        };
        Ok(Some(RecordedRequest {
            event_id: self.event_id,
            answer,
        }))
    }
}

/// What a claim keeps of a reward it took.
pub(super) fn snapshot(reward: &RewardDoc) -> RewardSnapshot {
    RewardSnapshot {
        id: reward.id.clone(),
        name: reward.name.clone(),
        reward_type: RewardType::parse(&reward.reward_type).unwrap_or(RewardType::Item),
        item_code: reward.item_code.clone(),
        quantity: reward.quantity,
    }
}
