//! The store trait: what walhook must remember across restarts, and the contract every
//! backend keeps: SQLite ([`super::SqliteStore`]) and Postgres ([`super::PostgresStore`]). The
//! contract tests (`state/contract/`) are written once and run against each.

use async_trait::async_trait;

use super::backfills::{Backfill, NewBackfill};
use super::dead_letters::{DeadLetter, DeadLetterFilter, DeadLetterInsert};
use super::error::StateError;
use super::millis::UnixMillis;
use super::pending::{Failure, PendingEvent, PendingInsert, Retry};
use super::subscribers::{Pause, SubscriberStatus};
use crate::model::{Event, Lsn};

/// Where walhook keeps events held for a later attempt, dead letters, backfill progress,
/// subscriber state and the confirmed LSN.
///
/// # Durability
/// Storing an event settles it: the ack tracker may then confirm its LSN to Postgres, and the
/// WAL that held it may be gone. So every method that writes is durable when it returns (it
/// survives a crash or a power loss from then on) and atomic: one call is one transaction,
/// however many events it takes; if it fails, it changed nothing.
///
/// # Order per key
/// Held events of one (subscriber, key) go out in the order they were stored; only the oldest
/// (the key's *head*) may be attempted. A barrier (a truncate, or an update that changed its
/// row's primary key: [`Event::is_truncate`]) holds its table: it becomes due only when no
/// earlier event of its table is held, and no later event of its table is due while it is
/// held. This is the rule of [`Event::must_follow`], applied to what the store holds:
/// [`Store::due`] returns only what it allows, and [`Store::must_hold`] says when a live event
/// must be stored behind held ones; callers never reimplement them. The contract test
/// `due_events_never_overtake_one_they_must_follow` checks the rule on random histories.
///
/// # Progress
/// Progress never moves backward: [`Store::save_confirmed`] keeps the larger LSN, whatever
/// order calls arrive in.
///
/// # Concurrency
/// Methods take `&self` and may be called from many tasks at once; each call is atomic on its
/// own, and calls from one task take effect in the order they were made. A call never blocks a
/// runtime thread: a backend that must wait on a disk does it on a thread of its own. Other
/// processes (`walhook dead-letters replay`, `walhook backfill`) may use the same store at the
/// same time.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Records that Postgres may forget WAL up to `lsn`; returns the checkpoint now stored,
    /// the larger of `lsn` and what was stored.
    async fn save_confirmed(&self, lsn: Lsn) -> Result<Lsn, StateError>;

    /// The last confirmed LSN, if one was ever saved.
    async fn confirmed(&self) -> Result<Option<Lsn>, StateError>;

    /// Holds `items` for `subscriber`, after everything already held, in the order given.
    /// Returns how many were new.
    ///
    /// Idempotent: an event whose id is already held for this subscriber (read again from the
    /// slot after a crash) keeps its place and its attempts; the new copy is ignored. An event
    /// that was delivered or dead-lettered is not remembered, so storing it again holds it
    /// again (at least once).
    async fn store_pending(
        &self,
        subscriber: &str,
        items: Vec<PendingInsert>,
    ) -> Result<usize, StateError>;

    /// Up to `limit` held events of `subscriber` that may be attempted now: heads of their
    /// keys, with `next_attempt_at <= now`, not behind a barrier. The most overdue first, ties
    /// in the order they were stored.
    ///
    /// Nothing is leased: until the caller reschedules, removes or dead-letters an event, the
    /// next call returns it again, so a caller skips the ids it has in flight.
    async fn due(
        &self,
        subscriber: &str,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StateError>;

    /// When the earliest head of `subscriber` is next due (possibly in the past), to sleep
    /// until then instead of polling; `None` if nothing is held. A head behind a barrier
    /// counts, so this may be earlier than what [`Store::due`] then returns.
    async fn next_due_at(&self, subscriber: &str) -> Result<Option<UnixMillis>, StateError>;

    /// Whether a live `event` for `subscriber` must be stored behind held events instead of
    /// being sent: its key has a held event, its table has a held barrier, or it is a barrier
    /// and its table has any held event.
    async fn must_hold(&self, subscriber: &str, event: &Event) -> Result<bool, StateError>;

    /// Records failed attempts and when to try each again. The first failure time is kept
    /// from the first failure. Returns how many of the ids were held (others are ignored).
    async fn reschedule(&self, subscriber: &str, retries: Vec<Retry>) -> Result<usize, StateError>;

    /// Forgets delivered events; the next event of each key becomes its head. Returns how
    /// many were held.
    async fn remove_pending(&self, subscriber: &str, ids: Vec<String>)
        -> Result<usize, StateError>;

    /// Moves held events given up on to the dead letters; the next event of each key becomes
    /// its head. Returns how many were held (others are ignored). An event already
    /// dead-lettered for this subscriber is replaced.
    async fn move_to_dead_letters(
        &self,
        subscriber: &str,
        failures: Vec<Failure>,
    ) -> Result<usize, StateError>;

    /// Dead-letters live events that were never held. An event already dead-lettered for
    /// this subscriber is replaced. Returns how many were stored.
    async fn store_dead_letters(
        &self,
        subscriber: &str,
        items: Vec<DeadLetterInsert>,
    ) -> Result<usize, StateError>;

    /// Up to `limit` dead letters matching `filter`, oldest first.
    async fn list_dead_letters(
        &self,
        filter: DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StateError>;

    async fn count_dead_letters(&self, filter: DeadLetterFilter) -> Result<u64, StateError>;

    /// Puts the dead letters matching `filter` back among the held events, behind what their
    /// key holds, due at `now`, with fresh attempts; among themselves in commit order. An event
    /// held again meanwhile keeps its place. Returns how many were replayed.
    async fn replay_dead_letters(
        &self,
        filter: DeadLetterFilter,
        now: UnixMillis,
    ) -> Result<usize, StateError>;

    /// Deletes the dead letters matching `filter`; returns how many.
    async fn discard_dead_letters(&self, filter: DeadLetterFilter) -> Result<usize, StateError>;

    /// Records a backfill request as pending; returns its id.
    async fn request_backfill(&self, new: NewBackfill, now: UnixMillis) -> Result<i64, StateError>;

    async fn backfill(&self, id: i64) -> Result<Option<Backfill>, StateError>;

    /// Backfills running or pending: running ones first, then in the order requested.
    async fn active_backfills(&self) -> Result<Vec<Backfill>, StateError>;

    /// Marks a backfill running (keeping its first start time).
    async fn start_backfill(&self, id: i64, now: UnixMillis) -> Result<(), StateError>;

    /// Records that every row up to `last_key` was read and its events settled, and which
    /// rows it passed must be read again (`reread`, primary keys as JSON array texts);
    /// `waiting` replaces what was recorded as waited for.
    async fn save_backfill_progress(
        &self,
        id: i64,
        progress: BackfillProgress,
        now: UnixMillis,
    ) -> Result<(), StateError>;

    /// Records what a running backfill waits for (`None`: nothing), leaving its progress and
    /// `updated_at` alone.
    async fn set_backfill_waiting(
        &self,
        id: i64,
        waiting: Option<String>,
    ) -> Result<(), StateError>;

    /// Forgets what every backfill waits for (walhook stops: they wait for the next run).
    async fn clear_backfill_waits(&self) -> Result<(), StateError>;

    /// Marks a backfill done (`error` `None`) or failed.
    async fn finish_backfill(
        &self,
        id: i64,
        error: Option<String>,
        now: UnixMillis,
    ) -> Result<(), StateError>;

    /// Pauses delivery to `subscriber` until [`Store::resume`]: the pause survives restarts,
    /// and a running walhook learns of it through [`Store::paused`]. Pausing a paused
    /// subscriber changes nothing: the first pause (its reason, origin and time) stays in
    /// force. Returns the pause in force.
    async fn pause(&self, subscriber: &str, pause: Pause) -> Result<Pause, StateError>;

    /// Lifts the pause of `subscriber`; returns the pause lifted, `None` if it was not paused.
    async fn resume(&self, subscriber: &str) -> Result<Option<Pause>, StateError>;

    /// The pause in force for `subscriber`, if any. One row's read: each worker of a running
    /// walhook asks it once a second.
    async fn paused(&self, subscriber: &str) -> Result<Option<Pause>, StateError>;

    /// Records the latest delivery to `subscriber` (for `walhook status`).
    async fn record_success(&self, subscriber: &str, at: UnixMillis) -> Result<(), StateError>;

    /// Records a failed attempt (for `walhook status`).
    async fn record_error(
        &self,
        subscriber: &str,
        at: UnixMillis,
        text: String,
    ) -> Result<(), StateError>;

    /// What the store holds for `subscriber`; empty counts for one it never heard of.
    async fn subscriber_status(&self, subscriber: &str) -> Result<SubscriberStatus, StateError>;

    /// Every subscriber the store holds anything for, by name.
    async fn status(&self) -> Result<Vec<SubscriberStatus>, StateError>;
}

/// A backfill's saved progress: see [`Store::save_backfill_progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillProgress {
    pub last_key: Option<String>,
    pub reread: Vec<String>,
    pub rows_done: u64,
    pub waiting: Option<String>,
}
