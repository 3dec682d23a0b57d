//! Player activity as daily buckets per (user, metric, UTC day), each with per-minute partials.
//! Reports are applied with upserts (`$inc` / `$max`), never read-modify-write; reports carrying
//! an idempotency key are applied in one transaction with the key's record, so a key counts once
//! even across retries and concurrent duplicates. A reported batch's audit record goes into that
//! transaction too; a batch without keys (each upsert atomic on its own) is audited right after.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use erp_platform::mongo::{is_duplicate_key, to_bson_time};
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{ClientSession, Collection, Database, IndexModel};

use erp_platform::audit::{AuditEntry, AuditLog};

use crate::conditions::{Bucket, MinuteSlot};
use crate::error::EventError;
use crate::model::{ProgressItem, ProgressMode};

/// How long an idempotency key is remembered.
const KEY_RETENTION_SECS: u64 = 90 * 24 * 3600;

/// Builds a reported batch's audit record from what the batch did.
pub(crate) type ProgressAudit<'a> = dyn Fn(Applied) -> AuditEntry + Send + Sync + 'a;

#[derive(Clone)]
pub(crate) struct ActivityStore {
    database: Database,
    keys: Collection<Document>,
    buckets: Collection<Document>,
    audit: AuditLog,
}

/// Accepted and duplicate counts of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Applied {
    pub(crate) accepted: u32,
    pub(crate) duplicates: u32,
}

