//! A real Prometheus over the real services: Debian's `prometheus` scrapes the three running
//! binaries ([`Platform`]) every second through file-based targets carrying the job labels of
//! `infrastructure/prometheus/local-targets.yml`, and loads the project's alert rules. After
//! bounded traffic over the routes (successes and each kind of error), every PromQL query of the
//! Grafana dashboards, with the dashboards' variables substituted, must return data; every rule
//! group must load and every rule evaluate without error; and stopping a service must make
//! `ErpServiceDown` pending (the `up == 0` rule while its target stays, the `absent()` twin once
//! its target is gone).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::receiver::Receiver;
use crate::common::{Platform, event_body, files_in, gold, iso, repository_path};

/// Grafana's built-in interval variables, as the test substitutes them. `$__rate_interval` is at
/// least four scrape intervals in Grafana; a minute covers the whole test at a 1 s scrape.
const BUILT_IN_VARIABLES: [(&str, &str); 3] = [
    ("__rate_interval", "1m"),
    ("__interval", "1s"),
    ("__range", "1h"),
];

/// The gateway's stricter limit of `/auth/login` and `/auth/register` per client IP, low enough
/// that the traffic ends with a 429 after a few more logins.
const AUTH_RATE_LIMIT_PER_MINUTE: u32 = 20;

/// How long Prometheus may take to become ready, to scrape after the traffic, and to evaluate
/// the rules (a 1 s scrape and evaluation interval; generous for a loaded 2-core machine).
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(20);

/// Debian's `prometheus` on the PATH. No skip: the test command installs it
/// (scripts/check-deploy.sh, run by scripts/test.sh before the tests).
fn prometheus_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no `prometheus` binary on the PATH: install Debian's package \
                 (`apt-get install prometheus`; scripts/test.sh does it through \
                 scripts/check-deploy.sh)"
            )
        })
}

/// The job label of each target of `infrastructure/prometheus/local-targets.yml`, the labels the
/// dashboards and rules select (`- targets: [...]` then `labels:` / `job: <name>`).
fn documented_jobs() -> Vec<String> {
    let text = std::fs::read_to_string(repository_path(
        "infrastructure/prometheus/local-targets.yml",
    ))
    .unwrap();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("job:"))
        .map(|job| job.trim().trim_matches('"').to_owned())
        .collect()
}

