//! Deliveries end to end, with a real webhook receiver on loopback: one delivery per grant
//! (AUTO claim, approval, operator grant) and none otherwise, pushed with a signature the
//! receiver verifies, pulled and acked by a game server, retried with growing gaps until
//! `FAILED`, re-queued; never lost when the dispatching event service is SIGKILLed mid-run, and
//! not pushed twice when two replicas dispatch at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use erp_testkit::ServiceProcess;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::receiver::{Receiver, webhook_env};
use crate::common::{Platform, Session, event_body, items};

/// Why the kill test leaves its databases behind.
const KILLED_MID_WRITE: &str =
    "an event service is SIGKILLed mid-push (see TestStores::leave_databases)";

fn limited_gold(stock: i64) -> Value {
    json!([{"name": "Gold", "type": "CURRENCY", "quantity": 100, "stock": stock}])
}

/// Every delivery of `event_id` (all pages, oldest first).
async fn deliveries_of(platform: &Platform, token: &str, event_id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = platform
            .get(
                &format!("/deliveries?eventId={event_id}&limit=100&cursor={cursor}"),
                token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        all.extend(items(&page).iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return all,
        }
    }
}

#[tokio::test]
async fn each_grant_makes_one_delivery_pushed_with_a_valid_signature() {
    let receiver = Receiver::start().await;
    let platform = Platform::builder()
        .pushing_deliveries_to(&receiver.url())
        .start()
        .await;
    let admin = platform.admin().await;
    let operator = platform
        .staff(&admin, "grant-op@example.com", &["OPERATOR"])
        .await;
    let claimer = platform.player("claimer@example.com").await;
    let granted = platform.player("granted@example.com").await;
    let too_late = platform.player("too-late@example.com").await;

    // AUTO: a player's claim is granted at once, with its delivery.
    let event = platform
        .create_event(
            &operator.access_token,
            event_body(
                "Compensation",
                chrono::Duration::days(1),
                json!({"rewards": limited_gold(2)}),
            ),
        )
        .await;
    let event_id = event["id"].as_str().unwrap();
    let claim = platform.claim(&claimer.access_token, event_id).await;
    assert_eq!(claim["source"], "CLAIM");
    let claim_delivery = claim["delivery"]["id"]
        .as_str()
        .expect("a delivery")
        .to_owned();

    // An operator's grant: mixed outcomes, in the order given.
    let body = json!({
        "eventId": event_id,
        "userIds": [granted.id, claimer.id, "no-such-user", operator.id, too_late.id],
        "reason": "lost progress in the 11-28 outage",
    });
    let first = platform.grant(&operator, "outage-1128", body.clone()).await;
    let results = first.expect(StatusCode::OK)["results"].clone();
    let outcomes: Vec<_> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["userId"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (granted.id.clone(), "GRANTED".to_owned()),
            (claimer.id.clone(), "ALREADY_CLAIMED".to_owned()),
            ("no-such-user".to_owned(), "NOT_FOUND".to_owned()),
            (operator.id.clone(), "FORBIDDEN".to_owned()),
            (too_late.id.clone(), "OUT_OF_STOCK".to_owned()),
        ],
        "{results}"
    );
    assert_eq!(results[1]["claimId"], claim["id"]);
    let granted_claim_id = results[0]["claimId"].as_str().unwrap();
    // The same key answers the first answer again, and grants nothing more.
    let replay = platform.grant(&operator, "outage-1128", body.clone()).await;
    assert_eq!(replay.expect(StatusCode::OK)["results"], results);
    let no_key = platform
        .send(
            Method::POST,
            "/grants",
            Some(&operator.access_token),
            Some(body),
        )
        .await;
    no_key.expect_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(no_key.body["errors"][0]["field"], "Idempotency-Key");

    let (_, granted_claim) = platform
        .get(
            &format!("/claims/{granted_claim_id}"),
            &operator.access_token,
        )
        .await;
    assert_eq!(granted_claim["status"], "GRANTED");
    assert_eq!(granted_claim["source"], "GRANT");
    assert_eq!(granted_claim["grantedBy"], operator.id.as_str());
    assert_eq!(granted_claim["reason"], "lost progress in the 11-28 outage");
    let grant_delivery = granted_claim["delivery"]["id"].as_str().unwrap().to_owned();

    // MANUAL: pending has no delivery, the approval makes one, a rejection none; nobody decides
    // on their own claim.
    let manual = platform
        .create_event(
            &operator.access_token,
            event_body(
                "Reviewed",
                chrono::Duration::days(1),
                json!({"claimPolicy": "MANUAL", "rewards": crate::common::gold()}),
            ),
        )
        .await;
    let manual_id = manual["id"].as_str().unwrap();
    let claim_as = |session: &Session| {
        let token = session.access_token.clone();
        let platform = &platform;
        async move {
            let claim = platform.claim(&token, manual_id).await;
            assert_eq!(claim["status"], "PENDING");
            assert!(claim["delivery"].is_null(), "{claim}");
            claim["id"].as_str().unwrap().to_owned()
        }
    };
    let approved = claim_as(&claimer).await;
    let rejected = claim_as(&granted).await;
    let own = claim_as(&operator).await;
    let (status, body) = platform
        .post(&format!("/claims/{own}/approve"), &operator.access_token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "FORBIDDEN");
    let (status, body) = platform
        .call(
            Method::POST,
            &format!("/claims/{own}/reject"),
            Some(&operator.access_token),
            Some(json!({"reason": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = platform
        .post(
            &format!("/claims/{approved}/approve"),
            &operator.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let approval_delivery = body["delivery"]["id"].as_str().unwrap().to_owned();
    let (status, body) = platform
        .call(
            Method::POST,
            &format!("/claims/{rejected}/reject"),
            Some(&operator.access_token),
            Some(json!({"reason": "duplicate account"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["delivery"].is_null(), "{body}");

    // Exactly one delivery per granted claim, each pushed with a valid signature.
    let expected: BTreeSet<String> = [&claim_delivery, &grant_delivery, &approval_delivery]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(expected.len(), 3);
    for id in &expected {
        let delivered = platform
            .delivery_becomes(&operator.access_token, id, "DELIVERED")
            .await;
        assert!(delivered["deliveredAt"].is_string(), "{delivered}");
        let pushes = receiver.pushes_of(id);
        assert!(!pushes.is_empty());
        for push in &pushes {
            assert!(push.signature_valid, "{push:?}");
            assert_eq!(push.body["id"], id.as_str());
            assert_eq!(push.body["rewards"][0]["type"], "CURRENCY");
        }
    }
    let mut all = deliveries_of(&platform, &operator.access_token, event_id).await;
    all.extend(deliveries_of(&platform, &operator.access_token, manual_id).await);
    let ids: BTreeSet<String> = all
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids, expected,
        "no delivery for pending, rejected or refused claims"
    );
    let claimer_deliveries = platform
        .get(
            &format!("/deliveries?userId={}&eventId={event_id}", claimer.id),
            &admin.access_token,
        )
        .await
        .1;
    assert_eq!(items(&claimer_deliveries).len(), 1);
    assert_eq!(items(&claimer_deliveries)[0]["claimId"], claim["id"]);

    // The trail: the grant with its actor and reason, each push.
    let (_, audit) = platform
        .get(
            &format!("/audit?action=CLAIM_GRANTED&entityId={granted_claim_id}"),
            &admin.access_token,
        )
        .await;
    let entry = &items(&audit)[0];
    assert_eq!(entry["actorId"], operator.id.as_str());
    assert!(
        entry["after"].to_string().contains("11-28 outage"),
        "{entry}"
    );
    erp_testkit::eventually(Duration::from_secs(5), || async {
        let (_, audit) = platform
            .get(
                "/audit?action=DELIVERY_SUCCEEDED&limit=100",
                &admin.access_token,
            )
            .await;
        match items(&audit).len() {
            3 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    let (_, dashboard) = platform.get("/dashboard", &admin.access_token).await;
    assert_eq!(
        dashboard["deliveries"]["byStatus"]["DELIVERED"], 3,
        "{dashboard}"
    );
    assert_eq!(dashboard["deliveries"]["byStatus"]["PENDING"], 0);
    assert!(dashboard["deliveries"]["oldestPendingSeconds"].is_null());
}

#[tokio::test]
async fn a_game_server_pulls_and_acks_once() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let (game_server, _) = platform.game_server(&admin, "puller").await;
    let player = platform.player("puller-player@example.com").await;
    let event = platform
        .create_event(
            &admin.access_token,
            event_body(
                "Pulled",
                chrono::Duration::days(1),
                json!({"rewards": crate::common::gold()}),
            ),
        )
        .await;
    let event_id = event["id"].as_str().unwrap();
    let claim = platform.claim(&player.access_token, event_id).await;

    let (status, pending) = platform
        .get(
            &format!("/deliveries?status=PENDING&userId={}", player.id),
            &game_server.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    let delivery = &items(&pending)[0];
    assert_eq!(delivery["claimId"], claim["id"]);
    assert_eq!(delivery["attempts"], 0);
    assert_eq!(delivery["rewards"], claim["rewards"]);
    let id = delivery["id"].as_str().unwrap();

    let ack = |token: String| {
        let path = format!("/deliveries/{id}/ack");
        let platform = &platform;
        async move { platform.call(Method::POST, &path, Some(&token), None).await }
    };
    let (status, first) = ack(game_server.access_token.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["status"], "DELIVERED");
    let (status, second) = ack(game_server.access_token.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second, first, "a second ack changes nothing");
    let (status, body) = platform
        .post(&format!("/deliveries/{id}/retry"), &admin.access_token)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "INVALID_STATE");
    let (_, audit) = platform
        .get(&format!("/audit?entityId={id}"), &admin.access_token)
        .await;
    let actions: Vec<_> = items(&audit).iter().map(|e| e["action"].clone()).collect();
    assert_eq!(actions, [json!("DELIVERY_SUCCEEDED")], "{audit}");
    assert_eq!(items(&audit)[0]["actorId"], game_server.id.as_str());
}

#[tokio::test]
async fn a_receiver_that_is_down_is_retried_with_growing_gaps_then_failed_then_retried() {
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let platform = Platform::builder()
        .pushing_deliveries_to(&receiver.url())
        .event_env("ERP_DELIVERY_MAX_ATTEMPTS", "4")
        .start()
        .await;
    let admin = platform.admin().await;
    let player = platform.player("down@example.com").await;
    let event = platform
        .create_event(
            &admin.access_token,
            event_body(
                "Down",
                chrono::Duration::days(1),
                json!({"rewards": crate::common::gold()}),
            ),
        )
        .await;
    let claim = platform
        .claim(&player.access_token, event["id"].as_str().unwrap())
        .await;
    let id = claim["delivery"]["id"].as_str().unwrap().to_owned();

    let failed = platform
        .delivery_becomes(&admin.access_token, &id, "FAILED")
        .await;
    assert_eq!(failed["attempts"], 4, "{failed}");
    assert!(
        failed["lastError"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    let pushes = receiver.pushes_of(&id);
    assert_eq!(pushes.len(), 4, "exactly the configured attempts");
    let gaps: Vec<Duration> = pushes.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("gaps between attempts: {gaps:?}");
    assert!(gaps[2] > gaps[0], "backoff grows: {gaps:?}");

    receiver.answer(200);
    let (status, retried) = platform
        .post(&format!("/deliveries/{id}/retry"), &admin.access_token)
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["attempts"], 0);
    platform
        .delivery_becomes(&admin.access_token, &id, "DELIVERED")
        .await;
    // The audit record follows the status change (its own write, see the event store).
    erp_testkit::eventually(Duration::from_secs(5), || async {
        let (_, audit) = platform
            .get(&format!("/audit?entityId={id}"), &admin.access_token)
            .await;
        let actions: Vec<_> = items(&audit)
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect();
        if actions == ["DELIVERY_SUCCEEDED", "DELIVERY_RETRIED", "DELIVERY_FAILED"] {
            Ok(())
        } else {
            Err(actions)
        }
    })
    .await;
}

/// `count` registered players.
async fn players(platform: &Platform, prefix: &str, count: usize) -> Vec<Session> {
    let mut all = Vec::new();
    for i in 0..count {
        all.push(platform.player(&format!("{prefix}{i}@example.com")).await);
    }
    all
}

/// An event granted to every player in `players` (asserting all `GRANTED`).
async fn granted_to(platform: &Platform, operator: &Session, players: &[Session]) -> String {
    let event = platform
        .create_event(
            &operator.access_token,
            event_body(
                "Bulk",
                chrono::Duration::days(1),
                json!({"rewards": crate::common::gold()}),
            ),
        )
        .await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let ids: Vec<&str> = players.iter().map(|p| p.id.as_str()).collect();
    let reply = platform
        .grant(
            operator,
            "bulk",
            json!({"eventId": event_id, "userIds": ids, "reason": "bulk"}),
        )
        .await;
    let results = reply.expect(StatusCode::OK)["results"].clone();
    assert!(
        results
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "GRANTED"),
        "{results}"
    );
    event_id
}

/// A dispatching event service on `platform`'s event database, pushing to `receiver`.
async fn dispatcher(
    platform: &Platform,
    receiver: &Receiver,
    extra: &[(&'static str, &str)],
) -> ServiceProcess {
    let mut env =
        erp_testkit::grpc_service_env("ERP_EVENT_ADDR", &platform.stores().database("event"));
    env.push(("ERP_REDIS_KEY_PREFIX", platform.stores().redis_prefix()));
    env.extend(webhook_env(&receiver.url()));
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let process = ServiceProcess::start(&erp_testkit::workspace_binary("erp-event"), &env).await;
    process.wait_ready(Duration::from_secs(30)).await;
    process
}

/// Waits until no delivery of `event_id` is left `PENDING`; then asserts that each was
/// delivered and pushed at least once. The number of duplicate pushes.
async fn all_delivered(
    platform: &Platform,
    token: &str,
    receiver: &Receiver,
    event_id: &str,
    count: usize,
) -> usize {
    let (deliveries, _) = erp_testkit::eventually(Duration::from_secs(60), || async {
        let all = deliveries_of(platform, token, event_id).await;
        if all.len() == count && all.iter().all(|d| d["status"] == "DELIVERED") {
            Ok(all)
        } else {
            Err(all.iter().filter(|d| d["status"] != "DELIVERED").count())
        }
    })
    .await;
    let mut pushed: BTreeMap<String, usize> = BTreeMap::new();
    for push in receiver.pushes() {
        assert!(push.signature_valid);
        *pushed.entry(push.delivery_id).or_default() += 1;
    }
    for delivery in &deliveries {
        let id = delivery["id"].as_str().unwrap();
        assert!(
            pushed.contains_key(id),
            "delivery {id} never reached the game"
        );
    }
    pushed.values().map(|n| n - 1).sum()
}

#[tokio::test]
async fn a_dispatcher_killed_mid_push_loses_nothing() {
    const DELIVERIES: usize = 40;
    const CONCURRENCY: usize = 4;
    let platform = Platform::start().await;
    platform.stores().leave_databases(KILLED_MID_WRITE);
    let admin = platform.admin().await;
    let everyone = players(&platform, "killed", DELIVERIES).await;
    let event_id = granted_to(&platform, &admin, &everyone).await;

    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(100));
    let concurrency = CONCURRENCY.to_string();
    let first = dispatcher(
        &platform,
        &receiver,
        &[("ERP_DELIVERY_CONCURRENCY", &concurrency)],
    )
    .await;
    erp_testkit::eventually(Duration::from_secs(20), || async {
        let n = receiver.pushes().len();
        if n >= 8 { Ok(()) } else { Err(n) }
    })
    .await;
    first.kill().await;
    let pushed_before_the_kill = receiver.pushes().len();
    assert!(pushed_before_the_kill < DELIVERIES, "killed mid-run");
    let _second = dispatcher(
        &platform,
        &receiver,
        &[("ERP_DELIVERY_CONCURRENCY", &concurrency)],
    )
    .await;
    let duplicates = all_delivered(
        &platform,
        &admin.access_token,
        &receiver,
        &event_id,
        DELIVERIES,
    )
    .await;
    eprintln!(
        "{pushed_before_the_kill} pushed before the SIGKILL; {duplicates} duplicate pushes after the restart"
    );
    // At least once: only the pushes in flight at the kill and the outcomes not written yet
    // (at most as many again) may arrive again.
    assert!(duplicates <= 2 * CONCURRENCY, "{duplicates} duplicates");
}

#[tokio::test]
async fn two_dispatching_replicas_push_each_delivery_once() {
    const DELIVERIES: usize = 40;
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let everyone = players(&platform, "replicas", DELIVERIES).await;
    let event_id = granted_to(&platform, &admin, &everyone).await;

    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(20));
    let (_one, _two) = tokio::join!(
        dispatcher(&platform, &receiver, &[]),
        dispatcher(&platform, &receiver, &[])
    );
    let duplicates = all_delivered(
        &platform,
        &admin.access_token,
        &receiver,
        &event_id,
        DELIVERIES,
    )
    .await;
    eprintln!("two replicas: {duplicates} duplicate pushes");
    // A delivery is pushed twice only when its lease runs out before its push ends (on a
    // loaded machine); without the lease both replicas would push nearly every delivery.
    assert!(duplicates <= DELIVERIES / 10, "{duplicates} duplicates");
}
