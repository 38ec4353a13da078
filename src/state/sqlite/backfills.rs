//! Backfill requests and their progress in SQLite.

use rusqlite::{OptionalExtension, Row};

use super::db::Db;
use crate::state::{
    Backfill, BackfillProgress, BackfillStatus, NewBackfill, StateError, UnixMillis,
};

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

impl Db {
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
        progress: &BackfillProgress,
        now: UnixMillis,
    ) -> Result<(), StateError> {
        let rows = i64::try_from(progress.rows_done).unwrap_or(i64::MAX);
        let reread = serde_json::to_string(&progress.reread).unwrap_or_else(|_| "[]".into());
        self.write("save a backfill's progress", |tx| {
            tx.prepare_cached(
                "UPDATE backfills SET last_key = ?2, rows_done = ?3, updated_at = ?4, reread = ?5,
                     waiting = ?6
                 WHERE id = ?1",
            )?
            .execute(rusqlite::params![
                id,
                progress.last_key,
                rows,
                now,
                reread,
                progress.waiting
            ])?;
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
