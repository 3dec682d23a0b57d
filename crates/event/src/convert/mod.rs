//! Conversions between the gRPC messages (`erp_proto::event::v1`) and the domain: `From` where
//! a domain value becomes a message, `TryFrom` where a request becomes a domain value (unknown
//! enum values and malformed conditions are validation errors naming the field), and small
//! functions where the orphan rule or an extra argument (a field path, the clock) needs one.

mod condition;
mod deliveries;
mod enums;
mod grants;
mod requests;
mod responses;

pub(crate) use deliveries::claims_to_pb;
pub(crate) use enums::event_status_from_pb;
pub(crate) use grants::{grant_request, grant_response};
pub(crate) use requests::{progress_items, reward_input_from_pb};
pub(crate) use responses::{details_to_pb, event_to_pb};
