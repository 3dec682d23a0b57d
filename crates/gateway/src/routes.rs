//! The one route table: who may call each route. The authorisation middleware reads this table
//! and nothing else; a route missing from it is refused.

use axum::http::Method;
use erp_platform::identity::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no token needed.
    Public,
    /// Any authenticated caller.
    Authenticated,
    /// Callers holding one of these roles (`ADMIN` may call everything).
    Roles(&'static [Role]),
}

pub const API_PREFIX: &str = "/api/v1";

const EDITORS: &[Role] = &[Role::Operator, Role::Admin];
const STAFF: &[Role] = &[Role::Operator, Role::Auditor, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];
const CLAIMANTS: &[Role] = &[Role::User, Role::Operator, Role::Admin];
const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];

/// (method, path template under `/api/v1`, access).
pub const ROUTE_TABLE: &[(Method, &str, Access)] = &[
    (Method::POST, "/auth/register", Access::Public),
    (Method::POST, "/auth/login", Access::Public),
    (Method::POST, "/auth/refresh", Access::Public),
    (Method::POST, "/auth/logout", Access::Authenticated),
    (Method::GET, "/auth/me", Access::Authenticated),
    (Method::GET, "/users", Access::Roles(ADMIN)),
    (Method::POST, "/users", Access::Roles(ADMIN)),
    (Method::GET, "/users/{id}", Access::Roles(ADMIN)),
    (Method::PATCH, "/users/{id}", Access::Roles(ADMIN)),
    (Method::DELETE, "/users/{id}", Access::Roles(ADMIN)),
    (Method::POST, "/events", Access::Roles(EDITORS)),
    (Method::GET, "/events", Access::Authenticated),
    (Method::GET, "/events/{id}", Access::Authenticated),
    (Method::PATCH, "/events/{id}", Access::Roles(EDITORS)),
    (Method::DELETE, "/events/{id}", Access::Roles(ADMIN)),
    (Method::POST, "/events/{id}/rewards", Access::Roles(EDITORS)),
    (Method::GET, "/events/{id}/rewards", Access::Authenticated),
    (
        Method::GET,
        "/events/{id}/rewards/{rewardId}",
        Access::Authenticated,
    ),
    (
        Method::PATCH,
        "/events/{id}/rewards/{rewardId}",
        Access::Roles(EDITORS),
    ),
    (
        Method::DELETE,
        "/events/{id}/rewards/{rewardId}",
        Access::Roles(ADMIN),
    ),
    // Own progress for anyone; `?userId=` of someone else is checked by the event service.
    (Method::GET, "/events/{id}/progress", Access::Authenticated),
    (
        Method::POST,
        "/events/{id}/claims",
        Access::Roles(CLAIMANTS),
    ),
    (Method::GET, "/claims/me", Access::Authenticated),
    (Method::GET, "/claims", Access::Roles(STAFF)),
    // The owner or staff: ownership is checked by the event service.
    (Method::GET, "/claims/{id}", Access::Authenticated),
    (Method::POST, "/claims/{id}/approve", Access::Roles(EDITORS)),
    (Method::POST, "/claims/{id}/reject", Access::Roles(EDITORS)),
    (Method::POST, "/progress", Access::Roles(EDITORS)),
    (Method::GET, "/audit", Access::Roles(AUDITORS)),
    (Method::GET, "/dashboard", Access::Roles(STAFF)),
    (Method::GET, "/openapi.json", Access::Public),
];

/// The access rule of `method` on the route template `path` (with or without `/api/v1`).
/// `HEAD` has the rule of `GET` (axum answers it with the `GET` handler, without the body).
pub fn access(method: &Method, path: &str) -> Option<Access> {
    let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTE_TABLE
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map(|(_, _, access)| *access)
}

/// Whether `roles` satisfy `access` (authentication already established).
pub fn allows(access: Access, roles: &[Role]) -> bool {
    match access {
        Access::Public | Access::Authenticated => true,
        Access::Roles(allowed) => roles
            .iter()
            .any(|role| *role == Role::Admin || allowed.contains(role)),
    }
}

/// Login and registration get the stricter per-IP limit.
pub fn is_credential_route(method: &Method, path: &str) -> bool {
    let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
    method == Method::POST && (path == "/auth/login" || path == "/auth/register")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_has_the_rule_of_get() {
        for (method, path, access) in ROUTE_TABLE {
            if *method == Method::GET {
                assert_eq!(super::access(&Method::HEAD, path), Some(*access), "{path}");
            }
        }
        assert_eq!(access(&Method::HEAD, "/auth/login"), None);
        assert_eq!(
            access(&Method::HEAD, "/api/v1/users"),
            access(&Method::GET, "/users")
        );
    }
}
