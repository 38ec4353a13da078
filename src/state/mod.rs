//! State: what walhook must remember across restarts (events held for a later attempt, dead
//! letters, backfill progress, subscriber state and the confirmed LSN), behind the [`Store`]
//! trait whose doc comment is the contract, and the ack tracker that decides what may be
//! confirmed.
//!
//! Storing an event settles it: the ack tracker may then confirm its LSN to Postgres, because
//! the event no longer needs the WAL. The store knows no HTTP and never talks to the source;
//! the delivery worker decides what to store.
//!
//! Backends: [`SqliteStore`] (one file, the default) and [`PostgresStore`] (a schema in a
//! Postgres database, so the state outlives walhook's machine). The contract tests in
//! `contract/` are written once and run against each backend.

mod ack;
mod backfills;
#[doc(hidden)]
pub mod contract;
mod dead_letters;
mod error;
mod millis;
mod pending;
mod periodic;
mod postgres;
mod sqlite;
mod store;
mod subscribers;

pub use ack::AckTracker;
pub use backfills::{Backfill, BackfillStatus, NewBackfill};
pub use dead_letters::{DeadLetter, DeadLetterFilter, DeadLetterInsert};
pub use error::{BoxError, StateError};
pub use millis::UnixMillis;
pub use pending::{Failure, PendingEvent, PendingInsert, Retry};
pub use periodic::PeriodicWrite;
pub use postgres::{inspect, Inspection, Lease, LeaseSession, PostgresStore};
pub use sqlite::SqliteStore;
pub use store::{BackfillProgress, Store};
pub use subscribers::{LastError, Pause, SubscriberStatus};
