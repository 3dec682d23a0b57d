//! What one caller assertion costs: signing (the gateway, per upstream call) and verifying (the
//! service called), in CPU time on one thread. `cargo run --release -p erp-platform --example
//! assertion_cost` (see docs/benchmarks.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use erp_platform::identity::{
    AssertionSigner, AssertionVerifier, Caller, IdentityKeys, OnBehalfOf, Role, Service,
};
use tonic::metadata::{MetadataMap, MetadataValue};

const CALLS: u32 = 200_000;

fn main() {
    let keys = IdentityKeys::from_secrets(b"benchmark-identity-key-0123456789abcdef", &[]).unwrap();
    let signer = AssertionSigner::new(Service::Gateway, keys.clone());
    let verifier = AssertionVerifier::new(Service::Event, keys);
    let player = OnBehalfOf {
        caller: Some(Caller {
            user_id: "019ad1c2-7f0e-7a51-9d1e-3c4b5a697887".into(),
            roles: vec![Role::User],
        }),
        client_ip: None,
    };

    let started = Instant::now();
    let mut token = String::new();
    for _ in 0..CALLS {
        token = signer.sign(Service::Event, &player).unwrap();
    }
    let sign = started.elapsed() / CALLS;

    let mut metadata = MetadataMap::new();
    metadata.insert(
        erp_platform::identity::ASSERTION_KEY,
        MetadataValue::try_from(token.as_str()).unwrap(),
    );
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(verifier.verify(&metadata).unwrap());
    }
    let verify = started.elapsed() / CALLS;
    println!(
        "assertion of {} bytes: sign {sign:?}, verify {verify:?} per call ({CALLS} calls each)",
        token.len()
    );
}
