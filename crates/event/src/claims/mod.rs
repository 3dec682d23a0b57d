//! Claims: who may claim, when a claim is refused, and what a refusal or a repeat answers. The
//! use cases are in `service::claims` and `service::decisions`; [`batcher`] places claims.
//!
//! A claim is checked (caller, event status, an existing claim, the event's condition) and then
//! placed by the batcher, which puts the claims of one event that arrive together into one
//! transaction (see `store::claims`). A popular limited reward is a single hot document: written
//! once per claim, concurrent transactions on it conflict and retry until throughput collapses;
//! written once per batch, the conflicts are gone and every invariant (one claim per user, never
//! more than the stock, all rewards or none, atomic with the audit record) still rests on the one
//! transaction and the unique index.

pub(crate) mod batcher;
pub(crate) mod grants;

use std::time::Duration;

use crate::error::EventError;
use crate::model::Claim;
use crate::store::RecordedRequest;

pub(crate) const MAX_REASON_CHARS: usize = 500;
/// How often a claim is offered again to the batcher when the placement it joined could not
/// say what became of it (another request of the same player decided first).
pub(crate) const PLACEMENT_ROUNDS: usize = 3;
/// Pending claims expired per query of the expiry job.
pub(crate) const EXPIRY_PAGE: i64 = 100;

/// How claims are placed and expired; see [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimSettings {
    /// Most claims of one event per transaction; 0: one claim per transaction, no batching.
    pub(crate) batch_max: usize,
    /// Most claims of one event waiting for their batch (the batch in flight not counted); one
    /// more is refused at once with UNAVAILABLE.
    pub(crate) queue_max: usize,
    /// The longest any caller waits (the server's gRPC timeout): a caller's deadline is its own
    /// (`grpc-timeout`) or this, whichever comes first.
    pub(crate) call_timeout: Duration,
    /// How long after its event ends a pending claim waits before it expires.
    pub(crate) pending_expiry: Duration,
    /// Identical refusals (user, event, reason) within this window are one `CLAIM_DENIED`
    /// record with a count.
    pub(crate) denial_audit_window: Duration,
}

/// A claim's answer: the claim, and whether it is a replay of an idempotency key's first answer.
#[derive(Debug, Clone)]
pub(crate) struct ClaimOutcome {
    pub(crate) claim: Claim,
    pub(crate) replayed: bool,
}

/// How a claim attempt ended, short of a refusal.
pub(crate) enum Attempt {
    Created(Claim),
    /// The key's first answer was this claim.
    Replayed(Claim),
    /// Another request with the same key was answered first: its answer is replayed.
    Recorded(RecordedRequest),
}

/// What a refusal is called in the audit trail and metrics; `None` for errors that are not a
/// refusal of the claim itself (a store outage, a bad request).
pub(crate) fn refusal_reason(error: &EventError) -> Option<&'static str> {
    Some(match error {
        EventError::EventNotActive => "EVENT_NOT_ACTIVE",
        EventError::ConditionsNotMet { .. } => "CONDITIONS_NOT_MET",
        EventError::OutOfStock { .. } => "OUT_OF_STOCK",
        EventError::AlreadyClaimed { .. } => "ALREADY_CLAIMED",
        EventError::NotFound(_) => "NOT_FOUND",
        _ => return None,
    })
}

/// A repeat of the claim that created `existing` replays it; anything else is ALREADY_CLAIMED.
pub(crate) fn existing_answer(existing: Claim, key: Option<&str>) -> Result<Attempt, EventError> {
    match (&existing.idempotency_key, key) {
        (Some(first), Some(key)) if first == key => Ok(Attempt::Replayed(existing)),
        _ => Err(EventError::AlreadyClaimed {
            claim_id: existing.id,
        }),
    }
}
