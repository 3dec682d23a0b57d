//! Operators' grants over gRPC against the real stores: per-user outcomes in the order given,
//! the claim path's exactly-once and stock rules (also when grants race with players' claims),
//! the caller-scoped idempotency key, the audit trail, and 1,000 users in one call.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::*;
use erp_platform::identity::Caller;
use erp_proto::event::v1 as pb;
use futures::future::join_all;
use mongodb::bson::{Document, doc};

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn grant_request(event_id: &str, users: &[String], reason: &str, key: &str) -> pb::GrantRequest {
    pb::GrantRequest {
        event_id: event_id.to_owned(),
        user_ids: users.to_vec(),
        active_user_ids: users.to_vec(),
        reason: reason.to_owned(),
        idempotency_key: key.to_owned(),
    }
}

async fn grant(
    service: &TestEvent,
    who: &Caller,
    request: pb::GrantRequest,
) -> Result<pb::GrantResponse, tonic::Status> {
    service
        .client()
        .grant(as_caller(who, request))
        .await
        .map(tonic::Response::into_inner)
}

fn outcome(result: &pb::GrantResult) -> pb::GrantOutcome {
    pb::GrantOutcome::try_from(result.outcome).unwrap()
}

/// An event with one limited reward of `stock` units (and one unlimited).
async fn stocked_event(service: &TestEvent, title: &str, stock: i64) -> pb::Event {
    let mut request = active_event_request(title);
    request.rewards = vec![reward("Gold", Some(stock)), reward("Badge", None)];
    service.create(request).await.0
}

