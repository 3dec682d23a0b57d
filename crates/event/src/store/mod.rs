//! Where the event service keeps its state in MongoDB: the catalog of events and rewards
//! ([`catalog`]), player activity buckets ([`activity`]), claims and their stock ([`claims`]), the
//! dashboard's rollups ([`tallies`]) and the audit trail.

pub mod activity;
pub mod catalog;
pub mod claims;
pub mod tallies;

pub use activity::ActivityStore;
pub use catalog::CatalogStore;
pub use claims::ClaimStore;
pub use tallies::TallyStore;
