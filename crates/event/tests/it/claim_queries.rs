//! Reading claims over gRPC against the real stores: owners and staff only, the caller's own
//! list and everyone's with filters, newest first with stable cursors.

use crate::common::*;
use chrono::Utc;
use erp_platform::identity::Caller;
use erp_proto::event::v1 as pb;

async fn my_claims(
    service: &TestEvent,
    who: &Caller,
    request: pb::ListMyClaimsRequest,
) -> Result<pb::ListMyClaimsResponse, tonic::Status> {
    service
        .client()
        .list_my_claims(as_caller(who, request))
        .await
        .map(tonic::Response::into_inner)
}

async fn all_claims(
    service: &TestEvent,
    who: &Caller,
    request: pb::ListClaimsRequest,
) -> Result<pb::ListClaimsResponse, tonic::Status> {
    service
        .client()
        .list_claims(as_caller(who, request))
        .await
        .map(tonic::Response::into_inner)
}

fn ids(claims: &[pb::Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.id.as_str()).collect()
}

#[tokio::test]
async fn a_claim_is_read_by_its_owner_and_staff_only() {
    let service = TestEvent::start().await;
    let (event, _) = service.create(active_event_request("mine")).await;
    let owner = player("owner");
    let claim = service.claimed(&owner, &event.id).await;
    assert_eq!(service.get_claim(&owner, &claim.id).await.unwrap(), claim);
    for staff in [operator(), auditor(), admin()] {
        assert_eq!(service.get_claim(&staff, &claim.id).await.unwrap(), claim);
    }
    let stranger = service
        .get_claim(&player("stranger"), &claim.id)
        .await
        .unwrap_err();
    assert_eq!(code(&stranger), "FORBIDDEN");
    let missing = service
        .get_claim(&owner, "no-such-claim")
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "NOT_FOUND");
    let anonymous = service
        .client()
        .get_claim(pb::GetClaimRequest {
            id: claim.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
}

#[tokio::test]
async fn lists_filter_and_page_newest_first() {
    let service = TestEvent::start().await;
    let (auto, _) = service.create(active_event_request("auto")).await;
    let (review, _) = service.create(manual(active_event_request("review"))).await;
    let (third, _) = service.create(active_event_request("third")).await;
    let me = player("lister");
    let other = player("other");
    let before = Utc::now();
    let mine = [
        service.claimed(&me, &auto.id).await,
        service.claimed(&me, &review.id).await,
        service.claimed(&me, &third.id).await,
    ];
    let theirs = [
        service.claimed(&other, &auto.id).await,
        service.claimed(&other, &review.id).await,
    ];

    let own = my_claims(&service, &me, pb::ListMyClaimsRequest::default())
        .await
        .unwrap();
    assert_eq!(
        ids(&own.items),
        [&mine[2].id, &mine[1].id, &mine[0].id],
        "only the caller's, newest first"
    );
    assert_eq!(own.next_cursor, None);
    let pending = my_claims(
        &service,
        &me,
        pb::ListMyClaimsRequest {
            status: Some(pb::ClaimStatus::Pending as i32),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&pending.items), [&mine[1].id]);
    let of_event = my_claims(
        &service,
        &me,
        pb::ListMyClaimsRequest {
            event_id: Some(auto.id.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&of_event.items), [&mine[0].id]);
    let bad_status = my_claims(
        &service,
        &me,
        pb::ListMyClaimsRequest {
            status: Some(42),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&bad_status), ["status"]);

    // Everyone's: staff only.
    let refused = all_claims(&service, &me, pb::ListClaimsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "FORBIDDEN");
    let everyone = all_claims(&service, &auditor(), pb::ListClaimsRequest::default())
        .await
        .unwrap();
    assert_eq!(
        ids(&everyone.items),
        [
            &theirs[1].id,
            &theirs[0].id,
            &mine[2].id,
            &mine[1].id,
            &mine[0].id
        ]
    );
    let filtered = all_claims(
        &service,
        &operator(),
        pb::ListClaimsRequest {
            user_id: Some("other".into()),
            event_id: Some(review.id.clone()),
            status: Some(pb::ClaimStatus::Pending as i32),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&filtered.items), [&theirs[1].id]);
    let in_window = all_claims(
        &service,
        &admin(),
        pb::ListClaimsRequest {
            from: ts(before - chrono::Duration::seconds(1)),
            to: ts(Utc::now() + chrono::Duration::seconds(1)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(in_window.items.len(), 5);
    let future = all_claims(
        &service,
        &admin(),
        pb::ListClaimsRequest {
            from: ts(Utc::now() + chrono::Duration::hours(1)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(future.items.is_empty());

    // Pages of two: every claim once, in order, then no cursor.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = all_claims(
            &service,
            &operator(),
            pb::ListClaimsRequest {
                limit: 2,
                cursor: cursor.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(page.items.len() <= 2);
        paged.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(ids(&paged), ids(&everyone.items));
    let bad_cursor = all_claims(
        &service,
        &operator(),
        pb::ListClaimsRequest {
            cursor: "not-a-cursor".into(),
            limit: 500,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&bad_cursor), ["limit", "cursor"]);
}
