//! The three real service binaries on free ports against the real stores, started by one
//! builder, and dropped (processes, then their databases and Redis keys) when the test ends.

use std::path::Path;
use std::time::Duration;

use erp_testkit::{
    ServiceProcess, TestStores, grpc_service_env, redis_url, set_env, workspace_binary,
};
use reqwest::Method;

use super::client::Request;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// The gateway binary of this crate.
pub fn gateway_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_erp-gateway"))
}

/// Settings of the gateway that switch every rate limit off (tests that send many requests and
/// test no limit).
pub const NO_RATE_LIMITS: [(&str, &str); 3] = [
    ("ERP_RATE_LIMIT_PER_MINUTE", "0"),
    ("ERP_AUTH_RATE_LIMIT_PER_MINUTE", "0"),
    ("ERP_AUTH_FAILURES_PER_MINUTE", "0"),
];

type Env = Vec<(String, String)>;

/// Settings for [`Platform`]: `env` for every service, `*_env` for one (later settings win).
#[derive(Default)]
pub struct PlatformBuilder {
    all: Env,
    auth: Env,
    event: Env,
    gateway: Env,
    bootstrap_admin: bool,
}

impl PlatformBuilder {
    /// A setting of every service (e.g. the store URLs).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        set_env(&mut self.all, key, value);
        self
    }

    pub fn auth_env(mut self, key: &str, value: &str) -> Self {
        set_env(&mut self.auth, key, value);
        self
    }

    pub fn event_env(mut self, key: &str, value: &str) -> Self {
        set_env(&mut self.event, key, value);
        self
    }

    pub fn gateway_env(mut self, key: &str, value: &str) -> Self {
        set_env(&mut self.gateway, key, value);
        self
    }

    /// Several gateway settings at once (e.g. [`NO_RATE_LIMITS`]).
    pub fn gateway_envs(self, settings: &[(&str, &str)]) -> Self {
        settings.iter().fold(self, |builder, (key, value)| {
            builder.gateway_env(key, value)
        })
    }

    /// The event service pushes deliveries to `url` (settings of
    /// [`super::receiver::webhook_env`]).
    pub fn pushing_deliveries_to(self, url: &str) -> Self {
        super::receiver::webhook_env(url)
            .into_iter()
            .fold(self, |builder, (key, value)| builder.event_env(key, &value))
    }

    /// No bootstrap admin (`ERP_BOOTSTRAP_ADMIN_*` unset).
    pub fn without_admin(mut self) -> Self {
        self.bootstrap_admin = false;
        self
    }

    /// Starts event, then auth (which relays logins to event), then the gateway, and waits until
    /// all three are ready.
    pub async fn start(self) -> Platform {
        let stores = TestStores::new("e2e");
        let with = |mut env: Env, own: &Env| {
            for (key, value) in self.all.iter().chain(own) {
                set_env(&mut env, key, value);
            }
            env
        };
        let owned = |env: Vec<(&'static str, String)>| -> Env {
            env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        };
        let prefix = stores.redis_prefix();

        let mut event_env = owned(grpc_service_env(
            "ERP_EVENT_ADDR",
            &stores.database("event"),
        ));
        set_env(&mut event_env, "ERP_REDIS_KEY_PREFIX", &prefix);
        let event = start(
            &workspace_binary("erp-event"),
            &with(event_env, &self.event),
        )
        .await;

        let mut auth_env = owned(grpc_service_env("ERP_AUTH_ADDR", &stores.database("auth")));
        set_env(&mut auth_env, "ERP_REDIS_KEY_PREFIX", &prefix);
        set_env(&mut auth_env, "ERP_ARGON2_MEMORY_KIB", "1024");
        set_env(&mut auth_env, "ERP_ARGON2_ITERATIONS", "1");
        set_env(
            &mut auth_env,
            "ERP_EVENT_URL",
            &format!("http://{}", event.addr("grpc")),
        );
        if self.bootstrap_admin {
            set_env(&mut auth_env, "ERP_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL);
            set_env(
                &mut auth_env,
                "ERP_BOOTSTRAP_ADMIN_PASSWORD",
                ADMIN_PASSWORD,
            );
        }
        let auth = start(&workspace_binary("erp-auth"), &with(auth_env, &self.auth)).await;

        let gateway_env = with(
            gateway_env(
                &format!("http://{}", auth.addr("grpc")),
                &format!("http://{}", event.addr("grpc")),
                &prefix,
            ),
            &self.gateway,
        );
        let gateway = start(gateway_binary(), &gateway_env).await;
        for process in [&auth, &event, &gateway] {
            process.wait_ready(Duration::from_secs(30)).await;
        }
        Platform {
            base: format!("http://{}/api/v1", gateway.addr("http")),
            gateway: Some(gateway),
            auth: Some(auth),
            event: Some(event),
            gateway_env,
            http: reqwest::Client::new(),
            stores,
        }
    }
}

