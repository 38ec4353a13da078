//! Held events in SQLite: the ordering rules of the store contract, as SQL over the
//! `pending` table and its `pending_head` view of each key's oldest event.

use rusqlite::Row;

use super::db::Db;
use super::schema::{self, EVENT_COLUMNS, EVENT_COLUMN_COUNT};
use crate::state::{PendingEvent, PendingInsert, Retry, StateError, UnixMillis};

const PENDING_COLUMNS: &str =
    "attempts, first_failure_at, next_attempt_at, last_status, last_error";

impl Db {
    /// Holds `items` for `subscriber`, after everything already held, in the order given, in
    /// one transaction. Returns how many were new.
    ///
    /// Idempotent: an event whose id is already held for this subscriber (re-read from the
    /// slot after a crash) keeps its place and its attempts; the new copy is ignored. An event
    /// that was delivered or dead-lettered is not remembered, so storing it again holds it
    /// again (at least once).
    pub fn store_pending(
        &mut self,
        subscriber: &str,
        items: &[PendingInsert],
    ) -> Result<usize, StateError> {
        self.write("store pending events", |tx| {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO pending (subscriber, {EVENT_COLUMNS}, {PENDING_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (subscriber, event_id) DO NOTHING"
            ))?;
            let mut stored = 0;
            for item in items {
                insert.raw_bind_parameter(1, subscriber)?;
                schema::bind_event(&mut insert, 2, &item.event)?;
                insert.raw_bind_parameter(10, item.attempts)?;
                insert.raw_bind_parameter(11, item.first_failure_at)?;
                insert.raw_bind_parameter(12, item.next_attempt_at)?;
                insert.raw_bind_parameter(13, item.last_status)?;
                insert.raw_bind_parameter(14, item.last_error.as_deref())?;
                stored += insert.raw_execute()?;
            }
            Ok(stored)
        })
    }

    /// Up to `limit` events of `subscriber` that may be attempted now: the head of each key,
    /// with `next_attempt_at <= now`, not behind a truncate barrier. The most overdue come
    /// first, ties in the order they were stored. Order across keys is not promised; it lets
    /// this read only heads through an index, however many events wait behind them.
    ///
    /// Nothing is leased: until the caller reschedules, removes or dead-letters an event, the
    /// next call returns it again, so don't call again while its attempts are in flight (or
    /// skip the ids still in flight).
    pub fn due(
        &self,
        subscriber: &str,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("read due events", |conn| {
            let mut select = conn.prepare_cached(&format!(
                "SELECT {columns}, {pending}
                 FROM pending_head h JOIN pending p ON p.seq = h.seq
                 WHERE h.subscriber = ?1 AND h.next_attempt_at <= ?2
                   AND NOT EXISTS (
                       SELECT 1 FROM pending t
                       WHERE t.subscriber = ?1 AND t.table_name = p.table_name
                         AND t.is_truncate = 1 AND t.seq < p.seq)
                   AND (p.is_truncate = 0 OR NOT EXISTS (
                       SELECT 1 FROM pending e
                       WHERE e.subscriber = ?1 AND e.table_name = p.table_name
                         AND e.is_truncate = 0 AND e.seq < p.seq))
                 ORDER BY h.next_attempt_at, h.seq
                 LIMIT ?3",
                columns = prefixed("p.", EVENT_COLUMNS),
                pending = prefixed("p.", PENDING_COLUMNS),
            ))?;
            let rows =
                select.query_map(rusqlite::params![subscriber, now, limit], pending_event)?;
            rows.collect()
        })
    }

    /// When the earliest head of `subscriber` is next due (possibly in the past), to sleep
    /// until then instead of polling; `None` if nothing is held. A head behind a truncate
    /// barrier counts, so this may be earlier than what [`Store::due`] then returns.
    pub fn next_due_at(&self, subscriber: &str) -> Result<Option<UnixMillis>, StateError> {
        self.read("read the next due time", |conn| {
            conn.prepare_cached(
                "SELECT MIN(next_attempt_at) FROM pending_head WHERE subscriber = ?1",
            )?
            .query_row([subscriber], |r| r.get(0))
        })
    }

    /// Whether a live `event` for `subscriber` must be stored behind held events instead of
    /// being sent: its key has a held event, its table has a held truncate, or it is a
    /// truncate and its table has any held event.
    pub fn must_hold(
        &self,
        subscriber: &str,
        key: &str,
        table: &str,
        barrier: bool,
    ) -> Result<bool, StateError> {
        self.read("check for held events", |conn| {
            conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pending_head
                                WHERE subscriber = ?1 AND event_key = ?2)
                     OR EXISTS (SELECT 1 FROM pending
                                WHERE subscriber = ?1 AND table_name = ?3 AND is_truncate = 1)
                     OR (?4 AND EXISTS (SELECT 1 FROM pending
                                        WHERE subscriber = ?1 AND table_name = ?3))",
            )?
            .query_row(rusqlite::params![subscriber, key, table, barrier], |r| {
                r.get(0)
            })
        })
    }

    /// Records failed attempts and when to try each again, in one transaction. The first
    /// failure time is kept from the first failure. Returns how many of the ids were held
    /// (others are ignored).
    pub fn reschedule(&mut self, subscriber: &str, retries: &[Retry]) -> Result<usize, StateError> {
        self.write("reschedule pending events", |tx| {
            let mut update = tx.prepare_cached(
                "UPDATE pending
                 SET attempts = ?3, first_failure_at = COALESCE(first_failure_at, ?4),
                     next_attempt_at = ?5, last_status = ?6, last_error = ?7
                 WHERE subscriber = ?1 AND event_id = ?2",
            )?;
            let mut updated = 0;
            for Retry {
                failure: f,
                next_attempt_at,
            } in retries
            {
                updated += update.execute(rusqlite::params![
                    subscriber,
                    f.id,
                    f.attempts,
                    f.at,
                    next_attempt_at,
                    f.status,
                    f.error
                ])?;
            }
            Ok(updated)
        })
    }

    /// Forgets delivered events, in one transaction; the next event of each key becomes its
    /// head. Returns how many were held.
    pub fn remove_pending<S: AsRef<str>>(
        &mut self,
        subscriber: &str,
        ids: &[S],
    ) -> Result<usize, StateError> {
        self.write("remove delivered events", |tx| {
            let mut delete =
                tx.prepare_cached("DELETE FROM pending WHERE subscriber = ?1 AND event_id = ?2")?;
            let mut removed = 0;
            for id in ids {
                removed += delete.execute([subscriber, id.as_ref()])?;
            }
            Ok(removed)
        })
    }
}

/// `"a, b"` with prefix `p.` gives `"p.a, p.b"`.
pub(super) fn prefixed(prefix: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{prefix}{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `EVENT_COLUMNS, PENDING_COLUMNS`.
fn pending_event(row: &Row<'_>) -> rusqlite::Result<PendingEvent> {
    let at = EVENT_COLUMN_COUNT;
    Ok(PendingEvent {
        event: schema::event_from_row(row, 0)?,
        attempts: row.get(at)?,
        first_failure_at: row.get(at + 1)?,
        next_attempt_at: row.get(at + 2)?,
        last_status: row.get(at + 3)?,
        last_error: row.get(at + 4)?,
    })
}
