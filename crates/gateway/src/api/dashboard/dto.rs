//! The JSON shapes of `/dashboard`.

use std::collections::BTreeMap;

use erp_proto::event::v1 as pb;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DayCount {
    pub day: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DashboardEvents {
    pub by_status: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DashboardClaims {
    pub by_status: BTreeMap<String, i64>,
    pub per_day: Vec<DayCount>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DashboardRewards {
    pub granted_by_type: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TopEvent {
    pub event_id: String,
    pub title: String,
    pub claims: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DashboardDeliveries {
    /// `PENDING`, `DELIVERED` and `FAILED`, each present.
    pub by_status: BTreeMap<String, i64>,
    /// Age of the oldest pending delivery; `null` when none is pending.
    pub oldest_pending_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Dashboard {
    pub events: DashboardEvents,
    pub claims: DashboardClaims,
    pub rewards: DashboardRewards,
    pub top_events: Vec<TopEvent>,
    pub deliveries: DashboardDeliveries,
}

impl From<pb::Dashboard> for Dashboard {
    fn from(d: pb::Dashboard) -> Self {
        let events = d.events.unwrap_or_default();
        let claims = d.claims.unwrap_or_default();
        let rewards = d.rewards.unwrap_or_default();
        let deliveries = d.deliveries.unwrap_or_default();
        Self {
            events: DashboardEvents {
                by_status: events.by_status.into_iter().collect(),
            },
            claims: DashboardClaims {
                by_status: claims.by_status.into_iter().collect(),
                per_day: claims.per_day.into_iter().map(DayCount::from).collect(),
            },
            rewards: DashboardRewards {
                granted_by_type: rewards.granted_by_type.into_iter().collect(),
            },
            top_events: d.top_events.into_iter().map(TopEvent::from).collect(),
            deliveries: DashboardDeliveries {
                by_status: deliveries.by_status.into_iter().collect(),
                oldest_pending_seconds: deliveries.oldest_pending_seconds,
            },
        }
    }
}

impl From<pb::DayCount> for DayCount {
    fn from(d: pb::DayCount) -> Self {
        Self {
            day: d.day,
            count: d.count,
        }
    }
}

impl From<pb::TopEvent> for TopEvent {
    fn from(t: pb::TopEvent) -> Self {
        Self {
            event_id: t.event_id,
            title: t.title,
            claims: t.claims,
        }
    }
}
