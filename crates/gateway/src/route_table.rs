//! [`ROUTE_TABLE`]: every route's access rule, built from the endpoints' declarations
//! (`api::*::ENDPOINTS`). The authorisation middleware reads it and nothing else: a route missing
//! from it is refused.

use std::sync::OnceLock;

use axum::http::Method;

use crate::access::{API_PREFIX, Access, Rule};

/// Every route's rule, built once from the endpoints' declarations. Iterate it (`for (method,
/// template, access) in ROUTE_TABLE`) or use it as a slice.
pub const ROUTE_TABLE: RouteTable = RouteTable;

/// The type of [`ROUTE_TABLE`].
#[derive(Debug, Clone, Copy)]
pub struct RouteTable;

impl std::ops::Deref for RouteTable {
    type Target = [Rule];

    fn deref(&self) -> &[Rule] {
        rules()
    }
}

impl IntoIterator for RouteTable {
    type Item = &'static Rule;
    type IntoIter = std::slice::Iter<'static, Rule>;

    fn into_iter(self) -> Self::IntoIter {
        rules().iter()
    }
}

fn rules() -> &'static [Rule] {
    static TABLE: OnceLock<Vec<Rule>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = crate::api::rules();
        // Served beside the API, outside the authorisation layer.
        table.push((
            Method::GET,
            crate::openapi::DOCUMENT_PATH.to_owned(),
            Access::Public,
        ));
        table
    })
}

/// The access rule of `method` on the route template `path` (with or without `/api/v1`).
/// `HEAD` has the rule of `GET` (axum answers it with the `GET` handler, without the body).
pub(crate) fn access(method: &Method, path: &str) -> Option<Access> {
    let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    rules()
        .iter()
        .find(|(m, p, _)| m == method && p == path)
        .map(|(_, _, access)| *access)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{
        ADMIN, AUDITORS, CLAIMANTS, DELIVERY_ACKERS, DELIVERY_READERS, EDITORS, EVERYONE,
        REPORTERS, STAFF,
    };

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

    /// The table the endpoints declare, as it stood when it was written by hand.
    #[test]
    fn the_declared_rules_are_the_contract() {
        use Access::{Authenticated, Credentials, Public, Roles};
        let expected: &[(Method, &str, Access)] = &[
            (Method::POST, "/auth/register", Credentials),
            (Method::POST, "/auth/login", Credentials),
            (Method::POST, "/auth/refresh", Public),
            (Method::POST, "/auth/token", Credentials),
            (Method::POST, "/auth/logout", Authenticated),
            (Method::GET, "/auth/me", Authenticated),
            (Method::GET, "/users", Roles(ADMIN)),
            (Method::POST, "/users", Roles(ADMIN)),
            (Method::GET, "/users/{id}", Roles(ADMIN)),
            (Method::PATCH, "/users/{id}", Roles(ADMIN)),
            (Method::DELETE, "/users/{id}", Roles(ADMIN)),
            (Method::GET, "/service-accounts", Roles(ADMIN)),
            (Method::POST, "/service-accounts", Roles(ADMIN)),
            (Method::DELETE, "/service-accounts/{id}", Roles(ADMIN)),
            (
                Method::POST,
                "/service-accounts/{id}/rotate-secret",
                Roles(ADMIN),
            ),
            (Method::POST, "/events", Roles(EDITORS)),
            (Method::GET, "/events", Roles(EVERYONE)),
            (Method::GET, "/events/{id}", Roles(EVERYONE)),
            (Method::PATCH, "/events/{id}", Roles(EDITORS)),
            (Method::DELETE, "/events/{id}", Roles(ADMIN)),
            (Method::POST, "/events/{id}/rewards", Roles(EDITORS)),
            (Method::GET, "/events/{id}/rewards", Roles(EVERYONE)),
            (
                Method::GET,
                "/events/{id}/rewards/{rewardId}",
                Roles(EVERYONE),
            ),
            (
                Method::PATCH,
                "/events/{id}/rewards/{rewardId}",
                Roles(EDITORS),
            ),
            (
                Method::DELETE,
                "/events/{id}/rewards/{rewardId}",
                Roles(ADMIN),
            ),
            (Method::GET, "/events/{id}/progress", Authenticated),
            (Method::POST, "/events/{id}/claims", Roles(CLAIMANTS)),
            (Method::GET, "/claims/me", Authenticated),
            (Method::GET, "/claims", Roles(STAFF)),
            (Method::GET, "/claims/{id}", Authenticated),
            (Method::POST, "/claims/{id}/approve", Roles(EDITORS)),
            (Method::POST, "/claims/{id}/reject", Roles(EDITORS)),
            (Method::POST, "/progress", Roles(REPORTERS)),
            (Method::POST, "/grants", Roles(EDITORS)),
            (Method::GET, "/deliveries", Roles(DELIVERY_READERS)),
            (Method::GET, "/deliveries/{id}", Roles(DELIVERY_READERS)),
            (Method::POST, "/deliveries/{id}/ack", Roles(DELIVERY_ACKERS)),
            (Method::POST, "/deliveries/{id}/retry", Roles(EDITORS)),
            (Method::GET, "/audit", Roles(AUDITORS)),
            (Method::GET, "/dashboard", Roles(STAFF)),
            (Method::GET, "/openapi.json", Public),
        ];
        let mut expected: Vec<_> = expected
            .iter()
            .map(|(m, p, a)| format!("{m} {p} {a:?}"))
            .collect();
        let mut declared: Vec<_> = ROUTE_TABLE
            .iter()
            .map(|(m, p, a)| format!("{m} {p} {a:?}"))
            .collect();
        expected.sort();
        declared.sort();
        assert_eq!(declared, expected);
    }
}
