//! Every route of API.md × anonymous, USER, OPERATOR, AUDITOR, ADMIN. The expectations below are
//! written from API.md's role table, not from the gateway's route table, so a wrong table fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Platform, iso};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Public,
    Any,
    Only(&'static [&'static str]),
}

const ROLES: [&str; 4] = ["USER", "OPERATOR", "AUDITOR", "ADMIN"];

#[tokio::test]
async fn every_route_allows_exactly_the_roles_api_md_names() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let user = platform.player("matrix-user@example.com").await;
    let operator = platform
        .staff(&admin, "matrix-op@example.com", &["OPERATOR"])
        .await;
    let auditor = platform
        .staff(&admin, "matrix-aud@example.com", &["AUDITOR"])
        .await;

    // Real ids so an allowed call can succeed (or fail for a business reason, never 401/403).
    let (event_id, reward_id) = platform
        .active_event_with_reward(&operator.access_token, "Matrix")
        .await;
    let victim = platform.player("matrix-victim@example.com").await;

    let routes: Vec<(Method, String, Who, Option<serde_json::Value>)> = vec![
        (
            Method::POST,
            "/auth/register".into(),
            Who::Public,
            Some(json!({"email": "x", "password": "y"})),
        ),
        (
            Method::POST,
            "/auth/login".into(),
            Who::Public,
            Some(json!({"email": "nobody@example.com", "password": "wrong-password"})),
        ),
        (
            Method::POST,
            "/auth/refresh".into(),
            Who::Public,
            Some(json!({"refreshToken": "nope"})),
        ),
        (Method::GET, "/auth/me".into(), Who::Any, None),
        (Method::GET, "/users".into(), Who::Only(&["ADMIN"]), None),
        (
            Method::POST,
            "/users".into(),
            Who::Only(&["ADMIN"]),
            Some(json!({"email": "bad", "password": "x", "roles": []})),
        ),
        (
            Method::GET,
            format!("/users/{}", victim.id),
            Who::Only(&["ADMIN"]),
            None,
        ),
        (
            Method::PATCH,
            "/users/no-such-user".into(),
            Who::Only(&["ADMIN"]),
            Some(json!({"disabled": false})),
        ),
        (
            Method::DELETE,
            "/users/no-such-user".into(),
            Who::Only(&["ADMIN"]),
            None,
        ),
        (
            Method::POST,
            "/events".into(),
            Who::Only(&["OPERATOR", "ADMIN"]),
            Some(json!({"title": ""})),
        ),
        (Method::GET, "/events".into(), Who::Any, None),
        (Method::GET, format!("/events/{event_id}"), Who::Any, None),
        (
            Method::PATCH,
            "/events/no-such-event".into(),
            Who::Only(&["OPERATOR", "ADMIN"]),
            Some(json!({"title": "x"})),
        ),
        (
            Method::DELETE,
            "/events/no-such-event".into(),
            Who::Only(&["ADMIN"]),
            None,
        ),
        (
            Method::POST,
            format!("/events/{event_id}/rewards"),
            Who::Only(&["OPERATOR", "ADMIN"]),
            Some(json!({"name": ""})),
        ),
        (
            Method::GET,
            format!("/events/{event_id}/rewards"),
            Who::Any,
            None,
        ),
        (
            Method::GET,
            format!("/events/{event_id}/rewards/{reward_id}"),
            Who::Any,
            None,
        ),
        (
            Method::PATCH,
            format!("/events/{event_id}/rewards/no-such-reward"),
            Who::Only(&["OPERATOR", "ADMIN"]),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            format!("/events/{event_id}/rewards/no-such-reward"),
            Who::Only(&["ADMIN"]),
            None,
        ),
        (
            Method::GET,
            format!("/events/{event_id}/progress"),
            Who::Any,
            None,
        ),
        (
            Method::POST,
            "/events/no-such-event/claims".into(),
            Who::Only(&["USER", "OPERATOR", "ADMIN"]),
            None,
        ),
        (Method::GET, "/claims/me".into(), Who::Any, None),
        (
            Method::GET,
            "/claims".into(),
            Who::Only(&["OPERATOR", "AUDITOR", "ADMIN"]),
            None,
        ),
        (Method::GET, "/claims/no-such-claim".into(), Who::Any, None),
        (
            Method::POST,
            "/claims/no-such-claim/approve".into(),
            Who::Only(&["OPERATOR", "ADMIN"]),
            None,
        ),
        (
            Method::POST,
            "/claims/no-such-claim/reject".into(),
            Who::Only(&["OPERATOR", "ADMIN"]),
            Some(json!({"reason": "no"})),
        ),
        (
            Method::POST,
            "/progress".into(),
            Who::Only(&["OPERATOR", "ADMIN"]),
            Some(json!({"items": []})),
        ),
        (
            Method::GET,
            "/audit".into(),
            Who::Only(&["AUDITOR", "ADMIN"]),
            None,
        ),
        (
            Method::GET,
            "/dashboard".into(),
            Who::Only(&["OPERATOR", "AUDITOR", "ADMIN"]),
            None,
        ),
        // Logout last: it ends the sessions used above.
        (Method::POST, "/auth/logout".into(), Who::Any, None),
    ];
    let callers = [
        ("USER", &user),
        ("OPERATOR", &operator),
        ("AUDITOR", &auditor),
        ("ADMIN", &admin),
    ];
    let mut failures = Vec::new();
    for (method, path, who, body) in &routes {
        let (status, answer) = platform
            .call(method.clone(), path, None, body.clone())
            .await;
        let anonymous_ok = match who {
            // A business 401 (wrong credentials, unknown refresh token) is an allowed answer.
            Who::Public => status != StatusCode::FORBIDDEN && answer["code"] != "UNAUTHENTICATED",
            _ => status == StatusCode::UNAUTHORIZED && answer["code"] == "UNAUTHENTICATED",
        };
        if !anonymous_ok {
            failures.push(format!("anonymous {method} {path}: {status} {answer}"));
        }
        if *who == Who::Public {
            continue;
        }
        for (role, session) in callers {
            let (status, answer) = platform
                .call(
                    method.clone(),
                    path,
                    Some(&session.access_token),
                    body.clone(),
                )
                .await;
            let allowed = match who {
                Who::Public | Who::Any => true,
                Who::Only(roles) => roles.contains(&role),
            };
            let ok = if allowed {
                status != StatusCode::UNAUTHORIZED
                    && status != StatusCode::FORBIDDEN
                    && status.as_u16() < 500
            } else {
                status == StatusCode::FORBIDDEN && answer["code"] == "FORBIDDEN"
            };
            if !ok {
                failures.push(format!("{role} {method} {path}: {status} {answer}"));
            }
        }
    }
    assert!(ROLES.len() == callers.len());
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_player_cannot_read_another_players_progress_or_claim() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let operator = platform
        .staff(&admin, "own-op@example.com", &["OPERATOR"])
        .await;
    let alice = platform.player("alice@example.com").await;
    let bob = platform.player("bob@example.com").await;
    let (_, event) = platform
        .call(
            Method::POST,
            "/events",
            Some(&operator.access_token),
            Some(json!({
                "title": "Own",
                "startsAt": iso(chrono::Duration::hours(-1)),
                "endsAt": iso(chrono::Duration::days(1)),
            })),
        )
        .await;
    let event_id = event["id"].as_str().unwrap();
    let (status, body) = platform
        .call(
            Method::GET,
            &format!("/events/{event_id}/progress?userId={}", alice.id),
            Some(&bob.access_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = platform
        .call(
            Method::GET,
            &format!("/events/{event_id}/progress?userId={}", alice.id),
            Some(&operator.access_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["userId"], alice.id.as_str());
    assert_eq!(body["passed"], true);
}
