//! Reward deliveries as game servers and operators see them: the pull API (list oldest first,
//! get, ack), an operator's retry of a failed delivery, and the delivery a granted claim shows.

use std::collections::HashMap;

use erp_platform::identity::{Caller, Role};
use erp_platform::pagination::Page;

use super::EventService;
use crate::access::require;
use crate::deliveries::{ClaimDelivery, Delivery, DeliveryFilter};
use crate::error::EventError;
use crate::model::Claim;
use crate::paging::paging;
use crate::store::Moved;

/// Who may read deliveries: the game servers that apply them, and staff.
const DELIVERY_READERS: &[Role] = &[Role::GameServer, Role::Operator, Role::Auditor, Role::Admin];
/// Who may ack one: the game servers that applied it (and admins).
const DELIVERY_ACKERS: &[Role] = &[Role::GameServer, Role::Admin];
/// Who may send a failed one again.
const DELIVERY_RETRIERS: &[Role] = &[Role::Operator, Role::Admin];

impl EventService {
    /// Deliveries oldest first (a work queue).
    pub(crate) async fn list_deliveries(
        &self,
        caller: Option<&Caller>,
        filter: DeliveryFilter,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<Delivery>, EventError> {
        require(caller, DELIVERY_READERS)?;
        let (limit, cursor) = paging(limit, cursor)?;
        self.deliveries.list(&filter, limit, cursor.as_ref()).await
    }

    pub(crate) async fn get_delivery(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Delivery, EventError> {
        require(caller, DELIVERY_READERS)?;
        self.deliveries
            .find(id)
            .await?
            .ok_or(EventError::NotFound("delivery"))
    }

    /// PENDING or FAILED -> DELIVERED; a delivered one is answered as it is, unchanged.
    pub(crate) async fn ack_delivery(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Delivery, EventError> {
        let caller = require(caller, DELIVERY_ACKERS)?;
        match self.deliveries.deliver(id, &caller.user_id).await? {
            Moved::Done(delivery) => {
                self.count_delivery("acked");
                Ok(delivery)
            }
            // Only a delivered one is left unchanged by an ack.
            Moved::Unchanged(delivery) => Ok(delivery),
            Moved::NotFound => Err(EventError::NotFound("delivery")),
        }
    }

    /// FAILED -> PENDING with attempts reset; INVALID_STATE from another status.
    pub(crate) async fn retry_delivery(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Delivery, EventError> {
        let caller = require(caller, DELIVERY_RETRIERS)?;
        match self.deliveries.retry(id, &caller.user_id).await? {
            Moved::Done(delivery) => {
                self.count_delivery("retried");
                self.delivery_due();
                Ok(delivery)
            }
            Moved::Unchanged(_) => Err(EventError::InvalidState(
                "only a FAILED delivery can be retried",
            )),
            Moved::NotFound => Err(EventError::NotFound("delivery")),
        }
    }

    /// The current delivery of each granted claim of `claims`, by claim id.
    pub(crate) async fn deliveries_of(
        &self,
        claims: &[Claim],
    ) -> Result<HashMap<String, ClaimDelivery>, EventError> {
        let granted: Vec<&str> = claims
            .iter()
            .filter(|c| c.status == crate::model::ClaimStatus::Granted)
            .map(|c| c.id.as_str())
            .collect();
        self.deliveries.of_claims(&granted).await
    }

    /// Tells this replica's dispatcher that a delivery became due (a grant committed, a retry).
    pub(crate) fn delivery_due(&self) {
        self.delivery_wake.notify_one();
    }

    fn count_delivery(&self, outcome: &str) {
        self.metrics.deliveries.with_label_values(&[outcome]).inc();
    }
}
