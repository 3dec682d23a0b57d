//! `/dashboard`: figures over events, claims and grants.

mod dto;

use axum::Json;
use axum::extract::State;
use erp_proto::event::v1 as pb;
use utoipa_axum::routes;

use self::dto::Dashboard;
use super::responses::Problems;
use super::{Auth, Endpoint};
use crate::access::{Access, STAFF};
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] =
    &[Endpoint::new(Access::Roles(STAFF), || routes!(dashboard))];

/// Events by status, claims by status and per day, grants by type, top events.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "dashboard",
    responses((status = 200, description = "The dashboard", body = Dashboard), Problems))]
async fn dashboard(
    State(state): State<AppState>,
    session: Auth,
) -> Result<Json<Dashboard>, Problem> {
    let answer = state
        .event()
        .get_dashboard(session.request(pb::GetDashboardRequest {}))
        .await?
        .into_inner();
    Ok(Json(Dashboard::from(answer.dashboard.unwrap_or_default())))
}
