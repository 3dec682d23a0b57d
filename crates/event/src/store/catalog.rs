//! Events and rewards. Every change is written in one transaction with its audit record; events
//! and rewards are soft-deleted so claims keep pointing at something.

use chrono::{DateTime, Utc};
use erp_platform::audit::{AuditEntry, AuditLog};
use erp_platform::mongo::{after_cursor, from_bson_time, page_from_overfetch, to_bson_time};
use erp_platform::pagination::{Cursor, Page};
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::conditions::json as condition_json;
use crate::error::EventError;
use crate::model::{ClaimPolicy, Event, EventStatus, Milestone, Publication, Reward, RewardType};

/// Set on an event, in the transaction that writes its EVENT_STARTED / EVENT_ENDED audit record,
/// so each is recorded once however many job runners race.
const MARKER_STARTED: &str = "started_recorded_at";
const MARKER_ENDED: &str = "ended_recorded_at";

/// The marker field and the time field of a milestone.
fn milestone_fields(milestone: Milestone) -> (&'static str, &'static str) {
    match milestone {
        Milestone::Started => (MARKER_STARTED, "starts_at"),
        Milestone::Ended => (MARKER_ENDED, "ends_at"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventDoc {
    #[serde(rename = "_id")]
    id: String,
    title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    starts_at: BsonDateTime,
    ends_at: BsonDateTime,
    publication: String,
    claim_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    condition: Option<Bson>,
    version: i64,
    created_by: String,
    created_at: BsonDateTime,
    updated_at: BsonDateTime,
    #[serde(default)]
    deleted_at: Option<BsonDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RewardDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) event_id: String,
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) reward_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) item_code: Option<String>,
    pub(super) quantity: i64,
    #[serde(default)]
    pub(super) stock: Option<i64>,
    #[serde(default)]
    pub(super) remaining: Option<i64>,
    /// Units taken by granted or pending claims (limited or not), so a stock change can set
    /// `remaining` exactly.
    #[serde(default)]
    pub(super) claimed: i64,
    pub(super) created_at: BsonDateTime,
    pub(super) updated_at: BsonDateTime,
    #[serde(default)]
    pub(super) deleted_at: Option<BsonDateTime>,
}

impl EventDoc {
    fn from_event(event: &Event) -> Result<Self, EventError> {
        Ok(Self {
            id: event.id.clone(),
            title: event.title.clone(),
            description: event.description.clone(),
            starts_at: to_bson_time(event.starts_at),
            ends_at: to_bson_time(event.ends_at),
            publication: event.publication.as_str().to_owned(),
            claim_policy: event.claim_policy.as_str().to_owned(),
            condition: event
                .condition
                .as_ref()
                .map(|c| bson::to_bson(&condition_json::to_json(c)))
                .transpose()
                .map_err(|source| EventError::Encode {
                    what: "condition",
                    source: Box::new(source),
                })?,
            version: event.version,
            created_by: event.created_by.clone(),
            created_at: to_bson_time(event.created_at),
            updated_at: to_bson_time(event.updated_at),
            deleted_at: None,
        })
    }

    fn into_event(self) -> Result<Event, EventError> {
        let condition = match self.condition {
            None | Some(Bson::Null) => None,
            Some(bson) => Some(
                condition_json::from_json(&bson.into_relaxed_extjson()).ok_or_else(|| {
                    EventError::Corrupt(format!("event {} has an unreadable condition", self.id))
                })?,
            ),
        };
        Ok(Event {
            publication: Publication::parse(&self.publication).ok_or_else(|| {
                EventError::Corrupt(format!(
                    "event {} has publication {}",
                    self.id, self.publication
                ))
            })?,
            claim_policy: ClaimPolicy::parse(&self.claim_policy).unwrap_or(ClaimPolicy::Auto),
            id: self.id,
            title: self.title,
            description: self.description,
            starts_at: from_bson_time(self.starts_at),
            ends_at: from_bson_time(self.ends_at),
            condition,
            version: self.version,
            created_by: self.created_by,
            created_at: from_bson_time(self.created_at),
            updated_at: from_bson_time(self.updated_at),
        })
    }
}

impl RewardDoc {
    fn from_reward(reward: &Reward) -> Self {
        Self {
            id: reward.id.clone(),
            event_id: reward.event_id.clone(),
            name: reward.name.clone(),
            reward_type: reward.reward_type.as_str().to_owned(),
            item_code: reward.item_code.clone(),
            quantity: reward.quantity,
            stock: reward.stock,
            remaining: reward.remaining,
            claimed: 0,
            created_at: to_bson_time(reward.created_at),
            updated_at: to_bson_time(reward.updated_at),
            deleted_at: None,
        }
    }

