//! The Postgres store: the state in a schema of its own (`[state] url` and `schema`), in the
//! source database or any other, so that it outlives the machine walhook runs on.
//!
//! Every call is one statement: many events are one array per column, read with `unnest`. A
//! write is that statement between a BEGIN that takes the schema's write lock and a COMMIT,
//! all three sent at once (see `session`): one round trip and one commit per call, however
//! many events it takes.
//!
//! One connection, used by one call at a time (a fair mutex, so calls from one task take
//! effect in the order they were made): a write's three messages must reach the server
//! together, and writes to one schema are serialized by its lock anyway, so a pool would only
//! let short reads overlap. A lost connection fails the call it happened in with
//! [`StateError::PostgresLost`]; the next call connects again.
//!
//! Durability is the server's: a write returns after its commit, with `synchronous_commit` on
//! (walhook turns it back on for its session if the server has it off).

mod backfills;
mod dead_letters;
mod inspect;
mod lease;
mod pending;
mod schema;
mod session;
mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::{Client, Row};
use tracing::info;

use super::error::BoxError;
use super::store::{BackfillProgress, Store};
use super::{
    Backfill, DeadLetter, DeadLetterFilter, DeadLetterInsert, Failure, NewBackfill, Pause,
    PendingEvent, PendingInsert, Retry, StateError, SubscriberStatus, UnixMillis,
};
use crate::model::{Event, Lsn};
use schema::Refusal;
use session::{Params, Session, Target};

pub use inspect::{inspect, Inspection};
pub use lease::{Lease, LeaseSession};

/// Opens a new connection to the database that holds the state, TLS and authentication
/// included, and drives it on the current runtime. `app` passes walhook's own connection
/// code, so the store imports nothing of `source` or `config`.
type Connect =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Client, BoxError>> + Send>> + Send + Sync>;

/// Server encodings that store any UTF-8 text as given.
const ENCODINGS: &[&str] = &["UTF8", "SQL_ASCII"];

/// The Postgres store. Share it behind an `Arc`; the connection closes when it is dropped.
pub struct PostgresStore {
    target: Target,
    connect: Connect,
    session: Mutex<Option<Session>>,
    /// The leadership term whose writes this store makes; 0: none (a command, or SQLite-like
    /// use by one process). See [`PostgresStore::fence_writes`].
    fence: AtomicI64,
    /// Events stored since this store last had the held events' tables analyzed (see
    /// `pending::ANALYZE_EVERY`).
    stored_since_analyze: AtomicU64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("place", &self.target.place)
            .field("schema", &self.target.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects with `connect`, creates `schema` if it is missing and brings it up to date.
    /// `place` names the database in messages (never with a password).
    ///
    /// Fails with [`StateError::PostgresUnreachable`] if `connect` fails,
    /// [`StateError::PostgresPrivilege`] if the user may not create the schema or its tables,
    /// [`StateError::PostgresNotOurs`] if the schema holds something else,
    /// [`StateError::PostgresNewerSchema`] if a later walhook wrote it, and
    /// [`StateError::PostgresEncoding`] if the database cannot store UTF-8 text.
    pub async fn open<F, Fut, E>(
        place: impl Into<String>,
        schema: &str,
        connect: F,
    ) -> Result<PostgresStore, StateError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Client, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let store = PostgresStore {
            target: Target {
                place: place.into(),
                schema: schema.to_string(),
            },
            connect: Box::new(move || {
                let connecting = connect();
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }),
            session: Mutex::new(None),
            fence: AtomicI64::new(0),
            stored_since_analyze: AtomicU64::new(0),
        };
        let mut session = store.connect().await?;
        let refusal = match schema::migrate(&mut session, schema).await {
            Ok(refusal) => refusal,
            Err(failure) => {
                let op = "create or update the state schema";
                return Err(store.target.error(op, session.client.is_closed(), failure));
            }
        };
        let Target { place, schema } = store.target.clone();
        match refusal {
            Ok(()) => {}
            Err(Refusal::NotOurs(what)) => {
                return Err(StateError::PostgresNotOurs {
                    place,
                    schema,
                    what,
                })
            }
            Err(Refusal::Newer(found)) => {
                return Err(StateError::PostgresNewerSchema {
                    place,
                    schema,
                    found,
                    supported: schema::SCHEMA_VERSION,
                })
            }
        }
        *store.session.lock().await = Some(session);
        Ok(store)
    }

