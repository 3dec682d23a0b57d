//! Lease leader election against a scripted API server: every request is asserted, every answer
//! canned.

use std::sync::Arc;
use std::time::Duration;

use crate::kube_mock::{self, ApiServer, eventually};
use erp_platform::Shutdown;
use erp_platform::cluster::{AlwaysLeader, LeaderElection, LeaseConfig, LeaseLeaderElector};
use erp_platform::config::Env;
use http::{Method, StatusCode};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/erp/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/erp/leases/erp-event-jobs";

fn elector(
    lease_duration: Duration,
    renew_interval: Duration,
) -> (Arc<LeaseLeaderElector>, ApiServer) {
    let (client, server) = kube_mock::client();
    let elector = LeaseLeaderElector::new(
        client,
        "erp",
        "erp-event-jobs",
        "pod-a",
        lease_duration,
        renew_interval,
    );
    (Arc::new(elector), server)
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

#[tokio::test]
async fn acquires_renews_loses_reacquires_and_releases() {
    let (elector, mut api) = elector(Duration::from_secs(3), Duration::from_millis(200));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(Arc::clone(&elector).run(shutdown.clone()));
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
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseDurationSeconds"], 3);
    assert_eq!(spec["leaseTransitions"], 0);
    assert_fresh(&spec["acquireTime"]);
    assert_fresh(&spec["renewTime"]);
    let created = stored(&create.body, "1");
    create.respond(StatusCode::CREATED, &created);
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
    let renewed = stored(&renew.body, "2");
    renew.respond(StatusCode::OK, &renewed);
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
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseTransitions"], 2);
    assert_eq!(spec["leaseDurationSeconds"], 3);
    assert_fresh(&spec["acquireTime"]);
    assert_fresh(&spec["renewTime"]);
    let taken = stored(&take_over.body, "10");
    take_over.respond(StatusCode::OK, &taken);
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
    let released = stored(&release.body, "11");
    release.respond(StatusCode::OK, &released);
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("run ends after release")
        .unwrap();
    assert!(!elector.is_leader());
    api.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn losing_the_create_race_follows_the_winner() {
    let (elector, mut api) = elector(Duration::from_secs(3), Duration::from_millis(100));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(Arc::clone(&elector).run(shutdown.clone()));

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
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("run ends")
        .unwrap();
    drop(read);
    api.expect_silence(Duration::from_millis(300)).await;
    assert!(!elector.is_leader());
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let (elector, mut api) = elector(Duration::from_secs(3), Duration::from_millis(100));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(Arc::clone(&elector).run(shutdown.clone()));

    // The previous holder released it (no holderIdentity) a moment ago.
    api.expect(Method::GET, LEASE)
        .await
        .respond(StatusCode::OK, &lease(None, Timestamp::now(), 15, 4, "20"));
    let take = api.expect(Method::PUT, LEASE).await;
    assert_eq!(take.body["metadata"]["resourceVersion"], "20");
    assert_eq!(take.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(take.body["spec"]["leaseTransitions"], 5);
    let taken = stored(&take.body, "21");
    take.respond(StatusCode::OK, &taken);
    eventually("leader", || elector.is_leader()).await;

    shutdown.trigger();
    let release = api.expect(Method::PUT, LEASE).await;
    assert_eq!(release.body["metadata"]["resourceVersion"], "21");
    let released = stored(&release.body, "22");
    release.respond(StatusCode::OK, &released);
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("run ends")
        .unwrap();
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_being_leader_within_the_lease_duration() {
    let lease_duration = Duration::from_millis(600);
    let (elector, mut api) = elector(lease_duration, Duration::from_millis(100));
    let shutdown = Shutdown::new();
    let run = tokio::spawn(Arc::clone(&elector).run(shutdown.clone()));

    api.expect(Method::GET, LEASE)
        .await
        .fail(StatusCode::NOT_FOUND, "NotFound", "not found");
    let create = api.expect(Method::POST, LEASES).await;
    let created = stored(&create.body, "1");
    create.respond(StatusCode::CREATED, &created);
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
    tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .expect("run ends")
        .unwrap();
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
