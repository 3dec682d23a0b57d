//! The bounded claim queue against the real stores: a hot event's queue at its bound sheds with
//! 503 UNAVAILABLE and `Retry-After`, callers that give up while queued get no claim, and in
//! both cases the ledger (claims, stock) holds a grant for exactly the calls answered OK.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use erp_platform::error::ApiError;
use erp_proto::event::v1 as pb;
use futures::future::join_all;
use mongodb::bson::{Document, doc};

const STOCK: i64 = 1000;

/// An AUTO event with plenty of stock, on an instance with `overrides`.
async fn hot_event(overrides: &[(&str, &str)]) -> (TestEvent, pb::Event) {
    let service = TestEvent::start_with(overrides).await;
    let mut request = active_event_request("hot");
    request.rewards = vec![reward("Gold", Some(STOCK))];
    let (event, _) = service.create(request).await;
    (service, event)
}

/// Claims `event_id` as `who` with the key `<who>-key`, giving up after `timeout` when set (the deadline
/// travels as `grpc-timeout`; the client also stops waiting then).
async fn claim(
    service: &TestEvent,
    who: &str,
    event_id: &str,
    timeout: Option<Duration>,
) -> Result<pb::ClaimResponse, tonic::Status> {
    let mut request = as_caller(
        &player(who),
        pb::ClaimRequest {
            event_id: event_id.to_owned(),
            idempotency_key: Some(format!("{who}-key")),
        },
    );
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    let call = async {
        service
            .client()
            .claim(request)
            .await
            .map(tonic::Response::into_inner)
    };
    match timeout {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client gave up"))),
        None => call.await,
    }
}

/// The players holding a claim on `event_id`, as stored.
async fn claimants(service: &TestEvent, event_id: &str) -> HashSet<String> {
    let mut users = HashSet::new();
    let mut cursor = service
        .database()
        .await
        .collection::<Document>("claims")
        .find(doc! { "event_id": event_id })
        .await
        .unwrap();
    while cursor.advance().await.unwrap() {
        let claim = cursor.deserialize_current().unwrap();
        assert_eq!(claim.get_str("status").unwrap(), "GRANTED");
        users.insert(claim.get_str("user_id").unwrap().to_owned());
    }
    users
}

/// The value of `series` in the instance's metrics, 0 when absent.
async fn metric(service: &TestEvent, series: &str) -> u64 {
    erp_testkit::sample(&service.metrics().await, series).map_or(0, |value| value as u64)
}

/// Stock taken and left agree with the claims stored.
async fn assert_stock_matches(service: &TestEvent, event_id: &str, granted: usize) {
    let granted = i64::try_from(granted).unwrap();
    let stored = stored_rewards(service, event_id).await;
    assert_eq!(int(&stored[0], "claimed"), granted);
    assert_eq!(int(&stored[0], "remaining"), STOCK - granted);
}

