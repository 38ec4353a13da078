//! One subscriber's worker: sends its events with up to `concurrency` requests in flight,
//! keeps each key's events in commit order, and hands an event it cannot deliver now to the
//! state store (with every later event of its key), where the retrier picks it up on schedule.
//!
//! Every job it receives is reported back as settled exactly once: delivered (2xx), stored for
//! a later attempt (after the store's commit returned), or dead-lettered. It never confirms
//! LSNs itself.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use super::job::Job;
use super::meters::{now_micros, Meters};
use super::order::Order;
use super::retry::Schedule;
use super::sink::{Outcome, Report, Sink};
use crate::config::SubscriberConfig;
use crate::mapping::Event;
use crate::state::{
    with_store, DeadLetterInsert, Failure, PendingEvent, PendingInsert, PeriodicWrite, Retry,
    StateError, Store, TxnId, UnixMillis,
};

/// Jobs accepted in one go before the worker sends, stores and looks at completions again.
const ACCEPT_BURST: usize = 512;

/// A delivery is recorded in the store (for `walhook status`) at most this often: each
/// record is a durable commit.
const SUCCESS_RECORD_EVERY: Duration = Duration::from_secs(1);

/// Held events fetched from the store at once, at least: more when `batch_size` ×
/// `concurrency` is larger, up to `RETRY_FETCH_MAX`.
const RETRY_FETCH: usize = 256;
const RETRY_FETCH_MAX: usize = 4096;
/// The retry backlog gauge is recounted from the store this often (in 100 ms ticks), which
/// corrects it after `walhook dead-letters replay` added events from another process.
const BACKLOG_RECOUNT_TICKS: u64 = 600;

