//! Where the auth service keeps its state: users, audit and the login outbox in MongoDB
//! ([`mongo`]); sessions (refresh families and tokens) durable in MongoDB with their state cached
//! in Redis, and the access-token deny list, login lockout counters and the revocation channel in
//! Redis ([`sessions`]); service accounts in MongoDB, apart from users ([`service_accounts`]).

pub mod mongo;
pub mod service_accounts;
pub mod sessions;

pub use mongo::{AuthStore, OutboxItem};
pub use sessions::{LockoutSubject, LoginAttempt, RefreshOutcome, Revocation, SessionStore};