#[tokio::test]
async fn a_grant_answers_every_user_in_order() {
    let service = TestEvent::start().await;
    // A condition nobody meets: a grant skips it.
    let mut request = active_event_request("compensation");
    request.rewards = vec![reward("Gold", Some(3)), reward("Badge", None)];
    request.condition = Some(leaf("wins", pb::ComparisonOp::Gte, 1000));
    let (event, rewards) = service.create(request).await;
    // One player meets it and claims first.
    service.report("p-claimed", "wins", 1000).await;
    let players_claim = service.claimed(&player("p-claimed"), &event.id).await;
    assert_eq!(players_claim.source, pb::ClaimSource::Claim as i32);
    assert_eq!(players_claim.granted_by, None);

    let listed = ids(&["u1", "p-claimed", "operator-1", "ghost", "u2", "u3", "u1"]);
    let mut request = grant_request(&event.id, &listed, "  lost progress in outage #42 ", "g-1");
    request.active_user_ids = ids(&["u1", "u2", "u3", "p-claimed", "operator-1"]);
    let answer = grant(&service, &operator(), request).await.unwrap();
    assert!(!answer.replayed);
    let got: Vec<(&str, pb::GrantOutcome)> = answer
        .results
        .iter()
        .map(|r| (r.user_id.as_str(), outcome(r)))
        .collect();
    assert_eq!(
        got,
        [
            ("u1", pb::GrantOutcome::Granted),
            ("p-claimed", pb::GrantOutcome::AlreadyClaimed),
            ("operator-1", pb::GrantOutcome::Forbidden),
            ("ghost", pb::GrantOutcome::NotFound),
            ("u2", pb::GrantOutcome::Granted),
            ("u3", pb::GrantOutcome::OutOfStock),
            ("u1", pb::GrantOutcome::AlreadyClaimed),
        ]
    );
    let results = &answer.results;
    let u1_claim = results[0].claim_id.clone().unwrap();
    assert_eq!(
        results[1].claim_id.as_deref(),
        Some(players_claim.id.as_str())
    );
    for refused in [2, 3, 5] {
        assert_eq!(results[refused].claim_id, None);
    }
    assert_eq!(results[6].claim_id.as_deref(), Some(u1_claim.as_str()));

    let claim = service.get_claim(&admin(), &u1_claim).await.unwrap();
    assert_eq!(claim.user_id, "u1");
    assert_eq!(claim.status, pb::ClaimStatus::Granted as i32);
    assert_eq!(claim.source, pb::ClaimSource::Grant as i32);
    assert_eq!(claim.granted_by.as_deref(), Some("operator-1"));
    assert_eq!(claim.decided_by.as_deref(), Some("operator-1"));
    assert_eq!(claim.reason.as_deref(), Some("lost progress in outage #42"));
    assert!(claim.decided_at.is_some());
    let snapshot_ids: Vec<&str> = claim.rewards.iter().map(|r| r.id.as_str()).collect();
    let reward_ids: Vec<&str> = rewards.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(snapshot_ids, reward_ids);
    // A delivery per grant, written with it (the claim path's outbox).
    let delivery = claim
        .delivery
        .clone()
        .expect("a granted claim has its delivery");
    assert_eq!(delivery.status, pb::DeliveryStatus::Pending as i32);
    let evaluation = claim.evaluation.unwrap();
    assert!(evaluation.passed, "a grant skips the condition");
    assert!(evaluation.details.is_empty());
    // The player sees it among their claims.
    let mine = service
        .client()
        .list_my_claims(as_caller(&player("u1"), pb::ListMyClaimsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id, u1_claim);

    assert_eq!(claims_of(&service, &event.id).await, 3);
    let deliveries = service
        .database()
        .await
        .collection::<Document>("deliveries")
        .count_documents(doc! { "event_id": &event.id })
        .await
        .unwrap();
    assert_eq!(
        deliveries, 3,
        "one per granted claim: the player's and the two grants"
    );
    let stored = stored_rewards(&service, &event.id).await;
    assert_eq!(int(&stored[0], "remaining"), 0);
    assert_eq!(int(&stored[0], "claimed"), 3);
    assert_eq!(int(&stored[1], "claimed"), 3);

    // CLAIM_GRANTED: the player's own (actor: the player) and one per grant (actor: the
    // operator, with the source and reason).
    let granted = service.audit("CLAIM_GRANTED").await;
    assert_eq!(granted.len(), 3);
    let by_operator: Vec<_> = granted
        .iter()
        .filter(|e| e.actor_id == "operator-1")
        .collect();
    assert_eq!(by_operator.len(), 2);
    for entry in &by_operator {
        assert_eq!(entry.entity_type, "claim");
        let after: serde_json::Value =
            serde_json::from_str(entry.after_json.as_deref().unwrap()).unwrap();
        assert_eq!(after["source"], "GRANT");
        assert_eq!(after["reason"], "lost progress in outage #42");
        assert_eq!(after["grantedBy"], "operator-1");
        assert_eq!(after["status"], "GRANTED");
    }
    let granted_entities: HashSet<&str> =
        by_operator.iter().map(|e| e.entity_id.as_str()).collect();
    assert!(granted_entities.contains(u1_claim.as_str()));
    assert!(
        granted
            .iter()
            .any(|e| e.actor_id == "p-claimed" && e.entity_id == players_claim.id)
    );
}

#[tokio::test]
async fn grants_skip_the_window_but_not_the_publication() {
    let service = TestEvent::start().await;
    let users = ids(&["w1"]);
    let (ended, _) = service
        .create(event_request(
            "ended",
            chrono::Duration::days(-7),
            chrono::Duration::days(-1),
        ))
        .await;
    let (scheduled, _) = service
        .create(event_request(
            "scheduled",
            chrono::Duration::days(1),
            chrono::Duration::days(7),
        ))
        .await;
    for (event, key) in [(&ended, "g-ended"), (&scheduled, "g-scheduled")] {
        let answer = grant(
            &service,
            &operator(),
            grant_request(&event.id, &users, "r", key),
        )
        .await
        .unwrap();
        assert_eq!(outcome(&answer.results[0]), pb::GrantOutcome::Granted);
    }

    let mut draft_request = active_event_request("draft");
    draft_request.draft = true;
    let (draft, _) = service.create(draft_request).await;
    let (canceled, _) = service.create(active_event_request("canceled")).await;
    cancel_event(&service, &canceled.id).await;
    let (deleted, _) = service.create(active_event_request("deleted")).await;
    delete_event(&service, &admin(), &deleted.id).await.unwrap();
    for (event_id, expected) in [
        (draft.id.as_str(), "EVENT_NOT_ACTIVE"),
        (canceled.id.as_str(), "EVENT_NOT_ACTIVE"),
        (deleted.id.as_str(), "NOT_FOUND"),
        ("no-such-event", "NOT_FOUND"),
    ] {
        let refused = grant(
            &service,
            &operator(),
            grant_request(event_id, &users, "r", "g-x"),
        )
        .await
        .unwrap_err();
        assert_eq!(code(&refused), expected, "{event_id}");
        assert_eq!(claims_of(&service, event_id).await, 0);
    }
    // A refusal of the whole grant is not the key's answer: the key still works.
    let answer = grant(
        &service,
        &operator(),
        grant_request(&ended.id, &ids(&["w2"]), "r", "g-x"),
    )
    .await
    .unwrap();
    assert_eq!(outcome(&answer.results[0]), pb::GrantOutcome::Granted);
}

#[tokio::test]
async fn grant_requests_are_validated_and_only_operators_grant() {
    let service = TestEvent::start().await;
    let event = stocked_event(&service, "validated", 5).await;
    let one = ids(&["v1"]);
    let cases: Vec<(pb::GrantRequest, Vec<&str>)> = vec![
        (grant_request(&event.id, &[], "r", "k"), vec!["userIds"]),
        (
            grant_request(&event.id, &vec!["u".to_owned(); 1001], "r", "k"),
            vec!["userIds"],
        ),
        (
            grant_request(&event.id, &ids(&["ok", "", &"x".repeat(201)]), "r", "k"),
            vec!["userIds[1]", "userIds[2]"],
        ),
        (grant_request(&event.id, &one, "   ", "k"), vec!["reason"]),
        (
            grant_request(&event.id, &one, &"r".repeat(501), "k"),
            vec!["reason"],
        ),
        (
            grant_request(&event.id, &one, "r", ""),
            vec!["Idempotency-Key"],
        ),
        (
            grant_request(&event.id, &one, "r", &"k".repeat(201)),
            vec!["Idempotency-Key"],
        ),
    ];
    for (request, expected) in cases {
        let refused = grant(&service, &operator(), request).await.unwrap_err();
        assert_eq!(code(&refused), "VALIDATION_FAILED");
        assert_eq!(fields(&refused), expected);
    }
    for who in [player("v9"), auditor()] {
        let refused = grant(&service, &who, grant_request(&event.id, &one, "r", "k"))
            .await
            .unwrap_err();
        assert_eq!(code(&refused), "FORBIDDEN");
    }
    let anonymous = service
        .client()
        .grant(grant_request(&event.id, &one, "r", "k"))
        .await
        .unwrap_err();
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    assert_eq!(claims_of(&service, &event.id).await, 0);
    // Admins grant too.
    let answer = grant(&service, &admin(), grant_request(&event.id, &one, "r", "k"))
        .await
        .unwrap();
    assert_eq!(outcome(&answer.results[0]), pb::GrantOutcome::Granted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_key_replays_the_first_answer() {
    let service = TestEvent::start().await;
    let event = stocked_event(&service, "replayed", 3).await;
    let users = ids(&["r1", "r2", "r3", "r4"]);
    let first = grant(
        &service,
        &operator(),
        grant_request(&event.id, &users, "sorry", "key-1"),
    )
    .await
    .unwrap();
    assert!(!first.replayed);
    let outcomes: Vec<pb::GrantOutcome> = first.results.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [
            pb::GrantOutcome::Granted,
            pb::GrantOutcome::Granted,
            pb::GrantOutcome::Granted,
            pb::GrantOutcome::OutOfStock,
        ]
    );
    let audited = service.audit("CLAIM_GRANTED").await.len();

    // The same key again, even with another list: the first answer, nothing executed.
    let again = grant(
        &service,
        &operator(),
        grant_request(&event.id, &ids(&["someone-else"]), "other", "key-1"),
    )
    .await
    .unwrap();
    assert!(again.replayed);
    assert_eq!(again.results, first.results);
    assert_eq!(claims_of(&service, &event.id).await, 3);
    assert_eq!(service.audit("CLAIM_GRANTED").await.len(), audited);
    // The key is the caller's: another operator's same key is a grant of its own.
    let other = grant(
        &service,
        &caller("operator-2", &[erp_platform::identity::Role::Operator]),
        grant_request(&event.id, &users, "sorry", "key-1"),
    )
    .await
    .unwrap();
    assert!(!other.replayed);
    assert!(
        other.results[..3]
            .iter()
            .all(|r| outcome(r) == pb::GrantOutcome::AlreadyClaimed)
    );
    // The key on another event is a mistake.
    let elsewhere = stocked_event(&service, "elsewhere", 3).await;
    let misused = grant(
        &service,
        &operator(),
        grant_request(&elsewhere.id, &users, "sorry", "key-1"),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&misused), "VALIDATION_FAILED");
    assert_eq!(claims_of(&service, &elsewhere.id).await, 0);

    // Concurrent repeats of a new key: one runs, the others wait for its answer.
    let users = ids(&["c1", "c2", "c3"]);
    let concurrent = join_all((0..6).map(|_| {
        let mut client = service.client();
        let request = grant_request(&elsewhere.id, &users, "batch", "key-2");
        async move {
            client
                .grant(as_caller(&operator(), request))
                .await
                .unwrap()
                .into_inner()
        }
    }))
    .await;
    assert_eq!(concurrent.iter().filter(|a| !a.replayed).count(), 1);
    for answer in &concurrent {
        assert_eq!(answer.results, concurrent[0].results);
        assert!(
            answer
                .results
                .iter()
                .all(|r| outcome(r) == pb::GrantOutcome::Granted)
        );
    }
    assert_eq!(claims_of(&service, &elsewhere.id).await, 3);
}

#[tokio::test]
async fn a_thousand_users_in_one_grant() {
    let service = TestEvent::start().await;
    let event = stocked_event(&service, "thousand", 1000).await;
    let users: Vec<String> = (0..1000).map(|i| format!("bulk-{i:04}")).collect();
    let started = Instant::now();
    let answer = grant(
        &service,
        &operator(),
        grant_request(&event.id, &users, "outage", "bulk"),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    println!("a 1,000-user grant took {took:?}");
    assert_eq!(answer.results.len(), 1000);
    for (result, user) in answer.results.iter().zip(&users) {
        assert_eq!(&result.user_id, user);
        assert_eq!(outcome(result), pb::GrantOutcome::Granted);
    }
    let claim_ids: HashSet<&str> = answer
        .results
        .iter()
        .filter_map(|r| r.claim_id.as_deref())
        .collect();
    assert_eq!(claim_ids.len(), 1000);
    assert_eq!(claims_of(&service, &event.id).await, 1000);
    let deliveries = service
        .database()
        .await
        .collection::<Document>("deliveries")
        .count_documents(doc! { "event_id": &event.id })
        .await
        .unwrap();
    assert_eq!(deliveries, 1000);
    assert_eq!(
        int(&stored_rewards(&service, &event.id).await[0], "remaining"),
        0
    );
    assert_eq!(service.audit("CLAIM_GRANTED").await.len(), 1000);
    // Generous: the target is under 2 s on the test store; this catches a per-user round trip.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_holds_when_a_grant_races_with_players_claims() {
    const STOCK: i64 = 40;
    let service = TestEvent::start().await;
    let event = stocked_event(&service, "race", STOCK).await;
    // 60 granted users, 10 of whom also claim themselves at the same time.
    let granted_users: Vec<String> = (0..60).map(|i| format!("racer-{i}")).collect();
    let players: Vec<String> = (50..150).map(|i| format!("racer-{i}")).collect();
    let granting = {
        let mut client = service.client();
        let request = grant_request(&event.id, &granted_users, "race", "race-key");
        tokio::spawn(async move { client.grant(as_caller(&operator(), request)).await })
    };
    // The players' claims spread over the grant's run, so their batches and the grant's
    // transaction interleave.
    let claims: Vec<_> = players
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let mut client = service.client();
            let request = pb::ClaimRequest {
                event_id: event.id.clone(),
                idempotency_key: None,
            };
            let who = player(user);
            let delay = Duration::from_millis(u64::try_from(i % 20).unwrap() * 10);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                client.claim(as_caller(&who, request)).await
            })
        })
        .collect();
    let claimed = join_all(claims).await;
    let answer = granting.await.unwrap().unwrap().into_inner();

    let mut won_by_claim = 0;
    for result in claimed {
        match result.unwrap() {
            Ok(_) => won_by_claim += 1,
            Err(status) => assert!(
                matches!(code(&status), "OUT_OF_STOCK" | "ALREADY_CLAIMED"),
                "{status:?}"
            ),
        }
    }
    let won_by_grant = answer
        .results
        .iter()
        .filter(|r| outcome(r) == pb::GrantOutcome::Granted)
        .count();
    for result in &answer.results {
        assert!(matches!(
            outcome(result),
            pb::GrantOutcome::Granted
                | pb::GrantOutcome::OutOfStock
                | pb::GrantOutcome::AlreadyClaimed
        ));
    }
    println!("stock {STOCK}: {won_by_grant} granted, {won_by_claim} claimed");

    let stored = service
        .database()
        .await
        .collection::<Document>("claims")
        .find(doc! { "event_id": &event.id })
        .await
        .unwrap();
    let stored: Vec<Document> = futures::TryStreamExt::try_collect(stored).await.unwrap();
    assert_eq!(
        i64::try_from(stored.len()).unwrap(),
        STOCK,
        "demand is far above the stock, which is taken exactly"
    );
    assert_eq!(won_by_grant + won_by_claim, stored.len());
    let owners: HashSet<&str> = stored
        .iter()
        .map(|d| d.get_str("user_id").unwrap())
        .collect();
    assert_eq!(owners.len(), stored.len(), "one claim per user");
    let deliveries = service
        .database()
        .await
        .collection::<Document>("deliveries")
        .count_documents(doc! { "event_id": &event.id })
        .await
        .unwrap();
    assert_eq!(
        deliveries,
        u64::try_from(STOCK).unwrap(),
        "a delivery per granted claim"
    );
    let rewards = stored_rewards(&service, &event.id).await;
    assert_eq!(int(&rewards[0], "remaining"), 0);
    assert_eq!(int(&rewards[0], "claimed"), STOCK);
    assert_eq!(int(&rewards[1], "claimed"), STOCK);
}

