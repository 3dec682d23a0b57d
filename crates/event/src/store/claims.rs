//! Claims and the stock they hold.
//!
//! A claim's identity is (event_id, user_id) under a unique index, so however many requests race,
//! one claim exists per pair; no check-then-insert decides anything. Claims are placed in batches
//! (one transaction for several claims of one event, see `crate::claims`): the transaction reads
//! the event's rewards, takes `n` units of every limited reward with one conditional update
//! (`remaining >= n` → `$inc {remaining: -n, claimed: n}`) and counts `n` more on unlimited ones,
//! inserts the `n` claims, their idempotency records and audit records, and commits all of it or
//! nothing: a process dying mid-way loses or double-spends no unit, and an audit record exists
//! exactly when its claim does. Decisions (approve, reject, expiry) are updates filtered on
//! `status: PENDING` in one transaction with the stock they give back and their audit record, so
//! of two concurrent decisions exactly one happens.
//!
//! Each of these transactions also inserts a delta of the dashboard's figures (a new document,
//! see `store::tallies`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use erp_platform::audit::{AuditEntry, AuditLog};
use erp_platform::mongo::{
    after_cursor, from_bson_time, is_duplicate_key, page_from_overfetch, to_bson_time,
};
use erp_platform::pagination::{Cursor, Page};
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::conditions::{Evaluation, LeafResult, json as condition_json};
use crate::error::EventError;
use crate::model::{
    Claim, ClaimFilter, ClaimStatus, EventSnapshot, Publication, RewardSnapshot, RewardType,
};
use crate::store::catalog::RewardDoc;
use crate::store::tallies::{self, TallyDelta};

/// How long an idempotency key's answer is remembered. A claim also keeps the key that created
/// it, so a repeat of a successful claim replays it even after its record is gone.
const REQUEST_RETENTION_SECS: u64 = 30 * 24 * 3600;

/// How often a batch is tried again when a reward's stock moved under it (another replica took
/// units between our read and our write; MongoDB reports that as a write conflict, which the
/// driver retries, so this is a second line of defence).
const STOCK_MOVED_ATTEMPTS: usize = 10;

