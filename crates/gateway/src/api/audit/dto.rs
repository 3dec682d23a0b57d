//! The JSON shapes of `/audit`, and the services' audit messages (`erp.common.v1`) read into them.

use chrono::{DateTime, Utc};
use erp_proto::common::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::time::{bounded_time_option, time, timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditService {
    Event,
    Auth,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub service: Option<AuditService>,
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub entity_id: Option<String>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AuditEntry {
    pub id: String,
    pub at: Option<DateTime<Utc>>,
    pub service: String,
    pub actor_id: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub trace_id: Option<String>,
    /// Sort key for merging the two services' trails.
    #[serde(skip)]
    pub at_millis: i64,
}

/// What one page of one service's trail is asked for.
pub struct AuditPageRequest<'a> {
    pub query: &'a AuditQuery,
    pub limit: u32,
    pub cursor: &'a str,
}

fn parse_json_text(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn millis(at: Option<&prost_types::Timestamp>) -> i64 {
    at.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

impl From<pb::AuditEntry> for AuditEntry {
    fn from(e: pb::AuditEntry) -> Self {
        Self {
            at_millis: millis(e.at.as_ref()),
            at: time(e.at),
            id: e.id,
            service: e.service,
            actor_id: e.actor_id,
            action: e.action,
            entity_type: e.entity_type,
            entity_id: e.entity_id,
            before: parse_json_text(e.before_json),
            after: parse_json_text(e.after_json),
            trace_id: e.trace_id,
        }
    }
}

impl From<AuditPageRequest<'_>> for pb::ListAuditRequest {
    fn from(page: AuditPageRequest<'_>) -> Self {
        let query = page.query;
        Self {
            action: query.action.clone(),
            actor_id: query.actor_id.clone(),
            entity_id: query.entity_id.clone(),
            from: query.from.map(timestamp),
            to: query.to.map(timestamp),
            limit: page.limit,
            cursor: page.cursor.to_owned(),
        }
    }
}
