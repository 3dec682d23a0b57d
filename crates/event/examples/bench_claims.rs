//! Load benchmark of the event service over gRPC on this machine, against the real stores:
//!
//! 1. claims per second and p50/p99 latency when many distinct players claim one ACTIVE AUTO
//!    event with one limited reward at once — with claim batching as configured by default
//!    (`ERP_CLAIM_BATCH_MAX=64`), with one claim per transaction serialised per event (`1`), and
//!    with every claim its own concurrent transaction (`0`, the conflicting design);
//! 2. the same with a stock that runs out half-way through;
//! 3. GetDashboard's answer time with 100,000 claims in the collection, their figures first all
//!    in unfolded deltas (one per 1,000 claims), then folded into the rollups by the jobs with
//!    1,000 new claims' delta on top.
//!
//! cargo run --release -p erp-event --example bench_claims -- [seconds=10] [connections=64] [claims=100000]
//!
//! Needs the stores running (scripts/stores.sh). Each run uses a database of its own. Prints
//! Markdown tables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use erp_event::{App, Config};
use erp_platform::error::ApiError;
use erp_platform::identity::{
    Asserting, AssertionSigner, Caller, IdentityKeys, Role, Service, on_behalf_of,
};
use erp_platform::{Env, Shutdown};
use erp_proto::event::v1 as pb;
use erp_proto::event::v1::event_service_client::EventServiceClient;
use erp_testkit::{grpc_service_env, unique_name, wait_for_200};
use mongodb::bson::{Document, doc};
use tonic::transport::Channel;

/// What a call answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Granted,
    OutOfStock,
    Error,
}