fn day_start(day: NaiveDate) -> BsonDateTime {
    to_bson_time(day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

fn bucket_id(user_id: &str, metric: &str, day: NaiveDate) -> String {
    // Day and metric have fixed alphabets, so the user id (anything) can safely come last.
    format!("{day}|{metric}|{user_id}")
}

/// The upsert that adds one report to its bucket.
fn bucket_update(item: &ProgressItem) -> (Document, Document) {
    let at = item.occurred_at;
    let day = at.date_naive();
    let minute = at.hour() * 60 + at.minute();
    let slot = format!("m.t{minute:04}");
    let filter = doc! { "_id": bucket_id(&item.user_id, &item.metric, day) };
    let mut update = doc! {
        "$setOnInsert": { "user_id": &item.user_id, "metric": &item.metric, "day": day_start(day) },
        "$set": { "last": item.value, "updated_at": to_bson_time(Utc::now()) },
    };
    match item.mode {
        ProgressMode::Increment => {
            update.insert(
                "$inc",
                doc! { "sum": item.value, format!("{slot}.s"): item.value },
            );
            if let Ok(set) = update.get_document_mut("$set") {
                set.insert("has_sum", true);
            }
        }
        ProgressMode::Max => {
            update.insert(
                "$max",
                doc! { "max": item.value, format!("{slot}.x"): item.value },
            );
        }
    }
    (filter, update)
}

fn as_i64(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Double(v) => Some(*v as i64),
        _ => None,
    }
}

fn bucket_from_doc(doc: &Document) -> Option<Bucket> {
    let day = doc.get_datetime("day").ok()?;
    let day = DateTime::<Utc>::from_timestamp_millis(day.timestamp_millis())?.date_naive();
    let mut minutes: Vec<MinuteSlot> = doc
        .get_document("m")
        .map(|slots| {
            slots
                .iter()
                .filter_map(|(key, value)| {
                    let minute = key.strip_prefix('t')?.parse().ok()?;
                    let slot = value.as_document()?;
                    Some(MinuteSlot {
                        minute,
                        sum: as_i64(slot.get("s")).unwrap_or(0),
                        max: as_i64(slot.get("x")),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    minutes.sort_by_key(|slot| slot.minute);
    Some(Bucket {
        metric: doc.get_str("metric").ok()?.to_owned(),
        day,
        sum: as_i64(doc.get("sum")).unwrap_or(0),
        max: as_i64(doc.get("max")),
        has_sum: doc.get_bool("has_sum").unwrap_or(false),
        minutes,
    })
}

impl ActivityStore {
    pub(crate) fn new(database: Database) -> Self {
        Self {
            keys: database.collection("activity_keys"),
            buckets: database.collection("activity_buckets"),
            audit: AuditLog::new(&database),
            database,
        }
    }

    pub(crate) async fn ensure_indexes(&self) -> Result<(), EventError> {
        self.buckets
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "user_id": 1, "metric": 1, "day": 1 })
                    .build(),
            )
            .await?;
        self.keys
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "at": 1 })
                    .options(
                        IndexOptions::builder()
                            .expire_after(std::time::Duration::from_secs(KEY_RETENTION_SECS))
                            .build(),
                    )
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Applies a batch, with its audit record when `audit` is given. Items whose key was seen
    /// before (or earlier in the batch) change nothing.
    pub(crate) async fn apply(
        &self,
        items: &[ProgressItem],
        audit: Option<&ProgressAudit<'_>>,
    ) -> Result<Applied, EventError> {
        if items.iter().all(|item| item.key.is_none()) {
            let applied = self.apply_unkeyed(items).await?;
            if let Some(audit) = audit {
                let mut session = self.database.client().start_session().await?;
                self.audit.record(&audit(applied), &mut session).await?;
            }
            return Ok(applied);
        }
        let mut session = self.database.client().start_session().await?;
        let applied = session
            .start_transaction()
            .and_run((self, items, audit), |session, (store, items, audit)| {
                Box::pin(async move { store.apply_in(items, *audit, session).await })
            })
            .await;
        match applied {
            Ok(applied) => Ok(applied),
            // Another request committed one of our keys between our read and our insert: run
            // again, now seeing it as a duplicate.
            Err(error) if is_duplicate_key(&error) => {
                let mut session = self.database.client().start_session().await?;
                Ok(session
                    .start_transaction()
                    .and_run((self, items, audit), |session, (store, items, audit)| {
                        Box::pin(async move { store.apply_in(items, *audit, session).await })
                    })
                    .await?)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn apply_in(
        &self,
        items: &[ProgressItem],
        audit: Option<&ProgressAudit<'_>>,
        session: &mut ClientSession,
    ) -> mongodb::error::Result<Applied> {
        let keys: Vec<&str> = items.iter().filter_map(|i| i.key.as_deref()).collect();
        let mut seen: HashSet<String> = self
            .keys
            .find(doc! { "_id": { "$in": &keys } })
            .projection(doc! { "_id": 1 })
            .session(&mut *session)
            .await?
            .stream(&mut *session)
            .try_filter_map(|d| async move { Ok(d.get_str("_id").ok().map(str::to_owned)) })
            .try_collect()
            .await?;
        let mut applied = Applied::default();
        let mut new_keys = Vec::new();
        let mut accepted = Vec::new();
        for item in items {
            match &item.key {
                Some(key) if !seen.insert(key.clone()) => applied.duplicates += 1,
                Some(key) => {
                    new_keys.push(doc! { "_id": key, "at": to_bson_time(Utc::now()) });
                    accepted.push(item);
                }
                None => accepted.push(item),
            }
        }
        if !new_keys.is_empty() {
            self.keys
                .insert_many(new_keys)
                .session(&mut *session)
                .await?;
        }
        for item in &accepted {
            let (filter, update) = bucket_update(item);
            self.buckets
                .update_one(filter, update)
                .upsert(true)
                .session(&mut *session)
                .await?;
        }
        applied.accepted = u32::try_from(accepted.len()).unwrap_or(u32::MAX);
        if let Some(audit) = audit {
            self.audit.record(&audit(applied), session).await?;
        }
        Ok(applied)
    }

    /// Items without keys: each upsert is atomic on its own.
    async fn apply_unkeyed(&self, items: &[ProgressItem]) -> Result<Applied, EventError> {
        for item in items {
            let (filter, update) = bucket_update(item);
            let first = self
                .buckets
                .update_one(filter.clone(), update.clone())
                .upsert(true)
                .await;
            // Two first reports of one bucket at once: one insert wins, the other updates.
            if let Err(error) = first {
                if !is_duplicate_key(&error) {
                    return Err(error.into());
                }
                self.buckets.update_one(filter, update).upsert(true).await?;
            }
        }
        Ok(Applied {
            accepted: u32::try_from(items.len()).unwrap_or(u32::MAX),
            duplicates: 0,
        })
    }

    /// The buckets of `user_id` for `metrics` from `from` (inclusive) on, in one query.
    pub(crate) async fn buckets(
        &self,
        user_id: &str,
        metrics: &[String],
        from: Option<NaiveDate>,
    ) -> Result<Vec<Bucket>, EventError> {
        let mut filter = doc! { "user_id": user_id, "metric": { "$in": metrics } };
        if let Some(from) = from {
            filter.insert("day", doc! { "$gte": day_start(from) });
        }
        let docs: Vec<Document> = self.buckets.find(filter).await?.try_collect().await?;
        Ok(docs.iter().filter_map(bucket_from_doc).collect())
    }
}
