//! State: the embedded store (SQLite, one file) of what walhook must remember across restarts:
//! events held for a later attempt, dead letters, subscriber state and the confirmed LSN.
//!
//! Storing an event here settles it: the ack tracker may then confirm its LSN to Postgres,
//! because the event no longer needs the WAL. Hence every write is durable when it returns
//! (`synchronous=FULL`) and atomic (one transaction per call, however many events it takes).
//! The store knows no HTTP and never talks to Postgres; the dispatcher decides what to store.
//!
//! Order per key is kept here, not by the caller: see [`Store::due`] and [`Store::must_hold`].

mod ack;
mod backfills;
mod dead_letters;
mod error;
mod millis;
mod pending;
mod schema;
mod shared;
mod store;
mod subscribers;

pub use ack::AckTracker;
pub use backfills::{Backfill, BackfillStatus, NewBackfill};
pub use dead_letters::{DeadLetter, DeadLetterFilter, DeadLetterInsert};
pub use error::StateError;
pub use millis::UnixMillis;
pub use pending::{Failure, PendingEvent, PendingInsert, Retry};
pub use shared::{with_store, PeriodicWrite};
pub use store::Store;
pub use subscribers::{LastError, SubscriberStatus};

#[cfg(test)]
mod tests;
