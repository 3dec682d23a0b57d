//! The audit trail every service keeps in its own database: who changed what, when, with the
//! state before and after and the trace id. Records are written in the same transaction as the
//! change they describe.

use chrono::{DateTime, Utc};
use erp_proto::common::v1 as pb;
use erp_proto::time::{from_timestamp, timestamp};
use mongodb::bson::{self, Bson, DateTime as BsonDateTime, doc};
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::mongo::{find_page, from_bson_time, is_duplicate_key, to_bson_time};
use crate::pagination::{Cursor, Page};

/// One audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor_id: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub trace_id: Option<String>,
}

impl AuditEntry {
    /// A record made now, in the current trace.
    pub fn new(
        actor_id: &str,
        action: &str,
        entity_type: &str,
        entity_id: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            at: Utc::now(),
            actor_id: actor_id.to_owned(),
            action: action.to_owned(),
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            before,
            after,
            trace_id: crate::telemetry::current_trace_id(),
        }
    }
}

/// Filters of the audit listing; `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub entity_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl From<&pb::ListAuditRequest> for AuditFilter {
    /// An empty text field means no filter on it (proto3 strings cannot tell unset from empty).
    fn from(request: &pb::ListAuditRequest) -> Self {
        let given = |text: &Option<String>| text.clone().filter(|t| !t.is_empty());
        Self {
            action: given(&request.action),
            actor_id: given(&request.actor_id),
            entity_id: given(&request.entity_id),
            from: from_timestamp(request.from),
            to: from_timestamp(request.to),
        }
    }
}

impl AuditEntry {
    /// The record as `service` ("auth" or "event") answers it in `ListAudit`.
    pub fn into_pb(self, service: &str) -> pb::AuditEntry {
        pb::AuditEntry {
            id: self.id,
            at: Some(timestamp(self.at)),
            service: service.to_owned(),
            actor_id: self.actor_id,
            action: self.action,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            before_json: self.before.map(|v| v.to_string()),
            after_json: self.after.map(|v| v.to_string()),
            trace_id: self.trace_id,
        }
    }
}

