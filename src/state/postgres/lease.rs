//! Leadership's state: the leadership lock and the lease row (`leader`, see `schema::V3`).
//!
//! The protocol itself (who calls what, and when) is `app::leader`'s; this module only gives
//! its steps, each one statement:
//! - the lock: a session advisory lock (key "WHKL" and the schema's hash, apart from the write
//!   lock's "WHKS") held by the [`LeaseSession`] of the walhook that may take over or leads;
//! - the lease: its holder, its term (`epoch`), the backends to end once it ran out, and until
//!   when it holds, by the state server's clock;
//! - taking over bumps the term under the schema's write lock, so it is ordered against every
//!   write: a write of the old term that committed is seen by the new leader, and one that had
//!   not yet taken the lock fails its `fence`.

use std::time::Duration;

use tokio_postgres::Row;

use super::session::{self, Failure, Session, Target};
use super::PostgresStore;
use crate::state::StateError;

/// The first half of the leadership lock's key: "WHKL" (walhook leader). The schema's write
/// lock is "WHKS".
const LEAD_CLASS: i32 = 0x5748_4B4C;

/// The lease as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leadership term: one more at each takeover.
    pub epoch: i64,
    /// Who leads (or last led): host and process id.
    pub holder: String,
    /// The leader's backend on the state server that holds the leadership lock.
    pub lock_pid: i32,
    /// The leader's walsender on the source (`pg_replication_slots.active_pid`), once it
    /// streamed.
    pub walsender_pid: Option<i32>,
    /// Whether it ran out, by the state server's clock.
    pub expired: bool,
    /// How long until it runs out (zero once it has).
    pub remaining: Duration,
    /// How long ago it was taken or last renewed.
    pub renewed_ago: Duration,
    /// When this term began, UTC, as `2026-11-30T16:00:00Z`.
    pub acquired_at: String,
}

pub(super) const READ: &str = r#"
SELECT epoch, holder, lock_pid, walsender_pid, expires_at <= clock_timestamp(),
       greatest(0, extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint,
       greatest(0, extract(epoch FROM clock_timestamp() - renewed_at) * 1000)::bigint,
       to_char(acquired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
  FROM {s}.leader WHERE id = 0"#;

/// Ends `$3` if it holds the leadership lock: the pid alone could name a later, unrelated
/// backend.
const END_LOCK_HOLDER: &str = "
SELECT pg_terminate_backend(pid) FROM pg_locks
 WHERE locktype = 'advisory' AND granted AND objsubid = 2
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND classid = $1 AND objid = hashtext($2)::oid AND pid = $3";

/// Takes the lease if term `$3` still holds it and it ran out (or no one ever led).
const TAKE_OVER: &str = "
INSERT INTO {s}.leader AS l
       (id, epoch, holder, lock_pid, walsender_pid, acquired_at, renewed_at, expires_at)
VALUES (0, 1, $1, pg_backend_pid(), NULL, clock_timestamp(), clock_timestamp(),
        clock_timestamp() + $2::float8 * interval '1 millisecond')
ON CONFLICT (id) DO UPDATE
   SET epoch = l.epoch + 1, holder = excluded.holder, lock_pid = excluded.lock_pid,
       walsender_pid = NULL, acquired_at = excluded.acquired_at,
       renewed_at = excluded.renewed_at, expires_at = excluded.expires_at
 WHERE l.epoch = $3::bigint AND l.expires_at <= clock_timestamp()
RETURNING epoch";

/// Extends term `$1`'s lease, if it still holds one that has not run out.
const RENEW: &str = "
UPDATE {s}.leader
   SET renewed_at = clock_timestamp(),
       expires_at = clock_timestamp() + $2::float8 * interval '1 millisecond',
       lock_pid = pg_backend_pid(), walsender_pid = $3
 WHERE id = 0 AND epoch = $1 AND expires_at > clock_timestamp()
RETURNING epoch";

/// Ends term `$1`'s lease now, so a standby need not wait for it to run out.
const RELEASE: &str = "
UPDATE {s}.leader SET expires_at = clock_timestamp()
 WHERE id = 0 AND epoch = $1 AND expires_at > clock_timestamp()";

pub(super) async fn read_with(store: &PostgresStore) -> Result<Option<Lease>, StateError> {
    store
        .read("read the leadership lease", READ, &[], |rows| {
            rows.first().map(lease_from_row).transpose()
        })
        .await
}

pub(super) fn lease_from_row(row: &Row) -> Result<Lease, Failure> {
    let millis = |at| -> Result<Duration, Failure> {
        let ms: i64 = row.try_get(at)?;
        Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    };
    Ok(Lease {
        epoch: row.try_get(0)?,
        holder: row.try_get(1)?,
        lock_pid: row.try_get(2)?,
        walsender_pid: row.try_get(3)?,
        expired: row.try_get(4)?,
        remaining: millis(5)?,
        renewed_ago: millis(6)?,
        acquired_at: row.try_get(7)?,
    })
}

/// The connection of a walhook that stands by or leads: it holds the leadership lock once
/// taken, and takes, renews and releases the lease. Dropping it ends the session, and with it
/// the lock.
pub struct LeaseSession {
    session: Session,
    target: Target,
    pid: i32,
    locked: bool,
}

impl std::fmt::Debug for LeaseSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSession")
            .field("pid", &self.pid)
            .field("locked", &self.locked)
            .finish_non_exhaustive()
    }
}

