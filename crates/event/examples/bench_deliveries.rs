//! Delivery benchmark of the event service on this machine, against the real stores and a
//! webhook receiver on loopback (in this process, answering 200 at once):
//!
//! 1. how long a 1,000-user grant takes (Grant over gRPC: one call, one batch placement, 1,000
//!    claims and deliveries), repeated until `pending` deliveries wait;
//! 2. deliveries pushed per second when a dispatching replica starts with that backlog;
//! 3. grant → delivered latency (p50/p99), from each grant call's answer to the receiver's
//!    arrival of each of its deliveries, with the dispatcher running (grants of 100 users, one
//!    every 100 ms).
//!
//! cargo run --release -p erp-event --example bench_deliveries -- [pending=10000]
//!
//! Needs the stores running (scripts/stores.sh). Uses a database of its own. Prints Markdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use chrono::Utc;
use erp_event::{App, Config};
use erp_platform::identity::{
    Asserting, AssertionSigner, Caller, IdentityKeys, Role, Service, on_behalf_of,
};
use erp_platform::{Env, Shutdown};
use erp_proto::event::v1 as pb;
use erp_proto::event::v1::event_service_client::EventServiceClient;
use erp_testkit::{grpc_service_env, unique_name, wait_for_200};
use tonic::transport::Channel;

const SECRET: &str = "bench-webhook-secret-0123456789abcdef";
const GRANT_SIZE: usize = 1000;

/// First arrival of each user's delivery at the receiver.
#[derive(Default)]
struct Arrivals {
    first: Mutex<HashMap<String, Instant>>,
    pushes: Mutex<u64>,
}

async fn receive(State(arrivals): State<Arc<Arrivals>>, body: axum::body::Bytes) -> &'static str {
    let at = Instant::now();
    let delivery: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(user) = delivery["userId"].as_str() {
        arrivals
            .first
            .lock()
            .unwrap()
            .entry(user.to_owned())
            .or_insert(at);
    }
    *arrivals.pushes.lock().unwrap() += 1;
    "ok"
}

async fn receiver() -> (String, Arc<Arrivals>) {
    let arrivals = Arc::new(Arrivals::default());
    let app = axum::Router::new()
        .route("/webhook", post(receive))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, arrivals)
}

struct Instance {
    url: String,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<Result<(), erp_platform::runtime::BoxError>>,
}

impl Instance {
    /// An in-process event service on `database`; dispatching to `webhook` when given.
    async fn start(database: &str, webhook: Option<&str>) -> Self {
        let mut env: Vec<(String, String)> = grpc_service_env("ERP_EVENT_ADDR", database)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.push(("ERP_LOG_FORMAT".into(), "json".into()));
        env.push(("ERP_JOBS_INTERVAL_SECS".into(), "3600".into()));
        env.push(("ERP_GRPC_TIMEOUT_MS".into(), "60000".into()));
        if let Some(webhook) = webhook {
            env.push(("ERP_DELIVERY_WEBHOOK_URL".into(), webhook.into()));
            env.push(("ERP_DELIVERY_WEBHOOK_SECRET".into(), SECRET.into()));
        }
        let config = Config::from_env(&Env::from_pairs(env)).unwrap();
        let app = App::build(config).await.unwrap();
        let grpc = app.grpc_addr().unwrap();
        let admin = app.admin_addr().unwrap();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        wait_for_200(&format!("http://{admin}/readyz"), Duration::from_secs(30)).await;
        Self {
            url: format!("http://{grpc}"),
            shutdown,
            server,
        }
    }

    async fn client(&self) -> EventServiceClient<Asserting<Channel>> {
        let channel = Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let keys = IdentityKeys::from_secrets(erp_testkit::IDENTITY_KEY, &[]).unwrap();
        EventServiceClient::new(
            AssertionSigner::new(Service::Gateway, keys).wrap(Service::Event, channel),
        )
    }

    async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.server.await;
    }
}

fn operator() -> Caller {
    Caller {
        user_id: "bench-operator".into(),
        roles: vec![Role::Operator],
    }
}

