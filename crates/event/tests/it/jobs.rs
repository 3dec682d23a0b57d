//! The background jobs against the real stores: pending claims expire once their event has been
//! over for the configured time (stock returned, audited, once however many runners overlap),
//! and EVENT_STARTED / EVENT_ENDED are recorded once per event.

use std::sync::Arc;

use crate::common::*;
use chrono::{Duration, Utc};
use erp_proto::event::v1 as pb;

/// An instance whose jobs run only when a test says so.
async fn start(scratch: &Arc<Scratch>, expiry_secs: &str) -> TestEvent {
    TestEvent::start_in(
        scratch,
        &[
            ("ERP_CLAIM_PENDING_EXPIRY_SECS", expiry_secs),
            ("ERP_JOBS_INTERVAL_SECS", "3600"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_claims_expire_once_after_their_event_ends() {
    let scratch = Scratch::new();
    let service = start(&scratch, "0").await;
    let patient = start(&scratch, "86400").await;
    let mut request = manual(active_event_request("slow review"));
    request.rewards = vec![reward("Gold", Some(1)), reward("Badge", None)];
    let (event, rewards) = service.create(request).await;
    let claim = service.claimed(&player("waiting"), &event.id).await;
    assert_eq!(service.rewards(&event.id).await[0].remaining, Some(0));

    // Still running: nothing to expire.
    service.jobs.run_once().await.unwrap();
    let still = service.get_claim(&operator(), &claim.id).await.unwrap();
    assert_eq!(still.status, pb::ClaimStatus::Pending as i32);

    // The event ends (its current end counts, not the claim's snapshot).
    let now = Utc::now();
    update_event(
        &service,
        &operator(),
        pb::UpdateEventRequest {
            id: event.id.clone(),
            starts_at: ts(now - Duration::hours(2)),
            ends_at: ts(now - Duration::seconds(1)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // A day's grace is not over yet.
    patient.jobs.run_once().await.unwrap();
    assert_eq!(
        service
            .get_claim(&operator(), &claim.id)
            .await
            .unwrap()
            .status,
        pb::ClaimStatus::Pending as i32
    );

    let (first, second) = tokio::join!(service.jobs.run_once(), service.jobs.run_once());
    let expired = first.unwrap().claims_expired + second.unwrap().claims_expired;
    assert_eq!(expired, 1, "two overlapping runners expire it once");
    assert_eq!(service.jobs.run_once().await.unwrap().claims_expired, 0);

    let done = service
        .get_claim(&player("waiting"), &claim.id)
        .await
        .unwrap();
    assert_eq!(done.status, pb::ClaimStatus::Expired as i32);
    assert_eq!(done.decided_by.as_deref(), Some("system"));
    assert!(done.reason.is_some());
    assert!(done.decided_at.is_some());
    let after = service.rewards(&event.id).await;
    assert_eq!(after[0].remaining, Some(1), "the stock is back");
    let stored = stored_rewards(&service, &event.id).await;
    assert_eq!(int(&stored[0], "claimed"), 0);
    assert_eq!(int(&stored[1], "claimed"), 0);
    assert_eq!(after[1].id, rewards[1].id);
    let audit = service.audit("CLAIM_EXPIRED").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor_id, "system");
    assert_eq!(audit[0].entity_id, claim.id);
    // Expired is final.
    let late = approve(&service, &operator(), &claim.id).await.unwrap_err();
    assert_eq!(code(&late), "INVALID_STATE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_starts_and_ends_are_recorded_once() {
    let service = start(&Scratch::new(), "604800").await;
    let hour = Duration::hours(1);
    let (running, _) = service.create(active_event_request("running")).await;
    let (over, _) = service
        .create(event_request("over", -hour * 3, -hour))
        .await;
    let (_later, _) = service.create(event_request("later", hour, hour * 2)).await;
    let mut draft = event_request("draft", -hour * 3, -hour);
    draft.draft = true;
    service.create(draft).await;
    let (deleted, _) = service
        .create(event_request("deleted", -hour * 3, -hour))
        .await;
    delete_event(&service, &admin(), &deleted.id).await.unwrap();

    let (first, second) = tokio::join!(service.jobs.run_once(), service.jobs.run_once());
    assert!(first.unwrap().ran && second.unwrap().ran);
    service.jobs.run_once().await.unwrap();

    let mut started: Vec<String> = service
        .audit("EVENT_STARTED")
        .await
        .into_iter()
        .map(|e| {
            assert_eq!(e.actor_id, "system");
            assert_eq!(e.entity_type, "event");
            e.entity_id
        })
        .collect();
    started.sort();
    let mut expected = vec![running.id.clone(), over.id.clone()];
    expected.sort();
    assert_eq!(
        started, expected,
        "published events that started, once each"
    );
    let ended: Vec<String> = service
        .audit("EVENT_ENDED")
        .await
        .into_iter()
        .map(|e| e.entity_id)
        .collect();
    assert_eq!(ended, [over.id.as_str()]);
    let entry = &service.audit("EVENT_ENDED").await[0];
    let after: serde_json::Value =
        serde_json::from_str(entry.after_json.as_deref().unwrap()).unwrap();
    assert_eq!(after["title"], "over");
}
