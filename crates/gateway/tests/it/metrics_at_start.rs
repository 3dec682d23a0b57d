//! Metrics at start: before any traffic, every series the Grafana dashboards and the alert rules
//! select by a label value (5xx statuses, gRPC server errors, lockouts, refresh reuse, denials,
//! pending claims, failed deliveries, rate-limited requests, ...) is exported, at 0, by each
//! service that owns it, so a healthy system's panels show 0 rather than "No data" and the ratio
//! alerts evaluate. The selectors are read from the dashboards and rules themselves, so a new
//! panel or rule is checked without touching this test. Real binaries ([`Platform`]).

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::common::{Platform, files_in};

/// The services, by the `job` label Prometheus gives their targets.
const GATEWAY: &str = "erp-gateway";
const AUTH: &str = "erp-auth";
const EVENT: &str = "erp-event";

/// Labels Prometheus attaches to every scraped series (from the target), never exported by the
/// services: a selector's matchers on them say which targets it reads, not which series.
const TARGET_LABELS: [&str; 4] = ["job", "namespace", "pod", "instance"];

/// Families a dashboard reads without selecting a label value, whose series only exist after
/// traffic by nature: per-id series (bounded elsewhere), per-route and per-method histograms and
/// call counters (a series per route or method called, from its first call), and outcomes every
/// request produces (an `ok`, an active token). A panel over them shows data once the service has
/// served anything; zeros for them would add many series for nothing.
const AFTER_TRAFFIC: [&str; 8] = [
    "erp_http_request_duration_seconds_bucket",
    "erp_grpc_server_request_duration_seconds_bucket",
    "erp_grpc_client_request_duration_seconds_bucket",
    "erp_grpc_client_requests_total",
    "erp_event_event_claims_total",
    "erp_event_reward_remaining",
    "erp_event_catalog_operations_total",
    "erp_auth_introspections_total",
];

/// Which services export `metric` (the families' owners, by name prefix).
fn exporters(metric: &str) -> &'static [&'static str] {
    const OWNERS: [(&str, &[&str]); 7] = [
        ("erp_auth_", &[AUTH]),
        ("erp_event_", &[EVENT]),
        ("erp_gateway_", &[GATEWAY]),
        ("erp_http_", &[GATEWAY]),
        ("erp_grpc_server_", &[AUTH, EVENT]),
        // The gateway calls auth and event; auth relays logins to event.
        ("erp_grpc_client_", &[GATEWAY, AUTH]),
        ("erp_dependency_", &[GATEWAY, AUTH, EVENT]),
    ];
    if metric.starts_with("process_") {
        return &[GATEWAY, AUTH, EVENT];
    }
    OWNERS
        .iter()
        .find(|(prefix, _)| metric.starts_with(prefix))
        .map(|(_, owners)| *owners)
        .unwrap_or_else(|| panic!("which service exports {metric}? name it in exporters()"))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Equal,
    NotEqual,
    Matches,
    NotMatches,
}

#[derive(Debug)]
struct Matcher {
    label: String,
    op: Op,
    value: String,
}

impl Matcher {
    /// Whether a label whose value is `actual` (`""` when absent) satisfies the matcher; regular
    /// expressions are anchored at both ends, as in PromQL.
    fn accepts(&self, actual: &str) -> bool {
        let regex = || Regex::new(&format!("^(?:{})$", self.value)).unwrap();
        match self.op {
            Op::Equal => actual == self.value,
            Op::NotEqual => actual != self.value,
            Op::Matches => regex().is_match(actual),
            Op::NotMatches => !regex().is_match(actual),
        }
    }

    fn is_on_target(&self) -> bool {
        TARGET_LABELS.contains(&self.label.as_str())
    }
}

/// A vector selector of a panel query or rule: `metric{matchers}`.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
    /// Where it was read (file and panel title or rule expression), for failure messages.
    origin: String,
}

impl Selector {
    /// Whether it selects series by a label value the service exports (an error, a result),
    /// not just the family.
    fn selects_a_value(&self) -> bool {
        self.matchers.iter().any(|m| !m.is_on_target())
    }

    /// Whether the target of `job` is one it reads.
    fn reads_job(&self, job: &str) -> bool {
        self.matchers
            .iter()
            .filter(|m| m.label == "job")
            .all(|m| m.accepts(job))
    }

