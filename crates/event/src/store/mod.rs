//! Where the event service keeps its state in MongoDB: the catalog of events and rewards
//! ([`catalog`]), player activity buckets ([`activity`]) and the audit trail.

pub mod activity;
pub mod catalog;

pub use activity::ActivityStore;
pub use catalog::CatalogStore;
