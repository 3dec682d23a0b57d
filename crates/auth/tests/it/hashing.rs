//! Password hashing is bounded: the real erp-auth binary, with production argon2 settings, answers
//! 200 concurrent logins of unknown emails without its memory growing with them.

use std::path::Path;
use std::time::{Duration, Instant};

use erp_platform::error::ApiError;
use erp_platform::identity::Service;
use erp_proto::auth::v1 as pb;
use erp_proto::auth::v1::auth_service_client::AuthServiceClient;
use erp_testkit::{ServiceProcess, TestStores};

use crate::common::service_env;
use tonic::transport::Channel;

const BINARY: &str = env!("CARGO_BIN_EXE_erp-auth");

/// The limit asserted on the process's peak RSS (the chart's auth memory limit is 512Mi).
const PEAK_RSS_LIMIT_KIB: u64 = 256 * 1024;

/// The pid of the erp-auth process started on `database` (its environment names it).
fn pid_on(database: &str) -> u32 {
    let wanted = format!("ERP_MONGODB_DATABASE={database}");
    let binary = std::fs::canonicalize(BINARY).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary)
                && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                    environ
                        .split(|&b| b == 0)
                        .any(|var| var == wanted.as_bytes())
                })
        })
        .expect("the erp-auth process")
}

/// A `VmHWM` / `VmRSS` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_logins_keep_peak_memory_bounded() {
    let stores = TestStores::new("auth_hash");
    let database = stores.database("auth");
    let mut env = service_env(&stores, "ERP_AUTH_ADDR", "auth");
    for (key, value) in [
        // Production argon2id cost: 19 MiB and 2 passes per hash.
        ("ERP_ARGON2_MEMORY_KIB", "19456"),
        ("ERP_ARGON2_ITERATIONS", "2"),
        ("ERP_EVENT_URL", "http://127.0.0.1:9"),
    ] {
        env.push((key, value.to_owned()));
    }
    let process = ServiceProcess::start(Path::new(BINARY), &env).await;
    process.wait_ready(Duration::from_secs(30)).await;
    let pid = pid_on(&database);
    let before = status_kib(pid, "VmHWM");

    // Several connections, so HTTP/2 stream limits do not hold calls back before auth sees them.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let channel = Channel::from_shared(format!("http://{}", process.addr("grpc")))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(AuthServiceClient::new(
            crate::common::gateway_signer().wrap(Service::Auth, channel),
        ));
    }
    let started = Instant::now();
    let answers = futures::future::join_all((0..200).map(|i| {
        let mut client = clients[i % clients.len()].clone();
        async move {
            client
                .login(pb::LoginRequest {
                    email: format!("nobody-{i}@example.com"),
                    password: "password-123".into(),
                    client_ip: None,
                    user_agent: None,
                })
                .await
        }
    }))
    .await;
    let elapsed = started.elapsed();

    let (mut invalid, mut locked, mut unavailable) = (0, 0, 0);
    for answer in &answers {
        let status = answer.as_ref().expect_err("no unknown email logs in");
        let error = ApiError::from_status(status);
        match error.code.as_str() {
            "INVALID_CREDENTIALS" => invalid += 1,
            "TOO_MANY_ATTEMPTS" => locked += 1,
            "UNAVAILABLE" => {
                assert_eq!(
                    error.retry_after,
                    Some(Duration::from_secs(1)),
                    "a refusal for want of a hashing slot says when to retry: {status:?}"
                );
                unavailable += 1;
            }
            other => panic!("unexpected answer {other}: {status:?}"),
        }
    }
    let peak = status_kib(pid, "VmHWM");
    println!(
        "200 concurrent logins in {elapsed:?}: {invalid} INVALID_CREDENTIALS, {locked} \
         TOO_MANY_ATTEMPTS, {unavailable} UNAVAILABLE; VmHWM {before} KiB before, {peak} KiB after"
    );
    assert!(invalid > 0, "some logins were verified");
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB is not under {PEAK_RSS_LIMIT_KIB} KiB"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", process.addr("admin")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rejections = metrics
        .lines()
        .find_map(|line| line.strip_prefix("erp_auth_password_hash_rejections_total "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap();
    assert_eq!(rejections, unavailable);
    assert!(metrics.contains("erp_auth_password_hash_queue_seconds_count"));

    let status = process.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
}
