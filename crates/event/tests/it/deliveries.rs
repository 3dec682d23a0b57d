//! Reward deliveries against the real stores and a real webhook receiver on loopback: one
//! delivery per granted claim (AUTO and approval) and none otherwise, the pull API (oldest first,
//! filters, cursor, idempotent ack, retry, roles), the signed push, retries with growing gaps to
//! FAILED and back, two dispatchers sharing the work, and a dispatcher stopped mid-run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use erp_platform::identity::{Caller, Role};
use erp_proto::event::v1 as pb;
use hmac::{Hmac, Mac};
use mongodb::bson::{Document, doc};
use sha2::Sha256;

use crate::common::*;

const SECRET: &str = "test-webhook-secret";
/// Between two reads of a poll that lists many documents.
const POLL_PAUSE: Duration = Duration::from_millis(200);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Push {
    delivery_id: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
    at: Instant,
}

struct ReceiverState {
    /// The status it answers.
    status: AtomicU16,
    /// How long it takes to answer.
    delay_ms: AtomicU64,
    pushes: Mutex<Vec<Push>>,
}

/// A webhook receiver on loopback that records every request (on arrival) and answers with the
/// status and delay the test sets.
#[derive(Clone)]
struct Receiver {
    state: Arc<ReceiverState>,
    addr: SocketAddr,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    state.pushes.lock().unwrap().push(Push {
        delivery_id: header("erp-delivery-id"),
        signature: header("erp-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap()
}

impl Receiver {
    async fn start(status: u16) -> Self {
        let state = Arc::new(ReceiverState {
            status: AtomicU16::new(status),
            delay_ms: AtomicU64::new(0),
            pushes: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { state, addr }
    }

    fn answer(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    fn delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(u64::try_from(delay.as_millis()).unwrap(), Ordering::SeqCst);
    }

    fn pushes(&self) -> Vec<Push> {
        self.state.pushes.lock().unwrap().clone()
    }

    /// How many requests each delivery id got.
    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for push in self.pushes() {
            *counts.entry(push.delivery_id).or_default() += 1;
        }
        counts
    }

    /// The instance settings that push to this receiver, with `extra` on top.
    fn env<'a>(&self, extra: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "ERP_DELIVERY_WEBHOOK_URL".to_owned(),
                format!("http://{}/hook", self.addr),
            ),
            ("ERP_DELIVERY_WEBHOOK_SECRET".to_owned(), SECRET.to_owned()),
            ("ERP_DELIVERY_POLL_INTERVAL_MS".to_owned(), "50".to_owned()),
        ];
        for (key, value) in extra {
            erp_testkit::set_env(&mut env, key, value);
        }
        env
    }
}

/// Starts an instance on `scratch` with `env`.
async fn start_with_env(scratch: &Arc<Scratch>, env: &[(String, String)]) -> TestEvent {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestEvent::start_in(scratch, &pairs).await
}

/// Checks `push`'s signature as a receiver must (HMAC-SHA256 over "<t>.<raw body>", a fresh
/// `t`), and returns its body.
fn verified(push: &Push) -> serde_json::Value {
    let (t, v1) = push
        .signature
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("malformed signature {:?}", push.signature));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&push.body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the signature verifies with the secret");
    let sent: i64 = t.parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - sent).abs() < 60,
        "a fresh timestamp"
    );
    serde_json::from_slice(&push.body).unwrap()
}

fn game_server() -> Caller {
    caller("game-backend-1", &[Role::GameServer])
}

async fn get_delivery(
    service: &TestEvent,
    who: &Caller,
    id: &str,
) -> Result<pb::Delivery, tonic::Status> {
    service
        .client()
        .get_delivery(as_caller(who, pb::GetDeliveryRequest { id: id.to_owned() }))
        .await
        .map(|r| r.into_inner().delivery.unwrap())
}

async fn list_deliveries(
    service: &TestEvent,
    who: &Caller,
    request: pb::ListDeliveriesRequest,
) -> Result<pb::ListDeliveriesResponse, tonic::Status> {
    service
        .client()
        .list_deliveries(as_caller(who, request))
        .await
        .map(tonic::Response::into_inner)
}

