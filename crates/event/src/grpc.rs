//! The gRPC face of the event service: reads the caller from the verified caller assertion,
//! decodes the request (`crate::convert`), calls the domain and encodes its answer. Errors are
//! mapped to gRPC statuses here, and logged here, once.

use std::sync::Arc;

use chrono::Utc;
use erp_platform::audit::{self, AuditFilter};
use erp_platform::error::ApiError;
use erp_platform::identity::{Caller, Service, VerifiedCall};
use erp_proto::common::v1 as common;
use erp_proto::event::v1 as pb;
use erp_proto::event::v1::event_service_server::EventService as EventRpc;
use erp_proto::time::from_timestamp;
use tonic::{Request, Response, Status};

use crate::convert::{
    claims_to_pb, details_to_pb, event_status_from_pb, event_to_pb, grant_request, grant_response,
    progress_items, reward_input_from_pb,
};
use crate::deliveries::DeliveryFilter;
use crate::error::{EventError, Fault};
use crate::model::{Claim, ClaimFilter, EventPatch, NewEvent, RewardPatch};
use crate::service::EventService;

/// The `service` of this service's audit entries in `GET /audit`.
const AUDIT_SERVICE: &str = "event";

pub(crate) struct EventGrpc {
    service: Arc<EventService>,
}

impl EventGrpc {
    pub(crate) fn new(service: Arc<EventService>) -> Self {
        Self { service }
    }

    /// Claims as messages, each granted one with its delivery as it is now.
    async fn claims_to_pb(&self, claims: &[Claim]) -> Result<Vec<pb::Claim>, EventError> {
        let deliveries = self.service.deliveries_of(claims).await?;
        Ok(claims_to_pb(claims, &deliveries))
    }

