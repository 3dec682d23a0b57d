//! The `deliveries` collection: an outbox written by the claim transactions, read by game servers
//! and worked through by the dispatchers.
//!
//! A delivery is inserted by the transaction that grants its claim ([`write_outbox`], called by
//! the claim placement and the approval), with a unique index on `claim_id`: exactly one per
//! granted claim, and none for a claim that was not granted. Every change of a delivery's status
//! (ack, push, giving up, retry) is one atomic update filtered on the status it leaves, so of two
//! racing changes one happens, followed by the transaction of its audit record and dashboard
//! delta (see `DeliveryStore::transition` for why not one transaction).
//!
//! Dispatchers on every replica share the work by a lease: a due pending delivery is taken by an
//! atomic single-document update that sets `lease_until`/`lease_owner` only while no live lease
//! is on it, so two replicas never push the same delivery at once; one that dies mid-push leaves
//! its lease to run out, after which another takes the delivery (never lost). A push's outcome is
//! written only by the lease's owner (a failure), or by anyone for a success.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use erp_platform::audit::{AuditEntry, AuditLog};
use erp_platform::mongo::{from_bson_time, to_bson_time};
use erp_platform::pagination::{Cursor, Page};
use futures::TryStreamExt;
use mongodb::bson::{DateTime as BsonDateTime, Document, doc};
use mongodb::error::{BulkWriteError, ErrorKind, PartialBulkWriteResult};
use mongodb::options::{IndexOptions, UpdateOneModel};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::deliveries::{ClaimDelivery, Delivery, DeliveryFilter, DeliveryStatus, DeliveryView};
use crate::error::EventError;
use crate::model::{Claim, ClaimStatus, RewardSnapshot, RewardType};
use crate::store::tallies::{self, TallyDelta};

pub(crate) const COLLECTION: &str = "deliveries";
/// How often a status change is computed again when the delivery changed under it.
const CHANGE_ATTEMPTS: usize = 5;
/// Left-over records written per run.
const LEFT_OVER_PAGE: i64 = 500;

fn encode_error(source: mongodb::bson::ser::Error) -> EventError {
    EventError::Encode {
        what: "a delivery",
        source: Box::new(source),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RewardDoc {
    id: String,
    name: String,
    #[serde(rename = "type")]
    reward_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    item_code: Option<String>,
    quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveryDoc {
    #[serde(rename = "_id")]
    id: String,
    claim_id: String,
    event_id: String,
    user_id: String,
    rewards: Vec<RewardDoc>,
    status: String,
    attempts: i64,
    #[serde(default)]
    last_error: Option<String>,
    created_at: BsonDateTime,
    #[serde(default)]
    delivered_at: Option<BsonDateTime>,
    /// When a dispatcher may push it (next).
    next_attempt_at: BsonDateTime,
    /// Until when a dispatcher owns it; the epoch when none does.
    lease_until: BsonDateTime,
    #[serde(default)]
    lease_owner: Option<String>,
    /// Counts the status changes: each is written only over the version it was computed from.
    #[serde(default)]
    seq: i64,
    /// The identity of the last status change written (one per attempt), by which its writer
    /// recognises its own write when the store's answer does not say it applied (see
    /// [`DeliveryStore::transition`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_change: Option<String>,
    /// Status changes whose audit record and dashboard delta are not written yet (see
    /// [`DeliveryStore::transition`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unrecorded: Vec<Unrecorded>,
}

/// A status change as its audit record and dashboard delta will show it, kept on the delivery
/// from the moment it happens until they are written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unrecorded {
    /// The delivery's `seq` after the change: with the delivery id, the record's identity.
    seq: i64,
    /// The change's own id (the delivery's `last_change` once written), by which a batch of
    /// marks is removed at once.
    #[serde(default)]
    change: String,
    action: String,
    actor: String,
    from: String,
    to: String,
    /// The REST views before and after, as JSON text.
    before: String,
    after: String,
    at: BsonDateTime,
    #[serde(default)]
    trace_id: Option<String>,
}

/// The lease of no one.
fn no_lease() -> BsonDateTime {
    BsonDateTime::from_millis(0)
}

impl DeliveryDoc {
    /// A new pending delivery of `claim`, due at once.
    fn for_claim(claim: &Claim, now: DateTime<Utc>) -> Self {
        let now = to_bson_time(now);
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            claim_id: claim.id.clone(),
            event_id: claim.event_id.clone(),
            user_id: claim.user_id.clone(),
            rewards: claim
                .rewards
                .iter()
                .map(|r| RewardDoc {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    reward_type: r.reward_type.as_str().to_owned(),
                    item_code: r.item_code.clone(),
                    quantity: r.quantity,
                })
                .collect(),
            status: DeliveryStatus::Pending.as_str().to_owned(),
            attempts: 0,
            last_error: None,
            created_at: now,
            delivered_at: None,
            next_attempt_at: now,
            lease_until: no_lease(),
            lease_owner: None,
            seq: 0,
            last_change: None,
            unrecorded: Vec::new(),
        }
    }

    fn into_delivery(self) -> Result<Delivery, EventError> {
        let status = DeliveryStatus::parse(&self.status).ok_or_else(|| {
            EventError::Corrupt(format!("delivery {} has status {}", self.id, self.status))
        })?;
        Ok(Delivery {
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
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            last_error: self.last_error,
            created_at: from_bson_time(self.created_at),
            delivered_at: self.delivered_at.map(from_bson_time),
            id: self.id,
            claim_id: self.claim_id,
            event_id: self.event_id,
            user_id: self.user_id,
        })
    }
}

/// Inserts, inside the caller's transaction, the delivery of each of `claims` that is GRANTED
/// (the others get none); returns how many.
pub(crate) async fn write_outbox<'a>(
    database: &Database,
    claims: impl IntoIterator<Item = &'a Claim>,
    session: &mut ClientSession,
) -> mongodb::error::Result<usize> {
    // Stamped as late as possible before the commit, so the oldest-first listing sees
    // deliveries appear in about the order they commit.
    let now = Utc::now().trunc_subsecs(3);
    let docs: Vec<DeliveryDoc> = claims
        .into_iter()
        .filter(|claim| claim.status == ClaimStatus::Granted)
        .map(|claim| DeliveryDoc::for_claim(claim, now))
        .collect();
    if !docs.is_empty() {
        database
            .collection::<DeliveryDoc>(COLLECTION)
            .insert_many(&docs)
            .session(session)
            .await?;
    }
    Ok(docs.len())
}

