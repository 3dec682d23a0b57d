//! The JSON shapes of activity reports and of a player's standing against a condition.

use chrono::{DateTime, Utc};
use erp_proto::event::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::events::ComparisonOp;
use crate::api::time::{bounded_time_option, timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProgressMode {
    Increment,
    Max,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressItem {
    pub user_id: String,
    pub metric: String,
    pub value: i64,
    pub mode: ProgressMode,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub key: Option<String>,
}

impl From<ProgressItem> for pb::ProgressItem {
    fn from(item: ProgressItem) -> Self {
        Self {
            user_id: item.user_id,
            metric: item.metric,
            value: item.value,
            mode: match item.mode {
                ProgressMode::Increment => pb::ProgressMode::Increment,
                ProgressMode::Max => pb::ProgressMode::Max,
            } as i32,
            occurred_at: item.occurred_at.map(timestamp),
            key: item.key,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProgressBody {
    pub items: Vec<ProgressItem>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProgressAccepted {
    pub accepted: u32,
    pub duplicates: u32,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConditionDetail {
    pub metric: String,
    pub op: ComparisonOp,
    pub value: i64,
    pub actual: i64,
    pub passed: bool,
}

/// A player's standing against an event's condition (also a claim's evaluation).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    pub event_id: String,
    pub user_id: String,
    pub passed: bool,
    pub details: Vec<ConditionDetail>,
}

impl Progress {
    fn new(
        event_id: String,
        user_id: String,
        passed: bool,
        details: Vec<pb::ConditionDetail>,
    ) -> Self {
        Self {
            event_id,
            user_id,
            passed,
            details: details
                .into_iter()
                .map(|d| ConditionDetail {
                    metric: d.metric,
                    op: ComparisonOp::from_pb(d.op),
                    value: d.value,
                    actual: d.actual,
                    passed: d.passed,
                })
                .collect(),
        }
    }
}

impl From<pb::Evaluation> for Progress {
    fn from(e: pb::Evaluation) -> Self {
        Self::new(e.event_id, e.user_id, e.passed, e.details)
    }
}

impl From<pb::GetProgressResponse> for Progress {
    fn from(p: pb::GetProgressResponse) -> Self {
        Self::new(p.event_id, p.user_id, p.passed, p.details)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct ProgressQuery {
    pub user_id: Option<String>,
}