/// What the worker shares with the rest of walhook.
pub struct WorkerContext {
    pub store: Arc<Mutex<Store>>,
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

/// A request in flight: live jobs, or held events the retrier sent (each the head of its key,
/// so a batch of them never holds two events of one key).
enum Sent {
    Live(Vec<Job>),
    Held(Vec<PendingEvent>),
}

impl Sent {
    fn events(&self) -> impl Iterator<Item = &Event> {
        let (live, held) = match self {
            Sent::Live(jobs) => (jobs.as_slice(), &[][..]),
            Sent::Held(pending) => (&[][..], pending.as_slice()),
        };
        let held = held.iter().map(|p| &p.event);
        live.iter().map(|job| job.event.as_ref()).chain(held)
    }
}

pub struct Worker<S> {
    config: SubscriberConfig,
    /// Shared with each request's task.
    sink: Arc<S>,
    schedule: Schedule,
    ctx: WorkerContext,
    /// Live jobs: per-key order and truncate barriers.
    order: Order<Job>,
    in_flight: JoinSet<(Sent, Report)>,
    /// Held event ids the retrier has in flight, or delivered and not yet removed.
    retrying: HashSet<String>,
    /// Held events that are due, fetched in bulk, not yet sent.
    due: VecDeque<PendingEvent>,
    /// A delivery may have made more held events due (the next of its key).
    more_due: bool,
    /// Held events delivered, removed from the store at the next flush.
    to_remove: Vec<String>,
    /// Jobs to store behind held events at the next flush, with their failed attempt if any.
    to_store: Vec<(Job, Option<Report>)>,
    to_dead_letter: Vec<(Job, Report)>,
    /// The store may hold events of this subscriber (checked before sending live jobs).
    store_has_events: bool,
    /// Connection-level failures since the last success: the receiver is down, so live jobs go
    /// straight to the store instead of each waiting for its own failed connect.
    down: bool,
    paused: Option<String>,
    /// The job channel closed: nothing more is sent live, queued jobs go to the store.
    draining: bool,
    /// The latest delivery not yet recorded in the store, and its record (for `walhook
    /// status`).
    unrecorded_success: Option<UnixMillis>,
    success_record: PeriodicWrite,
    meters: Meters,
}

impl<S: Sink> Worker<S> {
    /// A worker that sends `config`'s events through `sink`.
    pub fn new(config: SubscriberConfig, sink: S, ctx: WorkerContext) -> Result<Self, WorkerError> {
        let schedule = Schedule::new(config.retry);
        let meters = Meters::new(&config.name);
        let mut worker = Self {
            config,
            sink: Arc::new(sink),
            schedule,
            ctx,
            order: Order::default(),
            in_flight: JoinSet::new(),
            retrying: HashSet::new(),
            due: VecDeque::new(),
            more_due: false,
            to_remove: Vec::new(),
            to_store: Vec::new(),
            to_dead_letter: Vec::new(),
            store_has_events: true,
            down: false,
            paused: None,
            draining: false,
            unrecorded_success: None,
            success_record: PeriodicWrite::new(SUCCESS_RECORD_EVERY),
            meters,
        };
        // A pause is lifted by a restart: the operator restarting walhook is the signal that
        // the subscriber's URL was fixed.
        let name = worker.config.name.clone();
        worker.with_store(|s| s.set_paused(&name, None))?;
        worker.recount_backlog()?;
        Ok(worker)
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs until `jobs` closes, then finishes what is in flight, stores what is queued, and
    /// returns.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>) -> Result<(), WorkerError> {
        let mut open = true;
        let mut ticks: u64 = 0;
        let mut retry_tick = tokio::time::interval(Duration::from_millis(100));
        retry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.launch(!open);
            self.flush()?;
            if !open && self.in_flight.is_empty() {
                self.record_success(true)?;
                return Ok(());
            }
            let batch_deadline = self.partial_batch_deadline();
            tokio::select! {
                biased;
                // 1. Completions free a slot and decide what happens to their jobs.
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    match done {
                        Ok((sent, report)) => {
                            self.completed(sent, report)?;
                            if open {
                                let fetch = self.more_due;
                                self.retry_due(fetch)?;
                            }
                        }
                        Err(e) => warn!(subscriber = %self.name(), error = %e, "delivery task failed"),
                    }
                }
                // 2. New input.
                job = jobs.recv(), if open => match job {
                    Some(job) => {
                        self.accept(job)?;
                        // Take what else is waiting, so jobs bound for the store are written in
                        // one transaction instead of one each.
                        for _ in 0..ACCEPT_BURST {
                            match jobs.try_recv() {
                                Ok(job) => self.accept(job)?,
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        open = false;
                        self.draining = true;
                        self.store_queued();
                    }
                },
                // 3. A partial batch has waited long enough.
                _ = sleep_until(batch_deadline), if batch_deadline.is_some() => {}
                // 4. Held events that are due.
                _ = retry_tick.tick(), if open => {
                    // Once a second, look even when nothing was stored here: `walhook
                    // dead-letters replay` may have put events back from another process.
                    ticks += 1;
                    if ticks % 10 == 0 {
                        self.store_has_events = true;
                    }
                    if ticks % BACKLOG_RECOUNT_TICKS == 0 {
                        self.recount_backlog()?;
                    }
                    self.record_success(false)?;
                    self.retry_due(true)?;
                }
            }
        }
    }

    /// Queues a live job, or stores it behind held events of its key or table.
    fn accept(&mut self, job: Job) -> Result<(), WorkerError> {
        // While the receiver is down, new keys go straight to the store; a key with a job still
        // queued or in flight keeps this one behind it instead, since the store would retry it
        // first.
        let behind_live = self.order.has_key(&job.event.key);
        let must_hold = self.paused.is_some()
            || (self.down && !behind_live)
            || (self.store_has_events && {
                let name = self.config.name.clone();
                self.with_store(|s| s.must_hold(&name, &job.event))?
            });
        if must_hold {
            self.to_store.push((job, None));
        } else {
            self.order.push(job, now());
        }
        Ok(())
    }

    /// When a partial batch may no longer wait for more events.
    fn partial_batch_deadline(&self) -> Option<Instant> {
        if self.config.batch_size <= 1 || self.in_flight.len() >= self.config.concurrency {
            return None;
        }
        let since = self.order.oldest_ready()?;
        Some(Instant::from_std(since) + self.config.batch_wait)
    }