/// Every delivery the listing gives `request`, page by page.
async fn list_all(
    service: &TestEvent,
    mut request: pb::ListDeliveriesRequest,
) -> Vec<pb::Delivery> {
    let mut items = Vec::new();
    loop {
        let page = list_deliveries(service, &game_server(), request.clone())
            .await
            .unwrap();
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => request.cursor = next,
            None => return items,
        }
    }
}

async fn ack(service: &TestEvent, who: &Caller, id: &str) -> Result<pb::Delivery, tonic::Status> {
    service
        .client()
        .ack_delivery(as_caller(who, pb::AckDeliveryRequest { id: id.to_owned() }))
        .await
        .map(|r| r.into_inner().delivery.unwrap())
}

async fn retry(service: &TestEvent, who: &Caller, id: &str) -> Result<pb::Delivery, tonic::Status> {
    service
        .client()
        .retry_delivery(as_caller(
            who,
            pb::RetryDeliveryRequest { id: id.to_owned() },
        ))
        .await
        .map(|r| r.into_inner().delivery.unwrap())
}

/// The delivery documents of `claim_id` as stored.
async fn stored_deliveries(service: &TestEvent, claim_id: &str) -> Vec<Document> {
    let mut cursor = service
        .database()
        .await
        .collection::<Document>("deliveries")
        .find(doc! { "claim_id": claim_id })
        .await
        .unwrap();
    let mut docs = Vec::new();
    while cursor.advance().await.unwrap() {
        docs.push(cursor.deserialize_current().unwrap());
    }
    docs
}

/// An AUTO event with one unlimited reward (an ITEM with a code, so every field shows).
async fn auto_event(service: &TestEvent, title: &str) -> pb::Event {
    let mut request = active_event_request(title);
    request.rewards = vec![pb::RewardInput {
        name: "Sword".into(),
        r#type: pb::RewardType::Item as i32,
        item_code: Some("sword-01".into()),
        quantity: 1,
        stock: None,
    }];
    service.create(request).await.0
}

/// Waits until every delivery of `ids` is `status`.
async fn all_reach(
    service: &TestEvent,
    ids: &[String],
    status: pb::DeliveryStatus,
    within: Duration,
) {
    eventually(within, &format!("every delivery {status:?}"), || async {
        // One listing now and then, not a read per delivery every few milliseconds: the
        // polling must not slow down what it waits for (nor the other tests on the store).
        tokio::time::sleep(POLL_PAUSE).await;
        let reached: std::collections::HashSet<String> = list_all(
            service,
            pb::ListDeliveriesRequest {
                status: Some(status as i32),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
        ids.iter().all(|id| reached.contains(id)).then_some(())
    })
    .await;
}

/// The `action` audit records once there are `n` of them: a dispatcher writes a push's record
/// right after the delivery's status.
async fn audited(
    service: &TestEvent,
    action: &str,
    n: usize,
) -> Vec<erp_proto::common::v1::AuditEntry> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} {action} records"),
        || async {
            tokio::time::sleep(POLL_PAUSE).await;
            let entries = service.audit(action).await;
            (entries.len() == n).then_some(entries)
        },
    )
    .await
}

/// `series` of `services` summed, once it reaches `value` (counted right after the change).
async fn metric_reaches(services: &[&TestEvent], series: &str, value: f64) {
    // A push is counted once its audit record is written, which on the shared, single-threaded
    // test store under the whole suite's load can trail the status change by many seconds.
    // The last sums seen are in the failure message: short of `value` (a change not counted)
    // or past it (one counted twice) are different defects.
    erp_testkit::eventually(Duration::from_secs(90), || async {
        let mut each = Vec::new();
        for service in services {
            each.push(erp_testkit::sample(&service.metrics().await, series).unwrap_or(0.0));
        }
        if each.iter().sum::<f64>() == value {
            Ok(())
        } else {
            Err(format!(
                "{series} per service: {each:?}, want {value} in all"
            ))
        }
    })
    .await;
}

fn delivery_id(claim: &pb::Claim) -> String {
    claim
        .delivery
        .as_ref()
        .unwrap_or_else(|| panic!("claim {} shows no delivery", claim.id))
        .id
        .clone()
}

