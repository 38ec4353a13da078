//! The one door between a worker and the state store: events that cannot go now move to the
//! store (behind the held events of their key), held events that are due come back from it,
//! delivered ones are removed, hopeless ones dead-lettered; and what the store has made safe is
//! reported settled to the ack tracker.
//!
//! Settling: a job is reported settled only after the store's commit that holds or
//! dead-letters it returned (see [`Spill::flush`]), so a crash can lose nothing that was
//! settled. Order per key among held events is the store's business ([`Store::due`] returns
//! only heads, [`Store::must_hold`] keeps live events behind held ones).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;

use super::job::Job;
use super::meters::Meters;
use super::retry::Schedule;
use super::sink::{Outcome, Report};
use crate::model::{Event, TxnId};
use crate::state::{
    DeadLetterInsert, Failure, Pause, PendingEvent, PendingInsert, PeriodicWrite, Retry,
    StateError, Store, UnixMillis,
};

/// A delivery is recorded in the store (for `walhook status`) at most this often: each
/// record is a durable commit.
const SUCCESS_RECORD_EVERY: Duration = Duration::from_secs(1);

/// What the worker shares with the rest of walhook.
pub struct WorkerContext {
    pub store: Arc<dyn Store>,
    /// Transactions whose jobs settled (one entry per job).
    pub settled: mpsc::UnboundedSender<Vec<TxnId>>,
}

/// Why a worker stopped early: the store failed, so nothing more can be settled safely.
#[derive(Debug, thiserror::Error)]
#[error("subscriber `{subscriber}`: the state store failed; walhook stops confirming progress")]
pub struct WorkerError {
    pub subscriber: String,
    #[source]
    pub source: Box<StateError>,
}

/// A held event read back from the store, on its way to another attempt.
#[derive(Debug)]
pub(super) struct Held(PendingEvent);

impl Held {
    pub fn event(&self) -> &Event {
        &self.0.event
    }
}

/// One subscriber's traffic with the store. Writes are gathered and committed by
/// [`Spill::flush`], one transaction for many events.
pub(super) struct Spill {
    subscriber: String,
    schedule: Schedule,
    ctx: WorkerContext,
    /// Jobs to store behind held events at the next flush, with their failed attempt if any.
    to_store: Vec<(Job, Option<Report>)>,
    to_dead_letter: Vec<(Job, Report)>,
    /// Held events delivered, removed from the store at the next flush.
    to_remove: Vec<String>,
    /// Held events that are due, fetched in bulk, not yet sent.
    due: VecDeque<PendingEvent>,
    /// Held event ids in flight, or delivered and not yet removed.
    retrying: HashSet<String>,
    /// A delivery may have made more held events due (the next of its key).
    more_due: bool,
    /// The store may hold events of this subscriber.
    has_events: bool,
    /// The latest delivery not yet recorded in the store, and its record (for `walhook
    /// status`).
    unrecorded_success: Option<UnixMillis>,
    success_record: PeriodicWrite,
}

impl Spill {
    /// Sets the backlog gauge from what the store holds. A recorded pause stays: it holds
    /// until resumed (see [`Spill::recorded_pause`]).
    pub async fn open(
        subscriber: &str,
        schedule: Schedule,
        ctx: WorkerContext,
        meters: &mut Meters,
    ) -> Result<Self, WorkerError> {
        let spill = Self {
            subscriber: subscriber.to_string(),
            schedule,
            ctx,
            to_store: Vec::new(),
            to_dead_letter: Vec::new(),
            to_remove: Vec::new(),
            due: VecDeque::new(),
            retrying: HashSet::new(),
            more_due: false,
            has_events: true,
            unrecorded_success: None,
            success_record: PeriodicWrite::new(SUCCESS_RECORD_EVERY),
        };
        spill.recount_backlog(meters).await?;
        Ok(spill)
    }

