//! Test support for the platform's crates. Tests use the real stores started by
//! `scripts/stores.sh` (the test command runs it), each test in databases and a Redis key prefix
//! of its own ([`TestStores`], which drops them when the test ends).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod metrics;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod service;
pub mod stores;
pub mod wait;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use metrics::{sample, scrape};
pub use process::{
    ServiceProcess, assert_refuses_bad_config, assert_serves_and_stops_on_sigterm,
    grpc_service_env, set_env, workspace_binary,
};
pub use proxy::TcpProxy;
pub use redis::PrivateRedis;
pub use service::InProcessService;
pub use stores::TestStores;
pub use wait::{eventually, eventually_every, fresh_minute_window, minute_left};

/// The service-identity key every test instance signs and verifies caller assertions with.
pub const IDENTITY_KEY: &[u8] = b"erp-test-identity-key-0123456789abcdef";

/// A file holding [`IDENTITY_KEY`] (`ERP_SERVICE_IDENTITY_KEY_FILE` of test instances).
pub fn identity_key_file() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("erp-test-identity-{}.key", std::process::id()));
        std::fs::write(&path, IDENTITY_KEY).expect("write the test identity key");
        path
    })
    .clone()
}

/// `ERP_MONGODB_URI`, or the local test store.
pub fn mongodb_uri() -> String {
    non_empty_env("ERP_MONGODB_URI").unwrap_or_else(|| "mongodb://127.0.0.1:27017".to_owned())
}

/// `ERP_REDIS_URL`, or the local test store.
pub fn redis_url() -> String {
    non_empty_env("ERP_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A name no other test (in this or a concurrent test process) uses: for a database, a Redis key
/// prefix, an email. At most 40 characters for a short prefix.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{}_{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `url` until it answers 200, or panics after `timeout` with the last answer.
pub async fn wait_for_200(url: &str, timeout: Duration) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        match client.get(url).timeout(Duration::from_secs(3)).send().await {
            Ok(response) if response.status() == 200 => return,
            Ok(response) => {
                last = format!(
                    "{}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer 200 within {timeout:?}; last: {last}");
}