    async fn claim_to_pb(&self, claim: &Claim) -> Result<Option<pb::Claim>, EventError> {
        Ok(self.claims_to_pb(std::slice::from_ref(claim)).await?.pop())
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

/// The status a failed call answers; server-side faults are logged here, the one place every
/// error passes on its way out.
impl From<EventError> for Status {
    fn from(error: EventError) -> Self {
        match error.fault() {
            Some(Fault::StoreUnavailable) => tracing::warn!(%error, "mongodb unavailable"),
            Some(Fault::CacheUnavailable) => tracing::warn!(%error, "redis unavailable"),
            Some(Fault::Internal) => tracing::error!(%error, "internal error"),
            None => {}
        }
        ApiError::from(error).to_status()
    }
}

/// The person the verified caller assertion names; `None` for an anonymous call, which sees and
/// may do only what any anonymous client could.
fn caller<T>(request: &Request<T>) -> Result<Option<Caller>, EventError> {
    VerifiedCall::of(request)
        .map(|call| call.caller.clone())
        .map_err(|_| EventError::Unauthenticated)
}

/// The caller's deadline as its `grpc-timeout` header states it (at most 8 digits and a unit:
/// H, M, S, m, u, n); `None` without one, or with one that does not parse.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    if !value.is_char_boundary(split) || split == 0 || split > 8 {
        return None;
    }
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[tonic::async_trait]
impl EventRpc for EventGrpc {
    async fn create_event(
        &self,
        request: Request<pb::CreateEventRequest>,
    ) -> RpcResult<pb::CreateEventResponse> {
        let caller = caller(&request)?;
        let new = NewEvent::try_from(request.into_inner())?;
        let (event, rewards) = self.service.create_event(caller.as_ref(), new).await?;
        Ok(Response::new(pb::CreateEventResponse {
            event: Some(event_to_pb(&event, Utc::now())),
            rewards: rewards.iter().map(pb::Reward::from).collect(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> RpcResult<pb::GetEventResponse> {
        let caller = caller(&request)?;
        let event = self
            .service
            .get_event(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::GetEventResponse {
            event: Some(event_to_pb(&event, Utc::now())),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> RpcResult<pb::ListEventsResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let status = body.status.map(event_status_from_pb).transpose()?;
        let page = self
            .service
            .list_events(caller.as_ref(), status, body.limit, &body.cursor)
            .await?;
        let now = Utc::now();
        Ok(Response::new(pb::ListEventsResponse {
            items: page.items.iter().map(|e| event_to_pb(e, now)).collect(),
            next_cursor: page.next_cursor.clone(),
        }))
    }

    async fn update_event(
        &self,
        request: Request<pb::UpdateEventRequest>,
    ) -> RpcResult<pb::UpdateEventResponse> {
        let caller = caller(&request)?;
        let mut body = request.into_inner();
        let id = std::mem::take(&mut body.id);
        let patch = EventPatch::try_from(body)?;
        let event = self
            .service
            .update_event(caller.as_ref(), &id, patch)
            .await?;
        Ok(Response::new(pb::UpdateEventResponse {
            event: Some(event_to_pb(&event, Utc::now())),
        }))
    }

    async fn delete_event(
        &self,
        request: Request<pb::DeleteEventRequest>,
    ) -> RpcResult<pb::DeleteEventResponse> {
        let caller = caller(&request)?;
        self.service
            .delete_event(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeleteEventResponse {}))
    }

    async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> RpcResult<pb::CreateRewardResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let input = body
            .reward
            .as_ref()
            .ok_or_else(|| EventError::field("reward", "is required"))
            .and_then(|r| reward_input_from_pb(r, ""))?;
        let reward = self
            .service
            .create_reward(caller.as_ref(), &body.event_id, input)
            .await?;
        Ok(Response::new(pb::CreateRewardResponse {
            reward: Some(pb::Reward::from(&reward)),
        }))
    }

    async fn list_rewards(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> RpcResult<pb::ListRewardsResponse> {
        let caller = caller(&request)?;
        let rewards = self
            .service
            .list_rewards(caller.as_ref(), &request.into_inner().event_id)
            .await?;
        Ok(Response::new(pb::ListRewardsResponse {
            items: rewards.iter().map(pb::Reward::from).collect(),
        }))
    }

    async fn get_reward(
        &self,
        request: Request<pb::GetRewardRequest>,
    ) -> RpcResult<pb::GetRewardResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let reward = self
            .service
            .get_reward(caller.as_ref(), &body.event_id, &body.reward_id)
            .await?;
        Ok(Response::new(pb::GetRewardResponse {
            reward: Some(pb::Reward::from(&reward)),
        }))
    }

    async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> RpcResult<pb::UpdateRewardResponse> {
        let caller = caller(&request)?;
        let mut body = request.into_inner();
        let (event_id, reward_id) = (
            std::mem::take(&mut body.event_id),
            std::mem::take(&mut body.reward_id),
        );
        let patch = RewardPatch::try_from(body)?;
        let reward = self
            .service
            .update_reward(caller.as_ref(), &event_id, &reward_id, patch)
            .await?;
        Ok(Response::new(pb::UpdateRewardResponse {
            reward: Some(pb::Reward::from(&reward)),
        }))
    }

    async fn delete_reward(
        &self,
        request: Request<pb::DeleteRewardRequest>,
    ) -> RpcResult<pb::DeleteRewardResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        self.service
            .delete_reward(caller.as_ref(), &body.event_id, &body.reward_id)
            .await?;
        Ok(Response::new(pb::DeleteRewardResponse {}))
    }

    async fn record_activity(
        &self,
        request: Request<pb::RecordActivityRequest>,
    ) -> RpcResult<pb::RecordActivityResponse> {
        // Logins are reported by the auth service's relay only, never on a person's behalf.
        match VerifiedCall::of(&request) {
            Ok(call) if call.issuer == Service::Auth && call.caller.is_none() => {}
            Ok(_) => return Err(EventError::Forbidden.into()),
            Err(_) => return Err(EventError::Unauthenticated.into()),
        }
        let body = request.into_inner();
        if pb::ActivityKind::try_from(body.kind) != Ok(pb::ActivityKind::Login) {
            return Err(EventError::field("kind", "must be LOGIN").into());
        }
        let occurred_at = from_timestamp(body.occurred_at).unwrap_or_else(Utc::now);
        let duplicate = self
            .service
            .record_login(&body.idempotency_key, &body.user_id, occurred_at)
            .await?;
        Ok(Response::new(pb::RecordActivityResponse { duplicate }))
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> RpcResult<pb::ReportProgressResponse> {
        let caller = caller(&request)?;
        let now = Utc::now();
        let items = progress_items(request.into_inner().items, now)?;
        let applied = self.service.report_progress(caller.as_ref(), items).await?;
        Ok(Response::new(pb::ReportProgressResponse {
            accepted: applied.accepted,
            duplicates: applied.duplicates,
        }))
    }

    async fn get_progress(
        &self,
        request: Request<pb::GetProgressRequest>,
    ) -> RpcResult<pb::GetProgressResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let user_id = if body.user_id.is_empty() {
            caller
                .as_ref()
                .map(|c| c.user_id.clone())
                .unwrap_or_default()
        } else {
            body.user_id
        };
        let evaluation = self
            .service
            .progress(caller.as_ref(), &body.event_id, &user_id)
            .await?;
        Ok(Response::new(pb::GetProgressResponse {
            event_id: body.event_id,
            user_id,
            passed: evaluation.passed,
            details: details_to_pb(&evaluation),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<common::ListAuditRequest>,
    ) -> RpcResult<common::ListAuditResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let filter = AuditFilter::from(&body);
        let page = self
            .service
            .list_audit(caller.as_ref(), filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(audit::page_to_pb(page, AUDIT_SERVICE)))
    }

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> RpcResult<pb::ClaimResponse> {
        let caller = caller(&request)?;
        let timeout = grpc_timeout(request.metadata());
        let body = request.into_inner();
        let outcome = self
            .service
            .claim_within(
                caller.as_ref(),
                &body.event_id,
                body.idempotency_key.as_deref(),
                timeout,
            )
            .await?;
        Ok(Response::new(pb::ClaimResponse {
            claim: self.claim_to_pb(&outcome.claim).await?,
            replayed: outcome.replayed,
        }))
    }

    async fn get_claim(
        &self,
        request: Request<pb::GetClaimRequest>,
    ) -> RpcResult<pb::GetClaimResponse> {
        let caller = caller(&request)?;
        let claim = self
            .service
            .get_claim(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::GetClaimResponse {
            claim: self.claim_to_pb(&claim).await?,
        }))
    }

    async fn list_my_claims(
        &self,
        request: Request<pb::ListMyClaimsRequest>,
    ) -> RpcResult<pb::ListMyClaimsResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let filter = ClaimFilter::try_from(&body)?;
        let page = self
            .service
            .list_my_claims(caller.as_ref(), filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListMyClaimsResponse {
            items: self.claims_to_pb(&page.items).await?,
            next_cursor: page.next_cursor,
        }))
    }

    async fn list_claims(
        &self,
        request: Request<pb::ListClaimsRequest>,
    ) -> RpcResult<pb::ListClaimsResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let filter = ClaimFilter::try_from(&body)?;
        let page = self
            .service
            .list_claims(caller.as_ref(), filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListClaimsResponse {
            items: self.claims_to_pb(&page.items).await?,
            next_cursor: page.next_cursor,
        }))
    }

    async fn approve_claim(
        &self,
        request: Request<pb::ApproveClaimRequest>,
    ) -> RpcResult<pb::ApproveClaimResponse> {
        let caller = caller(&request)?;
        let claim = self
            .service
            .approve_claim(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::ApproveClaimResponse {
            claim: self.claim_to_pb(&claim).await?,
        }))
    }