fn ts(at: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

async fn unlimited_event(client: &mut EventServiceClient<Asserting<Channel>>) -> String {
    let now = Utc::now();
    let created = client
        .create_event(on_behalf_of(
            pb::CreateEventRequest {
                title: "Compensation".into(),
                description: None,
                starts_at: ts(now - chrono::Duration::hours(1)),
                ends_at: ts(now + chrono::Duration::days(7)),
                claim_policy: Some(pb::ClaimPolicy::Auto as i32),
                condition: None,
                draft: false,
                rewards: vec![pb::RewardInput {
                    name: "Gold".into(),
                    r#type: pb::RewardType::Currency as i32,
                    item_code: None,
                    quantity: 100,
                    stock: None,
                }],
            },
            Some(&operator()),
        ))
        .await
        .unwrap()
        .into_inner();
    created.event.unwrap().id
}

/// Grants `users` in one call; how long it took.
async fn grant(
    client: &mut EventServiceClient<Asserting<Channel>>,
    event_id: &str,
    users: &[String],
) -> Duration {
    let started = Instant::now();
    let answer = client
        .grant(on_behalf_of(
            pb::GrantRequest {
                event_id: event_id.to_owned(),
                user_ids: users.to_vec(),
                active_user_ids: users.to_vec(),
                reason: "benchmark".into(),
                idempotency_key: unique_name("grant"),
            },
            Some(&operator()),
        ))
        .await
        .unwrap()
        .into_inner();
    let elapsed = started.elapsed();
    let granted = answer
        .results
        .iter()
        .filter(|r| r.outcome == pb::GrantOutcome::Granted as i32)
        .count();
    assert_eq!(granted, users.len(), "every user granted");
    elapsed
}

fn users(run: &str, batch: usize, size: usize) -> Vec<String> {
    (0..size).map(|i| format!("{run}-{batch}-{i}")).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let pending: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |v| v.parse().unwrap());
    let database = unique_name("bench_deliveries");
    let run = unique_name("u");

    // 1. The backlog, made by 1,000-user grants while nothing dispatches.
    let granting = Instance::start(&database, None).await;
    let mut client = granting.client().await;
    let event_id = unlimited_event(&mut client).await;
    let mut grant_times = Vec::new();
    for batch in 0..pending.div_ceil(GRANT_SIZE) {
        let size = GRANT_SIZE.min(pending - batch * GRANT_SIZE);
        grant_times.push(grant(&mut client, &event_id, &users(&run, batch, size)).await);
    }
    granting.stop().await;
    grant_times.sort();
    println!("| 1,000-user grants | p50 | max |");
    println!("|---|---|---|");
    println!(
        "| {} | {:.0} ms | {:.0} ms |",
        grant_times.len(),
        ms(percentile(&grant_times, 0.5)),
        ms(*grant_times.last().unwrap())
    );

    // 2. A dispatcher starts with the backlog.
    let (url, arrivals) = receiver().await;
    let started = Instant::now();
    let dispatching = Instance::start(&database, Some(&url)).await;
    let mut reported = Instant::now();
    loop {
        let arrived = arrivals.first.lock().unwrap().len();
        if arrived >= pending {
            break;
        }
        if reported.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "{arrived} of {pending} delivered after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
        assert!(started.elapsed() < Duration::from_secs(600), "not drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    let pushes = *arrivals.pushes.lock().unwrap();
    println!();
    println!("| pending | drained in | deliveries/s | pushes (duplicates) |");
    println!("|---|---|---|---|");
    println!(
        "| {pending} | {:.2} s | {:.0} | {pushes} ({}) |",
        drained.as_secs_f64(),
        pending as f64 / drained.as_secs_f64(),
        pushes - pending as u64
    );

    // 3. Grant -> delivered latency with the dispatcher running.
    let mut client = dispatching.client().await;
    let mut granted_at: Vec<(Vec<String>, Instant)> = Vec::new();
    for batch in 0..20 {
        let batch_users = users(&run, 1_000_000 + batch, 100);
        grant(&mut client, &event_id, &batch_users).await;
        granted_at.push((batch_users, Instant::now()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected = pending + 20 * 100;
    let waited = Instant::now();
    while arrivals.first.lock().unwrap().len() < expected {
        assert!(waited.elapsed() < Duration::from_secs(120), "not delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = arrivals.first.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = granted_at
        .iter()
        .flat_map(|(users, at)| {
            users
                .iter()
                .map(|u| first[u].saturating_duration_since(*at))
                .collect::<Vec<_>>()
        })
        .collect();
    latencies.sort();
    println!();
    println!("| grant -> delivered | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| {} deliveries | {:.0} ms | {:.0} ms | {:.0} ms |",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    dispatching.stop().await;
    let _ = mongodb::Client::with_uri_str(erp_testkit::mongodb_uri())
        .await
        .unwrap()
        .database(&database)
        .drop()
        .await;
}