    pub(super) fn into_reward(self) -> Reward {
        Reward {
            reward_type: RewardType::parse(&self.reward_type).unwrap_or(RewardType::Item),
            id: self.id,
            event_id: self.event_id,
            name: self.name,
            item_code: self.item_code,
            quantity: self.quantity,
            stock: self.stock,
            remaining: self.remaining,
            created_at: from_bson_time(self.created_at),
            updated_at: from_bson_time(self.updated_at),
        }
    }
}

/// The filter selecting events with `status` at `now`.
fn status_filter(status: EventStatus, now: DateTime<Utc>) -> Document {
    let now = to_bson_time(now);
    match status {
        EventStatus::Draft => doc! { "publication": "draft" },
        EventStatus::Canceled => doc! { "publication": "canceled" },
        EventStatus::Scheduled => doc! { "publication": "published", "starts_at": { "$gt": now } },
        EventStatus::Active => doc! {
            "publication": "published",
            "starts_at": { "$lte": now },
            "ends_at": { "$gt": now },
        },
        EventStatus::Ended => doc! { "publication": "published", "ends_at": { "$lte": now } },
    }
}

/// What a listing of events asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventQuery {
    pub status: Option<EventStatus>,
    pub include_drafts: bool,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

#[derive(Clone)]
pub(crate) struct CatalogStore {
    database: Database,
    events: Collection<EventDoc>,
    rewards: Collection<RewardDoc>,
    audit: AuditLog,
}

impl CatalogStore {
    pub(crate) fn new(database: Database) -> Self {
        Self {
            events: database.collection("events"),
            rewards: database.collection("rewards"),
            audit: AuditLog::new(&database),
            database,
        }
    }

