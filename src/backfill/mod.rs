//! Backfills: the rows that already exist, sent as `read` events and merged with the live
//! stream so that no row is ever left stale (the watermark approach of Netflix's DBLog).
//!
//! ```text
//! runner (in walhook run)                       pipeline (stream order)
//!   ChunkOpen ──────────────────────────────▶   registers the chunk
//!   pg_logical_emit_message('low:<id>:<n>')  ─▶ low: collect the keys the table's changes touch
//!   SELECT .. WHERE (pk) > (last key) ORDER BY pk LIMIT n   (its own short query)
//!   rows ─────────────────────────────────────▶ (held with the chunk)
//!   pg_logical_emit_message('high:<id>:<n>') ─▶ high: drop the rows whose key changed in the
//!                                               window, dispatch the rest as `read` events at
//!                                               this position, track them in the ack tracker
//!   (says what it waits for) ◀─────────────────  dispatched
//!   save last key and rows done ◀──────────────  every event of the chunk settled
//! ```
//!
//! Why it is exact: a row read between the watermarks is either unchanged in the window (so
//! the read is its latest state as of the high watermark, and dispatching it there puts it
//! after every earlier change of its key and before every later one), or it changed in the
//! window, and then the stream's own event carries a state at least as new: the read is
//! dropped. "Changed in the window" also counts a change the read's snapshot did not see that
//! the stream delivered shortly before the low watermark (a commit record written before it,
//! made visible only after the read started): see [`Snapshot`]. The progress saved in the
//! state file only moves past rows whose events settled, so a crash re-reads them (with the
//! same event ids) instead of skipping them.
//!
//! Complete rows: a dropped row's stream event may lack a TOASTed column (an update that left
//! it alone, under the default replica identity). Such keys are read again with a later chunk,
//! until one read of them survives its window or the stream sends the row whole; the keys still
//! to read are saved with the progress (see `reread`).
//!
//! Waits: behind a backlog of stream events a chunk waits long (its rows must go out after the
//! earlier events of their keys); the runner records what it waits for, in words, so the
//! progress line does not stand still without a reason (see `waiting`).

/// Rows read per chunk unless `--batch-rows` says otherwise.
pub const DEFAULT_BATCH_ROWS: u32 = 1000;

mod error;
mod request;
mod reread;
mod runner;
mod table;
mod waiting;
mod window;

pub use error::BackfillError;
pub use request::{parse_table, plan, record, Request};
pub use reread::ChunkReport;
pub use runner::{run as run_backfills, RunnerContext};
pub use table::{describe, TableShape};
pub use waiting::{Load, LoadProbe};
pub use window::{
    parse_watermark, ChunkOpen, ChunkRow, ChunkRows, Closed, Signal, Snapshot, Watermark, Windows,
    WATERMARK_PREFIX,
};
