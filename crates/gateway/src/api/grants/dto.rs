//! The JSON shapes of `/grants`.

use erp_proto::event::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most user ids one grant may name.
pub(super) const MAX_USERS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GrantBody {
    pub event_id: String,
    /// 1..1000 user ids; the results come back in this order.
    #[schema(min_items = 1, max_items = 1000)]
    pub user_ids: Vec<String>,
    /// Why: kept on each claim and in the audit trail.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum GrantOutcome {
    Granted,
    /// The user already has a claim for the event (`claimId` names it).
    AlreadyClaimed,
    OutOfStock,
    /// Not an existing, enabled person.
    NotFound,
    /// The caller's own id.
    Forbidden,
}

impl GrantOutcome {
    fn from_pb(value: i32) -> Option<Self> {
        match pb::GrantOutcome::try_from(value).ok()? {
            pb::GrantOutcome::Granted => Some(GrantOutcome::Granted),
            pb::GrantOutcome::AlreadyClaimed => Some(GrantOutcome::AlreadyClaimed),
            pb::GrantOutcome::OutOfStock => Some(GrantOutcome::OutOfStock),
            pb::GrantOutcome::NotFound => Some(GrantOutcome::NotFound),
            pb::GrantOutcome::Forbidden => Some(GrantOutcome::Forbidden),
            pb::GrantOutcome::Unspecified => None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GrantResult {
    pub user_id: String,
    pub outcome: GrantOutcome,
    pub claim_id: Option<String>,
}

impl GrantResult {
    /// The public form of a service's result; `None` for an outcome it did not name.
    pub(super) fn of(result: pb::GrantResult) -> Option<Self> {
        Some(Self {
            outcome: GrantOutcome::from_pb(result.outcome)?,
            user_id: result.user_id,
            claim_id: result.claim_id,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct GrantResults {
    pub results: Vec<GrantResult>,
}
