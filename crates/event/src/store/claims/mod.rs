//! Claims and the stock they hold.
//!
//! A claim's identity is (event_id, user_id) under a unique index, so however many requests race,
//! one claim exists per pair; no check-then-insert decides anything. Claims are placed in batches
//! (one transaction for several claims of one event, see `crate::claims::batcher`): the transaction reads
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

mod decide;
mod documents;
mod grants;
mod place;
mod query;

use erp_platform::audit::{AuditEntry, AuditLog};
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

pub(crate) use decide::{Decided, Decision};
use documents::{ClaimDoc, RequestDoc};
pub(crate) use grants::{GrantLease, GrantRecord};
pub(crate) use place::Placement;

use crate::error::EventError;
use crate::model::Claim;
use crate::store::catalog::RewardDoc;
use crate::store::tallies;

/// How long an idempotency key's answer is remembered. A claim also keeps the key that created
/// it, so a repeat of a successful claim replays it even after its record is gone.
const REQUEST_RETENTION_SECS: u64 = 30 * 24 * 3600;

/// How often a batch is tried again when a reward's stock moved under it (another replica took
/// units between our read and our write; MongoDB reports that as a write conflict, which the
/// driver retries, so this is a second line of defence).
const STOCK_MOVED_ATTEMPTS: usize = 10;

/// Who decides what no person decided: AUTO grants, expiry, lifecycle records.
pub(crate) const SYSTEM_ACTOR: &str = "system";

/// What an idempotency key was first answered.
#[derive(Debug)]
pub(crate) enum RecordedAnswer {
    /// The claim it created.
    Claim(String),
    Refusal(EventError),
}

#[derive(Debug)]
pub(crate) struct RecordedRequest {
    pub(crate) event_id: String,
    pub(crate) answer: RecordedAnswer,
}

/// Builds a claim's audit record inside its transaction.
pub(crate) type ClaimAudit<'a> = dyn Fn(&Claim) -> AuditEntry + Send + Sync + 'a;
/// Builds a decision's audit record from the claim before and after.
pub(crate) type DecisionAudit<'a> = dyn Fn(&Claim, &Claim) -> AuditEntry + Send + Sync + 'a;

#[derive(Clone)]
pub(crate) struct ClaimStore {
    database: Database,
    claims: Collection<ClaimDoc>,
    requests: Collection<RequestDoc>,
    rewards: Collection<RewardDoc>,
    events: Collection<Document>,
    tally_deltas: Collection<Document>,
    audit: AuditLog,
}

impl ClaimStore {
    pub(crate) fn new(database: Database) -> Self {
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

    /// The deliveries its grants write, in the same database.
    pub(crate) fn deliveries(&self) -> crate::store::DeliveryStore {
        crate::store::DeliveryStore::new(self.database.clone())
    }

    pub(crate) async fn ensure_indexes(&self) -> Result<(), EventError> {
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
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The dashboard delta for claims written into the claims collection by other means (a test's
/// seed, a benchmark's bulk load): what the service would have written with them, computed by
/// the service's own tally code.
#[cfg(feature = "test-util")]
pub(crate) fn delta_for_imported(claims: &[Document]) -> Result<Document, EventError> {
    let mut delta = tallies::TallyDelta::default();
    for doc in claims {
        let claim = mongodb::bson::from_document::<ClaimDoc>(doc.clone())
            .map_err(|error| EventError::Corrupt(format!("not a claim document: {error}")))?
            .into_claim()?;
        delta.created(&claim);
    }
    Ok(delta.to_doc())
}
