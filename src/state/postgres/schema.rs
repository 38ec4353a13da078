//! The layout in Postgres: one schema of walhook's own (`[state] schema`, default `walhook`)
//! with its tables, and how an [`Event`] is laid out in a row and in the arrays one statement
//! takes many events in.
//!
//! `schema_version` holds the layout's version. Version N is reached by applying
//! `MIGRATIONS[..N]` in order; a later walhook appends to `MIGRATIONS` and never edits an entry
//! that has shipped. Every SQL text names the schema as `{s}`, replaced by its quoted name when
//! the statement is prepared.

use tokio_postgres::types::PgLsn;
use tokio_postgres::Row;

use super::session::{in_schema, Failure, Session};
use crate::model::{Event, Lsn};
use crate::state::UnixMillis;

/// `MIGRATIONS[i]` brings the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: what SQLite's versions 1 to 3 hold, in Postgres types.
///
/// `pending.seq` is the insertion order, which is the delivery order within a key: every
/// write holds the schema's write lock (see [`super::session`]), so a row inserted later
/// always gets a higher `seq` than every row present, in commit order too. `pending_head`
/// holds the oldest row of each (subscriber, key) with a copy of its `next_attempt_at`; each
/// statement that inserts, reschedules or deletes held events keeps it exact, so `due` reads
/// only heads and never scans events queued behind them.
///
/// LSNs are `pg_lsn`, which holds the whole u64 range and orders it unsigned; times are
/// milliseconds (`bigint`) as in SQLite; counts that are u32 or u16 in walhook are `bigint` and
/// `integer` with CHECKs that keep them in range.
const V1: &str = "
CREATE TABLE {s}.pending (
    seq                bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscriber         text    NOT NULL,
    event_id           text    NOT NULL,
    event_type         text    NOT NULL,
    event_key          text    NOT NULL,
    table_name         text    NOT NULL,
    body               text    NOT NULL,
    commit_lsn         pg_lsn  NOT NULL,
    commit_time_micros bigint  NOT NULL,
    is_truncate        boolean NOT NULL,
    attempts           bigint  NOT NULL CHECK (attempts BETWEEN 0 AND 4294967295),
    first_failure_at   bigint,
    next_attempt_at    bigint  NOT NULL,
    last_status        integer CHECK (last_status BETWEEN 0 AND 65535),
    last_error         text,
    UNIQUE (subscriber, event_id)
);
CREATE INDEX pending_by_key ON {s}.pending (subscriber, event_key, seq);
CREATE INDEX pending_by_table ON {s}.pending (subscriber, table_name, is_truncate, seq);

CREATE TABLE {s}.pending_head (
    subscriber      text   NOT NULL,
    event_key       text   NOT NULL,
    seq             bigint NOT NULL,
    next_attempt_at bigint NOT NULL,
    PRIMARY KEY (subscriber, event_key)
);
CREATE INDEX pending_head_by_due ON {s}.pending_head (subscriber, next_attempt_at, seq);

CREATE TABLE {s}.dead_letters (
    seq                bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscriber         text    NOT NULL,
    event_id           text    NOT NULL,
    event_type         text    NOT NULL,
    event_key          text    NOT NULL,
    table_name         text    NOT NULL,
    body               text    NOT NULL,
    commit_lsn         pg_lsn  NOT NULL,
    commit_time_micros bigint  NOT NULL,
    is_truncate        boolean NOT NULL,
    attempts           bigint  NOT NULL CHECK (attempts BETWEEN 0 AND 4294967295),
    first_attempt_at   bigint  NOT NULL,
    dead_at            bigint  NOT NULL,
    last_status        integer CHECK (last_status BETWEEN 0 AND 65535),
    last_error         text,
    UNIQUE (subscriber, event_id)
);

CREATE TABLE {s}.subscribers (
    name            text PRIMARY KEY,
    paused_reason   text,
    last_success_at bigint,
    last_error_at   bigint,
    last_error      text
);

CREATE TABLE {s}.checkpoint (
    id            integer PRIMARY KEY CHECK (id = 0),
    confirmed_lsn pg_lsn  NOT NULL
);

