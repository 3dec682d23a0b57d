//! Load benchmark of the auth service over gRPC on this machine, against the real stores:
//! introspection throughput and p50/p99 latency, and login throughput with the configured argon2
//! parameters (production defaults unless ERP_ARGON2_* are set).
//!
//! cargo run --release -p erp-auth --example bench_auth -- [seconds=10] [connections=64]
//!
//! Needs the stores running (scripts/stores.sh). Prints a Markdown table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use erp_auth::{App, Config};
use erp_platform::identity::{Asserting, AssertionSigner, IdentityKeys, Service};
use erp_platform::{Env, Shutdown};
use erp_proto::auth::v1 as pb;
use erp_proto::auth::v1::auth_service_client::AuthServiceClient;
use erp_testkit::{grpc_service_env, unique_name, wait_for_200};
use tonic::transport::Channel;

struct Outcome {
    calls: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }

    fn row(&self, name: &str, connections: usize) -> String {
        format!(
            "| {name} | {connections} | {} | {} | {:.0} | {:.2} ms | {:.2} ms |",
            self.calls,
            self.errors,
            self.calls as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
        )
    }
}

/// Runs `call` from `connections` concurrent tasks for `duration`.
async fn load<F, Fut>(connections: usize, duration: Duration, call: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|worker| {
            let call = Arc::clone(&call);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    if !call(worker).await {
                        errors += 1;
                    }
                    latencies.push(t.elapsed());
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Outcome {
        calls: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let connections: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let duration = Duration::from_secs(seconds);

    let database = unique_name("bench_auth");
    let mut env: Vec<(String, String)> = grpc_service_env("ERP_AUTH_ADDR", &database)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for key in [
        "ERP_ARGON2_MEMORY_KIB",
        "ERP_ARGON2_ITERATIONS",
        "ERP_ARGON2_PARALLELISM",
    ] {
        if let Ok(value) = std::env::var(key) {
            env.push((key.to_owned(), value));
        }
    }
    env.push(("ERP_LOG_FORMAT".into(), "json".into()));
    let config = Config::from_env(&Env::from_pairs(env)).unwrap();
    let argon2 = config.password.clone();
    let app = App::build(config).await.unwrap();
    let grpc = app.grpc_addr().unwrap();
    let admin = app.admin_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    wait_for_200(&format!("http://{admin}/readyz"), Duration::from_secs(30)).await;

    let url = format!("http://{grpc}");
    let mut client = connect(&url).await;
    client
        .register(pb::RegisterRequest {
            email: "bench@example.com".into(),
            password: "bench-password-1".into(),
            username: None,
        })
        .await
        .unwrap();
    let token = client
        .login(pb::LoginRequest {
            email: "bench@example.com".into(),
            password: "bench-password-1".into(),
            client_ip: None,
            user_agent: None,
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;

    // One HTTP/2 connection per worker, as separate gateway replicas or clients would have.
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(connect(&url).await);
    }
    let clients = Arc::new(clients);

    let introspect_clients = Arc::clone(&clients);
    let introspect_token = token.clone();
    let introspection = load(connections, duration, move |worker| {
        let mut client = introspect_clients[worker].clone();
        let token = introspect_token.clone();
        async move {
            client
                .introspect(pb::IntrospectRequest {
                    access_token: token,
                })
                .await
                .map(|r| r.into_inner().active)
                .unwrap_or(false)
        }
    })
    .await;

    let login_connections = 8.min(connections);
    let login_clients = Arc::clone(&clients);
    let logins = load(login_connections, duration, move |worker| {
        let mut client = login_clients[worker].clone();
        async move {
            client
                .login(pb::LoginRequest {
                    email: "bench@example.com".into(),
                    password: "bench-password-1".into(),
                    client_ip: None,
                    user_agent: None,
                })
                .await
                .is_ok()
        }
    })
    .await;

    println!(
        "argon2id: m={} KiB, t={}, p={}; {} s per run; cores: {}",
        argon2.memory_kib,
        argon2.iterations,
        argon2.parallelism,
        seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| RPC | concurrent | calls | errors | calls/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", introspection.row("Introspect", connections));
    println!("{}", logins.row("Login", login_connections));

    shutdown.trigger();
    let _ = server.await;
}

/// A client signing caller assertions as the gateway does, with the test key.
async fn connect(url: &str) -> AuthServiceClient<Asserting<Channel>> {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let keys = IdentityKeys::from_secrets(erp_testkit::IDENTITY_KEY, &[]).unwrap();
    AuthServiceClient::new(
        AssertionSigner::new(Service::Gateway, keys).wrap(Service::Auth, channel),
    )
}
