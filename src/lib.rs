//! walhook: Postgres logical replication (pgoutput) to signed webhooks, at least once, in order
//! per row, without letting a slow subscriber fill the database's disk with retained WAL.
//!
//! ```text
//! Postgres ──replication conn (pgoutput v1)──▶ source ──Change──▶ mapping ──Event──▶ delivery ──HTTP POST──▶ subscribers
//!    ▲                                                                             │   │
//!    │                                                                 failed/held │   ▼ settled
//!    └──────── standby status (confirmed LSN) ◀── ack tracker ◀────────────── state (SQLite: retries,
//!                                                                            dead letters, checkpoint)
//! ```
//!
//! The plain data the stages pass along (`Lsn`, `Change`, `Table`, `TableName`, `Event`,
//! `TxnId`) is in [`model`], which imports nothing of walhook. Each stage builds on it:
//! [`config`] validates the file; [`database`] holds the administration SQL (setup, checks,
//! the slot's row and its guard); [`source`], [`mapping`] and [`state`] import none of each
//! other, and `source` and `state` nothing of `config`; [`delivery`] and [`backfill`] sit above
//! them (delivery reaches the state store only through its spill file, and sends through a
//! `Sink`, HTTP being the first). The store is a trait, [`state::Store`], whose doc comment is
//! the contract and whose contract tests run against each backend (SQLite, on a thread of its
//! own so no runtime thread waits on the disk, and Postgres, for state that outlives the host). [`app`] wires them all, [`cli`] and
//! [`api`] face the operator.

pub mod api;
pub mod app;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod database;
pub mod delivery;
pub mod mapping;
pub mod model;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod text;

/// An error and its causes on one line, for logs and messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
