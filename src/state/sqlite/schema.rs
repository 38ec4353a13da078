//! The on-disk layout: tables, indexes, triggers, and how an [`Event`] is laid out in a row.
//!
//! The file is marked as walhook's with `PRAGMA application_id` and carries its schema version
//! in `PRAGMA user_version`. Version N is reached by applying `MIGRATIONS[..N]` in order; a
//! later walhook appends to `MIGRATIONS` and never edits an entry that has shipped.

use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, Row, Statement, ToSql, TransactionBehavior};

use crate::model::{Event, Lsn};
use crate::state::UnixMillis;

/// "WHKS" (walhook state) in the SQLite header, so another application's file is refused.
const APPLICATION_ID: i64 = 0x5748_4B53;

/// `MIGRATIONS[i]` brings the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1.
///
/// `pending.seq` is the insertion order, which is the delivery order within a key: SQLite
/// gives a new row a rowid above every existing one, so a row inserted later always sorts
/// after the rows still present. `pending_head` holds the oldest row of each (subscriber, key)
/// with a copy of its `next_attempt_at`; the triggers keep it exact on every insert, update
/// and delete, so `due` reads only heads and never scans events queued behind them.
/// LSNs are stored as the bits of a u64 in an i64 (SQL compares them as signed, which is
/// right below 2^63: 8 EiB of WAL); Rust compares them, e.g. for the checkpoint.
const V1: &str = "
CREATE TABLE pending (
    seq                INTEGER PRIMARY KEY,
    subscriber         TEXT    NOT NULL,
    event_id           TEXT    NOT NULL,
    event_type         TEXT    NOT NULL,
    event_key          TEXT    NOT NULL,
    table_name         TEXT    NOT NULL,
    body               TEXT    NOT NULL,
    commit_lsn         INTEGER NOT NULL,
    commit_time_micros INTEGER NOT NULL,
    is_truncate        INTEGER NOT NULL CHECK (is_truncate IN (0, 1)),
    attempts           INTEGER NOT NULL CHECK (attempts >= 0),
    first_failure_at   INTEGER,
    next_attempt_at    INTEGER NOT NULL,
    last_status        INTEGER,
    last_error         TEXT,
    UNIQUE (subscriber, event_id)
) STRICT;
CREATE INDEX pending_by_key ON pending (subscriber, event_key, seq);
CREATE INDEX pending_by_table ON pending (subscriber, table_name, is_truncate, seq);

CREATE TABLE pending_head (
    subscriber      TEXT    NOT NULL,
    event_key       TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    PRIMARY KEY (subscriber, event_key)
) STRICT, WITHOUT ROWID;
CREATE INDEX pending_head_by_due ON pending_head (subscriber, next_attempt_at, seq);

CREATE TRIGGER pending_head_on_insert AFTER INSERT ON pending BEGIN
    INSERT INTO pending_head (subscriber, event_key, seq, next_attempt_at)
    VALUES (new.subscriber, new.event_key, new.seq, new.next_attempt_at)
    ON CONFLICT (subscriber, event_key) DO NOTHING;
END;
CREATE TRIGGER pending_head_on_update AFTER UPDATE OF next_attempt_at ON pending BEGIN
    UPDATE pending_head SET next_attempt_at = new.next_attempt_at
    WHERE subscriber = new.subscriber AND event_key = new.event_key AND seq = new.seq;
END;
CREATE TRIGGER pending_head_on_delete AFTER DELETE ON pending BEGIN
    DELETE FROM pending_head
    WHERE subscriber = old.subscriber AND event_key = old.event_key AND seq = old.seq;
    INSERT INTO pending_head (subscriber, event_key, seq, next_attempt_at)
    SELECT subscriber, event_key, seq, next_attempt_at FROM pending
    WHERE subscriber = old.subscriber AND event_key = old.event_key
    ORDER BY seq LIMIT 1
    ON CONFLICT (subscriber, event_key) DO NOTHING;
END;

