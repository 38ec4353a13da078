//! One subscriber's worker: the select loop that sends its events through a [`Sink`] with up to
//! `concurrency` requests in flight, keeps each key's events in commit order ([`Order`]), and
//! hands an event it cannot deliver now to the state store ([`Spill`], with every later event
//! of its key), where it picks them up again on schedule.
//!
//! Every job it receives is reported back as settled exactly once: delivered, stored for a
//! later attempt (after the store's commit returned), or dead-lettered. It never confirms LSNs
//! itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use super::job::Job;
use super::meters::{now_micros, Meters};
use super::order::Order;
use super::rate::Gate;
use super::retry::Schedule;
use super::sink::{Outcome, Report, Sink};
use super::spill::{Held, Spill, WorkerContext, WorkerError};
use crate::config::SubscriberConfig;
use crate::model::Event;
use crate::state::Pause;

/// Jobs accepted in one go before the worker sends, stores and looks at completions again.
const ACCEPT_BURST: usize = 512;

/// Held events fetched from the store at once, at least: more when `batch_size` ×
/// `concurrency` is larger, up to `RETRY_FETCH_MAX`.
const RETRY_FETCH: usize = 256;
const RETRY_FETCH_MAX: usize = 4096;
/// The retry backlog gauge is recounted from the store this often (in 100 ms ticks), which
/// corrects it after `walhook dead-letters replay` added events from another process.
const BACKLOG_RECOUNT_TICKS: u64 = 600;
/// The pause recorded in the store is read this often (in 100 ms ticks): `walhook subscribers
/// pause|resume` and the api record it from elsewhere, and a running walhook follows within
/// about a second.
const PAUSE_REFRESH_TICKS: u64 = 10;

/// A request in flight: live jobs, or held events from the store (each the head of its key,
/// so a batch of them never holds two events of one key).
enum Sent {
    Live(Vec<Job>),
    Held(Vec<Held>),
}

impl Sent {
    fn events(&self) -> impl Iterator<Item = &Event> {
        let (live, held) = match self {
            Sent::Live(jobs) => (jobs.as_slice(), &[][..]),
            Sent::Held(held) => (&[][..], held.as_slice()),
        };
        let held = held.iter().map(Held::event);
        live.iter().map(|job| job.event.as_ref()).chain(held)
    }

    fn len(&self) -> usize {
        match self {
            Sent::Live(jobs) => jobs.len(),
            Sent::Held(held) => held.len(),
        }
    }
}

pub struct Worker<S> {
    config: SubscriberConfig,
    /// Shared with each request's task.
    sink: Arc<S>,
    /// Live jobs: per-key order and truncate barriers.
    order: Order<Job>,
    /// Everything that goes to and comes from the store.
    spill: Spill,
    in_flight: JoinSet<(Sent, Report)>,
    /// Connection-level failures since the last success: the receiver is down, so live jobs go
    /// straight to the store instead of each waiting for its own failed connect.
    down: bool,
    /// Delivery is paused (recorded in the store): everything is held there, nothing is sent
    /// but what was in flight, until the pause is lifted in the store.
    paused: Option<Pause>,
    /// The job channel closed: nothing more is sent live, queued jobs go to the store.
    draining: bool,
    /// The `rate_limit` every request passes; `None` without one.
    gate: Option<Gate>,
    /// Live jobs queued beyond this while the rate limit holds them back move to the store, so
    /// they settle and the slot advances (see [`Worker::with_queue_limit`]).
    queue_limit: usize,
    meters: Meters,
}

impl<S: Sink> Worker<S> {
    /// A worker that sends `config`'s events through `sink`; paused from the start if the
    /// store records a pause (a pause holds across restarts until it is resumed).
    pub async fn new(
        config: SubscriberConfig,
        sink: S,
        ctx: WorkerContext,
    ) -> Result<Self, WorkerError> {
        let mut meters = Meters::new(&config.name);
        let spill =
            Spill::open(&config.name, Schedule::new(config.retry), ctx, &mut meters).await?;
        let paused = spill.recorded_pause_or_fail().await?;
        meters.set_paused(paused.is_some());
        if let Some(pause) = &paused {
            warn!(subscriber = %config.name, reason = %pause.describe(), by = %pause.by, "subscriber paused; its events are held in the state store until `walhook subscribers resume {}`", config.name);
        }
        Ok(Self {
            sink: Arc::new(sink),
            order: Order::default(),
            spill,
            in_flight: JoinSet::new(),
            down: false,
            paused,
            draining: false,
            gate: Gate::new(&config.name, config.rate_limit, now()),
            queue_limit: usize::MAX,
            config,
            meters,
        })
    }

