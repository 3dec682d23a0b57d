//! Starts the three real service binaries on free ports against the real stores and talks to the
//! gateway over HTTP only.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;
use std::time::Duration;

use erp_testkit::{ServiceProcess, grpc_service_env, redis_url, unique_name, workspace_binary};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct Platform {
    auth: Option<ServiceProcess>,
    event: Option<ServiceProcess>,
    gateway: Option<ServiceProcess>,
    pub base: String,
    pub http: reqwest::Client,
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(gateway_env: &[(&str, &str)]) -> Self {
        Self::start_configured(&[], gateway_env).await
    }

    /// Starts with extra settings for the event service and the gateway.
    pub async fn start_configured(
        event_overrides: &[(&str, &str)],
        gateway_env: &[(&str, &str)],
    ) -> Self {
        Self::start_full(&[], event_overrides, gateway_env).await
    }

    /// Starts with `all` set for every service, plus per-service settings.
    pub async fn start_full(
        all: &[(&str, &str)],
        event_overrides: &[(&str, &str)],
        gateway_env: &[(&str, &str)],
    ) -> Self {
        let name = unique_name("e2e");
        let mut auth_env = grpc_service_env("ERP_AUTH_ADDR", &format!("{name}_auth"));
        auth_env.extend([
            ("ERP_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("ERP_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ("ERP_ARGON2_MEMORY_KIB", "1024".to_owned()),
            ("ERP_ARGON2_ITERATIONS", "1".to_owned()),
            ("ERP_REDIS_KEY_PREFIX", format!("{name}:")),
        ]);
        let mut event_env = grpc_service_env("ERP_EVENT_ADDR", &format!("{name}_event"));
        event_env.push(("ERP_REDIS_KEY_PREFIX", format!("{name}:")));
        for (key, value) in all {
            auth_env.push((key, (*value).to_owned()));
            event_env.push((key, (*value).to_owned()));
        }
        for (key, value) in event_overrides {
            event_env.retain(|(k, _)| k != key);
            event_env.push((key, (*value).to_owned()));
        }
        let event = ServiceProcess::start(&workspace_binary("erp-event"), &event_env).await;
        auth_env.push(("ERP_EVENT_URL", format!("http://{}", event.addr("grpc"))));
        let auth = ServiceProcess::start(&workspace_binary("erp-auth"), &auth_env).await;
        let mut env: Vec<(&str, String)> = vec![
            ("ERP_GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
            ("ERP_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
            ("ERP_AUTH_URL", format!("http://{}", auth.addr("grpc"))),
            ("ERP_EVENT_URL", format!("http://{}", event.addr("grpc"))),
            ("ERP_REDIS_URL", redis_url()),
            ("ERP_REDIS_KEY_PREFIX", format!("{name}:")),
            (
                "ERP_SERVICE_IDENTITY_KEY_FILE",
                erp_testkit::identity_key_file().display().to_string(),
            ),
        ];
        for (key, value) in all.iter().chain(gateway_env) {
            env.retain(|(k, _)| *k != *key);
            env.push((key, (*value).to_owned()));
        }
        let gateway =
            ServiceProcess::start(Path::new(env!("CARGO_BIN_EXE_erp-gateway")), &env).await;
        auth.wait_ready(Duration::from_secs(30)).await;
        event.wait_ready(Duration::from_secs(30)).await;
        gateway.wait_ready(Duration::from_secs(30)).await;
        let base = format!("http://{}/api/v1", gateway.addr("http"));
        Self {
            auth: Some(auth),
            event: Some(event),
            gateway: Some(gateway),
            base,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the auth service (SIGTERM) and waits for it to exit.
    pub async fn stop_auth(&mut self) {
        if let Some(auth) = self.auth.take() {
            assert!(auth.terminate(Duration::from_secs(30)).await.success());
        }
    }

    /// The Prometheus text of each service's `/metrics`, concatenated.
    pub async fn scrape_all(&self) -> String {
        let mut text = String::new();
        let processes = [
            self.auth.as_ref(),
            self.event.as_ref(),
            self.gateway.as_ref(),
        ];
        for process in processes.into_iter().flatten() {
            text.push_str(&erp_testkit::scrape(process.addr("admin")).await);
        }
        text
    }

    pub fn gateway(&self) -> &ServiceProcess {
        self.gateway.as_ref().expect("gateway running")
    }

    pub fn auth(&self) -> &ServiceProcess {
        self.auth.as_ref().expect("auth running")
    }

    pub fn event(&self) -> &ServiceProcess {
        self.event.as_ref().expect("event running")
    }

    /// Stops the gateway (SIGTERM); whether it exited cleanly.
    pub async fn stop_gateway(&mut self) -> bool {
        match self.gateway.take() {
            Some(p) => p.terminate(Duration::from_secs(30)).await.success(),
            None => true,
        }
    }

    /// Stops the event service (SIGTERM); whether it exited cleanly.
    pub async fn stop_event(&mut self) -> bool {
        match self.event.take() {
            Some(p) => p.terminate(Duration::from_secs(30)).await.success(),
            None => true,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with an optional token and JSON body; returns status and JSON body
    /// (`Value::Null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// Creates an active AUTO event (started an hour ago, for a day) with one unlimited reward;
    /// answers the event's and the reward's ids.
    pub async fn active_event_with_reward(&self, token: &str, title: &str) -> (String, String) {
        let (status, event) = self
            .call(
                Method::POST,
                "/events",
                Some(token),
                Some(json!({
                    "title": title,
                    "startsAt": iso(chrono::Duration::hours(-1)),
                    "endsAt": iso(chrono::Duration::days(1)),
                    "rewards": [{"name": "Gold", "type": "CURRENCY", "quantity": 1}],
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{event}");
        let event_id = event["id"].as_str().unwrap().to_owned();
        let (_, rewards) = self
            .call(
                Method::GET,
                &format!("/events/{event_id}/rewards"),
                Some(token),
                None,
            )
            .await;
        let reward_id = rewards["items"][0]["id"].as_str().unwrap().to_owned();
        (event_id, reward_id)
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {email}: {body}");
        Session {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            access_token: body["accessToken"].as_str().unwrap().to_owned(),
            refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn admin(&self) -> Session {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Registers a player and logs them in.
    pub async fn player(&self, email: &str) -> Session {
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/register",
                None,
                Some(json!({"email": email, "password": "player-password-1"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {email}: {body}");
        self.login(email, "player-password-1").await
    }

    /// An account with `roles`, created by the admin, logged in.
    pub async fn staff(&self, admin: &Session, email: &str, roles: &[&str]) -> Session {
        let (status, body) = self
            .call(
                Method::POST,
                "/users",
                Some(&admin.access_token),
                Some(json!({"email": email, "password": "staff-password-1", "roles": roles})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create {email}: {body}");
        self.login(email, "staff-password-1").await
    }
}

pub fn iso(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
