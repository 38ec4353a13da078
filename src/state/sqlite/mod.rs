//! The embedded store: one SQLite file, the default backend.
//!
//! SQLite calls are synchronous and may wait on the disk (an fsync per commit), so the
//! connection lives on a thread of its own and every call is sent to it: a runtime thread
//! never waits on the disk, and calls run one at a time, in the order they were sent.

mod backfills;
mod db;
mod dead_letters;
mod pending;
mod schema;
mod subscribers;

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::store::{BackfillProgress, Store};
use super::{
    Backfill, DeadLetter, DeadLetterFilter, DeadLetterInsert, Failure, NewBackfill, Pause,
    PendingEvent, PendingInsert, Retry, StateError, SubscriberStatus, UnixMillis,
};
use crate::model::{Event, Lsn};
use db::Db;

type Call = Box<dyn FnOnce(&mut Db) + Send>;

/// The SQLite store. Cheap to share behind an `Arc`. Dropping the last handle runs the calls
/// sent before, closes the file and only then returns: opening the same file again right
/// after (as `walhook status` does) must not meet a close still under way on the store's
/// thread, which SQLite's unix VFS can deadlock on.
pub struct SqliteStore {
    calls: Option<mpsc::Sender<Call>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once the calls sent before have run.
        drop(self.calls.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file (not its directory) if it is missing, and
    /// brings its schema up to date.
    ///
    /// Fails with [`StateError::MissingDirectory`] if the directory is missing,
    /// [`StateError::Open`] if the file cannot be written, [`StateError::Corrupt`] if it is not
    /// a walhook state file, and [`StateError::NewerSchema`] if a later walhook wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StateError> {
        let path = path.as_ref().to_path_buf();
        Self::start(Db::open(&path)?, path)
    }

    /// A store that lives only as long as this value: for tests.
    pub fn open_in_memory() -> Result<SqliteStore, StateError> {
        Self::start(Db::open_in_memory()?, PathBuf::from(":memory:"))
    }

    fn start(mut db: Db, path: PathBuf) -> Result<SqliteStore, StateError> {
        let (calls, queue) = mpsc::channel::<Call>();
        let thread = std::thread::Builder::new()
            .name("walhook-state".into())
            .spawn(move || {
                while let Ok(call) = queue.recv() {
                    call(&mut db);
                }
                // The connection closes here, before `drop` of the last handle returns.
                drop(db);
            })
            .map_err(|source| StateError::Thread {
                path: path.clone(),
                source,
            })?;
        Ok(SqliteStore {
            calls: Some(calls),
            thread: Some(thread),
            path,
        })
    }