    fn accepts(&self, series: &Series) -> bool {
        series.name == self.metric
            && self
                .matchers
                .iter()
                .filter(|m| !m.is_on_target())
                .all(|m| m.accepts(series.labels.get(&m.label).map_or("", String::as_str)))
    }
}

/// The vector selectors of the PromQL expression `expr` (the services' metrics only: `up` is
/// Prometheus's own).
fn selectors_of(expr: &str, origin: &str) -> Vec<Selector> {
    let selector = Regex::new(r"\b((?:erp|process)_[A-Za-z0-9_:]*)\s*(?:\{([^}]*)\})?").unwrap();
    let matcher =
        Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)""#).unwrap();
    selector
        .captures_iter(expr)
        .map(|found| Selector {
            metric: found[1].to_owned(),
            matchers: found.get(2).map_or_else(Vec::new, |labels| {
                matcher
                    .captures_iter(labels.as_str())
                    .map(|m| Matcher {
                        label: m[1].to_owned(),
                        op: match &m[2] {
                            "=" => Op::Equal,
                            "!=" => Op::NotEqual,
                            "=~" => Op::Matches,
                            _ => Op::NotMatches,
                        },
                        value: m[3].replace("\\\\", "\\"),
                    })
                    .collect()
            }),
            origin: origin.to_owned(),
        })
        .collect()
}

/// Every Prometheus query of the dashboards: each panel target's `expr`, Loki's (log queries,
/// which name no metric) included, as they yield no selector.
fn dashboard_selectors() -> Vec<Selector> {
    fn walk(value: &Value, file: &str, title: &str, out: &mut Vec<Selector>) {
        match value {
            Value::Object(object) => {
                let title = object.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(expr) = object.get("expr").and_then(Value::as_str) {
                    out.extend(selectors_of(expr, &format!("{file}: {title}")));
                }
                for child in object.values() {
                    walk(child, file, title, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, file, title, out);
                }
            }
            _ => {}
        }
    }
    let mut selectors = Vec::new();
    for path in files_in("infrastructure/grafana/dashboards", "json") {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        walk(&dashboard, &file, "", &mut selectors);
    }
    selectors
}

/// Every `expr` of the alert rules: one line (`expr: ...`) or a block (`expr: |` and the lines
/// indented deeper).
fn rule_selectors() -> Vec<Selector> {
    let mut selectors = Vec::new();
    for path in files_in("infrastructure/prometheus/rules", "yml") {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(rest) = line.trim_start().strip_prefix("expr:") else {
                continue;
            };
            let mut expr = rest.trim().to_owned();
            if expr == "|" || expr == ">" {
                let indent = line.len() - line.trim_start().len();
                expr.clear();
                while let Some(next) = lines
                    .next_if(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                {
                    expr.push_str(next.trim());
                    expr.push(' ');
                }
            }
            selectors.extend(selectors_of(&expr, &format!("{file}: {}", expr.trim())));
        }
    }
    selectors
}

