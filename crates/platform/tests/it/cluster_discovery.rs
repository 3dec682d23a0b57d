//! EndpointSlice discovery against a scripted API server: the list, the watch and its resumption
//! are asserted request by request; the endpoint changes are asserted one by one; and a balanced
//! channel is shown to follow them with two real gRPC servers.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::kube_mock::{self, ApiServer};
use erp_platform::Shutdown;
use erp_platform::cluster::discovery::{self, watch_endpoints};
use erp_platform::grpc::GrpcConfig;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use tonic::transport::channel::Change;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/erp/endpointslices";
const SELECTOR: &str = "labelSelector=kubernetes.io%2Fservice-name%3Derp-auth";

/// `(address, ready, terminating)`
type Ep<'a> = (&'a str, bool, bool);

fn slice(name: &str, version: &str, endpoints: &[Ep<'_>]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "erp",
            "resourceVersion": version,
            "labels": { "kubernetes.io/service-name": "erp-auth" },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "grpc", "port": 50051, "protocol": "TCP" }],
        "endpoints": endpoints.iter().map(|(address, ready, terminating)| json!({
            "addresses": [address],
            "conditions": { "ready": ready, "serving": ready, "terminating": terminating },
            "targetRef": { "kind": "Pod", "namespace": "erp", "name": format!("erp-auth-{address}") },
        })).collect::<Vec<_>>(),
    })
}

fn list(version: &str, items: &[Value]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSliceList",
        "metadata": { "resourceVersion": version },
        "items": items,
    })
}

/// A watch response body: one JSON event per line.
fn events(events: &[(&str, Value)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, object) in events {
        serde_json::to_writer(&mut body, &json!({ "type": kind, "object": object })).unwrap();
        body.push(b'\n');
    }
    body
}