    /// Starts requests while there is room: truncates whose table has gone quiet, full batches
    /// at once, a partial one after `batch_wait` (or at once when draining).
    fn launch(&mut self, draining: bool) {
        if self.paused.is_some() {
            return;
        }
        let room = self.config.concurrency.saturating_sub(self.in_flight.len());
        for truncate in self.order.take_truncates(room) {
            self.send(Sent::Live(vec![truncate]));
        }
        while self.in_flight.len() < self.config.concurrency && self.order.ready_keys() > 0 {
            let (size, wait) = (self.config.batch_size, self.config.batch_wait);
            let jobs = self.order.take_batch(size, wait, draining, now());
            if jobs.is_empty() {
                break;
            }
            self.send(Sent::Live(jobs));
        }
    }

    fn send(&mut self, sent: Sent) {
        let sink = self.sink.clone();
        self.in_flight.spawn(async move {
            let report = {
                let events: Vec<&Event> = sent.events().collect();
                sink.send(&events).await
            };
            (sent, report)
        });
    }

    fn completed(&mut self, sent: Sent, report: Report) -> Result<(), WorkerError> {
        let now = UnixMillis::now();
        self.meters.request(report.took);
        let delivered = matches!(report.outcome, Outcome::Delivered);
        let at = now_micros();
        for event in sent.events() {
            if delivered {
                self.meters.delivered(event, at);
            } else {
                self.meters.failed(&event.event_type);
            }
        }
        match report.outcome {
            Outcome::Delivered => {
                self.down = false;
                self.unrecorded_success = Some(now);
                self.record_success(false)?;
            }
            _ => {
                let error = report.detail.clone().unwrap_or_default();
                let (event_type, lsn, id, events) = match &sent {
                    Sent::Live(jobs) => jobs.first().map_or(("", Default::default(), "", 0), |j| {
                        (
                            j.event.event_type.as_str(),
                            j.event.commit_lsn,
                            j.event.id.as_str(),
                            jobs.len(),
                        )
                    }),
                    Sent::Held(held) => held.first().map_or(("", Default::default(), "", 0), |p| {
                        (
                            p.event.event_type.as_str(),
                            p.event.commit_lsn,
                            p.event.id.as_str(),
                            held.len(),
                        )
                    }),
                };
                warn!(
                    subscriber = %self.name(),
                    event_type,
                    lsn = %lsn,
                    event_id = id,
                    events,
                    status = ?report.code,
                    error = %error,
                    "delivery failed"
                );
                let name = self.config.name.clone();
                self.with_store(|s| s.record_error(&name, now, &error))?;
                if report.outcome == Outcome::Unreachable {
                    self.down = true;
                }
            }
        }
        match sent {
            Sent::Live(jobs) => self.completed_live(jobs, report),
            Sent::Held(held) => self.completed_held(held, report)?,
        }
        Ok(())
    }

    fn completed_live(&mut self, jobs: Vec<Job>, report: Report) {
        let mut settled = Vec::new();
        for job in jobs {
            let Some(job) = self.order.finished(&job, now()) else {
                continue;
            };
            match report.outcome {
                Outcome::Delivered => settled.push(job.txn),
                Outcome::Retry { .. } | Outcome::Unreachable => {
                    // This key's later jobs must stay behind it: they go to the store too.
                    let rest = self.order.take_key(&job.event.key);
                    self.to_store.push((job, Some(report.clone())));
                    self.to_store.extend(rest.into_iter().map(|j| (j, None)));
                }
                Outcome::Reject | Outcome::Gone { .. } => {
                    self.to_dead_letter.push((job, report.clone()))
                }
            }
        }
        if let Outcome::Gone { reason } = report.outcome {
            self.pause(reason);
        } else if self.paused.is_some() || self.draining {
            // What waited behind these jobs is stored now, after them.
            self.store_queued();
        }
        if !settled.is_empty() {
            let _ = self.ctx.settled.send(settled);
        }
    }

    /// The receiver is gone (for HTTP, a 410): everything waits in the store until restart.
    fn pause(&mut self, reason: String) {
        warn!(subscriber = %self.name(), reason = %reason, "subscriber paused; its events are stored until walhook restarts");
        // Recorded in the state file too, so `walhook status` shows it.
        let name = self.config.name.clone();
        if let Err(e) = self.with_store(|s| s.set_paused(&name, Some(&reason))) {
            warn!(subscriber = %name, error = %crate::error_chain(&e), "cannot record the pause in the state file");
        }
        self.paused = Some(reason);
        self.store_queued();
    }

