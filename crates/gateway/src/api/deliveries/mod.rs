//! Deliveries: what was granted, for the game to put into the player's account. Game servers
//! pull them oldest first and ack each; operators re-queue failed pushes.

mod dto;

use axum::Json;
use axum::extract::State;
use erp_proto::event::v1 as pb;
use utoipa_axum::routes;

pub(crate) use self::dto::DeliveryStatus;
use self::dto::{DeliveriesQuery, Delivery};
use super::paging::{self, Page};
use super::responses::{Conflicts, Problems};
use super::{Auth, Endpoint, required};
use crate::access::{Access, DELIVERY_ACKERS, DELIVERY_READERS, EDITORS};
use crate::extract::{Path, QueryParams};
use crate::problem::Problem;
use crate::state::AppState;

pub(super) const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new(Access::Roles(DELIVERY_READERS), || routes!(list)),
    Endpoint::new(Access::Roles(DELIVERY_READERS), || routes!(get)),
    Endpoint::new(Access::Roles(DELIVERY_ACKERS), || routes!(ack)),
    Endpoint::new(Access::Roles(EDITORS), || routes!(retry)),
];

/// Deliveries, oldest first (a work queue), with filters.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "deliveries", params(DeliveriesQuery),
    responses((status = 200, description = "A page of deliveries", body = Page<Delivery>), Problems))]
async fn list(
    State(state): State<AppState>,
    session: Auth,
    QueryParams(query): QueryParams<DeliveriesQuery>,
) -> Result<Json<Page<Delivery>>, Problem> {
    let page = state
        .event()
        .list_deliveries(session.request(pb::ListDeliveriesRequest {
            status: query.status.map(DeliveryStatus::to_pb),
            user_id: query.user_id,
            event_id: query.event_id,
            limit: paging::limit(query.limit)?,
            cursor: query.cursor.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    Ok(Page::of(page.items, page.next_cursor))
}

/// One delivery.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery", body = Delivery), Problems))]
async fn get(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, Problem> {
    let found = state
        .event()
        .get_delivery(session.request(pb::GetDeliveryRequest { id }))
        .await?;
    required(found.into_inner().delivery)
}

/// The game applied it: `DELIVERED`. Acking again answers the same and changes nothing.
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/ack", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "DELIVERED", body = Delivery), Problems))]
async fn ack(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, Problem> {
    let acked = state
        .event()
        .ack_delivery(session.request(pb::AckDeliveryRequest { id }))
        .await?;
    required(acked.into_inner().delivery)
}

/// Put a `FAILED` delivery back to `PENDING` with its attempts reset.
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "PENDING again", body = Delivery), Problems, Conflicts))]
async fn retry(
    State(state): State<AppState>,
    session: Auth,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, Problem> {
    let retried = state
        .event()
        .retry_delivery(session.request(pb::RetryDeliveryRequest { id }))
        .await?;
    required(retried.into_inner().delivery)
}
