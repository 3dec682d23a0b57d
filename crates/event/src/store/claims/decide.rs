//! Deciding a pending claim (approve, reject, expire): once, with the stock it gives back (or
//! the delivery an approval creates), its audit record and dashboard delta, in one transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use erp_platform::mongo::to_bson_time;
use futures::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{Bson, doc};
use mongodb::options::ReturnDocument;

use super::documents::ClaimDoc;
use super::{ClaimStore, DecisionAudit, SYSTEM_ACTOR};
use crate::error::EventError;
use crate::model::{Claim, ClaimStatus};
use crate::store::catalog::RewardDoc;
use crate::store::deliveries::write_outbox;
use crate::store::tallies::TallyDelta;

/// A decision about a pending claim.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decision<'a> {
    Approve { actor: &'a str },
    Reject { actor: &'a str, reason: &'a str },
    Expire { reason: &'a str },
}

impl<'a> Decision<'a> {
    /// The status the claim moves to.
    pub(crate) fn status(self) -> ClaimStatus {
        match self {
            Decision::Approve { .. } => ClaimStatus::Granted,
            Decision::Reject { .. } => ClaimStatus::Rejected,
            Decision::Expire { .. } => ClaimStatus::Expired,
        }
    }

    pub(crate) fn decided_by(self) -> &'a str {
        match self {
            Decision::Approve { actor } | Decision::Reject { actor, .. } => actor,
            Decision::Expire { .. } => SYSTEM_ACTOR,
        }
    }

    fn reason(self) -> Option<String> {
        match self {
            Decision::Approve { .. } => None,
            Decision::Reject { reason, .. } | Decision::Expire { reason } => {
                Some(reason.to_owned())
            }
        }
    }

    /// Whether the claim's stock goes back to the rewards.
    fn releases_stock(self) -> bool {
        !matches!(self, Decision::Approve { .. })
    }
}

/// A decision made: the claim as it is now, and what is left of the limited rewards it released.
#[derive(Debug)]
pub(crate) struct Decided {
    pub(crate) claim: Claim,
    pub(crate) stock_left: Vec<(String, i64)>,
    /// How many times the transaction callback ran again (write conflicts).
    pub(crate) retries: u32,
}

impl ClaimStore {
    /// Moves a pending claim to the decision's status, giving its stock back unless approved,
    /// with the audit record, in one transaction; `None` when the claim is not pending (or does
    /// not exist), and nothing changed.
    pub(crate) async fn decide(
        &self,
        claim_id: &str,
        decision: Decision<'_>,
        at: DateTime<Utc>,
        audit: &DecisionAudit<'_>,
    ) -> Result<Option<Decided>, EventError> {
        // One decider at a time per claim, across processes: an atomic single-document update
        // takes the claim's decision lock before the transaction, so two deciders (approve and
        // reject, or two overlapping expiry runs) never both apply a decision even where the
        // store's transactions would not report the write conflict. A lock left by a process
        // that died is taken over after a minute; the transaction still applies everything or
        // nothing.
        let lock = uuid::Uuid::new_v4().to_string();
        let stale = to_bson_time(at - chrono::Duration::seconds(60));
        let locked = self
            .claims
            .update_one(
                doc! {
                    "_id": claim_id,
                    "status": ClaimStatus::Pending.as_str(),
                    "$or": [{ "decision_lock": Bson::Null }, { "decision_lock_at": { "$lt": stale } }],
                },
                doc! { "$set": { "decision_lock": &lock, "decision_lock_at": to_bson_time(at) } },
            )
            .await?;
        if locked.modified_count == 0 {
            return Ok(None);
        }
        let attempts = AtomicU32::new(0);
        let mut session = self.database.client().start_session().await?;
        let decided = session
            .start_transaction()
            .and_run(
                (
                    self,
                    claim_id,
                    decision,
                    at,
                    audit,
                    &attempts,
                    lock.as_str(),
                ),
                |session, (store, claim_id, decision, at, audit, attempts, lock)| {
                    Box::pin(async move {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        store
                            .decide_in(claim_id, *decision, *at, *audit, lock, session)
                            .await
                    })
                },
            )
            .await;
        let decided = match decided {
            Ok(decided) => decided,
            Err(error) => {
                // Best effort: free the claim for another decider at once.
                let _ = self
                    .claims
                    .update_one(
                        doc! { "_id": claim_id, "decision_lock": &lock },
                        doc! { "$unset": { "decision_lock": "", "decision_lock_at": "" } },
                    )
                    .await;
                return Err(match error.get_custom::<Arc<EventError>>() {
                    Some(domain) => EventError::Shared(Arc::clone(domain)),
                    None => error.into(),
                });
            }
        };
        let retries = attempts.load(Ordering::Relaxed).saturating_sub(1);
        decided
            .map(|(after, stock_left)| {
                Ok(Decided {
                    claim: after.into_claim()?,
                    stock_left,
                    retries,
                })
            })
            .transpose()
    }