CREATE TABLE {s}.backfills (
    id             bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name     text    NOT NULL,
    subscribers    text[]  NOT NULL,
    where_sql      text,
    batch_rows     bigint  NOT NULL CHECK (batch_rows BETWEEN 1 AND 4294967295),
    rate           bigint  CHECK (rate BETWEEN 1 AND 4294967295),
    status         text    NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    last_key       text,
    reread         text[]  NOT NULL DEFAULT '{}',
    rows_done      bigint  NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
    total_estimate bigint  CHECK (total_estimate >= 0),
    created_at     bigint  NOT NULL,
    started_at     bigint,
    updated_at     bigint  NOT NULL,
    finished_at    bigint,
    error          text,
    waiting        text
);
CREATE INDEX backfills_by_status ON {s}.backfills (status, id);
";

/// Version 2 (SQLite's version 4): a pause records who paused and since when, and lasts until
/// it is resumed (a subscriber is paused while `paused_at` is set; `paused_reason` may be
/// null). A pause an earlier walhook recorded (only ever for a 410 Gone) is kept, as the
/// receiver's, since now.
const V2: &str = "
ALTER TABLE {s}.subscribers ADD COLUMN paused_at bigint, ADD COLUMN paused_by text;
UPDATE {s}.subscribers
SET paused_at = (extract(epoch FROM now()) * 1000)::bigint, paused_by = 'receiver'
WHERE paused_reason IS NOT NULL;
";

/// Version 3: leadership (see `super::lease`). `leader` holds one row, the lease: which
/// leadership term (`epoch`) leads, who holds it (for `walhook status` and `check`), the
/// backends a standby must end once the lease ran out (`lock_pid` on this server, the
/// walsender on the source), and until when it holds (the server's clock, so the hosts'
/// clocks never matter). `fence(epoch)` raises `WK001` unless that term still leads and its
/// lease has not run out: a leader's writes begin with it (under the write lock, which a
/// takeover takes too), so a leader that lost its lease can no longer write.
const V3: &str = "
CREATE TABLE {s}.leader (
    id            integer     PRIMARY KEY CHECK (id = 0),
    epoch         bigint      NOT NULL CHECK (epoch > 0),
    holder        text        NOT NULL,
    lock_pid      integer     NOT NULL,
    walsender_pid integer,
    acquired_at   timestamptz NOT NULL,
    renewed_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);

CREATE FUNCTION {s}.fence(ours bigint) RETURNS void LANGUAGE plpgsql AS $fence$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {s}.leader WHERE epoch = ours AND expires_at > clock_timestamp()) THEN
        RAISE EXCEPTION 'walhook leadership term % has ended', ours USING ERRCODE = 'WK001';
    END IF;
END
$fence$;
";

/// Why an existing schema cannot be used.
pub(super) enum Refusal {
    NotOurs(String),
    Newer(i64),
}

/// Creates the schema if it is missing and brings it up to [`SCHEMA_VERSION`], in one
/// transaction that holds the write lock, so two walhooks opening a new schema at once cannot
/// both create it.
pub(super) async fn migrate(
    session: &mut Session,
    schema: &str,
) -> Result<Result<(), Refusal>, Failure> {
    let tx = session.client.transaction().await?;
    tx.batch_execute(&session.lock_sql).await?;
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
                    to_regclass(format('%I.schema_version', $1::text)) IS NOT NULL,
                    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))",
            &[&schema],
        )
        .await?;
    let (exists, versioned, relations): (bool, bool, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let quoted = &session.quoted_schema;
    let version = if versioned {
        let version: i32 = tx
            .query_one(&format!("SELECT version FROM {quoted}.schema_version"), &[])
            .await?
            .try_get(0)?;
        i64::from(version)
    } else if relations > 0 {
        let what = format!("it has {relations} tables or views and no schema_version table");
        return Ok(Err(Refusal::NotOurs(what)));
    } else {
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {quoted}")).await?;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE {quoted}.schema_version (
                 id      integer PRIMARY KEY CHECK (id = 0),
                 version integer NOT NULL
             );
             INSERT INTO {quoted}.schema_version VALUES (0, 0);"
        ))
        .await?;
        0
    };
    if version > SCHEMA_VERSION {
        return Ok(Err(Refusal::Newer(version)));
    }
    let from = usize::try_from(version).unwrap_or(0);
    if from < MIGRATIONS.len() {
        for migration in &MIGRATIONS[from..] {
            tx.batch_execute(&in_schema(migration, quoted)).await?;
        }
        tx.batch_execute(&format!(
            "UPDATE {quoted}.schema_version SET version = {SCHEMA_VERSION}"
        ))
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(()))
}