    /// Whether a live `event` must be stored behind held events of its key or table instead
    /// of being sent: behind events on their way to the store (not written yet: the worker
    /// takes a burst of jobs before it flushes), or behind what the store holds. Asks the
    /// store only while it may hold events of this subscriber.
    pub async fn must_hold(&self, event: &Event) -> Result<bool, WorkerError> {
        if self
            .to_store
            .iter()
            .any(|(job, _)| event.must_follow(&job.event))
        {
            return Ok(true);
        }
        if !self.has_events {
            return Ok(false);
        }
        self.failed(self.store().must_hold(&self.subscriber, event).await)
    }

    /// Stores `job` at the next flush, behind what is held; `failed` is its failed attempt,
    /// if it was attempted.
    pub fn hold(&mut self, job: Job, failed: Option<Report>) {
        self.to_store.push((job, failed));
    }

    /// Dead-letters `job` at the next flush.
    pub fn dead_letter(&mut self, job: Job, report: Report) {
        self.to_dead_letter.push((job, report));
    }

    /// Reports jobs settled (delivered ones; stored ones are reported by [`Spill::flush`]).
    pub fn settled(&self, txns: Vec<TxnId>) {
        if !txns.is_empty() {
            let _ = self.ctx.settled.send(txns);
        }
    }

    /// Writes what must be stored or dead-lettered in one transaction each, then reports those
    /// jobs settled: only now are they safe from a crash. Removes delivered held events first.
    pub async fn flush(&mut self, meters: &mut Meters) -> Result<(), WorkerError> {
        if !self.to_remove.is_empty() {
            let ids = std::mem::take(&mut self.to_remove);
            let removed = self.failed(
                self.store()
                    .remove_pending(&self.subscriber, ids.clone())
                    .await,
            )?;
            meters.released(removed);
            for id in &ids {
                self.retrying.remove(id);
            }
        }
        if self.to_store.is_empty() && self.to_dead_letter.is_empty() {
            return Ok(());
        }
        let to_store = std::mem::take(&mut self.to_store);
        let to_dead = std::mem::take(&mut self.to_dead_letter);
        let schedule = self.schedule;
        let now = UnixMillis::now();
        let pending: Vec<PendingInsert> = to_store
            .iter()
            .map(|(job, report)| match report {
                None => PendingInsert::held(job.event.clone(), now),
                Some(report) => PendingInsert {
                    event: job.event.clone(),
                    attempts: 1,
                    first_failure_at: Some(now),
                    next_attempt_at: now
                        .saturating_add(schedule.next_delay(1, report.retry_after())),
                    last_status: report.code,
                    last_error: report.detail.clone(),
                },
            })
            .collect();
        let dead: Vec<DeadLetterInsert> = to_dead
            .iter()
            .map(|(job, report)| DeadLetterInsert {
                event: job.event.clone(),
                attempts: 1,
                first_attempt_at: now,
                dead_at: now,
                last_status: report.code,
                last_error: report.detail.clone(),
            })
            .collect();
        // The store commits in a few milliseconds; this holds up only this subscriber's task.
        if !dead.is_empty() {
            self.failed(
                self.store()
                    .store_dead_letters(&self.subscriber, dead)
                    .await,
            )?;
        }
        let held_any = !pending.is_empty();
        if tracing::enabled!(tracing::Level::TRACE) {
            let ids: Vec<&str> = pending.iter().map(|p| p.event.id.as_str()).collect();
            tracing::trace!(subscriber = %self.subscriber, ?ids, "storing");
        }
        let stored = if held_any {
            self.failed(self.store().store_pending(&self.subscriber, pending).await)?
        } else {
            0
        };
        meters.held(stored);
        for (job, _) in &to_dead {
            meters.dead_lettered(&job.event.event_type);
        }
        if held_any {
            self.has_events = true;
        }
        let settled: Vec<TxnId> = to_store
            .iter()
            .map(|(j, _)| j.txn)
            .chain(to_dead.iter().map(|(j, _)| j.txn))
            .collect();
        let _ = self.ctx.settled.send(settled);
        Ok(())
    }

