//! Grants: an operator gives an event's rewards to listed players (compensation), skipping the
//! condition, the window and MANUAL review, and nothing else. The rules here are pure: what a
//! grant request must look like, and which outcome each listed user id gets. The use case is
//! `service::grants`; the claims are placed by the claim path's own placement
//! (`ClaimStore::place_grants`).

use std::collections::{HashMap, HashSet};

use erp_platform::error::FieldError;

use crate::error::EventError;
use crate::model::Claim;
use crate::validate::MAX_KEY_CHARS;

use super::MAX_REASON_CHARS;

/// Most user ids one grant names.
pub(crate) const MAX_GRANT_USERS: usize = 1000;
/// Longest user id a grant accepts.
pub(crate) const MAX_GRANT_USER_ID_CHARS: usize = 200;
/// Most claims of one grant placed in one transaction (the claim path's batch): a whole
/// 1,000-user grant is one transaction.
pub(crate) const GRANT_BATCH_MAX: usize = MAX_GRANT_USERS;
/// The field the idempotency key came in (the REST header).
const KEY_FIELD: &str = "Idempotency-Key";

/// What a grant asks for, as the gateway sends it.
#[derive(Debug, Clone)]
pub(crate) struct GrantRequest {
    pub(crate) event_id: String,
    /// In the order the results are wanted.
    pub(crate) user_ids: Vec<String>,
    /// Which ids are existing, enabled people (auth's FindActiveUsers, asked by the gateway).
    pub(crate) active_user_ids: Vec<String>,
    pub(crate) reason: String,
    pub(crate) idempotency_key: String,
}

/// What became of one listed user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantOutcome {
    Granted,
    /// The user already had a claim on the event (any status), or was listed earlier.
    AlreadyClaimed,
    OutOfStock,
    /// Not an existing, enabled person.
    NotFound,
    /// The caller's own id: nobody grants to themselves.
    Forbidden,
}

impl GrantOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GrantOutcome::Granted => "GRANTED",
            GrantOutcome::AlreadyClaimed => "ALREADY_CLAIMED",
            GrantOutcome::OutOfStock => "OUT_OF_STOCK",
            GrantOutcome::NotFound => "NOT_FOUND",
            GrantOutcome::Forbidden => "FORBIDDEN",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            GrantOutcome::Granted,
            GrantOutcome::AlreadyClaimed,
            GrantOutcome::OutOfStock,
            GrantOutcome::NotFound,
            GrantOutcome::Forbidden,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantResult {
    pub(crate) user_id: String,
    pub(crate) outcome: GrantOutcome,
    /// The new claim (GRANTED) or the existing one (ALREADY_CLAIMED).
    pub(crate) claim_id: Option<String>,
}

/// A grant's answer: a result per listed id, in order, and whether it is a replay of the
/// idempotency key's first answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantAnswer {
    pub(crate) results: Vec<GrantResult>,
    pub(crate) replayed: bool,
}

/// Checks a grant request, naming every bad field at once; returns the reason trimmed.
pub(crate) fn validate(request: &GrantRequest) -> Result<String, EventError> {
    let mut errors = Vec::new();
    let listed = request.user_ids.len();
    if listed == 0 || listed > MAX_GRANT_USERS {
        errors.push(FieldError::new(
            "userIds",
            format!("must list 1 to {MAX_GRANT_USERS} user ids"),
        ));
    }
    for (index, user_id) in request.user_ids.iter().enumerate() {
        if user_id.is_empty() || user_id.chars().count() > MAX_GRANT_USER_ID_CHARS {
            errors.push(FieldError::new(
                format!("userIds[{index}]"),
                format!("must be 1 to {MAX_GRANT_USER_ID_CHARS} characters"),
            ));
        }
    }
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        errors.push(FieldError::new(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    let key = &request.idempotency_key;
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        errors.push(FieldError::new(
            KEY_FIELD,
            format!("is required, 1 to {MAX_KEY_CHARS} characters"),
        ));
    }
    if errors.is_empty() {
        Ok(reason.to_owned())
    } else {
        Err(EventError::Validation(errors))
    }
}

/// The ids of a grant sorted out before anything is placed.
#[derive(Debug, Default)]
pub(crate) struct Screened<'a> {
    /// Outcomes known without placing, by position in the list.
    pub(crate) decided: HashMap<usize, GrantResult>,
    /// Ids listed again after their first position: they take the first one's fate.
    pub(crate) repeats: HashMap<usize, usize>,
    /// Distinct active ids other than the caller's, in order: the ones that may get a claim.
    pub(crate) candidates: Vec<(usize, &'a str)>,
}

/// Sorts the listed ids: the caller's own is FORBIDDEN, an id that is not an active person
/// NOT_FOUND, a repeat follows its first listing; the rest are candidates.
pub(crate) fn screen<'a>(
    caller_id: &str,
    user_ids: &'a [String],
    active_user_ids: &[String],
) -> Screened<'a> {
    let active: HashSet<&str> = active_user_ids.iter().map(String::as_str).collect();
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut screened = Screened::default();
    for (index, user_id) in user_ids.iter().enumerate() {
        if let Some(first) = first_seen.get(user_id.as_str()) {
            screened.repeats.insert(index, *first);
            continue;
        }
        first_seen.insert(user_id, index);
        let outcome = if user_id == caller_id {
            GrantOutcome::Forbidden
        } else if !active.contains(user_id.as_str()) {
            GrantOutcome::NotFound
        } else {
            screened.candidates.push((index, user_id));
            continue;
        };
        screened.decided.insert(
            index,
            GrantResult {
                user_id: user_id.clone(),
                outcome,
                claim_id: None,
            },
        );
    }
    screened
}

