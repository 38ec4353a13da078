//! Dead letters in Postgres.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::pending::{count, last_of_each, one, release_heads};
use super::schema::{self, storable, EventArrays, EVENT_COLUMN_COUNT};
use super::session::Failure as StepFailure;
use super::PostgresStore;
use crate::state::{
    DeadLetter, DeadLetterFilter, DeadLetterInsert, Failure, StateError, UnixMillis,
};

/// An event dead-lettered again for the same subscriber replaces the old letter, and moves to
/// the end of the list as SQLite's `INSERT OR REPLACE` moves it (a new `seq`).
macro_rules! replace_dead_letter {
    () => {
        "ON CONFLICT (subscriber, event_id) DO UPDATE SET
            seq = DEFAULT, event_type = excluded.event_type, event_key = excluded.event_key,
            table_name = excluded.table_name, body = excluded.body,
            commit_lsn = excluded.commit_lsn, commit_time_micros = excluded.commit_time_micros,
            is_truncate = excluded.is_truncate, attempts = excluded.attempts,
            first_attempt_at = excluded.first_attempt_at, dead_at = excluded.dead_at,
            last_status = excluded.last_status, last_error = excluded.last_error"
    };
}

/// `$1` to `$6` are the filter's subscriber, id, type, table, since and until (see
/// [`filter_params`]); a statement's own parameters come after.
macro_rules! filter {
    () => {
        "($1::text IS NULL OR subscriber = $1::text) AND ($2::text IS NULL OR event_id = $2::text)
        AND ($3::text IS NULL OR event_type = $3::text)
        AND ($4::text IS NULL OR table_name = $4::text)
        AND ($5::bigint IS NULL OR commit_time_micros >= $5::bigint)
        AND ($6::bigint IS NULL OR commit_time_micros < $6::bigint)"
    };
}

/// The filter's values for `$1` to `$6` of `filter!`, then `extra`.
fn filter_params<'a>(
    filter: &'a DeadLetterFilter,
    extra: Option<&'a (dyn ToSql + Sync)>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut params: Vec<&'a (dyn ToSql + Sync)> = vec![
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

/// Deletes the held events given up on, dead-letters them in the order given, and moves the
/// heads of their keys on.
const MOVE: &str = concat!(
    "
WITH removed AS (
    DELETE FROM {s}.pending p
    USING unnest($2::text[], $3::bigint[], $4::bigint[], $5::integer[], $6::text[])
          WITH ORDINALITY AS i(event_id, attempts, failed_at, last_status, last_error, n)
    WHERE p.subscriber = $1::text AND p.event_id = i.event_id
    RETURNING p.seq, p.event_id, p.event_type, p.event_key, p.table_name, p.body, p.commit_lsn,
              p.commit_time_micros, p.is_truncate, p.first_failure_at,
              i.attempts, i.failed_at, i.last_status, i.last_error, i.n
), dead AS (
    INSERT INTO {s}.dead_letters (subscriber, event_id, event_type, event_key, table_name, body,
                                  commit_lsn, commit_time_micros, is_truncate, attempts,
                                  first_attempt_at, dead_at, last_status, last_error)
    SELECT $1::text, event_id, event_type, event_key, table_name, body, commit_lsn,
           commit_time_micros, is_truncate, attempts, COALESCE(first_failure_at, failed_at),
           failed_at, last_status, last_error
    FROM removed
    ORDER BY n
    ",
    replace_dead_letter!(),
    "
), ",
    release_heads!(),
    "
SELECT count(*) FROM removed"
);

const STORE: &str = concat!(
    "
WITH stored AS (
INSERT INTO {s}.dead_letters (subscriber, event_id, event_type, event_key, table_name, body,
                              commit_lsn, commit_time_micros, is_truncate, attempts,
                              first_attempt_at, dead_at, last_status, last_error)
SELECT $1::text, i.event_id, i.event_type, i.event_key, i.table_name, i.body, i.commit_lsn,
       i.commit_time_micros, i.is_truncate, i.attempts, i.first_attempt_at, i.dead_at,
       i.last_status, i.last_error
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::pg_lsn[],
            $8::bigint[], $9::boolean[], $10::bigint[], $11::bigint[], $12::bigint[],
            $13::integer[], $14::text[])
     WITH ORDINALITY AS i(event_id, event_type, event_key, table_name, body, commit_lsn,
                          commit_time_micros, is_truncate, attempts, first_attempt_at, dead_at,
                          last_status, last_error, n)
ORDER BY i.n
",
    replace_dead_letter!(),
    "
RETURNING 1
)
SELECT count(*) FROM stored"
);

const LIST: &str = concat!(
    "
SELECT event_id, event_type, event_key, table_name, body, commit_lsn, commit_time_micros,
       is_truncate, attempts, first_attempt_at, dead_at, last_status, last_error, subscriber
FROM {s}.dead_letters
WHERE ",
    filter!(),
    "
ORDER BY seq
LIMIT $7::bigint"
);

const COUNT: &str = concat!("SELECT count(*) FROM {s}.dead_letters WHERE ", filter!());

