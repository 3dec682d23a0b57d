//! The admin server against real stores: metrics format, liveness, readiness that does not
//! follow the stores (they are reported by `/healthz/dependencies` and `erp_dependency_up`), the
//! start-up gate, and readiness dropping at shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use erp_platform::Shutdown;
use erp_platform::admin::{self, Readiness};
use erp_platform::config::{MongoConfig, RedisConfig};
use erp_platform::redis::{RedisCheck, RedisStore};
use erp_platform::{metrics, mongo, runtime};
use erp_testkit::{TcpProxy, mongodb_uri, redis_url, unique_name};

fn host_port(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split(['/', '?']).next().unwrap();
    let authority = authority.rsplit('@').next().unwrap();
    let host_port = authority.split(',').next().unwrap();
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else if url.starts_with("redis") {
        format!("{host_port}:6379")
    } else {
        format!("{host_port}:27017")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .unwrap()
        .next()
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> reqwest::Response {
    reqwest::get(format!("http://{addr}{path}")).await.unwrap()
}

/// The status and JSON body of `GET path`.
async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let response = get(addr, path).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Serves the admin routes until the test ends (readiness may hold a shutdown handle of its own).
async fn serve_admin(readiness: Readiness) -> SocketAddr {
    let registry = metrics::new_registry();
    let counter = prometheus::IntCounter::new("erp_test_events_total", "test counter").unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    counter.inc_by(3);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = admin::router(registry, readiness);
    tokio::spawn(runtime::serve_http(
        listener,
        router,
        Shutdown::new(),
        Duration::from_secs(5),
    ));
    addr
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_healthz_is_ok() {
    let addr = serve_admin(Readiness::new(Shutdown::new())).await;

    let response = get(addr, "/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.contains("# HELP erp_test_events_total test counter"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE erp_test_events_total counter"),
        "{body}"
    );
    assert!(body.contains("\nerp_test_events_total 3\n"), "{body}");
    assert!(body.contains("process_resident_memory_bytes"), "{body}");

    let response = get(addr, "/healthz").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readyz_ignores_dependencies_which_are_reported_and_exported() {
    let mongo_proxy = TcpProxy::start(host_port(&mongodb_uri()), false).await;
    let redis_proxy = TcpProxy::start(host_port(&redis_url()), false).await;
    let database = mongo::connect(
        &MongoConfig {
            // directConnection: talk only to the proxy, not to the hosts the server advertises.
            uri: format!("mongodb://{}/?directConnection=true", mongo_proxy.addr()),
            database: unique_name("readyz"),
        },
        "readyz-test",
    )
    .await
    .unwrap();
    let redis = RedisStore::connect(&RedisConfig {
        url: format!("redis://{}", redis_proxy.addr()),
        key_prefix: unique_name("readyz"),
    })
    .unwrap();
    let shutdown = Shutdown::new();
    let started = admin::StartupCheck::new();
    let readiness = Readiness::new(shutdown.clone())
        .with_dependency(mongo::MongoCheck::new(database))
        .with_dependency(RedisCheck::new(redis))
        .with_check(started.clone())
        .with_timeout(Duration::from_secs(1));
    let addr = serve_admin(readiness).await;
    let get = |path: &'static str| get_json(addr, path);
    let gauge = |name: &'static str| async move {
        let text = erp_testkit::scrape(addr).await;
        let series = format!("erp_dependency_up{{dependency=\"{name}\"}}");
        erp_testkit::sample(&text, &series).unwrap_or_else(|| panic!("no {series} in {text}"))
    };

    // The start-up gate holds.
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["startup"], "in progress", "{body}");
    started.mark_done();

    // Both stores down: ready all the same; the detail says who is down, and since when.
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get("/healthz/dependencies").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["dependencies"]["mongodb"]["status"], "down", "{body}");
    assert_eq!(body["dependencies"]["redis"]["status"], "down", "{body}");
    assert!(
        body["dependencies"]["mongodb"]["lastError"].is_string(),
        "{body}"
    );
    assert!(
        body["dependencies"]["mongodb"]["since"].is_string(),
        "{body}"
    );
    assert_eq!(gauge("mongodb").await, 0.0);
    assert_eq!(gauge("redis").await, 0.0);

    mongo_proxy.enable();
    redis_proxy.enable();
    let (body, _) = erp_testkit::eventually_every(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let (_, body) = get("/healthz/dependencies").await;
            if body["status"] == "ok" {
                Ok(body)
            } else {
                Err(format!("stores never came back: {body}"))
            }
        },
    )
    .await;
    assert_eq!(body["dependencies"]["redis"]["status"], "up", "{body}");
    assert_eq!(gauge("mongodb").await, 1.0);
    assert_eq!(gauge("redis").await, 1.0);

    mongo_proxy.disable();
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "mongodb went away, still ready: {body}");
    let (_, body) = get("/healthz/dependencies").await;
    assert_eq!(body["dependencies"]["mongodb"]["status"], "down", "{body}");
    assert_eq!(body["dependencies"]["redis"]["status"], "up", "{body}");
    assert_eq!(gauge("mongodb").await, 0.0);
    mongo_proxy.enable();

    shutdown.trigger();
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503, "shutting down: {body}");
    assert_eq!(body["checks"]["shutdown"], "in progress");
}