/// One exported series.
#[derive(Debug)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The series of a text exposition.
fn parse_exposition(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let name_end = line.find(['{', ' ']).unwrap();
            let name = line[..name_end].to_owned();
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(mut inside) = rest.strip_prefix('{') {
                // label="value" pairs; values may hold any character, escaped as \" \\ \n.
                while !inside.starts_with('}') {
                    let equals = inside.find('=').unwrap();
                    let label = inside[..equals].trim_start_matches(',').to_owned();
                    let mut value = String::new();
                    let mut chars = inside[equals + 2..].char_indices();
                    let end = loop {
                        let (at, c) = chars.next().unwrap();
                        match c {
                            '\\' => match chars.next().unwrap().1 {
                                'n' => value.push('\n'),
                                escaped => value.push(escaped),
                            },
                            '"' => break equals + 2 + at + 1,
                            c => value.push(c),
                        }
                    };
                    labels.insert(label, value);
                    inside = inside[end..].trim_start_matches(',');
                }
                rest = &inside[1..];
            }
            let value = rest.split_whitespace().next().unwrap();
            Series {
                name,
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// Checks, for the service `job` just started (no traffic yet), every dashboard and rule selector
/// of a family it exports: one selecting a label value must match a series, and each it matches
/// must be 0; one selecting the whole family must match a series, unless [`AFTER_TRAFFIC`].
async fn assert_selected_series_at_zero(job: &str, admin: std::net::SocketAddr) {
    let text = erp_testkit::scrape(admin).await;
    let exported = parse_exposition(&text);
    let selectors: Vec<Selector> = dashboard_selectors()
        .into_iter()
        .chain(rule_selectors())
        .filter(|s| exporters(&s.metric).contains(&job) && s.reads_job(job))
        .collect();
    assert!(
        selectors.iter().any(Selector::selects_a_value),
        "no dashboard or rule selects a value of {job}'s metrics: were they read?"
    );
    let mut problems = Vec::new();
    for selector in &selectors {
        let matched: Vec<&Series> = exported.iter().filter(|s| selector.accepts(s)).collect();
        if selector.selects_a_value() {
            if matched.is_empty() {
                problems.push(format!("no series for {selector:?}"));
            }
            for series in matched.iter().filter(|s| s.value != 0.0) {
                problems.push(format!(
                    "{} is {} before any traffic ({})",
                    series.name, series.value, selector.origin
                ));
            }
        } else if matched.is_empty() && !AFTER_TRAFFIC.contains(&selector.metric.as_str()) {
            problems.push(format!(
                "no {} series at all ({})",
                selector.metric, selector.origin
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{job} at start:\n{}\n\nits /metrics:\n{text}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn gateway_exports_the_selected_error_series_at_zero() {
    let platform = Platform::start().await;
    assert_selected_series_at_zero(GATEWAY, platform.gateway().addr("admin")).await;
    // Each 5xx of the error table, for every route of the route table (the closed set).
    let exported = parse_exposition(&platform.gateway_metrics().await);
    let with_5xx = |status: &str| {
        exported
            .iter()
            .filter(|s| {
                s.name == "erp_http_requests_total"
                    && s.labels.get("status").map(String::as_str) == Some(status)
            })
            .count()
    };
    let routes = erp_gateway::routes::ROUTE_TABLE.len();
    assert_eq!(with_5xx("500"), routes, "one 500 series per route");
    assert_eq!(with_5xx("503"), routes, "one 503 series per route");
}

#[tokio::test]
async fn auth_exports_the_selected_error_series_at_zero() {
    let platform = Platform::start().await;
    assert_selected_series_at_zero(AUTH, platform.auth().addr("admin")).await;
}

#[tokio::test]
async fn event_exports_the_selected_error_series_at_zero() {
    let platform = Platform::start().await;
    assert_selected_series_at_zero(EVENT, platform.event().addr("admin")).await;
    // Every denial reason, so "Denials by reason" lists them all at 0.
    let exported = parse_exposition(&erp_testkit::scrape(platform.event().addr("admin")).await);
    let mut reasons: Vec<&str> = exported
        .iter()
        .filter(|s| {
            s.name == "erp_event_claims_total"
                && s.labels.get("result").map(String::as_str) == Some("denied")
        })
        .map(|s| s.labels["reason"].as_str())
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        ["CONDITIONS_NOT_MET", "EVENT_NOT_ACTIVE", "OUT_OF_STOCK"]
    );
}

#[test]
fn selectors_are_read_from_promql() {
    let found = selectors_of(
        r#"sum(rate(erp_http_requests_total{namespace=~"$namespace", status=~"5.."}[5m])) / max by (namespace) (erp_auth_outbox_backlog)"#,
        "test",
    );
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].metric, "erp_http_requests_total");
    assert_eq!(found[0].matchers.len(), 2);
    assert_eq!(found[0].matchers[1].op, Op::Matches);
    assert!(found[0].matchers[1].accepts("503"));
    assert!(!found[0].matchers[1].accepts("5030"));
    assert_eq!(found[1].metric, "erp_auth_outbox_backlog");
    assert!(found[1].matchers.is_empty());
}

#[test]
fn expositions_are_parsed() {
    let series = parse_exposition(
        "# HELP x y\nerp_http_requests_total{method=\"GET\",route=\"/api/v1/events/{id}\",status=\"5\\\"0\"} 0\nplain 1.5\n",
    );
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].labels["route"], "/api/v1/events/{id}");
    assert_eq!(series[0].labels["status"], "5\"0");
    assert_eq!(series[0].labels["method"], "GET");
    assert_eq!(series[1].value, 1.5);
}
