//! Who may do what in the auth service. The domain's operations that need a role take a
//! [`Granted`] proof, and only [`authorize`] makes one, so an operation cannot be reached without
//! its check; the transport only hands over the caller its assertion named.

use std::marker::PhantomData;

use erp_platform::identity::{Caller, Role};

use crate::error::AuthError;

/// Something a caller may be allowed to do, and the roles that allow it.
pub(crate) trait Action {
    const ROLES: &'static [Role];
}

/// Managing accounts: create, list, read, change and delete users.
pub(crate) struct ManageUsers;

impl Action for ManageUsers {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// Managing service accounts: create, list, delete, rotate their secret.
pub(crate) struct ManageServiceAccounts;

impl Action for ManageServiceAccounts {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// Checking in bulk which user ids are active people (the gateway, for an operator's grant).
pub(crate) struct FindPeople;

impl Action for FindPeople {
    const ROLES: &'static [Role] = &[Role::Operator, Role::Admin];
}

/// Reading the audit trail.
pub(crate) struct ReadAudit;

impl Action for ReadAudit {
    const ROLES: &'static [Role] = &[Role::Auditor, Role::Admin];
}

/// Proof that the caller may do `A`.
pub(crate) struct Granted<A> {
    caller: Caller,
    action: PhantomData<A>,
}

impl<A> Granted<A> {
    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }
}

/// The person the verified caller assertion names; an anonymous call is `UNAUTHENTICATED`.
pub(crate) fn signed_in(caller: Option<Caller>) -> Result<Caller, AuthError> {
    caller.ok_or(AuthError::Unauthenticated)
}

/// The caller's permission to do `A`: `UNAUTHENTICATED` when anonymous, `FORBIDDEN` without one
/// of its roles.
pub(crate) fn authorize<A: Action>(caller: Option<Caller>) -> Result<Granted<A>, AuthError> {
    let caller = signed_in(caller)?;
    if caller.has_any(A::ROLES) {
        Ok(Granted {
            caller,
            action: PhantomData,
        })
    } else {
        Err(AuthError::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(roles: &[Role]) -> Option<Caller> {
        Some(Caller {
            user_id: "u1".to_owned(),
            roles: roles.to_vec(),
        })
    }

    #[test]
    fn only_admins_manage_users_and_auditors_or_admins_read_the_audit() {
        assert!(authorize::<ManageUsers>(with(&[Role::Admin])).is_ok());
        for roles in [&[Role::User][..], &[Role::Operator], &[Role::Auditor]] {
            assert!(matches!(
                authorize::<ManageUsers>(with(roles)),
                Err(AuthError::Forbidden)
            ));
        }
        for roles in [&[Role::Auditor][..], &[Role::Admin]] {
            assert!(authorize::<ReadAudit>(with(roles)).is_ok());
        }
        assert!(matches!(
            authorize::<ReadAudit>(with(&[Role::Operator])),
            Err(AuthError::Forbidden)
        ));
        assert!(matches!(
            authorize::<ReadAudit>(None),
            Err(AuthError::Unauthenticated)
        ));
    }

    #[test]
    fn only_admins_manage_service_accounts_and_operators_or_admins_find_people() {
        assert!(authorize::<ManageServiceAccounts>(with(&[Role::Admin])).is_ok());
        for roles in [
            &[Role::User][..],
            &[Role::Operator],
            &[Role::Auditor],
            &[Role::GameServer],
        ] {
            assert!(matches!(
                authorize::<ManageServiceAccounts>(with(roles)),
                Err(AuthError::Forbidden)
            ));
        }
        for roles in [&[Role::Operator][..], &[Role::Admin]] {
            assert!(authorize::<FindPeople>(with(roles)).is_ok());
        }
        for roles in [&[Role::User][..], &[Role::Auditor], &[Role::GameServer]] {
            assert!(matches!(
                authorize::<FindPeople>(with(roles)),
                Err(AuthError::Forbidden)
            ));
        }
    }
}
