//! Who may call a route: the rules every API endpoint declares once, beside its handler
//! (`api::*::ENDPOINTS`). The table built from those declarations is [`crate::route_table`].

use axum::http::Method;
use erp_platform::identity::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no token needed.
    Public,
    /// Anyone, no token needed, under the stricter per-address limit of login and registration
    /// (`ERP_AUTH_RATE_LIMIT_PER_MINUTE`).
    Credentials,
    /// Any authenticated person (API.md's "any"): a service account (`GAME_SERVER`) is refused.
    Authenticated,
    /// Callers holding one of these roles (`ADMIN` may call everything).
    Roles(&'static [Role]),
}

impl Access {
    /// Whether the route needs a bearer token.
    pub fn needs_token(self) -> bool {
        matches!(self, Access::Authenticated | Access::Roles(_))
    }

    /// Whether `roles` satisfy this rule (authentication already established).
    pub fn allows(self, roles: &[Role]) -> bool {
        match self {
            Access::Public | Access::Credentials => true,
            // A person, whatever roles they hold (even none): only service accounts are not.
            Access::Authenticated => !roles.contains(&Role::GameServer),
            Access::Roles(allowed) => roles
                .iter()
                .any(|role| *role == Role::Admin || allowed.contains(role)),
        }
    }
}

pub(crate) const API_PREFIX: &str = "/api/v1";

pub(crate) const EDITORS: &[Role] = &[Role::Operator, Role::Admin];
pub(crate) const STAFF: &[Role] = &[Role::Operator, Role::Auditor, Role::Admin];
pub(crate) const ADMIN: &[Role] = &[Role::Admin];
pub(crate) const CLAIMANTS: &[Role] = &[Role::User, Role::Operator, Role::Admin];
pub(crate) const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];
/// Any person, and game servers (the catalogue reads: "any, GAME_SERVER").
pub(crate) const EVERYONE: &[Role] = &Role::ALL;
pub(crate) const REPORTERS: &[Role] = &[Role::Operator, Role::Admin, Role::GameServer];
pub(crate) const DELIVERY_READERS: &[Role] =
    &[Role::GameServer, Role::Operator, Role::Auditor, Role::Admin];
pub(crate) const DELIVERY_ACKERS: &[Role] = &[Role::GameServer, Role::Admin];

/// One rule: (method, path template under `/api/v1`, access).
pub type Rule = (Method, String, Access);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_game_server_is_not_anyone_only_where_it_is_named() {
        let game_server = [Role::GameServer];
        assert!(!Access::Authenticated.allows(&game_server));
        assert!(!Access::Roles(STAFF).allows(&game_server));
        assert!(Access::Roles(EVERYONE).allows(&game_server));
        assert!(Access::Roles(REPORTERS).allows(&game_server));
        assert!(Access::Roles(DELIVERY_ACKERS).allows(&game_server));
        assert!(Access::Authenticated.allows(&[Role::User]));
        assert!(Access::Authenticated.allows(&[]), "a person without roles");
        assert!(Access::Roles(DELIVERY_ACKERS).allows(&[Role::Admin]));
        assert!(!Access::Roles(DELIVERY_ACKERS).allows(&[Role::Operator]));
    }
}