/// The results in list order: a repeated id is ALREADY_CLAIMED with the claim its first listing
/// ended with, or shares that listing's outcome when it ended without one.
pub(crate) fn in_order(
    user_ids: &[String],
    mut decided: HashMap<usize, GrantResult>,
    repeats: &HashMap<usize, usize>,
) -> Result<Vec<GrantResult>, EventError> {
    let mut results: Vec<GrantResult> = Vec::with_capacity(user_ids.len());
    for (index, user_id) in user_ids.iter().enumerate() {
        let result = match repeats.get(&index) {
            Some(first) => {
                let first = results
                    .get(*first)
                    .ok_or(EventError::Internal("a repeated grant id lost its first"))?;
                match &first.claim_id {
                    Some(claim_id) => GrantResult {
                        user_id: user_id.clone(),
                        outcome: GrantOutcome::AlreadyClaimed,
                        claim_id: Some(claim_id.clone()),
                    },
                    None => first.clone(),
                }
            }
            None => decided
                .remove(&index)
                .ok_or(EventError::Internal("a listed grant id has no outcome"))?,
        };
        results.push(result);
    }
    Ok(results)
}

/// Whether `existing` was made by an earlier, interrupted run of this very grant (same
/// operator, same reason, since the grant's key was first reserved): it counts as this grant's
/// GRANTED, not as ALREADY_CLAIMED, so a re-run answers what the first run would have.
pub(crate) fn made_by_this_grant(
    existing: &Claim,
    caller_id: &str,
    reason: &str,
    reserved_at: chrono::DateTime<chrono::Utc>,
) -> bool {
    existing.granted_by.as_deref() == Some(caller_id)
        && existing.reason.as_deref() == Some(reason)
        && existing.requested_at >= reserved_at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn request(user_ids: Vec<String>, reason: &str, key: &str) -> GrantRequest {
        GrantRequest {
            event_id: "e".into(),
            user_ids,
            active_user_ids: Vec::new(),
            reason: reason.into(),
            idempotency_key: key.into(),
        }
    }

    fn fields(error: EventError) -> Vec<String> {
        match error {
            EventError::Validation(fields) => fields.into_iter().map(|f| f.field).collect(),
            other => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn validation_names_every_bad_field() {
        assert_eq!(
            validate(&request(ids(&["a"]), "  lost progress ", "k")).ok(),
            Some("lost progress".to_owned())
        );
        let long_id = "x".repeat(MAX_GRANT_USER_ID_CHARS + 1);
        let bad = request(ids(&["a", "", &long_id]), "   ", "");
        assert_eq!(
            fields(validate(&bad).unwrap_err()),
            ["userIds[1]", "userIds[2]", "reason", "Idempotency-Key"]
        );
        let none = request(Vec::new(), &"r".repeat(MAX_REASON_CHARS + 1), "k");
        assert_eq!(fields(validate(&none).unwrap_err()), ["userIds", "reason"]);
        let too_many = request(vec!["u".to_owned(); MAX_GRANT_USERS + 1], "r", "k");
        assert_eq!(fields(validate(&too_many).unwrap_err()), ["userIds"]);
        let long_key = request(ids(&["a"]), "r", &"k".repeat(MAX_KEY_CHARS + 1));
        assert_eq!(
            fields(validate(&long_key).unwrap_err()),
            ["Idempotency-Key"]
        );
    }

    #[test]
    fn screening_and_order() {
        let listed = ids(&["a", "me", "ghost", "b", "a", "ghost"]);
        let screened = screen("me", &listed, &ids(&["a", "b", "me"]));
        assert_eq!(screened.candidates, vec![(0, "a"), (3, "b")]);
        assert_eq!(screened.decided[&1].outcome, GrantOutcome::Forbidden);
        assert_eq!(screened.decided[&2].outcome, GrantOutcome::NotFound);
        assert_eq!(screened.repeats, HashMap::from([(4, 0), (5, 2)]));

        let mut decided = screened.decided;
        decided.insert(
            0,
            GrantResult {
                user_id: "a".into(),
                outcome: GrantOutcome::Granted,
                claim_id: Some("c1".into()),
            },
        );
        decided.insert(
            3,
            GrantResult {
                user_id: "b".into(),
                outcome: GrantOutcome::OutOfStock,
                claim_id: None,
            },
        );
        let results = in_order(&listed, decided, &screened.repeats).unwrap();
        let outcomes: Vec<(GrantOutcome, Option<&str>)> = results
            .iter()
            .map(|r| (r.outcome, r.claim_id.as_deref()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (GrantOutcome::Granted, Some("c1")),
                (GrantOutcome::Forbidden, None),
                (GrantOutcome::NotFound, None),
                (GrantOutcome::OutOfStock, None),
                (GrantOutcome::AlreadyClaimed, Some("c1")),
                (GrantOutcome::NotFound, None),
            ]
        );
        assert_eq!(results[4].user_id, "a");
        for outcome in [
            GrantOutcome::Granted,
            GrantOutcome::AlreadyClaimed,
            GrantOutcome::OutOfStock,
            GrantOutcome::NotFound,
            GrantOutcome::Forbidden,
        ] {
            assert_eq!(GrantOutcome::parse(outcome.as_str()), Some(outcome));
        }
    }
}