/// A page of `service`'s audit trail as its `ListAudit` answers it.
pub fn page_to_pb(page: Page<AuditEntry>, service: &str) -> pb::ListAuditResponse {
    pb::ListAuditResponse {
        items: page
            .items
            .into_iter()
            .map(|entry| entry.into_pb(service))
            .collect(),
        next_cursor: page.next_cursor,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditDoc {
    #[serde(rename = "_id")]
    id: String,
    at: BsonDateTime,
    actor_id: String,
    action: String,
    entity_type: String,
    entity_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<Bson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<Bson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    /// How many identical events a folded record stands for (see [`AuditLog::record_folded`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<i64>,
}

fn json_to_bson(value: &Option<serde_json::Value>) -> mongodb::error::Result<Option<Bson>> {
    value
        .as_ref()
        .map(|v| bson::to_bson(v).map_err(|e| mongodb::error::Error::custom(e.to_string())))
        .transpose()
}

impl AuditDoc {
    fn from_entry(entry: &AuditEntry) -> mongodb::error::Result<Self> {
        Ok(Self {
            id: entry.id.clone(),
            at: to_bson_time(entry.at),
            actor_id: entry.actor_id.clone(),
            action: entry.action.clone(),
            entity_type: entry.entity_type.clone(),
            entity_id: entry.entity_id.clone(),
            before: json_to_bson(&entry.before)?,
            after: json_to_bson(&entry.after)?,
            trace_id: entry.trace_id.clone(),
            count: None,
        })
    }

    fn into_entry(self) -> AuditEntry {
        let mut after = self.after.map(Bson::into_relaxed_extjson);
        if let (Some(count), Some(serde_json::Value::Object(fields))) = (self.count, after.as_mut())
        {
            fields.insert("count".to_owned(), count.into());
        }
        AuditEntry {
            id: self.id,
            at: from_bson_time(self.at),
            actor_id: self.actor_id,
            action: self.action,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            before: self.before.map(Bson::into_relaxed_extjson),
            after,
            trace_id: self.trace_id,
        }
    }
}

/// The `audit` collection of a service's database.
#[derive(Clone)]
pub struct AuditLog {
    records: Collection<AuditDoc>,
}

impl AuditLog {
    pub fn new(database: &Database) -> Self {
        Self {
            records: database.collection("audit"),
        }
    }

    /// Indexes for newest-first listing, alone or by action, actor or entity. Idempotent.
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        self.records
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "at": -1, "_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "action": 1, "at": -1, "_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "actor_id": 1, "at": -1, "_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "entity_id": 1, "at": -1, "_id": -1 })
                    .build(),
            ])
            .await?;
        Ok(())
    }

    /// Writes `entry` inside the caller's transaction.
    pub async fn record(
        &self,
        entry: &AuditEntry,
        session: &mut ClientSession,
    ) -> mongodb::error::Result<()> {
        self.records
            .insert_one(AuditDoc::from_entry(entry)?)
            .session(session)
            .await?;
        Ok(())
    }

    /// Writes `entries` inside the caller's transaction, with one insert (a batch of changes
    /// recorded at once).
    pub async fn record_many(
        &self,
        entries: &[AuditEntry],
        session: &mut ClientSession,
    ) -> mongodb::error::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let docs = entries
            .iter()
            .map(AuditDoc::from_entry)
            .collect::<mongodb::error::Result<Vec<_>>>()?;
        self.records.insert_many(docs).session(session).await?;
        Ok(())
    }

    /// Writes `entry` once per `fold_key` and window of `window` (counted from the Unix epoch);
    /// repeats in the same window only count up the record's `after.count`. For records anyone
    /// can cause again and again (a player's repeated refused claim), so they cannot flood the
    /// trail. Returns whether this call wrote a new record.
    pub async fn record_folded(
        &self,
        entry: &AuditEntry,
        fold_key: &str,
        window: std::time::Duration,
    ) -> mongodb::error::Result<bool> {
        let window_secs = window.as_secs().max(1);
        let bucket = u64::try_from(entry.at.timestamp()).unwrap_or_default() / window_secs;
        // The id is derived from the fold key and window, so concurrent repeats meet on the
        // primary key instead of racing to insert two records.
        let id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{fold_key}\u{0}{window_secs}\u{0}{bucket}").as_bytes(),
        )
        .to_string();
        let mut fields = bson::to_document(&AuditDoc::from_entry(entry)?)
            .map_err(|e| mongodb::error::Error::custom(e.to_string()))?;
        fields.remove("_id");
        let update = doc! { "$setOnInsert": fields, "$inc": { "count": 1_i64 } };
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .records
                .update_one(doc! { "_id": &id }, update.clone())
                .upsert(true)
                .await
            {
                Ok(result) => return Ok(result.upserted_id.is_some()),
                // Two first repeats inserted at once: the loser's retry finds the record.
                Err(error) if attempts < 3 && is_duplicate_key(&error) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    pub async fn list(
        &self,
        filter: &AuditFilter,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> mongodb::error::Result<Page<AuditEntry>> {
        let mut clauses = Vec::new();
        if let Some(action) = &filter.action {
            clauses.push(doc! { "action": action });
        }
        if let Some(actor) = &filter.actor_id {
            clauses.push(doc! { "actor_id": actor });
        }
        if let Some(entity) = &filter.entity_id {
            clauses.push(doc! { "entity_id": entity });
        }
        if let Some(from) = filter.from {
            clauses.push(doc! { "at": { "$gte": to_bson_time(from) } });
        }
        if let Some(to) = filter.to {
            clauses.push(doc! { "at": { "$lt": to_bson_time(to) } });
        }
        find_page(
            &self.records,
            clauses,
            "at",
            cursor,
            limit,
            |d| (d.at, d.id.clone()),
            AuditDoc::into_entry,
        )
        .await
    }
}
