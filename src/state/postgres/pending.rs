//! Held events in Postgres: the ordering rules of the store contract, as SQL over the
//! `pending` table and its `pending_head` table of each key's oldest event. Each call is one
//! statement, whatever the number of events.

use std::collections::HashSet;

use tokio_postgres::Row;

use super::schema::{self, storable, EventArrays, EVENT_COLUMN_COUNT};
use super::session::Failure;
use super::PostgresStore;
use crate::model::Event;
use crate::state::{PendingEvent, PendingInsert, Retry, StateError, UnixMillis};

/// The CTEs that keep `pending_head` exact after the CTE `removed` (`seq, event_key`) deleted
/// events of subscriber `$1`: a key whose head was removed gets the oldest event it still
/// holds as head, or loses its head if it holds none. The statement's snapshot still shows
/// the removed events, so the search for the next one skips them.
///
/// Each removed event looks up its key's head by the primary key (a `LATERAL ... LIMIT 1`,
/// which the planner keeps as a lookup): joined the other way, a planner without statistics
/// on a fresh `pending_head` (before autovacuum analyzed it) hashed every head of the
/// subscriber, 225 ms a call with 840,000 held.
macro_rules! release_heads {
    () => {
        "released AS (
    SELECT r.event_key, next.seq, next.next_attempt_at
    FROM removed r
    JOIN LATERAL (
        SELECT 1 FROM {s}.pending_head h
        WHERE h.subscriber = $1::text AND h.event_key = r.event_key AND h.seq = r.seq
        LIMIT 1
    ) head ON true
    LEFT JOIN LATERAL (
        SELECT p.seq, p.next_attempt_at FROM {s}.pending p
        WHERE p.subscriber = $1::text AND p.event_key = r.event_key
          AND NOT EXISTS (SELECT 1 FROM removed x WHERE x.seq = p.seq)
        ORDER BY p.seq LIMIT 1
    ) next ON true
), promoted AS (
    UPDATE {s}.pending_head h SET seq = r.seq, next_attempt_at = r.next_attempt_at
    FROM released r
    WHERE h.subscriber = $1::text AND h.event_key = r.event_key AND r.seq IS NOT NULL
), emptied AS (
    DELETE FROM {s}.pending_head h USING released r
    WHERE h.subscriber = $1::text AND h.event_key = r.event_key AND r.seq IS NULL
)"
    };
}
pub(super) use release_heads;

/// Inserts the events in the order given (`seq` follows it), skips those already held, and
/// makes the first new event of each key without a head its head.
const STORE: &str = "
WITH inserted AS (
    INSERT INTO {s}.pending (subscriber, event_id, event_type, event_key, table_name, body,
                             commit_lsn, commit_time_micros, is_truncate, attempts,
                             first_failure_at, next_attempt_at, last_status, last_error)
    SELECT $1::text, i.event_id, i.event_type, i.event_key, i.table_name, i.body, i.commit_lsn,
           i.commit_time_micros, i.is_truncate, i.attempts, i.first_failure_at,
           i.next_attempt_at, i.last_status, i.last_error
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::pg_lsn[],
                $8::bigint[], $9::boolean[], $10::bigint[], $11::bigint[], $12::bigint[],
                $13::integer[], $14::text[])
         WITH ORDINALITY AS i(event_id, event_type, event_key, table_name, body, commit_lsn,
                              commit_time_micros, is_truncate, attempts, first_failure_at,
                              next_attempt_at, last_status, last_error, n)
    ORDER BY i.n
    ON CONFLICT (subscriber, event_id) DO NOTHING
    RETURNING seq, event_key, next_attempt_at
), heads AS (
    INSERT INTO {s}.pending_head (subscriber, event_key, seq, next_attempt_at)
    SELECT DISTINCT ON (event_key) $1::text, event_key, seq, next_attempt_at
    FROM inserted
    ORDER BY event_key, seq
    ON CONFLICT (subscriber, event_key) DO NOTHING
)
SELECT count(*) FROM inserted";

/// Heads that are due and behind no barrier: the event's columns, then `attempts,
/// first_failure_at, next_attempt_at, last_status, last_error`.
const DUE: &str = "
SELECT p.event_id, p.event_type, p.event_key, p.table_name, p.body, p.commit_lsn,
       p.commit_time_micros, p.is_truncate,
       p.attempts, p.first_failure_at, p.next_attempt_at, p.last_status, p.last_error