    async fn decide_in(
        &self,
        claim_id: &str,
        decision: Decision<'_>,
        at: DateTime<Utc>,
        audit: &DecisionAudit<'_>,
        lock: &str,
        session: &mut ClientSession,
    ) -> mongodb::error::Result<Option<(ClaimDoc, Vec<(String, i64)>)>> {
        let mut set = doc! {
            "status": decision.status().as_str(),
            "decided_at": to_bson_time(at),
            "decided_by": decision.decided_by(),
        };
        if let Some(reason) = decision.reason() {
            set.insert("reason", reason);
        }
        let Some(before) = self
            .claims
            .find_one_and_update(
                doc! { "_id": claim_id, "status": ClaimStatus::Pending.as_str(), "decision_lock": lock },
                doc! { "$set": set, "$unset": { "decision_lock": "", "decision_lock_at": "" } },
            )
            .return_document(ReturnDocument::Before)
            .session(&mut *session)
            .await?
        else {
            return Ok(None);
        };
        let after = ClaimDoc {
            status: decision.status().as_str().to_owned(),
            decided_at: Some(to_bson_time(at)),
            decided_by: Some(decision.decided_by().to_owned()),
            reason: decision.reason().or_else(|| before.reason.clone()),
            ..before.clone()
        };
        let mut stock_left = Vec::new();
        if decision.releases_stock() && !before.rewards.is_empty() {
            let ids: Vec<&str> = before.rewards.iter().map(|r| r.id.as_str()).collect();
            let rewards: Vec<RewardDoc> = self
                .rewards
                .find(doc! { "_id": { "$in": &ids } })
                .session(&mut *session)
                .await?
                .stream(&mut *session)
                .try_collect()
                .await?;
            // The reward as it is now decides what goes back: `remaining` = stock - claimed
            // holds for limited rewards whatever their stock was when the claim was made.
            for reward in rewards {
                let update = match reward.remaining {
                    Some(left) => {
                        stock_left.push((reward.id.clone(), left + 1));
                        doc! { "$inc": { "remaining": 1, "claimed": -1 } }
                    }
                    None => doc! { "$inc": { "claimed": -1 } },
                };
                self.rewards
                    .update_one(doc! { "_id": &reward.id }, update)
                    .session(&mut *session)
                    .await?;
            }
        }
        let (before_claim, after_claim) =
            match (before.clone().into_claim(), after.clone().into_claim()) {
                (Ok(b), Ok(a)) => (b, a),
                // Aborts the transaction; `decide` answers the domain error itself.
                (Err(error), _) | (_, Err(error)) => {
                    return Err(mongodb::error::Error::custom(Arc::new(error)));
                }
            };
        // An approval's delivery, committed with it (the other decisions grant nothing).
        let deliveries = write_outbox(&self.database, [&after_claim], &mut *session).await?;
        let mut delta = TallyDelta::default();
        delta.decided(before_claim.status, &after_claim);
        delta.deliveries_created(deliveries);
        self.tally_deltas
            .insert_one(delta.to_doc())
            .session(&mut *session)
            .await?;
        self.audit
            .record(&audit(&before_claim, &after_claim), session)
            .await?;
        Ok(Some((after, stock_left)))
    }
}