/// A delivery a dispatcher holds the lease of.
#[derive(Debug, Clone)]
pub(crate) struct Leased {
    pub(crate) delivery: Delivery,
    /// The lease's owner token (shared by the deliveries leased together): the dispatcher's
    /// failures are written only under it.
    pub(crate) token: String,
    /// The version leased, from which its outcome's status change is computed.
    version: DeliveryDoc,
}

/// The id of a delivery that was due when read, not leased yet.
pub(crate) struct DueDelivery(String);

impl DueDelivery {
    pub(crate) fn id(&self) -> &str {
        &self.0
    }
}

/// What one push came to, for [`DeliveryStore::settle`].
#[derive(Debug, Clone)]
pub(crate) enum PushOutcome {
    /// The receiver took it: DELIVERED.
    Delivered,
    /// It failed; pushed again from `next_attempt_at`.
    Retry {
        attempts: u32,
        error: String,
        next_attempt_at: DateTime<Utc>,
    },
    /// It failed for the last allowed time: FAILED.
    GaveUp { attempts: u32, error: String },
}

/// A leased delivery and what its push came to.
#[derive(Debug, Clone)]
pub(crate) struct Pushed {
    pub(crate) leased: Leased,
    pub(crate) outcome: PushOutcome,
}

/// A status change computed from one version of a delivery, not written yet.
struct Change {
    id: String,
    /// The `seq` of the version it was computed from: it is written only over that version.
    from_seq: i64,
    /// The fields it sets, with the new `seq` and `last_change`.
    fields: Document,
    record: Unrecorded,
    after: Delivery,
}

impl Change {
    /// `set` applied to `current`, recorded as `action` by `actor`.
    fn of(
        current: &DeliveryDoc,
        set: &Document,
        action: &str,
        actor: &str,
    ) -> Result<Self, EventError> {
        let identity = (
            uuid::Uuid::new_v4().to_string(),
            to_bson_time(Utc::now()),
            erp_platform::telemetry::current_trace_id(),
        );
        Self::written_as(current, set, action, actor, identity)
    }

    /// [`Self::of`] with the change id, time and trace id it was (or is to be) written with.
    fn written_as(
        current: &DeliveryDoc,
        set: &Document,
        action: &str,
        actor: &str,
        (id, at, trace_id): (String, BsonDateTime, Option<String>),
    ) -> Result<Self, EventError> {
        let seq = current.seq + 1;
        let mut changed = mongodb::bson::to_document(current).map_err(encode_error)?;
        for (field, value) in set {
            changed.insert(field.clone(), value.clone());
        }
        let after: DeliveryDoc = mongodb::bson::from_document(changed)
            .map_err(|error| EventError::Corrupt(format!("delivery {}: {error}", current.id)))?;
        let (before, after) = (current.clone().into_delivery()?, after.into_delivery()?);
        let record = Unrecorded {
            seq,
            change: id.clone(),
            action: action.to_owned(),
            actor: actor.to_owned(),
            from: before.status.as_str().to_owned(),
            to: after.status.as_str().to_owned(),
            before: crate::views::json(&DeliveryView::from(&before)).to_string(),
            after: crate::views::json(&DeliveryView::from(&after)).to_string(),
            at,
            trace_id,
        };
        let mut fields = set.clone();
        fields.insert("seq", seq);
        fields.insert("last_change", &id);
        Ok(Self {
            id: current.id.clone(),
            from_seq: current.seq,
            fields,
            record,
            after,
        })
    }

