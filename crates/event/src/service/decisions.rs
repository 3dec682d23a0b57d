//! Decisions about pending claims: an operator's approval or rejection, and the expiry job's.
//! Each is made once however many deciders race (see `store::claims`).

use chrono::{DateTime, SubsecRound, Utc};
use erp_platform::audit::AuditEntry;
use erp_platform::identity::Caller;

use super::EventService;
use crate::access::{EDITORS, not_own, require};
use crate::claims::{EXPIRY_PAGE, MAX_REASON_CHARS};
use crate::error::EventError;
use crate::model::Claim;
use crate::store::{Decided, Decision, SYSTEM_ACTOR};
use crate::views::{ClaimView, json};

impl EventService {
    pub(crate) async fn approve_claim(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Claim, EventError> {
        let caller = require(caller, EDITORS)?;
        self.not_own_claim(&caller, id).await?;
        let actor = caller.user_id.as_str();
        let claim = self
            .decide(id, Decision::Approve { actor }, actor, "CLAIM_APPROVED")
            .await?;
        // Its delivery is committed: push it now rather than at the next poll.
        self.delivery_due();
        Ok(claim)
    }

    pub(crate) async fn reject_claim(
        &self,
        caller: Option<&Caller>,
        id: &str,
        reason: &str,
    ) -> Result<Claim, EventError> {
        let caller = require(caller, EDITORS)?;
        if reason.trim().is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(EventError::field(
                "reason",
                format!("must be 1 to {MAX_REASON_CHARS} characters"),
            ));
        }
        self.not_own_claim(&caller, id).await?;
        let actor = caller.user_id.as_str();
        self.decide(
            id,
            Decision::Reject { actor, reason },
            actor,
            "CLAIM_REJECTED",
        )
        .await
    }

    /// Four-eyes, before the state check (an own claim is FORBIDDEN whatever its status):
    /// NOT_FOUND for no such claim, FORBIDDEN when it is `caller`'s own. A claim's owner never
    /// changes, so reading it before the decision's transaction decides nothing wrongly.
    async fn not_own_claim(&self, caller: &Caller, id: &str) -> Result<(), EventError> {
        let claim = self
            .claims
            .find(id)
            .await?
            .ok_or(EventError::NotFound("claim"))?;
        not_own(caller, &claim.user_id)
    }

    /// Applies `decision` to a pending claim; INVALID_STATE when it is not pending.
    async fn decide(
        &self,
        id: &str,
        decision: Decision<'_>,
        actor: &str,
        action: &str,
    ) -> Result<Claim, EventError> {
        let audit = |before: &Claim, after: &Claim| {
            AuditEntry::new(
                actor,
                action,
                "claim",
                &after.id,
                Some(json(&ClaimView::from(before))),
                Some(json(&ClaimView::from(after))),
            )
        };
        let at = Utc::now().trunc_subsecs(3);
        let decided = self.claims.decide(id, decision, at, &audit).await?;
        match decided {
            Some(Decided {
                claim: after,
                stock_left,
                retries,
            }) => {
                let operation = match decision {
                    Decision::Approve { .. } => "approve",
                    Decision::Reject { .. } => "reject",
                    Decision::Expire { .. } => "expire",
                };
                self.metrics
                    .transaction_retries
                    .with_label_values(&[operation])
                    .inc_by(u64::from(retries));
                self.set_remaining(&after.event_id, &stock_left);
                if matches!(decision, Decision::Approve { .. }) {
                    self.count_granted(&after);
                }
                self.changed(&after.event_id).await;
                Ok(after)
            }
            None => match self.claims.find(id).await? {
                // Decided by this very call: an earlier attempt committed but its answer was
                // lost, and the driver ran the transaction again.
                Some(claim)
                    if claim.decided_at == Some(at)
                        && claim.decided_by.as_deref() == Some(decision.decided_by())
                        && claim.status == decision.status() =>
                {
                    self.changed(&claim.event_id).await;
                    Ok(claim)
                }
                Some(_) => Err(EventError::InvalidState("the claim is not pending")),
                None => Err(EventError::NotFound("claim")),
            },
        }
    }

    fn set_remaining(&self, event_id: &str, stock_left: &[(String, i64)]) {
        for (reward_id, left) in stock_left {
            self.metrics
                .set_reward_remaining(event_id, reward_id, *left);
        }
    }

    /// Expires the pending claims whose event ended more than the configured expiry ago (by
    /// the event's current end: an extended event keeps its claims pending longer), releasing
    /// their stock. Safe to run concurrently: each expiry is a conditional update. Returns how
    /// many this run expired.
    pub(crate) async fn expire_pending(&self, now: DateTime<Utc>) -> Result<u32, EventError> {
        let events = self.claims.events_with_pending().await?;
        if events.is_empty() {
            return Ok(0);
        }
        let ends = self.catalog.ends_of(&events).await?;
        let expiry = chrono::Duration::from_std(self.pending_expiry)
            .unwrap_or_else(|_| chrono::Duration::days(365 * 1000));
        let reason = format!(
            "not decided within {} seconds after the event ended",
            self.pending_expiry.as_secs()
        );
        let mut expired = 0;
        for event_id in events {
            let Some(ends_at) = ends.get(&event_id) else {
                tracing::warn!(%event_id, "pending claims of an unknown event");
                continue;
            };
            if ends_at
                .checked_add_signed(expiry)
                .is_none_or(|deadline| deadline > now)
            {
                continue;
            }
            loop {
                let pending = self.claims.pending_of(&event_id, EXPIRY_PAGE).await?;
                for id in &pending {
                    match self
                        .decide(
                            id,
                            Decision::Expire { reason: &reason },
                            SYSTEM_ACTOR,
                            "CLAIM_EXPIRED",
                        )
                        .await
                    {
                        Ok(_) => expired += 1,
                        // Decided or expired by someone else meanwhile.
                        Err(EventError::InvalidState(_) | EventError::NotFound(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
                if i64::try_from(pending.len()).unwrap_or(i64::MAX) < EXPIRY_PAGE {
                    break;
                }
            }
        }
        Ok(expired)
    }
}
