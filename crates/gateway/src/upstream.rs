//! The gateway's side of the gRPC calls to auth and event: the clients' types and the requests
//! that carry the caller and the trace context.

use erp_platform::grpc_metrics::Measured;
use erp_platform::identity::{Asserting, Caller, OnBehalfOf};
use erp_proto::auth::v1::auth_service_client::AuthServiceClient;
use erp_proto::event::v1::event_service_client::EventServiceClient;
use tonic::transport::Channel;

/// A client of the auth service whose calls carry the gateway's signed caller assertion.
pub(crate) type AuthClient = AuthServiceClient<Asserting<Measured<Channel>>>;
/// A client of the event service whose calls carry the gateway's signed caller assertion.
pub(crate) type EventClient = EventServiceClient<Asserting<Measured<Channel>>>;

/// A gRPC request acting for `caller` (signed into a caller assertion by the client channel). The
/// trace context is added by the client channel, from the call's own CLIENT span.
pub(crate) fn upstream<T>(body: T, caller: Option<&Caller>) -> tonic::Request<T> {
    upstream_from(body, caller, None)
}

/// [`upstream`] that also tells the service the end client's address (logins count failures
/// per account and address).
pub(crate) fn upstream_from<T>(
    body: T,
    caller: Option<&Caller>,
    client_ip: Option<std::net::IpAddr>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.extensions_mut().insert(OnBehalfOf {
        caller: caller.cloned(),
        client_ip,
    });
    request
}
