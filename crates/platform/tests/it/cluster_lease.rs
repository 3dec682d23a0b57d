//! Lease leader election against a scripted API server: every request is asserted, every answer
//! canned.

use std::sync::Arc;
use std::time::Duration;

use crate::kube_mock::{self, ApiServer, Call, eventually};
use erp_platform::Shutdown;
use erp_platform::cluster::{AlwaysLeader, LeaderElection, LeaseConfig, LeaseLeaderElector};
use erp_platform::config::Env;
use http::{Method, StatusCode};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/erp/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/erp/leases/erp-event-jobs";

/// An elector for "pod-a" running against a scripted API server until `shutdown` is triggered.
fn start_elector(
    lease_duration: Duration,
    renew_interval: Duration,
) -> (Arc<LeaseLeaderElector>, ApiServer, Shutdown, JoinHandle<()>) {
    let (client, server) = kube_mock::client();
    let elector = Arc::new(LeaseLeaderElector::new(
        client,
        "erp",
        "erp-event-jobs",
        "pod-a",
        lease_duration,
        renew_interval,
    ));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(Arc::clone(&elector).run(shutdown.clone()));
    (elector, server, shutdown, run)
}

/// Waits up to `within` for the elector's run to end (after shutdown).
async fn run_ends(run: JoinHandle<()>, within: Duration) {
    tokio::time::timeout(within, run)
        .await
        .expect("run ends")
        .unwrap();
}

fn lease(
    holder: Option<&str>,
    renewed: Timestamp,
    duration_secs: i32,
    transitions: i32,
    version: &str,
) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "erp-event-jobs",
            "namespace": "erp",
            "resourceVersion": version,
            "uid": "6f1c2a4e-0000-4000-8000-000000000001",
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration_secs,
            "acquireTime": renewed.to_string(),
            "renewTime": renewed.to_string(),
            "leaseTransitions": transitions,
        },
    })
}

/// What the API server stores for a write: the body with a new resourceVersion.
fn stored(body: &Value, version: &str) -> Value {
    let mut stored = body.clone();
    stored["metadata"]["resourceVersion"] = json!(version);
    stored["metadata"]["namespace"] = json!("erp");
    stored
}

/// Answers a write as the API server stores it (see [`stored`]), and returns that.
fn respond_stored(call: Call, status: StatusCode, version: &str) -> Value {
    let stored = stored(&call.body, version);
    call.respond(status, &stored);
    stored
}

fn timestamp(value: &Value) -> Timestamp {
    value.as_str().expect("a timestamp").parse().unwrap()
}

fn assert_fresh(value: &Value) {
    let age = Timestamp::now().duration_since(timestamp(value));
    assert!(
        age < SignedDuration::from_secs(5) && age > SignedDuration::from_secs(-5),
        "{value} is not now"
    );
}

/// The spec of a Lease pod-a acquires now (its lease lasts 3 s), after `transitions` transitions.
fn assert_acquired_by_pod_a(spec: &Value, transitions: i32) {
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseDurationSeconds"], 3);
    assert_eq!(spec["leaseTransitions"], transitions);
    assert_fresh(&spec["acquireTime"]);
    assert_fresh(&spec["renewTime"]);
}

