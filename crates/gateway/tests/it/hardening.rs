//! What makes the gateway safe to expose, through the real binaries: metric labels from closed
//! sets, HEAD like GET, HTTP server limits (slow request heads, idle connections, the connection
//! cap), the client IP behind proxies and per-IP limits of 404s, 405s and failed
//! authentications.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::Platform;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Rate limits count in fixed one-minute windows: a test that trips one starts with enough of
/// the current window left.
async fn fresh_rate_window() {
    erp_testkit::fresh_minute_window(Duration::from_secs(20)).await;
}

async fn gateway_metrics(platform: &Platform) -> String {
    platform.gateway_metrics().await
}

/// The series (name and labels, without the value) of the HTTP request metrics.
fn http_series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| line.starts_with("erp_http_request"))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

/// The value of one series, 0 when absent.
fn metric_value(metrics: &str, series: &str) -> f64 {
    erp_testkit::sample(metrics, series).unwrap_or(0.0)
}

/// A method no standard one can be (they do not start with `X`).
fn random_method() -> Method {
    let length = 2 + rand::random::<u8>() as usize % 10;
    let name: String = std::iter::once('X')
        .chain((0..length).map(|_| char::from(b'A' + rand::random::<u8>() % 26)))
        .collect();
    Method::from_bytes(name.as_bytes()).unwrap()
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let platform = Platform::start().await;
    let root = format!("http://{}", platform.gateway().addr("http"));
    // Every kind of route once with a standard method, so their series exist before.
    for path in ["/api/v1/events", "/api/v1/events/e1", "/api/v1/nope"] {
        platform
            .http
            .get(format!("{root}{path}"))
            .send()
            .await
            .unwrap();
    }
    let before = http_series(&gateway_metrics(&platform).await);

    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..2000)
        .map(|i| {
            let http = platform.http.clone();
            let path = match i % 4 {
                0 => "/api/v1/events".to_owned(),
                1 => format!("/api/v1/events/{}", rand::random::<u64>()),
                2 => format!("/api/v1/nope/{}", rand::random::<u64>()),
                _ => format!("/api/v1/events/{}/rewards/{}", i, rand::random::<u64>()),
            };
            let url = format!("{root}{path}");
            async move {
                http.request(random_method(), url)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(
        statuses.iter().all(|s| *s == 404 || *s == 405),
        "unexpected statuses: {:?}",
        statuses.iter().collect::<BTreeSet<_>>()
    );

    let after = http_series(&gateway_metrics(&platform).await);
    let new: Vec<&String> = after.difference(&before).collect();
    println!(
        "2000 made-up methods in {elapsed:?}: {} series before, {} after, new: {new:#?}",
        before.len(),
        after.len()
    );
    assert!(
        new.iter()
            .all(|series| series.contains(r#"method="other""#)),
        "series not from the fixed `other` label: {new:#?}"
    );
    // At most the `other` series of the route kinds hit: per route and status one counter, and
    // per route one histogram (buckets, sum, count).
    let per_route = 1 + 15 + 2;
    assert!(new.len() <= 4 * per_route, "{} new series", new.len());
}

#[tokio::test]
async fn head_answers_like_get_on_every_get_route() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let (event_id, reward_id) = platform
        .active_event_with_reward(&admin.access_token, "Heads")
        .await;
    let player = platform.player("heads@example.com").await;
    let claim = platform.claim(&player.access_token, &event_id).await;
    let claim_id = claim["id"].as_str().unwrap().to_owned();
    let delivery_id = claim["delivery"]["id"].as_str().unwrap().to_owned();

    let mut checked = 0;
    let mut failures = Vec::new();
    for (method, template, _) in erp_gateway::routes::ROUTE_TABLE {
        if *method != axum::http::Method::GET {
            continue;
        }
        let path = if template.starts_with("/users/") {
            template.replace("{id}", &player.id)
        } else if template.starts_with("/claims/") {
            template.replace("{id}", &claim_id)
        } else if template.starts_with("/deliveries/") {
            template.replace("{id}", &delivery_id)
        } else {
            template
                .replace("{id}", &event_id)
                .replace("{rewardId}", &reward_id)
        };
        let url = platform.url(&path);
        let get = platform
            .http
            .get(&url)
            .bearer_auth(&admin.access_token)
            .send()
            .await
            .unwrap();
        let head = platform
            .http
            .head(&url)
            .bearer_auth(&admin.access_token)
            .send()
            .await
            .unwrap();
        let get_status = get.status();
        let head_status = head.status();
        let header = |response: &reqwest::Response, name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (get_type, head_type) = (header(&get, "content-type"), header(&head, "content-type"));
        let (get_etag, head_etag) = (header(&get, "etag"), header(&head, "etag"));
        let head_body = head.bytes().await.unwrap();
        if get_status != StatusCode::OK
            || head_status != get_status
            || head_type != get_type
            || head_etag != get_etag
            || !head_body.is_empty()
        {
            failures.push(format!(
                "{path}: GET {get_status} {get_type:?} {get_etag:?}, HEAD {head_status} \
                 {head_type:?} {head_etag:?} body {} bytes",
                head_body.len()
            ));
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} GET routes");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The ETag of a single resource survives HEAD.
    let head = platform
        .http
        .head(platform.url(&format!("/events/{event_id}")))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert!(head.headers().contains_key("etag"));
    // Anonymous HEAD is refused like anonymous GET.
    let head = platform
        .http
        .head(platform.url("/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::UNAUTHORIZED);
    let output = platform.gateway().output();
    assert!(
        !output.contains("route missing from the route table"),
        "HEAD logged as a missing route"
    );
}

/// Reads one HTTP/1.1 response with a `content-length`; its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if data.len() >= end + 4 + length {
                return head[9..12].parse().unwrap();
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(read > 0, "closed before a whole response");
        data.extend_from_slice(&chunk[..read]);
    }
}

const REQUEST: &[u8] = b"GET /api/v1/nope HTTP/1.1\r\nHost: gateway\r\n\r\n";

/// Waits (at most `within`) for the server to close `stream`; how long that took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut chunk)).await {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `bytes` one a second until the server closes the connection; how long that took.
async fn trickle(stream: &mut TcpStream, bytes: &[u8]) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    for byte in bytes.iter().cycle().take(30) {
        if stream.write_all(&[*byte]).await.is_err() {
            return started.elapsed();
        }
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let read = read.unwrap_or(0);
                assert_eq!(read, 0, "answered instead of closed: {:?}", String::from_utf8_lossy(&chunk[..read]));
                return started.elapsed();
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    panic!("a slow request head was never cut");
}

#[tokio::test]
async fn slow_request_heads_and_idle_connections_are_closed() {
    let platform = Platform::builder()
        .gateway_envs(&[
            ("ERP_HTTP_HEADER_READ_TIMEOUT_MS", "1000"),
            ("ERP_HTTP_IDLE_TIMEOUT_MS", "3000"),
        ])
        .start()
        .await;
    let addr = platform.gateway().addr("http");

    // A slowloris, one header byte a second: cut after the header timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let took = trickle(&mut slow, REQUEST).await;
    println!("slowloris cut after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Idle between requests longer than the header timeout is fine...
    let mut keep = TcpStream::connect(addr).await.unwrap();
    keep.write_all(REQUEST).await.unwrap();
    assert_eq!(read_response(&mut keep).await, 404);
    tokio::time::sleep(Duration::from_secs(2)).await;
    keep.write_all(REQUEST).await.unwrap();
    assert_eq!(read_response(&mut keep).await, 404);
    // ...until the idle timeout.
    let took = closed_within(&mut keep, Duration::from_secs(10)).await;
    println!("idle connection closed after {took:?}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "{took:?}"
    );

    // A later request head sent slowly on a kept-alive connection is cut too.
    let mut later = TcpStream::connect(addr).await.unwrap();
    later.write_all(REQUEST).await.unwrap();
    assert_eq!(read_response(&mut later).await, 404);
    let took = trickle(&mut later, REQUEST).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Connected, nothing sent: cut after the header timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");

    let metrics = gateway_metrics(&platform).await;
    assert!(metric_value(&metrics, "erp_http_connections_timed_out_total") >= 3.0);
}

async fn open_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    assert_eq!(read_response(&mut stream).await, 404);
    stream
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_at_once() {
    let platform = Platform::builder()
        .gateway_envs(&[
            ("ERP_HTTP_MAX_CONNECTIONS", "3"),
            // Connections are handed between shards; the cap is the process's.
            ("ERP_WORKER_THREADS", "2"),
        ])
        .start()
        .await;
    let addr = platform.gateway().addr("http");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open_connection(addr).await);
    }
    let metrics = gateway_metrics(&platform).await;
    assert_eq!(metric_value(&metrics, "erp_http_connections_open"), 3.0);

    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let _ = fourth.write_all(REQUEST).await;
    let took = closed_within(&mut fourth, Duration::from_secs(2)).await;
    println!("connection over the cap closed after {took:?}");
    let metrics = gateway_metrics(&platform).await;
    assert_eq!(
        metric_value(&metrics, "erp_http_connections_refused_total"),
        1.0
    );

    // The ones already open still work, and one closing makes room.
    held[1].write_all(REQUEST).await.unwrap();
    assert_eq!(read_response(&mut held[1]).await, 404);
    drop(held.remove(0));
    let started = Instant::now();
    loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        let mut chunk = [0u8; 16];
        if matches!(stream.read(&mut chunk).await, Ok(read) if read > 0) {
            assert!(chunk.starts_with(b"HTTP/1.1 404"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_escape_per_ip_limits() {
    let platform = Platform::builder()
        .gateway_envs(&[
            ("ERP_TRUSTED_PROXIES", "1"),
            ("ERP_AUTH_RATE_LIMIT_PER_MINUTE", "5"),
            ("ERP_RATE_LIMIT_PER_MINUTE", "5"),
        ])
        .start()
        .await;
    let root = format!("http://{}", platform.gateway().addr("http"));
    fresh_rate_window().await;
    let login = |forwarded: String| {
        platform
            .http
            .post(platform.url("/auth/login"))
            .header("x-forwarded-for", forwarded)
            // Refused by the gateway (400) once past the limit: no login attempt reaches auth.
            .json(&json!({}))
            .send()
    };
    // Our proxy appends the client (198.51.100.7); the client made up what is left of it.
    for i in 0..5 {
        let response = login(format!("10.9.{i}.1, 198.51.100.7")).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "attempt {i}");
    }
    let response = login("10.9.99.1, 198.51.100.7".to_owned()).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    // Another client behind the same proxy is not affected.
    let response = login("198.51.100.7, 198.51.100.8".to_owned())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Unknown routes and wrong methods count against the per-IP limit too.
    let unknown = |forwarded: &'static str| {
        platform
            .http
            .get(format!("{root}/api/v1/nope"))
            .header("x-forwarded-for", forwarded)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            unknown("1.1.1.1, 198.51.100.9").await.unwrap().status(),
            StatusCode::NOT_FOUND
        );
    }
    for _ in 0..2 {
        let response = platform
            .http
            .put(platform.url("/auth/login"))
            .header("x-forwarded-for", "2.2.2.2, 198.51.100.9")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let response = unknown("3.3.3.3, 198.51.100.9").await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn failed_authentications_stop_introspection_per_ip() {
    let platform = Platform::builder()
        .gateway_envs(&[
            ("ERP_AUTH_FAILURES_PER_MINUTE", "5"),
            ("ERP_INTROSPECTION_CACHE_TTL_MS", "120000"),
        ])
        .start()
        .await;
    let admin = platform.admin().await;
    let (status, _) = platform.get("/auth/me", &admin.access_token).await;
    assert_eq!(status, StatusCode::OK);
    // A valid token not used yet, so not in the cache.
    let fresh = platform.admin().await;
    fresh_rate_window().await;

    let (status, _) = platform.call(Method::GET, "/auth/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for i in 0..4 {
        let (status, body) = platform.get("/auth/me", &format!("bad-token-{i}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["code"], "UNAUTHENTICATED");
    }
    let misses = |metrics: &str| {
        metric_value(
            metrics,
            r#"erp_gateway_introspection_cache_total{result="miss"}"#,
        )
    };
    let before = misses(&gateway_metrics(&platform).await);
    let response = platform
        .http
        .get(platform.url("/auth/me"))
        .bearer_auth("bad-token-5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    // Not even a valid token is introspected from this address now...
    let (status, body) = platform.get("/auth/me", &fresh.access_token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(misses(&gateway_metrics(&platform).await), before);
    // ...but sessions already verified keep working, and a missing token is still a 401.
    let (status, _) = platform.get("/auth/me", &admin.access_token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = platform.call(Method::GET, "/auth/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Public routes are not affected.
    let (status, _) = platform.refresh(&json!(fresh.refresh_token)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_requests_with_one_new_token_ask_auth_once() {
    const REQUESTS: usize = 32;
    let platform = Platform::start().await;
    // Signed in, never used: not in the cache.
    let fresh = platform.admin().await;
    let misses = |metrics: &str| {
        metric_value(
            metrics,
            r#"erp_gateway_introspection_cache_total{result="miss"}"#,
        )
    };
    let before = misses(&gateway_metrics(&platform).await);
    let statuses = futures::future::join_all(
        (0..REQUESTS).map(|_| platform.get("/auth/me", &fresh.access_token)),
    )
    .await;
    assert!(
        statuses.iter().all(|(status, _)| *status == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        misses(&gateway_metrics(&platform).await) - before,
        1.0,
        "one introspection for {REQUESTS} concurrent requests"
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let platform = Platform::builder()
        .gateway_envs(&[("ERP_HTTP2_MAX_CONCURRENT_STREAMS", "4")])
        .start()
        .await;
    let addr = platform.gateway().addr("http");
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<axum::body::Body>();
    let request = || {
        axum::http::Request::get(format!("http://{addr}/api/v1/nope"))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    // The first exchange brings the server's SETTINGS (at most 4 streams at once); then the
    // client keeps to them and queues the rest (streams over the limit would be refused).
    let first = client.request(request()).await.unwrap();
    assert_eq!(first.version(), axum::http::Version::HTTP_2);
    let responses = futures::future::join_all((0..12).map(|_| client.request(request()))).await;
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.version(), axum::http::Version::HTTP_2);
        assert_eq!(response.status(), 404);
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "NOT_FOUND");
    }
}