    /// From now on, every write commits only while leadership term `epoch` leads and its
    /// lease has not run out, and fails with [`StateError::PostgresNotLeader`] otherwise; the
    /// check is part of the write's one round trip. `walhook run` sets it when it becomes
    /// leader and leaves it when it loses leadership, so its late writes are refused.
    pub fn fence_writes(&self, epoch: i64) {
        self.fence.store(epoch, Ordering::SeqCst);
    }

    /// A new connection for the leadership lock and lease, apart from the store's own: its
    /// session holds the lock, and a renewal never waits behind a write.
    pub async fn lease_session(&self) -> Result<LeaseSession, StateError> {
        let session = self.connect().await?;
        LeaseSession::new(session, self.target.clone()).await
    }

    /// The lease as it stands (`None`: no walhook ever led with this schema).
    pub async fn lease(&self) -> Result<Option<Lease>, StateError> {
        lease::read_with(self).await
    }

    /// A new connection, checked and set up for the store.
    async fn connect(&self) -> Result<Session, StateError> {
        let unreachable = |source| StateError::PostgresUnreachable {
            place: self.target.place.clone(),
            source,
        };
        let client = (self.connect)().await.map_err(unreachable)?;
        let session = Session::new(client, &self.target.schema);
        let fail = |e| {
            let closed = session.client.is_closed();
            self.target
                .error("set up the connection", closed, session::Failure::Sql(e))
        };
        let row = session
            .client
            .query_one(
                "SELECT current_setting('server_encoding'), current_setting('synchronous_commit')",
                &[],
            )
            .await
            .map_err(fail)?;
        let encoding: String = row.try_get(0).map_err(fail)?;
        let synchronous_commit: String = row.try_get(1).map_err(fail)?;
        if !ENCODINGS.contains(&encoding.as_str()) {
            return Err(StateError::PostgresEncoding {
                place: self.target.place.clone(),
                encoding,
            });
        }
        if synchronous_commit == "off" {
            // A write must be durable when the call returns.
            session
                .client
                .batch_execute("SET synchronous_commit = on")
                .await
                .map_err(fail)?;
        }
        Ok(session)
    }

    /// Runs `sql`, a read, and gives its rows to `read`.
    async fn read<T>(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
        read: impl FnOnce(Vec<Row>) -> Result<T, session::Failure>,
    ) -> Result<T, StateError> {
        self.run(op, sql, params, false, read).await
    }

    /// Runs `sql`, a write, in a transaction holding the write lock, and gives its rows to
    /// `read`.
    async fn write<T>(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
        read: impl FnOnce(Vec<Row>) -> Result<T, session::Failure>,
    ) -> Result<T, StateError> {
        self.run(op, sql, params, true, read).await
    }

