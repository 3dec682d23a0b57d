//! The dashboard's claim figures: counts by status, grants by reward type, claims per UTC day
//! and per event; and the deliveries by status.
//!
//! Every transaction that creates or decides claims also inserts one new *delta* document
//! (`claim_tally_deltas`) saying what it changed: a new document each time, so no claim waits
//! on a shared counter. The tally job folds deltas into the rollups (`claim_tallies`) and deletes
//! them in one transaction, so each is counted exactly once however many folders overlap. A read
//! takes the rollups and the deltas not folded yet in one snapshot and adds them up: exact at
//! every read, and as cheap as a few dozen small documents however many claims there are.
//!
//! A delta: `{status: {"GRANTED": 3, "PENDING": -1, ...}, granted: {"CURRENCY": 3, ...},
//! days: [{day: "YYYY-MM-DD", n}], events: [{event_id, n, newest_at, title}],
//! deliveries: {"PENDING": 3, ...}, at}` — claims written into the claims collection by other
//! means (an import) need one too. Deliveries are counted the same way: the transaction that
//! writes a delivery or changes its status inserts its delta.

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use erp_platform::mongo::to_bson_time;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::options::ReadConcern;
use mongodb::{ClientSession, Collection, Database, IndexModel};

use crate::deliveries::DeliveryStatus;
use crate::error::EventError;
use crate::model::{Claim, ClaimStatus, RewardType, TopEvent};

/// The collection of deltas not folded yet.
pub(crate) const DELTAS: &str = "claim_tally_deltas";
/// Deltas folded per transaction.
const FOLD_PAGE: i64 = 500;
/// How often a page is read again when another folder took some of its deltas, before the job
/// leaves the rest to its next run.
const RACE_ATTEMPTS: usize = 3;
/// The rollup with the counts by status and the grants by reward type.
const TOTALS_ID: &str = "totals";
const DAY_FORMAT: &str = "%Y-%m-%d";

/// An event's claims, and the title in its newest claim's snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
struct EventTally {
    claims: i64,
    newest: Option<(BsonDateTime, String)>,
}

impl EventTally {
    fn saw(&mut self, at: BsonDateTime, title: &str) {
        if self.newest.as_ref().is_none_or(|(newest, _)| at > *newest) {
            self.newest = Some((at, title.to_owned()));
        }
    }
}

/// A change to the claim figures: what one transaction did, or the sum of several.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TallyDelta {
    status: HashMap<String, i64>,
    granted: HashMap<String, i64>,
    days: HashMap<NaiveDate, i64>,
    events: HashMap<String, EventTally>,
    /// Deliveries by status.
    deliveries: HashMap<String, i64>,
}