FROM {s}.pending_head h JOIN {s}.pending p ON p.seq = h.seq
WHERE h.subscriber = $1::text AND h.next_attempt_at <= $2::bigint
  AND NOT EXISTS (
      SELECT 1 FROM {s}.pending t
      WHERE t.subscriber = $1::text AND t.table_name = p.table_name
        AND t.is_truncate AND t.seq < p.seq)
  AND (NOT p.is_truncate OR NOT EXISTS (
      SELECT 1 FROM {s}.pending e
      WHERE e.subscriber = $1::text AND e.table_name = p.table_name
        AND NOT e.is_truncate AND e.seq < p.seq))
ORDER BY h.next_attempt_at, h.seq
LIMIT $3::bigint";

const NEXT_DUE_AT: &str =
    "SELECT min(next_attempt_at) FROM {s}.pending_head WHERE subscriber = $1::text";

const MUST_HOLD: &str = "
SELECT EXISTS (SELECT 1 FROM {s}.pending_head WHERE subscriber = $1::text AND event_key = $2::text)
    OR EXISTS (SELECT 1 FROM {s}.pending
               WHERE subscriber = $1::text AND table_name = $3::text AND is_truncate)
    OR ($4::boolean AND EXISTS (SELECT 1 FROM {s}.pending
                                WHERE subscriber = $1::text AND table_name = $3::text))";

const RESCHEDULE: &str = "
WITH updated AS (
    UPDATE {s}.pending p
    SET attempts = i.attempts, first_failure_at = COALESCE(p.first_failure_at, i.failed_at),
        next_attempt_at = i.next_attempt_at, last_status = i.last_status,
        last_error = i.last_error
    FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::integer[], $7::text[])
         AS i(event_id, attempts, failed_at, next_attempt_at, last_status, last_error)
    WHERE p.subscriber = $1::text AND p.event_id = i.event_id
    RETURNING p.seq, p.event_key, p.next_attempt_at
), heads AS (
    UPDATE {s}.pending_head h SET next_attempt_at = u.next_attempt_at
    FROM updated u
    WHERE h.subscriber = $1::text AND h.event_key = u.event_key AND h.seq = u.seq
)
SELECT count(*) FROM updated";

const REMOVE: &str = concat!(
    "
WITH removed AS (
    DELETE FROM {s}.pending WHERE subscriber = $1::text AND event_id = ANY($2::text[])
    RETURNING seq, event_key
), ",
    release_heads!(),
    "
SELECT count(*) FROM removed"
);

pub(super) async fn store(
    store: &PostgresStore,
    subscriber: &str,
    items: &[PendingInsert],
) -> Result<usize, StateError> {
    let events = EventArrays::new(items.iter().map(|i| &*i.event));
    let attempts: Vec<i64> = items.iter().map(|i| i64::from(i.attempts)).collect();
    let first_failures: Vec<Option<i64>> = items
        .iter()
        .map(|i| i.first_failure_at.map(|t| t.0))
        .collect();
    let next_attempts: Vec<i64> = items.iter().map(|i| i.next_attempt_at.0).collect();
    let statuses: Vec<Option<i32>> = items.iter().map(|i| i.last_status.map(i32::from)).collect();
    let errors: Vec<Option<String>> = items
        .iter()
        .map(|i| i.last_error.as_deref().map(|e| storable(e).into_owned()))
        .collect();
    let [ids, types, keys, tables, bodies, lsns, times, truncates] = events.params();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
        &subscriber,
        ids,
        types,
        keys,
        tables,
        bodies,
        lsns,
        times,
        truncates,
        &attempts,
        &first_failures,
        &next_attempts,
        &statuses,
        &errors,
    ];
    let stored = store
        .write("store pending events", STORE, &params, count)
        .await?;
    analyze_when_grown(store, stored).await;
    Ok(stored)
}

/// Events stored between two ANALYZEs of the held events' tables. The queries of this module
/// need statistics to walk `pending_head` by index (`due` sorted every due head without them:
/// 2.3 s a call with 840,000 held, 75 ms after an ANALYZE); autovacuum analyzes a table only
/// once a tenth of it changed, and not at all where it is off, so a backlog that grows from
/// nothing would be read with the plans of an empty table for minutes.
pub(super) const ANALYZE_EVERY: u64 = 50_000;

const ANALYZE: &str = "ANALYZE {s}.pending, {s}.pending_head";

