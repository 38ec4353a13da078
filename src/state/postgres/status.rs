//! The checkpoint, subscriber state and status in Postgres.

use tokio_postgres::types::PgLsn;
use tokio_postgres::Row;

use super::pending::one;
use super::schema::{self, storable};
use super::session::Failure;
use super::PostgresStore;
use crate::model::Lsn;
use crate::state::{LastError, Pause, StateError, SubscriberStatus, UnixMillis};

const CONFIRMED: &str = "SELECT confirmed_lsn FROM {s}.checkpoint WHERE id = 0";

/// Never moves the checkpoint backward: the stored value becomes the larger of `$1` and what
/// was stored (`pg_lsn` compares as u64), so a late or repeated call with an older LSN changes
/// nothing, and writes nothing. Answers with the checkpoint now stored.
const SAVE_CONFIRMED: &str = "
WITH stored AS (
    SELECT confirmed_lsn FROM {s}.checkpoint WHERE id = 0
), saved AS (
    INSERT INTO {s}.checkpoint AS c (id, confirmed_lsn)
    SELECT 0, $1::pg_lsn
    WHERE NOT EXISTS (SELECT 1 FROM stored WHERE confirmed_lsn >= $1::pg_lsn)
    ON CONFLICT (id) DO UPDATE SET confirmed_lsn = excluded.confirmed_lsn
    WHERE c.confirmed_lsn < excluded.confirmed_lsn
    RETURNING confirmed_lsn
)
SELECT COALESCE((SELECT confirmed_lsn FROM saved), (SELECT confirmed_lsn FROM stored))";

/// Pauses unless paused; answers with the pause in force (the row as the statement left it
/// when it wrote, else as it was).
const PAUSE: &str = "
WITH written AS (
    INSERT INTO {s}.subscribers AS s (name, paused_reason, paused_by, paused_at)
    VALUES ($1::text, $2::text, $3::text, $4::bigint)
    ON CONFLICT (name) DO UPDATE
    SET paused_reason = excluded.paused_reason, paused_by = excluded.paused_by,
        paused_at = excluded.paused_at
    WHERE s.paused_at IS NULL
    RETURNING paused_reason, paused_by, paused_at
)
SELECT paused_reason, paused_by, paused_at FROM written
UNION ALL
SELECT paused_reason, paused_by, paused_at FROM {s}.subscribers
WHERE name = $1::text AND NOT EXISTS (SELECT 1 FROM written)";

/// Lifts a pause; answers with the pause lifted (no row if there was none).
const RESUME: &str = "
UPDATE {s}.subscribers s
SET paused_reason = NULL, paused_by = NULL, paused_at = NULL
FROM (SELECT name, paused_reason, paused_by, paused_at FROM {s}.subscribers
      WHERE name = $1::text AND paused_at IS NOT NULL) old
WHERE s.name = old.name
RETURNING old.paused_reason, old.paused_by, old.paused_at";

const PAUSED: &str = "
SELECT paused_reason, paused_by, paused_at FROM {s}.subscribers
WHERE name = $1::text AND paused_at IS NOT NULL";

const RECORD_SUCCESS: &str = "
INSERT INTO {s}.subscribers (name, last_success_at) VALUES ($1::text, $2::bigint)
ON CONFLICT (name) DO UPDATE SET last_success_at = excluded.last_success_at";

const RECORD_ERROR: &str = "
INSERT INTO {s}.subscribers (name, last_error_at, last_error) VALUES ($1::text, $2::bigint, $3::text)
ON CONFLICT (name) DO UPDATE
SET last_error_at = excluded.last_error_at, last_error = excluded.last_error";

