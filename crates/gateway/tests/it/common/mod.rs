//! What the end-to-end tests share: [`Platform`] (the three real binaries, started by a builder),
//! requests and answers ([`Reply`], with the problem+json assertions), sessions and fixtures.

#![allow(dead_code)]

mod client;
mod platform;
pub mod receiver;
mod repository;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub use client::{Reply, Request, assert_problem};
pub use platform::{
    ADMIN_EMAIL, ADMIN_PASSWORD, NO_RATE_LIMITS, Platform, gateway_binary, trace_id_of,
};
pub use repository::{files_in, repository_path};

pub const PLAYER_PASSWORD: &str = "player-password-1";
pub const STAFF_PASSWORD: &str = "staff-password-1";

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// A service account's credentials, as created.
#[derive(Debug, Clone)]
pub struct GameServerAccount {
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
}

/// An RFC 3339 time `offset` from now, to the second.
pub fn iso(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An event running from an hour ago for `length`, with the optional extras in `extra` merged
/// in (e.g. `{"claimPolicy": "MANUAL", "rewards": [...]}`).
pub fn event_body(title: &str, length: chrono::Duration, extra: Value) -> Value {
    let mut body = json!({
        "title": title,
        "startsAt": iso(chrono::Duration::hours(-1)),
        "endsAt": iso(length),
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

/// One unlimited currency reward.
pub fn gold() -> Value {
    json!([{"name": "Gold", "type": "CURRENCY", "quantity": 1}])
}

impl Platform {
    /// Sends `method path` with an optional token and JSON body; the status and JSON body
    /// (`Value::Null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path).maybe_token(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await;
        (reply.status, reply.body)
    }

    /// `POST /auth/refresh` with `refresh_token` in the body: status and body.
    pub async fn refresh(&self, refresh_token: &Value) -> (StatusCode, Value) {
        let body = json!({"refreshToken": refresh_token});
        self.call(Method::POST, "/auth/refresh", None, Some(body))
            .await
    }

    /// `POST /auth/login` that may fail: status and body (see [`Self::login`] for a session).
    pub async fn try_login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        let body = json!({"email": email, "password": password});
        self.call(Method::POST, "/auth/login", None, Some(body))
            .await
    }

    /// `GET path` as `token`: the status and JSON body.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// `method path` as `token` with an optional JSON body: the whole [`Reply`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.request(method, path).maybe_token(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await
    }

    /// Creates an event as `token` (asserting 201); the created event.
    pub async fn create_event(&self, token: &str, body: Value) -> Value {
        let reply = self
            .send(Method::POST, "/events", Some(token), Some(body))
            .await;
        reply.expect(StatusCode::CREATED).clone()
    }

    /// Creates an active AUTO event (started an hour ago, for a day) with one unlimited reward;
    /// answers the event's and the reward's ids.
    pub async fn active_event_with_reward(&self, token: &str, title: &str) -> (String, String) {
        let event = self
            .create_event(
                token,
                event_body(title, chrono::Duration::days(1), json!({"rewards": gold()})),
            )
            .await;
        let event_id = event["id"].as_str().unwrap().to_owned();
        let rewards = self
            .send(
                Method::GET,
                &format!("/events/{event_id}/rewards"),
                Some(token),
                None,
            )
            .await;
        let reward_id = rewards.expect(StatusCode::OK)["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        (event_id, reward_id)
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let reply = self
            .send(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        let body = reply.expect(StatusCode::OK);
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
        let account = json!({"email": email, "password": PLAYER_PASSWORD});
        self.created_and_logged_in("/auth/register", None, account)
            .await
    }

    /// An account with `roles`, created by the admin, logged in.
    pub async fn staff(&self, admin: &Session, email: &str, roles: &[&str]) -> Session {
        let account = json!({"email": email, "password": STAFF_PASSWORD, "roles": roles});
        self.created_and_logged_in("/users", Some(&admin.access_token), account)
            .await
    }

    /// Creates `account` (email and password) with `POST path` (asserting 201) and logs it in.
    async fn created_and_logged_in(
        &self,
        path: &str,
        token: Option<&str>,
        account: Value,
    ) -> Session {
        let reply = self
            .send(Method::POST, path, token, Some(account.clone()))
            .await;
        reply.expect(StatusCode::CREATED);
        let email = account["email"].as_str().unwrap();
        self.login(email, account["password"].as_str().unwrap())
            .await
    }

    /// A game server: a service account the admin creates (asserting 201), with an access token
    /// from `POST /auth/token` (client credentials in the form). `refresh_token` is empty: client
    /// credentials have none.
    pub async fn game_server(&self, admin: &Session, name: &str) -> (Session, GameServerAccount) {
        let created = self
            .send(
                Method::POST,
                "/service-accounts",
                Some(&admin.access_token),
                Some(json!({"name": name})),
            )
            .await;
        let body = created.expect(StatusCode::CREATED);
        let account = GameServerAccount {
            id: body["id"].as_str().unwrap().to_owned(),
            client_id: body["clientId"].as_str().unwrap().to_owned(),
            client_secret: body["clientSecret"].as_str().unwrap().to_owned(),
        };
        let token = self
            .client_token(&account.client_id, &account.client_secret)
            .await;
        let token = token.expect(StatusCode::OK);
        let session = Session {
            id: account.id.clone(),
            email: String::new(),
            access_token: token["access_token"].as_str().unwrap().to_owned(),
            refresh_token: String::new(),
        };
        (session, account)
    }

    /// `POST /auth/token` with the client credentials in the form.
    pub async fn client_token(&self, client_id: &str, client_secret: &str) -> Reply {
        let form = format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={client_secret}"
        );
        self.request(Method::POST, "/auth/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.into_bytes())
            .send()
            .await
    }

    /// `POST path` as `token` without a body: the status and JSON body.
    pub async fn post(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), None).await
    }

    /// `POST /events/{event_id}/claims` as `token`, asserting 201; the claim.
    pub async fn claim(&self, token: &str, event_id: &str) -> Value {
        let (status, claim) = self
            .post(&format!("/events/{event_id}/claims"), token)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{claim}");
        claim
    }

    /// `POST /grants` as `operator` with `key` as its `Idempotency-Key`.
    pub async fn grant(&self, operator: &Session, key: &str, body: Value) -> Reply {
        self.request(Method::POST, "/grants")
            .token(&operator.access_token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
    }

    /// Polls `GET /deliveries/{id}` as `token` until its status is `status`; the delivery.
    pub async fn delivery_becomes(&self, token: &str, id: &str, status: &str) -> Value {
        erp_testkit::eventually(std::time::Duration::from_secs(20), || async {
            let (code, body) = self.get(&format!("/deliveries/{id}"), token).await;
            if code == StatusCode::OK && body["status"] == status {
                Ok(body)
            } else {
                Err((code, body))
            }
        })
        .await
        .0
    }

    /// `PATCH /users/{id}` with `change` as the admin, asserting 200.
    pub async fn change_user(&self, admin: &Session, id: &str, change: Value) -> Value {
        let reply = self
            .send(
                Method::PATCH,
                &format!("/users/{id}"),
                Some(&admin.access_token),
                Some(change),
            )
            .await;
        reply.expect(StatusCode::OK).clone()
    }
}

/// Revocations (logout, role changes, disabling, deletion) reach every gateway within one second
/// (API.md); the test's own round trips get a small margin.
pub const REVOCATION_DEADLINE: std::time::Duration = std::time::Duration::from_millis(1100);

impl Platform {
    /// Polls `GET path` as `token` until it is no longer answered 200, which must happen within
    /// [`REVOCATION_DEADLINE`]; the first refusal, and how long after the call it was sent.
    pub async fn until_refused(&self, path: &str, token: &str) -> (Reply, std::time::Duration) {
        erp_testkit::eventually(REVOCATION_DEADLINE, || async {
            let reply = self.send(Method::GET, path, Some(token), None).await;
            if reply.status == StatusCode::OK {
                Err(reply)
            } else {
                Ok(reply)
            }
        })
        .await
    }
}

/// Sends every request on a task of its own (on a multi-thread runtime they run in parallel,
/// not just interleaved at awaits); the answers in order.
pub async fn in_parallel(requests: impl IntoIterator<Item = Request>) -> Vec<Reply> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| tokio::spawn(request.send()))
        .collect();
    let mut replies = Vec::with_capacity(tasks.len());
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

/// The `items` of a list answer.
pub fn items(list: &Value) -> &Vec<Value> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
}
