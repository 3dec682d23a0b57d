//! Grants (compensation): an operator gives an event's rewards to up to 1,000 listed players.
//! The rules are in `crate::claims::grants`; the claims are placed by the claim path's own
//! placement (`ClaimStore::place_grants`: one transaction per batch, one claim per (event, user)
//! under the unique index, never more than the stock, a CLAIM_GRANTED record per claim).

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use erp_platform::audit::AuditEntry;
use erp_platform::identity::Caller;

use super::EventService;
use crate::access::{EDITORS, require};
use crate::claims::grants::{
    self, GRANT_BATCH_MAX, GrantAnswer, GrantOutcome, GrantRequest, GrantResult,
};
use crate::conditions::Evaluation;
use crate::error::EventError;
use crate::model::{Claim, ClaimSource, ClaimStatus, Event, EventSnapshot, EventStatus};
use crate::store::{GrantLease, GrantRecord, Placement};
use crate::views::{ClaimView, json};

/// How often a repeat of a running grant looks for its answer.
const RUNNING_POLL: Duration = Duration::from_millis(50);
/// How long before the call timeout a repeat of a running grant stops waiting for its answer.
const RUNNING_MARGIN: Duration = Duration::from_millis(100);
/// The `Retry-After` of a repeat whose first request is still running when it gives up.
const RUNNING_RETRY_AFTER: Duration = Duration::from_secs(1);

impl EventService {
    /// Grants `request.event_id`'s rewards to the listed users (see API.md "Grants"). The key
    /// is scoped to the caller: a repeat returns the first answer (`replayed`), a concurrent
    /// repeat waits for it (at most the call timeout, then UNAVAILABLE with `Retry-After`).
    pub(crate) async fn grant(
        &self,
        caller: Option<&Caller>,
        request: GrantRequest,
    ) -> Result<GrantAnswer, EventError> {
        let caller = require(caller, EDITORS)?;
        let reason = grants::validate(&request)?;
        let key = request.idempotency_key.as_str();
        // Answered before the server's own timeout cuts the call.
        let now = Instant::now();
        let give_up = self
            .batcher
            .deadline(now, None)
            .checked_sub(RUNNING_MARGIN)
            .unwrap_or(now);
        let mut event: Option<Event> = None;
        let lease = loop {
            match self.claims.find_grant(&caller.user_id, key).await? {
                Some(GrantRecord::Answered { event_id, results }) => {
                    same_event(&event_id, &request.event_id)?;
                    return Ok(GrantAnswer {
                        results,
                        replayed: true,
                    });
                }
                Some(GrantRecord::Abandoned { lease, event_id }) => {
                    same_event(&event_id, &request.event_id)?;
                    if let Some(taken) = self
                        .claims
                        .take_over_grant(&caller.user_id, key, &lease)
                        .await?
                    {
                        break taken;
                    }
                }
                Some(GrantRecord::Running) => {
                    if Instant::now() + RUNNING_POLL > give_up {
                        return Err(EventError::Overloaded {
                            retry_after: RUNNING_RETRY_AFTER,
                        });
                    }
                    tokio::time::sleep(RUNNING_POLL).await;
                }
                None => {
                    // Refusals of the whole grant are not recorded: they changed nothing, and
                    // a repeat is checked afresh.
                    if event.is_none() {
                        event = Some(self.grantable_event(&request.event_id).await?);
                    }
                    if let Some(reserved) = self
                        .claims
                        .reserve_grant(&caller.user_id, key, &request.event_id)
                        .await?
                    {
                        break reserved;
                    }
                }
            }
        };
        let run = async {
            let event = match event {
                Some(event) => event,
                // Taken over: the event is checked now.
                None => self.grantable_event(&request.event_id).await?,
            };
            self.run_grant(&caller, &event, &request, &reason, &lease)
                .await
        };
        match run.await {
            Ok(results) => {
                // Its deliveries are committed: push them now rather than at the next poll.
                self.delivery_due();
                self.claims.answer_grant(&lease, &results).await?;
                Ok(GrantAnswer {
                    results,
                    replayed: false,
                })
            }
            Err(error) => {
                // A repeat runs it again at once; what this run granted counts as its own.
                if let Err(release) = self.claims.release_grant(&lease).await {
                    tracing::warn!(%release, "a failed grant's reservation was not released");
                }
                Err(error)
            }
        }
    }

    /// The event as stored, if it can be granted: NOT_FOUND when unknown or deleted,
    /// EVENT_NOT_ACTIVE when a draft or canceled (a grant skips the window, not the
    /// publication). The placement's transaction checks again.
    async fn grantable_event(&self, event_id: &str) -> Result<Event, EventError> {
        let event = self.stored_event(event_id).await?;
        match event.status_at(Utc::now()) {
            EventStatus::Draft | EventStatus::Canceled => Err(EventError::EventNotActive),
            _ => Ok(event),
        }
    }

