//! Traces end to end: with rotel (PyPI `rotel`, its `rotel-agent` binary) as the OTLP receiver,
//! one request through the gateway yields spans from gateway, auth and event sharing the trace
//! id the gateway answers in `traceparent`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::Platform;
use reqwest::StatusCode;

fn rotel_agent() -> PathBuf {
    if let Ok(path) = std::env::var("ERP_ROTEL_AGENT") {
        return PathBuf::from(path);
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.erp/venv-tests/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("site-packages/rotel/rotel-agent"))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!("rotel-agent is not installed under {}; run ./scripts/test.sh or set ERP_ROTEL_AGENT", lib.display())
        })
}

/// (service, trace id) of every span in rotel's detailed debug output.
fn spans(log: &str) -> BTreeSet<(String, String)> {
    let mut service = String::new();
    let mut found = BTreeSet::new();
    for line in log.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-> service.name: Str(") {
            service = rest.trim_end_matches(')').to_owned();
        } else if let Some(rest) = line.strip_prefix("Trace ID") {
            let id = rest.trim_start_matches([' ', ':']).trim().to_owned();
            found.insert((service.clone(), id));
        }
    }
    found
}

/// Kills the receiver however the test ends (it would otherwise outlive a failed test).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn one_request_is_one_trace_across_the_three_services() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = std::env::temp_dir().join(erp_testkit::unique_name("rotel"));
    let log = std::fs::File::create(&log_path).unwrap();
    let rotel = Command::new(rotel_agent())
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--otlp-http-endpoint", "127.0.0.1:0"])
        .args([
            "--exporter",
            "blackhole",
            "--debug-log",
            "traces",
            "--debug-log-verbosity",
            "detailed",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let rotel = KillOnDrop(rotel);
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut platform = Platform::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .start()
        .await;
    let admin = platform.admin().await;

    let response = platform
        .http
        .get(platform.url("/events"))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let traceparent = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();

    // Stopping flushes every service's exporter.
    assert!(platform.stop_gateway().await);
    platform.stop_auth().await;
    assert!(platform.stop_event().await);
    // rotel logs what it received a little later: poll its log for the three services' spans.
    let services_of = |log: &str| -> BTreeSet<String> {
        spans(log)
            .into_iter()
            .filter(|(_, id)| *id == trace_id)
            .map(|(service, _)| service)
            .collect()
    };
    let read_log = || std::fs::read_to_string(&log_path).unwrap();
    let all_three = |log: &str| services_of(log).len() == 3;
    let _ = erp_testkit::eventually(Duration::from_secs(10), || async {
        let log = read_log();
        if all_three(&log) {
            Ok(())
        } else {
            Err(services_of(&log))
        }
    })
    .await;
    drop(rotel);
    let log = read_log();
    let services = services_of(&log);
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["erp-auth", "erp-event", "erp-gateway"],
        "services with spans of trace {trace_id}; rotel saw:\n{}",
        log.lines()
            .filter(|l| l.contains("service.name") || l.contains("Trace ID"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The status is set on the gateway's span for export only (not as a log field).
    assert!(
        log.lines()
            .any(|line| line.trim() == "-> http.status: Int(200)"),
        "the gateway's span carries http.status; rotel saw:\n{}",
        log.lines()
            .filter(|l| l.contains("http."))
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::fs::remove_file(log_path).ok();
}
