//! The dashboard over gRPC against the real stores: every figure equals what the test counts
//! itself from the collections — before the tally job folded the deltas into the rollups, after,
//! and with some claims changed since — every key is present, and only staff may see it.

use std::collections::{BTreeMap, HashMap};

use crate::common::*;
use chrono::{DateTime, Duration, Utc};
use erp_event::testing::dashboard_delta;
use erp_proto::event::v1 as pb;
use mongodb::bson::{Bson, Document, doc};

/// A claim written straight into the collection, as the service stores them, `days_ago` days
/// back, so the per-day figures span the whole range.
fn old_claim(
    event_id: &str,
    title: &str,
    user: &str,
    status: &str,
    types: &[&str],
    at: DateTime<Utc>,
) -> Document {
    let at = mongodb::bson::DateTime::from_millis(at.timestamp_millis());
    doc! {
        "_id": uuid::Uuid::now_v7().to_string(),
        "event_id": event_id,
        "user_id": user,
        "status": status,
        "rewards": types.iter().enumerate().map(|(i, t)| doc! {
            "id": format!("r{i}"), "name": "old", "type": *t, "quantity": 1_i64,
        }).collect::<Vec<_>>(),
        "event": { "title": title, "starts_at": at, "ends_at": at },
        "evaluation": { "passed": true, "details": [] },
        "requested_at": at,
        "decided_at": Bson::Null,
        "decided_by": Bson::Null,
        "reason": Bson::Null,
    }
}

async fn dashboard(service: &TestEvent) -> pb::Dashboard {
    service
        .client()
        .get_dashboard(as_caller(&auditor(), pb::GetDashboardRequest {}))
        .await
        .unwrap()
        .into_inner()
        .dashboard
        .unwrap()
}

