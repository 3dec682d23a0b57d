//! Reading claims: by id, by player and event, by idempotency key, listings, and the pending
//! claims the expiry job scans. Also the refusals recorded as a key's first answer.

use erp_platform::mongo::{after_cursor, is_duplicate_key, page_from_overfetch, to_bson_time};
use erp_platform::pagination::{Cursor, Page};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::documents::{ClaimDoc, RefusalDoc, RequestDoc};
use super::{ClaimStore, RecordedRequest};
use crate::error::EventError;
use crate::model::{Claim, ClaimFilter, ClaimStatus};

impl ClaimStore {
    pub(crate) async fn find(&self, id: &str) -> Result<Option<Claim>, EventError> {
        self.claims
            .find_one(doc! { "_id": id })
            .await?
            .map(ClaimDoc::into_claim)
            .transpose()
    }

    /// The claim of `user_id` on `event_id`, if any.
    pub(crate) async fn find_for(
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
    pub(crate) async fn find_request(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<RecordedRequest>, EventError> {
        self.requests
            .find_one(doc! { "user_id": user_id, "key": key })
            .await?
            .map_or(Ok(None), RequestDoc::into_recorded)
    }

    /// Records `refusal` as the answer to `key`; when another answer was recorded first, returns
    /// that one instead (the key's first answer wins). Errors that are not refusals (a store
    /// outage, say) are not recorded, so a retry with the key is tried afresh.
    pub(crate) async fn record_refusal(
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

    pub(crate) async fn list(
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
    pub(crate) async fn events_with_pending(&self) -> Result<Vec<String>, EventError> {
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
    pub(crate) async fn pending_of(
        &self,
        event_id: &str,
        limit: i64,
    ) -> Result<Vec<String>, EventError> {
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