/// Puts the matching dead letters back behind what their keys hold (in commit order among
/// themselves, skipping those held again meanwhile), gives keys that had nothing held a head,
/// and deletes the letters. The insert reads the letters as they were before the statement,
/// so deleting them in the same statement is safe.
const REPLAY: &str = concat!(
    "
WITH inserted AS (
    INSERT INTO {s}.pending (subscriber, event_id, event_type, event_key, table_name, body,
                             commit_lsn, commit_time_micros, is_truncate, attempts,
                             first_failure_at, next_attempt_at)
    SELECT subscriber, event_id, event_type, event_key, table_name, body, commit_lsn,
           commit_time_micros, is_truncate, 0, NULL, $7::bigint
    FROM {s}.dead_letters
    WHERE ",
    filter!(),
    "
    ORDER BY commit_lsn, seq
    ON CONFLICT (subscriber, event_id) DO NOTHING
    RETURNING subscriber, event_key, seq, next_attempt_at
), heads AS (
    INSERT INTO {s}.pending_head (subscriber, event_key, seq, next_attempt_at)
    SELECT DISTINCT ON (subscriber, event_key) subscriber, event_key, seq, next_attempt_at
    FROM inserted
    ORDER BY subscriber, event_key, seq
    ON CONFLICT (subscriber, event_key) DO NOTHING
), removed AS (
    DELETE FROM {s}.dead_letters WHERE ",
    filter!(),
    "
    RETURNING 1
)
SELECT count(*) FROM removed"
);

const DISCARD: &str = concat!(
    "WITH discarded AS (DELETE FROM {s}.dead_letters WHERE ",
    filter!(),
    " RETURNING 1) SELECT count(*) FROM discarded"
);

pub(super) async fn move_from_pending(
    store: &PostgresStore,
    subscriber: &str,
    failures: &[Failure],
) -> Result<usize, StateError> {
    let failures = last_of_each(failures, |f| &f.id);
    let ids: Vec<&str> = failures.iter().map(|f| f.id.as_str()).collect();
    let attempts: Vec<i64> = failures.iter().map(|f| i64::from(f.attempts)).collect();
    let failed_at: Vec<i64> = failures.iter().map(|f| f.at.0).collect();
    let statuses: Vec<Option<i32>> = failures.iter().map(|f| f.status.map(i32::from)).collect();
    let errors: Vec<Option<String>> = failures
        .iter()
        .map(|f| f.error.as_deref().map(|e| storable(e).into_owned()))
        .collect();
    let params: [&(dyn ToSql + Sync); 6] =
        [&subscriber, &ids, &attempts, &failed_at, &statuses, &errors];
    store
        .write("move events to the dead letters", MOVE, &params, count)
        .await
}

pub(super) async fn store(
    store: &PostgresStore,
    subscriber: &str,
    items: &[DeadLetterInsert],
) -> Result<usize, StateError> {
    let items = last_of_each(items, |i| &i.event.id);
    let events = EventArrays::new(items.iter().map(|i| &*i.event));
    let attempts: Vec<i64> = items.iter().map(|i| i64::from(i.attempts)).collect();
    let first_attempts: Vec<i64> = items.iter().map(|i| i.first_attempt_at.0).collect();
    let dead_at: Vec<i64> = items.iter().map(|i| i.dead_at.0).collect();
    let statuses: Vec<Option<i32>> = items.iter().map(|i| i.last_status.map(i32::from)).collect();
    let errors: Vec<Option<String>> = items
        .iter()
        .map(|i| i.last_error.as_deref().map(|e| storable(e).into_owned()))
        .collect();
    let [ids, types, keys, tables, bodies, lsns, times, truncates] = events.params();
    let params: [&(dyn ToSql + Sync); 14] = [
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
        &first_attempts,
        &dead_at,
        &statuses,
        &errors,
    ];
    store
        .write("store dead letters", STORE, &params, count)
        .await
}

pub(super) async fn list(
    store: &PostgresStore,
    filter: &DeadLetterFilter,
    limit: usize,
) -> Result<Vec<DeadLetter>, StateError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    store
        .read(
            "list dead letters",
            LIST,
            &filter_params(filter, Some(&limit)),
            |rows| rows.iter().map(dead_letter).collect(),
        )
        .await
}

pub(super) async fn count_matching(
    store: &PostgresStore,
    filter: &DeadLetterFilter,
) -> Result<u64, StateError> {
    store
        .read(
            "count dead letters",
            COUNT,
            &filter_params(filter, None),
            |rows| schema::count(one(&rows)?, 0),
        )
        .await
}

pub(super) async fn replay(
    store: &PostgresStore,
    filter: &DeadLetterFilter,
    now: UnixMillis,
) -> Result<usize, StateError> {
    let params = filter_params(filter, Some(&now.0));
    store
        .write("replay dead letters", REPLAY, &params, count)
        .await
}

pub(super) async fn discard(
    store: &PostgresStore,
    filter: &DeadLetterFilter,
) -> Result<usize, StateError> {
    store
        .write(
            "discard dead letters",
            DISCARD,
            &filter_params(filter, None),
            count,
        )
        .await
}

/// Reads the event's columns, then `attempts, first_attempt_at, dead_at, last_status,
/// last_error, subscriber`.
fn dead_letter(row: &Row) -> Result<DeadLetter, StepFailure> {
    let at = EVENT_COLUMN_COUNT;
    Ok(DeadLetter {
        event: schema::event_from_row(row, 0)?,
        attempts: schema::u32_column(row, at)?,
        first_attempt_at: schema::millis(row, at + 1)?,
        dead_at: schema::millis(row, at + 2)?,
        last_status: schema::status_column(row, at + 3)?,
        last_error: row.try_get(at + 4)?,
        subscriber: row.try_get(at + 5)?,
    })
}