#[tokio::test]
async fn figures_match_independent_counts() {
    let service = TestEvent::start().await;
    let hour = Duration::hours(1);
    let empty = dashboard(&service).await;
    assert_eq!(
        empty.events.unwrap().by_status,
        HashMap::from(
            ["DRAFT", "SCHEDULED", "ACTIVE", "ENDED", "CANCELED"].map(|s| (s.to_owned(), 0))
        )
    );
    let empty_claims = empty.claims.unwrap();
    assert_eq!(empty_claims.by_status.len(), 4);
    assert!(empty_claims.by_status.values().all(|n| *n == 0));
    assert_eq!(empty_claims.per_day.len(), 30);
    assert_eq!(empty.rewards.unwrap().granted_by_type.len(), 5);
    assert!(empty.top_events.is_empty());

    // Events in every status, plus a deleted one that must not count.
    let mut auto = active_event_request("auto");
    let mut gem = reward("Gem", Some(100));
    gem.r#type = pb::RewardType::Item as i32;
    auto.rewards = vec![reward("Gold", Some(100)), gem];
    let (auto, _) = service.create(auto).await;
    let mut review = manual(active_event_request("review"));
    let mut coupon = reward("Coupon", None);
    coupon.r#type = pb::RewardType::Coupon as i32;
    review.rewards = vec![coupon];
    let (review, _) = service.create(review).await;
    service.create(event_request("later", hour, hour * 2)).await;
    service
        .create(event_request("over", -hour * 2, -hour))
        .await;
    let mut draft = active_event_request("draft");
    draft.draft = true;
    service.create(draft).await;
    let (canceled, _) = service.create(active_event_request("canceled")).await;
    let (deleted, _) = service.create(active_event_request("deleted")).await;
    let mut client = service.client();
    client
        .update_event(as_caller(
            &operator(),
            pb::UpdateEventRequest {
                id: canceled.id.clone(),
                state: Some(pb::PublicationState::Canceled as i32),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    // Claims through the service: granted, pending, approved, rejected.
    for i in 0..4 {
        service.claimed(&player(&format!("a{i}")), &auto.id).await;
    }
    let mut pending = Vec::new();
    for i in 0..3 {
        pending.push(service.claimed(&player(&format!("m{i}")), &review.id).await);
    }
    service.claimed(&player("d0"), &deleted.id).await;
    approve(&service, &operator(), &pending[0].id)
        .await
        .unwrap();
    reject(&service, &operator(), &pending[1].id, "no")
        .await
        .unwrap();
    client
        .delete_event(as_caller(
            &admin(),
            pb::DeleteEventRequest {
                id: deleted.id.clone(),
            },
        ))
        .await
        .unwrap();

    // Older claims spread over (and beyond) the 30 days.
    let database = service.database().await;
    let claims = database.collection::<Document>("claims");
    let now = Utc::now();
    let mut old = Vec::new();
    for (i, days) in [0_i64, 1, 1, 5, 12, 29, 29, 30, 45].iter().enumerate() {
        let status = ["GRANTED", "EXPIRED", "REJECTED"][i % 3];
        let types: &[&str] = if i % 2 == 0 {
            &["POINT", "BUFF"]
        } else {
            &["CURRENCY"]
        };
        old.push(old_claim(
            "old-event",
            "An old event",
            &format!("o{i}"),
            status,
            types,
            now - Duration::days(*days),
        ));
    }
    let deltas = database.collection::<Document>("claim_tally_deltas");
    deltas
        .insert_one(dashboard_delta(&old).unwrap())
        .await
        .unwrap();
    claims.insert_many(old).await.unwrap();

    // Nothing folded yet: every claim counts live.
    check(&service, &[&auto.id, &deleted.id]).await;
    // Folded into the rollups.
    let report = service.jobs.run_once().await.unwrap();
    assert!(report.tally_deltas_folded > 0, "{report:?}");
    check(&service, &[&auto.id, &deleted.id]).await;
    // Some claims change or arrive after the fold: rollups and live changes together.
    approve(&service, &operator(), &pending[2].id)
        .await
        .unwrap();
    for i in 4..7 {
        service.claimed(&player(&format!("a{i}")), &auto.id).await;
    }
    let late = old_claim(
        "old-event",
        "An old event",
        "late",
        "PENDING",
        &["ITEM"],
        now - Duration::days(3),
    );
    deltas
        .insert_one(dashboard_delta(std::slice::from_ref(&late)).unwrap())
        .await
        .unwrap();
    claims.insert_one(late).await.unwrap();
    check(&service, &[&auto.id, &deleted.id]).await;
    service.jobs.run_once().await.unwrap();
    check(&service, &[&auto.id, &deleted.id]).await;
    assert_eq!(
        service.jobs.run_once().await.unwrap().tally_deltas_folded,
        0
    );

    for who in [player("a0"), caller("nobody", &[])] {
        let refused = service
            .client()
            .get_dashboard(as_caller(&who, pb::GetDashboardRequest {}))
            .await
            .unwrap_err();
        assert_eq!(code(&refused), "FORBIDDEN");
    }
    for who in [operator(), admin()] {
        service
            .client()
            .get_dashboard(as_caller(&who, pb::GetDashboardRequest {}))
            .await
            .unwrap();
    }
}

/// Compares every claim figure with counts taken here from the collections; `titled` are
/// events whose title must be the one in their claims' snapshot.
async fn check(service: &TestEvent, titled: &[&str]) {
    let board = dashboard(service).await;
    let claims = service.database().await.collection::<Document>("claims");
    let now = Utc::now();

    // Expected figures, counted here from the collections.
    let docs: Vec<Document> = {
        let mut cursor = claims.find(doc! {}).await.unwrap();
        let mut docs = Vec::new();
        while cursor.advance().await.unwrap() {
            docs.push(cursor.deserialize_current().unwrap());
        }
        docs
    };
    let mut by_status: HashMap<String, i64> = ["PENDING", "GRANTED", "REJECTED", "EXPIRED"]
        .iter()
        .map(|s| ((*s).to_owned(), 0))
        .collect();
    let mut granted_by_type: HashMap<String, i64> = ["CURRENCY", "ITEM", "COUPON", "POINT", "BUFF"]
        .iter()
        .map(|s| ((*s).to_owned(), 0))
        .collect();
    let mut per_event: BTreeMap<String, i64> = BTreeMap::new();
    let mut per_day: HashMap<String, i64> = HashMap::new();
    for doc in &docs {
        let status = doc.get_str("status").unwrap();
        *by_status.get_mut(status).unwrap() += 1;
        if status == "GRANTED" {
            for reward in doc.get_array("rewards").unwrap() {
                let kind = reward.as_document().unwrap().get_str("type").unwrap();
                *granted_by_type.get_mut(kind).unwrap() += 1;
            }
        }
        *per_event
            .entry(doc.get_str("event_id").unwrap().to_owned())
            .or_default() += 1;
        let at = DateTime::<Utc>::from_timestamp_millis(
            doc.get_datetime("requested_at").unwrap().timestamp_millis(),
        )
        .unwrap();
        *per_day
            .entry(at.format("%Y-%m-%d").to_string())
            .or_default() += 1;
    }
    assert_eq!(
        board.events.unwrap().by_status,
        HashMap::from([
            ("ACTIVE".to_owned(), 2),
            ("SCHEDULED".to_owned(), 1),
            ("ENDED".to_owned(), 1),
            ("DRAFT".to_owned(), 1),
            ("CANCELED".to_owned(), 1),
        ])
    );
    let claim_figures = board.claims.unwrap();
    assert_eq!(claim_figures.by_status, by_status);
    assert!(
        by_status.values().all(|n| *n > 0),
        "the seed has every status: {by_status:?}"
    );
    let today = now.date_naive();
    let expected_days: Vec<pb::DayCount> = (0..30)
        .rev()
        .map(|ago| {
            let day = (today - Duration::days(ago)).format("%Y-%m-%d").to_string();
            pb::DayCount {
                count: per_day.get(&day).copied().unwrap_or(0),
                day,
            }
        })
        .collect();
    assert_eq!(claim_figures.per_day, expected_days);
    assert_eq!(
        claim_figures.per_day[29].day,
        today.format("%Y-%m-%d").to_string()
    );
    assert!(claim_figures.per_day[0].count >= 2, "29 days ago counts");
    assert_eq!(board.rewards.unwrap().granted_by_type, granted_by_type);

    let mut ranked: Vec<(String, i64)> = per_event.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let top: Vec<(String, i64)> = board
        .top_events
        .iter()
        .map(|e| (e.event_id.clone(), e.claims))
        .collect();
    assert_eq!(top, ranked);
    let titles: HashMap<&str, &str> = board
        .top_events
        .iter()
        .map(|e| (e.event_id.as_str(), e.title.as_str()))
        .collect();
    assert_eq!(titles["old-event"], "An old event");
    assert_eq!(titles[titled[0]], "auto");
    assert_eq!(titles[titled[1]], "deleted", "from the claim's snapshot");
}