fn watch_query(version: &str) -> BTreeSet<String> {
    let version = format!("resourceVersion={version}");
    [
        "watch=true",
        "timeoutSeconds=290",
        SELECTOR,
        "allowWatchBookmarks=true",
        version.as_str(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

async fn expect_list(api: &mut ApiServer) -> kube_mock::Call {
    let call = api.expect(Method::GET, SLICES).await;
    assert_eq!(
        call.query_pairs(),
        set(&[SELECTOR]),
        "a list of the Service's slices"
    );
    call
}

async fn expect_watch(api: &mut ApiServer, version: &str) -> kube_mock::Call {
    let call = api.expect(Method::GET, SLICES).await;
    assert_eq!(
        call.query_pairs(),
        watch_query(version),
        "a watch from the last version"
    );
    call
}

/// Receives the next `n` changes as readable strings (`+url` / `-url`), applying them to `state`.
async fn changes(
    rx: &mut mpsc::Receiver<Change<String, Endpoint>>,
    state: &mut BTreeSet<String>,
    n: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let change = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an endpoint change in time")
            .expect("the watch is running");
        match change {
            Change::Insert(key, endpoint) => {
                assert_eq!(
                    format!("{key}/"),
                    endpoint.uri().to_string(),
                    "keyed by its URL"
                );
                assert!(state.insert(key.clone()), "{key} inserted twice");
                seen.push(format!("+{key}"));
            }
            Change::Remove(key) => {
                assert!(state.remove(&key), "{key} removed but never inserted");
                seen.push(format!("-{key}"));
            }
        }
    }
    seen
}

fn set(urls: &[&str]) -> BTreeSet<String> {
    urls.iter().map(|u| (*u).to_owned()).collect()
}

#[tokio::test]
async fn follows_ready_endpoints_through_list_watch_resume_and_relist() {
    let (client, mut api) = kube_mock::client();
    let shutdown = Shutdown::new();
    let (tx, mut rx) = mpsc::channel(64);
    let start = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            watch_endpoints(
                client,
                "erp",
                "erp-auth",
                50051,
                &GrpcConfig::default(),
                tx,
                shutdown,
            )
            .await
        }
    });
    let mut state = BTreeSet::new();

    // List: one slice with two ready endpoints (and one not ready yet): both ready ones inserted.
    expect_list(&mut api).await.respond(
        StatusCode::OK,
        &list(
            "100",
            &[slice(
                "erp-auth-a",
                "90",
                &[
                    ("10.0.0.1", true, false),
                    ("10.0.0.2", true, false),
                    ("10.0.0.9", false, false),
                ],
            )],
        ),
    );
    let task = start.await.unwrap().expect("the first list succeeds");
    assert_eq!(
        changes(&mut rx, &mut state, 2).await,
        ["+http://10.0.0.1:50051", "+http://10.0.0.2:50051"]
    );

    // Watch from the list's version. Events, each applied in turn:
    let watch = expect_watch(&mut api, "100").await;
    watch.respond_raw(
        StatusCode::OK,
        events(&[
            // one endpoint removed and the other not ready any more: both removed
            ("MODIFIED", slice("erp-auth-a", "101", &[("10.0.0.2", false, false), ("10.0.0.9", false, false)])),
            // scale up: a second slice with two ready endpoints
            ("ADDED", slice("erp-auth-b", "102", &[("10.0.0.3", true, false), ("10.0.0.4", true, false)])),
            // .2 ready again, .9 ready but already terminating: only .2 inserted
            ("MODIFIED", slice("erp-auth-a", "103", &[("10.0.0.2", true, false), ("10.0.0.9", true, true)])),
            // a change that changes nothing for clients: no change sent
            ("MODIFIED", slice("erp-auth-a", "104", &[("10.0.0.2", true, false), ("10.0.0.9", false, true)])),
            // scale down: the second slice goes away
            ("DELETED", slice("erp-auth-b", "105", &[("10.0.0.3", true, false), ("10.0.0.4", true, false)])),
            ("BOOKMARK", json!({ "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": { "resourceVersion": "150" } })),
        ]),
    );
    assert_eq!(
        changes(&mut rx, &mut state, 2).await,
        ["-http://10.0.0.1:50051", "-http://10.0.0.2:50051"]
    );
    assert!(state.is_empty(), "no endpoint is ready");
    assert_eq!(
        changes(&mut rx, &mut state, 2).await,
        ["+http://10.0.0.3:50051", "+http://10.0.0.4:50051"]
    );
    assert_eq!(
        changes(&mut rx, &mut state, 1).await,
        ["+http://10.0.0.2:50051"]
    );
    assert_eq!(
        changes(&mut rx, &mut state, 2).await,
        ["-http://10.0.0.3:50051", "-http://10.0.0.4:50051"]
    );
    assert_eq!(state, set(&["http://10.0.0.2:50051"]));

    // The server ended the watch: resume from the bookmark's version; it has expired (410), so
    // list again, and only what differs from the channel's set is sent.
    expect_watch(&mut api, "150").await.respond_raw(
        StatusCode::OK,
        events(&[(
            "ERROR",
            kube_mock::status_body(410, "Expired", "too old resource version: 150 (180)"),
        )]),
    );
    expect_list(&mut api).await.respond(
        StatusCode::OK,
        &list(
            "200",
            &[slice(
                "erp-auth-a",
                "190",
                &[("10.0.0.2", true, false), ("10.0.0.6", true, false)],
            )],
        ),
    );
    assert_eq!(
        changes(&mut rx, &mut state, 1).await,
        ["+http://10.0.0.6:50051"]
    );
    assert_eq!(
        state,
        set(&["http://10.0.0.2:50051", "http://10.0.0.6:50051"])
    );

    // A watch refused as expired before it starts: list again too.
    expect_watch(&mut api, "200").await.fail(
        StatusCode::GONE,
        "Expired",
        "too old resource version",
    );
    expect_list(&mut api)
        .await
        .respond(StatusCode::OK, &list("300", &[]));
    assert_eq!(
        changes(&mut rx, &mut state, 2).await,
        ["-http://10.0.0.2:50051", "-http://10.0.0.6:50051"],
        "the Service scaled to zero"
    );

    // Shutdown stops the watch mid-request; nothing more is sent.
    let pending = expect_watch(&mut api, "300").await;
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the watch stops")
        .unwrap();
    assert!(rx.recv().await.is_none(), "the watch let go of the channel");
    drop(pending);
}

