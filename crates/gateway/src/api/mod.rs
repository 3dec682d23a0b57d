//! The `/api/v1` resources, one module each with its handlers, its JSON shapes (`dto.rs`) and its
//! [`Endpoint`]s, each declared once: the router, the access table and the OpenAPI document's
//! security requirements are built from them. What several resources share (paging, times,
//! problem responses) lives beside them.

mod audit;
mod auth;
mod claims;
mod dashboard;
mod deliveries;
mod endpoint;
mod events;
mod fields;
mod grants;
mod idempotency;
mod paging;
mod progress;
mod responses;
mod rewards;
mod service_accounts;
mod time;
mod users;

use std::sync::Arc;

use axum::Json;
use erp_platform::error::ApiError;
use utoipa_axum::router::OpenApiRouter;

use crate::access::Rule;
use crate::introspection::Session;
use crate::problem::Problem;
use crate::state::AppState;
use crate::upstream::upstream;

pub(crate) use audit::AuditService;
pub(crate) use claims::ClaimStatus;
pub(crate) use deliveries::DeliveryStatus;
use endpoint::Endpoint;
pub(crate) use events::{ClaimPolicy, Condition, EventStatus, PublicationState};
pub(crate) use progress::ProgressMode;
pub(crate) use rewards::RewardType;
pub(crate) use users::RoleName;

/// Every resource's endpoints.
const RESOURCES: &[&[Endpoint]] = &[
    auth::ENDPOINTS,
    users::ENDPOINTS,
    service_accounts::ENDPOINTS,
    events::ENDPOINTS,
    rewards::ENDPOINTS,
    progress::ENDPOINTS,
    claims::ENDPOINTS,
    grants::ENDPOINTS,
    deliveries::ENDPOINTS,
    audit::ENDPOINTS,
    dashboard::ENDPOINTS,
];

fn endpoints() -> impl Iterator<Item = &'static Endpoint> {
    RESOURCES.iter().flat_map(|resource| resource.iter())
}

/// Every endpoint with its OpenAPI description, added to `document`. The handlers' paths carry
/// the `/api/v1` prefix themselves: a nested router would rewrite every request's URI.
pub(crate) fn router(document: utoipa::openapi::OpenApi) -> OpenApiRouter<AppState> {
    endpoint::described(OpenApiRouter::with_openapi(document), endpoints())
}

/// The access rule of every endpoint.
pub(crate) fn rules() -> Vec<Rule> {
    endpoint::rules(endpoints())
}

/// The verified session of an authenticated route (set by the authorisation middleware).
type Auth = axum::Extension<Arc<Session>>;

impl Session {
    /// A gRPC request acting for this session's caller.
    fn request<T>(&self, body: T) -> tonic::Request<T> {
        upstream(body, Some(&self.caller))
    }
}

/// The part of a service's answer a route returns, in its public form; a service that left it
/// out has failed.
fn required<T: From<P>, P>(part: Option<P>) -> Result<Json<T>, Problem> {
    part.map(|part| Json(T::from(part)))
        .ok_or_else(|| Problem(ApiError::internal()))
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::events::dto::{CreateEventBody, UpdateEventBody};
    use super::progress::dto::ProgressBody;
    use super::rewards::dto::UpdateRewardBody;

    fn dto_field<T: DeserializeOwned>(bytes: &str) -> String {
        match crate::extract::parse_json::<T>(bytes.as_bytes()) {
            Ok(_) => "accepted".to_owned(),
            Err(problem) => problem.0.fields[0].field.clone(),
        }
    }

    #[test]
    fn null_and_wrong_types_name_the_field_of_real_bodies() {
        let event =
            r#""title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z""#;
        type Case = (String, &'static str, fn(&str) -> String);
        let cases: Vec<Case> = vec![
            (r#"{"items": [{"userId": "u", "metric": "m", "value": 1, "mode": null}]}"#.into(), "items[0].mode", dto_field::<ProgressBody>),
            (r#"{"items": [{"userId": "u", "metric": "m", "value": "1", "mode": "MAX"}]}"#.into(), "items[0].value", dto_field::<ProgressBody>),
            (r#"{"items": [{"userId": "u", "metric": "m", "value": 1, "mode": "MAX", "occurredAt": "0000-01-01T00:00:00Z"}]}"#.into(), "items[0].occurredAt", dto_field::<ProgressBody>),
            (r#"{"items": null}"#.into(), "items", dto_field::<ProgressBody>),
            (r#"{"items": 3}"#.into(), "items", dto_field::<ProgressBody>),
            (format!(r#"{{{event}, "claimPolicy": 5}}"#), "claimPolicy", dto_field::<CreateEventBody>),
            (format!(r#"{{{event}, "draft": "yes"}}"#), "draft", dto_field::<CreateEventBody>),
            (format!(r#"{{{event}, "rewards": [{{"name": "g", "type": null, "quantity": 1}}]}}"#), "rewards[0].type", dto_field::<CreateEventBody>),
            (format!(r#"{{{event}, "rewards": [{{"name": "g", "type": 7, "quantity": 1}}]}}"#), "rewards[0].type", dto_field::<CreateEventBody>),
            (r#"{"title": "t", "startsAt": "0000-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z"}"#.into(), "startsAt", dto_field::<CreateEventBody>),
            (r#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "+10000-01-01T00:00:00Z"}"#.into(), "endsAt", dto_field::<CreateEventBody>),
            (r#"{"title": "t", "startsAt": null, "endsAt": "2031-01-01T00:00:00Z"}"#.into(), "startsAt", dto_field::<CreateEventBody>),
            (r#"{"title": "t", "startsAt": 5, "endsAt": "2031-01-01T00:00:00Z"}"#.into(), "startsAt", dto_field::<CreateEventBody>),
            (r#"{"state": 5}"#.into(), "state", dto_field::<UpdateEventBody>),
            (r#"{"claimPolicy": true}"#.into(), "claimPolicy", dto_field::<UpdateEventBody>),
            (r#"{"startsAt": "1969-12-31T23:59:59Z"}"#.into(), "startsAt", dto_field::<UpdateEventBody>),
            (r#"{"description": 5}"#.into(), "description", dto_field::<UpdateEventBody>),
            (r#"{"type": 5}"#.into(), "type", dto_field::<UpdateRewardBody>),
        ];
        let mut failures = Vec::new();
        for (body, expected, parse) in cases {
            let got = parse(&body);
            if got != expected {
                failures.push(format!("{body}: named {got:?}, wanted {expected:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // The bounds themselves are accepted.
        assert_eq!(
            dto_field::<UpdateEventBody>(
                r#"{"startsAt": "1970-01-01T00:00:00Z", "endsAt": "9999-12-31T23:59:59Z"}"#
            ),
            "accepted"
        );
    }
}