    /// Matches the version it was computed from.
    fn filter(&self) -> Document {
        doc! { "_id": &self.id, "seq": self.from_seq }
    }

    /// Writes it, with its record-to-be.
    fn update(&self) -> Result<Document, EventError> {
        Ok(doc! {
            "$set": self.fields.clone(),
            "$push": {
                "unrecorded": mongodb::bson::to_bson(&self.record).map_err(encode_error)?,
            },
        })
    }
}

/// The fields of a DELIVERED delivery, delivered at `now`.
fn delivered_fields(now: BsonDateTime) -> Document {
    doc! {
        "status": DeliveryStatus::Delivered.as_str(),
        "delivered_at": now,
        "lease_until": no_lease(),
        "lease_owner": null,
    }
}

/// The fields of a delivery that failed for good after `attempts`.
fn failed_fields(attempts: u32, error: &str) -> Document {
    doc! {
        "status": DeliveryStatus::Failed.as_str(),
        "attempts": i64::from(attempts),
        "last_error": error,
        "lease_until": no_lease(),
        "lease_owner": null,
    }
}

/// Matches a delivery still pending under the lease `token`.
fn still_leased(id: &str, token: &str) -> Document {
    doc! { "_id": id, "status": DeliveryStatus::Pending.as_str(), "lease_owner": token }
}

/// The fields of a failed attempt to push again at `next_attempt_at`, the lease given back.
fn retry_fields(attempts: u32, error: &str, next_attempt_at: DateTime<Utc>) -> Document {
    doc! {
        "attempts": i64::from(attempts),
        "last_error": error,
        "next_attempt_at": to_bson_time(next_attempt_at),
        "lease_until": no_lease(),
        "lease_owner": null,
    }
}

/// Pending, due, and not leased (or its lease ran out).
fn due_now() -> Document {
    let now = to_bson_time(Utc::now());
    doc! {
        "status": DeliveryStatus::Pending.as_str(),
        "next_attempt_at": { "$lte": now },
        "lease_until": { "$lte": now },
    }
}

/// The listing by status, oldest first.
fn by_status_index() -> Document {
    doc! { "status": 1, "created_at": 1, "_id": 1 }
}

/// The dispatchers' due-work index.
fn due_work_index() -> Document {
    doc! { "status": 1, "next_attempt_at": 1 }
}

/// The dashboard delta (its `_id` derived from the delivery and `seq`, so a second write is a
/// duplicate) and the audit entry of `record`; `None` for a record of unknown statuses.
fn record_docs(id: &str, record: &Unrecorded) -> Option<(Document, AuditEntry)> {
    let key = format!("delivery:{id}:{}", record.seq);
    let from = DeliveryStatus::parse(&record.from)?;
    let to = DeliveryStatus::parse(&record.to)?;
    let mut delta = TallyDelta::default();
    delta.delivery_moved(from, to);
    let mut delta = delta.to_doc();
    delta.insert("_id", &key);
    let view = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    let entry = AuditEntry {
        id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).to_string(),
        at: from_bson_time(record.at),
        actor_id: record.actor.clone(),
        action: record.action.clone(),
        entity_type: "delivery".to_owned(),
        entity_id: id.to_owned(),
        before: view(&record.before),
        after: view(&record.after),
        trace_id: record.trace_id.clone(),
    };
    Some((delta, entry))
}

/// `record` with its views; a batch's DELIVERED mark leaves them out (see
/// `DeliveryStore::deliver_leased`), and they are derived from the delivery: DELIVERED is final,
/// so it is still as the change left it, and before it only its status and delivery time
/// differed.
fn with_views(delivery: &DeliveryDoc, record: &Unrecorded) -> Result<Unrecorded, EventError> {
    if !record.before.is_empty() {
        return Ok(record.clone());
    }
    let after = delivery.clone().into_delivery()?;
    let mut before = after.clone();
    before.status = DeliveryStatus::parse(&record.from).unwrap_or(DeliveryStatus::Pending);
    before.delivered_at = None;
    Ok(Unrecorded {
        before: crate::views::json(&DeliveryView::from(&before)).to_string(),
        after: crate::views::json(&DeliveryView::from(&after)).to_string(),
        ..record.clone()
    })
}

/// The update removing the marks of `changes` (their records written), if any.
fn unmark(changes: &[&Change]) -> Option<(Document, Document)> {
    if changes.is_empty() {
        return None;
    }
    let ids: Vec<&str> = changes.iter().map(|change| change.id.as_str()).collect();
    let marks: Vec<&str> = changes
        .iter()
        .map(|change| change.record.change.as_str())
        .collect();
    Some((
        doc! { "_id": { "$in": ids } },
        doc! { "$pull": { "unrecorded": { "change": { "$in": marks } } } },
    ))
}

/// What a change of status did.
#[derive(Debug)]
pub(crate) enum Moved {
    /// It happened: the delivery as it is now.
    Done(Delivery),
    /// The delivery is not in a status the change leaves; as it is.
    Unchanged(Delivery),
    NotFound,
}

