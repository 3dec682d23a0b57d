//! A grant's idempotency record: the first answer to an operator's key, kept in the claim path's
//! `claim_requests` collection (same unique (user_id, key) index, same retention), under the
//! scope `grant:<caller id>` in place of a claimant's id, so an operator's claim keys and grant
//! keys never meet (user ids are opaque ids from auth, never `grant:`-prefixed).
//!
//! A grant runs several writes (a transaction per batch), so its key is reserved first: one
//! record per (caller, key) under the unique index, holding a lease while the grant runs and its
//! answer once done. A repeat finds the answer and replays it; a concurrent repeat waits for it;
//! a lease nobody renews for [`LEASE`] (a process that died mid-grant) is taken over, and the
//! grant runs again, recognising the claims the first run made (see
//! `claims::grants::made_by_this_grant`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use erp_platform::mongo::{from_bson_time, is_duplicate_key, to_bson_time};
use mongodb::bson::{Bson, DateTime as BsonDateTime, doc};
use serde::{Deserialize, Serialize};

use super::ClaimStore;
use crate::claims::grants::{GrantOutcome, GrantResult};
use crate::error::EventError;

/// How long a running grant's reservation holds before a repeat may take it over. Far above any
/// grant's duration (one transaction per 1,000 users) and the gRPC call timeout.
pub(crate) const LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GrantResultDoc {
    user_id: String,
    outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GrantRecordDoc {
    #[serde(rename = "_id")]
    id: String,
    /// `grant:<caller id>`.
    user_id: String,
    key: String,
    event_id: String,
    /// When the key was first reserved (also the collection's retention clock).
    at: BsonDateTime,
    /// Who runs the grant now, and since when; cleared with the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_at: Option<BsonDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant_results: Option<Vec<GrantResultDoc>>,
}

/// A grant key's record as found.
#[derive(Debug)]
pub(crate) enum GrantRecord {
    /// The first answer, for `event_id`.
    Answered {
        event_id: String,
        results: Vec<GrantResult>,
    },
    /// A grant with this key is running (or its runner died less than [`LEASE`] ago).
    Running,
    /// Its runner, a grant on `event_id`, stopped renewing: `lease` may be taken over.
    Abandoned { lease: String, event_id: String },
}

/// A reservation held: run the grant, then [`ClaimStore::answer_grant`].
#[derive(Debug)]
pub(crate) struct GrantLease {
    record_id: String,
    lease: String,
    /// When the key was first reserved: claims this grant made since are its own.
    pub(crate) reserved_at: DateTime<Utc>,
}

fn scope(caller_id: &str) -> String {
    format!("grant:{caller_id}")
}

impl ClaimStore {
    fn grant_records(&self) -> mongodb::Collection<GrantRecordDoc> {
        self.requests.clone_with_type()
    }

    /// The record of `caller_id`'s grant key, if any.
    pub(crate) async fn find_grant(
        &self,
        caller_id: &str,
        key: &str,
    ) -> Result<Option<GrantRecord>, EventError> {
        let Some(record) = self
            .grant_records()
            .find_one(doc! { "user_id": scope(caller_id), "key": key })
            .await?
        else {
            return Ok(None);
        };
        if let Some(results) = record.grant_results {
            let results = results
                .into_iter()
                .map(|r| {
                    let outcome = GrantOutcome::parse(&r.outcome).ok_or_else(|| {
                        EventError::Corrupt(format!(
                            "grant record {} has outcome {}",
                            record.id, r.outcome
                        ))
                    })?;
                    Ok(GrantResult {
                        user_id: r.user_id,
                        outcome,
                        claim_id: r.claim_id,
                    })
                })
                .collect::<Result<Vec<_>, EventError>>()?;
            return Ok(Some(GrantRecord::Answered {
                event_id: record.event_id,
                results,
            }));
        }
        let stale = record.lease_at.is_none_or(|at| {
            Utc::now().signed_duration_since(from_bson_time(at))
                > chrono::Duration::from_std(LEASE).unwrap_or_default()
        });
        Ok(Some(if stale {
            GrantRecord::Abandoned {
                lease: record.lease.unwrap_or_default(),
                event_id: record.event_id,
            }
        } else {
            GrantRecord::Running
        }))
    }

    /// Reserves `caller_id`'s `key` for a grant on `event_id`; `None` when someone reserved it
    /// first (look again with [`Self::find_grant`]).
    pub(crate) async fn reserve_grant(
        &self,
        caller_id: &str,
        key: &str,
        event_id: &str,
    ) -> Result<Option<GrantLease>, EventError> {
        let now = Utc::now();
        let lease = uuid::Uuid::new_v4().to_string();
        let record = GrantRecordDoc {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: scope(caller_id),
            key: key.to_owned(),
            event_id: event_id.to_owned(),
            at: to_bson_time(now),
            lease: Some(lease.clone()),
            lease_at: Some(to_bson_time(now)),
            grant_results: None,
        };
        match self.grant_records().insert_one(&record).await {
            Ok(_) => Ok(Some(GrantLease {
                record_id: record.id,
                lease,
                reserved_at: from_bson_time(record.at),
            })),
            Err(error) if is_duplicate_key(&error) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Takes over an abandoned reservation (its `lease` as found); `None` when another repeat
    /// took it first or it was answered meanwhile.
    pub(crate) async fn take_over_grant(
        &self,
        caller_id: &str,
        key: &str,
        abandoned: &str,
    ) -> Result<Option<GrantLease>, EventError> {
        let lease = uuid::Uuid::new_v4().to_string();
        let held = if abandoned.is_empty() {
            Bson::Null
        } else {
            Bson::String(abandoned.to_owned())
        };
        let taken = self
            .grant_records()
            .find_one_and_update(
                doc! {
                    "user_id": scope(caller_id),
                    "key": key,
                    "lease": held,
                    "grant_results": Bson::Null,
                },
                doc! { "$set": { "lease": &lease, "lease_at": to_bson_time(Utc::now()) } },
            )
            .await?;
        Ok(taken.map(|record| GrantLease {
            record_id: record.id,
            lease,
            reserved_at: from_bson_time(record.at),
        }))
    }

    /// Keeps the grant's answer as the key's first answer and ends the lease. False when the
    /// lease was taken over meanwhile (the other run's answer stands).
    pub(crate) async fn answer_grant(
        &self,
        lease: &GrantLease,
        results: &[GrantResult],
    ) -> Result<bool, EventError> {
        let results: Vec<GrantResultDoc> = results
            .iter()
            .map(|r| GrantResultDoc {
                user_id: r.user_id.clone(),
                outcome: r.outcome.as_str().to_owned(),
                claim_id: r.claim_id.clone(),
            })
            .collect();
        let results = mongodb::bson::to_bson(&results).map_err(|source| EventError::Encode {
            what: "a grant's results",
            source: Box::new(source),
        })?;
        let answered = self
            .grant_records()
            .update_one(
                doc! { "_id": &lease.record_id, "lease": &lease.lease },
                doc! {
                    "$set": { "grant_results": results },
                    "$unset": { "lease": "", "lease_at": "" },
                },
            )
            .await?;
        Ok(answered.modified_count == 1)
    }

    /// Gives up a lease after a failed run, so a repeat takes the grant over at once (keeping
    /// the reservation's time, so the re-run recognises what this run granted).
    pub(crate) async fn release_grant(&self, lease: &GrantLease) -> Result<(), EventError> {
        self.grant_records()
            .update_one(
                doc! { "_id": &lease.record_id, "lease": &lease.lease },
                doc! { "$set": { "lease_at": BsonDateTime::from_millis(0) } },
            )
            .await?;
        Ok(())
    }
}