    async fn reject_claim(
        &self,
        request: Request<pb::RejectClaimRequest>,
    ) -> RpcResult<pb::RejectClaimResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let claim = self
            .service
            .reject_claim(caller.as_ref(), &body.id, &body.reason)
            .await?;
        Ok(Response::new(pb::RejectClaimResponse {
            claim: self.claim_to_pb(&claim).await?,
        }))
    }

    async fn get_dashboard(
        &self,
        request: Request<pb::GetDashboardRequest>,
    ) -> RpcResult<pb::GetDashboardResponse> {
        let caller = caller(&request)?;
        let dashboard = self.service.dashboard(caller.as_ref()).await?;
        Ok(Response::new(pb::GetDashboardResponse {
            dashboard: Some(pb::Dashboard::from(&dashboard)),
        }))
    }

    async fn grant(&self, request: Request<pb::GrantRequest>) -> RpcResult<pb::GrantResponse> {
        let caller = caller(&request)?;
        let answer = self
            .service
            .grant(caller.as_ref(), grant_request(request.into_inner()))
            .await?;
        Ok(Response::new(grant_response(answer)))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> RpcResult<pb::ListDeliveriesResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let filter = DeliveryFilter::try_from(&body)?;
        let page = self
            .service
            .list_deliveries(caller.as_ref(), filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            items: page.items.iter().map(pb::Delivery::from).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> RpcResult<pb::GetDeliveryResponse> {
        let caller = caller(&request)?;
        let delivery = self
            .service
            .get_delivery(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::GetDeliveryResponse {
            delivery: Some(pb::Delivery::from(&delivery)),
        }))
    }

    async fn ack_delivery(
        &self,
        request: Request<pb::AckDeliveryRequest>,
    ) -> RpcResult<pb::AckDeliveryResponse> {
        let caller = caller(&request)?;
        let delivery = self
            .service
            .ack_delivery(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::AckDeliveryResponse {
            delivery: Some(pb::Delivery::from(&delivery)),
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> RpcResult<pb::RetryDeliveryResponse> {
        let caller = caller(&request)?;
        let delivery = self
            .service
            .retry_delivery(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::RetryDeliveryResponse {
            delivery: Some(pb::Delivery::from(&delivery)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::grpc_timeout;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().ok()?);
        grpc_timeout(&metadata)
    }

    #[test]
    fn grpc_timeout_header_parses_every_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(timeout_of("m"), None);
        assert_eq!(timeout_of("123456789m"), None, "at most 8 digits");
        assert_eq!(timeout_of("10x"), None);
        assert_eq!(timeout_of("-1S"), None);
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }
}