CREATE TABLE dead_letters (
    seq                INTEGER PRIMARY KEY,
    subscriber         TEXT    NOT NULL,
    event_id           TEXT    NOT NULL,
    event_type         TEXT    NOT NULL,
    event_key          TEXT    NOT NULL,
    table_name         TEXT    NOT NULL,
    body               TEXT    NOT NULL,
    commit_lsn         INTEGER NOT NULL,
    commit_time_micros INTEGER NOT NULL,
    is_truncate        INTEGER NOT NULL CHECK (is_truncate IN (0, 1)),
    attempts           INTEGER NOT NULL CHECK (attempts >= 0),
    first_attempt_at   INTEGER NOT NULL,
    dead_at            INTEGER NOT NULL,
    last_status        INTEGER,
    last_error         TEXT,
    UNIQUE (subscriber, event_id)
) STRICT;

CREATE TABLE subscribers (
    name            TEXT PRIMARY KEY,
    paused_reason   TEXT,
    last_success_at INTEGER,
    last_error_at   INTEGER,
    last_error      TEXT
) STRICT, WITHOUT ROWID;

CREATE TABLE checkpoint (
    id            INTEGER PRIMARY KEY CHECK (id = 0),
    confirmed_lsn INTEGER NOT NULL
) STRICT;
";

/// Version 2: backfill requests (`walhook backfill`) and their progress. `subscribers` and
/// `last_key` are JSON arrays as text; `last_key` is the primary key of the last row whose
/// events all settled, so a resumed backfill starts after it.
const V2: &str = "
CREATE TABLE backfills (
    id             INTEGER PRIMARY KEY,
    table_name     TEXT    NOT NULL,
    subscribers    TEXT    NOT NULL,
    where_sql      TEXT,
    batch_rows     INTEGER NOT NULL CHECK (batch_rows > 0),
    rate           INTEGER CHECK (rate > 0),
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    last_key       TEXT,
    rows_done      INTEGER NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
    total_estimate INTEGER,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    error          TEXT
) STRICT;
CREATE INDEX backfills_by_status ON backfills (status, id);
";

/// Version 3: the keys a backfill must read again (a JSON array of primary keys as JSON array
/// texts), saved with its progress: rows it passed whose stream images lacked a TOASTed column.
/// And what a running backfill waits for, in words (`walhook backfill` and `walhook status`
/// show it), while a wait lasts.
const V3: &str = "
ALTER TABLE backfills ADD COLUMN reread TEXT NOT NULL DEFAULT '[]';
ALTER TABLE backfills ADD COLUMN waiting TEXT;
";

/// Version 4: a pause records who paused and since when, and lasts until it is resumed (a
/// subscriber is paused while `paused_at` is set; `paused_reason` may be empty). A pause an
/// earlier walhook recorded (only ever for a 410 Gone) is kept, as the receiver's, since now.
const V4: &str = "
ALTER TABLE subscribers ADD COLUMN paused_at INTEGER;
ALTER TABLE subscribers ADD COLUMN paused_by TEXT;
UPDATE subscribers
SET paused_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000, paused_by = 'receiver'
WHERE paused_reason IS NOT NULL;
";

/// Why an existing file cannot be used.
pub(super) enum Refusal {
    NotOurs(String),
    Newer(i64),
}

/// Creates the schema in a new file or brings an older one up to [`SCHEMA_VERSION`], in one
/// transaction taken with the write lock, so two processes opening a new file at once cannot
/// both create it.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), Refusal>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let application_id: i64 = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects: i64 = tx.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))?;

    if application_id != APPLICATION_ID && (application_id != 0 || objects > 0) {
        let what = format!(
            "it is an SQLite file of another application (application_id {application_id:#x}, \
             {objects} schema objects)"
        );
        return Ok(Err(Refusal::NotOurs(what)));
    }
    if version > SCHEMA_VERSION {
        return Ok(Err(Refusal::Newer(version)));
    }
    let from = usize::try_from(version).unwrap_or(0);
    for migration in &MIGRATIONS[from..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(Ok(()))
}

/// The event columns shared by `pending` and `dead_letters`, in the order [`bind_event`] and
/// [`event_from_row`] use.
pub(super) const EVENT_COLUMNS: &str = "event_id, event_type, event_key, table_name, body, \
                                        commit_lsn, commit_time_micros, is_truncate";

