//! Backfill requests and their progress: `walhook backfill` records a request, the running
//! `walhook run` takes it up, and after each chunk whose events all settled it saves the last
//! key read, so a backfill interrupted by a crash resumes after the last settled row.

use rusqlite::{OptionalExtension, Row};

use super::error::StateError;
use super::millis::UnixMillis;
use super::store::Store;

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

    fn parse(text: &str) -> Option<Self> {
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

const COLUMNS: &str = "id, table_name, subscribers, where_sql, batch_rows, rate, status, \
                       last_key, rows_done, total_estimate, created_at, started_at, updated_at, \
                       finished_at, error, reread, waiting";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Backfill> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("backfills: {what}").into(),
        )
    };
    let subscribers: String = row.get(2)?;
    let status: String = row.get(6)?;
    let count = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    Ok(Backfill {
        id: row.get(0)?,
        table: row.get(1)?,
        subscribers: serde_json::from_str(&subscribers)
            .map_err(|_| bad(2, "subscribers is not a JSON array of names"))?,
        where_sql: row.get(3)?,
        batch_rows: row.get(4)?,
        rate: row.get(5)?,
        status: BackfillStatus::parse(&status).ok_or_else(|| bad(6, "unknown status"))?,
        last_key: row.get(7)?,
        rows_done: count(row.get(8)?).unwrap_or(0),
        total_estimate: count(row.get(9)?),
        created_at: row.get(10)?,
        started_at: row.get(11)?,
        updated_at: row.get(12)?,
        finished_at: row.get(13)?,
        error: row.get(14)?,
        reread: serde_json::from_str(&row.get::<_, String>(15)?)
            .map_err(|_| bad(15, "reread is not a JSON array of keys"))?,
        waiting: row.get(16)?,
    })
}

impl Store {
    /// Records a backfill request as pending; returns its id.
    pub fn request_backfill(
        &mut self,
        new: &NewBackfill,
        now: UnixMillis,
    ) -> Result<i64, StateError> {
        let subscribers = serde_json::to_string(&new.subscribers).unwrap_or_else(|_| "[]".into());
        let estimate = new
            .total_estimate
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.write("record a backfill", |tx| {
            tx.prepare_cached(
                "INSERT INTO backfills (table_name, subscribers, where_sql, batch_rows, rate,
                     status, total_estimate, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?7)",
            )?
            .execute(rusqlite::params![
                new.table,
                subscribers,
                new.where_sql,
                new.batch_rows,
                new.rate,
                estimate,
                now
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// The backfill `id`, if recorded.
    pub fn backfill(&self, id: i64) -> Result<Option<Backfill>, StateError> {
        self.read("read a backfill", |conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM backfills WHERE id = ?1"))?
                .query_row([id], from_row)
                .optional()
        })
    }

    /// Backfills not yet done or failed (running first, then pending), oldest first.
    pub fn active_backfills(&self) -> Result<Vec<Backfill>, StateError> {
        self.read("read the backfills", |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM backfills WHERE status IN ('running', 'pending')
                 ORDER BY status = 'pending', id"
            ))?
            .query_map([], from_row)?
            .collect()
        })
    }

    /// Marks a pending backfill running (a wait recorded by a walhook that stopped is over).
    pub fn start_backfill(&mut self, id: i64, now: UnixMillis) -> Result<(), StateError> {
        self.write("start a backfill", |tx| {
            tx.prepare_cached(
                "UPDATE backfills SET status = 'running', started_at = COALESCE(started_at, ?2),
                     updated_at = ?2, waiting = NULL
                 WHERE id = ?1 AND status IN ('pending', 'running')",
            )?
            .execute(rusqlite::params![id, now])?;
            Ok(())
        })
    }