/// Has Postgres analyze the held events' tables once `ANALYZE_EVERY` events were stored since
/// the last time. A failure is only logged: the plans are slower without it, never wrong.
async fn analyze_when_grown(store: &PostgresStore, stored: usize) {
    let stored = u64::try_from(stored).unwrap_or(u64::MAX);
    let total = store
        .stored_since_analyze
        .fetch_add(stored, std::sync::atomic::Ordering::Relaxed)
        .saturating_add(stored);
    if total < ANALYZE_EVERY {
        return;
    }
    store
        .stored_since_analyze
        .store(0, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = store
        .read("analyze the held events", ANALYZE, &[], |_| Ok(()))
        .await
    {
        tracing::debug!(error = %crate::error_chain(&e), "cannot analyze the held events' tables");
    }
}

pub(super) async fn due(
    store: &PostgresStore,
    subscriber: &str,
    now: UnixMillis,
    limit: usize,
) -> Result<Vec<PendingEvent>, StateError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    store
        .read(
            "read due events",
            DUE,
            &[&subscriber, &now.0, &limit],
            |rows| rows.iter().map(pending_event).collect(),
        )
        .await
}

pub(super) async fn next_due_at(
    store: &PostgresStore,
    subscriber: &str,
) -> Result<Option<UnixMillis>, StateError> {
    store
        .read(
            "read the next due time",
            NEXT_DUE_AT,
            &[&subscriber],
            |rows| schema::opt_millis(one(&rows)?, 0),
        )
        .await
}

pub(super) async fn must_hold(
    store: &PostgresStore,
    subscriber: &str,
    event: &Event,
) -> Result<bool, StateError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&subscriber, &event.key, &event.table, &event.is_truncate];
    store
        .read("check for held events", MUST_HOLD, &params, |rows| {
            Ok(one(&rows)?.try_get(0)?)
        })
        .await
}

pub(super) async fn reschedule(
    store: &PostgresStore,
    subscriber: &str,
    retries: &[Retry],
) -> Result<usize, StateError> {
    let retries = last_of_each(retries, |r| &r.failure.id);
    let ids: Vec<&str> = retries.iter().map(|r| r.failure.id.as_str()).collect();
    let attempts: Vec<i64> = retries
        .iter()
        .map(|r| i64::from(r.failure.attempts))
        .collect();
    let failed_at: Vec<i64> = retries.iter().map(|r| r.failure.at.0).collect();
    let next_attempts: Vec<i64> = retries.iter().map(|r| r.next_attempt_at.0).collect();
    let statuses: Vec<Option<i32>> = retries
        .iter()
        .map(|r| r.failure.status.map(i32::from))
        .collect();
    let errors: Vec<Option<String>> = retries
        .iter()
        .map(|r| r.failure.error.as_deref().map(|e| storable(e).into_owned()))
        .collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &subscriber,
        &ids,
        &attempts,
        &failed_at,
        &next_attempts,
        &statuses,
        &errors,
    ];
    store
        .write("reschedule pending events", RESCHEDULE, &params, count)
        .await
}

pub(super) async fn remove(
    store: &PostgresStore,
    subscriber: &str,
    ids: &[String],
) -> Result<usize, StateError> {
    store
        .write(
            "remove delivered events",
            REMOVE,
            &[&subscriber, &ids],
            count,
        )
        .await
}

/// Reads the event's columns, then `attempts, first_failure_at, next_attempt_at, last_status,
/// last_error`.
fn pending_event(row: &Row) -> Result<PendingEvent, Failure> {
    let at = EVENT_COLUMN_COUNT;
    Ok(PendingEvent {
        event: schema::event_from_row(row, 0)?,
        attempts: schema::u32_column(row, at)?,
        first_failure_at: schema::opt_millis(row, at + 1)?,
        next_attempt_at: schema::millis(row, at + 2)?,
        last_status: schema::status_column(row, at + 3)?,
        last_error: row.try_get(at + 4)?,
    })
}

/// The one row a statement answers with.
pub(super) fn one(rows: &[Row]) -> Result<&Row, Failure> {
    rows.first()
        .ok_or_else(|| Failure::Corrupt("a statement answered with no row".to_string()))
}

/// The count (`count(*)`) a statement answers with.
pub(super) fn count(rows: Vec<Row>) -> Result<usize, Failure> {
    let n = schema::count(one(&rows)?, 0)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The last of the items with each id, in their order: a statement may change a row only once,
/// and applying them one after another would leave the last.
pub(super) fn last_of_each<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut seen = HashSet::new();
    let mut kept: Vec<&T> = items.iter().rev().filter(|i| seen.insert(id(i))).collect();
    kept.reverse();
    kept
}