fn number(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

impl TallyDelta {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.status.values().all(|n| *n == 0) && self.days.is_empty() && self.events.is_empty()
    }

    /// A new claim: counted by day and event, under its status.
    pub(crate) fn created(&mut self, claim: &Claim) {
        *self
            .days
            .entry(claim.requested_at.date_naive())
            .or_default() += 1;
        let event = self.events.entry(claim.event_id.clone()).or_default();
        event.claims += 1;
        event.saw(to_bson_time(claim.requested_at), &claim.event.title);
        self.count(claim, claim.status, 1);
    }

    /// `n` new (pending) deliveries.
    pub(crate) fn deliveries_created(&mut self, n: usize) {
        *self
            .deliveries
            .entry(DeliveryStatus::Pending.as_str().to_owned())
            .or_default() += i64::try_from(n).unwrap_or(i64::MAX);
    }

    /// A delivery moved from `from` to `to`.
    pub(crate) fn delivery_moved(&mut self, from: DeliveryStatus, to: DeliveryStatus) {
        *self.deliveries.entry(from.as_str().to_owned()).or_default() -= 1;
        *self.deliveries.entry(to.as_str().to_owned()).or_default() += 1;
    }

    /// A claim moved from `from` to its current status.
    pub(crate) fn decided(&mut self, from: ClaimStatus, claim: &Claim) {
        self.count(claim, from, -1);
        self.count(claim, claim.status, 1);
    }

    fn count(&mut self, claim: &Claim, status: ClaimStatus, sign: i64) {
        *self.status.entry(status.as_str().to_owned()).or_default() += sign;
        if status == ClaimStatus::Granted {
            for reward in &claim.rewards {
                *self
                    .granted
                    .entry(reward.reward_type.as_str().to_owned())
                    .or_default() += sign;
            }
        }
    }

    /// The delta as stored.
    pub(crate) fn to_doc(&self) -> Document {
        let counts = |counts: &HashMap<String, i64>| -> Document {
            counts
                .iter()
                .filter(|(_, n)| **n != 0)
                .map(|(key, n)| (key.clone(), Bson::Int64(*n)))
                .collect()
        };
        doc! {
            "_id": uuid::Uuid::now_v7().to_string(),
            "at": to_bson_time(Utc::now()),
            "status": counts(&self.status),
            "granted": counts(&self.granted),
            "deliveries": counts(&self.deliveries),
            "days": self.days.iter().map(|(day, n)| doc! {
                "day": day.format(DAY_FORMAT).to_string(), "n": *n,
            }).collect::<Vec<_>>(),
            "events": self.events.iter().map(|(event_id, event)| {
                let mut row = doc! { "event_id": event_id, "n": event.claims };
                if let Some((at, title)) = &event.newest {
                    row.insert("newest_at", *at);
                    row.insert("title", title);
                }
                row
            }).collect::<Vec<_>>(),
        }
    }

    /// Adds a stored delta (or the totals rollup, which has the same `status` and `granted`).
    fn add_doc(&mut self, delta: &Document) {
        for (field, sums) in [
            ("status", &mut self.status),
            ("granted", &mut self.granted),
            ("deliveries", &mut self.deliveries),
        ] {
            if let Ok(counts) = delta.get_document(field) {
                for (key, n) in counts {
                    *sums.entry(key.clone()).or_default() += number(Some(n));
                }
            }
        }
        for row in delta.get_array("days").into_iter().flatten() {
            let Some(row) = row.as_document() else {
                continue;
            };
            if let Some(day) = row
                .get_str("day")
                .ok()
                .and_then(|d| NaiveDate::parse_from_str(d, DAY_FORMAT).ok())
            {
                *self.days.entry(day).or_default() += number(row.get("n"));
            }
        }
        for row in delta.get_array("events").into_iter().flatten() {
            if let Some(row) = row.as_document() {
                self.add_event(row);
            }
        }
    }

    /// Adds an `{event_id, n, newest_at?, title?}` row (a delta's or an event rollup).
    fn add_event(&mut self, row: &Document) {
        let Ok(event_id) = row.get_str("event_id") else {
            return;
        };
        let event = self.events.entry(event_id.to_owned()).or_default();
        event.claims += number(row.get("n"));
        if let (Ok(at), Ok(title)) = (row.get_datetime("newest_at"), row.get_str("title")) {
            event.saw(*at, title);
        }
    }
}

/// The claim figures of the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClaimFigures {
    pub(crate) by_status: Vec<(ClaimStatus, i64)>,
    /// Days from the asked-for first day on; days without claims are absent.
    pub(crate) per_day: HashMap<NaiveDate, i64>,
    pub(crate) granted_by_type: Vec<(RewardType, i64)>,
    /// Most claims first, ties by newest event (ids are time-ordered).
    pub(crate) top_events: Vec<TopEvent>,
    /// Every delivery status, with 0 when there is none.
    pub(crate) deliveries_by_status: Vec<(DeliveryStatus, i64)>,
}

#[derive(Clone)]
pub(crate) struct TallyStore {
    database: Database,
    deltas: Collection<Document>,
    tallies: Collection<Document>,
}

impl TallyStore {
    pub(crate) fn new(database: Database) -> Self {
        Self {
            deltas: database.collection(DELTAS),
            tallies: database.collection("claim_tallies"),
            database,
        }
    }