/// The grant record of `key` as stored (the caller-scoped idempotency record).
fn grant_record_filter(caller_id: &str, key: &str) -> Document {
    doc! { "user_id": format!("grant:{caller_id}"), "key": key }
}

#[tokio::test]
async fn an_interrupted_grant_is_run_again_and_keeps_what_it_granted() {
    let service = TestEvent::start().await;
    let event = stocked_event(&service, "interrupted", 10).await;
    let first = grant(
        &service,
        &operator(),
        grant_request(&event.id, &ids(&["i1"]), "outage", "resumed"),
    )
    .await
    .unwrap();
    let i1_claim = first.results[0].claim_id.clone().unwrap();
    // As if the process died after placing i1 but before keeping the answer: the record holds
    // a lease nobody renews, and no results.
    let records = service
        .database()
        .await
        .collection::<Document>("claim_requests");
    let changed = records
        .update_one(
            grant_record_filter("operator-1", "resumed"),
            doc! {
                "$set": { "lease": "dead-runner", "lease_at": mongodb::bson::DateTime::from_millis(0) },
                "$unset": { "grant_results": "" },
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.modified_count, 1);

    // The key on another event is refused, and takes nothing over.
    let elsewhere = stocked_event(&service, "elsewhere", 10).await;
    let misused = grant(
        &service,
        &operator(),
        grant_request(&elsewhere.id, &ids(&["i1"]), "outage", "resumed"),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&misused), "VALIDATION_FAILED");
    assert_eq!(fields(&misused), ["Idempotency-Key"]);

    // The repeat (the gateway retrying the whole list) takes the grant over and runs it again:
    // i1's claim was made by this grant, so it is GRANTED again, not ALREADY_CLAIMED.
    let resumed = grant(
        &service,
        &operator(),
        grant_request(&event.id, &ids(&["i1", "i2"]), "outage", "resumed"),
    )
    .await
    .unwrap();
    assert!(!resumed.replayed);
    assert_eq!(outcome(&resumed.results[0]), pb::GrantOutcome::Granted);
    assert_eq!(
        resumed.results[0].claim_id.as_deref(),
        Some(i1_claim.as_str())
    );
    assert_eq!(outcome(&resumed.results[1]), pb::GrantOutcome::Granted);
    assert_eq!(claims_of(&service, &event.id).await, 2);
    assert_eq!(service.audit("CLAIM_GRANTED").await.len(), 2);
    // Its answer is now the key's.
    let replayed = grant(
        &service,
        &operator(),
        grant_request(&event.id, &ids(&["i1", "i2"]), "outage", "resumed"),
    )
    .await
    .unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.results, resumed.results);
}

