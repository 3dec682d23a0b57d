//! Partial failure: a dependency that is down never makes a pod not ready (no cascade), requests
//! that need it answer 503 `UNAVAILABLE` with `Retry-After` (never 500), the rest keeps working,
//! and everything recovers by itself. Real binaries; outages are made with a [`TcpProxy`] cut
//! between a service and what it dials.

use std::time::Duration;

use crate::common::{self, ADMIN_EMAIL, ADMIN_PASSWORD, Platform, Request};
use erp_testkit::{ServiceProcess, TcpProxy, mongodb_uri, redis_url};
use reqwest::Method;
use serde_json::{Value, json};

/// A second gateway whose path to event goes through `event_proxy` (auth and Redis direct).
/// Why some tests here leave their databases behind.
const ORPHANED_TRANSACTIONS: &str =
    "a service is killed or cut off from MongoDB mid-transaction (see TestStores::leave_databases)";

async fn gateway_via(platform: &Platform, event_proxy: &TcpProxy) -> ServiceProcess {
    platform
        .another_gateway(&[
            ("ERP_EVENT_URL", &format!("http://{}", event_proxy.addr())),
            ("ERP_GRPC_CONNECT_TIMEOUT_MS", "500"),
            ("ERP_GRPC_TIMEOUT_MS", "3000"),
        ])
        .await
}