    pub(crate) async fn ensure_indexes(&self) -> Result<(), EventError> {
        self.tallies
            .create_indexes([
                // Top events, and days from a first day on.
                IndexModel::builder()
                    .keys(doc! { "kind": 1, "n": -1, "event_id": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "kind": 1, "day": 1 })
                    .build(),
            ])
            .await?;
        Ok(())
    }

    /// Folds the deltas into the rollups, a page per transaction, until none is left; returns
    /// how many deltas were folded.
    pub(crate) async fn fold(&self) -> Result<u32, EventError> {
        let mut folded = 0;
        let mut raced = 0;
        loop {
            let page: Vec<Document> = self
                .deltas
                .find(doc! {})
                .limit(FOLD_PAGE)
                .await?
                .try_collect()
                .await?;
            if page.is_empty() {
                return Ok(folded);
            }
            let mut session = self.database.client().start_session().await?;
            let result = session
                .start_transaction()
                .and_run((self, &page), |session, (store, page)| {
                    Box::pin(async move { store.fold_in(page, session).await })
                })
                .await;
            match result {
                Ok(()) => folded += u32::try_from(page.len()).unwrap_or(u32::MAX),
                Err(error) if error.get_custom::<FoldRace>().is_some() => {
                    raced += 1;
                    if raced >= RACE_ATTEMPTS {
                        return Ok(folded);
                    }
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
            if i64::try_from(page.len()).unwrap_or(i64::MAX) < FOLD_PAGE {
                return Ok(folded);
            }
        }
    }

    /// Folds `page`; fails with [`FoldRace`] (changing nothing) when another folder took some
    /// of it first.
    async fn fold_in(
        &self,
        page: &[Document],
        session: &mut ClientSession,
    ) -> mongodb::error::Result<()> {
        let ids: Vec<&Bson> = page.iter().filter_map(|d| d.get("_id")).collect();
        let taken = self
            .deltas
            .delete_many(doc! { "_id": { "$in": &ids } })
            .session(&mut *session)
            .await?;
        if usize::try_from(taken.deleted_count).ok() != Some(ids.len()) {
            // Aborts the transaction (the deletions with it).
            return Err(mongodb::error::Error::custom(FoldRace));
        }
        let mut sum = TallyDelta::default();
        for delta in page {
            sum.add_doc(delta);
        }
        let mut totals = Document::new();
        for (field, counts) in [
            ("status", &sum.status),
            ("granted", &sum.granted),
            ("deliveries", &sum.deliveries),
        ] {
            for (key, n) in counts.iter().filter(|(_, n)| **n != 0) {
                totals.insert(format!("{field}.{key}"), *n);
            }
        }
        if !totals.is_empty() {
            self.tallies
                .update_one(doc! { "_id": TOTALS_ID }, doc! { "$inc": totals })
                .upsert(true)
                .session(&mut *session)
                .await?;
        }
        for (day, n) in &sum.days {
            let day = day.format(DAY_FORMAT).to_string();
            self.tallies
                .update_one(
                    doc! { "_id": format!("day:{day}") },
                    doc! { "$inc": { "n": *n }, "$setOnInsert": { "kind": "day", "day": &day } },
                )
                .upsert(true)
                .session(&mut *session)
                .await?;
        }
        for (event_id, event) in &sum.events {
            let id = format!("event:{event_id}");
            let mut update = doc! {
                "$inc": { "n": event.claims },
                "$setOnInsert": { "kind": "event", "event_id": event_id },
            };
            if let Some((at, _)) = &event.newest {
                update.insert("$max", doc! { "newest_at": *at });
            }
            self.tallies
                .update_one(doc! { "_id": &id }, update)
                .upsert(true)
                .session(&mut *session)
                .await?;
            // The newest claim's title wins.
            if let Some((at, title)) = &event.newest {
                self.tallies
                    .update_one(
                        doc! { "_id": &id, "newest_at": *at },
                        doc! { "$set": { "title": title } },
                    )
                    .session(&mut *session)
                    .await?;
            }
        }
        Ok(())
    }

    /// The claim figures: the rollups plus the deltas not folded yet, read in one snapshot so a
    /// delta being folded meanwhile counts exactly once. `first_day` bounds the per-day counts;
    /// `top` is how many events to rank.
    pub(crate) async fn figures(
        &self,
        first_day: NaiveDate,
        top: usize,
    ) -> Result<ClaimFigures, EventError> {
        let mut session = self.database.client().start_session().await?;
        let figures = session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .and_run(
                (self, first_day, top),
                |session, (store, first_day, top)| {
                    Box::pin(async move { store.figures_in(*first_day, *top, session).await })
                },
            )
            .await?;
        Ok(figures)
    }

    async fn figures_in(
        &self,
        first_day: NaiveDate,
        top: usize,
        session: &mut ClientSession,
    ) -> mongodb::error::Result<ClaimFigures> {
        let pending: Vec<Document> = self
            .deltas
            .find(doc! {})
            .session(&mut *session)
            .await?
            .stream(&mut *session)
            .try_collect()
            .await?;
        let mut live = TallyDelta::default();
        for delta in &pending {
            live.add_doc(delta);
        }
        let mut sum = TallyDelta::default();
        if let Some(totals) = self
            .tallies
            .find_one(doc! { "_id": TOTALS_ID })
            .session(&mut *session)
            .await?
        {
            sum.add_doc(&totals);
        }
        let days: Vec<Document> = self
            .tallies
            .find(doc! {
                "kind": "day",
                "day": { "$gte": first_day.format(DAY_FORMAT).to_string() },
            })
            .session(&mut *session)
            .await?
            .stream(&mut *session)
            .try_collect()
            .await?;
        for row in &days {
            if let Some(day) = row
                .get_str("day")
                .ok()
                .and_then(|d| NaiveDate::parse_from_str(d, DAY_FORMAT).ok())
            {
                *sum.days.entry(day).or_default() += number(row.get("n"));
            }
        }
        // Events only ever gain claims, so the top `top` are among the top `top + k` by rollup
        // and the k events the pending deltas add to.
        let ranked: Vec<Document> = self
            .tallies
            .find(doc! { "kind": "event" })
            .sort(doc! { "n": -1, "event_id": -1 })
            .limit(i64::try_from(top + live.events.len()).unwrap_or(i64::MAX))
            .session(&mut *session)
            .await?
            .stream(&mut *session)
            .try_collect()
            .await?;
        let gained: Vec<String> = live.events.keys().map(|id| format!("event:{id}")).collect();
        let mut rolled: Vec<Document> = Vec::new();
        if !gained.is_empty() {
            rolled = self
                .tallies
                .find(doc! { "_id": { "$in": &gained } })
                .session(&mut *session)
                .await?
                .stream(&mut *session)
                .try_collect()
                .await?;
        }
        let mut seen = std::collections::HashSet::new();
        for row in ranked.iter().chain(rolled.iter()) {
            // A rollup can be both among the ranked and the gained: count it once.
            if row
                .get_str("_id")
                .is_ok_and(|id| seen.insert(id.to_owned()))
            {
                sum.add_event(row);
            }
        }
        for (key, n) in &live.status {
            *sum.status.entry(key.clone()).or_default() += n;
        }
        for (key, n) in &live.granted {
            *sum.granted.entry(key.clone()).or_default() += n;
        }
        for (key, n) in &live.deliveries {
            *sum.deliveries.entry(key.clone()).or_default() += n;
        }
        for (day, n) in &live.days {
            *sum.days.entry(*day).or_default() += n;
        }
        for (event_id, gain) in &live.events {
            let event = sum.events.entry(event_id.clone()).or_default();
            event.claims += gain.claims;
            if let Some((at, title)) = &gain.newest {
                event.saw(*at, title);
            }
        }

        let by_status = ClaimStatus::ALL
            .into_iter()
            .map(|status| {
                let n = sum.status.get(status.as_str()).copied().unwrap_or(0);
                (status, n)
            })
            .collect();
        let granted_by_type = RewardType::ALL
            .into_iter()
            .map(|kind| {
                let n = sum.granted.get(kind.as_str()).copied().unwrap_or(0);
                (kind, n)
            })
            .collect();
        let deliveries_by_status = DeliveryStatus::ALL
            .into_iter()
            .map(|status| {
                let n = sum.deliveries.get(status.as_str()).copied().unwrap_or(0);
                (status, n)
            })
            .collect();
        let per_day = sum
            .days
            .into_iter()
            .filter(|(day, _)| *day >= first_day)
            .collect();
        let mut top_events: Vec<TopEvent> = sum
            .events
            .into_iter()
            .map(|(event_id, event)| TopEvent {
                event_id,
                title: event.newest.map(|(_, title)| title).unwrap_or_default(),
                claims: event.claims,
            })
            .collect();
        top_events.sort_by(|a, b| {
            b.claims
                .cmp(&a.claims)
                .then_with(|| b.event_id.cmp(&a.event_id))
        });
        top_events.truncate(top);
        Ok(ClaimFigures {
            by_status,
            per_day,
            granted_by_type,
            top_events,
            deliveries_by_status,
        })
    }
}

/// Raised inside a fold to abort it when another folder deleted some of its deltas first.
#[derive(Debug)]
struct FoldRace;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Evaluation;
    use crate::model::{EventSnapshot, RewardSnapshot};
    use chrono::TimeZone;

    fn claim(event_id: &str, status: ClaimStatus, title: &str, minute: u32) -> Claim {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 10, minute, 0).unwrap();
        Claim {
            id: format!("c{minute}"),
            event_id: event_id.into(),
            user_id: "u".into(),
            status,
            rewards: vec![RewardSnapshot {
                id: "r".into(),
                name: "Gold".into(),
                reward_type: RewardType::Currency,
                item_code: None,
                quantity: 1,
            }],
            event: EventSnapshot {
                title: title.into(),
                starts_at: at,
                ends_at: at,
            },
            evaluation: Evaluation {
                passed: true,
                details: vec![],
            },
            requested_at: at,
            decided_at: None,
            decided_by: None,
            reason: None,
            idempotency_key: None,
            source: crate::model::ClaimSource::Claim,
            granted_by: None,
        }
    }