impl LeaseSession {
    pub(super) async fn new(session: Session, target: Target) -> Result<Self, StateError> {
        let mut this = LeaseSession {
            session,
            target,
            pid: 0,
            locked: false,
        };
        let pid = this
            .call(
                "read the backend's process id",
                "SELECT pg_backend_pid()",
                &[],
            )
            .await?;
        this.pid = match pid.first().map(|row| row.try_get(0)) {
            Some(Ok(pid)) => pid,
            _ => return Err(this.corrupt("pg_backend_pid() gave no process id")),
        };
        Ok(this)
    }

    /// This session's backend on the state server.
    pub fn backend_pid(&self) -> i32 {
        self.pid
    }

    /// Whether the connection is gone (then so is the lock): open a new session.
    pub fn is_closed(&self) -> bool {
        !self.session.usable()
    }

    /// Takes the leadership lock if no other session holds it; `true` once this one holds it.
    pub async fn try_lock(&mut self) -> Result<bool, StateError> {
        if !self.locked {
            let schema = self.target.schema.clone();
            let rows = self
                .call(
                    "take the leadership lock",
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&LEAD_CLASS, &schema],
                )
                .await?;
            self.locked = rows.first().and_then(|r| r.try_get(0).ok()) == Some(true);
        }
        Ok(self.locked)
    }

    pub async fn lease(&mut self) -> Result<Option<Lease>, StateError> {
        let rows = self.call("read the leadership lease", READ, &[]).await?;
        rows.first()
            .map(lease_from_row)
            .transpose()
            .map_err(|f| self.fail("read the leadership lease", f))
    }

    /// Ends backend `pid` on the state server if it holds the leadership lock (a leader whose
    /// lease ran out, frozen with its session open); whether it did.
    pub async fn end_lock_holder(&mut self, pid: i32) -> Result<bool, StateError> {
        let schema = self.target.schema.clone();
        let class = LEAD_CLASS as u32;
        let rows = self
            .call(
                "end the former leader's session",
                END_LOCK_HOLDER,
                &[&class, &schema, &pid],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.try_get(0).ok()) == Some(true))
    }

    /// Takes the lease for `holder` if term `seen` still holds it and it ran out (`None`: no
    /// lease was seen); returns the new term, or `None` if another was faster or the lease
    /// was renewed meanwhile.
    pub async fn take_over(
        &mut self,
        seen: Option<i64>,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<i64>, StateError> {
        let ms = lease.as_secs_f64() * 1000.0;
        let rows = self
            .call_write(
                "take over the leadership lease",
                TAKE_OVER,
                &[&holder, &ms, &seen],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.try_get(0).ok()))
    }

    /// Extends term `epoch`'s lease by `lease` from now, recording the leader's walsender;
    /// `false` if the term no longer holds it (it ran out, or another took over).
    pub async fn renew(
        &mut self,
        epoch: i64,
        lease: Duration,
        walsender: Option<i32>,
    ) -> Result<bool, StateError> {
        let ms = lease.as_secs_f64() * 1000.0;
        let rows = self
            .call(
                "renew the leadership lease",
                RENEW,
                &[&epoch, &ms, &walsender],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Ends term `epoch`'s lease now (a leader stepping down), so a standby takes over at once.
    pub async fn release(&mut self, epoch: i64) -> Result<(), StateError> {
        self.call("release the leadership lease", RELEASE, &[&epoch])
            .await
            .map(drop)
    }

    async fn call(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: session::Params<'_>,
    ) -> Result<Vec<Row>, StateError> {
        self.run(op, sql, params, false).await
    }

    /// In a transaction holding the schema's write lock, ordered against every write.
    async fn call_write(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: session::Params<'_>,
    ) -> Result<Vec<Row>, StateError> {
        self.run(op, sql, params, true).await
    }

    async fn run(
        &mut self,
        op: &'static str,
        sql: &'static str,
        params: session::Params<'_>,
        write: bool,
    ) -> Result<Vec<Row>, StateError> {
        match self.session.run(sql, params, write, None).await {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.fail(op, Failure::Sql(e))),
        }
    }

    fn fail(&mut self, op: &'static str, failure: Failure) -> StateError {
        let error = self
            .target
            .error(op, self.session.client.is_closed(), failure);
        if error.lost_connection() {
            self.session.broken = true;
            self.locked = false;
        }
        error
    }

    fn corrupt(&mut self, what: &str) -> StateError {
        self.fail(
            "read the backend's process id",
            Failure::Corrupt(what.into()),
        )
    }
}
