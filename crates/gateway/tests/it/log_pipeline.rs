//! The log pipeline the bundled Alloy config declares (`infrastructure/loki/config.alloy`,
//! `loki.process "json"`), run over the real services' output at the chart's log settings (JSON
//! at `info`) by `scripts/deploy-checks/alloy_pipeline.py`, which reads the stages from the
//! config and evaluates the JSON stage's expressions with jmespath (installed by
//! `scripts/test.sh` into `.erp/venv-tests`): every line gets its level label and timestamp, and
//! the trace id of a request reaches Loki's structured metadata, for Grafana's logs-to-traces link.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Platform, repository_path};

const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// What Loki would store for each of `lines` (same order).
fn through_the_pipeline(lines: &[&str]) -> Vec<Value> {
    let python = repository_path(".").join(".erp/venv-tests/bin/python");
    assert!(
        python.exists(),
        "the test tools are not installed at {}; run ./scripts/test.sh (it installs them)",
        python.display()
    );
    let input = tempfile_with(&lines.join("\n"));
    let output = Command::new(python)
        .arg(repository_path("scripts/deploy-checks/alloy_pipeline.py"))
        .arg(repository_path("infrastructure/loki/config.alloy"))
        .arg("json")
        .arg(&input)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&input);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(stored.len(), lines.len());
    stored
}

fn tempfile_with(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("erp-log-pipeline-{}.log", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_alloy_pipeline_labels_every_line_and_keeps_a_requests_trace_id() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let trace_id = platform.read_events_traced(&admin.access_token).await;
    // The gateway's access line of the request is written once the response is sent.
    erp_testkit::eventually(Duration::from_secs(5), || async {
        if platform.gateway().output().contains(&trace_id) {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;

    let outputs = [
        ("erp-gateway", platform.gateway().output()),
        ("erp-auth", platform.auth().output()),
        ("erp-event", platform.event().output()),
    ];
    for (service, output) in &outputs {
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{service} wrote no log line");
        let stored = through_the_pipeline(&lines);
        for (line, stored) in lines.iter().zip(&stored) {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("{service} wrote a line that is not JSON: {line}"));
            let level = stored["labels"]["level"].as_str().unwrap_or_default();
            assert!(
                LEVELS.contains(&level),
                "{service}: no level label for {line}: {stored}"
            );
            assert!(
                stored["timestamp"].is_string(),
                "{service}: no timestamp for {line}"
            );
            assert_eq!(
                stored["structured_metadata"]["target"], parsed["target"],
                "{service}: {line}"
            );
            // Every line that carries a trace id keeps it, as structured metadata (not a label).
            if let Some(id) = parsed["trace_id"].as_str() {
                assert_eq!(stored["structured_metadata"]["trace_id"], id, "{line}");
            }
            assert!(stored["labels"].get("trace_id").is_none(), "{stored}");
        }
        if *service == "erp-gateway" {
            let of_the_request = stored
                .iter()
                .filter(|s| s["structured_metadata"]["trace_id"] == trace_id.as_str())
                .count();
            assert!(
                of_the_request >= 1,
                "no gateway line of trace {trace_id} reaches Loki with its trace id"
            );
        }
    }
}