#[tokio::test]
async fn a_failing_first_list_fails_discovery() {
    let (client, mut api) = kube_mock::client();
    let start = tokio::spawn(async move {
        discovery::discover(
            client,
            "erp",
            "erp-auth",
            50051,
            &GrpcConfig::default(),
            Shutdown::new(),
        )
        .await
    });
    expect_list(&mut api).await.fail(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:erp:erp-gateway\" cannot list resource",
    );
    let error = start.await.unwrap().expect_err("forbidden");
    assert!(error.to_string().contains("list EndpointSlices"), "{error}");
}

/// A gRPC server on `addr` whose health service knows only `name`.
async fn health_server(addr: SocketAddr, name: &'static str, shutdown: Shutdown) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    crate::grpc_health::serve(listener, GrpcConfig::default(), name, shutdown).await;
    addr
}

/// How many of `calls` checks of service "a" succeed (only the server on 127.0.0.1 knows it).
async fn calls_to_a(client: &mut HealthClient<tonic::transport::Channel>, calls: usize) -> usize {
    let mut served = 0;
    for _ in 0..calls {
        let request = HealthCheckRequest {
            service: "a".into(),
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), client.check(request))
            .await
            .expect("an answer in time");
        match answer {
            Ok(_) => served += 1,
            Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
        }
    }
    served
}

#[tokio::test]
async fn the_balanced_channel_follows_the_slices() {
    let shutdown = Shutdown::new();
    let a = health_server("127.0.0.1:0".parse().unwrap(), "a", shutdown.clone()).await;
    let b = health_server(
        SocketAddr::new("127.0.0.2".parse().unwrap(), a.port()),
        "b",
        shutdown.clone(),
    )
    .await;
    assert_eq!(a.port(), b.port());

    let (client, mut api) = kube_mock::client();
    let start = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            discovery::discover(
                client,
                "erp",
                "erp-auth",
                a.port(),
                &GrpcConfig::default(),
                shutdown,
            )
            .await
        }
    });
    let ready = |ip| (ip, true, false);
    expect_list(&mut api).await.respond(
        StatusCode::OK,
        &list(
            "10",
            &[slice(
                "erp-auth-a",
                "10",
                &[ready("127.0.0.1"), ready("127.0.0.2")],
            )],
        ),
    );
    let channel = start.await.unwrap().expect("discovered");
    let watch = expect_watch(&mut api, "10").await;

    // Both pods get requests.
    let mut health = HealthClient::new(channel);
    let served = calls_to_a(&mut health, 40).await;
    assert!(
        served > 0 && served < 40,
        "{served} of 40 calls reached 127.0.0.1: not balanced over both"
    );

    // 127.0.0.2 turns not ready: every call goes to 127.0.0.1 from then on.
    watch.respond_raw(
        StatusCode::OK,
        events(&[(
            "MODIFIED",
            slice(
                "erp-auth-a",
                "11",
                &[ready("127.0.0.1"), ("127.0.0.2", false, false)],
            ),
        )]),
    );
    let next_watch = expect_watch(&mut api, "11").await;
    let mut settled = false;
    for _ in 0..50 {
        if calls_to_a(&mut health, 1).await == 1 && calls_to_a(&mut health, 20).await == 20 {
            settled = true;
            break;
        }
    }
    assert!(settled, "the removed endpoint kept getting calls");

    shutdown.trigger();
    drop(next_watch);
}