    /// Records that every row up to `last_key` was read and its events settled, and which
    /// rows it passed must be read again (`reread`, primary keys as JSON array texts). The
    /// wait for those events is over: `waiting` replaces what was recorded (usually `None`).
    pub fn save_backfill_progress(
        &mut self,
        id: i64,
        last_key: Option<&str>,
        reread: &[String],
        rows_done: u64,
        waiting: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StateError> {
        let rows = i64::try_from(rows_done).unwrap_or(i64::MAX);
        let reread = serde_json::to_string(reread).unwrap_or_else(|_| "[]".into());
        self.write("save a backfill's progress", |tx| {
            tx.prepare_cached(
                "UPDATE backfills SET last_key = ?2, rows_done = ?3, updated_at = ?4, reread = ?5,
                     waiting = ?6
                 WHERE id = ?1",
            )?
            .execute(rusqlite::params![id, last_key, rows, now, reread, waiting])?;
            Ok(())
        })
    }

    /// Records what a running backfill waits for (`None`: nothing). Progress is unchanged,
    /// and so is `updated_at`, which says when progress was last saved.
    pub fn set_backfill_waiting(
        &mut self,
        id: i64,
        waiting: Option<&str>,
    ) -> Result<(), StateError> {
        self.write("record what a backfill waits for", |tx| {
            tx.prepare_cached("UPDATE backfills SET waiting = ?2 WHERE id = ?1")?
                .execute(rusqlite::params![id, waiting])?;
            Ok(())
        })
    }

    /// Forgets every recorded wait: the `walhook run` that recorded them stops, and a backfill
    /// it leaves running waits for the next one (which records its own waits).
    pub fn clear_backfill_waits(&mut self) -> Result<(), StateError> {
        self.write("clear what backfills wait for", |tx| {
            tx.prepare_cached("UPDATE backfills SET waiting = NULL WHERE waiting IS NOT NULL")?
                .execute([])?;
            Ok(())
        })
    }

    /// Marks a backfill done (`error` `None`) or failed.
    pub fn finish_backfill(
        &mut self,
        id: i64,
        error: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), StateError> {
        let status = if error.is_some() { "failed" } else { "done" };
        self.write("finish a backfill", |tx| {
            tx.prepare_cached(
                "UPDATE backfills SET status = ?2, error = ?3, finished_at = ?4, updated_at = ?4,
                     waiting = NULL
                 WHERE id = ?1",
            )?
            .execute(rusqlite::params![id, status, error, now])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backfill_goes_from_pending_through_progress_to_done() {
        let mut store = Store::open_in_memory().unwrap();
        let new = NewBackfill {
            table: "public.orders".into(),
            subscribers: vec!["billing".into()],
            where_sql: Some("id > 5".into()),
            batch_rows: 1000,
            rate: None,
            total_estimate: Some(42),
        };
        let a = store.request_backfill(&new, UnixMillis(10)).unwrap();
        let b = store.request_backfill(&new, UnixMillis(11)).unwrap();
        store.start_backfill(b, UnixMillis(12)).unwrap();
        let active = store.active_backfills().unwrap();
        assert_eq!(
            active.iter().map(|f| (f.id, f.status)).collect::<Vec<_>>(),
            [(b, BackfillStatus::Running), (a, BackfillStatus::Pending)]
        );
        store
            .set_backfill_waiting(b, Some("waiting for the stream to reach the chunk"))
            .unwrap();
        let waiting = store.backfill(b).unwrap().unwrap();
        assert_eq!(
            waiting.waiting.as_deref(),
            Some("waiting for the stream to reach the chunk")
        );
        assert_eq!(waiting.updated_at, UnixMillis(12));
        store
            .save_backfill_progress(b, Some("[7]"), &["[2]".into()], 3, None, UnixMillis(13))
            .unwrap();
        let got = store.backfill(b).unwrap().unwrap();
        assert_eq!(got.waiting, None);
        assert_eq!(got.last_key.as_deref(), Some("[7]"));
        assert_eq!(got.reread, ["[2]"]);
        assert!(store.backfill(a).unwrap().unwrap().reread.is_empty());
        assert_eq!(got.rows_done, 3);
        assert_eq!(got.subscribers, ["billing"]);
        assert_eq!(got.started_at, Some(UnixMillis(12)));
        store.set_backfill_waiting(b, Some("pausing")).unwrap();
        store.clear_backfill_waits().unwrap();
        assert_eq!(store.backfill(b).unwrap().unwrap().waiting, None);
        store.set_backfill_waiting(b, Some("pausing")).unwrap();
        store.finish_backfill(b, None, UnixMillis(14)).unwrap();
        store
            .finish_backfill(a, Some("no primary key"), UnixMillis(15))
            .unwrap();
        assert!(store.active_backfills().unwrap().is_empty());
        let failed = store.backfill(a).unwrap().unwrap();
        assert_eq!(failed.status, BackfillStatus::Failed);
        assert_eq!(failed.error.as_deref(), Some("no primary key"));
        let done = store.backfill(b).unwrap().unwrap();
        assert_eq!((done.status, done.waiting), (BackfillStatus::Done, None));
    }
}
