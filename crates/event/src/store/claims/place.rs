//! Placing a batch of claims: one transaction that checks the event, takes the stock, inserts
//! the claims with their idempotency records, the deliveries of the granted ones, audit records
//! and dashboard delta.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use erp_platform::mongo::{from_bson_time, is_duplicate_key};
use futures::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use serde::Deserialize;

use super::documents::{ClaimDoc, RequestDoc, snapshot};
use super::{ClaimAudit, ClaimStore, STOCK_MOVED_ATTEMPTS, count};
use crate::error::EventError;
use crate::model::{Claim, EventStatus, Publication, RewardSnapshot};
use crate::store::catalog::RewardDoc;
use crate::store::deliveries::write_outbox;
use crate::store::tallies::TallyDelta;

/// What became of one claim of a batch.
#[derive(Debug, Clone)]
pub(crate) enum Placement {
    /// Inserted, with its reward snapshots filled in.
    Placed(Claim),
    /// The user already had a claim on the event (placed concurrently, maybe by another replica).
    Existing(Claim),
    OutOfStock {
        reward_id: String,
    },
    /// Another request of this user with the same idempotency key was answered first.
    KeyTaken,
    /// The event was deleted after the claim was checked.
    EventGone,
    /// The event stopped being active (ended, canceled) after the claim was checked.
    EventNotActive,
}

/// The outcome of a batch: a placement per claim id, and what is left of each limited reward.
#[derive(Debug, Default)]
pub(crate) struct PlacedBatch {
    pub(crate) placements: HashMap<String, Placement>,
    pub(crate) stock_left: Vec<(String, i64)>,
    /// How many times a transaction callback ran again (write conflicts).
    pub(crate) retries: u32,
}

/// What the one transaction of a batch did.
struct BatchWrite {
    granted: Vec<Claim>,
    /// The reward that ran out, when not every claim could be granted.
    short_of: Option<String>,
    stock_left: Vec<(String, i64)>,
    /// Set when the event was deleted or stopped being active since the claims were checked:
    /// none is granted.
    closed: Option<Placement>,
}

/// Raised inside a transaction to abort it when a limited reward no longer had the units read a
/// moment before.
#[derive(Debug)]
struct StockMoved;

/// What decides whether claims may still be placed: the event's publication and window, read
/// inside the transaction. The domain's status rule decides ([`EventStatus::of`]).
#[derive(Debug, Deserialize)]
struct EventWindow {
    publication: String,
    starts_at: BsonDateTime,
    ends_at: BsonDateTime,
}

/// Which events a batch may be placed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// A player's claim: the event must be active (published, inside its window).
    Window,
    /// An operator's grant skips the window: any published event (scheduled, active, ended).
    Published,
}

impl EventWindow {
    fn admits(&self, admission: Admission, now: chrono::DateTime<Utc>) -> bool {
        Publication::parse(&self.publication).is_some_and(|publication| {
            let status = EventStatus::of(
                publication,
                from_bson_time(self.starts_at),
                from_bson_time(self.ends_at),
                now,
            );
            match admission {
                Admission::Window => status == EventStatus::Active,
                Admission::Published => {
                    !matches!(status, EventStatus::Draft | EventStatus::Canceled)
                }
            }
        })
    }
}

impl ClaimStore {
    /// Places `batch` (claims of one event by distinct users, reward snapshots still empty)
    /// in as few transactions as it takes: claims whose user already has one, or whose
    /// idempotency key was answered meanwhile, are set aside and the rest tried again.
    pub(crate) async fn place(
        &self,
        event_id: &str,
        batch: &[Claim],
        audit: &ClaimAudit<'_>,
    ) -> Result<PlacedBatch, EventError> {
        self.place_admitted(event_id, batch, audit, Admission::Window)
            .await
    }

    /// Places an operator's grants exactly as [`Self::place`] places claims (one transaction
    /// for the batch, one claim per user, never more than the stock), except that the event's
    /// window is not checked: a scheduled or ended event can be granted, a draft or canceled
    /// one cannot (`EventNotActive`).
    pub(crate) async fn place_grants(
        &self,
        event_id: &str,
        batch: &[Claim],
        audit: &ClaimAudit<'_>,
    ) -> Result<PlacedBatch, EventError> {
        self.place_admitted(event_id, batch, audit, Admission::Published)
            .await
    }

