//! The JSON shapes of `/events`.

use chrono::{DateTime, Utc};
use erp_proto::event::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::condition::Condition;
use crate::api::fields::double_option;
use crate::api::rewards::RewardInput;
use crate::api::time::{bounded_time, bounded_time_option, time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum EventStatus {
    Draft,
    Scheduled,
    Active,
    Ended,
    Canceled,
    /// A value this gateway does not know; never accepted.
    #[serde(skip_deserializing)]
    Unknown,
}

impl EventStatus {
    pub(crate) fn to_pb(self) -> i32 {
        (match self {
            EventStatus::Draft => pb::EventStatus::Draft,
            EventStatus::Scheduled => pb::EventStatus::Scheduled,
            EventStatus::Active => pb::EventStatus::Active,
            EventStatus::Ended => pb::EventStatus::Ended,
            EventStatus::Canceled => pb::EventStatus::Canceled,
            EventStatus::Unknown => pb::EventStatus::Unspecified,
        }) as i32
    }

    pub(crate) fn from_pb(value: i32) -> Self {
        match pb::EventStatus::try_from(value) {
            Ok(pb::EventStatus::Draft) => EventStatus::Draft,
            Ok(pb::EventStatus::Scheduled) => EventStatus::Scheduled,
            Ok(pb::EventStatus::Active) => EventStatus::Active,
            Ok(pb::EventStatus::Ended) => EventStatus::Ended,
            Ok(pb::EventStatus::Canceled) => EventStatus::Canceled,
            _ => EventStatus::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ClaimPolicy {
    Auto,
    Manual,
}

impl ClaimPolicy {
    pub(crate) fn to_pb(self) -> i32 {
        (match self {
            ClaimPolicy::Auto => pb::ClaimPolicy::Auto,
            ClaimPolicy::Manual => pb::ClaimPolicy::Manual,
        }) as i32
    }

    pub(crate) fn from_pb(value: i32) -> Self {
        match pb::ClaimPolicy::try_from(value) {
            Ok(pb::ClaimPolicy::Manual) => ClaimPolicy::Manual,
            _ => ClaimPolicy::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum PublicationState {
    Published,
    Canceled,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Event {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub status: EventStatus,
    pub claim_policy: ClaimPolicy,
    /// `null`: no condition.
    pub condition: Option<Condition>,
    pub version: i64,
    pub created_by: String,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::Event> for Event {
    fn from(event: pb::Event) -> Self {
        Self {
            id: event.id,
            title: event.title,
            description: event.description,
            starts_at: time(event.starts_at),
            ends_at: time(event.ends_at),
            status: EventStatus::from_pb(event.status),
            claim_policy: ClaimPolicy::from_pb(event.claim_policy),
            condition: event.condition.as_ref().map(Condition::from),
            version: event.version,
            created_by: event.created_by,
            created_at: time(event.created_at),
            updated_at: time(event.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateEventBody {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(deserialize_with = "bounded_time")]
    pub starts_at: DateTime<Utc>,
    #[serde(deserialize_with = "bounded_time")]
    pub ends_at: DateTime<Utc>,
    #[serde(default)]
    pub claim_policy: Option<ClaimPolicy>,
    // Read by hand, to name the path of a mistake.
    #[serde(default)]
    #[schema(value_type = Option<Condition>)]
    pub condition: Option<Value>,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub rewards: Option<Vec<RewardInput>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateEventBody {
    #[serde(default)]
    pub title: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub claim_policy: Option<ClaimPolicy>,
    /// `null` removes the condition.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Condition>)]
    pub condition: Option<Option<Value>>,
    #[serde(default)]
    pub state: Option<PublicationState>,
    /// `false` publishes a draft (as `state: PUBLISHED`); an event cannot go back to draft.
    #[serde(default)]
    pub draft: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct EventQuery {
    pub status: Option<EventStatus>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
