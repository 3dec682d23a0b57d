//! Whole journeys through the gateway with the real binaries: an operator runs events, a player
//! meets a condition and claims, a manual claim is approved, an auditor reads claims and both
//! audit trails, concurrency through HTTP, and every dashboard/alert metric exported.

use std::time::Duration;

use crate::common::{self, Platform};
use crate::rate_limits::exhaust_user_limit;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn create_event(platform: &Platform, token: &str, body: Value) -> Value {
    platform.create_event(token, body).await
}

fn event_body(title: &str, policy: &str, condition: Value, stock: Option<i64>) -> Value {
    common::event_body(
        title,
        chrono::Duration::days(3),
        json!({
            "description": "journey",
            "claimPolicy": policy,
            "condition": condition,
            "rewards": [
                {"name": "Gold", "type": "CURRENCY", "quantity": 500, "stock": stock},
                {"name": "Sword", "type": "ITEM", "itemCode": "sword-01", "quantity": 1},
            ],
        }),
    )
}

#[tokio::test]
async fn operator_player_and_auditor_journey() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let operator = platform
        .staff(&admin, "op@example.com", &["OPERATOR"])
        .await;
    let auditor = platform
        .staff(&admin, "aud@example.com", &["AUDITOR"])
        .await;

    let condition = json!({"all": [
        {"metric": "login_days", "op": "GTE", "value": 1},
        {"metric": "dungeon_clears", "op": "GTE", "value": 3, "window": "EVENT"},
    ]});
    let event = create_event(
        &platform,
        &operator.access_token,
        event_body("Dungeon week", "AUTO", condition.clone(), Some(5)),
    )
    .await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    assert_eq!(event["status"], "ACTIVE");
    assert_eq!(event["condition"]["all"][1]["window"], "EVENT");
    assert_eq!(event["condition"]["all"][0]["metric"], "login_days");

    // The player logs in (a login day) but has not cleared enough dungeons.
    let player = platform.player("hero@example.com").await;
    let claim_path = format!("/events/{event_id}/claims");
    let (status, refused) = platform
        .call(Method::POST, &claim_path, Some(&player.access_token), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["code"], "CONDITIONS_NOT_MET");
    assert_eq!(refused["evaluation"]["passed"], false);
    assert_eq!(
        refused["evaluation"]["details"][1]["metric"],
        "dungeon_clears"
    );
    assert_eq!(refused["evaluation"]["details"][1]["actual"], 0);

    // A game server (as an operator) reports progress; the login arrives through the outbox.
    let (status, accepted) = platform
        .call(
            Method::POST,
            "/progress",
            Some(&operator.access_token),
            Some(json!({"items": [
                {"userId": player.id, "metric": "dungeon_clears", "value": 2, "mode": "INCREMENT", "key": "run-1"},
                {"userId": player.id, "metric": "dungeon_clears", "value": 1, "mode": "INCREMENT", "key": "run-2"},
                {"userId": player.id, "metric": "dungeon_clears", "value": 1, "mode": "INCREMENT", "key": "run-1"},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted, json!({"accepted": 2, "duplicates": 1}));
    let progress_path = format!("/events/{event_id}/progress");
    let (progress, _) = erp_testkit::eventually(Duration::from_secs(15), || async {
        let (status, progress) = platform.get(&progress_path, &player.access_token).await;
        assert_eq!(status, StatusCode::OK, "{progress}");
        if progress["passed"] == true {
            Ok(progress)
        } else {
            Err(progress)
        }
    })
    .await;
    assert_eq!(progress["details"][0]["actual"], 1);
    assert_eq!(progress["details"][1]["actual"], 3);

    // Now the claim is granted, with snapshots; a repeat with the same key replays it.
    let claim_request = |key: &str| {
        platform
            .http
            .post(platform.url(&claim_path))
            .bearer_auth(&player.access_token)
            .header("idempotency-key", key)
            .send()
    };
    let response = claim_request("claim-1").await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let claim: Value = response.json().await.unwrap();
    assert_eq!(claim["status"], "GRANTED");
    assert_eq!(claim["userId"], player.id.as_str());
    assert_eq!(claim["event"]["title"], "Dungeon week");
    assert_eq!(claim["rewards"].as_array().unwrap().len(), 2);
    assert_eq!(claim["evaluation"]["passed"], true);
    let replay: Value = claim_request("claim-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replay["id"], claim["id"]);
    let (status, again) = platform
        .call(Method::POST, &claim_path, Some(&player.access_token), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["code"], "ALREADY_CLAIMED");
    assert_eq!(again["claimId"], claim["id"]);
    let (_, rewards) = platform
        .get(&format!("/events/{event_id}/rewards"), &player.access_token)
        .await;
    assert_eq!(rewards["items"][0]["remaining"], 4);
    assert_eq!(rewards["items"][1]["remaining"], Value::Null);

    // Claims are private to their owner and staff.
    let claim_id = claim["id"].as_str().unwrap();
    let stranger = platform.player("stranger@example.com").await;
    let (status, _) = platform
        .get(&format!("/claims/{claim_id}"), &stranger.access_token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = platform
        .get(&format!("/claims/{claim_id}"), &player.access_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, mine) = platform.get("/claims/me", &player.access_token).await;
    assert_eq!(mine["items"][0]["id"], claim["id"]);

    // A manual event: pending, then approved once.
    let manual = create_event(
        &platform,
        &operator.access_token,
        event_body("Review", "MANUAL", Value::Null, None),
    )
    .await;
    let manual_id = manual["id"].as_str().unwrap();
    let (status, pending) = platform
        .call(
            Method::POST,
            &format!("/events/{manual_id}/claims"),
            Some(&player.access_token),
            None,
        )
        .await;
    assert_eq!(
        (status, pending["status"].as_str()),
        (StatusCode::CREATED, Some("PENDING"))
    );
    let approve = format!("/claims/{}/approve", pending["id"].as_str().unwrap());
    let (status, granted) = platform
        .call(Method::POST, &approve, Some(&operator.access_token), None)
        .await;
    assert_eq!(
        (status, granted["status"].as_str()),
        (StatusCode::OK, Some("GRANTED"))
    );
    assert_eq!(granted["decidedBy"], operator.id.as_str());
    let (status, twice) = platform
        .call(Method::POST, &approve, Some(&operator.access_token), None)
        .await;
    assert_eq!(
        (status, twice["code"].as_str()),
        (StatusCode::CONFLICT, Some("INVALID_STATE"))
    );

    // The auditor reads claims and both services' audit trails.
    let (status, claims) = platform
        .get(
            &format!("/claims?eventId={event_id}"),
            &auditor.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claims["items"].as_array().unwrap().len(), 1);
    let (_, event_audit) = platform
        .get("/audit?service=event&limit=100", &auditor.access_token)
        .await;
    let actions: Vec<&str> = event_audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "EVENT_CREATED",
        "REWARD_CREATED",
        "CLAIM_DENIED",
        "CLAIM_GRANTED",
        "CLAIM_PENDING",
        "CLAIM_APPROVED",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(
        event_audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["service"] == "event")
    );
    let (_, auth_audit) = platform
        .get(
            "/audit?service=auth&action=USER_CREATED",
            &auditor.access_token,
        )
        .await;
    assert!(
        auth_audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entityId"] == player.id.as_str())
    );
    let (_, merged) = platform
        .get("/audit?limit=100", &auditor.access_token)
        .await;
    let services: std::collections::BTreeSet<&str> = merged["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    assert_eq!(services.into_iter().collect::<Vec<_>>(), ["auth", "event"]);
    let times: Vec<&str> = merged["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");

    let (status, dashboard) = platform.get("/dashboard", &auditor.access_token).await;
    assert_eq!(status, StatusCode::OK, "{dashboard}");
    assert_eq!(dashboard["claims"]["byStatus"]["GRANTED"], 2);
    assert_eq!(dashboard["events"]["byStatus"]["ACTIVE"], 2);
}

/// On the multi-thread runtime: the requests really run in parallel, not interleaved at awaits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_claims_by_one_player_make_one_claim() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let event = create_event(
        &platform,
        &admin.access_token,
        event_body("Rush", "AUTO", Value::Null, Some(1000)),
    )
    .await;
    let player = platform.player("rush@example.com").await;
    let path = format!("/events/{}/claims", event["id"].as_str().unwrap());
    let attempts: Vec<(StatusCode, Value)> = common::in_parallel((0..100).map(|_| {
        platform
            .request(Method::POST, &path)
            .token(&player.access_token)
    }))
    .await
    .into_iter()
    .map(|reply| (reply.status, reply.body))
    .collect();
    let created: Vec<&Value> = attempts
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 1, "{attempts:?}");
    for (status, body) in attempts.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "ALREADY_CLAIMED");
        assert_eq!(body["claimId"], created[0]["id"]);
    }
    // What the service stored, counted apart from the answers.
    let (status, mine) = platform
        .get(
            &format!("/claims/me?eventId={}", event["id"].as_str().unwrap()),
            &player.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(common::items(&mine).len(), 1, "{mine}");
    assert_eq!(mine["items"][0]["id"], created[0]["id"]);
}

/// The per-user limit of the metrics test (small: the test sends it, and one more).
const USER_LIMIT: u32 = 40;

#[tokio::test]
async fn every_metric_of_the_dashboards_and_alerts_is_exported() {
    let platform = Platform::builder()
        .event_env("ERP_JOBS_INTERVAL_SECS", "1")
        .gateway_env("ERP_RATE_LIMIT_PER_MINUTE", &USER_LIMIT.to_string())
        .start()
        .await;
    let admin = platform.admin().await;
    let event = create_event(
        &platform,
        &admin.access_token,
        event_body("Metrics", "AUTO", Value::Null, Some(10)),
    )
    .await;
    let player = platform.player("metrics@example.com").await;
    let path = format!("/events/{}/claims", event["id"].as_str().unwrap());
    platform
        .call(Method::POST, &path, Some(&player.access_token), None)
        .await;
    platform
        .call(Method::POST, &path, Some(&player.access_token), None)
        .await;
    let (status, _) = platform.refresh(&json!(player.refresh_token)).await;
    assert_eq!(status, StatusCode::OK);
    platform
        .call(Method::POST, "/progress", Some(&admin.access_token), Some(json!({"items": [{"userId": player.id, "metric": "kills", "value": 1, "mode": "INCREMENT"}]})))
        .await;
    // Trip the per-user rate limit with a throwaway account: exactly the limit, then 429.
    let spammer = platform.player("spam@example.com").await;
    exhaust_user_limit(&platform, &spammer.access_token, USER_LIMIT).await;

    // The lifecycle jobs run every second: poll until everything is exported.
    let names = include_str!("../../../../infrastructure/metrics.txt");
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    let missing = |exported: &str| -> Vec<&str> {
        names
            .iter()
            .copied()
            .filter(|name| !exported.contains(&format!("# TYPE {name} ")))
            .collect()
    };
    let at_first = missing(&platform.scrape_all().await).len();
    let (missing, took) = erp_testkit::eventually(Duration::from_secs(10), || async {
        let missing = missing(&platform.scrape_all().await);
        if missing.is_empty() {
            Ok(missing)
        } else {
            Err(missing)
        }
    })
    .await;
    eprintln!("every metric exported {took:?} after the traffic ({at_first} missing at first)");
    assert!(
        missing.is_empty(),
        "metrics used by dashboards or alerts but not exported: {missing:?}"
    );
}
