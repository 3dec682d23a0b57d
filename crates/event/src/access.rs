//! Who may do what: the role sets of the event service's use cases, and the checks against the
//! caller named by the verified caller assertion (`None` for an anonymous call).

use erp_platform::identity::{Caller, Role};

use crate::error::EventError;

/// Who may read everything (events in every state, everyone's claims, the dashboard).
pub(crate) const STAFF: &[Role] = &[Role::Operator, Role::Auditor, Role::Admin];
/// Who may change events and rewards and decide claims.
pub(crate) const EDITORS: &[Role] = &[Role::Operator, Role::Admin];
/// Who may delete.
pub(crate) const ADMINS: &[Role] = &[Role::Admin];
/// Who may read the audit trail.
pub(crate) const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];
/// Who may claim for themselves (an auditor only reads).
pub(crate) const CLAIMANTS: &[Role] = &[Role::User, Role::Operator, Role::Admin];
/// Who may report players' progress: operators and game servers (service accounts).
pub(crate) const REPORTERS: &[Role] = &[Role::Operator, Role::Admin, Role::GameServer];

/// The caller if it has one of `roles`: UNAUTHENTICATED without a caller, FORBIDDEN without
/// the role.
pub(crate) fn require(caller: Option<&Caller>, roles: &[Role]) -> Result<Caller, EventError> {
    let caller = caller.ok_or(EventError::Unauthenticated)?;
    if caller.has_any(roles) {
        Ok(caller.clone())
    } else {
        Err(EventError::Forbidden)
    }
}

/// The caller, if it is a person (what API.md calls "any", whatever roles they hold): a game
/// server (a service account) is not one, and may call only what names `GAME_SERVER` (reading
/// events and rewards, reporting progress).
pub(crate) fn person(caller: Option<&Caller>) -> Result<&Caller, EventError> {
    let caller = caller.ok_or(EventError::Unauthenticated)?;
    if caller.roles.contains(&Role::GameServer) {
        Err(EventError::Forbidden)
    } else {
        Ok(caller)
    }
}

/// Whether `caller` may see drafts (staff only; never an anonymous call).
pub(crate) fn sees_drafts(caller: Option<&Caller>) -> bool {
    caller.is_some_and(|c| c.has_any(STAFF))
}

/// The caller, if it is `owner` or staff: a player reads only their own claims and progress
/// (a game server, no person, reads neither).
pub(crate) fn owner_or_staff<'a>(
    caller: Option<&'a Caller>,
    owner: &str,
) -> Result<&'a Caller, EventError> {
    let caller = person(caller)?;
    if owner == caller.user_id || caller.has_any(STAFF) {
        Ok(caller)
    } else {
        Err(EventError::Forbidden)
    }
}

/// Four-eyes: nobody decides (approves, rejects) or grants a claim of their own.
pub(crate) fn not_own(caller: &Caller, user_id: &str) -> Result<(), EventError> {
    if caller.user_id == user_id {
        Err(EventError::Forbidden)
    } else {
        Ok(())
    }
}
