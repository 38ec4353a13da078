//! Subscriber state and status in SQLite.

use rusqlite::{Connection, OptionalExtension};

use super::db::Db;
use super::schema;
use crate::state::{LastError, Pause, StateError, SubscriberStatus, UnixMillis};

impl Db {
    /// Pauses delivery to `subscriber` unless it is paused; returns the pause in force.
    pub fn pause(&mut self, subscriber: &str, pause: &Pause) -> Result<Pause, StateError> {
        self.write("record a pause", |tx| {
            tx.prepare_cached(
                "INSERT INTO subscribers (name, paused_reason, paused_by, paused_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE
                 SET paused_reason = excluded.paused_reason, paused_by = excluded.paused_by,
                     paused_at = excluded.paused_at
                 WHERE subscribers.paused_at IS NULL",
            )?
            .execute(rusqlite::params![
                subscriber,
                pause.reason,
                pause.by,
                pause.since
            ])?;
            pause_of(tx, subscriber).map(|p| p.unwrap_or_else(|| pause.clone()))
        })
    }

    /// Lifts the pause of `subscriber`; returns it, if there was one.
    pub fn resume(&mut self, subscriber: &str) -> Result<Option<Pause>, StateError> {
        self.write("lift a pause", |tx| {
            let lifted = pause_of(tx, subscriber)?;
            tx.prepare_cached(
                "UPDATE subscribers SET paused_reason = NULL, paused_by = NULL, paused_at = NULL
                 WHERE name = ?1",
            )?
            .execute([subscriber])?;
            Ok(lifted)
        })
    }

    /// The pause in force for `subscriber`, if any.
    pub fn paused(&self, subscriber: &str) -> Result<Option<Pause>, StateError> {
        self.read("read a pause", |conn| pause_of(conn, subscriber))
    }

    /// Records a delivery. Each call is a durable commit (a disk flush): coalesce, e.g. at
    /// most once a second per subscriber, rather than calling it per event.
    pub fn record_success(&mut self, subscriber: &str, at: UnixMillis) -> Result<(), StateError> {
        self.write("record a success", |tx| {
            tx.prepare_cached(
                "INSERT INTO subscribers (name, last_success_at) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_success_at = excluded.last_success_at",
            )?
            .execute(rusqlite::params![subscriber, at])?;
            Ok(())
        })
    }

    /// Records the latest failure to show. Each call is a durable commit: coalesce as for
    /// [`Store::record_success`].
    pub fn record_error(
        &mut self,
        subscriber: &str,
        at: UnixMillis,
        text: &str,
    ) -> Result<(), StateError> {
        self.write("record an error", |tx| {
            tx.prepare_cached(
                "INSERT INTO subscribers (name, last_error_at, last_error) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE
                 SET last_error_at = excluded.last_error_at, last_error = excluded.last_error",
            )?
            .execute(rusqlite::params![subscriber, at, text])?;
            Ok(())
        })
    }

    /// `subscriber` as the store knows it; all zeros and `None` if it knows nothing of it.
    /// Counting reads every held event of the subscriber: meant for `walhook status`, not for a
    /// hot path.
    pub fn subscriber_status(&self, subscriber: &str) -> Result<SubscriberStatus, StateError> {
        self.read("read a subscriber's status", |conn| {
            status_of(conn, subscriber)
        })
    }

    /// Every subscriber the store knows anything about (held events, dead letters, a pause, a
    /// success or an error), sorted by name, from one consistent snapshot. Subscribers removed
    /// from the configuration still show here while they have events.
    pub fn status(&self) -> Result<Vec<SubscriberStatus>, StateError> {
        self.read("read the status", |conn| {
            let mut select = conn.prepare_cached(
                "SELECT subscriber FROM pending_head
                 UNION SELECT subscriber FROM dead_letters
                 UNION SELECT name FROM subscribers
                 ORDER BY 1",
            )?;
            let names = select
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            names.iter().map(|name| status_of(conn, name)).collect()
        })
    }
}

fn status_of(conn: &Connection, name: &str) -> rusqlite::Result<SubscriberStatus> {
    let (pending, oldest_micros): (u64, Option<i64>) = conn
        .prepare_cached(
            "SELECT COUNT(*), MIN(commit_time_micros) FROM pending WHERE subscriber = ?1",
        )?
        .query_row([name], |r| Ok((schema::count(r)?, r.get(1)?)))?;
    let dead_letters: u64 = conn
        .prepare_cached("SELECT COUNT(*) FROM dead_letters WHERE subscriber = ?1")?
        .query_row([name], schema::count)?;
    let row = conn
        .prepare_cached(
            "SELECT last_success_at, last_error_at, last_error FROM subscribers WHERE name = ?1",
        )?
        .query_row([name], |r| {
            let error_at: Option<UnixMillis> = r.get(1)?;
            let error_text: Option<String> = r.get(2)?;
            Ok((
                r.get::<_, Option<UnixMillis>>(0)?,
                error_at
                    .zip(error_text)
                    .map(|(at, text)| LastError { at, text }),
            ))
        })
        .optional()?;
    let (last_success_at, last_error) = row.unwrap_or_default();
    Ok(SubscriberStatus {
        name: name.to_string(),
        pending,
        oldest_pending_commit_at: oldest_micros.map(UnixMillis::from_micros),
        dead_letters,
        paused: pause_of(conn, name)?,
        last_success_at,
        last_error,
    })
}

/// The pause recorded for `name`: a row with `paused_at` set.
fn pause_of(conn: &Connection, name: &str) -> rusqlite::Result<Option<Pause>> {
    let row = conn
        .prepare_cached(
            "SELECT paused_reason, paused_by, paused_at FROM subscribers
             WHERE name = ?1 AND paused_at IS NOT NULL",
        )?
        .query_row([name], |r| {
            Ok(Pause {
                reason: r.get(0)?,
                by: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                since: r.get(2)?,
            })
        })
        .optional()?;
    Ok(row)
}
