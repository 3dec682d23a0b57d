//! Claims over gRPC against the real stores: exactly one claim per player however many race,
//! stock never oversold and taken for every limited reward or none, idempotency keys, refusals
//! (audited, and no claim left behind), snapshots that outlive edits and deletion, metrics.

use crate::common::*;
use chrono::Utc;
use erp_proto::event::v1 as pb;
use futures::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_claim_per_player_however_many_race() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("race");
    request.rewards = vec![reward("Gold", Some(1000))];
    let (event, rewards) = service.create(request).await;
    let me = player("racer");

    let answers = join_all((0..200).map(|_| service.claim(&me, &event.id, None))).await;
    let granted: Vec<pb::Claim> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|r| r.claim.clone().unwrap())
        .collect();
    assert_eq!(granted.len(), 1, "exactly one claim");
    let claim = &granted[0];
    assert_eq!(claim.status, pb::ClaimStatus::Granted as i32);
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(code(refused), "ALREADY_CLAIMED");
        assert_eq!(
            metadata(refused, "claimId").as_deref(),
            Some(claim.id.as_str())
        );
    }
    assert_eq!(claims_of(&service, &event.id).await, 1);
    let stored = stored_rewards(&service, &event.id).await;
    assert_eq!(int(&stored[0], "remaining"), 999);
    assert_eq!(int(&stored[0], "claimed"), 1);
    assert_eq!(service.rewards(&event.id).await[0].remaining, Some(999));
    assert_eq!(rewards[0].remaining, Some(1000));
    assert_eq!(service.audit("CLAIM_GRANTED").await.len(), 1);
}

