//! Manual claims over gRPC against the real stores: pending claims hold their stock, rejection
//! gives it back, approval grants, a claim is decided once however decisions race, and only
//! operators and admins decide.

use crate::common::*;
use erp_proto::event::v1 as pb;
use futures::future::join_all;

#[tokio::test]
async fn pending_claims_hold_stock_until_decided() {
    let service = TestEvent::start().await;
    let mut request = manual(active_event_request("review"));
    request.rewards = vec![reward("Gold", Some(2))];
    let (event, _) = service.create(request).await;

    let first = service.claimed(&player("m1"), &event.id).await;
    let second = service.claimed(&player("m2"), &event.id).await;
    for claim in [&first, &second] {
        assert_eq!(claim.status, pb::ClaimStatus::Pending as i32);
        assert_eq!(claim.decided_at, None);
        assert_eq!(claim.decided_by, None);
    }
    assert_eq!(service.rewards(&event.id).await[0].remaining, Some(0));
    let waiting = service
        .claim(&player("m3"), &event.id, None)
        .await
        .unwrap_err();
    assert_eq!(
        code(&waiting),
        "OUT_OF_STOCK",
        "pending claims hold the stock"
    );

    let rejected = reject(&service, &operator(), &first.id, "duplicate account")
        .await
        .unwrap();
    assert_eq!(rejected.status, pb::ClaimStatus::Rejected as i32);
    assert_eq!(rejected.reason.as_deref(), Some("duplicate account"));
    assert_eq!(rejected.decided_by.as_deref(), Some("operator-1"));
    assert!(rejected.decided_at.is_some());
    assert_eq!(service.rewards(&event.id).await[0].remaining, Some(1));
    let third = service.claimed(&player("m3"), &event.id).await;
    assert_eq!(third.status, pb::ClaimStatus::Pending as i32);

    let approved = approve(&service, &admin(), &second.id).await.unwrap();
    assert_eq!(approved.status, pb::ClaimStatus::Granted as i32);
    assert_eq!(approved.decided_by.as_deref(), Some("admin-1"));
    assert_eq!(service.rewards(&event.id).await[0].remaining, Some(0));
    // A rejected player may not claim again: the claim exists.
    let again = service
        .claim(&player("m1"), &event.id, None)
        .await
        .unwrap_err();
    assert_eq!(code(&again), "ALREADY_CLAIMED");

    for decided in [&first.id, &second.id] {
        assert_eq!(
            code(&approve(&service, &operator(), decided).await.unwrap_err()),
            "INVALID_STATE"
        );
        assert_eq!(
            code(
                &reject(&service, &operator(), decided, "late")
                    .await
                    .unwrap_err()
            ),
            "INVALID_STATE"
        );
    }
    assert_eq!(
        code(
            &approve(&service, &operator(), "no-such-claim")
                .await
                .unwrap_err()
        ),
        "NOT_FOUND"
    );
    assert_eq!(
        code(
            &reject(&service, &operator(), "no-such-claim", "x")
                .await
                .unwrap_err()
        ),
        "NOT_FOUND"
    );
    for who in [player("m3"), auditor()] {
        assert_eq!(
            code(&approve(&service, &who, &third.id).await.unwrap_err()),
            "FORBIDDEN"
        );
        assert_eq!(
            code(&reject(&service, &who, &third.id, "no").await.unwrap_err()),
            "FORBIDDEN"
        );
    }
    for reason in ["", "   ", &"r".repeat(501)] {
        let invalid = reject(&service, &operator(), &third.id, reason)
            .await
            .unwrap_err();
        assert_eq!(fields(&invalid), ["reason"]);
    }
    reject(&service, &operator(), &third.id, &"r".repeat(500))
        .await
        .unwrap();

    assert_eq!(service.audit("CLAIM_PENDING").await.len(), 3);
    assert_eq!(service.audit("CLAIM_GRANTED").await.len(), 0);
    let approvals = service.audit("CLAIM_APPROVED").await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].actor_id, "admin-1");
    assert_eq!(approvals[0].entity_id, second.id);
    let rejections = service.audit("CLAIM_REJECTED").await;
    assert_eq!(rejections.len(), 2);
    let before: serde_json::Value =
        serde_json::from_str(rejections[1].before_json.as_deref().unwrap()).unwrap();
    let after: serde_json::Value =
        serde_json::from_str(rejections[1].after_json.as_deref().unwrap()).unwrap();
    assert_eq!(before["status"], "PENDING");
    assert_eq!(after["status"], "REJECTED");
    assert_eq!(after["reason"], "duplicate account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_approve_and_reject_decide_each_claim_once() {
    let service = TestEvent::start().await;
    let mut request = manual(active_event_request("contested"));
    request.rewards = vec![reward("Gold", Some(20)), reward("Badge", None)];
    let (event, rewards) = service.create(request).await;
    let mut claims = Vec::new();
    for i in 0..10 {
        claims.push(service.claimed(&player(&format!("r{i}")), &event.id).await);
    }
    assert_eq!(service.rewards(&event.id).await[0].remaining, Some(10));

    let (approver, rejecter) = (operator(), admin());
    let races = claims.iter().map(|claim| async {
        tokio::join!(
            approve(&service, &approver, &claim.id),
            reject(&service, &rejecter, &claim.id, "race"),
        )
    });
    let mut granted = 0;
    for (approved, rejected) in join_all(races).await {
        match (approved, rejected) {
            (Ok(claim), Err(refused)) => {
                assert_eq!(claim.status, pb::ClaimStatus::Granted as i32);
                assert_eq!(code(&refused), "INVALID_STATE");
                granted += 1;
            }
            (Err(refused), Ok(claim)) => {
                assert_eq!(claim.status, pb::ClaimStatus::Rejected as i32);
                assert_eq!(code(&refused), "INVALID_STATE");
            }
            other => panic!("exactly one decision must win: {other:?}"),
        }
    }
    let approvals = service.audit("CLAIM_APPROVED").await.len();
    let rejections = service.audit("CLAIM_REJECTED").await.len();
    assert_eq!((approvals, rejections), (granted, 10 - granted));
    let now = service.rewards(&event.id).await;
    assert_eq!(now[0].remaining, Some(10 + (10 - granted as i64)));
    assert_eq!(now[1].id, rewards[1].id);
    let stored = stored_rewards(&service, &event.id).await;
    let held = granted as i64;
    assert_eq!(int(&stored[0], "claimed"), held);
    assert_eq!(
        int(&stored[1], "claimed"),
        held,
        "unlimited rewards count too"
    );
    for claim in &claims {
        let decided = service.get_claim(&operator(), &claim.id).await.unwrap();
        assert_ne!(decided.status, pb::ClaimStatus::Pending as i32);
    }
}
