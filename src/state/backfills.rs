//! Backfill requests and their progress: `walhook backfill` records a request, the running
//! `walhook run` takes it up, and after each chunk whose events all settled it saves the last
//! key read, so a backfill interrupted by a crash resumes after the last settled row.

use super::millis::UnixMillis;

/// Where a backfill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillStatus {
    /// Recorded; no `walhook run` has taken it up yet.
    Pending,
    Running,
    Done,
    Failed,
}

impl BackfillStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Running, Self::Done, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A backfill to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackfill {
    /// `schema.table`.
    pub table: String,
    /// Subscriber names.
    pub subscribers: Vec<String>,
    /// An SQL condition over the table's columns.
    pub where_sql: Option<String>,
    pub batch_rows: u32,
    /// Rows per second at most.
    pub rate: Option<u32>,
    /// `pg_class.reltuples` when requested (with `where`, an upper bound).
    pub total_estimate: Option<u64>,
}

/// A recorded backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backfill {
    pub id: i64,
    pub table: String,
    pub subscribers: Vec<String>,
    pub where_sql: Option<String>,
    pub batch_rows: u32,
    pub rate: Option<u32>,
    pub status: BackfillStatus,
    /// The primary key (JSON array text) of the last row whose events settled.
    pub last_key: Option<String>,
    /// Primary keys (JSON array texts) of rows it passed that must be read again.
    pub reread: Vec<String>,
    pub rows_done: u64,
    pub total_estimate: Option<u64>,
    pub created_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub updated_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub error: Option<String>,
    /// What the running backfill waits for, in words, while a wait lasts (e.g. `waiting for
    /// the stream to reach the chunk (...)`); `None` when it is not held up.
    pub waiting: Option<String>,
}