    /// Whether the store may hold events of this subscriber.
    pub fn may_hold_events(&self) -> bool {
        self.has_events
    }

    /// Look in the store again even if nothing was stored here: `walhook dead-letters replay`
    /// may have put events back from another process.
    pub fn look_again(&mut self) {
        self.has_events = true;
    }

    /// Whether the last fetch was full, or a delivery made the next held event of a key due.
    pub fn more_due(&self) -> bool {
        self.more_due
    }

    /// Whether held events fetched earlier wait to be sent.
    pub fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// Reads up to `limit` due held events (heads of their keys, oldest first), skipping those
    /// in flight. Says whether the store turned out to hold nothing of this subscriber at all.
    pub async fn fetch_due(&mut self, limit: usize) -> Result<bool, WorkerError> {
        let due = self.failed(
            self.store()
                .due(&self.subscriber, UnixMillis::now(), limit)
                .await,
        )?;
        self.more_due = due.len() == limit;
        if due.is_empty() && self.retrying.is_empty() {
            let next = self.failed(self.store().next_due_at(&self.subscriber).await)?;
            if next.is_none() {
                self.has_events = false;
                return Ok(true);
            }
            return Ok(false);
        }
        self.due = due
            .into_iter()
            .filter(|p| !self.retrying.contains(&p.event.id))
            .collect();
        Ok(false)
    }

    /// Up to `size` of the due held events, marked in flight, but none that `waits` (a held
    /// truncate whose table still has live events before it): those stay first in line.
    pub fn take_due(&mut self, size: usize, waits: impl Fn(&Event) -> bool) -> Vec<Held> {
        let (waiting, ready): (VecDeque<PendingEvent>, VecDeque<PendingEvent>) =
            std::mem::take(&mut self.due)
                .into_iter()
                .partition(|p| waits(&p.event));
        self.due = ready;
        let size = size.min(self.due.len());
        let held: Vec<Held> = self.due.drain(..size).map(Held).collect();
        let rest = std::mem::replace(&mut self.due, waiting);
        self.due.extend(rest);
        for pending in &held {
            self.retrying.insert(pending.event().id.clone());
        }
        held
    }

    /// Settles held events after an attempt: delivered ones are removed at the next flush,
    /// failed ones rescheduled or dead-lettered (after `give_up_after`, or at once when the
    /// receiver refused them), in one store transaction each.
    pub async fn completed(
        &mut self,
        held: Vec<Held>,
        report: &Report,
        meters: &mut Meters,
    ) -> Result<(), WorkerError> {
        for pending in &held {
            self.retrying.remove(&pending.event().id);
        }
        let retry_after = match report.outcome {
            Outcome::Delivered => {
                // Removed at the next flush; until then `retrying` keeps them from going twice.
                self.to_remove
                    .extend(held.into_iter().map(|pending| pending.0.event.id));
                self.more_due = true;
                return Ok(());
            }
            Outcome::Retry { after } => Some(after),
            Outcome::Unreachable => Some(None),
            Outcome::Reject | Outcome::Gone { .. } => None,
        };
        let now = UnixMillis::now();
        let mut retries = Vec::new();
        let mut dead = Vec::new();
        for Held(pending) in &held {
            let attempts = pending.attempts + 1;
            let failure = Failure {
                id: pending.event.id.clone(),
                attempts,
                at: now,
                status: report.code,
                error: report.detail.clone(),
            };
            let first = pending.first_failure_at.unwrap_or(now);
            match retry_after {
                Some(_) if self.schedule.gives_up(now.saturating_duration_since(first)) => {
                    warn!(subscriber = %self.subscriber, event_id = %failure.id, attempts, "giving up; event dead-lettered");
                    dead.push((failure, pending.event.event_type.as_str()));
                }
                Some(retry_after) => retries.push(Retry {
                    failure,
                    next_attempt_at: now
                        .saturating_add(self.schedule.next_delay(attempts, retry_after)),
                }),
                None => dead.push((failure, pending.event.event_type.as_str())),
            }
        }
        if !retries.is_empty() {
            self.failed(self.store().reschedule(&self.subscriber, retries).await)?;
        }
        if !dead.is_empty() {
            let (failures, types): (Vec<Failure>, Vec<&str>) = dead.into_iter().unzip();
            let moved = self.failed(
                self.store()
                    .move_to_dead_letters(&self.subscriber, failures)
                    .await,
            )?;
            meters.released(moved);
            for event_type in types {
                meters.dead_lettered(event_type);
            }
        }
        Ok(())
    }