    /// Moves every queued live job to the store in commit order, except those behind a job in
    /// flight: they follow it when it completes, so that a failed job is stored before its
    /// successors.
    fn store_queued(&mut self) {
        let mut queued = self.order.take_queued();
        queued.sort_by_key(|j| (j.event.commit_lsn, j.txn));
        self.to_store.extend(queued.into_iter().map(|j| (j, None)));
    }

    /// Writes what must be stored or dead-lettered in one transaction each, then reports those
    /// jobs settled: only now are they safe from a crash.
    fn flush(&mut self) -> Result<(), WorkerError> {
        if !self.to_remove.is_empty() {
            let name = self.config.name.clone();
            let ids = std::mem::take(&mut self.to_remove);
            let removed = self.with_store(|s| s.remove_pending(&name, &ids))?;
            self.meters.released(removed);
            for id in &ids {
                self.retrying.remove(id);
            }
        }
        if self.to_store.is_empty() && self.to_dead_letter.is_empty() {
            return Ok(());
        }
        let to_store = std::mem::take(&mut self.to_store);
        let to_dead = std::mem::take(&mut self.to_dead_letter);
        let name = self.config.name.clone();
        let schedule = self.schedule;
        let now = UnixMillis::now();
        let pending: Vec<PendingInsert<'_>> = to_store
            .iter()
            .map(|(job, report)| match report {
                None => PendingInsert::held(&job.event, now),
                Some(report) => PendingInsert {
                    event: &job.event,
                    attempts: 1,
                    first_failure_at: Some(now),
                    next_attempt_at: now
                        .saturating_add(schedule.next_delay(1, report.retry_after())),
                    last_status: report.code,
                    last_error: report.detail.as_deref(),
                },
            })
            .collect();
        let dead: Vec<DeadLetterInsert<'_>> = to_dead
            .iter()
            .map(|(job, report)| DeadLetterInsert {
                event: &job.event,
                attempts: 1,
                first_attempt_at: now,
                dead_at: now,
                last_status: report.code,
                last_error: report.detail.as_deref(),
            })
            .collect();
        // SQLite commits in a few milliseconds; this blocks only this subscriber's task.
        let stored = self.with_store(|s| {
            if !dead.is_empty() {
                s.store_dead_letters(&name, &dead)?;
            }
            if pending.is_empty() {
                Ok(0)
            } else {
                s.store_pending(&name, &pending)
            }
        })?;
        self.meters.held(stored);
        for (job, _) in &to_dead {
            self.meters.dead_lettered(&job.event.event_type);
        }
        if !pending.is_empty() {
            self.store_has_events = true;
        }
        let settled: Vec<TxnId> = to_store
            .iter()
            .map(|(j, _)| j.txn)
            .chain(to_dead.iter().map(|(j, _)| j.txn))
            .collect();
        let _ = self.ctx.settled.send(settled);
        Ok(())
    }

    /// Sends held events that are due, oldest first per key; fetches a new bulk of them from
    /// the store when `fetch` and none are left.
    fn retry_due(&mut self, fetch: bool) -> Result<(), WorkerError> {
        if !self.store_has_events || self.paused.is_some() {
            return Ok(());
        }
        if self.due.is_empty() && fetch {
            self.flush()?;
            let name = self.config.name.clone();
            let fetch = (self.config.batch_size * self.config.concurrency)
                .clamp(RETRY_FETCH, RETRY_FETCH_MAX);
            let due = self.with_store(|s| s.due(&name, UnixMillis::now(), fetch))?;
            self.more_due = due.len() == fetch;
            if due.is_empty() && self.retrying.is_empty() {
                if self.with_store(|s| s.next_due_at(&name))?.is_none() {
                    self.store_has_events = false;
                    self.down = false;
                    self.meters.set_backlog(0);
                }
                return Ok(());
            }
            self.due = due
                .into_iter()
                .filter(|p| !self.retrying.contains(&p.event.id))
                .collect();
        }
        // While the receiver is down, one probe at a time is enough.
        let limit = if self.down {
            1
        } else {
            self.config.concurrency
        };
        // Held events are sent in batches of `batch_size` too, without waiting for more.
        while self.in_flight.len() < limit && !self.due.is_empty() {
            let size = self.config.batch_size.min(self.due.len());
            let held: Vec<PendingEvent> = self.due.drain(..size).collect();
            for pending in &held {
                self.retrying.insert(pending.event.id.clone());
            }
            self.send(Sent::Held(held));
        }
        Ok(())
    }