#[derive(Clone)]
pub(crate) struct DeliveryStore {
    database: Database,
    deliveries: Collection<DeliveryDoc>,
    tally_deltas: Collection<Document>,
    audit: AuditLog,
}

impl DeliveryStore {
    pub(crate) fn new(database: Database) -> Self {
        Self {
            deliveries: database.collection(COLLECTION),
            tally_deltas: database.collection(tallies::DELTAS),
            audit: AuditLog::new(&database),
            database,
        }
    }

    pub(crate) async fn ensure_indexes(&self) -> Result<(), EventError> {
        self.deliveries
            .create_indexes([
                // Exactly one delivery per claim, whatever retries a grant transaction has.
                IndexModel::builder()
                    .keys(doc! { "claim_id": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
                // Listings, oldest first: all, by status, by player, by event.
                IndexModel::builder()
                    .keys(doc! { "created_at": 1, "_id": 1 })
                    .build(),
                IndexModel::builder().keys(by_status_index()).build(),
                IndexModel::builder()
                    .keys(doc! { "user_id": 1, "created_at": 1, "_id": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "event_id": 1, "created_at": 1, "_id": 1 })
                    .build(),
                // The dispatchers' due work.
                IndexModel::builder().keys(due_work_index()).build(),
            ])
            .await?;
        Ok(())
    }

    pub(crate) async fn find(&self, id: &str) -> Result<Option<Delivery>, EventError> {
        self.deliveries
            .find_one(doc! { "_id": id })
            .await?
            .map(DeliveryDoc::into_delivery)
            .transpose()
    }

    /// The deliveries of `claim_ids` (those that have one), by claim id.
    pub(crate) async fn of_claims(
        &self,
        claim_ids: &[&str],
    ) -> Result<HashMap<String, ClaimDelivery>, EventError> {
        if claim_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let docs: Vec<DeliveryDoc> = self
            .deliveries
            .find(doc! { "claim_id": { "$in": claim_ids } })
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(|doc| {
                let delivery = doc.into_delivery()?;
                Ok((delivery.claim_id.clone(), ClaimDelivery::from(&delivery)))
            })
            .collect()
    }

    /// Deliveries oldest first (a work queue), by (created_at, id).
    pub(crate) async fn list(
        &self,
        filter: &DeliveryFilter,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Delivery>, EventError> {
        let mut clauses = Vec::new();
        if let Some(status) = filter.status {
            clauses.push(doc! { "status": status.as_str() });
        }
        if let Some(user_id) = &filter.user_id {
            clauses.push(doc! { "user_id": user_id });
        }
        if let Some(event_id) = &filter.event_id {
            clauses.push(doc! { "event_id": event_id });
        }
        if let Some(cursor) = cursor {
            let at = BsonDateTime::from_millis(cursor.at_millis);
            clauses.push(doc! { "$or": [
                { "created_at": { "$gt": at } },
                { "created_at": at, "_id": { "$gt": &cursor.id } },
            ] });
        }
        let filter = if clauses.is_empty() {
            doc! {}
        } else {
            doc! { "$and": clauses }
        };
        let docs: Vec<DeliveryDoc> = self
            .deliveries
            .find(filter)
            .sort(doc! { "created_at": 1, "_id": 1 })
            .limit(i64::from(limit) + 1)
            .await?
            .try_collect()
            .await?;
        let page = erp_platform::mongo::page_from_overfetch(
            docs,
            limit,
            |d| (d.created_at, d.id.clone()),
            |d| d,
        );
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(DeliveryDoc::into_delivery)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor,
        })
    }

    /// A game server's ack: PENDING or FAILED -> DELIVERED, audited as DELIVERY_SUCCEEDED by
    /// `actor` (also the dispatcher's success, as "system").
    pub(crate) async fn deliver(&self, id: &str, actor: &str) -> Result<Moved, EventError> {
        let now = to_bson_time(Utc::now().trunc_subsecs(3));
        self.transition(
            id,
            |current| current.status != DeliveryStatus::Delivered.as_str(),
            delivered_fields(now),
            "DELIVERY_SUCCEEDED",
            actor,
        )
        .await
    }

    /// An operator's retry: FAILED -> PENDING with attempts reset, due at once (the last error
    /// is kept until it is delivered or fails again), audited as DELIVERY_RETRIED.
    pub(crate) async fn retry(&self, id: &str, actor: &str) -> Result<Moved, EventError> {
        let now = to_bson_time(Utc::now().trunc_subsecs(3));
        self.transition(
            id,
            |current| current.status == DeliveryStatus::Failed.as_str(),
            doc! {
                "status": DeliveryStatus::Pending.as_str(),
                "attempts": 0_i64,
                "next_attempt_at": now,
                "lease_until": no_lease(),
                "lease_owner": null,
            },
            "DELIVERY_RETRIED",
            actor,
        )
        .await
    }

    /// The dispatcher's last failed push of a leased delivery: -> FAILED with `error`, audited
    /// as DELIVERY_FAILED. Nothing happens when the lease is no longer `leased`'s.
    async fn give_up(
        &self,
        leased: &Leased,
        attempts: u32,
        error: &str,
        actor: &str,
    ) -> Result<Moved, EventError> {
        self.transition(
            &leased.delivery.id,
            |current| {
                current.status == DeliveryStatus::Pending.as_str()
                    && current.lease_owner.as_deref() == Some(leased.token.as_str())
            },
            failed_fields(attempts, error),
            "DELIVERY_FAILED",
            actor,
        )
        .await
    }

    /// A failed push to try again at `next_attempt_at`; false when the lease is no longer
    /// `leased`'s (another dispatcher or an ack took over).
    async fn attempt_failed(
        &self,
        leased: &Leased,
        attempts: u32,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<bool, EventError> {
        let updated = self
            .deliveries
            .update_one(
                still_leased(&leased.delivery.id, &leased.token),
                doc! { "$set": retry_fields(attempts, error, next_attempt_at) },
            )
            .await?;
        Ok(updated.modified_count == 1)
    }

    /// The ids of up to `n` due pending deliveries, about the longest due first, for a
    /// dispatcher to lease some at a time ([`Self::lease`]): one query serves many leases. In
    /// the order of the due-work index (hinted, not sorted: the index gives that order at no
    /// cost on MongoDB, where an explicit sort doubles the cost of the query on the test store).
    pub(crate) async fn due(&self, n: usize) -> Result<Vec<DueDelivery>, EventError> {
        let mut ids: Vec<Document> = self
            .deliveries
            .clone_with_type::<Document>()
            .find(due_now())
            .projection(doc! { "_id": 1 })
            .hint(mongodb::options::Hint::Keys(due_work_index()))
            .limit(i64::try_from(n).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        // Replicas reading the same candidates start at different ones.
        ids.shuffle(&mut rand::thread_rng());
        Ok(ids
            .into_iter()
            .filter_map(|doc| doc.get_str("_id").ok().map(|id| DueDelivery(id.to_owned())))
            .collect())
    }

    /// Takes the leases of those of `candidates` still due, until `now + lease`, with one
    /// update for all: it sets a lease only where none is live, so of two replicas after one
    /// delivery exactly one gets it. Returns the deliveries taken, as they are now.
    pub(crate) async fn lease(
        &self,
        candidates: Vec<DueDelivery>,
        owner: &str,
        lease: chrono::Duration,
    ) -> Result<Vec<Leased>, EventError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = candidates.into_iter().map(|DueDelivery(id)| id).collect();
        let token = format!("{owner}/{}", uuid::Uuid::new_v4());
        // The ids first: the test store's planner takes a filter's first fields for the index
        // to use, and from the due-work index it would scan the whole backlog for a few ids.
        let mut filter = doc! { "_id": { "$in": &ids } };
        filter.extend(due_now());
        let until = to_bson_time(Utc::now() + lease);
        let taken = self
            .deliveries
            .update_many(
                filter,
                doc! { "$set": { "lease_until": until, "lease_owner": &token } },
            )
            .await?;
        if taken.modified_count == 0 {
            return Ok(Vec::new());
        }
        let docs: Vec<DeliveryDoc> = self
            .deliveries
            .find(doc! { "_id": { "$in": &ids }, "lease_owner": &token })
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(|version| {
                Ok(Leased {
                    delivery: version.clone().into_delivery()?,
                    token: token.clone(),
                    version,
                })
            })
            .collect()
    }

    /// Gives back the leases still held on `leased` (a dispatcher stopping), so another replica
    /// takes them at once instead of when they run out.
    pub(crate) async fn release(&self, leased: &[(String, String)]) -> Result<(), EventError> {
        if leased.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = leased.iter().map(|(id, _)| id.as_str()).collect();
        let tokens: Vec<&str> = leased.iter().map(|(_, token)| token.as_str()).collect();
        self.deliveries
            .update_many(
                doc! {
                    "_id": { "$in": ids },
                    "lease_owner": { "$in": tokens },
                    "status": DeliveryStatus::Pending.as_str(),
                },
                doc! { "$set": { "lease_until": no_lease(), "lease_owner": null } },
            )
            .await?;
        Ok(())
    }

    /// Writes what many pushes came to, at once: one bulk write of their conditional updates
    /// (each as [`Self::transition`] would write it, over the version leased), one transaction
    /// of their records, one update removing the marks. Returns, in order, whether each was
    /// written; one that was not found the delivery changed first (an ack, or its lease taken
    /// over after running out), and is decided again on what the delivery is now, alone.
    pub(crate) async fn settle(
        &self,
        pushed: &[Pushed],
        actor: &str,
    ) -> Result<Vec<bool>, EventError> {
        if pushed.is_empty() {
            return Ok(Vec::new());
        }
        let successes: Vec<&Leased> = pushed
            .iter()
            .filter(|item| matches!(item.outcome, PushOutcome::Delivered))
            .map(|item| &item.leased)
            .collect();
        let mut delivered = self.deliver_leased(&successes, actor).await?.into_iter();

        // The failures, fewer and each with its own values: one version-checked update each,
        // in one bulk write.
        let namespace = self.deliveries.namespace();
        let mut failures: Vec<(usize, Option<Change>)> = Vec::new();
        let mut models = Vec::new();
        for (index, Pushed { leased, outcome }) in pushed.iter().enumerate() {
            let (filter, update, change) = match outcome {
                PushOutcome::Delivered => continue,
                PushOutcome::GaveUp { attempts, error } => {
                    let change = Change::of(
                        &leased.version,
                        &failed_fields(*attempts, error),
                        "DELIVERY_FAILED",
                        actor,
                    )?;
                    let mut filter = change.filter();
                    filter.insert("lease_owner", &leased.token);
                    (filter, change.update()?, Some(change))
                }
                PushOutcome::Retry {
                    attempts,
                    error,
                    next_attempt_at,
                } => (
                    still_leased(&leased.delivery.id, &leased.token),
                    doc! { "$set": retry_fields(*attempts, error, *next_attempt_at) },
                    None,
                ),
            };
            models.push(
                UpdateOneModel::builder()
                    .namespace(namespace.clone())
                    .filter(filter)
                    .update(update)
                    .build(),
            );
            failures.push((index, change));
        }
        let answers = if models.is_empty() {
            Vec::new()
        } else {
            let n = models.len();
            self.bulk_answers(models, n).await
        };
        let mut failures = failures.into_iter().zip(answers);

        let mut written = Vec::with_capacity(pushed.len());
        let mut changes: Vec<Change> = Vec::new();
        for item in pushed {
            let done = if let PushOutcome::Delivered = item.outcome {
                match delivered.next().flatten() {
                    Some(change) => {
                        changes.push(change);
                        true
                    }
                    // Changed since it was leased (an ack, a lease run out and taken over):
                    // decided again on what it is now.
                    None => self.settle_alone(item, actor).await?,
                }
            } else {
                let Some(((_, change), answer)) = failures.next() else {
                    return Err(EventError::Internal("a push outcome went missing"));
                };
                match (change, answer) {
                    (Some(change), Some(true)) => {
                        changes.push(change);
                        true
                    }
                    // Not written as far as the answer says, but a retried write can deny its
                    // own first try (see `Self::transition`): look for it.
                    (Some(change), _)
                        if self.has_change(&change.id, &change.record.change).await? =>
                    {
                        changes.push(change);
                        true
                    }
                    (Some(_), _) | (None, None) => self.settle_alone(item, actor).await?,
                    (None, Some(answer)) => answer,
                }
            };
            written.push(done);
        }
        let to_record: Vec<&Change> = changes.iter().collect();
        if let Err(error) = self.record_all(&to_record).await {
            tracing::warn!(%error, "the records of {} status changes are left for later", to_record.len());
        }
        Ok(written)
    }

    /// Writes DELIVERED on the `leased` deliveries whose pushes succeeded, with one update for
    /// all, guarded by their leases: a delivery still PENDING under a lease of this dispatcher
    /// has not changed since it was leased (every other status change needs it FAILED, needs the
    /// lease, or clears it), so the change computed from the leased version is the one written.
    /// Each gets its record-to-be as a mark, its `seq` counted up, and the batch's change id.
    /// Returns, in order, the change written, or `None` for a delivery the update did not match.
    async fn deliver_leased(
        &self,
        leased: &[&Leased],
        actor: &str,
    ) -> Result<Vec<Option<Change>>, EventError> {
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        let now = to_bson_time(Utc::now().trunc_subsecs(3));
        let batch = uuid::Uuid::new_v4().to_string();
        let at = to_bson_time(Utc::now());
        let trace_id = erp_platform::telemetry::current_trace_id();
        let ids: Vec<&str> = leased.iter().map(|l| l.delivery.id.as_str()).collect();
        let tokens: Vec<&str> = leased.iter().map(|l| l.token.as_str()).collect();
        // An update pipeline, so each delivery's mark carries its own next `seq` (the identity
        // of its record). The views are left out of the mark: they are known here, and a
        // left-over mark's are derived from the delivery, which does not change once DELIVERED.
        let next_seq = doc! { "$add": ["$seq", 1] };
        let mark = doc! {
            "seq": next_seq.clone(),
            "change": &batch,
            "action": "DELIVERY_SUCCEEDED",
            "actor": actor,
            "from": DeliveryStatus::Pending.as_str(),
            "to": DeliveryStatus::Delivered.as_str(),
            "before": "",
            "after": "",
            "at": at,
            "trace_id": trace_id.clone(),
        };
        let mut set = delivered_fields(now);
        set.insert("seq", next_seq);
        set.insert("last_change", &batch);
        set.insert(
            "unrecorded",
            doc! { "$concatArrays": [{ "$ifNull": ["$unrecorded", []] }, [mark]] },
        );
        let filter = doc! {
            "_id": { "$in": &ids },
            "status": DeliveryStatus::Pending.as_str(),
            "lease_owner": { "$in": &tokens },
        };
        let written = self
            .deliveries
            .update_many(filter, vec![doc! { "$set": set }])
            .await;
        let all = matches!(&written, Ok(result)
            if usize::try_from(result.modified_count).is_ok_and(|n| n == ids.len()));
        let applied: std::collections::HashSet<String> = if all {
            ids.iter().map(|id| (*id).to_owned()).collect()
        } else {
            // Some did not match (or the answer was lost): the batch's change id tells which did.
            let found = self
                .deliveries
                .clone_with_type::<Document>()
                .find(doc! { "_id": { "$in": &ids }, "last_change": &batch })
                .projection(doc! { "_id": 1 })
                .await;
            match found {
                Ok(cursor) => cursor
                    .try_collect::<Vec<Document>>()
                    .await?
                    .into_iter()
                    .filter_map(|doc| doc.get_str("_id").ok().map(str::to_owned))
                    .collect(),
                Err(error) => return Err(written.err().unwrap_or(error).into()),
            }
        };
        leased
            .iter()
            .map(|leased| {
                if !applied.contains(&leased.delivery.id) {
                    return Ok(None);
                }
                Change::written_as(
                    &leased.version,
                    &delivered_fields(now),
                    "DELIVERY_SUCCEEDED",
                    actor,
                    (batch.clone(), at, trace_id.clone()),
                )
                .map(Some)
            })
            .collect()
    }

    /// Whether each of `n` single-document updates applied (`None`: unknown, the write failed).
    async fn bulk_answers(&self, models: Vec<UpdateOneModel>, n: usize) -> Vec<Option<bool>> {
        let results = match self
            .database
            .client()
            .bulk_write(models)
            .ordered(false)
            .verbose_results()
            .await
        {
            Ok(results) => results,
            Err(error) => match *error.kind {
                ErrorKind::BulkWrite(BulkWriteError {
                    partial_result: Some(PartialBulkWriteResult::Verbose(results)),
                    ..
                }) => results,
                _ => {
                    tracing::warn!(%error, "a bulk write of push outcomes failed; writing them one by one");
                    return vec![None; n];
                }
            },
        };
        (0..n)
            .map(|i| {
                results
                    .update_results
                    .get(&i)
                    .map(|result| result.modified_count == 1)
            })
            .collect()
    }

    /// Writes one push outcome the batch could not: decided on the delivery as it is now.
    async fn settle_alone(&self, pushed: &Pushed, actor: &str) -> Result<bool, EventError> {
        let leased = &pushed.leased;
        Ok(match &pushed.outcome {
            PushOutcome::Delivered => matches!(
                self.deliver(&leased.delivery.id, actor).await?,
                Moved::Done(_)
            ),
            PushOutcome::GaveUp { attempts, error } => matches!(
                self.give_up(leased, *attempts, error, actor).await?,
                Moved::Done(_)
            ),
            PushOutcome::Retry {
                attempts,
                error,
                next_attempt_at,
            } => {
                self.attempt_failed(leased, *attempts, error, *next_attempt_at)
                    .await?
            }
        })
    }

    /// How many deliveries are pending, and since when the oldest of them.
    pub(crate) async fn backlog(&self) -> Result<(u64, Option<DateTime<Utc>>), EventError> {
        let pending = doc! { "status": DeliveryStatus::Pending.as_str() };
        let count = self.deliveries.count_documents(pending.clone()).await?;
        Ok((count, self.oldest_pending().await?))
    }

    /// When the oldest pending delivery was created.
    pub(crate) async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, EventError> {
        let oldest = self
            .deliveries
            .find_one(doc! { "status": DeliveryStatus::Pending.as_str() })
            // Hinted as well as sorted: a store whose planner would scan the collection and
            // sort it (the test store) reads the index's order instead.
            .hint(mongodb::options::Hint::Keys(by_status_index()))
            .sort(by_status_index())
            .await?;
        Ok(oldest.map(|d| from_bson_time(d.created_at)))
    }

    /// Applies `set` to the delivery `id` if `allowed` says its current state may change so,
    /// and records the change (audit record `action` by `actor`, dashboard delta).
    ///
    /// The change is one atomic single-document update, written only over the version it was
    /// computed from (`seq`), and it carries its own record-to-be (`unrecorded`); the record is
    /// then written by a transaction that inserts new documents only, with ids derived from the
    /// delivery and `seq`, and the mark removed. Not one transaction with the delivery in it: a
    /// process killed mid-transaction leaves the transaction's documents locked until the store
    /// gives up on it (`transactionLifetimeLimitSeconds`, a minute by default), and a delivery
    /// must not wait behind one. A process killed between the two leaves the mark, which
    /// [`Self::record_left_over`] writes later, once (the ids make a second write a no-op).
    ///
    /// The answer to the update can deny a write that applied: the driver retries a write whose
    /// connection failed after the store applied it, and the retry (over a `seq` that has moved
    /// on) matches nothing. So an update that does not say it applied is looked up by the
    /// change's id (`last_change`) before it is decided again.
    async fn transition(
        &self,
        id: &str,
        allowed: impl Fn(&DeliveryDoc) -> bool,
        set: Document,
        action: &str,
        actor: &str,
    ) -> Result<Moved, EventError> {
        for _ in 0..CHANGE_ATTEMPTS {
            let Some(current) = self.deliveries.find_one(doc! { "_id": id }).await? else {
                return Ok(Moved::NotFound);
            };
            if !allowed(&current) {
                return Ok(Moved::Unchanged(current.into_delivery()?));
            }
            let change = Change::of(&current, &set, action, actor)?;
            let written = self
                .deliveries
                .update_one(change.filter(), change.update()?)
                .await;
            let applied = match written {
                Ok(written) if written.modified_count == 1 => true,
                Ok(_) => self.has_change(id, &change.record.change).await?,
                Err(error) => {
                    if !self
                        .has_change(id, &change.record.change)
                        .await
                        .unwrap_or(false)
                    {
                        return Err(error.into());
                    }
                    true
                }
            };
            if !applied {
                // Changed by someone else since it was read: decide again on what it is now.
                continue;
            }
            // The change happened: when its record cannot be written now, a backlog loop
            // writes it later (`record_left_over`).
            if let Err(error) = self.record(id, &change.record).await {
                tracing::warn!(%error, delivery = id, "the record of a status change is left for later");
            }
            return Ok(Moved::Done(change.after));
        }
        Err(EventError::Internal(
            "a delivery kept changing under its status change",
        ))
    }

    /// Whether the last status change written to delivery `id` is `change`.
    async fn has_change(&self, id: &str, change: &str) -> Result<bool, EventError> {
        let found = self
            .deliveries
            .count_documents(doc! { "_id": id, "last_change": change })
            .await?;
        Ok(found == 1)
    }

    /// Writes the audit record and dashboard delta of `record` (once: a repeat finds them by
    /// id), then removes its mark from the delivery.
    async fn record(&self, id: &str, record: &Unrecorded) -> Result<(), EventError> {
        let Some((delta, entry)) = record_docs(id, record) else {
            return Ok(());
        };
        let (deltas, entries) = (vec![delta], vec![entry]);
        match self.write_records(&deltas, &entries).await {
            Ok(()) => {}
            Err(error) if erp_platform::mongo::is_duplicate_key(&error) => {}
            Err(error) => return Err(error.into()),
        }
        self.deliveries
            .update_one(
                doc! { "_id": id },
                doc! { "$pull": { "unrecorded": { "seq": record.seq } } },
            )
            .await?;
        Ok(())
    }

    /// [`Self::record`] for many changes: one transaction, one update removing the marks. When
    /// some record was written already (by [`Self::record_left_over`]), one by one.
    async fn record_all(&self, changes: &[&Change]) -> Result<(), EventError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (deltas, entries): (Vec<Document>, Vec<AuditEntry>) = changes
            .iter()
            .filter_map(|change| record_docs(&change.id, &change.record))
            .unzip();
        match self.write_records(&deltas, &entries).await {
            Ok(()) => {}
            Err(error) if erp_platform::mongo::is_duplicate_key(&error) => {
                for change in changes {
                    self.record(&change.id, &change.record).await?;
                }
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        }
        // After the transaction, not in it: one that a killed process leaves open must hold
        // no delivery (it would stall the delivery's next writer, on the test store even more).
        if let Some((filter, update)) = unmark(changes) {
            self.deliveries.update_many(filter, update).await?;
        }
        Ok(())
    }

    /// Inserts the dashboard `deltas` and audit `entries` in one transaction (new documents
    /// only: ids derived from the changes, so a repeat is a duplicate and changes nothing).
    async fn write_records(
        &self,
        deltas: &[Document],
        entries: &[AuditEntry],
    ) -> mongodb::error::Result<()> {
        if deltas.is_empty() && entries.is_empty() {
            return Ok(());
        }
        let mut session = self.database.client().start_session().await?;
        session
            .start_transaction()
            .and_run(
                (self, deltas, entries),
                |session, (store, deltas, entries)| {
                    Box::pin(async move {
                        if !deltas.is_empty() {
                            store
                                .tally_deltas
                                .insert_many(deltas.iter())
                                .session(&mut *session)
                                .await?;
                        }
                        store.audit.record_many(entries, session).await
                    })
                },
            )
            .await
    }

    /// Writes the records of status changes whose process stopped before it wrote them (marks
    /// older than `grace`); returns how many.
    pub(crate) async fn record_left_over(&self, grace: Duration) -> Result<u32, EventError> {
        let cutoff =
            to_bson_time(Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default());
        let docs: Vec<DeliveryDoc> = self
            .deliveries
            .find(doc! { "unrecorded.at": { "$lt": cutoff } })
            .limit(LEFT_OVER_PAGE)
            .await?
            .try_collect()
            .await?;
        let mut recorded = 0;
        for doc in docs {
            for record in doc.unrecorded.iter().filter(|r| r.at < cutoff) {
                let record = with_views(&doc, record)?;
                self.record(&doc.id, &record).await?;
                recorded += 1;
            }
        }
        Ok(recorded)
    }
}
