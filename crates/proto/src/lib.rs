//! The gRPC contracts of the platform, generated from `proto/` at build time.
//!
//! Services and the gateway depend on this crate only; nothing else generates code from the
//! `.proto` files.

#![allow(clippy::all, missing_docs, unreachable_pub)]

pub mod codec;

/// Shapes both services expose the same way (roles, the audit trail): one type each.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("erp.common.v1");
    }
}

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

/// Limits of the contract that both the gateway (which parses the public JSON) and the event
/// service (which validates what it stores) apply: one owner, so their messages agree.
pub mod limits {
    /// Levels of nesting a condition tree may have (a lone leaf is one level).
    pub const MAX_CONDITION_DEPTH: usize = 5;
    /// Leaves a condition tree may have.
    pub const MAX_CONDITION_LEAVES: usize = 32;
}

/// Conversions between protobuf timestamps and `chrono` UTC times, shared by every service.
pub mod time {
    use chrono::{DateTime, Utc};

    pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }
    }

    /// `None` for an absent or out-of-range timestamp.
    pub fn from_timestamp(at: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
        at.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
    }
}