/// How many columns an event takes: `event_id, event_type, event_key, table_name, body,
/// commit_lsn, commit_time_micros, is_truncate`, the order in which [`EventArrays`] gives and
/// [`event_from_row`] reads them.
pub(super) const EVENT_COLUMN_COUNT: usize = 8;

/// Events as one array per column, for a statement that takes them all at once through
/// `unnest`: the parameters `$2` to `$9` (`text[]` five times, `pg_lsn[]`, `bigint[]`,
/// `boolean[]`) of the statements that store events.
pub(super) struct EventArrays<'a> {
    ids: Vec<&'a str>,
    types: Vec<&'a str>,
    keys: Vec<&'a str>,
    tables: Vec<&'a str>,
    bodies: Vec<&'a str>,
    lsns: Vec<PgLsn>,
    times: Vec<i64>,
    truncates: Vec<bool>,
}

impl<'a> EventArrays<'a> {
    pub fn new(events: impl ExactSizeIterator<Item = &'a Event>) -> Self {
        let n = events.len();
        let mut arrays = EventArrays {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            tables: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
            lsns: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            truncates: Vec::with_capacity(n),
        };
        for event in events {
            arrays.ids.push(&event.id);
            arrays.types.push(&event.event_type);
            arrays.keys.push(&event.key);
            arrays.tables.push(&event.table);
            arrays.bodies.push(&event.body);
            arrays.lsns.push(PgLsn::from(event.commit_lsn.0));
            arrays.times.push(event.commit_time_micros);
            arrays.truncates.push(event.is_truncate);
        }
        arrays
    }

    /// The parameters `$2` to `$9`.
    pub fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 8] {
        [
            &self.ids,
            &self.types,
            &self.keys,
            &self.tables,
            &self.bodies,
            &self.lsns,
            &self.times,
            &self.truncates,
        ]
    }
}

/// Reads an event's columns, starting at column `at`.
pub(super) fn event_from_row(row: &Row, at: usize) -> Result<Event, Failure> {
    let lsn: PgLsn = row.try_get(at + 5)?;
    Ok(Event {
        id: row.try_get(at)?,
        event_type: row.try_get(at + 1)?,
        key: row.try_get(at + 2)?,
        table: row.try_get(at + 3)?,
        body: row.try_get(at + 4)?,
        commit_lsn: Lsn(u64::from(lsn)),
        commit_time_micros: row.try_get(at + 6)?,
        is_truncate: row.try_get(at + 7)?,
    })
}

/// A time column.
pub(super) fn millis(row: &Row, at: usize) -> Result<UnixMillis, Failure> {
    Ok(UnixMillis(row.try_get(at)?))
}

pub(super) fn opt_millis(row: &Row, at: usize) -> Result<Option<UnixMillis>, Failure> {
    Ok(row.try_get::<_, Option<i64>>(at)?.map(UnixMillis))
}

/// A `bigint` column that holds a u32 (the schema's CHECK says so).
pub(super) fn u32_column(row: &Row, at: usize) -> Result<u32, Failure> {
    let value: i64 = row.try_get(at)?;
    u32::try_from(value).map_err(|_| Failure::Corrupt(format!("{value} is not a count")))
}

/// An `integer` column that holds an HTTP status.
pub(super) fn status_column(row: &Row, at: usize) -> Result<Option<u16>, Failure> {
    let value: Option<i32> = row.try_get(at)?;
    value
        .map(|v| {
            u16::try_from(v).map_err(|_| Failure::Corrupt(format!("{v} is not an HTTP status")))
        })
        .transpose()
}

/// A count (`COUNT(*)` or `bigint`) as walhook's u64 or usize.
pub(super) fn count(row: &Row, at: usize) -> Result<u64, Failure> {
    let n: i64 = row.try_get(at)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Text Postgres can store: it refuses the NUL character, which an error text from a receiver
/// might hold.
pub(super) fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}").into()
    } else {
        text.into()
    }
}
