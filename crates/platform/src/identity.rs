//! The caller's identity as the gateway passes it to services in gRPC metadata. Services trust
//! only this (set by the gateway after introspection), never identity fields in request bodies.

use std::fmt;
use std::str::FromStr;

use tonic::metadata::{MetadataMap, MetadataValue};

pub const USER_ID_KEY: &str = "x-erp-user-id";
pub const ROLES_KEY: &str = "x-erp-roles";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    User,
    Operator,
    Auditor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::User, Role::Operator, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Operator => "OPERATOR",
            Role::Auditor => "AUDITOR",
            Role::Admin => "ADMIN",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }

    /// Operators, auditors and admins see every player's data.
    pub fn is_staff(&self) -> bool {
        self.has_any(&[Role::Operator, Role::Auditor, Role::Admin])
    }

    pub fn write_to(&self, metadata: &mut MetadataMap) -> Result<(), IdentityError> {
        let user_id = MetadataValue::try_from(self.user_id.as_str())
            .map_err(|_| IdentityError::Malformed(USER_ID_KEY))?;
        let roles = self
            .roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let roles = MetadataValue::try_from(roles.as_str())
            .map_err(|_| IdentityError::Malformed(ROLES_KEY))?;
        metadata.insert(USER_ID_KEY, user_id);
        metadata.insert(ROLES_KEY, roles);
        Ok(())
    }

    /// The caller in `metadata`, `None` when the call is anonymous (no user id).
    pub fn read_from(metadata: &MetadataMap) -> Result<Option<Self>, IdentityError> {
        let Some(user_id) = metadata.get(USER_ID_KEY) else {
            return Ok(None);
        };
        let user_id = user_id
            .to_str()
            .map_err(|_| IdentityError::Malformed(USER_ID_KEY))?;
        if user_id.is_empty() {
            return Err(IdentityError::Malformed(USER_ID_KEY));
        }
        let roles = match metadata.get(ROLES_KEY) {
            None => Vec::new(),
            Some(raw) => raw
                .to_str()
                .map_err(|_| IdentityError::Malformed(ROLES_KEY))?
                .split(',')
                .filter(|r| !r.is_empty())
                .map(Role::from_str)
                .collect::<Result<_, _>>()
                .map_err(|_| IdentityError::Malformed(ROLES_KEY))?,
        };
        Ok(Some(Self {
            user_id: user_id.to_owned(),
            roles,
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("malformed caller metadata {0}")]
    Malformed(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_round_trips_through_metadata() {
        let caller = Caller {
            user_id: "u1".into(),
            roles: vec![Role::User, Role::Operator],
        };
        let mut metadata = MetadataMap::new();
        caller.write_to(&mut metadata).unwrap();
        assert_eq!(Caller::read_from(&metadata).unwrap(), Some(caller));
    }

    #[test]
    fn absent_caller_is_anonymous_and_bad_roles_are_refused() {
        assert_eq!(Caller::read_from(&MetadataMap::new()).unwrap(), None);
        let mut metadata = MetadataMap::new();
        metadata.insert(USER_ID_KEY, MetadataValue::from_static("u1"));
        metadata.insert(ROLES_KEY, MetadataValue::from_static("USER,ROOT"));
        assert!(Caller::read_from(&metadata).is_err());
    }
}
