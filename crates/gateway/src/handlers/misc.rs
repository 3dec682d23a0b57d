//! Progress reports, the audit trail of both services and the dashboard.

use axum::Json;
use axum::extract::State;
use erp_platform::error::ApiError;
use erp_platform::pagination::Cursor;
use erp_proto::{auth::v1 as auth_pb, event::v1 as event_pb};

use super::{Auth, Problems};
use crate::dto::{
    self, AuditEntry, AuditQuery, AuditService, Dashboard, Page, ProgressAccepted, ProgressBody,
    timestamp,
};
use crate::extract::{JsonBody, QueryParams};
use crate::problem::Problem;
use crate::state::{AppState, upstream};

/// Report player activity (1..1000 items).
#[utoipa::path(post, path = "/api/v1/progress", tag = "progress", security(("bearer" = [])), request_body = ProgressBody,
    responses((status = 200, description = "Accepted and duplicate counts", body = ProgressAccepted), Problems))]
pub async fn report(
    State(state): State<AppState>,
    session: Auth,
    JsonBody(body): JsonBody<ProgressBody>,
) -> Result<Json<ProgressAccepted>, Problem> {
    let items = body
        .items
        .into_iter()
        .map(|item| event_pb::ProgressItem {
            user_id: item.user_id,
            metric: item.metric,
            value: item.value,
            mode: match item.mode {
                dto::ProgressMode::Increment => event_pb::ProgressMode::Increment,
                dto::ProgressMode::Max => event_pb::ProgressMode::Max,
            } as i32,
            occurred_at: item.occurred_at.map(timestamp),
            key: item.key,
        })
        .collect();
    let answer = state
        .event
        .clone()
        .report_progress(upstream(
            event_pb::ReportProgressRequest { items },
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(Json(ProgressAccepted {
        accepted: answer.accepted,
        duplicates: answer.duplicates,
    }))
}

/// The audit trail, newest first; without `service`, both services' trails merged.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, description = "A page of audit entries", body = Page<AuditEntry>), Problems))]
pub async fn audit(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, Problem> {
    let limit = dto::limit(query.limit)?;
    let cursor = query.cursor.unwrap_or_default();
    // Both trails sort by (time, id) and share the cursor format, so one cursor pages both.
    Cursor::decode(&cursor).map_err(|field| Problem(ApiError::validation(vec![field])))?;
    let wants = |service| query.service.is_none() || query.service == Some(service);
    let mut items: Vec<AuditEntry> = Vec::new();
    let mut more = false;
    if wants(AuditService::Auth) {
        let page = state
            .auth
            .clone()
            .list_audit(upstream(
                auth_pb::ListAuditRequest {
                    action: query.action.clone(),
                    actor_id: query.actor_id.clone(),
                    entity_id: query.entity_id.clone(),
                    from: query.from.map(timestamp),
                    to: query.to.map(timestamp),
                    limit,
                    cursor: cursor.clone(),
                },
                Some(&session.caller),
            ))
            .await?
            .into_inner();
        more |= page.next_cursor.is_some();
        items.extend(page.items.into_iter().map(AuditEntry::from));
    }
    if wants(AuditService::Event) {
        let page = state
            .event
            .clone()
            .list_audit(upstream(
                event_pb::ListAuditRequest {
                    action: query.action.clone(),
                    actor_id: query.actor_id.clone(),
                    entity_id: query.entity_id.clone(),
                    from: query.from.map(timestamp),
                    to: query.to.map(timestamp),
                    limit,
                    cursor: cursor.clone(),
                },
                Some(&session.caller),
            ))
            .await?
            .into_inner();
        more |= page.next_cursor.is_some();
        items.extend(page.items.into_iter().map(AuditEntry::from));
    }
    items.sort_by(|a, b| (b.at_millis, &b.id).cmp(&(a.at_millis, &a.id)));
    let page_size = if limit == 0 { 20 } else { limit as usize };
    more |= items.len() > page_size;
    items.truncate(page_size);
    let next_cursor = if more {
        items.last().map(|last| {
            Cursor {
                at_millis: last.at_millis,
                id: last.id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Events by status, claims by status and per day, grants by type, top events.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "dashboard", security(("bearer" = [])),
    responses((status = 200, description = "The dashboard", body = Dashboard), Problems))]
pub async fn dashboard(
    State(state): State<AppState>,
    session: Auth,
) -> Result<Json<Dashboard>, Problem> {
    let answer = state
        .event
        .clone()
        .get_dashboard(upstream(
            event_pb::GetDashboardRequest {},
            Some(&session.caller),
        ))
        .await?
        .into_inner();
    Ok(Json(Dashboard::from(answer.dashboard.unwrap_or_default())))
}
