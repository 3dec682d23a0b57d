//! `/audit`: the audit trails of both services, merged.

mod dto;

use axum::Json;
use axum::extract::State;
use erp_platform::error::ApiError;
use erp_platform::pagination::Cursor;
use erp_proto::common::v1::ListAuditRequest;
use utoipa_axum::routes;

pub(crate) use self::dto::AuditService;
use self::dto::{AuditEntry, AuditPageRequest, AuditQuery};
use super::paging::{self, DEFAULT_LIMIT, Page};
use super::responses::Problems;
use super::{Auth, Endpoint};
use crate::access::{AUDITORS, Access};
use crate::extract::QueryParams;
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] =
    &[Endpoint::new(Access::Roles(AUDITORS), || routes!(audit))];

/// The audit trail, newest first; without `service`, both services' trails merged.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "A page of audit entries", body = Page<AuditEntry>), Problems))]
async fn audit(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, Problem> {
    let limit = paging::limit(query.limit)?;
    let cursor = query.cursor.as_deref().unwrap_or_default();
    // Both trails sort by (time, id) and share the cursor format, so one cursor pages both.
    Cursor::decode(cursor).map_err(|field| Problem(ApiError::validation(vec![field])))?;
    let page = || AuditPageRequest {
        query: &query,
        limit,
        cursor,
    };
    let wants = |service| query.service.is_none() || query.service == Some(service);
    let request = || session.request(ListAuditRequest::from(page()));
    let mut answers = Vec::new();
    if wants(AuditService::Auth) {
        answers.push(state.auth().list_audit(request()).await?.into_inner());
    }
    if wants(AuditService::Event) {
        answers.push(state.event().list_audit(request()).await?.into_inner());
    }
    let mut items: Vec<AuditEntry> = Vec::new();
    let mut more = false;
    for answer in answers {
        more |= answer.next_cursor.is_some();
        items.extend(answer.items.into_iter().map(AuditEntry::from));
    }
    items.sort_by(|a, b| (b.at_millis, &b.id).cmp(&(a.at_millis, &a.id)));
    let page_size = if limit == 0 { DEFAULT_LIMIT } else { limit } as usize;
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