    /// Live jobs that may wait in memory for the rate limit: beyond `limit`, the queued ones
    /// move to the store like a failing subscriber's, so that a rate-limited subscriber never
    /// holds the pipeline's unsettled budget (`source.max_unsettled`) and the slot advances.
    pub fn with_queue_limit(mut self, limit: usize) -> Self {
        self.queue_limit = limit.max(1);
        self
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
            if self.gate.is_some() {
                self.rate_limited_pass(open).await?;
            }
            self.launch(!open).await?;
            self.spill.flush(&mut self.meters).await?;
            if !open && self.in_flight.is_empty() {
                self.spill.record_success(true).await?;
                return Ok(());
            }
            let batch_deadline = self.partial_batch_deadline();
            let rate_wake = self.gate.as_mut().and_then(|gate| gate.wake_at(now()));
            tokio::select! {
                biased;
                // 1. Completions free a slot and decide what happens to their jobs.
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    match done {
                        Ok((sent, report)) => {
                            self.completed(sent, report).await?;
                            if open {
                                let fetch = self.spill.more_due();
                                self.retry_due(fetch).await?;
                            }
                        }
                        Err(e) => warn!(subscriber = %self.name(), error = %e, "delivery task failed"),
                    }
                }
                // 2. New input.
                job = jobs.recv(), if open => match job {
                    Some(job) => {
                        self.accept(job).await?;
                        // Take what else is waiting, so jobs bound for the store are written in
                        // one transaction instead of one each.
                        for _ in 0..ACCEPT_BURST {
                            match jobs.try_recv() {
                                Ok(job) => self.accept(job).await?,
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
                // 3. A partial batch has waited long enough, or the rate limit has a token
                //    for a request that waits.
                _ = sleep_until(batch_deadline), if batch_deadline.is_some() => {}
                _ = sleep_until(rate_wake.map(Instant::from_std)), if rate_wake.is_some() => {}
                // 4. Held events that are due.
                _ = retry_tick.tick(), if open => {
                    // Once a second, look even when nothing was stored here: `walhook
                    // dead-letters replay` may have put events back from another process.
                    ticks += 1;
                    if ticks % 10 == 0 {
                        self.spill.look_again();
                    }
                    if ticks % PAUSE_REFRESH_TICKS == 0 {
                        self.refresh_pause().await;
                    }
                    if ticks % BACKLOG_RECOUNT_TICKS == 0 {
                        self.spill.recount_backlog(&mut self.meters).await?;
                    }
                    self.spill.record_success(false).await?;
                    self.retry_due(true).await?;
                }
            }
        }
    }

    /// Queues a live job, or stores it behind held events of its key or table.
    ///
    /// A job that must follow a live one (its key's, or its table's barrier) always queues
    /// behind it here, even when the store holds events it must follow too: stored now, it
    /// would stand in the store before the live job, should that one fail and be stored after
    /// it. It goes to the store when its turn comes instead (see [`Worker::launch`]), or with
    /// the live job if that one fails. Otherwise it goes to the store when the store holds
    /// events it must follow, while the receiver is down, or while delivery is paused.
    async fn accept(&mut self, job: Job) -> Result<(), WorkerError> {
        let behind_live = self.order.holds_back(&job.event);
        let must_hold = !behind_live
            && (self.paused.is_some() || self.down || self.spill.must_hold(&job.event).await?);
        if must_hold {
            self.spill.hold(job, None);
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
    /// at once, a partial one after `batch_wait` (at once with the default of zero, or when
    /// draining). A job whose turn came but that must still follow events in the store goes
    /// there instead.
    async fn launch(&mut self, draining: bool) -> Result<(), WorkerError> {
        if self.paused.is_some() {
            return Ok(());
        }
        let mut room = self.config.concurrency.saturating_sub(self.in_flight.len());
        if room > 0 && self.order.has_barriers() {
            room = room.min(self.permits());
        }
        for truncate in self.order.take_truncates(room) {
            if !self.held_instead(&truncate).await? {
                self.send(Sent::Live(vec![truncate]));
            }
        }
        while self.in_flight.len() < self.config.concurrency && self.order.ready_keys() > 0 {
            if self.permits() == 0 {
                break;
            }
            let (size, wait) = (self.config.batch_size, self.config.batch_wait);
            let jobs = self.order.take_batch(size, wait, draining, now());
            if jobs.is_empty() {
                break;
            }
            let mut sending = Vec::with_capacity(jobs.len());
            for job in jobs {
                if !self.held_instead(&job).await? {
                    sending.push(job);
                }
            }
            if !sending.is_empty() {
                self.send(Sent::Live(sending));
            }
        }
        Ok(())
    }

    /// Whether `job`, just taken from the order, must still follow events in the store (or on
    /// their way there): it then goes to the store instead of out, and the order moves on. A
    /// question to the store only while the store may hold events of this subscriber.
    async fn held_instead(&mut self, job: &Job) -> Result<bool, WorkerError> {
        if !self.spill.must_hold(&job.event).await? {
            return Ok(false);
        }
        if let Some(job) = self.order.finished(job, now()) {
            self.spill.hold(job, None);
        }
        Ok(true)
    }

    fn send(&mut self, sent: Sent) {
        if let Some(gate) = &mut self.gate {
            gate.take(now());
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            let ids: Vec<&str> = sent.events().map(|e| e.id.as_str()).collect();
            let held = matches!(sent, Sent::Held(_));
            tracing::trace!(subscriber = %self.name(), held, ?ids, "sending");
        }
        let sink = self.sink.clone();
        self.in_flight.spawn(async move {
            let report = {
                let events: Vec<&Event> = sent.events().collect();
                sink.send(&events).await
            };
            (sent, report)
        });
    }

    async fn completed(&mut self, sent: Sent, report: Report) -> Result<(), WorkerError> {
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
        if delivered {
            self.down = false;
            self.spill.delivered();
            self.spill.record_success(false).await?;
        } else {
            let error = report.detail.clone().unwrap_or_default();
            let (event_type, lsn, id) = sent
                .events()
                .next()
                .map_or(("", Default::default(), ""), |e: &Event| {
                    (e.event_type.as_str(), e.commit_lsn, e.id.as_str())
                });
            warn!(
                subscriber = %self.name(),
                event_type,
                lsn = %lsn,
                event_id = id,
                events = sent.len(),
                status = ?report.code,
                error = %error,
                "delivery failed"
            );
            self.spill.record_error(&error).await?;
            if report.outcome == Outcome::Unreachable {
                self.down = true;
            }
        }
        match sent {
            Sent::Live(jobs) => self.completed_live(jobs, report).await?,
            Sent::Held(held) => {
                self.spill
                    .completed(held, &report, &mut self.meters)
                    .await?;
                if let Outcome::Gone { reason } = report.outcome {
                    self.gone(&reason).await?;
                }
            }
        }
        Ok(())
    }

    async fn completed_live(&mut self, jobs: Vec<Job>, report: Report) -> Result<(), WorkerError> {
        let mut settled = Vec::new();
        for job in jobs {
            match report.outcome {
                Outcome::Retry { .. } | Outcome::Unreachable => {
                    // What came after it must stay behind it: its key's later jobs, a truncate
                    // of its table that waited for it, or (for a truncate) the jobs that waited
                    // behind it go to the store too, after it.
                    let Some((job, follow)) = self.order.failed(&job) else {
                        continue;
                    };
                    self.spill.hold(job, Some(report.clone()));
                    for later in follow {
                        self.spill.hold(later, None);
                    }
                }
                Outcome::Delivered => {
                    if let Some(job) = self.order.finished(&job, now()) {
                        settled.push(job.txn);
                    }
                }
                Outcome::Reject | Outcome::Gone { .. } => {
                    if let Some(job) = self.order.finished(&job, now()) {
                        self.spill.dead_letter(job, report.clone());
                    }
                }
            }
        }
        if let Outcome::Gone { reason } = report.outcome {
            self.gone(&reason).await?;
        } else if self.paused.is_some() || self.draining {
            // What waited behind these jobs is stored now, after them.
            self.store_queued();
        }
        self.spill.settled(settled);
        Ok(())
    }

    /// Moves every queued live job to the store in commit order, except those behind a job in
    /// flight: they follow it when it completes, so that a failed job is stored before its
    /// successors.
    pub(super) fn store_queued(&mut self) {
        let mut queued = self.order.take_queued();
        queued.sort_by_key(|j| (j.event.commit_lsn, j.txn));
        for job in queued {
            self.spill.hold(job, None);
        }
    }

    /// Sends held events that are due, oldest first per key; fetches a new bulk of them from
    /// the store when `fetch` and none are left.
    async fn retry_due(&mut self, fetch: bool) -> Result<(), WorkerError> {
        if !self.spill.may_hold_events() || self.paused.is_some() {
            return Ok(());
        }
        if fetch && !self.spill.has_due() {
            self.spill.flush(&mut self.meters).await?;
            let limit = (self.config.batch_size * self.config.concurrency)
                .clamp(RETRY_FETCH, RETRY_FETCH_MAX);
            if self.spill.fetch_due(limit).await? {
                // Nothing is held any more.
                self.down = false;
                self.meters.set_backlog(0);
            }
        }
        // While the receiver is down, one probe at a time is enough.
        let limit = if self.down {
            1
        } else {
            self.config.concurrency
        };
        // Held events are sent in batches of `batch_size` too, without waiting for more.
        while self.in_flight.len() < limit {
            if self.gate.is_some() && (!self.spill.has_due() || self.permits() == 0) {
                break;
            }
            let order = &self.order;
            let held = self.spill.take_due(self.config.batch_size, |event| {
                event.is_truncate && order.table_busy(&event.table)
            });
            if held.is_empty() {
                break;
            }
            self.send(Sent::Held(held));
        }
        Ok(())
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

mod limit;
mod pause;
#[cfg(test)]
mod tests;
