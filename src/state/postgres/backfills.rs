//! Backfill requests and their progress in Postgres.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::pending::one;
use super::schema::{self, storable};
use super::session::Failure;
use super::status::nothing;
use super::PostgresStore;
use crate::state::{
    Backfill, BackfillProgress, BackfillStatus, NewBackfill, StateError, UnixMillis,
};

/// The columns [`from_row`] reads.
macro_rules! columns {
    () => {
        "id, table_name, subscribers, where_sql, batch_rows, rate, status, last_key, rows_done, \
         total_estimate, created_at, started_at, updated_at, finished_at, error, reread, waiting"
    };
}

const REQUEST: &str = "
INSERT INTO {s}.backfills (table_name, subscribers, where_sql, batch_rows, rate, status,
                           total_estimate, created_at, updated_at)
VALUES ($1::text, $2::text[], $3::text, $4::bigint, $5::bigint, 'pending', $6::bigint,
        $7::bigint, $7::bigint)
RETURNING id";

const GET: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM {s}.backfills WHERE id = $1::bigint"
);

const ACTIVE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM {s}.backfills WHERE status IN ('running', 'pending')
     ORDER BY status = 'pending', id"
);

/// A wait recorded by a walhook that stopped is over.
const START: &str = "
UPDATE {s}.backfills SET status = 'running', started_at = COALESCE(started_at, $2::bigint),
    updated_at = $2::bigint, waiting = NULL
WHERE id = $1::bigint AND status IN ('pending', 'running')";

const SAVE_PROGRESS: &str = "
UPDATE {s}.backfills SET last_key = $2::text, rows_done = $3::bigint, updated_at = $4::bigint,
    reread = $5::text[], waiting = $6::text
WHERE id = $1::bigint";

/// Progress is unchanged, and so is `updated_at`, which says when progress was last saved.
const SET_WAITING: &str = "UPDATE {s}.backfills SET waiting = $2::text WHERE id = $1::bigint";

const CLEAR_WAITS: &str = "UPDATE {s}.backfills SET waiting = NULL WHERE waiting IS NOT NULL";

const FINISH: &str = "
UPDATE {s}.backfills SET status = $2::text, error = $3::text, finished_at = $4::bigint,
    updated_at = $4::bigint, waiting = NULL
WHERE id = $1::bigint";

pub(super) async fn request(
    store: &PostgresStore,
    new: &NewBackfill,
    now: UnixMillis,
) -> Result<i64, StateError> {
    let estimate = new
        .total_estimate
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let params: [&(dyn ToSql + Sync); 7] = [
        &new.table,
        &new.subscribers,
        &new.where_sql,
        &i64::from(new.batch_rows),
        &new.rate.map(i64::from),
        &estimate,
        &now.0,
    ];
    store
        .write("record a backfill", REQUEST, &params, |rows| {
            Ok(one(&rows)?.try_get(0)?)
        })
        .await
}

pub(super) async fn get(store: &PostgresStore, id: i64) -> Result<Option<Backfill>, StateError> {
    store
        .read("read a backfill", GET, &[&id], |rows| {
            rows.first().map(from_row).transpose()
        })
        .await
}

pub(super) async fn active(store: &PostgresStore) -> Result<Vec<Backfill>, StateError> {
    store
        .read("read the backfills", ACTIVE, &[], |rows| {
            rows.iter().map(from_row).collect()
        })
        .await
}

pub(super) async fn start(
    store: &PostgresStore,
    id: i64,
    now: UnixMillis,
) -> Result<(), StateError> {
    store
        .write("start a backfill", START, &[&id, &now.0], nothing)
        .await
}

pub(super) async fn save_progress(
    store: &PostgresStore,
    id: i64,
    progress: &BackfillProgress,
    now: UnixMillis,
) -> Result<(), StateError> {
    let rows = i64::try_from(progress.rows_done).unwrap_or(i64::MAX);
    let params: [&(dyn ToSql + Sync); 6] = [
        &id,
        &progress.last_key,
        &rows,
        &now.0,
        &progress.reread,
        &progress.waiting,
    ];
    store
        .write(
            "save a backfill's progress",
            SAVE_PROGRESS,
            &params,
            nothing,
        )
        .await
}

pub(super) async fn set_waiting(
    store: &PostgresStore,
    id: i64,
    waiting: Option<&str>,
) -> Result<(), StateError> {
    store
        .write(
            "record what a backfill waits for",
            SET_WAITING,
            &[&id, &waiting],
            nothing,
        )
        .await
}

pub(super) async fn clear_waits(store: &PostgresStore) -> Result<(), StateError> {
    store
        .write("clear what backfills wait for", CLEAR_WAITS, &[], nothing)
        .await
}

pub(super) async fn finish(
    store: &PostgresStore,
    id: i64,
    error: Option<&str>,
    now: UnixMillis,
) -> Result<(), StateError> {
    let status = if error.is_some() { "failed" } else { "done" };
    let error = error.map(storable);
    let params: [&(dyn ToSql + Sync); 4] = [&id, &status, &error.as_deref(), &now.0];
    store
        .write("finish a backfill", FINISH, &params, nothing)
        .await
}

fn from_row(row: &Row) -> Result<Backfill, Failure> {
    let status: String = row.try_get(6)?;
    let count = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    let batch_rows: i64 = row.try_get(4)?;
    let rate: Option<i64> = row.try_get(5)?;
    let out_of_range = |what: &str| Failure::Corrupt(format!("backfills: {what} is out of range"));
    Ok(Backfill {
        id: row.try_get(0)?,
        table: row.try_get(1)?,
        subscribers: row.try_get(2)?,
        where_sql: row.try_get(3)?,
        batch_rows: u32::try_from(batch_rows).map_err(|_| out_of_range("batch_rows"))?,
        rate: rate
            .map(u32::try_from)
            .transpose()
            .map_err(|_| out_of_range("rate"))?,
        status: BackfillStatus::parse(&status)
            .ok_or_else(|| Failure::Corrupt(format!("backfills: unknown status `{status}`")))?,
        last_key: row.try_get(7)?,
        rows_done: count(row.try_get(8)?).unwrap_or(0),
        total_estimate: count(row.try_get(9)?),
        created_at: schema::millis(row, 10)?,
        started_at: schema::opt_millis(row, 11)?,
        updated_at: schema::millis(row, 12)?,
        finished_at: schema::opt_millis(row, 13)?,
        error: row.try_get(14)?,
        reread: row.try_get(15)?,
        waiting: row.try_get(16)?,
    })
}