/// One row per name in `names`, as [`status_from_row`] reads it. The name sorts bytewise, as
/// in SQLite, whatever the database's collation.
macro_rules! status_of {
    ($names:literal) => {
        concat!(
            "
WITH names AS (",
            $names,
            ")
SELECT n.name,
       (SELECT count(*) FROM {s}.pending p WHERE p.subscriber = n.name),
       (SELECT min(commit_time_micros) FROM {s}.pending p WHERE p.subscriber = n.name),
       (SELECT count(*) FROM {s}.dead_letters d WHERE d.subscriber = n.name),
       s.last_success_at, s.last_error_at, s.last_error,
       s.paused_reason, s.paused_by, s.paused_at
FROM names n LEFT JOIN {s}.subscribers s ON s.name = n.name
ORDER BY n.name COLLATE \"C\""
        )
    };
}

const SUBSCRIBER_STATUS: &str = status_of!("SELECT $1::text AS name");

/// Every subscriber with held events, dead letters or a row of its own.
const STATUS: &str = status_of!(
    "SELECT subscriber AS name FROM {s}.pending_head
     UNION SELECT subscriber FROM {s}.dead_letters
     UNION SELECT name FROM {s}.subscribers"
);

pub(super) async fn save_confirmed(store: &PostgresStore, lsn: Lsn) -> Result<Lsn, StateError> {
    store
        .write(
            "save the confirmed LSN",
            SAVE_CONFIRMED,
            &[&PgLsn::from(lsn.0)],
            |rows| {
                let stored: PgLsn = one(&rows)?.try_get(0)?;
                Ok(Lsn(u64::from(stored)))
            },
        )
        .await
}

pub(super) async fn confirmed(store: &PostgresStore) -> Result<Option<Lsn>, StateError> {
    store
        .read("read the confirmed LSN", CONFIRMED, &[], |rows| {
            rows.first()
                .map(|row| Ok(Lsn(u64::from(row.try_get::<_, PgLsn>(0)?))))
                .transpose()
        })
        .await
}

pub(super) async fn pause(
    store: &PostgresStore,
    subscriber: &str,
    pause: &Pause,
) -> Result<Pause, StateError> {
    let reason = pause.reason.as_deref().map(storable);
    let by = storable(&pause.by);
    store
        .write(
            "record a pause",
            PAUSE,
            &[
                &subscriber,
                &reason.as_deref(),
                &by.as_ref(),
                &pause.since.0,
            ],
            |rows| pause_from_row(one(&rows)?, 0).map(|p| p.unwrap_or_else(|| pause.clone())),
        )
        .await
}

pub(super) async fn resume(
    store: &PostgresStore,
    subscriber: &str,
) -> Result<Option<Pause>, StateError> {
    store
        .write("lift a pause", RESUME, &[&subscriber], first_pause)
        .await
}

pub(super) async fn paused(
    store: &PostgresStore,
    subscriber: &str,
) -> Result<Option<Pause>, StateError> {
    store
        .read("read a pause", PAUSED, &[&subscriber], first_pause)
        .await
}

/// The pause in the first row, if there is a row and it holds one.
fn first_pause(rows: Vec<Row>) -> Result<Option<Pause>, Failure> {
    Ok(rows
        .first()
        .map(|r| pause_from_row(r, 0))
        .transpose()?
        .flatten())
}

pub(super) async fn record_success(
    store: &PostgresStore,
    subscriber: &str,
    at: UnixMillis,
) -> Result<(), StateError> {
    store
        .write(
            "record a success",
            RECORD_SUCCESS,
            &[&subscriber, &at.0],
            nothing,
        )
        .await
}

pub(super) async fn record_error(
    store: &PostgresStore,
    subscriber: &str,
    at: UnixMillis,
    text: &str,
) -> Result<(), StateError> {
    let text = storable(text);
    store
        .write(
            "record an error",
            RECORD_ERROR,
            &[&subscriber, &at.0, &text.as_ref()],
            nothing,
        )
        .await
}

/// `subscriber` as the store knows it; all zeros and `None` if it knows nothing of it. Counts
/// every held event of the subscriber: for `walhook status`, not for a hot path.
pub(super) async fn subscriber_status(
    store: &PostgresStore,
    subscriber: &str,
) -> Result<SubscriberStatus, StateError> {
    store
        .read(
            "read a subscriber's status",
            SUBSCRIBER_STATUS,
            &[&subscriber],
            |rows| status_from_row(one(&rows)?),
        )
        .await
}

/// Every subscriber the store knows anything about, sorted by name, from one snapshot.
pub(super) async fn all(store: &PostgresStore) -> Result<Vec<SubscriberStatus>, StateError> {
    store
        .read("read the status", STATUS, &[], |rows| {
            rows.iter().map(status_from_row).collect()
        })
        .await
}

/// For a statement that answers with nothing.
pub(super) fn nothing(_: Vec<Row>) -> Result<(), Failure> {
    Ok(())
}

fn status_from_row(row: &Row) -> Result<SubscriberStatus, Failure> {
    let error_at = schema::opt_millis(row, 5)?;
    let error_text: Option<String> = row.try_get(6)?;
    Ok(SubscriberStatus {
        name: row.try_get(0)?,
        pending: schema::count(row, 1)?,
        oldest_pending_commit_at: row
            .try_get::<_, Option<i64>>(2)?
            .map(UnixMillis::from_micros),
        dead_letters: schema::count(row, 3)?,
        paused: pause_from_row(row, 7)?,
        last_success_at: schema::opt_millis(row, 4)?,
        last_error: error_at
            .zip(error_text)
            .map(|(at, text)| LastError { at, text }),
    })
}

/// `paused_reason, paused_by, paused_at` from column `at`: a pause if `paused_at` is set.
fn pause_from_row(row: &Row, at: usize) -> Result<Option<Pause>, Failure> {
    let Some(since) = schema::opt_millis(row, at + 2)? else {
        return Ok(None);
    };
    Ok(Some(Pause {
        reason: row.try_get(at)?,
        by: row
            .try_get::<_, Option<String>>(at + 1)?
            .unwrap_or_default(),
        since,
    }))
}