#[tokio::test]
async fn one_delivery_per_granted_claim_and_none_for_the_others() {
    let service = TestEvent::start().await;
    let auto = auto_event(&service, "auto").await;
    let mut request = manual(active_event_request("manual"));
    request.rewards = vec![reward("Gold", Some(10))];
    let (manual_event, _) = service.create(request).await;
    let mut request = active_event_request("scarce");
    request.rewards = vec![reward("Gem", Some(1))];
    let (scarce, _) = service.create(request).await;
    let mut request = active_event_request("hard");
    request.condition = Some(leaf("kills", pb::ComparisonOp::Gte, 10));
    let (hard, _) = service.create(request).await;

    // AUTO grants: one delivery each, shown on the claim.
    let granted = service.claimed(&player("p1"), &auto.id).await;
    assert_eq!(granted.status, pb::ClaimStatus::Granted as i32);
    let shown = granted
        .delivery
        .clone()
        .expect("a granted claim shows its delivery");
    assert_eq!(shown.status, pb::DeliveryStatus::Pending as i32);
    assert_eq!(shown.delivered_at, None);
    let stored = stored_deliveries(&service, &granted.id).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].get_str("_id").unwrap(), shown.id);
    let delivery = get_delivery(&service, &game_server(), &shown.id)
        .await
        .unwrap();
    assert_eq!(delivery.claim_id, granted.id);
    assert_eq!(delivery.event_id, auto.id);
    assert_eq!(delivery.user_id, "p1");
    assert_eq!(
        delivery.rewards, granted.rewards,
        "the claim's reward snapshots"
    );
    assert_eq!(delivery.attempts, 0);
    assert_eq!(delivery.last_error, None);
    assert!(delivery.created_at.is_some());
    // A repeat of the claim creates nothing more.
    assert!(service.claim(&player("p1"), &auto.id, None).await.is_err());
    assert_eq!(stored_deliveries(&service, &granted.id).await.len(), 1);

    // Pending, rejected and refused claims: none.
    let approved = service.claimed(&player("m1"), &manual_event.id).await;
    let rejected = service.claimed(&player("m2"), &manual_event.id).await;
    let waiting = service.claimed(&player("m3"), &manual_event.id).await;
    for claim in [&approved, &rejected, &waiting] {
        assert_eq!(claim.status, pb::ClaimStatus::Pending as i32);
        assert_eq!(claim.delivery, None);
        assert!(stored_deliveries(&service, &claim.id).await.is_empty());
    }
    let rejected = reject(&service, &operator(), &rejected.id, "duplicate account")
        .await
        .unwrap();
    assert_eq!(rejected.delivery, None);
    assert!(stored_deliveries(&service, &rejected.id).await.is_empty());
    service.claimed(&player("s1"), &scarce.id).await;
    let refused = service
        .claim(&player("s2"), &scarce.id, None)
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "OUT_OF_STOCK");
    let refused = service
        .claim(&player("h1"), &hard.id, None)
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "CONDITIONS_NOT_MET");

    // An approval: its delivery, in the approval's transaction.
    let approved = approve(&service, &admin(), &approved.id).await.unwrap();
    assert_eq!(approved.status, pb::ClaimStatus::Granted as i32);
    let approved_delivery = delivery_id(&approved);
    assert_eq!(stored_deliveries(&service, &approved.id).await.len(), 1);

    let all = list_all(&service, pb::ListDeliveriesRequest::default()).await;
    let claims: Vec<&str> = all.iter().map(|d| d.claim_id.as_str()).collect();
    assert_eq!(all.len(), 3, "p1, s1 and the approval: {claims:?}");
    let total: u64 = service
        .database()
        .await
        .collection::<Document>("deliveries")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(total, 3);

    // The claim shows its delivery's current status.
    ack(&service, &game_server(), &approved_delivery)
        .await
        .unwrap();
    let read = service
        .get_claim(&player("m1"), &approved.id)
        .await
        .unwrap();
    let shown = read.delivery.unwrap();
    assert_eq!(shown.status, pb::DeliveryStatus::Delivered as i32);
    assert!(shown.delivered_at.is_some());
    let mine = service
        .client()
        .list_my_claims(as_caller(&player("m1"), pb::ListMyClaimsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        mine.items[0].delivery.as_ref().unwrap().status,
        pb::DeliveryStatus::Delivered as i32
    );

    // The dashboard counts them by status.
    let dashboard = service
        .client()
        .get_dashboard(as_caller(&operator(), pb::GetDashboardRequest {}))
        .await
        .unwrap()
        .into_inner()
        .dashboard
        .unwrap()
        .deliveries
        .unwrap();
    assert_eq!(dashboard.by_status["PENDING"], 2);
    assert_eq!(dashboard.by_status["DELIVERED"], 1);
    assert_eq!(dashboard.by_status["FAILED"], 0);
    assert!(dashboard.oldest_pending_seconds.is_some_and(|s| s >= 0));
    service.jobs.run_once().await.unwrap();
    let folded = service
        .client()
        .get_dashboard(as_caller(&operator(), pb::GetDashboardRequest {}))
        .await
        .unwrap()
        .into_inner()
        .dashboard
        .unwrap()
        .deliveries
        .unwrap();
    assert_eq!(
        folded.by_status, dashboard.by_status,
        "the same once folded"
    );
}

