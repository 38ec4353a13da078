//! Dead letters in SQLite.

use rusqlite::{Row, ToSql};

use super::db::Db;
use super::schema::{self, EVENT_COLUMNS, EVENT_COLUMN_COUNT};
use crate::state::{
    DeadLetter, DeadLetterFilter, DeadLetterInsert, Failure, StateError, UnixMillis,
};

/// `?1` to `?6` are the filter's subscriber, id, type, table, since and until (see
/// [`filter_params`]); a statement's own parameters come after.
const FILTER: &str = "(?1 IS NULL OR subscriber = ?1) AND (?2 IS NULL OR event_id = ?2)
    AND (?3 IS NULL OR event_type = ?3) AND (?4 IS NULL OR table_name = ?4)
    AND (?5 IS NULL OR commit_time_micros >= ?5) AND (?6 IS NULL OR commit_time_micros < ?6)";

/// The filter's values for `?1` to `?6` of [`FILTER`], then `extra`.
fn filter_params<'a>(
    filter: &'a DeadLetterFilter,
    extra: Option<&'a dyn ToSql>,
) -> Vec<&'a dyn ToSql> {
    let mut params: Vec<&'a dyn ToSql> = vec![
        &filter.subscriber,
        &filter.id,
        &filter.event_type,
        &filter.table,
        &filter.since_micros,
        &filter.until_micros,
    ];
    params.extend(extra);
    params
}

const DEAD_COLUMNS: &str = "attempts, first_attempt_at, dead_at, last_status, last_error";

impl Db {
    /// Moves held events that are given up on to the dead letters, in one transaction; the
    /// next event of each key becomes its head. Returns how many were held (others are
    /// ignored). An event already dead-lettered for this subscriber is replaced.
    pub fn move_to_dead_letters(
        &mut self,
        subscriber: &str,
        failures: &[Failure],
    ) -> Result<usize, StateError> {
        self.write("move events to the dead letters", |tx| {
            let mut copy = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO dead_letters (subscriber, {EVENT_COLUMNS}, {DEAD_COLUMNS})
                 SELECT subscriber, {EVENT_COLUMNS},
                        ?3, COALESCE(first_failure_at, ?4), ?4, ?5, ?6
                 FROM pending WHERE subscriber = ?1 AND event_id = ?2"
            ))?;
            let mut delete =
                tx.prepare_cached("DELETE FROM pending WHERE subscriber = ?1 AND event_id = ?2")?;
            let mut moved = 0;
            for f in failures {
                copy.execute(rusqlite::params![
                    subscriber, f.id, f.attempts, f.at, f.status, f.error
                ])?;
                moved += delete.execute([subscriber, f.id.as_str()])?;
            }
            Ok(moved)
        })
    }

    /// Dead-letters live events that were never held, in one transaction. An event already
    /// dead-lettered for this subscriber is replaced. Returns how many were stored.
    pub fn store_dead_letters(
        &mut self,
        subscriber: &str,
        items: &[DeadLetterInsert],
    ) -> Result<usize, StateError> {
        self.write("store dead letters", |tx| {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO dead_letters (subscriber, {EVENT_COLUMNS}, {DEAD_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))?;
            let mut stored = 0;
            for item in items {
                insert.raw_bind_parameter(1, subscriber)?;
                schema::bind_event(&mut insert, 2, &item.event)?;
                insert.raw_bind_parameter(10, item.attempts)?;
                insert.raw_bind_parameter(11, item.first_attempt_at)?;
                insert.raw_bind_parameter(12, item.dead_at)?;
                insert.raw_bind_parameter(13, item.last_status)?;
                insert.raw_bind_parameter(14, item.last_error.as_deref())?;
                stored += insert.raw_execute()?;
            }
            Ok(stored)
        })
    }

    /// The matching dead letters, oldest first, at most `limit`.
    pub fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("list dead letters", |conn| {
            let mut select = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS}, {DEAD_COLUMNS}, subscriber FROM dead_letters
                 WHERE {FILTER} ORDER BY seq LIMIT ?7"
            ))?;
            let rows = select.query_map(&filter_params(filter, Some(&limit))[..], dead_letter)?;
            rows.collect()
        })
    }

    /// How many dead letters match.
    pub fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StateError> {
        self.read("count dead letters", |conn| {
            conn.prepare_cached(&format!("SELECT COUNT(*) FROM dead_letters WHERE {FILTER}"))?
                .query_row(&filter_params(filter, None)[..], schema::count)
        })
    }

    /// Moves the matching dead letters back to the held events, due at `now`, as fresh: no
    /// attempts, no failure recorded (so `give_up_after` counts from their next failure).
    /// Returns how many were replayed. One transaction.
    ///
    /// Order: a replayed event goes behind every event already held for its key. Events of
    /// its key that came after it were delivered while it sat in the dead letters, so it is
    /// late whatever we do; putting it last keeps every key's held events in the order they
    /// were stored and never blocks events that were waiting. Replayed events keep commit order
    /// among themselves. An event that is already held again (re-read from the slot) keeps
    /// its place and its dead letter is dropped.
    pub fn replay_dead_letters(
        &mut self,
        filter: &DeadLetterFilter,
        now: UnixMillis,
    ) -> Result<usize, StateError> {
        self.write("replay dead letters", |tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO pending (subscriber, {EVENT_COLUMNS},
                                      attempts, first_failure_at, next_attempt_at)
                 SELECT subscriber, {EVENT_COLUMNS}, 0, NULL, ?7 FROM dead_letters
                 WHERE {FILTER} ORDER BY commit_lsn, seq
                 ON CONFLICT (subscriber, event_id) DO NOTHING"
            ))?
            .execute(&filter_params(filter, Some(&now))[..])?;
            delete_dead_letters(tx, filter)
        })
    }

    /// Deletes the matching dead letters for good; returns how many. One transaction.
    pub fn discard_dead_letters(&mut self, filter: &DeadLetterFilter) -> Result<usize, StateError> {
        self.write("discard dead letters", |tx| delete_dead_letters(tx, filter))
    }
}

fn delete_dead_letters(
    conn: &rusqlite::Connection,
    filter: &DeadLetterFilter,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(&format!("DELETE FROM dead_letters WHERE {FILTER}"))?
        .execute(&filter_params(filter, None)[..])
}

/// Reads `EVENT_COLUMNS, DEAD_COLUMNS, subscriber`.
fn dead_letter(row: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    let at = EVENT_COLUMN_COUNT;
    Ok(DeadLetter {
        event: schema::event_from_row(row, 0)?,
        attempts: row.get(at)?,
        first_attempt_at: row.get(at + 1)?,
        dead_at: row.get(at + 2)?,
        last_status: row.get(at + 3)?,
        last_error: row.get(at + 4)?,
        subscriber: row.get(at + 5)?,
    })
}
