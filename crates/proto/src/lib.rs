//! The gRPC contracts of the platform, generated from `proto/` at build time.
//!
//! Services and the gateway depend on this crate only; nothing else generates code from the
//! `.proto` files.

#![allow(clippy::all, missing_docs, unreachable_pub)]

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("erp.auth.v1");
    }
}

pub mod event {
    pub mod v1 {
        tonic::include_proto!("erp.event.v1");
    }
}