/// `erp_dependency_up{dependency="<name>"}` on `process`'s admin port (after asking
/// `/healthz/dependencies`, which probes now), and that endpoint's JSON.
async fn dependency_up(
    http: &reqwest::Client,
    process: &ServiceProcess,
    name: &str,
) -> (i64, Value) {
    let admin = process.addr("admin");
    let detail = http
        .get(format!("http://{admin}/healthz/dependencies"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        detail.status(),
        200,
        "the detailed endpoint always answers 200"
    );
    let detail: Value = detail.json().await.unwrap();
    let metrics = erp_testkit::scrape(admin).await;
    let series = format!("erp_dependency_up{{dependency=\"{name}\"}}");
    let value = erp_testkit::sample(&metrics, &series)
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"));
    (value as i64, detail)
}

async fn readyz(http: &reqwest::Client, process: &ServiceProcess) -> u16 {
    http.get(format!("http://{}/readyz", process.addr("admin")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn raw_call(
    http: &reqwest::Client,
    url: String,
    method: Method,
    token: &str,
    idempotency_key: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = Request::new(http.request(method, url))
        .token(token)
        .timeout(Duration::from_secs(20));
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let reply = request.send().await;
    let retry_after = reply.header("retry-after").map(str::to_owned);
    (reply.status.as_u16(), retry_after, reply.body)
}

/// Polls `dependency_up` until `name` is up again (at most 30 s).
async fn until_up(http: &reqwest::Client, process: &ServiceProcess, name: &str) {
    erp_testkit::eventually(Duration::from_secs(30), || async {
        match dependency_up(http, process, name).await {
            (1, _) => Ok(()),
            (_, detail) => Err(detail),
        }
    })
    .await;
}

#[tokio::test]
async fn event_down_does_not_cascade_and_recovers() {
    let platform = Platform::start().await;
    let proxy = TcpProxy::start(platform.event().addr("grpc"), true).await;
    let gateway = gateway_via(&platform, &proxy).await;
    let base = format!("http://{}/api/v1", gateway.addr("http"));
    let http = reqwest::Client::new();
    let admin = platform.admin().await;

    let (up, detail) = dependency_up(&http, &gateway, "event").await;
    assert_eq!(up, 1, "{detail}");
    assert_eq!(detail["status"], "ok", "{detail}");

    proxy.disable();
    // Not ready would take every gateway out of the Service: it stays ready.
    assert_eq!(readyz(&http, &gateway).await, 200);
    let (up, detail) = dependency_up(&http, &gateway, "event").await;
    assert_eq!(up, 0, "{detail}");
    assert_eq!(detail["status"], "degraded", "{detail}");
    assert_eq!(
        detail["dependencies"]["event"]["status"], "down",
        "{detail}"
    );
    assert!(
        detail["dependencies"]["event"]["lastError"].is_string(),
        "{detail}"
    );
    assert!(
        detail["dependencies"]["event"]["since"].is_string(),
        "{detail}"
    );
    assert_eq!(detail["dependencies"]["auth"]["status"], "up", "{detail}");

    // Login (auth only) still works through this gateway, and so does /docs.
    let login = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let docs = http
        .get(format!("http://{}/docs", gateway.addr("http")))
        .send()
        .await
        .unwrap();
    assert!(docs.status().is_success() || docs.status().is_redirection());

    // An event route: 503 UNAVAILABLE with Retry-After, problem+json.
    let (status, retry_after, body) = raw_call(
        &http,
        format!("{base}/events"),
        Method::GET,
        &admin.access_token,
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "UNAVAILABLE", "{body}");
    assert!(retry_after.is_some_and(|v| v.parse::<u64>().unwrap() >= 1));

    proxy.enable();
    until_up(&http, &gateway, "event").await;
    let (status, _, body) = raw_call(
        &http,
        format!("{base}/events"),
        Method::GET,
        &admin.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Each player claims again and again with one Idempotency-Key until `until`; every answer.
async fn claim_until(
    http: &reqwest::Client,
    url: &str,
    players: &[common::Session],
    until: tokio::time::Instant,
) -> Vec<(u16, Value)> {
    let requests = players.iter().map(|player| {
        let http = http.clone();
        let url = url.to_owned();
        let token = player.access_token.clone();
        let key = format!("claim-{}", player.id);
        async move {
            let mut answers = Vec::new();
            loop {
                let (status, retry_after, body) =
                    raw_call(&http, url.clone(), Method::POST, &token, Some(&key)).await;
                if status == 503 {
                    assert!(retry_after.is_some(), "503 without Retry-After: {body}");
                    assert_eq!(body["code"], "UNAVAILABLE", "{body}");
                }
                answers.push((status, body));
                if tokio::time::Instant::now() >= until {
                    return answers;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    futures::future::join_all(requests)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test]
async fn killing_event_during_concurrent_claims_is_never_a_500_and_retries_converge() {
    let platform = Platform::start().await;
    platform.stores().leave_databases(ORPHANED_TRANSACTIONS);
    // An event service of this test's own, so that it can be killed and started again (on
    // another port: the proxy in front of it is what the gateway dials).
    let mut event_env = erp_testkit::grpc_service_env(
        "ERP_EVENT_ADDR",
        &platform.stores().database("killed_event"),
    );
    event_env.push(("ERP_REDIS_KEY_PREFIX", platform.stores().redis_prefix()));
    let event_binary = erp_testkit::workspace_binary("erp-event");
    let first = ServiceProcess::start(&event_binary, &event_env).await;
    first.wait_ready(Duration::from_secs(30)).await;
    let proxy = TcpProxy::start(first.addr("grpc"), true).await;
    let gateway = gateway_via(&platform, &proxy).await;
    let base = format!("http://{}/api/v1", gateway.addr("http"));
    let http = reqwest::Client::new();
    let admin = platform.admin().await;
    let (status, event) = {
        let response = http
            .post(format!("{base}/events"))
            .bearer_auth(&admin.access_token)
            .json(&common::event_body(
                "killed mid-claim",
                chrono::Duration::days(1),
                json!({"rewards": common::gold()}),
            ))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 201, "{event}");
    let event_id = event["id"].as_str().unwrap().to_owned();
    let mut players = Vec::new();
    for i in 0..12 {
        players.push(platform.player(&format!("pf{i}@example.com")).await);
    }
    let claim_url = format!("{base}/events/{event_id}/claims");

    // Claims in flight; event is SIGKILLed in the middle, then a new process comes up.
    let start = tokio::time::Instant::now();
    let killer = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        first.kill().await;
        let second = ServiceProcess::start(&event_binary, &event_env).await;
        second.wait_ready(Duration::from_secs(30)).await;
        proxy.set_target(second.addr("grpc"));
        second
    };
    let (during, second) = tokio::join!(
        claim_until(&http, &claim_url, &players, start + Duration::from_secs(4)),
        killer
    );
    let mut seen = std::collections::BTreeMap::new();
    for (status, body) in &during {
        assert_ne!(*status, 500, "a 500 while event was killed: {body}");
        *seen.entry(*status).or_insert(0) += 1;
    }
    eprintln!("statuses around the kill: {seen:?}");
    assert!(seen.contains_key(&503), "the kill was noticed: {seen:?}");

    // The new process answers: retries with the same keys converge, one claim per player.
    until_up(&http, &gateway, "event").await;
    let after = claim_until(&http, &claim_url, &players, tokio::time::Instant::now()).await;
    for (status, body) in &after {
        assert!(
            *status == 201 || (*status == 409 && body["code"] == "ALREADY_CLAIMED"),
            "{status} {body}"
        );
    }
    for player in &players {
        let (status, _, mine) = raw_call(
            &http,
            format!("{base}/claims/me?eventId={event_id}"),
            Method::GET,
            &player.access_token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{mine}");
        assert_eq!(
            mine["items"].as_array().unwrap().len(),
            1,
            "{}: {mine}",
            player.email
        );
    }
    drop(second);
}

/// A platform whose stores are reached through proxies the test can cut: only the event
/// service's (`all_services` false) or those of all three services.
async fn behind_store_proxies(all_services: bool) -> (TcpProxy, TcpProxy, Platform) {
    let mongo_proxy = TcpProxy::start(host_port(&mongodb_uri(), 27017), true).await;
    let redis_proxy = TcpProxy::start(host_port(&redis_url(), 6379), true).await;
    let mongo_uri = format!(
        "mongodb://{}/?directConnection=true&serverSelectionTimeoutMS=1000",
        mongo_proxy.addr()
    );
    let redis = format!("redis://{}", redis_proxy.addr());
    let builder = Platform::builder();
    let builder = if all_services {
        builder
            .env("ERP_MONGODB_URI", &mongo_uri)
            .env("ERP_REDIS_URL", &redis)
    } else {
        builder
            .event_env("ERP_MONGODB_URI", &mongo_uri)
            .event_env("ERP_REDIS_URL", &redis)
    };
    let platform = builder.start().await;
    platform.stores().leave_databases(ORPHANED_TRANSACTIONS);
    (mongo_proxy, redis_proxy, platform)
}

/// `GET /claims/me` as `token`: status, `Retry-After` and body.
async fn my_claims(
    http: &reqwest::Client,
    platform: &Platform,
    token: &str,
) -> (u16, Option<String>, Value) {
    raw_call(http, platform.url("/claims/me"), Method::GET, token, None).await
}

#[tokio::test]
async fn event_stores_lost_after_start_stay_ready_and_answer_503() {
    let (mongo_proxy, redis_proxy, platform) = behind_store_proxies(false).await;
    let http = reqwest::Client::new();
    let admin = platform.admin().await;
    let (status, _, body) = my_claims(&http, &platform, &admin.access_token).await;
    assert_eq!(status, 200, "{body}");

    mongo_proxy.disable();
    redis_proxy.disable();
    assert_eq!(
        readyz(&http, platform.event()).await,
        200,
        "started, then lost its stores: still ready"
    );
    assert_eq!(readyz(&http, platform.gateway()).await, 200);
    let (mongo_up, detail) = dependency_up(&http, platform.event(), "mongodb").await;
    assert_eq!(mongo_up, 0, "{detail}");
    assert_eq!(
        detail["dependencies"]["redis"]["status"], "down",
        "{detail}"
    );
    let (redis_up, _) = dependency_up(&http, platform.event(), "redis").await;
    assert_eq!(redis_up, 0);

    // A request that needs the event store: 503 UNAVAILABLE with Retry-After, not 500.
    let (status, retry_after, body) = my_claims(&http, &platform, &admin.access_token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "UNAVAILABLE", "{body}");
    assert!(retry_after.is_some(), "{body}");
    // Auth's stores are fine: logging in still works.
    platform.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;

    mongo_proxy.enable();
    redis_proxy.enable();
    erp_testkit::eventually(Duration::from_secs(30), || async {
        let (status, _, body) = my_claims(&http, &platform, &admin.access_token).await;
        assert_ne!(status, 500, "{body}");
        if status == 200 {
            Ok(())
        } else {
            Err((status, body))
        }
    })
    .await;
    assert_eq!(dependency_up(&http, platform.event(), "mongodb").await.0, 1);
}

/// Redis (of all three services) lost after start, and then MongoDB too: nothing is a 500,
/// every pod stays ready, and what each request got is printed (the README's table).
#[tokio::test]
async fn stores_lost_after_start_are_never_a_500() {
    let (mongo_proxy, redis_proxy, platform) = behind_store_proxies(true).await;
    let http = reqwest::Client::new();
    let admin = platform.admin().await;
    let player = platform.player("stores@example.com").await;
    let (event_id, _) = platform
        .active_event_with_reward(&admin.access_token, "stores")
        .await;
    let probe = |label: &'static str| {
        let http = http.clone();
        let platform = &platform;
        let admin = admin.access_token.clone();
        let player = player.access_token.clone();
        let event_id = event_id.clone();
        async move {
            let mut lines = Vec::new();
            let login = http
                .post(platform.url("/auth/login"))
                .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
                .send()
                .await
                .unwrap();
            let login_status = login.status().as_u16();
            let retry = login.headers().contains_key("retry-after");
            lines.push(("POST /auth/login", login_status, retry));
            for (what, path, token) in [
                (
                    "GET /auth/me (verified token)",
                    "/auth/me".to_owned(),
                    admin.clone(),
                ),
                ("GET /events", "/events".to_owned(), admin.clone()),
                (
                    "GET /events/{id}",
                    format!("/events/{event_id}"),
                    player.clone(),
                ),
                ("GET /claims/me", "/claims/me".to_owned(), player.clone()),
            ] {
                let (status, retry_after, body) =
                    raw_call(&http, platform.url(&path), Method::GET, &token, None).await;
                assert_ne!(status, 500, "{label} {what}: {body}");
                lines.push((what, status, retry_after.is_some()));
            }
            let (status, retry_after, body) = raw_call(
                &http,
                platform.url(&format!("/events/{event_id}/claims")),
                Method::POST,
                &player,
                Some("stores-claim"),
            )
            .await;
            assert_ne!(status, 500, "{label} claim: {body}");
            lines.push(("POST /events/{id}/claims", status, retry_after.is_some()));
            assert_ne!(login_status, 500, "{label} login");
            for (what, status, retry) in &lines {
                if *status == 503 {
                    assert!(retry, "{label} {what}: 503 without Retry-After");
                }
            }
            eprintln!("{label}: {lines:?}");
        }
    };
    redis_proxy.disable();
    probe("redis down").await;
    for process in [platform.auth(), platform.event(), platform.gateway()] {
        assert_eq!(readyz(&http, process).await, 200);
    }
    mongo_proxy.disable();
    probe("redis and mongodb down").await;
    for process in [platform.auth(), platform.event(), platform.gateway()] {
        assert_eq!(readyz(&http, process).await, 200);
    }
    redis_proxy.enable();
    probe("mongodb down").await;
    mongo_proxy.enable();
}

fn host_port(url: &str, default_port: u16) -> std::net::SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split(['/', '?']).next().unwrap();
    let authority = authority.rsplit('@').next().unwrap();
    let host_port = authority.split(',').next().unwrap();
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .unwrap()
        .next()
        .unwrap()
}