    async fn place_admitted(
        &self,
        event_id: &str,
        batch: &[Claim],
        audit: &ClaimAudit<'_>,
        admission: Admission,
    ) -> Result<PlacedBatch, EventError> {
        let mut outcome = PlacedBatch::default();
        let mut remaining: Vec<&Claim> = batch.iter().collect();
        let mut stock_moved = 0;
        while !remaining.is_empty() {
            let attempts = AtomicU32::new(0);
            let written = self
                .write_batch(event_id, &remaining, audit, admission, &attempts)
                .await;
            outcome.retries += attempts.load(Ordering::Relaxed).saturating_sub(1);
            match written {
                Ok(write) => {
                    let short_of = write.short_of.unwrap_or_default();
                    let granted: HashSet<String> =
                        write.granted.iter().map(|c| c.id.clone()).collect();
                    for claim in write.granted {
                        outcome
                            .placements
                            .insert(claim.id.clone(), Placement::Placed(claim));
                    }
                    for claim in remaining.iter().filter(|c| !granted.contains(&c.id)) {
                        let refused = write.closed.clone().unwrap_or(Placement::OutOfStock {
                            reward_id: short_of.clone(),
                        });
                        outcome.placements.insert(claim.id.clone(), refused);
                    }
                    outcome.stock_left = write.stock_left;
                    return Ok(outcome);
                }
                Err(error) if error.get_custom::<StockMoved>().is_some() => {
                    stock_moved += 1;
                    if stock_moved >= STOCK_MOVED_ATTEMPTS {
                        return Err(EventError::Internal(
                            "a reward's stock kept moving under the claim transaction",
                        ));
                    }
                }
                Err(error) if is_duplicate_key(&error) => {
                    let set_aside = self.set_aside(event_id, &remaining).await?;
                    if set_aside.is_empty() {
                        return Err(error.into());
                    }
                    remaining.retain(|claim| !set_aside.contains_key(&claim.id));
                    outcome.placements.extend(set_aside);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(outcome)
    }

    /// The claims `users` already have on `event_id`, by user id, in one query.
    pub(crate) async fn claims_of_users(
        &self,
        event_id: &str,
        users: &[&str],
    ) -> Result<HashMap<String, Claim>, EventError> {
        let docs: Vec<ClaimDoc> = self
            .claims
            .find(doc! { "event_id": event_id, "user_id": { "$in": users } })
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(|doc| {
                let claim = doc.into_claim()?;
                Ok((claim.user_id.clone(), claim))
            })
            .collect()
    }

    /// After a duplicate-key error: the claims of `batch` that can no longer be placed, with why.
    async fn set_aside(
        &self,
        event_id: &str,
        batch: &[&Claim],
    ) -> Result<HashMap<String, Placement>, EventError> {
        let users: Vec<&str> = batch.iter().map(|c| c.user_id.as_str()).collect();
        let existing = self.claims_of_users(event_id, &users).await?;
        let keyed: Vec<Document> = batch
            .iter()
            .filter_map(|c| {
                c.idempotency_key
                    .as_ref()
                    .map(|key| doc! { "user_id": &c.user_id, "key": key })
            })
            .collect();
        let mut taken: HashSet<(String, String)> = HashSet::new();
        if !keyed.is_empty() {
            let records: Vec<RequestDoc> = self
                .requests
                .find(doc! { "$or": keyed })
                .await?
                .try_collect()
                .await?;
            taken.extend(records.into_iter().map(|r| (r.user_id, r.key)));
        }
        let mut set_aside = HashMap::new();
        for claim in batch {
            if let Some(existing) = existing.get(&claim.user_id) {
                // Our own id: an earlier attempt of this batch did commit (its commit answer
                // was lost and the driver ran the transaction again), so this claim is placed.
                let placement = if existing.id == claim.id {
                    Placement::Placed(existing.clone())
                } else {
                    Placement::Existing(existing.clone())
                };
                set_aside.insert(claim.id.clone(), placement);
            } else if let Some(key) = &claim.idempotency_key
                && taken.contains(&(claim.user_id.clone(), key.clone()))
            {
                set_aside.insert(claim.id.clone(), Placement::KeyTaken);
            }
        }
        Ok(set_aside)
    }

    /// The transaction of one batch attempt; see the module documentation.
    async fn write_batch(
        &self,
        event_id: &str,
        batch: &[&Claim],
        audit: &ClaimAudit<'_>,
        admission: Admission,
        attempts: &AtomicU32,
    ) -> mongodb::error::Result<BatchWrite> {
        let mut session = self.database.client().start_session().await?;
        session
            .start_transaction()
            .and_run(
                (self, event_id, batch, audit, admission, attempts),
                |session, (store, event_id, batch, audit, admission, attempts)| {
                    Box::pin(async move {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        store
                            .write_batch_in(event_id, batch, *audit, *admission, session)
                            .await
                    })
                },
            )
            .await
    }

    async fn write_batch_in(
        &self,
        event_id: &str,
        batch: &[&Claim],
        audit: &ClaimAudit<'_>,
        admission: Admission,
        session: &mut ClientSession,
    ) -> mongodb::error::Result<BatchWrite> {
        // The claims were checked against a cached event; what this transaction sees decides.
        let event = self
            .events
            .clone_with_type::<EventWindow>()
            .find_one(doc! { "_id": event_id, "deleted_at": Bson::Null })
            .projection(doc! { "publication": 1, "starts_at": 1, "ends_at": 1 })
            .session(&mut *session)
            .await?;
        let closed = match event {
            None => Some(Placement::EventGone),
            Some(event) if !event.admits(admission, Utc::now()) => Some(Placement::EventNotActive),
            Some(_) => None,
        };
        if closed.is_some() {
            return Ok(BatchWrite {
                granted: Vec::new(),
                short_of: None,
                stock_left: Vec::new(),
                closed,
            });
        }
        let rewards: Vec<RewardDoc> = self
            .rewards
            .find(doc! { "event_id": event_id, "deleted_at": Bson::Null })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .session(&mut *session)
            .await?
            .stream(&mut *session)
            .try_collect()
            .await?;
        // Units every claim of the batch needs of each limited reward: one. The scarcest one
        // decides how many claims (the first ones, in arrival order) are granted.
        let wanted = count(batch.len());
        let scarcest = rewards
            .iter()
            .filter_map(|r| r.remaining.map(|left| (left, r.id.clone())))
            .min_by_key(|(left, _)| *left);
        let (grantable, short_of) = match scarcest {
            Some((left, id)) if left < wanted => (left.max(0), Some(id)),
            _ => (wanted, None),
        };
        let snapshots: Vec<RewardSnapshot> = rewards.iter().map(snapshot).collect();
        let granted: Vec<Claim> = batch
            .iter()
            .take(usize::try_from(grantable).unwrap_or(0))
            .map(|claim| Claim {
                rewards: snapshots.clone(),
                ..(*claim).clone()
            })
            .collect();
        let mut stock_left = Vec::new();
        if granted.is_empty() {
            // Nothing changes: commit the empty transaction, report the stock as read.
            stock_left.extend(
                rewards
                    .iter()
                    .filter_map(|r| r.remaining.map(|left| (r.id.clone(), left))),
            );
            return Ok(BatchWrite {
                granted,
                short_of,
                stock_left,
                closed: None,
            });
        }
        let docs: Vec<ClaimDoc> = granted.iter().map(ClaimDoc::from_claim).collect();
        self.claims
            .insert_many(docs.iter())
            .session(&mut *session)
            .await?;
        let records: Vec<RequestDoc> = granted
            .iter()
            .filter_map(|claim| {
                claim.idempotency_key.as_ref().map(|key| RequestDoc {
                    claim_id: Some(claim.id.clone()),
                    ..RequestDoc::new(&claim.user_id, key, event_id)
                })
            })
            .collect();
        if !records.is_empty() {
            self.requests
                .insert_many(records.iter())
                .session(&mut *session)
                .await?;
        }
        // The outbox: a delivery for each claim granted here, committed with it.
        let deliveries = write_outbox(&self.database, &granted, &mut *session).await?;
        let mut delta = TallyDelta::default();
        delta.deliveries_created(deliveries);
        for claim in &granted {
            self.audit.record(&audit(claim), session).await?;
            delta.created(claim);
        }
        self.tally_deltas
            .insert_one(delta.to_doc())
            .session(&mut *session)
            .await?;
        // The rewards are the contended documents: written last, so this transaction holds
        // them for as short a time as possible before it commits.
        for reward in &rewards {
            match reward.remaining {
                Some(left) => {
                    let taken = self
                        .rewards
                        .update_one(
                            doc! { "_id": &reward.id, "remaining": { "$gte": grantable } },
                            doc! { "$inc": { "remaining": -grantable, "claimed": grantable } },
                        )
                        .session(&mut *session)
                        .await?;
                    if taken.matched_count == 0 {
                        return Err(mongodb::error::Error::custom(StockMoved));
                    }
                    stock_left.push((reward.id.clone(), left - grantable));
                }
                None => {
                    self.rewards
                        .update_one(
                            doc! { "_id": &reward.id },
                            doc! { "$inc": { "claimed": grantable } },
                        )
                        .session(&mut *session)
                        .await?;
                }
            }
        }
        Ok(BatchWrite {
            granted,
            short_of,
            stock_left,
            closed: None,
        })
    }
}