    /// Settles held events after an attempt: delivered ones are removed at the next flush,
    /// failed ones rescheduled or dead-lettered, in one store transaction each.
    fn completed_held(
        &mut self,
        held: Vec<PendingEvent>,
        report: Report,
    ) -> Result<(), WorkerError> {
        for pending in &held {
            self.retrying.remove(&pending.event.id);
        }
        let retry_after = match report.outcome {
            Outcome::Delivered => {
                // Removed at the next flush; until then `retrying` keeps them from going twice.
                self.to_remove
                    .extend(held.into_iter().map(|pending| pending.event.id));
                self.more_due = true;
                return Ok(());
            }
            Outcome::Retry { after } => Some(after),
            Outcome::Unreachable => Some(None),
            Outcome::Reject | Outcome::Gone { .. } => None,
        };
        let name = self.config.name.clone();
        let now = UnixMillis::now();
        let mut retries = Vec::new();
        let mut dead = Vec::new();
        for pending in &held {
            let attempts = pending.attempts + 1;
            let failure = Failure {
                id: pending.event.id.as_str(),
                attempts,
                at: now,
                status: report.code,
                error: report.detail.as_deref(),
            };
            let first = pending.first_failure_at.unwrap_or(now);
            match retry_after {
                Some(_) if self.schedule.gives_up(now.saturating_duration_since(first)) => {
                    warn!(subscriber = %name, event_id = %failure.id, attempts, "giving up; event dead-lettered");
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
            self.with_store(|s| s.reschedule(&name, &retries))?;
        }
        if !dead.is_empty() {
            let failures: Vec<Failure<'_>> = dead.iter().map(|(failure, _)| *failure).collect();
            let moved = self.with_store(|s| s.move_to_dead_letters(&name, &failures))?;
            self.meters.released(moved);
            for (_, event_type) in &dead {
                self.meters.dead_lettered(event_type);
            }
        }
        if let Outcome::Gone { reason } = report.outcome {
            self.pause(reason);
        }
        Ok(())
    }

    /// Records the latest delivery in the store (for `walhook status`) if one is unrecorded:
    /// in the background at most once per `SUCCESS_RECORD_EVERY`, or on this thread if `now`
    /// (at the end).
    fn record_success(&mut self, now: bool) -> Result<(), WorkerError> {
        let Some(at) = self.unrecorded_success else {
            return Ok(());
        };
        let name = self.config.name.clone();
        if now {
            self.with_store(|s| s.record_success(&name, at))?;
            self.unrecorded_success = None;
            return Ok(());
        }
        // A failure here is only a stale "last success" in `walhook status`; the writes that
        // settle events report a failing store.
        let started = self.success_record.start(&self.ctx.store, move |s| {
            if let Err(e) = s.record_success(&name, at) {
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
    fn recount_backlog(&mut self) -> Result<(), WorkerError> {
        let name = self.config.name.clone();
        let status = self.with_store(|s| s.subscriber_status(&name))?;
        self.meters.set_backlog(status.pending);
        Ok(())
    }

    fn with_store<T>(
        &self,
        work: impl FnOnce(&mut Store) -> Result<T, StateError>,
    ) -> Result<T, WorkerError> {
        with_store(&self.ctx.store, work).map_err(|e| self.error(e))
    }

    fn error(&self, source: StateError) -> WorkerError {
        WorkerError {
            subscriber: self.config.name.clone(),
            source: Box::new(source),
        }
    }
}

/// Now on tokio's clock (which tests may pause), as the order counts time.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Logs the worker's start.
pub fn announce(config: &SubscriberConfig) {
    info!(
        subscriber = %config.name,
        host = %config.url.host_str().unwrap_or("?"),
        concurrency = config.concurrency,
        batch_size = config.batch_size,
        signed = config.signing_key.is_some(),
        "subscriber ready"
    );
}

#[cfg(test)]
mod tests;