    /// Runs `work` on the store's thread and waits for its answer without blocking this one.
    async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Db) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let (answer, answered) = oneshot::channel();
        let call: Call = Box::new(move |db| {
            let _ = answer.send(work(db));
        });
        let stopped = || StateError::Stopped {
            path: self.path.clone(),
        };
        let calls = self.calls.as_ref().ok_or_else(stopped)?;
        calls.send(call).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn save_confirmed(&self, lsn: Lsn) -> Result<Lsn, StateError> {
        self.call(move |db| db.save_confirmed(lsn)).await
    }

    async fn confirmed(&self) -> Result<Option<Lsn>, StateError> {
        self.call(|db| db.confirmed()).await
    }

    async fn store_pending(
        &self,
        subscriber: &str,
        items: Vec<PendingInsert>,
    ) -> Result<usize, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.store_pending(&subscriber, &items))
            .await
    }

    async fn due(
        &self,
        subscriber: &str,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.due(&subscriber, now, limit)).await
    }

    async fn next_due_at(&self, subscriber: &str) -> Result<Option<UnixMillis>, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.next_due_at(&subscriber)).await
    }

    async fn must_hold(&self, subscriber: &str, event: &Event) -> Result<bool, StateError> {
        let subscriber = subscriber.to_string();
        let (key, table, barrier) = (event.key.clone(), event.table.clone(), event.is_truncate);
        self.call(move |db| db.must_hold(&subscriber, &key, &table, barrier))
            .await
    }

    async fn reschedule(&self, subscriber: &str, retries: Vec<Retry>) -> Result<usize, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.reschedule(&subscriber, &retries))
            .await
    }

    async fn remove_pending(
        &self,
        subscriber: &str,
        ids: Vec<String>,
    ) -> Result<usize, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.remove_pending(&subscriber, &ids))
            .await
    }

    async fn move_to_dead_letters(
        &self,
        subscriber: &str,
        failures: Vec<Failure>,
    ) -> Result<usize, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.move_to_dead_letters(&subscriber, &failures))
            .await
    }

    async fn store_dead_letters(
        &self,
        subscriber: &str,
        items: Vec<DeadLetterInsert>,
    ) -> Result<usize, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.store_dead_letters(&subscriber, &items))
            .await
    }

    async fn list_dead_letters(
        &self,
        filter: DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StateError> {
        self.call(move |db| db.list_dead_letters(&filter, limit))
            .await
    }

    async fn count_dead_letters(&self, filter: DeadLetterFilter) -> Result<u64, StateError> {
        self.call(move |db| db.count_dead_letters(&filter)).await
    }

    async fn replay_dead_letters(
        &self,
        filter: DeadLetterFilter,
        now: UnixMillis,
    ) -> Result<usize, StateError> {
        self.call(move |db| db.replay_dead_letters(&filter, now))
            .await
    }

    async fn discard_dead_letters(&self, filter: DeadLetterFilter) -> Result<usize, StateError> {
        self.call(move |db| db.discard_dead_letters(&filter)).await
    }

    async fn request_backfill(&self, new: NewBackfill, now: UnixMillis) -> Result<i64, StateError> {
        self.call(move |db| db.request_backfill(&new, now)).await
    }

    async fn backfill(&self, id: i64) -> Result<Option<Backfill>, StateError> {
        self.call(move |db| db.backfill(id)).await
    }

    async fn active_backfills(&self) -> Result<Vec<Backfill>, StateError> {
        self.call(|db| db.active_backfills()).await
    }

    async fn start_backfill(&self, id: i64, now: UnixMillis) -> Result<(), StateError> {
        self.call(move |db| db.start_backfill(id, now)).await
    }

    async fn save_backfill_progress(
        &self,
        id: i64,
        progress: BackfillProgress,
        now: UnixMillis,
    ) -> Result<(), StateError> {
        self.call(move |db| db.save_backfill_progress(id, &progress, now))
            .await
    }

    async fn set_backfill_waiting(
        &self,
        id: i64,
        waiting: Option<String>,
    ) -> Result<(), StateError> {
        self.call(move |db| db.set_backfill_waiting(id, waiting.as_deref()))
            .await
    }

    async fn clear_backfill_waits(&self) -> Result<(), StateError> {
        self.call(|db| db.clear_backfill_waits()).await
    }

    async fn finish_backfill(
        &self,
        id: i64,
        error: Option<String>,
        now: UnixMillis,
    ) -> Result<(), StateError> {
        self.call(move |db| db.finish_backfill(id, error.as_deref(), now))
            .await
    }

    async fn pause(&self, subscriber: &str, pause: Pause) -> Result<Pause, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.pause(&subscriber, &pause)).await
    }

    async fn resume(&self, subscriber: &str) -> Result<Option<Pause>, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.resume(&subscriber)).await
    }

    async fn paused(&self, subscriber: &str) -> Result<Option<Pause>, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.paused(&subscriber)).await
    }

    async fn record_success(&self, subscriber: &str, at: UnixMillis) -> Result<(), StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.record_success(&subscriber, at))
            .await
    }

    async fn record_error(
        &self,
        subscriber: &str,
        at: UnixMillis,
        text: String,
    ) -> Result<(), StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.record_error(&subscriber, at, &text))
            .await
    }

    async fn subscriber_status(&self, subscriber: &str) -> Result<SubscriberStatus, StateError> {
        let subscriber = subscriber.to_string();
        self.call(move |db| db.subscriber_status(&subscriber)).await
    }

    async fn status(&self) -> Result<Vec<SubscriberStatus>, StateError> {
        self.call(|db| db.status()).await
    }
}

#[cfg(test)]
mod tests;
