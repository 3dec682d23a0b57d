//! Where the auth service keeps its state: users, audit and the login outbox in MongoDB
//! ([`mongo`]); sessions (refresh families and tokens) durable in MongoDB with their state cached
//! in Redis, and the access-token deny list, login lockout counters and the revocation channel in
//! Redis ([`sessions`]).

pub mod mongo;
pub mod sessions;

pub use mongo::{AuthStore, OutboxItem};
pub use sessions::{LoginAttempt, RefreshOutcome, Revocation, SessionStore};