#[tokio::test]
async fn the_pull_api_lists_oldest_first_and_acks_once() {
    let service = TestEvent::start().await;
    let first = auto_event(&service, "first").await;
    let second = auto_event(&service, "second").await;
    let mut ids = Vec::new();
    for (user, event) in [
        ("u1", &first),
        ("u2", &first),
        ("u1", &second),
        ("u3", &first),
        ("u2", &second),
    ] {
        ids.push(delivery_id(
            &service.claimed(&player(user), &event.id).await,
        ));
    }

    // Oldest first, page by page, every reader role.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = list_deliveries(
            &service,
            &auditor(),
            pb::ListDeliveriesRequest {
                limit: 2,
                cursor: cursor.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|d| d.id));
        match page.next_cursor {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(seen, ids, "oldest first");
    // A cursor stays valid when deliveries are added after it.
    let page = list_deliveries(
        &service,
        &operator(),
        pb::ListDeliveriesRequest {
            limit: 3,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let newest = delivery_id(&service.claimed(&player("u9"), &first.id).await);
    let rest = list_all(
        &service,
        pb::ListDeliveriesRequest {
            cursor: page.next_cursor.unwrap(),
            ..Default::default()
        },
    )
    .await;
    let rest: Vec<String> = rest.into_iter().map(|d| d.id).collect();
    assert_eq!(rest, [ids[3].clone(), ids[4].clone(), newest.clone()]);
    ids.push(newest);

    // Filters.
    let of_u1 = list_all(
        &service,
        pb::ListDeliveriesRequest {
            user_id: Some("u1".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        of_u1.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [ids[0].clone(), ids[2].clone()]
    );
    let of_second = list_all(
        &service,
        pb::ListDeliveriesRequest {
            event_id: Some(second.id.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        of_second.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [ids[2].clone(), ids[4].clone()]
    );

    // Ack: DELIVERED once, the same answer after, one audit record.
    let acked = ack(&service, &game_server(), &ids[1]).await.unwrap();
    assert_eq!(acked.status, pb::DeliveryStatus::Delivered as i32);
    let delivered_at = acked.delivered_at.unwrap();
    let again = ack(&service, &admin(), &ids[1]).await.unwrap();
    assert_eq!(again, acked, "a second ack changes nothing");
    assert_eq!(again.delivered_at, Some(delivered_at));
    let audited = service.audit("DELIVERY_SUCCEEDED").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].actor_id, "game-backend-1");
    assert_eq!(audited[0].entity_id, ids[1]);
    assert_eq!(audited[0].entity_type, "delivery");
    let after: serde_json::Value =
        serde_json::from_str(audited[0].after_json.as_deref().unwrap()).unwrap();
    assert_eq!(after["status"], "DELIVERED");
    let before: serde_json::Value =
        serde_json::from_str(audited[0].before_json.as_deref().unwrap()).unwrap();
    assert_eq!(before["status"], "PENDING");

    let pending = list_all(
        &service,
        pb::ListDeliveriesRequest {
            status: Some(pb::DeliveryStatus::Pending as i32),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pending.len(), ids.len() - 1);
    assert!(pending.iter().all(|d| d.id != ids[1]));
    let delivered = list_all(
        &service,
        pb::ListDeliveriesRequest {
            status: Some(pb::DeliveryStatus::Delivered as i32),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(delivered.len(), 1);

    // Retry only from FAILED.
    for id in [&ids[0], &ids[1]] {
        let refused = retry(&service, &operator(), id).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert_eq!(code(&refused), "INVALID_STATE");
    }
    assert!(service.audit("DELIVERY_RETRIED").await.is_empty());

    // Unknown ids, bad paging, bad status.
    for status in [
        get_delivery(&service, &game_server(), "no-such")
            .await
            .unwrap_err(),
        ack(&service, &game_server(), "no-such").await.unwrap_err(),
        retry(&service, &operator(), "no-such").await.unwrap_err(),
    ] {
        assert_eq!(code(&status), "NOT_FOUND");
    }
    for (request, field) in [
        (
            pb::ListDeliveriesRequest {
                limit: 101,
                ..Default::default()
            },
            "limit",
        ),
        (
            pb::ListDeliveriesRequest {
                cursor: "!!".into(),
                ..Default::default()
            },
            "cursor",
        ),
        (
            pb::ListDeliveriesRequest {
                status: Some(42),
                ..Default::default()
            },
            "status",
        ),
    ] {
        let invalid = list_deliveries(&service, &game_server(), request)
            .await
            .unwrap_err();
        assert_eq!(code(&invalid), "VALIDATION_FAILED");
        assert_eq!(fields(&invalid), [field]);
    }
    let max = list_deliveries(
        &service,
        &game_server(),
        pb::ListDeliveriesRequest {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(max.items.len(), ids.len());

    // Roles: read by GAME_SERVER and staff; ack by GAME_SERVER and ADMIN; retry by OPERATOR and
    // ADMIN.
    let user = player("u1");
    assert_eq!(
        code(
            &list_deliveries(&service, &user, pb::ListDeliveriesRequest::default())
                .await
                .unwrap_err()
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        code(&get_delivery(&service, &user, &ids[0]).await.unwrap_err()),
        "FORBIDDEN"
    );
    for who in [user.clone(), operator(), auditor()] {
        assert_eq!(
            code(&ack(&service, &who, &ids[0]).await.unwrap_err()),
            "FORBIDDEN"
        );
    }
    for who in [user, game_server(), auditor()] {
        assert_eq!(
            code(&retry(&service, &who, &ids[0]).await.unwrap_err()),
            "FORBIDDEN"
        );
    }
    get_delivery(&service, &operator(), &ids[0]).await.unwrap();
    get_delivery(&service, &admin(), &ids[0]).await.unwrap();
    let anonymous = service
        .client()
        .list_deliveries(tonic::Request::new(pb::ListDeliveriesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");

    let metrics = service.metrics().await;
    assert_eq!(
        erp_testkit::sample(&metrics, r#"erp_event_deliveries_total{outcome="acked"}"#),
        Some(1.0)
    );
    for outcome in ["delivered", "failed_attempt", "failed", "retried"] {
        assert_eq!(
            erp_testkit::sample(
                &metrics,
                &format!(r#"erp_event_deliveries_total{{outcome="{outcome}"}}"#)
            ),
            Some(0.0),
            "{outcome} exported from the start"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_is_signed_and_delivers() {
    let receiver = Receiver::start(200).await;
    let service = TestEvent::start_with(
        &receiver
            .env(&[])
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    let event = auto_event(&service, "pushed").await;
    let claim = service.claimed(&player("p1"), &event.id).await;
    let id = delivery_id(&claim);
    all_reach(
        &service,
        std::slice::from_ref(&id),
        pb::DeliveryStatus::Delivered,
        Duration::from_secs(10),
    )
    .await;

    let pushes = receiver.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let push = &pushes[0];
    assert_eq!(push.delivery_id, id);
    assert_eq!(push.content_type, "application/json");
    let body = verified(push);
    let created_at = get_delivery(&service, &game_server(), &id)
        .await
        .unwrap()
        .created_at
        .unwrap();
    let created_at = chrono::DateTime::from_timestamp(
        created_at.seconds,
        u32::try_from(created_at.nanos).unwrap(),
    )
    .unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "id": id,
            "claimId": claim.id,
            "eventId": event.id,
            "userId": "p1",
            "rewards": [{
                "id": claim.rewards[0].id,
                "name": "Sword",
                "type": "ITEM",
                "itemCode": "sword-01",
                "quantity": 1,
            }],
            "status": "PENDING",
            "attempts": 0,
            "lastError": null,
            "createdAt": serde_json::to_value(created_at).unwrap(),
            "deliveredAt": null,
        })
    );
    assert!(
        body["createdAt"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC"
    );

    let successes = audited(&service, "DELIVERY_SUCCEEDED", 1).await;
    assert_eq!(successes[0].actor_id, "system");
    let claim = service.get_claim(&player("p1"), &claim.id).await.unwrap();
    assert_eq!(
        claim.delivery.unwrap().status,
        pb::DeliveryStatus::Delivered as i32
    );
    metric_reaches(
        &[&service],
        r#"erp_event_deliveries_total{outcome="delivered"}"#,
        1.0,
    )
    .await;
    let metrics = service.metrics().await;
    assert_eq!(
        erp_testkit::sample(&metrics, "erp_event_delivery_attempt_seconds_count"),
        Some(1.0)
    );
    assert!(metrics.contains("erp_event_deliveries_pending "));
    assert!(metrics.contains("erp_event_delivery_oldest_pending_seconds "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_receiver_is_retried_with_growing_gaps_until_failed_then_retried() {
    let receiver = Receiver::start(500).await;
    let env = receiver.env(&[
        ("ERP_DELIVERY_MAX_ATTEMPTS", "4"),
        ("ERP_DELIVERY_BACKOFF_BASE_MS", "200"),
        ("ERP_DELIVERY_BACKOFF_MAX_MS", "5000"),
    ]);
    let service = start_with_env(&Scratch::new(), &env).await;
    let event = auto_event(&service, "refused").await;
    let claim = service.claimed(&player("p1"), &event.id).await;
    let id = delivery_id(&claim);
    all_reach(
        &service,
        std::slice::from_ref(&id),
        pb::DeliveryStatus::Failed,
        Duration::from_secs(20),
    )
    .await;

    let pushes = receiver.pushes();
    assert_eq!(pushes.len(), 4, "ERP_DELIVERY_MAX_ATTEMPTS pushes");
    for push in &pushes {
        assert_eq!(push.delivery_id, id);
        verified(push);
    }
    // Waits of [100, 200], [200, 400] and [400, 800] ms: each at least the previous one's most.
    let gaps: Vec<Duration> = pushes.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(400), "{gaps:?}");
    assert!(gaps[2] > gaps[0], "growing gaps: {gaps:?}");
    let failed = get_delivery(&service, &operator(), &id).await.unwrap();
    assert_eq!(failed.attempts, 4);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("HTTP 500 Internal Server Error")
    );
    assert_eq!(failed.delivered_at, None);
    let failures = audited(&service, "DELIVERY_FAILED", 1).await;
    assert_eq!(failures[0].actor_id, "system");
    metric_reaches(
        &[&service],
        r#"erp_event_deliveries_total{outcome="failed"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        erp_testkit::sample(
            &service.metrics().await,
            r#"erp_event_deliveries_total{outcome="failed_attempt"}"#
        ),
        Some(3.0)
    );
    // FAILED stays FAILED: nothing more is pushed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.pushes().len(), 4);

    // An operator's retry, the receiver back: delivered.
    receiver.answer(200);
    let retried = retry(&service, &operator(), &id).await.unwrap();
    assert_eq!(retried.status, pb::DeliveryStatus::Pending as i32);
    assert_eq!(retried.attempts, 0);
    all_reach(
        &service,
        std::slice::from_ref(&id),
        pb::DeliveryStatus::Delivered,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(receiver.pushes().len(), 5);
    let retries = service.audit("DELIVERY_RETRIED").await;
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].actor_id, "operator-1");
    audited(&service, "DELIVERY_SUCCEEDED", 1).await;
}

/// Grants `event_id` to `n` players in one call (one delivery each); the delivery ids.
async fn granted_deliveries(
    service: &TestEvent,
    event_id: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let results = service
        .client()
        .grant(as_caller(
            &operator(),
            pb::GrantRequest {
                event_id: event_id.to_owned(),
                user_ids: users.clone(),
                active_user_ids: users,
                reason: "compensation".into(),
                idempotency_key: format!("{prefix}grant"),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(
        results
            .iter()
            .all(|r| r.outcome == pb::GrantOutcome::Granted as i32),
        "{results:?}"
    );
    let deliveries = list_all(
        service,
        pb::ListDeliveriesRequest {
            event_id: Some(event_id.to_owned()),
            ..Default::default()
        },
    )
    .await;
    let claims: std::collections::HashSet<&str> =
        deliveries.iter().map(|d| d.claim_id.as_str()).collect();
    assert_eq!(deliveries.len(), n, "one delivery per grant");
    for result in &results {
        assert!(claims.contains(result.claim_id.as_deref().unwrap()));
    }
    deliveries.into_iter().map(|d| d.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_deliver_every_delivery_without_duplicates() {
    let receiver = Receiver::start(200).await;
    let scratch = Scratch::new();
    // Slow enough that both have pushes in flight at once. Few at a time: the test store is
    // one single-threaded process, shared with the tests running beside this one.
    receiver.delay(Duration::from_millis(5));
    let env = receiver.env(&[("ERP_DELIVERY_CONCURRENCY", "2")]);
    let one = start_with_env(&scratch, &env).await;
    let two = start_with_env(&scratch, &env).await;
    let event = auto_event(&one, "busy").await;
    let ids = granted_deliveries(&one, &event.id, "player-", 200).await;
    all_reach(
        &one,
        &ids,
        pb::DeliveryStatus::Delivered,
        Duration::from_secs(60),
    )
    .await;

    let counts = receiver.counts();
    for id in &ids {
        assert!(counts.contains_key(id), "{id} was never pushed");
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    // At least once; the leases keep two replicas from pushing one delivery at once, and no
    // lease ran out here, so none twice.
    assert_eq!(duplicates, 0, "duplicate pushes: {duplicates}");
    metric_reaches(
        &[&one, &two],
        r#"erp_event_deliveries_total{outcome="delivered"}"#,
        200.0,
    )
    .await;
    audited(&one, "DELIVERY_SUCCEEDED", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_stopped_mid_run_loses_nothing() {
    let receiver = Receiver::start(200).await;
    receiver.delay(Duration::from_millis(400));
    let scratch = Scratch::new();
    // The claims go through an instance that does not push.
    let claims = TestEvent::start_in(&scratch, &[]).await;
    let settings = [
        ("ERP_DELIVERY_CONCURRENCY", "4"),
        ("ERP_DELIVERY_TIMEOUT_MS", "2000"),
        ("ERP_DELIVERY_LEASE_MS", "2500"),
    ];
    let first = start_with_env(&scratch, &receiver.env(&settings)).await;
    let event = auto_event(&claims, "interrupted").await;
    let ids = granted_deliveries(&claims, &event.id, "player-", 30).await;
    eventually(Duration::from_secs(20), "pushes under way", || async {
        (receiver.pushes().len() >= 6).then_some(())
    })
    .await;
    // Gone mid-push (the in-process service aborted, its pushes cut), another replica starts.
    drop(first);
    let cut = receiver.pushes().len();
    assert!(cut < ids.len(), "stopped mid-run: {cut} pushes");
    receiver.delay(Duration::from_millis(0));
    let _second = start_with_env(&scratch, &receiver.env(&settings)).await;
    all_reach(
        &claims,
        &ids,
        pb::DeliveryStatus::Delivered,
        Duration::from_secs(30),
    )
    .await;

    let counts = receiver.counts();
    for id in &ids {
        assert!(counts.contains_key(id), "{id} was never pushed");
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    // Only the pushes in flight when the first stopped (at most its concurrency) and the
    // outcomes it had not written yet (as many again) may repeat.
    assert!(duplicates <= 2 * 4, "duplicate pushes: {duplicates}");
    audited(&claims, "DELIVERY_SUCCEEDED", ids.len()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_during_a_push_is_the_one_change_recorded() {
    const N: usize = 6;
    let receiver = Receiver::start(200).await;
    // Long enough for the acks to land while every push waits for its answer.
    receiver.delay(Duration::from_millis(1500));
    let scratch = Scratch::new();
    let service = start_with_env(
        &scratch,
        &receiver.env(&[("ERP_DELIVERY_CONCURRENCY", "8")]),
    )
    .await;
    let event = auto_event(&service, "acked mid-push").await;
    let ids = granted_deliveries(&service, &event.id, "player-", N).await;
    eventually(Duration::from_secs(20), "every delivery pushed", || async {
        (receiver.pushes().len() >= N).then_some(())
    })
    .await;
    for id in &ids {
        let acked = ack(&service, &game_server(), id).await.unwrap();
        assert_eq!(acked.status, pb::DeliveryStatus::Delivered as i32);
    }
    // The pushes' answers come after the acks: their outcomes find the deliveries changed.
    erp_testkit::eventually(Duration::from_secs(20), || async {
        let attempts = erp_testkit::sample(
            &service.metrics().await,
            "erp_event_delivery_attempt_seconds_count",
        )
        .unwrap_or(0.0);
        if attempts >= N as f64 {
            Ok(())
        } else {
            Err(attempts)
        }
    })
    .await;
    // An outcome is written (or found changed) within milliseconds of its push's answer.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let records = audited(&service, "DELIVERY_SUCCEEDED", N).await;
    assert!(
        records.iter().all(|r| r.actor_id == game_server().user_id),
        "only the acks are recorded: {records:?}"
    );
    let counted = erp_testkit::sample(
        &service.metrics().await,
        r#"erp_event_deliveries_total{outcome="delivered"}"#,
    )
    .unwrap_or(0.0);
    assert_eq!(
        counted, 0.0,
        "the dispatcher counted changes it did not make"
    );
    for id in &ids {
        let delivery = get_delivery(&service, &game_server(), id).await.unwrap();
        assert_eq!(delivery.status, pb::DeliveryStatus::Delivered as i32);
    }
    assert_eq!(receiver.pushes().len(), N, "each pushed once");
}

#[tokio::test]
async fn a_batch_change_a_dead_dispatcher_left_unrecorded_is_recorded_later() {
    // Pull only: no dispatcher, only the backlog loop that writes left-over records.
    let service = TestEvent::start().await;
    let event = auto_event(&service, "left over").await;
    let id = delivery_id(&service.claimed(&player("u1"), &event.id).await);
    // As a dispatcher's batch of successes leaves a delivery when its process dies before the
    // records are written: DELIVERED, `seq` counted up, the mark without views.
    let long_ago =
        mongodb::bson::DateTime::from_millis(chrono::Utc::now().timestamp_millis() - 60_000);
    let deliveries = service
        .database()
        .await
        .collection::<Document>("deliveries");
    let updated = deliveries
        .update_one(
            doc! { "_id": &id, "status": "PENDING" },
            doc! {
                "$set": {
                    "status": "DELIVERED",
                    "delivered_at": long_ago,
                    "seq": 1_i64,
                    "last_change": "batch-1",
                },
                "$push": { "unrecorded": {
                    "seq": 1_i64, "change": "batch-1", "action": "DELIVERY_SUCCEEDED",
                    "actor": "system", "from": "PENDING", "to": "DELIVERED",
                    "before": "", "after": "", "at": long_ago, "trace_id": null,
                } },
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.modified_count, 1);

    let records = audited(&service, "DELIVERY_SUCCEEDED", 1).await;
    let record = &records[0];
    assert_eq!(
        (record.entity_id.as_str(), record.actor_id.as_str()),
        (id.as_str(), "system")
    );
    let view = |json: &Option<String>| -> serde_json::Value {
        serde_json::from_str(json.as_deref().expect("a view")).unwrap()
    };
    let (before, after) = (view(&record.before_json), view(&record.after_json));
    assert_eq!(before["status"], "PENDING");
    assert!(before["deliveredAt"].is_null(), "{before}");
    assert_eq!(after["status"], "DELIVERED");
    assert_eq!(after["id"], id.as_str());
    assert!(after["deliveredAt"].is_string(), "{after}");
    assert_eq!(before["rewards"], after["rewards"]);
    // The mark is gone once written, so the record is written once.
    eventually(Duration::from_secs(10), "the mark removed", || async {
        let stored = deliveries
            .find_one(doc! { "_id": &id })
            .await
            .unwrap()
            .unwrap();
        let marks = stored.get_array("unrecorded").map_or(0, Vec::len);
        (marks == 0).then_some(())
    })
    .await;
    assert_eq!(service.audit("DELIVERY_SUCCEEDED").await.len(), 1);
}