    #[test]
    fn deltas_round_trip_and_add_up() {
        let mut first = TallyDelta::default();
        first.created(&claim("e1", ClaimStatus::Granted, "old title", 1));
        first.created(&claim("e1", ClaimStatus::Pending, "new title", 2));
        let mut second = TallyDelta::default();
        second.decided(
            ClaimStatus::Pending,
            &claim("e1", ClaimStatus::Granted, "new title", 2),
        );
        let mut sum = TallyDelta::default();
        sum.add_doc(&first.to_doc());
        sum.add_doc(&second.to_doc());
        assert_eq!(sum.status.get("GRANTED"), Some(&2));
        assert_eq!(sum.status.get("PENDING").copied().unwrap_or(0), 0);
        assert_eq!(sum.granted.get("CURRENCY"), Some(&2));
        let day = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        assert_eq!(sum.days.get(&day), Some(&2));
        let event = &sum.events["e1"];
        assert_eq!(event.claims, 2);
        assert_eq!(event.newest.as_ref().unwrap().1, "new title");
        assert!(!sum.is_empty());

        let mut deliveries = TallyDelta::default();
        deliveries.deliveries_created(2);
        let mut acked = TallyDelta::default();
        acked.delivery_moved(DeliveryStatus::Pending, DeliveryStatus::Delivered);
        let mut sum = TallyDelta::default();
        sum.add_doc(&deliveries.to_doc());
        sum.add_doc(&acked.to_doc());
        assert_eq!(sum.deliveries.get("PENDING"), Some(&1));
        assert_eq!(sum.deliveries.get("DELIVERED"), Some(&1));
        assert!(TallyDelta::default().is_empty());
    }
}