struct Outcome {
    granted: usize,
    out_of_stock: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    fn row(&self, name: &str, connections: usize, retries: u64) -> String {
        format!(
            "| {name} | {connections} | {} | {} | {} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {retries} |",
            self.latencies.len(),
            self.granted,
            self.out_of_stock,
            self.errors,
            self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            self.granted as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Runs `call` from `connections` concurrent tasks for `duration`.
async fn load<F, Fut>(connections: usize, duration: Duration, call: F) -> Outcome
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Answer> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|worker| {
            let call = Arc::clone(&call);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut answers = Vec::new();
                let mut iteration = 0;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    answers.push(call(worker, iteration).await);
                    latencies.push(t.elapsed());
                    iteration += 1;
                }
                (latencies, answers)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut answers = Vec::new();
    for task in tasks {
        let (l, a) = task.await.unwrap();
        latencies.extend(l);
        answers.extend(a);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let count = |wanted: Answer| answers.iter().filter(|a| **a == wanted).count();
    Outcome {
        granted: count(Answer::Granted),
        out_of_stock: count(Answer::OutOfStock),
        errors: count(Answer::Error),
        elapsed,
        latencies,
    }
}

fn as_caller<T>(caller: &Caller, body: T) -> tonic::Request<T> {
    on_behalf_of(body, Some(caller))
}

/// A client signing caller assertions as the gateway does, with the test key.
async fn connect(url: &str) -> EventServiceClient<Asserting<Channel>> {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let keys = IdentityKeys::from_secrets(erp_testkit::IDENTITY_KEY, &[]).unwrap();
    EventServiceClient::new(
        AssertionSigner::new(Service::Gateway, keys).wrap(Service::Event, channel),
    )
}

fn operator() -> Caller {
    Caller {
        user_id: "bench-operator".into(),
        roles: vec![Role::Operator, Role::Auditor],
    }
}

fn ts(at: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

/// An in-process instance on a database of its own.
struct Instance {
    url: String,
    admin: std::net::SocketAddr,
    database: String,
    jobs: erp_event::Jobs,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<Result<(), erp_platform::runtime::BoxError>>,
}

impl Instance {
    async fn start(batch_max: &str) -> Self {
        let database = unique_name("bench_event");
        let mut env: Vec<(String, String)> = grpc_service_env("ERP_EVENT_ADDR", &database)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.push(("ERP_LOG_FORMAT".into(), "json".into()));
        env.push(("ERP_CLAIM_BATCH_MAX".into(), batch_max.into()));
        // The jobs run only when the benchmark says so, and expire nothing it seeded.
        env.push(("ERP_JOBS_INTERVAL_SECS".into(), "3600".into()));
        env.push(("ERP_CLAIM_PENDING_EXPIRY_SECS".into(), "31536000".into()));
        // The conflicting design needs longer than the default call timeout under load.
        env.push(("ERP_GRPC_TIMEOUT_MS".into(), "60000".into()));
        let config = Config::from_env(&Env::from_pairs(env)).unwrap();
        let app = App::build(config).await.unwrap();
        let grpc = app.grpc_addr().unwrap();
        let admin = app.admin_addr().unwrap();
        let jobs = app.jobs();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        wait_for_200(&format!("http://{admin}/readyz"), Duration::from_secs(30)).await;
        Self {
            url: format!("http://{grpc}"),
            admin,
            database,
            jobs,
            shutdown,
            server,
        }
    }

    async fn clients(&self, n: usize) -> Arc<Vec<EventServiceClient<Asserting<Channel>>>> {
        // One HTTP/2 connection per worker, as separate gateway replicas would have.
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(connect(&self.url).await);
        }
        Arc::new(clients)
    }

    async fn event_with_stock(&self, stock: i64) -> (String, String) {
        let mut client = connect(&self.url).await;
        let now = Utc::now();
        let created = client
            .create_event(as_caller(
                &operator(),
                pb::CreateEventRequest {
                    title: "Launch day".into(),
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
                        stock: Some(stock),
                    }],
                },
            ))
            .await
            .unwrap()
            .into_inner();
        (created.event.unwrap().id, created.rewards[0].id.clone())
    }

    async fn database(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(erp_testkit::mongodb_uri())
            .await
            .unwrap()
            .database(&self.database)
    }

    /// The value of the metric line starting with `prefix` on /metrics, 0 when absent.
    async fn metric(&self, series: &str) -> u64 {
        erp_testkit::sample(&erp_testkit::scrape(self.admin).await, series)
            .map_or(0, |value| value as u64)
    }

    async fn stop(self) {
        let database = self.database().await;
        self.shutdown.trigger();
        let _ = self.server.await;
        let _ = database.drop().await;
    }
}

/// Every worker claims as a new player each time.
async fn claim_load(
    instance: &Instance,
    connections: usize,
    duration: Duration,
    event_id: &str,
) -> Outcome {
    let clients = instance.clients(connections).await;
    let event_id = event_id.to_owned();
    let run = unique_name("p");
    load(connections, duration, move |worker, iteration| {
        let mut client = clients[worker].clone();
        let event_id = event_id.clone();
        let player = Caller {
            user_id: format!("{run}-{worker}-{iteration}"),
            roles: vec![Role::User],
        };
        async move {
            let answer = client
                .claim(as_caller(
                    &player,
                    pb::ClaimRequest {
                        event_id,
                        idempotency_key: None,
                    },
                ))
                .await;
            match answer {
                Ok(_) => Answer::Granted,
                Err(status) if ApiError::from_status(&status).code.as_str() == "OUT_OF_STOCK" => {
                    Answer::OutOfStock
                }
                Err(status) => {
                    eprintln!("claim failed: {:?} {}", status.code(), status.message());
                    Answer::Error
                }
            }
        }
    })
    .await
}

/// Checks the invariants after a run: one claim per grant, stock never below zero.
async fn check_stock(instance: &Instance, event_id: &str, stock: i64, outcome: &Outcome) {
    let database = instance.database().await;
    let claims = database
        .collection::<Document>("claims")
        .count_documents(doc! { "event_id": event_id })
        .await
        .unwrap();
    let reward = database
        .collection::<Document>("rewards")
        .find_one(doc! { "event_id": event_id })
        .await
        .unwrap()
        .unwrap();
    let remaining = reward.get_i64("remaining").unwrap();
    let claimed = reward.get_i64("claimed").unwrap();
    assert_eq!(claims, outcome.granted as u64, "one claim per grant");
    assert_eq!(claimed, outcome.granted as i64);
    assert_eq!(remaining, stock - claimed);
    assert!(remaining >= 0);
}

/// Creates 50 events in every status.
async fn seed_events(instance: &Instance) -> Vec<pb::Event> {
    let mut client = connect(&instance.url).await;
    let now = Utc::now();
    let mut events = Vec::new();
    for i in 0..50 {
        let (start, end) = match i % 5 {
            0 => (
                now - chrono::Duration::days(40),
                now - chrono::Duration::days(10),
            ),
            1 => (
                now + chrono::Duration::days(1),
                now + chrono::Duration::days(5),
            ),
            _ => (
                now - chrono::Duration::days(30),
                now + chrono::Duration::days(5),
            ),
        };
        let created = client
            .create_event(as_caller(
                &operator(),
                pb::CreateEventRequest {
                    title: format!("Event {i}"),
                    description: None,
                    starts_at: ts(start),
                    ends_at: ts(end),
                    claim_policy: None,
                    condition: None,
                    draft: i % 10 == 9,
                    rewards: vec![],
                },
            ))
            .await
            .unwrap()
            .into_inner();
        events.push(created.event.unwrap());
    }
    events
}

/// Inserts `total` claims (as the service stores them) spread over 30 days and `events`, skewed
/// towards a few, in every status and with every reward type; with each 1,000 the delta of the
/// dashboard's figures the service writes with every claim transaction (see `store::tallies`).
async fn seed_claims(
    instance: &Instance,
    events: &[pb::Event],
    run: &str,
    total: usize,
) -> Duration {
    let now = Utc::now();
    let claims = instance.database().await.collection::<Document>("claims");
    let deltas = instance
        .database()
        .await
        .collection::<Document>("claim_tally_deltas");
    let types = ["CURRENCY", "ITEM", "COUPON", "POINT", "BUFF"];
    let started = Instant::now();
    let mut inserted = 0;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..total {
        // A skewed spread: low event numbers are popular.
        let event = &events[(i * i / 7 + i) % events.len()];
        let status = match i % 20 {
            0..=13 => "GRANTED",
            14..=16 => "PENDING",
            17..=18 => "REJECTED",
            _ => "EXPIRED",
        };
        let at =
            now - chrono::Duration::seconds(i64::try_from((i * 7919) % (30 * 86_400)).unwrap());
        let at = mongodb::bson::DateTime::from_millis(at.timestamp_millis());
        let rewards: Vec<Document> = (0..=(i % 3))
            .map(|r| {
                doc! {
                    "id": format!("reward-{r}"),
                    "name": "Reward",
                    "type": types[(i + r) % types.len()],
                    "quantity": 10_i64,
                }
            })
            .collect();
        batch.push(doc! {
            "_id": uuid::Uuid::now_v7().to_string(),
            "event_id": &event.id,
            "user_id": format!("{run}-{i}"),
            "status": status,
            "rewards": rewards,
            "event": { "title": &event.title, "starts_at": at, "ends_at": at },
            "evaluation": { "passed": true, "details": [] },
            "requested_at": at,
            "decided_at": if status == "PENDING" { None } else { Some(at) },
            "decided_by": if status == "PENDING" { None } else { Some("system") },
            "reason": mongodb::bson::Bson::Null,
        });
        if batch.len() == 1000 || i + 1 == total {
            let docs = std::mem::take(&mut batch);
            inserted += docs.len();
            deltas
                .insert_one(erp_event::testing::dashboard_delta(&docs).unwrap())
                .await
                .unwrap();
            claims.insert_many(docs).await.unwrap();
        }
    }
    assert_eq!(inserted, total);
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let connections: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let seed: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let duration = Duration::from_secs(seconds);
    let retries_metric = "erp_event_transaction_retries_total{operation=\"claim\"}";

    let mut rows = Vec::new();
    let mut batched_rate = 0.0;
    for (name, batch_max) in [
        ("batched (ERP_CLAIM_BATCH_MAX=64)", "64"),
        ("one per transaction, serialised per event (=1)", "1"),
        ("one per transaction, concurrent (=0)", "0"),
    ] {
        let instance = Instance::start(batch_max).await;
        let stock = 1_000_000;
        let (event_id, _) = instance.event_with_stock(stock).await;
        let outcome = claim_load(&instance, connections, duration, &event_id).await;
        let retries = instance.metric(retries_metric).await;
        eprintln!("{}", outcome.row(name, connections, retries));
        check_stock(&instance, &event_id, stock, &outcome).await;
        if batch_max == "64" {
            batched_rate = outcome.granted as f64 / outcome.elapsed.as_secs_f64();
        }
        rows.push(outcome.row(name, connections, retries));
        instance.stop().await;
    }

    // The stock runs out about half-way through the run.
    let instance = Instance::start("64").await;
    let stock = ((batched_rate * seconds as f64) / 2.0).max(100.0) as i64;
    let (event_id, _) = instance.event_with_stock(stock).await;
    let outcome = claim_load(&instance, connections, duration, &event_id).await;
    check_stock(&instance, &event_id, stock, &outcome).await;
    assert_eq!(outcome.granted as i64, stock, "the whole stock went");
    let retries = instance.metric(retries_metric).await;
    rows.push(outcome.row(
        &format!("batched, stock {stock} runs out mid-way"),
        connections,
        retries,
    ));
    instance.stop().await;

    // The dashboard over a large claims collection.
    let instance = Instance::start("64").await;
    let events = seed_events(&instance).await;
    let seeded_in = seed_claims(&instance, &events, "seed", seed).await;
    let mut client = connect(&instance.url).await;
    let mut dashboard_rows = Vec::new();
    let mut folded_in = Duration::ZERO;
    for (backlog, run) in [(0, ""), (1000, "late")] {
        if backlog > 0 {
            seed_claims(&instance, &events, run, backlog).await;
        }
        let pending = instance
            .database()
            .await
            .collection::<Document>("claim_tally_deltas")
            .count_documents(doc! {})
            .await
            .unwrap();
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let board = client
                .get_dashboard(as_caller(&operator(), pb::GetDashboardRequest {}))
                .await
                .unwrap()
                .into_inner()
                .dashboard
                .unwrap();
            times.push(t.elapsed());
            let claims_seen = board.claims.unwrap().by_status.values().sum::<i64>();
            assert_eq!(claims_seen as usize, seed + backlog);
        }
        times.sort();
        dashboard_rows.push(format!(
            "| {} | {pending} | {} | {:.0} ms | {:.0} ms |",
            seed + backlog,
            times.len(),
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        ));
        if backlog == 0 {
            let folding = Instant::now();
            instance.jobs.run_once().await.unwrap();
            folded_in = folding.elapsed();
        }
    }
    instance.stop().await;

    println!(
        "{seconds} s per claim run; cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| Claim, distinct players, one event | concurrent | calls | granted | out of stock | errors | calls/s | grants/s | p50 | p99 | tx retries |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    println!("| GetDashboard | claims | deltas not folded yet | calls | p50 | max |");
    println!("|---|---|---|---|---|---|");
    for row in dashboard_rows {
        println!("{row}");
    }
    println!(
        "(seeding {seed} claims took {:.1} s; the jobs then folded their deltas in {:.1} s)",
        seeded_in.as_secs_f64(),
        folded_in.as_secs_f64()
    );
}