    /// Records a failed attempt, now (for `walhook status`).
    pub async fn record_error(&self, error: &str) -> Result<(), WorkerError> {
        let now = UnixMillis::now();
        self.failed(
            self.store()
                .record_error(&self.subscriber, now, error.to_string())
                .await,
        )
    }

    /// Records a pause by the receiver (a 410 Gone), so it holds until an operator resumes
    /// it, across restarts too. Returns the pause in force: an earlier one, if the subscriber
    /// was paused already.
    pub async fn record_pause(&self, reason: &str) -> Result<Pause, WorkerError> {
        let pause = Pause {
            reason: Some(reason.to_string()),
            by: "receiver".to_string(),
            since: UnixMillis::now(),
        };
        self.failed(self.store().pause(&self.subscriber, pause).await)
    }

    /// The pause recorded in the store, if any: set by `walhook subscribers pause` or the
    /// api from another process, or by a 410 Gone. A failed read is the caller's to judge.
    pub async fn recorded_pause(&self) -> Result<Option<Pause>, StateError> {
        self.store().paused(&self.subscriber).await
    }

    /// [`Spill::recorded_pause`], a failure naming the subscriber.
    pub async fn recorded_pause_or_fail(&self) -> Result<Option<Pause>, WorkerError> {
        self.failed(self.recorded_pause().await)
    }

    /// A request was delivered just now: recorded by the next [`Spill::record_success`].
    pub fn delivered(&mut self) {
        self.unrecorded_success = Some(UnixMillis::now());
    }

    /// Records the latest delivery in the store (for `walhook status`) if one is unrecorded:
    /// in the background at most once per `SUCCESS_RECORD_EVERY`, or on this thread if `now`
    /// (at the end).
    pub async fn record_success(&mut self, now: bool) -> Result<(), WorkerError> {
        let Some(at) = self.unrecorded_success else {
            return Ok(());
        };
        if now {
            self.failed(self.store().record_success(&self.subscriber, at).await)?;
            self.unrecorded_success = None;
            return Ok(());
        }
        // A failure here is only a stale "last success" in `walhook status`; the writes that
        // settle events report a failing store.
        let name = self.subscriber.clone();
        let store = self.ctx.store.clone();
        let started = self.success_record.start(async move {
            if let Err(e) = store.record_success(&name, at).await {
                warn!(subscriber = %name, error = %crate::error_chain(&e), "cannot record the last delivery in the state file");
            }
        });
        if started {
            self.unrecorded_success = None;
        }
        Ok(())
    }

    /// Sets the retry backlog gauge from a count of what the store holds. The count reads
    /// every held event, so it runs at start and once a minute, not per change.
    pub async fn recount_backlog(&self, meters: &mut Meters) -> Result<(), WorkerError> {
        let status = self.failed(self.store().subscriber_status(&self.subscriber).await)?;
        meters.set_backlog(status.pending);
        Ok(())
    }

    fn store(&self) -> &dyn Store {
        &*self.ctx.store
    }

    /// Names the subscriber in a store failure: the worker stops on it.
    fn failed<T>(&self, result: Result<T, StateError>) -> Result<T, WorkerError> {
        result.map_err(|e| WorkerError {
            subscriber: self.subscriber.clone(),
            source: Box::new(e),
        })
    }
}