#[tokio::test]
async fn a_repeat_of_a_running_grant_waits_then_answers_unavailable() {
    let service = TestEvent::start_with(&[("ERP_GRPC_TIMEOUT_MS", "1000")]).await;
    let event = stocked_event(&service, "running", 10).await;
    // A grant of this key is running elsewhere (its lease is fresh).
    service
        .database()
        .await
        .collection::<Document>("claim_requests")
        .insert_one(doc! {
            "_id": "running-grant",
            "user_id": "grant:operator-1",
            "key": "busy",
            "event_id": &event.id,
            "at": mongodb::bson::DateTime::now(),
            "lease": "other-runner",
            "lease_at": mongodb::bson::DateTime::now(),
        })
        .await
        .unwrap();
    let started = Instant::now();
    let refused = grant(
        &service,
        &operator(),
        grant_request(&event.id, &ids(&["b1"]), "r", "busy"),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&refused), "UNAVAILABLE", "{refused:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(claims_of(&service, &event.id).await, 0);
}

#[tokio::test]
async fn claims_stored_before_sources_existed_read_as_players_claims() {
    let service = TestEvent::start().await;
    let event = stocked_event(&service, "old", 5).await;
    let claim = service.claimed(&player("old-1"), &event.id).await;
    let claims = service.database().await.collection::<Document>("claims");
    let stored = claims
        .find_one(doc! { "_id": &claim.id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("source").unwrap(), "CLAIM");
    claims
        .update_one(
            doc! { "_id": &claim.id },
            doc! { "$unset": { "source": "" } },
        )
        .await
        .unwrap();
    let read = service.get_claim(&admin(), &claim.id).await.unwrap();
    assert_eq!(read.source, pb::ClaimSource::Claim as i32);
    assert_eq!(read.granted_by, None);
}