/// The gateway's settings in front of `auth_url` and `event_url`.
fn gateway_env(auth_url: &str, event_url: &str, redis_prefix: &str) -> Env {
    [
        ("ERP_GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("ERP_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
        ("ERP_AUTH_URL", auth_url.to_owned()),
        ("ERP_EVENT_URL", event_url.to_owned()),
        ("ERP_REDIS_URL", redis_url()),
        ("ERP_REDIS_KEY_PREFIX", redis_prefix.to_owned()),
        (
            "ERP_SERVICE_IDENTITY_KEY_FILE",
            erp_testkit::identity_key_file().display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn start(binary: &Path, env: &Env) -> ServiceProcess {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    ServiceProcess::start(binary, &env).await
}

/// auth, event and the gateway, running. The processes stop (SIGKILL) and the test's databases
/// and Redis keys are dropped when it is dropped.
pub struct Platform {
    // Fields drop in this order: the processes first, then what they wrote.
    gateway: Option<ServiceProcess>,
    auth: Option<ServiceProcess>,
    event: Option<ServiceProcess>,
    gateway_env: Env,
    /// `http://<gateway>/api/v1`.
    pub base: String,
    pub http: reqwest::Client,
    stores: TestStores,
}

impl Platform {
    pub fn builder() -> PlatformBuilder {
        PlatformBuilder {
            bootstrap_admin: true,
            ..PlatformBuilder::default()
        }
    }

    /// The platform with default settings and a bootstrap admin.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// The databases and Redis prefix of this platform (dropped with it); a test's own further
    /// processes take theirs from here too.
    pub fn stores(&self) -> &TestStores {
        &self.stores
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

    /// `http://<gateway>` (without `/api/v1`).
    pub fn root(&self) -> String {
        format!("http://{}", self.gateway().addr("http"))
    }

    /// Another gateway replica like this platform's (same stores and prefix) with `overrides`,
    /// e.g. another `ERP_EVENT_URL`; ready.
    pub async fn another_gateway(&self, overrides: &[(&str, &str)]) -> ServiceProcess {
        let mut env = self.gateway_env.clone();
        for (key, value) in overrides {
            set_env(&mut env, key, value);
        }
        let gateway = start(gateway_binary(), &env).await;
        gateway.wait_ready(Duration::from_secs(30)).await;
        gateway
    }

    /// Stops the auth service (SIGTERM) and asserts it exited cleanly.
    pub async fn stop_auth(&mut self) {
        if let Some(auth) = self.auth.take() {
            assert!(auth.terminate(Duration::from_secs(30)).await.success());
        }
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

    /// The Prometheus text of each running service's `/metrics`, concatenated.
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

    /// `GET /events` as `token`, asserted 200; the id of the trace it was answered in.
    pub async fn read_events_traced(&self, token: &str) -> String {
        let response = self
            .http
            .get(self.url("/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        trace_id_of(&response)
    }

    /// The gateway's `/metrics`.
    pub async fn gateway_metrics(&self) -> String {
        erp_testkit::scrape(self.gateway().addr("admin")).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` under `/api/v1`, sent with [`Request::send`].
    pub fn request(&self, method: Method, path: &str) -> Request {
        Request::new(self.http.request(method, self.url(path)))
    }
}

/// The trace id of the `traceparent` the gateway answered `response` with.
pub fn trace_id_of(response: &reqwest::Response) -> String {
    let traceparent = response.headers()["traceparent"].to_str().unwrap();
    traceparent.split('-').nth(1).unwrap().to_owned()
}