/// Who decides what no person decided: AUTO grants, expiry, lifecycle records.
pub const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RewardSnapshotDoc {
    id: String,
    name: String,
    #[serde(rename = "type")]
    reward_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    item_code: Option<String>,
    quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventSnapshotDoc {
    title: String,
    starts_at: BsonDateTime,
    ends_at: BsonDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeafResultDoc {
    metric: String,
    op: String,
    value: i64,
    actual: i64,
    passed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EvaluationDoc {
    passed: bool,
    details: Vec<LeafResultDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimDoc {
    #[serde(rename = "_id")]
    id: String,
    event_id: String,
    user_id: String,
    status: String,
    rewards: Vec<RewardSnapshotDoc>,
    event: EventSnapshotDoc,
    evaluation: EvaluationDoc,
    requested_at: BsonDateTime,
    #[serde(default)]
    decided_at: Option<BsonDateTime>,
    #[serde(default)]
    decided_by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
}

impl ClaimDoc {
    fn from_claim(claim: &Claim) -> Self {
        Self {
            id: claim.id.clone(),
            event_id: claim.event_id.clone(),
            user_id: claim.user_id.clone(),
            status: claim.status.as_str().to_owned(),
            rewards: claim
                .rewards
                .iter()
                .map(|r| RewardSnapshotDoc {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    reward_type: r.reward_type.as_str().to_owned(),
                    item_code: r.item_code.clone(),
                    quantity: r.quantity,
                })
                .collect(),
            event: EventSnapshotDoc {
                title: claim.event.title.clone(),
                starts_at: to_bson_time(claim.event.starts_at),
                ends_at: to_bson_time(claim.event.ends_at),
            },
            evaluation: EvaluationDoc {
                passed: claim.evaluation.passed,
                details: claim
                    .evaluation
                    .details
                    .iter()
                    .map(|d| LeafResultDoc {
                        metric: d.metric.clone(),
                        op: d.op.as_str().to_owned(),
                        value: d.value,
                        actual: d.actual,
                        passed: d.passed,
                    })
                    .collect(),
            },
            requested_at: to_bson_time(claim.requested_at),
            decided_at: claim.decided_at.map(to_bson_time),
            decided_by: claim.decided_by.clone(),
            reason: claim.reason.clone(),
            idempotency_key: claim.idempotency_key.clone(),
        }
    }

    fn into_claim(self) -> Result<Claim, EventError> {
        let status = ClaimStatus::parse(&self.status).ok_or_else(|| {
            EventError::Internal(format!("claim {} has status {}", self.id, self.status))
        })?;
        let details = self
            .evaluation
            .details
            .into_iter()
            .map(|d| {
                Ok(LeafResult {
                    op: condition_json::op_from_str(&d.op).ok_or_else(|| {
                        EventError::Internal(format!("claim {} has operator {}", self.id, d.op))
                    })?,
                    metric: d.metric,
                    value: d.value,
                    actual: d.actual,
                    passed: d.passed,
                })
            })
            .collect::<Result<Vec<_>, EventError>>()?;
        Ok(Claim {
            status,
            rewards: self
                .rewards
                .into_iter()
                .map(|r| RewardSnapshot {
                    reward_type: RewardType::parse(&r.reward_type).unwrap_or(RewardType::Item),
                    id: r.id,
                    name: r.name,
                    item_code: r.item_code,
                    quantity: r.quantity,
                })
                .collect(),
            event: EventSnapshot {
                title: self.event.title,
                starts_at: from_bson_time(self.event.starts_at),
                ends_at: from_bson_time(self.event.ends_at),
            },
            evaluation: Evaluation {
                passed: self.evaluation.passed,
                details,
            },
            requested_at: from_bson_time(self.requested_at),
            decided_at: self.decided_at.map(from_bson_time),
            decided_by: self.decided_by,
            reason: self.reason,
            idempotency_key: self.idempotency_key,
            id: self.id,
            event_id: self.event_id,
            user_id: self.user_id,
        })
    }
}

/// A refusal kept as the answer of an idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "SCREAMING_SNAKE_CASE")]
enum RefusalDoc {
    NotFound,
    EventNotActive,
    ConditionsNotMet { evaluation: String },
    OutOfStock { reward_id: String },
    AlreadyClaimed { claim_id: String },
}

impl RefusalDoc {
    fn from_error(error: &EventError) -> Option<Self> {
        Some(match error {
            EventError::NotFound(_) => Self::NotFound,
            EventError::EventNotActive => Self::EventNotActive,
            EventError::ConditionsNotMet { evaluation } => Self::ConditionsNotMet {
                evaluation: evaluation.to_string(),
            },
            EventError::OutOfStock { reward_id } => Self::OutOfStock {
                reward_id: reward_id.clone(),
            },
            EventError::AlreadyClaimed { claim_id } => Self::AlreadyClaimed {
                claim_id: claim_id.clone(),
            },
            _ => return None,
        })
    }

    fn into_error(self) -> EventError {
        match self {
            Self::NotFound => EventError::NotFound("event"),
            Self::EventNotActive => EventError::EventNotActive,
            Self::ConditionsNotMet { evaluation } => EventError::ConditionsNotMet {
                evaluation: serde_json::from_str(&evaluation).unwrap_or_default(),
            },
            Self::OutOfStock { reward_id } => EventError::OutOfStock { reward_id },
            Self::AlreadyClaimed { claim_id } => EventError::AlreadyClaimed { claim_id },
        }
    }
}

/// The first answer given to an idempotency key: (user_id, key) is unique.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RequestDoc {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    key: String,
    event_id: String,
    at: BsonDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refusal: Option<RefusalDoc>,
}

impl RequestDoc {
    fn new(user_id: &str, key: &str, event_id: &str) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            key: key.to_owned(),
            event_id: event_id.to_owned(),
            at: to_bson_time(Utc::now()),
            claim_id: None,
            refusal: None,
        }
    }

    fn into_recorded(self) -> Option<RecordedRequest> {
        let answer = match (self.claim_id, self.refusal) {
            (Some(claim_id), _) => RecordedAnswer::Claim(claim_id),
            (None, Some(refusal)) => RecordedAnswer::Refusal(refusal.into_error()),
            (None, None) => return None,
        };
        Some(RecordedRequest {
            event_id: self.event_id,
            answer,
        })
    }
}

/// What an idempotency key was first answered.
#[derive(Debug)]
pub enum RecordedAnswer {
    /// The claim it created.
    Claim(String),
    Refusal(EventError),
}

#[derive(Debug)]
pub struct RecordedRequest {
    pub event_id: String,
    pub answer: RecordedAnswer,
}

/// What became of one claim of a batch.
#[derive(Debug, Clone)]
pub enum Placement {
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
pub struct PlacedBatch {
    pub placements: HashMap<String, Placement>,
    pub stock_left: Vec<(String, i64)>,
    /// How many times a transaction callback ran again (write conflicts).
    pub retries: u32,
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

/// A decision about a pending claim.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    Approve { actor: &'a str },
    Reject { actor: &'a str, reason: &'a str },
    Expire { reason: &'a str },
}

impl<'a> Decision<'a> {
    /// The status the claim moves to.
    pub fn status(self) -> ClaimStatus {
        match self {
            Decision::Approve { .. } => ClaimStatus::Granted,
            Decision::Reject { .. } => ClaimStatus::Rejected,
            Decision::Expire { .. } => ClaimStatus::Expired,
        }
    }

    pub fn decided_by(self) -> &'a str {
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
pub struct Decided {
    pub claim: Claim,
    pub stock_left: Vec<(String, i64)>,
    /// How many times the transaction callback ran again (write conflicts).
    pub retries: u32,
}

/// Builds a claim's audit record inside its transaction.
pub type ClaimAudit<'a> = dyn Fn(&Claim) -> AuditEntry + Send + Sync + 'a;
/// Builds a decision's audit record from the claim before and after.
pub type DecisionAudit<'a> = dyn Fn(&Claim, &Claim) -> AuditEntry + Send + Sync + 'a;

#[derive(Clone)]
pub struct ClaimStore {
    database: Database,
    claims: Collection<ClaimDoc>,
    requests: Collection<RequestDoc>,
    rewards: Collection<RewardDoc>,
    events: Collection<Document>,
    tally_deltas: Collection<Document>,
    audit: AuditLog,
}

fn snapshot(reward: &RewardDoc) -> RewardSnapshot {
    RewardSnapshot {
        id: reward.id.clone(),
        name: reward.name.clone(),
        reward_type: RewardType::parse(&reward.reward_type).unwrap_or(RewardType::Item),
        item_code: reward.item_code.clone(),
        quantity: reward.quantity,
    }
}

/// Whether an event document (publication and window) is active at `now`.
fn is_active(event: &Document, now: DateTime<Utc>) -> bool {
    let now = to_bson_time(now);
    event.get_str("publication") == Ok(Publication::Published.as_str())
        && event
            .get_datetime("starts_at")
            .is_ok_and(|start| *start <= now)
        && event.get_datetime("ends_at").is_ok_and(|end| now < *end)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ClaimStore {
    pub fn new(database: Database) -> Self {
        Self {
            claims: database.collection("claims"),
            requests: database.collection("claim_requests"),
            rewards: database.collection("rewards"),
            events: database.collection("events"),
            tally_deltas: database.collection(tallies::DELTAS),
            audit: AuditLog::new(&database),
            database,
        }
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub async fn ensure_indexes(&self) -> Result<(), EventError> {
        self.claims
            .create_indexes([
                // The one rule that makes a claim exactly-once.
                IndexModel::builder()
                    .keys(doc! { "event_id": 1, "user_id": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
                // Listings, newest first: everyone's, a player's, an event's, by status (also
                // the dashboard's counts and the expiry job's scan of pending claims).
                IndexModel::builder()
                    .keys(doc! { "requested_at": -1, "_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "user_id": 1, "requested_at": -1, "_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "event_id": 1, "requested_at": -1, "_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "status": 1, "requested_at": -1, "_id": -1 })
                    .build(),
            ])
            .await?;
        self.requests
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "user_id": 1, "key": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "at": 1 })
                    .options(
                        IndexOptions::builder()
                            .expire_after(std::time::Duration::from_secs(REQUEST_RETENTION_SECS))
                            .build(),
                    )
                    .build(),
            ])
            .await?;
        Ok(())
    }

    pub async fn find(&self, id: &str) -> Result<Option<Claim>, EventError> {
        self.claims
            .find_one(doc! { "_id": id })
            .await?
            .map(ClaimDoc::into_claim)
            .transpose()
    }

    /// The claim of `user_id` on `event_id`, if any.
    pub async fn find_for(
        &self,
        event_id: &str,
        user_id: &str,
    ) -> Result<Option<Claim>, EventError> {
        self.claims
            .find_one(doc! { "event_id": event_id, "user_id": user_id })
            .await?
            .map(ClaimDoc::into_claim)
            .transpose()
    }

    /// The first answer given to `key` of `user_id`, if it was recorded.
    pub async fn find_request(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<RecordedRequest>, EventError> {
        Ok(self
            .requests
            .find_one(doc! { "user_id": user_id, "key": key })
            .await?
            .and_then(RequestDoc::into_recorded))
    }

    /// Records `refusal` as the answer to `key`; when another answer was recorded first, returns
    /// that one instead (the key's first answer wins). Errors that are not refusals (a store
    /// outage, say) are not recorded, so a retry with the key is tried afresh.
    pub async fn record_refusal(
        &self,
        user_id: &str,
        key: &str,
        event_id: &str,
        refusal: &EventError,
    ) -> Result<Option<RecordedRequest>, EventError> {
        let Some(doc) = RefusalDoc::from_error(refusal) else {
            return Ok(None);
        };
        let record = RequestDoc {
            refusal: Some(doc),
            ..RequestDoc::new(user_id, key, event_id)
        };
        match self.requests.insert_one(&record).await {
            Ok(_) => Ok(None),
            Err(error) if is_duplicate_key(&error) => self.find_request(user_id, key).await,
            Err(error) => Err(error.into()),
        }
    }

    /// Places `batch` (claims of one event by distinct users, reward snapshots still empty)
    /// in as few transactions as it takes: claims whose user already has one, or whose
    /// idempotency key was answered meanwhile, are set aside and the rest tried again.
    pub async fn place(
        &self,
        event_id: &str,
        batch: &[Claim],
        audit: &ClaimAudit<'_>,
    ) -> Result<PlacedBatch, EventError> {
        let mut outcome = PlacedBatch::default();
        let mut remaining: Vec<&Claim> = batch.iter().collect();
        let mut stock_moved = 0;
        while !remaining.is_empty() {
            let attempts = AtomicU32::new(0);
            let written = self
                .write_batch(event_id, &remaining, audit, &attempts)
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
                            "a reward's stock kept moving under the claim transaction".into(),
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

    /// After a duplicate-key error: the claims of `batch` that can no longer be placed, with why.
    async fn set_aside(
        &self,
        event_id: &str,
        batch: &[&Claim],
    ) -> Result<HashMap<String, Placement>, EventError> {
        let users: Vec<&str> = batch.iter().map(|c| c.user_id.as_str()).collect();
        let mut existing: HashMap<String, Claim> = HashMap::new();
        let docs: Vec<ClaimDoc> = self
            .claims
            .find(doc! { "event_id": event_id, "user_id": { "$in": &users } })
            .await?
            .try_collect()
            .await?;
        for doc in docs {
            let claim = doc.into_claim()?;
            existing.insert(claim.user_id.clone(), claim);
        }
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
        attempts: &AtomicU32,
    ) -> mongodb::error::Result<BatchWrite> {
        let mut session = self.database.client().start_session().await?;
        session
            .start_transaction()
            .and_run(
                (self, event_id, batch, audit, attempts),
                |session, (store, event_id, batch, audit, attempts)| {
                    Box::pin(async move {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        store.write_batch_in(event_id, batch, *audit, session).await
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
        session: &mut ClientSession,
    ) -> mongodb::error::Result<BatchWrite> {
        // The claims were checked against a cached event; what this transaction sees decides.
        let event = self
            .events
            .find_one(doc! { "_id": event_id, "deleted_at": Bson::Null })
            .projection(doc! { "publication": 1, "starts_at": 1, "ends_at": 1 })
            .session(&mut *session)
            .await?;
        let closed = match event {
            None => Some(Placement::EventGone),
            Some(event) if !is_active(&event, Utc::now()) => Some(Placement::EventNotActive),
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
        let mut delta = TallyDelta::default();
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

    /// Moves a pending claim to the decision's status, giving its stock back unless approved,
    /// with the audit record, in one transaction; `None` when the claim is not pending (or does
    /// not exist), and nothing changed.
    pub async fn decide(
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
                return Err(error.into());
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
                (Err(error), _) | (_, Err(error)) => {
                    return Err(mongodb::error::Error::custom(error.to_string()));
                }
            };
        let mut delta = TallyDelta::default();
        delta.decided(before_claim.status, &after_claim);
        self.tally_deltas
            .insert_one(delta.to_doc())
            .session(&mut *session)
            .await?;
        self.audit
            .record(&audit(&before_claim, &after_claim), session)
            .await?;
        Ok(Some((after, stock_left)))
    }

    pub async fn list(
        &self,
        filter: &ClaimFilter,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Claim>, EventError> {
        let mut clauses = Vec::new();
        if let Some(user_id) = &filter.user_id {
            clauses.push(doc! { "user_id": user_id });
        }
        if let Some(event_id) = &filter.event_id {
            clauses.push(doc! { "event_id": event_id });
        }
        if let Some(status) = filter.status {
            clauses.push(doc! { "status": status.as_str() });
        }
        if let Some(from) = filter.from {
            clauses.push(doc! { "requested_at": { "$gte": to_bson_time(from) } });
        }
        if let Some(to) = filter.to {
            clauses.push(doc! { "requested_at": { "$lt": to_bson_time(to) } });
        }
        if let Some(cursor) = cursor {
            clauses.push(after_cursor("requested_at", cursor));
        }
        let filter = if clauses.is_empty() {
            doc! {}
        } else {
            doc! { "$and": clauses }
        };
        let docs: Vec<ClaimDoc> = self
            .claims
            .find(filter)
            .sort(doc! { "requested_at": -1, "_id": -1 })
            .limit(i64::from(limit) + 1)
            .await?
            .try_collect()
            .await?;
        let page = page_from_overfetch(docs, limit, |d| (d.requested_at, d.id.clone()), |d| d);
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(ClaimDoc::into_claim)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor,
        })
    }

    /// The events that have pending claims.
    pub async fn events_with_pending(&self) -> Result<Vec<String>, EventError> {
        let ids = self
            .claims
            .distinct("event_id", doc! { "status": ClaimStatus::Pending.as_str() })
            .await?;
        Ok(ids
            .into_iter()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect())
    }

    /// Up to `limit` pending claims of `event_id`, oldest first.
    pub async fn pending_of(&self, event_id: &str, limit: i64) -> Result<Vec<String>, EventError> {
        let docs: Vec<Document> = self
            .claims
            .clone_with_type::<Document>()
            .find(doc! { "event_id": event_id, "status": ClaimStatus::Pending.as_str() })
            .projection(doc! { "_id": 1 })
            .sort(doc! { "requested_at": 1, "_id": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }
}
