//! Log lines carry each key once: JSON log parsers (Loki's, Alloy's `stage.json`, jq) keep only
//! the last of duplicate keys, so a field named like one the formatter writes itself (`message`,
//! `level`, `target`, ...) would silently replace it. Real binaries, the default JSON format.

use std::time::Duration;

use reqwest::Method;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::common::Platform;

/// The top-level keys of a JSON object, in order, duplicates kept (a `Value` would merge them).
struct TopLevelKeys(Vec<String>);

impl<'de> Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = TopLevelKeys;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevelKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(TopLevelKeys(keys))
            }
        }
        deserializer.deserialize_map(KeysVisitor)
    }
}

/// The keys `line` repeats.
fn repeated_keys(line: &str) -> Vec<String> {
    let TopLevelKeys(mut keys) = serde_json::from_str(line).unwrap();
    keys.sort_unstable();
    let mut repeated: Vec<String> = keys
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0].clone())
        .collect();
    repeated.dedup();
    repeated
}

#[test]
fn repeated_keys_are_found() {
    assert_eq!(
        repeated_keys(r#"{"message":"a","level":"WARN","message":"b","x":{"message":1}}"#),
        ["message"]
    );
    assert!(repeated_keys(r#"{"message":"a","grpc_message":"b"}"#).is_empty());
}

#[tokio::test]
async fn an_upstream_failure_is_logged_with_each_key_once() {
    let mut platform = Platform::start().await;
    let admin = platform.admin().await;
    assert!(platform.stop_event().await);
    let reply = platform
        .request(Method::GET, "/events")
        .token(&admin.access_token)
        .send()
        .await;
    assert_eq!(reply.status.as_u16(), 503, "{:?}", reply.body);

    // The line that carried the upstream's status text under `message` (as well as its own).
    let gateway = platform.gateway();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gateway.output().contains("upstream call failed") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no upstream failure logged:\n{}",
            gateway.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = gateway.output();
    let mut json_lines = 0;
    for line in output.lines().filter(|line| line.starts_with('{')) {
        json_lines += 1;
        let repeated = repeated_keys(line);
        assert!(repeated.is_empty(), "{repeated:?} repeated in {line}");
    }
    assert!(json_lines > 0, "no JSON log line in:\n{output}");
}