    async fn run<T>(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
        write: bool,
        read: impl FnOnce(Vec<Row>) -> Result<T, session::Failure>,
    ) -> Result<T, StateError> {
        let mut slot = self.session.lock().await;
        let session = match slot.take() {
            Some(session) if session.usable() => session,
            _ => {
                let session = self.connect().await?;
                info!(place = %self.target.place, schema = %self.target.schema, "connected to the state database again");
                session
            }
        };
        let session = slot.insert(session);
        let fence = Some(self.fence.load(Ordering::SeqCst)).filter(|&epoch| epoch > 0);
        let result = match session.run(sql, params, write, fence).await {
            Ok(rows) => read(rows),
            Err(e) => Err(session::Failure::Sql(e)),
        };
        result.map_err(|failure| {
            let error = self.target.error(op, session.client.is_closed(), failure);
            session.broken = error.lost_connection();
            error
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn save_confirmed(&self, lsn: Lsn) -> Result<Lsn, StateError> {
        status::save_confirmed(self, lsn).await
    }

    async fn confirmed(&self) -> Result<Option<Lsn>, StateError> {
        status::confirmed(self).await
    }

    async fn store_pending(
        &self,
        subscriber: &str,
        items: Vec<PendingInsert>,
    ) -> Result<usize, StateError> {
        pending::store(self, subscriber, &items).await
    }

    async fn due(
        &self,
        subscriber: &str,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StateError> {
        pending::due(self, subscriber, now, limit).await
    }

    async fn next_due_at(&self, subscriber: &str) -> Result<Option<UnixMillis>, StateError> {
        pending::next_due_at(self, subscriber).await
    }

    async fn must_hold(&self, subscriber: &str, event: &Event) -> Result<bool, StateError> {
        pending::must_hold(self, subscriber, event).await
    }

    async fn reschedule(&self, subscriber: &str, retries: Vec<Retry>) -> Result<usize, StateError> {
        pending::reschedule(self, subscriber, &retries).await
    }

    async fn remove_pending(
        &self,
        subscriber: &str,
        ids: Vec<String>,
    ) -> Result<usize, StateError> {
        pending::remove(self, subscriber, &ids).await
    }

    async fn move_to_dead_letters(
        &self,
        subscriber: &str,
        failures: Vec<Failure>,
    ) -> Result<usize, StateError> {
        dead_letters::move_from_pending(self, subscriber, &failures).await
    }

    async fn store_dead_letters(
        &self,
        subscriber: &str,
        items: Vec<DeadLetterInsert>,
    ) -> Result<usize, StateError> {
        dead_letters::store(self, subscriber, &items).await
    }

    async fn list_dead_letters(
        &self,
        filter: DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StateError> {
        dead_letters::list(self, &filter, limit).await
    }

    async fn count_dead_letters(&self, filter: DeadLetterFilter) -> Result<u64, StateError> {
        dead_letters::count_matching(self, &filter).await
    }

    async fn replay_dead_letters(
        &self,
        filter: DeadLetterFilter,
        now: UnixMillis,
    ) -> Result<usize, StateError> {
        dead_letters::replay(self, &filter, now).await
    }

    async fn discard_dead_letters(&self, filter: DeadLetterFilter) -> Result<usize, StateError> {
        dead_letters::discard(self, &filter).await
    }

    async fn request_backfill(&self, new: NewBackfill, now: UnixMillis) -> Result<i64, StateError> {
        backfills::request(self, &new, now).await
    }

    async fn backfill(&self, id: i64) -> Result<Option<Backfill>, StateError> {
        backfills::get(self, id).await
    }

    async fn active_backfills(&self) -> Result<Vec<Backfill>, StateError> {
        backfills::active(self).await
    }

    async fn start_backfill(&self, id: i64, now: UnixMillis) -> Result<(), StateError> {
        backfills::start(self, id, now).await
    }

    async fn save_backfill_progress(
        &self,
        id: i64,
        progress: BackfillProgress,
        now: UnixMillis,
    ) -> Result<(), StateError> {
        backfills::save_progress(self, id, &progress, now).await
    }

    async fn set_backfill_waiting(
        &self,
        id: i64,
        waiting: Option<String>,
    ) -> Result<(), StateError> {
        backfills::set_waiting(self, id, waiting.as_deref()).await
    }

    async fn clear_backfill_waits(&self) -> Result<(), StateError> {
        backfills::clear_waits(self).await
    }

    async fn finish_backfill(
        &self,
        id: i64,
        error: Option<String>,
        now: UnixMillis,
    ) -> Result<(), StateError> {
        backfills::finish(self, id, error.as_deref(), now).await
    }

    async fn pause(&self, subscriber: &str, pause: Pause) -> Result<Pause, StateError> {
        status::pause(self, subscriber, &pause).await
    }

    async fn resume(&self, subscriber: &str) -> Result<Option<Pause>, StateError> {
        status::resume(self, subscriber).await
    }

    async fn paused(&self, subscriber: &str) -> Result<Option<Pause>, StateError> {
        status::paused(self, subscriber).await
    }

    async fn record_success(&self, subscriber: &str, at: UnixMillis) -> Result<(), StateError> {
        status::record_success(self, subscriber, at).await
    }

    async fn record_error(
        &self,
        subscriber: &str,
        at: UnixMillis,
        text: String,
    ) -> Result<(), StateError> {
        status::record_error(self, subscriber, at, &text).await
    }

    async fn subscriber_status(&self, subscriber: &str) -> Result<SubscriberStatus, StateError> {
        status::subscriber_status(self, subscriber).await
    }

    async fn status(&self) -> Result<Vec<SubscriberStatus>, StateError> {
        status::all(self).await
    }
}
