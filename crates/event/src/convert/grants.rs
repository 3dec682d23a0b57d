//! A grant's request and answer.

use erp_proto::event::v1 as pb;

use crate::claims::grants::{GrantAnswer, GrantOutcome, GrantRequest};

pub(crate) fn grant_request(request: pb::GrantRequest) -> GrantRequest {
    GrantRequest {
        event_id: request.event_id,
        user_ids: request.user_ids,
        active_user_ids: request.active_user_ids,
        reason: request.reason,
        idempotency_key: request.idempotency_key,
    }
}

pub(crate) fn grant_response(answer: GrantAnswer) -> pb::GrantResponse {
    pb::GrantResponse {
        results: answer
            .results
            .into_iter()
            .map(|result| pb::GrantResult {
                user_id: result.user_id,
                outcome: match result.outcome {
                    GrantOutcome::Granted => pb::GrantOutcome::Granted,
                    GrantOutcome::AlreadyClaimed => pb::GrantOutcome::AlreadyClaimed,
                    GrantOutcome::OutOfStock => pb::GrantOutcome::OutOfStock,
                    GrantOutcome::NotFound => pb::GrantOutcome::NotFound,
                    GrantOutcome::Forbidden => pb::GrantOutcome::Forbidden,
                } as i32,
                claim_id: result.claim_id,
            })
            .collect(),
        replayed: answer.replayed,
    }
}