/// 100 players race for 10 units: 10 granted, 90 refused, nothing oversold.
async fn stock_race(service: &TestEvent, players: usize, stock: i64) {
    let mut request = active_event_request("scarce");
    request.rewards = vec![reward("Sword", Some(stock))];
    let (event, rewards) = service.create(request).await;
    let callers: Vec<_> = (0..players).map(|i| player(&format!("p{i}"))).collect();
    let answers = join_all(callers.iter().map(|c| service.claim(c, &event.id, None))).await;
    let granted = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(granted, usize::try_from(stock).unwrap());
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(code(refused), "OUT_OF_STOCK", "{refused:?}");
        assert_eq!(
            metadata(refused, "rewardId").as_deref(),
            Some(rewards[0].id.as_str())
        );
    }
    let stored = stored_rewards(service, &event.id).await;
    assert_eq!(int(&stored[0], "remaining"), 0);
    assert_eq!(int(&stored[0], "claimed"), stock);
    assert_eq!(claims_of(service, &event.id).await, stock as u64);
    let denials = service.audit("CLAIM_DENIED").await;
    assert_eq!(denials.len(), players - granted);
    let after: serde_json::Value =
        serde_json::from_str(denials[0].after_json.as_deref().unwrap()).unwrap();
    assert_eq!(after["reason"], "OUT_OF_STOCK");
    assert_eq!(after["rewardId"], rewards[0].id.as_str());
    assert_eq!(after["eventId"], event.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_never_oversold() {
    let service = TestEvent::start().await;
    stock_race(&service, 100, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_never_oversold_without_batching() {
    // Every claim its own transaction: concurrent ones conflict on the reward and retry.
    let service = TestEvent::start_with(&[("ERP_CLAIM_BATCH_MAX", "0")]).await;
    stock_race(&service, 30, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_takes_every_limited_reward_or_none() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("bundle");
    request.rewards = vec![
        reward("Gold", Some(10)),
        reward("Gem", Some(5)),
        reward("Badge", None),
    ];
    let (event, rewards) = service.create(request).await;
    let callers: Vec<_> = (0..30).map(|i| player(&format!("b{i}"))).collect();
    let answers = join_all(callers.iter().map(|c| service.claim(c, &event.id, None))).await;
    let granted: Vec<pb::Claim> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|r| r.claim.clone().unwrap())
        .collect();
    assert_eq!(granted.len(), 5);
    for claim in &granted {
        let ids: Vec<&str> = claim.rewards.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            rewards.iter().map(|r| r.id.as_str()).collect::<Vec<_>>()
        );
    }
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(code(refused), "OUT_OF_STOCK");
        assert_eq!(
            metadata(refused, "rewardId").as_deref(),
            Some(rewards[1].id.as_str())
        );
    }
    let stored = stored_rewards(&service, &event.id).await;
    assert_eq!(
        stored.iter().map(|r| int(r, "claimed")).collect::<Vec<_>>(),
        [5, 5, 5]
    );
    assert_eq!(int(&stored[0], "remaining"), 5);
    assert_eq!(int(&stored[1], "remaining"), 0);
    assert_eq!(stored[2].get("remaining"), Some(&mongodb::bson::Bson::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_the_first_answer() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("keys");
    request.rewards = vec![reward("Gold", Some(100))];
    let (event, _) = service.create(request).await;
    let me = player("keyed");

    let first = service.claim(&me, &event.id, Some("k1")).await.unwrap();
    assert!(!first.replayed);
    let again = service.claim(&me, &event.id, Some("k1")).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.claim, first.claim);
    let claim_id = first.claim.unwrap().id;

    let other_key = service.claim(&me, &event.id, Some("k2")).await.unwrap_err();
    assert_eq!(code(&other_key), "ALREADY_CLAIMED");
    assert_eq!(metadata(&other_key, "claimId"), Some(claim_id.clone()));
    let no_key = service.claim(&me, &event.id, None).await.unwrap_err();
    assert_eq!(code(&no_key), "ALREADY_CLAIMED");

    // A key used on another event is a client mistake, not a replay.
    let (other_event, _) = service.create(active_event_request("other")).await;
    let misused = service
        .claim(&me, &other_event.id, Some("k1"))
        .await
        .unwrap_err();
    assert_eq!(fields(&misused), ["idempotencyKey"]);
    let too_long = service
        .claim(&me, &other_event.id, Some("k".repeat(201).as_str()))
        .await
        .unwrap_err();
    assert_eq!(fields(&too_long), ["idempotencyKey"]);

    // Concurrent requests with one key: one claim, every answer is it.
    let racer = player("keyed-racer");
    let answers = join_all((0..20).map(|_| service.claim(&racer, &event.id, Some("same")))).await;
    let answers: Vec<pb::ClaimResponse> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    let id = &answers[0].claim.as_ref().unwrap().id;
    assert!(answers.iter().all(|a| &a.claim.as_ref().unwrap().id == id));
}

#[tokio::test]
async fn a_first_refusal_is_replayed_for_its_key() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("gated");
    request.condition = Some(leaf("kills", pb::ComparisonOp::Gte, 3));
    let (event, _) = service.create(request).await;
    let me = player("gated-player");

    let refused = service
        .claim(&me, &event.id, Some("try-1"))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "CONDITIONS_NOT_MET");
    service.report("gated-player", "kills", 3).await;
    let replayed = service
        .claim(&me, &event.id, Some("try-1"))
        .await
        .unwrap_err();
    assert_eq!(
        code(&replayed),
        "CONDITIONS_NOT_MET",
        "the first answer again"
    );
    let fresh = service.claim(&me, &event.id, Some("try-2")).await.unwrap();
    assert!(!fresh.replayed);
    assert_eq!(fresh.claim.unwrap().status, pb::ClaimStatus::Granted as i32);
    assert_eq!(
        service.audit("CLAIM_DENIED").await.len(),
        1,
        "a replayed refusal is not a new refusal"
    );
}

#[tokio::test]
async fn unmet_conditions_are_refused_with_the_evaluation_then_granted_later() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("hunt");
    request.condition = Some(all(vec![
        leaf("kills", pb::ComparisonOp::Gte, 10),
        leaf("deaths", pb::ComparisonOp::Lt, 5),
    ]));
    request.rewards = vec![reward("Gold", Some(5))];
    let (event, _) = service.create(request).await;
    let me = player("hunter");
    service.report("hunter", "kills", 4).await;

    let refused = service.claim(&me, &event.id, None).await.unwrap_err();
    assert_eq!(code(&refused), "CONDITIONS_NOT_MET");
    let evaluation: serde_json::Value =
        serde_json::from_str(&metadata(&refused, "evaluation").unwrap()).unwrap();
    assert_eq!(
        evaluation,
        serde_json::json!({
            "eventId": event.id,
            "userId": "hunter",
            "passed": false,
            "details": [
                {"metric": "kills", "op": "GTE", "value": 10, "actual": 4, "passed": false},
                {"metric": "deaths", "op": "LT", "value": 5, "actual": 0, "passed": true},
            ],
        })
    );
    let denied = service.audit("CLAIM_DENIED").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].actor_id, "hunter");
    assert_eq!(denied[0].entity_id, event.id);
    let after: serde_json::Value =
        serde_json::from_str(denied[0].after_json.as_deref().unwrap()).unwrap();
    assert_eq!(after["reason"], "CONDITIONS_NOT_MET");
    assert_eq!(after["userId"], "hunter");
    assert_eq!(after["evaluation"], evaluation);
    assert_eq!(claims_of(&service, &event.id).await, 0, "no claim is left");
    assert_eq!(service.rewards(&event.id).await[0].remaining, Some(5));

    service.report("hunter", "kills", 6).await;
    let claim = service.claimed(&me, &event.id).await;
    assert_eq!(claim.status, pb::ClaimStatus::Granted as i32);
    let kept = claim.evaluation.unwrap();
    assert!(kept.passed);
    assert_eq!(kept.details[0].actual, 10);
}