/// How many columns [`EVENT_COLUMNS`] names.
pub(super) const EVENT_COLUMN_COUNT: usize = 8;

pub(super) fn lsn_to_sql(lsn: Lsn) -> i64 {
    // Bit-for-bit: LSNs above i64::MAX (8 EiB of WAL) come back unchanged.
    i64::from_ne_bytes(lsn.0.to_ne_bytes())
}

pub(super) fn lsn_from_sql(value: i64) -> Lsn {
    Lsn(u64::from_ne_bytes(value.to_ne_bytes()))
}

/// Binds an event's values for [`EVENT_COLUMNS`] to the parameters `first..first + 8`
/// (1-based), for a statement then run with `raw_execute`.
pub(super) fn bind_event(
    stmt: &mut Statement<'_>,
    first: usize,
    event: &Event,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(first, &event.id)?;
    stmt.raw_bind_parameter(first + 1, &event.event_type)?;
    stmt.raw_bind_parameter(first + 2, &event.key)?;
    stmt.raw_bind_parameter(first + 3, &event.table)?;
    stmt.raw_bind_parameter(first + 4, &event.body)?;
    stmt.raw_bind_parameter(first + 5, lsn_to_sql(event.commit_lsn))?;
    stmt.raw_bind_parameter(first + 6, event.commit_time_micros)?;
    stmt.raw_bind_parameter(first + 7, event.is_truncate)
}

/// Reads [`EVENT_COLUMNS`] starting at column `at`.
pub(super) fn event_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get(at)?,
        event_type: row.get(at + 1)?,
        key: row.get(at + 2)?,
        table: row.get(at + 3)?,
        body: row.get(at + 4)?,
        commit_lsn: lsn_from_sql(row.get(at + 5)?),
        commit_time_micros: row.get(at + 6)?,
        is_truncate: row.get(at + 7)?,
    })
}

/// A `COUNT(*)` in the first column.
pub(super) fn count(row: &Row<'_>) -> rusqlite::Result<u64> {
    let n: i64 = row.get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

impl ToSql for UnixMillis {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl FromSql for UnixMillis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(UnixMillis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_2_file_keeps_its_backfills_and_gains_the_keys_to_read_again_and_the_wait() {
        // GIVEN a file written by a walhook of schema version 2, with a running backfill
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(V2).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO backfills (table_name, subscribers, batch_rows, status, last_key,
                 rows_done, created_at, updated_at)
             VALUES ('public.orders', '[\"app\"]', 1000, 'running', '[7]', 7, 1, 1)",
            [],
        )
        .unwrap();
        // WHEN this walhook opens it
        assert!(migrate(&mut conn).unwrap().is_ok());
        // THEN the backfill is as it was, with no key to read again and no wait recorded
        let (version, last_key, reread, waiting): (i64, String, String, Option<String>) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), last_key, reread, waiting
                 FROM backfills",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            (version, last_key.as_str(), reread.as_str(), waiting),
            (SCHEMA_VERSION, "[7]", "[]", None)
        );
    }

    #[test]
    fn a_version_3_file_keeps_a_recorded_pause_as_the_receivers() {
        // GIVEN a file of schema version 3 with a subscriber paused by a 410 and another not
        let mut conn = Connection::open_in_memory().unwrap();
        for migration in [V1, V2, V3] {
            conn.execute_batch(migration).unwrap();
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO subscribers (name, paused_reason) VALUES ('billing', '410 Gone from b');
             INSERT INTO subscribers (name, last_success_at) VALUES ('search', 5);",
        )
        .unwrap();
        // WHEN this walhook opens it
        assert!(migrate(&mut conn).unwrap().is_ok());
        // THEN billing is still paused, by the receiver, since about now; search is not
        let rows: Vec<(String, Option<String>, Option<i64>)> = conn
            .prepare("SELECT name, paused_by, paused_at FROM subscribers ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let now = UnixMillis::now().0;
        assert_eq!(rows[0].0, "billing");
        assert_eq!(rows[0].1.as_deref(), Some("receiver"));
        let since = rows[0].2.unwrap();
        assert!((now - 2_000..=now).contains(&since), "{since} vs {now}");
        assert_eq!(rows[1], ("search".to_string(), None, None));
    }
}