/// Waits until `event_id`'s claims stop changing (queued claims of callers who gave up are
/// dropped, not placed later; this makes sure of it).
async fn settled(service: &TestEvent, event_id: &str) -> HashSet<String> {
    let mut last = claimants(service, event_id).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = claimants(service, event_id).await;
        if now == last {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{event_id}'s claims kept changing"
        );
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_events_full_queue_sheds_with_unavailable_and_grants_only_answered_claims() {
    let (service, event) =
        hot_event(&[("ERP_CLAIM_QUEUE_MAX", "5"), ("ERP_CLAIM_BATCH_MAX", "1")]).await;
    let players: Vec<String> = (0..100).map(|i| format!("hot-{i}")).collect();
    let answers = join_all(players.iter().map(|p| claim(&service, p, &event.id, None))).await;

    let mut ok = HashSet::new();
    let mut shed = Vec::new();
    for (who, answer) in players.iter().zip(&answers) {
        match answer {
            Ok(response) => {
                assert_eq!(
                    response.claim.as_ref().unwrap().status,
                    pb::ClaimStatus::Granted as i32
                );
                ok.insert(who.clone());
            }
            Err(status) => {
                let error = ApiError::from_status(status);
                assert_eq!(error.code.as_str(), "UNAVAILABLE", "{status:?}");
                assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
                shed.push(who.clone());
            }
        }
    }
    eprintln!(
        "queue max 5, batch max 1: {} granted, {} shed",
        ok.len(),
        shed.len()
    );
    assert!(!shed.is_empty(), "100 claims at once overflow a queue of 5");
    assert!(!ok.is_empty());

    // The ledger: a grant for exactly the calls answered OK.
    assert_eq!(claimants(&service, &event.id).await, ok);
    assert_stock_matches(&service, &event.id, ok.len()).await;
    assert_eq!(service.audit("CLAIM_GRANTED").await.len(), ok.len());
    // Shedding is not a refusal: not audited as one, and not recorded for the key.
    assert!(service.audit("CLAIM_DENIED").await.is_empty());
    assert_eq!(
        metric(
            &service,
            "erp_event_claims_shed_total{reason=\"queue_full\"}"
        )
        .await,
        u64::try_from(shed.len()).unwrap()
    );

    // A retry with the same key, once the rush is over, is placed.
    for who in &shed {
        let retried = claim(&service, who, &event.id, None).await.unwrap();
        assert!(!retried.replayed);
    }
    assert_eq!(claimants(&service, &event.id).await.len(), players.len());
    assert_stock_matches(&service, &event.id, players.len()).await;
}

/// What became of a call that did not end OK, and whether it may have been placed: UNAVAILABLE
/// is the server's own answer (not placed); a deadline or cancel leaves the outcome unknown to
/// the caller, as gRPC says, and a retry with the same key tells it.
fn definitely_refused(status: &tonic::Status) -> bool {
    code(status) == "UNAVAILABLE" && status.code() == tonic::Code::Unavailable
}

/// For every player that is not in `ok`: no claim is stored, or (a caller that gave up during
/// its batch's transaction) a retry with the same key replays the claim stored. Returns how many
/// were such late grants.
async fn assert_only_answered_claims(
    service: &TestEvent,
    event_id: &str,
    players: &[String],
    ok: &HashSet<String>,
    refused: &HashSet<String>,
) -> usize {
    let stored = settled(service, event_id).await;
    let mut late = 0;
    for who in players {
        if ok.contains(who) {
            assert!(
                stored.contains(who),
                "{who} was answered OK but has no claim"
            );
        } else if stored.contains(who) {
            assert!(
                !refused.contains(who),
                "{who} was answered UNAVAILABLE but has a claim"
            );
            let retried = claim(service, who, event_id, None).await.unwrap();
            assert!(
                retried.replayed,
                "{who}: the late claim is the key's answer"
            );
            late += 1;
        }
    }
    assert_stock_matches(service, event_id, stored.len()).await;
    late
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_while_queued_get_no_claim() {
    let (service, event) = hot_event(&[("ERP_CLAIM_BATCH_MAX", "1")]).await;
    // 100 impatient callers (5 ms, then 50 ms to about 1 s) and 10 patient ones, all at once
    // on an event placing one claim per transaction.
    let players: Vec<String> = (0..110).map(|i| format!("impatient-{i}")).collect();
    let timeout = |i: usize| match i {
        0..5 => Some(Duration::from_millis(5)),
        5..100 => Some(Duration::from_millis(50 + 10 * u64::try_from(i).unwrap())),
        _ => None,
    };
    let answers = join_all(
        players
            .iter()
            .enumerate()
            .map(|(i, p)| claim(&service, p, &event.id, timeout(i))),
    )
    .await;
    let mut ok = HashSet::new();
    let mut refused = HashSet::new();
    let mut unknown = 0;
    for (who, answer) in players.iter().zip(&answers) {
        match answer {
            Ok(_) => {
                ok.insert(who.clone());
            }
            Err(status) if definitely_refused(status) => {
                refused.insert(who.clone());
            }
            Err(_) => unknown += 1,
        }
    }
    assert!(players[100..].iter().all(|p| ok.contains(p)), "{answers:?}");
    assert!(
        ok.len() < players.len(),
        "short deadlines behind a queue fail"
    );

    let late = assert_only_answered_claims(&service, &event.id, &players, &ok, &refused).await;
    let gone = metric(
        &service,
        "erp_event_claims_shed_total{reason=\"caller_gone\"}",
    )
    .await;
    let near = metric(&service, "erp_event_claims_shed_total{reason=\"deadline\"}").await;
    eprintln!(
        "deadlines, batch max 1: {} granted, {} answered UNAVAILABLE ({near} shed for a near \
         deadline, {gone} dropped from the queue), {unknown} timed out; {late} late grants",
        ok.len(),
        refused.len()
    );
    // Each UNAVAILABLE is a near-deadline shed (a shed answer may also reach a caller that
    // had given up already).
    assert!(u64::try_from(refused.len()).unwrap() <= near);

    // Nothing was recorded for the keys of the calls that gave up: each retry is placed anew.
    for who in players.iter().filter(|p| !ok.contains(*p)) {
        claim(&service, who, &event.id, None).await.unwrap();
    }
    assert_stock_matches(&service, &event.id, players.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_callers_are_dropped_from_the_queue() {
    let (service, event) = hot_event(&[("ERP_CLAIM_BATCH_MAX", "1")]).await;
    let service = std::sync::Arc::new(service);
    let players: Vec<String> = (0..60).map(|i| format!("cancelled-{i}")).collect();
    let calls: Vec<_> = players
        .iter()
        .map(|p| {
            let (service, who, event_id) = (service.clone(), p.clone(), event.id.clone());
            tokio::spawn(async move { claim(&service, &who, &event_id, None).await })
        })
        .collect();
    // Once the queue flows, every caller still waiting gives up (its request is reset).
    eventually(Duration::from_secs(30), "five claims placed", || async {
        (claimants(&service, &event.id).await.len() >= 5).then_some(())
    })
    .await;
    for call in &calls {
        call.abort();
    }
    let mut ok = HashSet::new();
    for (who, call) in players.iter().zip(calls) {
        if let Ok(Ok(_)) = call.await {
            ok.insert(who.clone());
        }
    }
    let late =
        assert_only_answered_claims(&service, &event.id, &players, &ok, &HashSet::new()).await;
    let gone = metric(
        &service,
        "erp_event_claims_shed_total{reason=\"caller_gone\"}",
    )
    .await;
    eprintln!(
        "cancel after 5 grants, batch max 1: {} answered OK, {} cancelled ({gone} dropped from \
         the queue); {late} late grants",
        ok.len(),
        players.len() - ok.len()
    );
    assert!(
        gone > 0,
        "cancelled callers were dropped from the queue unplaced"
    );
}