#[tokio::test]
async fn claims_outside_an_active_published_event_are_refused() {
    let service = TestEvent::start().await;
    let hour = chrono::Duration::hours(1);
    let (scheduled, _) = service.create(event_request("later", hour, hour * 2)).await;
    let (ended, _) = service
        .create(event_request("over", -hour * 2, -hour))
        .await;
    let mut draft = active_event_request("draft");
    draft.draft = true;
    let (draft, _) = service.create(draft).await;
    let (canceled, _) = service.create(active_event_request("canceled")).await;
    cancel_event(&service, &canceled.id).await;
    let me = player("early");
    for event in [&scheduled, &ended, &draft, &canceled] {
        let refused = service.claim(&me, &event.id, None).await.unwrap_err();
        assert_eq!(code(&refused), "EVENT_NOT_ACTIVE", "{}", event.title);
    }
    assert_eq!(service.audit("CLAIM_DENIED").await.len(), 4);

    let (deleted, _) = service.create(active_event_request("deleted")).await;
    delete_event(&service, &admin(), &deleted.id).await.unwrap();
    for id in [deleted.id.as_str(), "no-such-event"] {
        let missing = service.claim(&me, id, None).await.unwrap_err();
        assert_eq!(code(&missing), "NOT_FOUND");
    }

    let (open, _) = service.create(active_event_request("open")).await;
    let auditor_only = service.claim(&auditor(), &open.id, None).await.unwrap_err();
    assert_eq!(code(&auditor_only), "FORBIDDEN");
    let anonymous = service
        .client()
        .claim(pb::ClaimRequest {
            event_id: open.id.clone(),
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    // Staff may claim for themselves too.
    service.claimed(&operator(), &open.id).await;
    service.claimed(&admin(), &open.id).await;
}

#[tokio::test]
async fn snapshots_survive_edits_and_deletion() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("Spring festival");
    let mut sword = reward("Sword", Some(3));
    sword.r#type = pb::RewardType::Item as i32;
    sword.item_code = Some("sword-01".into());
    sword.quantity = 1;
    request.rewards = vec![sword, reward("Gold", None)];
    let (event, rewards) = service.create(request).await;
    let me = player("keeper");
    let claim = service.claimed(&me, &event.id).await;
    assert_eq!(claim.status, pb::ClaimStatus::Granted as i32);
    assert_eq!(
        claim.decided_at, claim.requested_at,
        "AUTO grants decide at once"
    );
    assert_eq!(claim.decided_by.as_deref(), Some("system"));
    assert_eq!(claim.user_id, "keeper");
    let snapshot = claim.event.clone().unwrap();
    assert_eq!(snapshot.title, "Spring festival");
    assert_eq!(snapshot.starts_at, event.starts_at);
    assert_eq!(snapshot.ends_at, event.ends_at);
    assert_eq!(
        claim.rewards[0],
        pb::RewardSnapshot {
            id: rewards[0].id.clone(),
            name: "Sword".into(),
            r#type: pb::RewardType::Item as i32,
            item_code: Some("sword-01".into()),
            quantity: 1,
        }
    );
    assert_eq!(claim.rewards[1].name, "Gold");

    let mut client = service.client();
    client
        .update_event(as_caller(
            &operator(),
            pb::UpdateEventRequest {
                id: event.id.clone(),
                title: Some("Renamed".into()),
                ends_at: ts(Utc::now() + chrono::Duration::days(30)),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    client
        .update_reward(as_caller(
            &operator(),
            pb::UpdateRewardRequest {
                event_id: event.id.clone(),
                reward_id: rewards[0].id.clone(),
                name: Some("Blunt sword".into()),
                quantity: Some(7),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    client
        .delete_reward(as_caller(
            &admin(),
            pb::DeleteRewardRequest {
                event_id: event.id.clone(),
                reward_id: rewards[1].id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(service.get_claim(&me, &claim.id).await.unwrap(), claim);
    client
        .delete_event(as_caller(
            &admin(),
            pb::DeleteEventRequest {
                id: event.id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(service.get_claim(&me, &claim.id).await.unwrap(), claim);
}

#[tokio::test]
async fn claims_are_audited_and_counted() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("counted");
    let mut coupon = reward("Coupon", Some(1));
    coupon.r#type = pb::RewardType::Coupon as i32;
    request.rewards = vec![coupon];
    let (event, rewards) = service.create(request).await;
    let claim = service.claimed(&player("c1"), &event.id).await;
    let out = service
        .claim(&player("c2"), &event.id, None)
        .await
        .unwrap_err();
    assert_eq!(code(&out), "OUT_OF_STOCK");
    let dup = service
        .claim(&player("c1"), &event.id, None)
        .await
        .unwrap_err();
    assert_eq!(code(&dup), "ALREADY_CLAIMED");

    let granted = service.audit("CLAIM_GRANTED").await;
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].entity_type, "claim");
    assert_eq!(granted[0].entity_id, claim.id);
    assert_eq!(granted[0].actor_id, "c1");
    let after: serde_json::Value =
        serde_json::from_str(granted[0].after_json.as_deref().unwrap()).unwrap();
    assert_eq!(after["status"], "GRANTED");
    assert_eq!(after["rewards"][0]["type"], "COUPON");

    let text = service.metrics().await;
    for line in [
        "erp_event_claims_total{reason=\"\",result=\"granted\"} 1".to_owned(),
        "erp_event_claims_total{reason=\"OUT_OF_STOCK\",result=\"denied\"} 1".to_owned(),
        "erp_event_claims_total{reason=\"\",result=\"duplicate\"} 1".to_owned(),
        format!(
            "erp_event_event_claims_total{{event_id=\"{}\"}} 1",
            event.id
        ),
        "erp_event_rewards_granted_total{type=\"COUPON\"} 1".to_owned(),
        format!(
            "erp_event_reward_remaining{{event_id=\"{}\",reward_id=\"{}\"}} 0",
            event.id, rewards[0].id
        ),
        "erp_event_claim_duration_seconds_count 3".to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
}

/// A player who keeps claiming what they may not have writes one CLAIM_DENIED per event, reason
/// and window, whose count says how often it happened, not one record per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_identical_refusals_are_one_audit_record_with_a_count() {
    // Windows are aligned to the epoch: a ten-year one keeps a boundary out of the test.
    let service =
        TestEvent::start_with(&[("ERP_CLAIM_DENIAL_AUDIT_WINDOW_SECS", "315360000")]).await;
    let hour = chrono::Duration::hours(1);
    let (later, _) = service.create(event_request("later", hour, hour * 2)).await;
    let (other, _) = service
        .create(event_request("also later", hour, hour * 2))
        .await;
    let spammer = player("spammer");
    let attempts = join_all((0..25).map(|_| service.claim(&spammer, &later.id, None))).await;
    assert!(
        attempts
            .iter()
            .all(|a| a.as_ref().is_err_and(|e| code(e) == "EVENT_NOT_ACTIVE"))
    );
    for _ in 0..5 {
        service.claim(&spammer, &later.id, None).await.unwrap_err();
    }
    // Another event and another player are records of their own.
    service.claim(&spammer, &other.id, None).await.unwrap_err();
    service
        .claim(&player("someone else"), &later.id, None)
        .await
        .unwrap_err();

    let denials = service.audit("CLAIM_DENIED").await;
    assert_eq!(denials.len(), 3, "{denials:?}");
    let counts: std::collections::HashMap<(String, String), i64> = denials
        .iter()
        .map(|entry| {
            let after: serde_json::Value =
                serde_json::from_str(entry.after_json.as_deref().unwrap()).unwrap();
            assert_eq!(after["reason"], "EVENT_NOT_ACTIVE");
            (
                (
                    after["eventId"].as_str().unwrap().to_owned(),
                    after["userId"].as_str().unwrap().to_owned(),
                ),
                after["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts[&(later.id.clone(), "spammer".to_owned())], 30);
    assert_eq!(counts[&(other.id.clone(), "spammer".to_owned())], 1);
    assert_eq!(counts[&(later.id.clone(), "someone else".to_owned())], 1);
}