    /// Sorts the listed ids, places a claim for each candidate that has none, and answers a
    /// result per listed id in order.
    async fn run_grant(
        &self,
        caller: &Caller,
        event: &Event,
        request: &GrantRequest,
        reason: &str,
        lease: &GrantLease,
    ) -> Result<Vec<GrantResult>, EventError> {
        let screened = grants::screen(&caller.user_id, &request.user_ids, &request.active_user_ids);
        let mut decided = screened.decided;
        let users: Vec<&str> = screened.candidates.iter().map(|(_, id)| *id).collect();
        // One query answers the common case (users who already claimed) without a transaction
        // aborted on the unique index; a claim racing in is still caught by the placement.
        let existing = self.claims.claims_of_users(&event.id, &users).await?;
        let now = Utc::now().trunc_subsecs(3);
        let mut to_place: Vec<(usize, Claim)> = Vec::new();
        for (index, user_id) in screened.candidates {
            let result = match existing.get(user_id) {
                Some(claim)
                    if grants::made_by_this_grant(
                        claim,
                        &caller.user_id,
                        reason,
                        lease.reserved_at,
                    ) =>
                {
                    granted(user_id, &claim.id)
                }
                Some(claim) => GrantResult {
                    user_id: user_id.to_owned(),
                    outcome: GrantOutcome::AlreadyClaimed,
                    claim_id: Some(claim.id.clone()),
                },
                None => {
                    to_place.push((index, grant_claim(event, user_id, caller, reason, now)));
                    continue;
                }
            };
            decided.insert(index, result);
        }
        let audit = |claim: &Claim| {
            AuditEntry::new(
                &caller.user_id,
                "CLAIM_GRANTED",
                "claim",
                &claim.id,
                None,
                Some(json(&ClaimView::from(claim))),
            )
        };
        let mut any_placed = false;
        for chunk in to_place.chunks(GRANT_BATCH_MAX) {
            let claims: Vec<Claim> = chunk.iter().map(|(_, claim)| claim.clone()).collect();
            let mut placed = self.claims.place_grants(&event.id, &claims, &audit).await?;
            self.metrics
                .transaction_retries
                .with_label_values(&["grant"])
                .inc_by(u64::from(placed.retries));
            for (reward_id, left) in &placed.stock_left {
                self.metrics
                    .set_reward_remaining(&event.id, reward_id, *left);
            }
            for (index, claim) in chunk {
                let placement = placed
                    .placements
                    .remove(&claim.id)
                    .ok_or(EventError::Internal("a grant of the batch went missing"))?;
                let result = match placement {
                    Placement::Placed(claim) => {
                        any_placed = true;
                        self.metrics.count_event_claim(&event.id);
                        self.count_granted(&claim);
                        granted(&claim.user_id, &claim.id)
                    }
                    Placement::Existing(existing) => GrantResult {
                        user_id: claim.user_id.clone(),
                        outcome: GrantOutcome::AlreadyClaimed,
                        claim_id: Some(existing.id),
                    },
                    Placement::OutOfStock { .. } => GrantResult {
                        user_id: claim.user_id.clone(),
                        outcome: GrantOutcome::OutOfStock,
                        claim_id: None,
                    },
                    // Deleted, or made a draft's opposite (canceled), while the grant ran.
                    Placement::EventGone => {
                        self.grant_changed(&event.id, any_placed).await;
                        return Err(EventError::NotFound("event"));
                    }
                    Placement::EventNotActive => {
                        self.grant_changed(&event.id, any_placed).await;
                        return Err(EventError::EventNotActive);
                    }
                    Placement::KeyTaken => {
                        return Err(EventError::Internal("a grant's claim carried a key"));
                    }
                };
                decided.insert(*index, result);
            }
        }
        self.grant_changed(&event.id, any_placed).await;
        grants::in_order(&request.user_ids, decided, &screened.repeats)
    }

    /// Tells every replica's cache that the event's stock moved, when a grant placed claims.
    async fn grant_changed(&self, event_id: &str, any_placed: bool) {
        if any_placed {
            self.changed(event_id).await;
        }
    }
}

/// A key is one grant: used again for another event, it is a mistake, not a repeat.
fn same_event(recorded: &str, requested: &str) -> Result<(), EventError> {
    if recorded == requested {
        Ok(())
    } else {
        Err(EventError::field(
            "Idempotency-Key",
            "was already used for a grant on another event",
        ))
    }
}

fn granted(user_id: &str, claim_id: &str) -> GrantResult {
    GrantResult {
        user_id: user_id.to_owned(),
        outcome: GrantOutcome::Granted,
        claim_id: Some(claim_id.to_owned()),
    }
}

/// The claim a grant makes: GRANTED at once, decided and granted by the operator, with the
/// grant's reason. A grant skips the condition, so its evaluation is not computed (that would
/// be a query per user): it is the passed evaluation with no details, as for an event without a
/// condition. The reward snapshots are filled in by the placement, as for any claim.
fn grant_claim(
    event: &Event,
    user_id: &str,
    caller: &Caller,
    reason: &str,
    now: chrono::DateTime<Utc>,
) -> Claim {
    Claim {
        id: uuid::Uuid::now_v7().to_string(),
        event_id: event.id.clone(),
        user_id: user_id.to_owned(),
        status: ClaimStatus::Granted,
        rewards: Vec::new(),
        event: EventSnapshot {
            title: event.title.clone(),
            starts_at: event.starts_at,
            ends_at: event.ends_at,
        },
        evaluation: Evaluation {
            passed: true,
            details: Vec::new(),
        },
        requested_at: now,
        decided_at: Some(now),
        decided_by: Some(caller.user_id.clone()),
        reason: Some(reason.to_owned()),
        idempotency_key: None,
        source: ClaimSource::Grant,
        granted_by: Some(caller.user_id.clone()),
    }
}