    pub(crate) fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub(crate) async fn ensure_indexes(&self) -> Result<(), EventError> {
        self.events
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "deleted_at": 1, "created_at": -1, "_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "publication": 1, "starts_at": 1, "ends_at": 1 })
                    .build(),
                // The lifecycle job's scans: events whose milestone is not recorded yet.
                IndexModel::builder()
                    .keys(doc! { MARKER_STARTED: 1, "publication": 1, "starts_at": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { MARKER_ENDED: 1, "publication": 1, "ends_at": 1 })
                    .build(),
            ])
            .await?;
        self.rewards
            .create_indexes([IndexModel::builder()
                .keys(doc! { "event_id": 1, "deleted_at": 1, "created_at": 1 })
                .build()])
            .await?;
        self.audit.ensure_indexes().await?;
        Ok(())
    }

    async fn session(&self) -> Result<ClientSession, EventError> {
        Ok(self.database.client().start_session().await?)
    }

    /// Updates the one document of `collection` that `filter` matches and records `audit`, in
    /// one transaction; false (and nothing written) when none matches.
    async fn update_audited<T: Send + Sync>(
        &self,
        collection: &Collection<T>,
        filter: Document,
        update: Document,
        audit: &AuditEntry,
    ) -> Result<bool, EventError> {
        let mut session = self.session().await?;
        let updated = session
            .start_transaction()
            .and_run(
                (collection, &filter, &update, &self.audit, audit),
                |session, (collection, filter, update, log, audit)| {
                    Box::pin(async move {
                        let result = collection
                            .update_one((*filter).clone(), (*update).clone())
                            .session(&mut *session)
                            .await?;
                        if result.matched_count == 0 {
                            return Ok(false);
                        }
                        log.record(audit, session).await?;
                        Ok(true)
                    })
                },
            )
            .await?;
        Ok(updated)
    }

    /// Inserts an event with its first rewards and their audit records in one transaction.
    pub(crate) async fn insert_event(
        &self,
        event: &Event,
        rewards: &[Reward],
        audit: &[AuditEntry],
    ) -> Result<(), EventError> {
        let event_doc = EventDoc::from_event(event)?;
        let reward_docs: Vec<RewardDoc> = rewards.iter().map(RewardDoc::from_reward).collect();
        let mut session = self.session().await?;
        session
            .start_transaction()
            .and_run(
                (self, &event_doc, &reward_docs, audit),
                |session, (store, event_doc, reward_docs, audit)| {
                    Box::pin(async move {
                        store
                            .events
                            .insert_one(*event_doc)
                            .session(&mut *session)
                            .await?;
                        if !reward_docs.is_empty() {
                            store
                                .rewards
                                .insert_many(reward_docs.iter())
                                .session(&mut *session)
                                .await?;
                        }
                        for entry in audit.iter() {
                            store.audit.record(entry, session).await?;
                        }
                        Ok(())
                    })
                },
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn find_event(&self, id: &str) -> Result<Option<Event>, EventError> {
        self.events
            .find_one(doc! { "_id": id, "deleted_at": Bson::Null })
            .await?
            .map(EventDoc::into_event)
            .transpose()
    }

    pub(crate) async fn list_events(
        &self,
        query: &EventQuery,
        now: DateTime<Utc>,
    ) -> Result<Page<Event>, EventError> {
        let mut clauses = vec![doc! { "deleted_at": Bson::Null }];
        if let Some(status) = query.status {
            clauses.push(status_filter(status, now));
        }
        if !query.include_drafts {
            clauses.push(doc! { "publication": { "$ne": "draft" } });
        }
        if let Some(cursor) = &query.cursor {
            clauses.push(after_cursor("created_at", cursor));
        }
        let docs: Vec<EventDoc> = self
            .events
            .find(doc! { "$and": clauses })
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(i64::from(query.limit) + 1)
            .await?
            .try_collect()
            .await?;
        let page = page_from_overfetch(docs, query.limit, |d| (d.created_at, d.id.clone()), |d| d);
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(EventDoc::into_event)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor,
        })
    }

    /// Replaces an event's fields with `updated` (whose version is one more than `expected`) if
    /// its version is still `expected`; writes `audit` in the same transaction.
    pub(crate) async fn replace_event(
        &self,
        expected_version: i64,
        updated: &Event,
        audit: &AuditEntry,
    ) -> Result<bool, EventError> {
        let doc = EventDoc::from_event(updated)?;
        let mut set = bson::to_document(&doc).map_err(|source| EventError::Encode {
            what: "event",
            source: Box::new(source),
        })?;
        set.remove("_id");
        set.remove("deleted_at");
        set.remove("created_at");
        set.remove("created_by");
        let mut unset = Document::new();
        for optional in ["description", "condition"] {
            if !set.contains_key(optional) {
                unset.insert(optional, "");
            }
        }
        let mut update = doc! { "$set": set };
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        let filter =
            doc! { "_id": &updated.id, "version": expected_version, "deleted_at": Bson::Null };
        self.update_audited(&self.events, filter, update, audit)
            .await
    }

    /// Soft-deletes an event and its rewards; false if it was not there.
    pub(crate) async fn delete_event(
        &self,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<bool, EventError> {
        let now = to_bson_time(Utc::now());
        let mut session = self.session().await?;
        let deleted = session
            .start_transaction()
            .and_run((self, audit), |session, (store, audit)| {
                Box::pin(async move {
                    let result = store
                        .events
                        .update_one(
                            doc! { "_id": id, "deleted_at": Bson::Null },
                            doc! { "$set": { "deleted_at": now, "updated_at": now }, "$inc": { "version": 1 } },
                        )
                        .session(&mut *session)
                        .await?;
                    if result.matched_count == 0 {
                        return Ok(false);
                    }
                    store
                        .rewards
                        .update_many(
                            doc! { "event_id": id, "deleted_at": Bson::Null },
                            doc! { "$set": { "deleted_at": now } },
                        )
                        .session(&mut *session)
                        .await?;
                    store.audit.record(audit, session).await?;
                    Ok(true)
                })
            })
            .await?;
        Ok(deleted)
    }

    /// Inserts a reward of an existing event; false if the event is gone.
    pub(crate) async fn insert_reward(
        &self,
        reward: &Reward,
        audit: &AuditEntry,
    ) -> Result<bool, EventError> {
        let doc = RewardDoc::from_reward(reward);
        let mut session = self.session().await?;
        let inserted = session
            .start_transaction()
            .and_run((self, &doc, audit), |session, (store, doc, audit)| {
                Box::pin(async move {
                    // Touching the event makes a concurrent delete of it conflict with this.
                    let event = store
                        .events
                        .update_one(
                            doc! { "_id": &doc.event_id, "deleted_at": Bson::Null },
                            doc! { "$set": { "rewards_changed_at": to_bson_time(Utc::now()) } },
                        )
                        .session(&mut *session)
                        .await?;
                    if event.matched_count == 0 {
                        return Ok(false);
                    }
                    store
                        .rewards
                        .insert_one(*doc)
                        .session(&mut *session)
                        .await?;
                    store.audit.record(audit, session).await?;
                    Ok(true)
                })
            })
            .await?;
        Ok(inserted)
    }

    pub(crate) async fn list_rewards(&self, event_id: &str) -> Result<Vec<Reward>, EventError> {
        let docs: Vec<RewardDoc> = self
            .rewards
            .find(doc! { "event_id": event_id, "deleted_at": Bson::Null })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(docs.into_iter().map(RewardDoc::into_reward).collect())
    }

    /// A reward of `event_id`, unless deleted.
    pub(crate) async fn find_reward(
        &self,
        event_id: &str,
        reward_id: &str,
    ) -> Result<Option<Reward>, EventError> {
        Ok(self
            .rewards
            .find_one(doc! { "_id": reward_id, "event_id": event_id, "deleted_at": Bson::Null })
            .await?
            .map(RewardDoc::into_reward))
    }

    /// Applies a reward change computed by `change` from the current reward and the units its
    /// claims hold (inside one transaction, so a concurrent claim cannot slip between the read
    /// and the write). `change` returns the changed reward and its audit record, or a domain
    /// error; what the domain does not own (the units claimed, creation, deletion) is kept.
    pub(crate) async fn update_reward<F>(
        &self,
        event_id: &str,
        reward_id: &str,
        change: F,
    ) -> Result<Reward, EventError>
    where
        F: Fn(&Reward, i64) -> Result<(Reward, AuditEntry), EventError> + Send + Sync,
    {
        let mut session = self.session().await?;
        session
            .start_transaction()
            .and_run((self, &change), |session, (store, change)| {
                Box::pin(async move {
                    let Some(current) = store
                        .rewards
                        .find_one(doc! { "_id": reward_id, "event_id": event_id, "deleted_at": Bson::Null })
                        .session(&mut *session)
                        .await?
                    else {
                        return Ok(Err(EventError::NotFound("reward")));
                    };
                    let (changed, audit) = match change(&current.clone().into_reward(), current.claimed) {
                        Ok(changed) => changed,
                        Err(error) => return Ok(Err(error)),
                    };
                    let updated = RewardDoc {
                        claimed: current.claimed,
                        created_at: current.created_at,
                        deleted_at: current.deleted_at,
                        ..RewardDoc::from_reward(&changed)
                    };
                    store
                        .rewards
                        .replace_one(doc! { "_id": reward_id }, &updated)
                        .session(&mut *session)
                        .await?;
                    store.audit.record(&audit, session).await?;
                    Ok(Ok(updated.into_reward()))
                })
            })
            .await?
    }

    /// Soft-deletes a reward; false if it was not there.
    pub(crate) async fn delete_reward(
        &self,
        event_id: &str,
        reward_id: &str,
        audit: &AuditEntry,
    ) -> Result<bool, EventError> {
        let now = to_bson_time(Utc::now());
        self.update_audited(
            &self.rewards,
            doc! { "_id": reward_id, "event_id": event_id, "deleted_at": Bson::Null },
            doc! { "$set": { "deleted_at": now, "updated_at": now } },
            audit,
        )
        .await
    }

    /// Non-deleted events by their status at `now`.
    pub(crate) async fn count_by_status(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(EventStatus, i64)>, EventError> {
        futures::future::try_join_all(EventStatus::ALL.into_iter().map(|status| {
            let events = self.events.clone();
            async move {
                let n = events
                    .count_documents(doc! { "$and": [
                        { "deleted_at": Bson::Null },
                        status_filter(status, now),
                    ] })
                    .await?;
                Ok::<_, EventError>((status, i64::try_from(n).unwrap_or(i64::MAX)))
            }
        }))
        .await
    }

    /// The current end of each of `ids` (deleted events included: their claims still expire).
    pub(crate) async fn ends_of(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, EventError> {
        let docs: Vec<EventDoc> = self
            .events
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .into_iter()
            .map(|d| (d.id, from_bson_time(d.ends_at)))
            .collect())
    }

    /// Up to `limit` published, non-deleted events that reached `milestone` by `now` and whose
    /// audit record for it is not written yet.
    pub(crate) async fn unrecorded(
        &self,
        milestone: Milestone,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Event>, EventError> {
        let (marker, time) = milestone_fields(milestone);
        let docs: Vec<EventDoc> = self
            .events
            .find(doc! {
                marker: Bson::Null,
                "publication": Publication::Published.as_str(),
                time: { "$lte": to_bson_time(now) },
                "deleted_at": Bson::Null,
            })
            .sort(doc! { time: 1, "_id": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(EventDoc::into_event).collect()
    }

    /// Marks `milestone` of `event_id` as recorded and writes `audit`, in one transaction; false
    /// when it was already recorded (by another runner).
    pub(crate) async fn record_milestone(
        &self,
        event_id: &str,
        milestone: Milestone,
        audit: &AuditEntry,
    ) -> Result<bool, EventError> {
        let (marker, _) = milestone_fields(milestone);
        let at = to_bson_time(audit.at);
        self.update_audited(
            &self.events,
            doc! { "_id": event_id, marker: Bson::Null },
            doc! { "$set": { marker: at } },
            audit,
        )
        .await
    }
}
