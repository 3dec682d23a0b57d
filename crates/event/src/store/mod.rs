//! Where the event service keeps its state in MongoDB: the catalog of events and rewards
//! ([`catalog`]), player activity buckets ([`activity`]), claims and their stock ([`claims`]), the
//! dashboard's rollups ([`tallies`]) and the audit trail. The stores take and return domain
//! types; their documents stay in here.

mod activity;
mod catalog;
mod claims;
mod deliveries;
mod tallies;

pub(crate) use activity::{ActivityStore, Applied};
pub(crate) use catalog::CatalogStore;
pub use catalog::EventQuery;
#[cfg(feature = "test-util")]
pub(crate) use claims::delta_for_imported;
pub(crate) use claims::{
    ClaimStore, Decided, Decision, GrantLease, GrantRecord, Placement, RecordedAnswer,
    RecordedRequest, SYSTEM_ACTOR,
};
pub(crate) use deliveries::{DeliveryStore, DueDelivery, Leased, Moved, PushOutcome, Pushed};
pub(crate) use tallies::TallyStore;
