//! What the source hands the pipeline: one event type, from the assembler's Begin, Change,
//! Commit and Message to the session's CaughtUp and Replay.

use crate::model::{Change, Lsn};

/// What the source hands the pipeline, in stream order. Whatever reconnects happened, each
/// change arrives once (see [`super::replay`]), numbered by its place in its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    Begin {
        commit_lsn: Lsn,
        xid: u32,
    },
    Change(Change),
    /// The transaction is complete; confirming `end_lsn` acknowledges all of it.
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
    },
    /// A `pg_logical_emit_message`: walhook's heartbeat, a backfill watermark, or another
    /// program's.
    Message {
        lsn: Lsn,
        prefix: String,
        content: Vec<u8>,
    },
    /// Everything the server holds up to `wal_end` has been handed over: once every earlier
    /// event is settled, `wal_end` may be confirmed (so unrelated WAL does not hold the slot).
    CaughtUp {
        wal_end: Lsn,
    },
    /// The walsender passed walhook's canary without sending it, so what it sent after `from`
    /// may be incomplete: the session reconnects and everything committed after `from` comes
    /// again, to be handed out again (receivers de-duplicate on event ids). A transaction the
    /// pipeline was reading ends here; it comes again whole.
    Replay {
        from: Lsn,
    },
}