/// A Prometheus process on a free loopback port with its own storage, stopped and its directory
/// removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    base: String,
    targets_file: PathBuf,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Starts it scraping `targets` (job label, admin address) every second and evaluating the
    /// project's rules every second; ready.
    async fn start(targets: &[(&str, SocketAddr)]) -> Self {
        let binary = prometheus_binary();
        let dir = std::env::temp_dir().join(erp_testkit::unique_name("erp-prometheus"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let targets_file = dir.join("targets.json");
        write_targets(&targets_file, targets);
        let rules = repository_path("infrastructure/prometheus/rules").join("*.yml");
        // The erp-local job of infrastructure/prometheus/prometheus.yml, with this test's targets
        // file and intervals (JSON is YAML).
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [{
                "job_name": "erp-local",
                "sample_limit": 20000,
                "label_limit": 30,
                "file_sd_configs": [{"files": [targets_file], "refresh_interval": "1s"}],
            }],
        });
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let log_file = dir.join("prometheus.log");
        let http = reqwest::Client::new();
        // The free port is found by binding and releasing it, so another process may take it
        // first: then Prometheus exits at once, and it is started again on another.
        let mut attempts_left = 3;
        loop {
            attempts_left -= 1;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(&log_file).unwrap();
            let mut child = Command::new(&binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let base = format!("http://127.0.0.1:{port}");
            match wait_ready(&http, &base, &mut child).await {
                Ok(()) => {
                    return Self {
                        child,
                        dir,
                        base,
                        targets_file,
                        http,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
                    if attempts_left == 0 || !log.contains("address already in use") {
                        let _ = std::fs::remove_dir_all(&dir);
                        panic!("prometheus {why}:\n{log}");
                    }
                }
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Replaces the scraped targets (file-based discovery reloads the file).
    fn set_targets(&self, targets: &[(&str, SocketAddr)]) {
        write_targets(&self.targets_file, targets);
    }

    /// `GET /api/v1/<path>?<params>`: the `data` of a successful answer.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let response = self
            .http
            .get(format!("{}/api/v1/{path}?{query}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// The result of an instant query now.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", promql)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Waits until the Prometheus at `base` answers `/-/ready`; why not otherwise (it exited, or
/// was not ready within [`PROMETHEUS_DEADLINE`]).
async fn wait_ready(http: &reqwest::Client, base: &str, child: &mut Child) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("exited ({status})"));
        }
        let ready = http
            .get(format!("{base}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ready {
            return Ok(());
        }
        if started.elapsed() >= PROMETHEUS_DEADLINE {
            return Err(format!("not ready within {PROMETHEUS_DEADLINE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes a file_sd targets file: one group per target with its job label.
fn write_targets(file: &Path, targets: &[(&str, SocketAddr)]) {
    let groups: Vec<Value> = targets
        .iter()
        .map(|(job, addr)| json!({"targets": [addr.to_string()], "labels": {"job": job}}))
        .collect();
    // Written beside and renamed, so discovery never reads half a file.
    let partial = file.with_extension("json.partial");
    std::fs::write(&partial, Value::Array(groups).to_string()).unwrap();
    std::fs::rename(&partial, file).unwrap();
}

/// One PromQL query of a dashboard panel.
#[derive(Debug)]
struct PanelQuery {
    /// `<file>: <panel title>`.
    origin: String,
    expr: String,
}

/// The dashboards' queries with their variables substituted: PromQL ones to check, and how many
/// log or trace queries (not PromQL) were left out.
fn dashboard_queries() -> (Vec<PanelQuery>, usize) {
    let mut queries = Vec::new();
    let mut not_promql = 0;
    for path in files_in("infrastructure/grafana/dashboards", "json") {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let variables = variable_values(&dashboard, &file);
        let mut found = Vec::new();
        collect_targets(&dashboard, "", None, &mut found);
        for (title, datasource, expr) in found {
            let origin = format!("{file}: {title}");
            match datasource.as_str() {
                "prometheus" => queries.push(PanelQuery {
                    expr: substitute(&expr, &variables, &origin),
                    origin,
                }),
                "loki" | "tempo" => not_promql += 1,
                other => panic!("{origin}: a query of datasource type {other:?}: {expr}"),
            }
        }
    }
    (queries, not_promql)
}

/// What each variable of a dashboard's `templating` stands for in the test: "All" (the
/// variable's `allValue`) for a query or custom variable, the current text of a textbox, and
/// Grafana's interval built-ins. Datasource variables only name datasources (not in queries).
fn variable_values(dashboard: &Value, file: &str) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = BUILT_IN_VARIABLES
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let list = dashboard["templating"]["list"].as_array().cloned();
    for variable in list.unwrap_or_default() {
        let name = variable["name"].as_str().unwrap().to_owned();
        let value = match variable["type"].as_str() {
            Some("datasource") => continue,
            Some("query" | "custom") => {
                assert_eq!(
                    variable["includeAll"], true,
                    "{file}: variable {name} has no All"
                );
                variable["allValue"].as_str().unwrap_or(".*").to_owned()
            }
            Some("textbox" | "constant") => variable["current"]["value"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            other => panic!("{file}: variable {name} of type {other:?}: how to substitute it?"),
        };
        values.insert(name, value);
    }
    values
}

/// Replaces `$name` and `${name}` by the variables' values; panics on a variable left over.
fn substitute(expr: &str, variables: &BTreeMap<String, String>, origin: &str) -> String {
    let mut out = expr.to_owned();
    // Longest names first, so `$__rate_interval` is not read as `$__rate...` of a shorter one.
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort_by_key(|name| std::cmp::Reverse(name.len()));
    for name in names {
        let value = &variables[name];
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(
        !out.contains('$'),
        "{origin}: a variable the test does not know in {expr}"
    );
    out
}

/// Every panel target with an `expr`: (panel title, datasource type, expression). A target
/// without a datasource of its own uses its panel's.
fn collect_targets(
    value: &Value,
    title: &str,
    datasource: Option<&str>,
    out: &mut Vec<(String, String, String)>,
) {
    match value {
        Value::Object(object) => {
            let title = object.get("title").and_then(Value::as_str).unwrap_or(title);
            let datasource = object
                .get("datasource")
                .and_then(|d| d["type"].as_str())
                .or(datasource);
            if let Some(expr) = object.get("expr").and_then(Value::as_str) {
                let datasource = datasource
                    .unwrap_or_else(|| panic!("{title}: a query without a datasource: {expr}"));
                out.push((title.to_owned(), datasource.to_owned(), expr.to_owned()));
            }
            for (key, child) in object {
                // The templating's variable queries are not panels.
                if key != "templating" {
                    collect_targets(child, title, datasource, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_targets(item, title, datasource, out);
            }
        }
        _ => {}
    }
}

/// The rule groups and alert names the rule files declare (`- name:` and `- alert:` lines).
fn declared_rules() -> (BTreeSet<String>, Vec<String>) {
    let mut groups = BTreeSet::new();
    let mut alerts = Vec::new();
    for path in files_in("infrastructure/prometheus/rules", "yml") {
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("- name:") {
                groups.insert(name.trim().to_owned());
            } else if let Some(alert) = line.strip_prefix("- alert:") {
                alerts.push(alert.trim().to_owned());
            }
        }
    }
    assert!(!alerts.is_empty(), "no alert rule read");
    (groups, alerts)
}

/// Bounded traffic over the routes: successes and each kind of error (401, 403, 404, 400, 409,
/// 422 denials, 429 from a lockout and from a rate limit), a granted and a denied claim, failed
/// logins, a refresh, progress from a game server, a pushed delivery. Each answer is asserted,
/// so a change of behaviour shows here rather than as a silently missing series.
async fn drive_traffic(platform: &Platform, receiver: &Receiver) {
    let admin = platform.admin().await;
    let operator = platform
        .staff(&admin, "live-op@example.com", &["OPERATOR"])
        .await;
    let player = platform.player("live-player@example.com").await;

    // A refresh, and a failed login.
    let (status, refreshed) = platform
        .refresh(&Value::String(player.refresh_token.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let (status, body) = platform
        .try_login("live-player@example.com", "wrong-password-1")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // 401, 403, 404, 400, 409.
    let (status, body) = platform.call(Method::GET, "/auth/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = platform.get("/users", &player.access_token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = platform
        .get(
            "/events/00000000-0000-0000-0000-000000000000",
            &admin.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = platform
        .call(
            Method::POST,
            "/events",
            Some(&operator.access_token),
            Some(json!({"title": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = platform
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({"email": "live-player@example.com", "password": "player-password-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Reads that succeed.
    for path in ["/auth/me", "/events", "/claims/me"] {
        let (status, body) = platform.get(path, &player.access_token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, body) = platform.get("/dashboard", &operator.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A granted claim of a limited reward (a stock gauge, a delivery pushed to the receiver),
    // then the same claim again (409).
    let event = platform
        .create_event(
            &operator.access_token,
            event_body(
                "Live stock",
                chrono::Duration::days(1),
                json!({"rewards": [{"name": "Gold", "type": "CURRENCY", "quantity": 1, "stock": 10}]}),
            ),
        )
        .await;
    let event_id = event["id"].as_str().unwrap();
    let claim = platform.claim(&player.access_token, event_id).await;
    let (status, body) = platform
        .post(&format!("/events/{event_id}/claims"), &player.access_token)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = platform
        .get(
            &format!("/claims/{}", claim["id"].as_str().unwrap()),
            &player.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Denied claims: an event not started yet, and a condition not met.
    let upcoming = platform
        .create_event(
            &operator.access_token,
            json!({
                "title": "Live upcoming",
                "startsAt": iso(chrono::Duration::hours(1)),
                "endsAt": iso(chrono::Duration::days(1)),
                "rewards": gold(),
            }),
        )
        .await;
    let (status, body) = platform
        .post(
            &format!("/events/{}/claims", upcoming["id"].as_str().unwrap()),
            &player.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let conditional = platform
        .create_event(
            &operator.access_token,
            event_body(
                "Live condition",
                chrono::Duration::days(1),
                json!({
                    "rewards": gold(),
                    "condition": {"metric": "dungeon_clears", "op": "GTE", "value": 3},
                }),
            ),
        )
        .await;
    let conditional_id = conditional["id"].as_str().unwrap();
    let (status, body) = platform
        .post(
            &format!("/events/{conditional_id}/claims"),
            &player.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Progress from a game server.
    let (server, _) = platform.game_server(&admin, "live-server").await;
    let (status, body) = platform
        .call(
            Method::POST,
            "/progress",
            Some(&server.access_token),
            Some(json!({"items": [
                {"userId": player.id, "metric": "dungeon_clears", "value": 1, "mode": "INCREMENT"},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The granted claim's delivery reaches the receiver.
    let delivery_id = claim["delivery"]["id"].as_str().unwrap();
    platform
        .delivery_becomes(&operator.access_token, delivery_id, "DELIVERED")
        .await;
    assert!(
        !receiver.pushes_of(delivery_id).is_empty(),
        "the delivery was pushed"
    );

    // Failed logins until the account is locked out (auth's 429 TOO_MANY_ATTEMPTS), then past
    // the gateway's per-IP limit of /auth/login and /auth/register (its 429 RATE_LIMITED);
    // bounded: the limit twice over, should a minute window end on the way.
    let mut codes = BTreeSet::new();
    for _ in 0..2 * AUTH_RATE_LIMIT_PER_MINUTE {
        let (status, body) = platform
            .try_login("live-player@example.com", "wrong-password-1")
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            codes.insert(body["code"].as_str().unwrap_or_default().to_owned());
            if body["code"] == "RATE_LIMITED" {
                break;
            }
        }
    }
    assert_eq!(
        codes,
        BTreeSet::from(["RATE_LIMITED".to_owned(), "TOO_MANY_ATTEMPTS".to_owned()]),
        "a lockout, then the gateway's limit"
    );
}

/// Waits until Prometheus has scraped every target (all up) after `after` (a Unix time in
/// seconds), so the traffic's counts are in.
async fn wait_scraped_after(prometheus: &Prometheus, jobs: usize, after: f64) {
    erp_testkit::eventually(PROMETHEUS_DEADLINE, || async {
        let data = prometheus.api("targets", &[("state", "active")]).await?;
        let targets = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let fresh = targets
            .iter()
            .filter(|t| t["health"] == "up")
            .filter(|t| {
                t["lastScrape"]
                    .as_str()
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .is_some_and(|at| at.timestamp_millis() as f64 / 1000.0 > after)
            })
            .count();
        if fresh == jobs {
            Ok(())
        } else {
            Err(format!(
                "{fresh} of {jobs} targets scraped since: {targets:?}"
            ))
        }
    })
    .await;
}

/// The queries (with their panels) that return nothing; polled until none or the deadline, as
/// a series scraped once more after the traffic may be needed for a rate.
async fn empty_panel_queries(prometheus: &Prometheus, queries: &[PanelQuery]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + PROMETHEUS_DEADLINE;
    loop {
        let mut empty = Vec::new();
        for query in queries {
            match prometheus.query(&query.expr).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => empty.push(format!("{}: no data from {}", query.origin, query.expr)),
                Err(error) => empty.push(format!("{}: {error} in {}", query.origin, query.expr)),
            }
        }
        if empty.is_empty() || tokio::time::Instant::now() >= deadline {
            return empty;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the traffic of [`drive_traffic`] must have counted, as Prometheus sees it: the panels
/// show the traffic, not only the zeros every service exports at start.
const COUNTED_BY_THE_TRAFFIC: [&str; 19] = [
    r#"sum(erp_http_requests_total{status=~"2.."})"#,
    r#"sum(erp_http_requests_total{status="400"})"#,
    r#"sum(erp_http_requests_total{status="401"})"#,
    r#"sum(erp_http_requests_total{status="403"})"#,
    r#"sum(erp_http_requests_total{status="404"})"#,
    r#"sum(erp_http_requests_total{status="409"})"#,
    r#"sum(erp_http_requests_total{status="422"})"#,
    r#"sum(erp_http_requests_total{status="429"})"#,
    "sum(erp_gateway_rate_limited_total)",
    r#"sum(erp_event_claims_total{result="granted"})"#,
    r#"sum(erp_event_claims_total{result="denied", reason="EVENT_NOT_ACTIVE"})"#,
    r#"sum(erp_event_claims_total{result="denied", reason="CONDITIONS_NOT_MET"})"#,
    r#"sum(erp_auth_logins_total{result="success"})"#,
    r#"sum(erp_auth_logins_total{result="invalid_credentials"})"#,
    r#"sum(erp_auth_logins_total{result="locked_out"})"#,
    r#"sum(erp_auth_refreshes_total{result="success"})"#,
    r#"sum(erp_event_progress_items_total{result="accepted"})"#,
    r#"sum(erp_event_deliveries_total{outcome="delivered"})"#,
    r#"sum(erp_event_delivery_attempt_seconds_count)"#,
];

/// The [`COUNTED_BY_THE_TRAFFIC`] sums that are not above 0 in Prometheus (as panel queries of
/// [`empty_panel_queries`], so polled the same way).
async fn uncounted_traffic(prometheus: &Prometheus) -> Vec<String> {
    let checks: Vec<PanelQuery> = COUNTED_BY_THE_TRAFFIC
        .iter()
        .map(|sum| PanelQuery {
            origin: "counted by the traffic".to_owned(),
            expr: format!("{sum} > 0"),
        })
        .collect();
    empty_panel_queries(prometheus, &checks).await
}

/// Waits until every rule has been evaluated at least once; then each group and rule as
/// Prometheus reports them.
async fn evaluated_rules(prometheus: &Prometheus) -> Vec<Value> {
    erp_testkit::eventually(PROMETHEUS_DEADLINE, || async {
        let data = prometheus.api("rules", &[]).await?;
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        let never = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|rule| !was_evaluated(rule))
            .count();
        if !groups.is_empty() && never == 0 {
            Ok(groups)
        } else {
            Err(format!("{never} rules not evaluated yet: {groups:?}"))
        }
    })
    .await
    .0
}

/// Whether `rule` (or group) reports an evaluation (Prometheus gives the zero time before one).
fn was_evaluated(rule: &Value) -> bool {
    rule["lastEvaluation"]
        .as_str()
        .is_some_and(|at| !at.starts_with("0001-"))
}

/// Waits until an `ErpServiceDown` alert for `job` whose labels include `labels` is pending or
/// firing; the alert.
async fn service_down_alert(prometheus: &Prometheus, job: &str, labels: &[(&str, &str)]) -> Value {
    erp_testkit::eventually(PROMETHEUS_DEADLINE, || async {
        let data = prometheus.api("alerts", &[]).await?;
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        alerts
            .iter()
            .find(|alert| {
                alert["labels"]["alertname"] == "ErpServiceDown"
                    && alert["labels"]["job"] == job
                    && labels.iter().all(|(k, v)| alert["labels"][*k] == *v)
                    && (alert["state"] == "pending" || alert["state"] == "firing")
            })
            .cloned()
            .ok_or_else(|| format!("no ErpServiceDown for {job} {labels:?} in {alerts:?}"))
    })
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alert_rules_work_against_a_real_prometheus() {
    let receiver = Receiver::start().await;
    let mut platform = Platform::builder()
        .pushing_deliveries_to(&receiver.url())
        // The background jobs run every second, so their panel has runs to show.
        .event_env("ERP_JOBS_INTERVAL_SECS", "1")
        .gateway_env(
            "ERP_AUTH_RATE_LIMIT_PER_MINUTE",
            &AUTH_RATE_LIMIT_PER_MINUTE.to_string(),
        )
        .start()
        .await;

    // The documented targets' jobs, at this platform's admin addresses.
    let jobs = documented_jobs();
    let admin_of = |job: &str| match job {
        "erp-gateway" => platform.gateway().addr("admin"),
        "erp-auth" => platform.auth().addr("admin"),
        "erp-event" => platform.event().addr("admin"),
        other => panic!("local-targets.yml names a job {other} the test does not know"),
    };
    let targets: Vec<(&str, SocketAddr)> = jobs.iter().map(|j| (j.as_str(), admin_of(j))).collect();
    assert_eq!(
        targets.len(),
        3,
        "three jobs in local-targets.yml: {jobs:?}"
    );
    let prometheus = Prometheus::start(&targets).await;

    drive_traffic(&platform, &receiver).await;
    let traffic_done = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    wait_scraped_after(&prometheus, targets.len(), traffic_done).await;

    // The traffic is in: each kind of answer and outcome counted.
    let uncounted = uncounted_traffic(&prometheus).await;
    assert!(
        uncounted.is_empty(),
        "the traffic, scraped, is not counted:\n{}",
        uncounted.join("\n")
    );

    // Every PromQL panel query returns data.
    let (queries, not_promql) = dashboard_queries();
    assert!(
        queries.len() >= 50,
        "only {} PromQL queries read from the dashboards",
        queries.len()
    );
    let empty = empty_panel_queries(&prometheus, &queries).await;
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries return nothing after the traffic:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
    println!(
        "{} PromQL panel queries return data ({not_promql} log queries not PromQL)",
        queries.len()
    );

    // Every rule group loaded; every rule evaluated, without error.
    let groups = evaluated_rules(&prometheus).await;
    let (declared_groups, declared_alerts) = declared_rules();
    let loaded_groups: BTreeSet<String> = groups
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(loaded_groups, declared_groups, "rule groups loaded");
    let rules: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let mut loaded_alerts: Vec<String> = rules
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    let mut declared_alerts = declared_alerts;
    loaded_alerts.sort();
    declared_alerts.sort();
    assert_eq!(loaded_alerts, declared_alerts, "alert rules loaded");
    let unhealthy: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| {
            format!(
                "{}: {} {} ({})",
                r["name"], r["health"], r["lastError"], r["query"]
            )
        })
        .collect();
    assert!(
        unhealthy.is_empty(),
        "rules not evaluated cleanly:\n{}\n\nprometheus's log:\n{}",
        unhealthy.join("\n"),
        prometheus.log()
    );
    // A healthy platform fires nothing that says a service is down.
    let alerts = prometheus.api("alerts", &[]).await.unwrap()["alerts"].clone();
    assert!(
        !alerts.to_string().contains("ErpServiceDown"),
        "ErpServiceDown on a healthy platform: {alerts}"
    );
    println!(
        "{} rule groups, {} rules loaded and evaluated without error",
        groups.len(),
        rules.len()
    );

    // The event service stops: its target is down, and ErpServiceDown (up == 0) goes pending.
    let event_admin = admin_of("erp-event");
    assert!(platform.stop_event().await, "event exited cleanly");
    let alert = service_down_alert(&prometheus, "erp-event", &[]).await;
    assert!(
        alert["labels"].get("cause").is_none(),
        "the up == 0 rule, not the absent() twin: {alert}"
    );

    // Its target gone altogether (no pod left): the absent() twin goes pending.
    let remaining: Vec<(&str, SocketAddr)> = targets
        .iter()
        .copied()
        .filter(|(_, addr)| *addr != event_admin)
        .collect();
    prometheus.set_targets(&remaining);
    service_down_alert(&prometheus, "erp-event", &[("cause", "no-target")]).await;
}
