//! Every route of API.md × anonymous, USER, OPERATOR, AUDITOR, ADMIN, GAME_SERVER. The expectations below are
//! written from API.md's role table, not from the gateway's route table, so a wrong table fails;
//! and every answer is exact: the status (and code) a caller of that role gets, also on public
//! routes (never "anything but 401/403").

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Platform, iso};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Public,
    /// Any person ("any" in API.md): not a game server.
    Any,
    /// Any person and game servers ("any, GAME_SERVER").
    AnyAndGameServers,
    Only(&'static [&'static str]),
}

const ROLES: [&str; 5] = ["USER", "OPERATOR", "AUDITOR", "ADMIN", "GAME_SERVER"];

/// One route called with real ids (or deliberately unknown ones) and a body: who may call it,
/// and what every caller allowed gets (status, and the problem code for an error).
struct Case {
    method: Method,
    template: &'static str,
    path: String,
    who: Who,
    body: Option<Value>,
    allowed: (u16, Option<&'static str>),
}

fn case(
    method: Method,
    template: &'static str,
    path: impl Into<String>,
    who: Who,
    body: Option<Value>,
    allowed: (u16, Option<&'static str>),
) -> Case {
    Case {
        method,
        template,
        path: path.into(),
        who,
        body,
        allowed,
    }
}

const OK: (u16, Option<&str>) = (200, None);
const INVALID: (u16, Option<&str>) = (400, Some("VALIDATION_FAILED"));
const UNKNOWN: (u16, Option<&str>) = (404, Some("NOT_FOUND"));

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

    // Real ids so an allowed call can succeed, or ids nothing has so that it fails the same way
    // for every allowed role (404), or bodies the gateway refuses (400) for writes that would
    // change what later rows read.
    let (event_id, reward_id) = platform
        .active_event_with_reward(&operator.access_token, "Matrix")
        .await;
    let victim = platform.player("matrix-victim@example.com").await;
    let (game_server, _) = platform.game_server(&admin, "matrix-game-server").await;
    let editors = Who::Only(&["OPERATOR", "ADMIN"]);
    let admins = Who::Only(&["ADMIN"]);
    let event = format!("/events/{event_id}");

    let routes = vec![
        case(
            Method::POST,
            "/auth/register",
            "/auth/register",
            Who::Public,
            Some(json!({"email": "x", "password": "y"})),
            INVALID,
        ),
        case(
            Method::POST,
            "/auth/login",
            "/auth/login",
            Who::Public,
            Some(json!({"email": "nobody@example.com", "password": "wrong-password"})),
            (401, Some("INVALID_CREDENTIALS")),
        ),
        case(
            Method::POST,
            "/auth/refresh",
            "/auth/refresh",
            Who::Public,
            Some(json!({"refreshToken": "nope"})),
            (401, Some("INVALID_REFRESH_TOKEN")),
        ),
        // OAuth's own error shape (no problem `code`): a JSON body is not the form it needs.
        case(
            Method::POST,
            "/auth/token",
            "/auth/token",
            Who::Public,
            Some(json!({"grant_type": "client_credentials"})),
            (400, None),
        ),
        case(
            Method::GET,
            "/openapi.json",
            "/openapi.json",
            Who::Public,
            None,
            OK,
        ),
        case(Method::GET, "/auth/me", "/auth/me", Who::Any, None, OK),
        case(Method::GET, "/users", "/users", admins, None, OK),
        case(
            Method::POST,
            "/users",
            "/users",
            admins,
            Some(json!({"email": "bad", "password": "x", "roles": []})),
            INVALID,
        ),
        case(
            Method::GET,
            "/users/{id}",
            format!("/users/{}", victim.id),
            admins,
            None,
            OK,
        ),
        case(
            Method::PATCH,
            "/users/{id}",
            "/users/no-such-user",
            admins,
            Some(json!({"disabled": false})),
            UNKNOWN,
        ),
        case(
            Method::DELETE,
            "/users/{id}",
            "/users/no-such-user",
            admins,
            None,
            UNKNOWN,
        ),
        case(
            Method::GET,
            "/service-accounts",
            "/service-accounts",
            admins,
            None,
            OK,
        ),
        case(
            Method::POST,
            "/service-accounts",
            "/service-accounts",
            admins,
            Some(json!({"name": ""})),
            INVALID,
        ),
        case(
            Method::DELETE,
            "/service-accounts/{id}",
            "/service-accounts/no-such-account",
            admins,
            None,
            UNKNOWN,
        ),
        case(
            Method::POST,
            "/service-accounts/{id}/rotate-secret",
            "/service-accounts/no-such-account/rotate-secret",
            admins,
            None,
            UNKNOWN,
        ),
        case(
            Method::POST,
            "/events",
            "/events",
            editors,
            Some(json!({"title": ""})),
            INVALID,
        ),
        case(
            Method::GET,
            "/events",
            "/events",
            Who::AnyAndGameServers,
            None,
            OK,
        ),
        case(
            Method::GET,
            "/events/{id}",
            event.clone(),
            Who::AnyAndGameServers,
            None,
            OK,
        ),
        case(
            Method::PATCH,
            "/events/{id}",
            "/events/no-such-event",
            editors,
            Some(json!({"title": "x"})),
            UNKNOWN,
        ),
        case(
            Method::DELETE,
            "/events/{id}",
            "/events/no-such-event",
            admins,
            None,
            UNKNOWN,
        ),
        case(
            Method::POST,
            "/events/{id}/rewards",
            format!("{event}/rewards"),
            editors,
            Some(json!({"name": ""})),
            INVALID,
        ),
        case(
            Method::GET,
            "/events/{id}/rewards",
            format!("{event}/rewards"),
            Who::AnyAndGameServers,
            None,
            OK,
        ),
        case(
            Method::GET,
            "/events/{id}/rewards/{rewardId}",
            format!("{event}/rewards/{reward_id}"),
            Who::AnyAndGameServers,
            None,
            OK,
        ),
        case(
            Method::PATCH,
            "/events/{id}/rewards/{rewardId}",
            format!("{event}/rewards/no-such-reward"),
            editors,
            Some(json!({"name": "x"})),
            UNKNOWN,
        ),
        case(
            Method::DELETE,
            "/events/{id}/rewards/{rewardId}",
            format!("{event}/rewards/no-such-reward"),
            admins,
            None,
            UNKNOWN,
        ),
        case(
            Method::GET,
            "/events/{id}/progress",
            format!("{event}/progress"),
            Who::Any,
            None,
            OK,
        ),
        case(
            Method::POST,
            "/events/{id}/claims",
            "/events/no-such-event/claims",
            Who::Only(&["USER", "OPERATOR", "ADMIN"]),
            None,
            UNKNOWN,
        ),
        case(Method::GET, "/claims/me", "/claims/me", Who::Any, None, OK),
        case(
            Method::GET,
            "/claims",
            "/claims",
            Who::Only(&["OPERATOR", "AUDITOR", "ADMIN"]),
            None,
            OK,
        ),
        case(
            Method::GET,
            "/claims/{id}",
            "/claims/no-such-claim",
            Who::Any,
            None,
            UNKNOWN,
        ),
        case(
            Method::POST,
            "/claims/{id}/approve",
            "/claims/no-such-claim/approve",
            editors,
            None,
            UNKNOWN,
        ),
        case(
            Method::POST,
            "/claims/{id}/reject",
            "/claims/no-such-claim/reject",
            editors,
            Some(json!({"reason": "no"})),
            UNKNOWN,
        ),
        case(
            Method::POST,
            "/progress",
            "/progress",
            Who::Only(&["OPERATOR", "ADMIN", "GAME_SERVER"]),
            Some(json!({"items": []})),
            INVALID,
        ),
        // No Idempotency-Key: refused before anything is granted.
        case(
            Method::POST,
            "/grants",
            "/grants",
            editors,
            Some(json!({"eventId": event_id, "userIds": [victim.id], "reason": "matrix"})),
            INVALID,
        ),
        case(
            Method::GET,
            "/deliveries",
            "/deliveries",
            Who::Only(&["GAME_SERVER", "OPERATOR", "AUDITOR", "ADMIN"]),
            None,
            OK,
        ),
        case(
            Method::GET,
            "/deliveries/{id}",
            "/deliveries/no-such-delivery",
            Who::Only(&["GAME_SERVER", "OPERATOR", "AUDITOR", "ADMIN"]),
            None,
            UNKNOWN,
        ),
        case(
            Method::POST,
            "/deliveries/{id}/ack",
            "/deliveries/no-such-delivery/ack",
            Who::Only(&["GAME_SERVER", "ADMIN"]),
            None,
            UNKNOWN,
        ),
        case(
            Method::POST,
            "/deliveries/{id}/retry",
            "/deliveries/no-such-delivery/retry",
            editors,
            None,
            UNKNOWN,
        ),
        case(
            Method::GET,
            "/audit",
            "/audit",
            Who::Only(&["AUDITOR", "ADMIN"]),
            None,
            OK,
        ),
        case(
            Method::GET,
            "/dashboard",
            "/dashboard",
            Who::Only(&["OPERATOR", "AUDITOR", "ADMIN"]),
            None,
            OK,
        ),
        // Logout last: it ends the sessions used above.
        case(
            Method::POST,
            "/auth/logout",
            "/auth/logout",
            Who::Any,
            None,
            (204, None),
        ),
    ];

    // The matrix covers every route the gateway serves, and nothing it does not.
    let served: BTreeSet<(String, String)> = erp_gateway::routes::ROUTE_TABLE
        .into_iter()
        .map(|(method, template, _)| (method.to_string(), template.to_string()))
        .collect();
    let tested: BTreeSet<(String, String)> = routes
        .iter()
        .map(|c| (c.method.to_string(), c.template.to_owned()))
        .collect();
    assert_eq!(tested, served, "the matrix and the gateway's routes differ");

    let callers = [
        ("USER", &user),
        ("OPERATOR", &operator),
        ("AUDITOR", &auditor),
        ("ADMIN", &admin),
        ("GAME_SERVER", &game_server),
    ];
    let mut failures = Vec::new();
    let mut check = |who: &str,
                     case: &Case,
                     reply: &crate::common::Reply,
                     (status, code): (u16, Option<&str>)| {
        let content_type = reply.header("content-type");
        let problem_ok = code.is_none()
            || (content_type == Some("application/problem+json") && reply.body["status"] == status);
        if reply.status.as_u16() != status || reply.code() != code || !problem_ok {
            failures.push(format!(
                "{who} {} {}: {} {content_type:?} {} (wanted {status} {code:?})",
                case.method, case.path, reply.status, reply.body
            ));
        }
    };
    for case in &routes {
        let reply = platform
            .send(case.method.clone(), &case.path, None, case.body.clone())
            .await;
        let anonymous = match case.who {
            Who::Public => case.allowed,
            _ => (401, Some("UNAUTHENTICATED")),
        };
        check("anonymous", case, &reply, anonymous);
        if case.who == Who::Public {
            continue;
        }
        for (role, session) in callers {
            let reply = platform
                .send(
                    case.method.clone(),
                    &case.path,
                    Some(&session.access_token),
                    case.body.clone(),
                )
                .await;
            let allowed = match case.who {
                Who::Public | Who::AnyAndGameServers => true,
                Who::Any => role != "GAME_SERVER",
                Who::Only(roles) => roles.contains(&role),
            };
            let expected = if allowed {
                case.allowed
            } else {
                (403, Some("FORBIDDEN"))
            };
            check(role, case, &reply, expected);
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
        .get(
            &format!("/events/{event_id}/progress?userId={}", alice.id),
            &bob.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = platform
        .get(
            &format!("/events/{event_id}/progress?userId={}", alice.id),
            &operator.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["userId"], alice.id.as_str());
    assert_eq!(body["passed"], true);
}