#[tokio::test]
async fn acquires_renews_loses_reacquires_and_releases() {
    let (elector, mut api, shutdown, run) =
        start_elector(Duration::from_secs(3), Duration::from_millis(200));
    assert!(
        !elector.is_leader(),
        "nobody is leader before the first round"
    );

    // Absent: read, then create it holding it.
    api.expect(Method::GET, LEASE).await.fail(
        StatusCode::NOT_FOUND,
        "NotFound",
        "leases \"erp-event-jobs\" not found",
    );
    let create = api.expect(Method::POST, LEASES).await;
    let spec = &create.body["spec"];
    assert_eq!(create.body["metadata"]["name"], "erp-event-jobs");
    assert_acquired_by_pod_a(spec, 0);
    let created = respond_stored(create, StatusCode::CREATED, "1");
    eventually("the creator is leader", || elector.is_leader()).await;

    // Holding: renew by replacing with the resourceVersion we hold, no read in between.
    let renew = api.expect(Method::PUT, LEASE).await;
    assert_eq!(renew.body["metadata"]["resourceVersion"], "1");
    assert_eq!(renew.body["spec"]["holderIdentity"], "pod-a");
    assert!(
        timestamp(&renew.body["spec"]["renewTime"]) >= timestamp(&created["spec"]["renewTime"])
    );
    assert_eq!(
        renew.body["spec"]["acquireTime"], created["spec"]["acquireTime"],
        "a renew keeps acquireTime"
    );
    respond_stored(renew, StatusCode::OK, "2");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(elector.is_leader(), "a renewed holder stays leader");

    // Someone else wrote the Lease first: 409 Conflict, so not leader any more.
    let renew = api.expect(Method::PUT, LEASE).await;
    assert_eq!(renew.body["metadata"]["resourceVersion"], "2");
    renew.fail(
        StatusCode::CONFLICT,
        "Conflict",
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"erp-event-jobs\": the object has been modified",
    );
    eventually("the loser is not leader", || !elector.is_leader()).await;

    // The other holder renews in time: follow, and only read.
    api.expect(Method::GET, LEASE).await.respond(
        StatusCode::OK,
        &lease(Some("pod-b"), Timestamp::now(), 15, 1, "7"),
    );
    api.expect(Method::GET, LEASE).await.respond(
        StatusCode::OK,
        &lease(Some("pod-b"), Timestamp::now(), 15, 1, "8"),
    );
    assert!(!elector.is_leader(), "a follower is not leader");

    // The other holder stopped renewing a minute ago: take over with its resourceVersion.
    let stale = Timestamp::now() - SignedDuration::from_secs(60);
    api.expect(Method::GET, LEASE)
        .await
        .respond(StatusCode::OK, &lease(Some("pod-b"), stale, 15, 1, "9"));
    let take_over = api.expect(Method::PUT, LEASE).await;
    let spec = &take_over.body["spec"];
    assert_eq!(take_over.body["metadata"]["resourceVersion"], "9");
    assert_acquired_by_pod_a(spec, 2);
    respond_stored(take_over, StatusCode::OK, "10");
    eventually("the new holder is leader", || elector.is_leader()).await;

    // Shutdown: step down at once, then release by clearing holderIdentity.
    shutdown.trigger();
    let release = api.expect(Method::PUT, LEASE).await;
    assert!(!elector.is_leader(), "stepped down before releasing");
    assert_eq!(release.body["metadata"]["resourceVersion"], "10");
    assert!(
        release.body["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null),
        "{}",
        release.body
    );
    assert_eq!(release.body["spec"]["leaseTransitions"], 2);
    respond_stored(release, StatusCode::OK, "11");
    run_ends(run, Duration::from_secs(2)).await;
    assert!(!elector.is_leader());
    api.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn losing_the_create_race_follows_the_winner() {
    let (elector, mut api, shutdown, run) =
        start_elector(Duration::from_secs(3), Duration::from_millis(100));

    api.expect(Method::GET, LEASE)
        .await
        .fail(StatusCode::NOT_FOUND, "NotFound", "not found");
    api.expect(Method::POST, LEASES).await.fail(
        StatusCode::CONFLICT,
        "AlreadyExists",
        "leases \"erp-event-jobs\" already exists",
    );
    api.expect(Method::GET, LEASE).await.respond(
        StatusCode::OK,
        &lease(Some("pod-b"), Timestamp::now(), 15, 0, "3"),
    );
    // Following: the next round only reads again.
    let read = api.expect(Method::GET, LEASE).await;
    assert!(!elector.is_leader());

    // A follower's shutdown leaves the Lease alone.
    shutdown.trigger();
    run_ends(run, Duration::from_secs(2)).await;
    drop(read);
    api.expect_silence(Duration::from_millis(300)).await;
    assert!(!elector.is_leader());
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let (elector, mut api, shutdown, run) =
        start_elector(Duration::from_secs(3), Duration::from_millis(100));

    // The previous holder released it (no holderIdentity) a moment ago.
    api.expect(Method::GET, LEASE)
        .await
        .respond(StatusCode::OK, &lease(None, Timestamp::now(), 15, 4, "20"));
    let take = api.expect(Method::PUT, LEASE).await;
    assert_eq!(take.body["metadata"]["resourceVersion"], "20");
    assert_eq!(take.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(take.body["spec"]["leaseTransitions"], 5);
    respond_stored(take, StatusCode::OK, "21");
    eventually("leader", || elector.is_leader()).await;

    shutdown.trigger();
    let release = api.expect(Method::PUT, LEASE).await;
    assert_eq!(release.body["metadata"]["resourceVersion"], "21");
    respond_stored(release, StatusCode::OK, "22");
    run_ends(run, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_being_leader_within_the_lease_duration() {
    let lease_duration = Duration::from_millis(600);
    let (elector, mut api, shutdown, run) =
        start_elector(lease_duration, Duration::from_millis(100));

    api.expect(Method::GET, LEASE)
        .await
        .fail(StatusCode::NOT_FOUND, "NotFound", "not found");
    let create = api.expect(Method::POST, LEASES).await;
    respond_stored(create, StatusCode::CREATED, "1");
    eventually("leader", || elector.is_leader()).await;
    let acquired = tokio::time::Instant::now();

    // The renew never gets an answer (a network partition).
    let renew = api.expect(Method::PUT, LEASE).await;
    let unanswered = renew.hold();
    eventually("no longer leader", || !elector.is_leader()).await;
    assert!(
        acquired.elapsed() <= lease_duration + Duration::from_millis(200),
        "still leader {:?} after the last renew",
        acquired.elapsed()
    );
    assert!(
        acquired.elapsed() >= lease_duration - Duration::from_millis(100),
        "stepped down too early"
    );

    // After the timed-out renew it reads again, no longer trusting its copy.
    let read = api.expect(Method::GET, LEASE).await;
    drop(unanswered);
    shutdown.trigger();
    run_ends(run, Duration::from_secs(3)).await;
    drop(read);
    assert!(!elector.is_leader());
}

#[test]
fn always_leader_and_shared_electors() {
    assert!(AlwaysLeader.is_leader());
    let shared: Arc<dyn LeaderElection> = Arc::new(AlwaysLeader);
    assert!(shared.is_leader());
}

#[test]
fn lease_config_from_env() {
    assert_eq!(
        LeaseConfig::from_env(&Env::from_pairs([("POD_NAME", "p")])).unwrap(),
        None
    );

    let config = LeaseConfig::from_env(&Env::from_pairs([
        ("ERP_KUBERNETES_LEASE_NAME", "erp-event-jobs"),
        ("POD_NAME", "erp-event-7d9f-abcde"),
        ("POD_NAMESPACE", "erp"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        config,
        LeaseConfig {
            lease_name: "erp-event-jobs".into(),
            namespace: Some("erp".into()),
            identity: "erp-event-7d9f-abcde".into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
        }
    );

    let from_hostname = LeaseConfig::from_env(&Env::from_pairs([
        ("ERP_KUBERNETES_LEASE_NAME", "jobs"),
        ("HOSTNAME", "host-1"),
        ("ERP_KUBERNETES_LEASE_DURATION_SECS", "30"),
        ("ERP_KUBERNETES_LEASE_RENEW_SECS", "10"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(from_hostname.identity, "host-1");
    assert_eq!(from_hostname.namespace, None);
    assert_eq!(from_hostname.lease_duration, Duration::from_secs(30));
    assert_eq!(from_hostname.renew_interval, Duration::from_secs(10));

    let no_identity =
        LeaseConfig::from_env(&Env::from_pairs([("ERP_KUBERNETES_LEASE_NAME", "jobs")]));
    assert_eq!(no_identity.unwrap_err().variable, "POD_NAME");

    let renew_too_slow = LeaseConfig::from_env(&Env::from_pairs([
        ("ERP_KUBERNETES_LEASE_NAME", "jobs"),
        ("POD_NAME", "p"),
        ("ERP_KUBERNETES_LEASE_DURATION_SECS", "10"),
        ("ERP_KUBERNETES_LEASE_RENEW_SECS", "10"),
    ]));
    assert_eq!(
        renew_too_slow.unwrap_err().variable,
        "ERP_KUBERNETES_LEASE_RENEW_SECS"
    );
}
