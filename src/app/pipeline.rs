//! The pipeline: source events in stream order become jobs for the subscribers' workers;
//! settlements move the confirmed LSN.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::AppError;
use crate::backfill::{self, ChunkReport, Closed, Load, LoadProbe, Signal, Windows};
use crate::database::slot_guard::SlotProblem;
use crate::delivery::{Job, WorkerError};
use crate::mapping::{Mapper, ReadRow, Routed};
use crate::model::{Lsn, TxnId};
use crate::source::{slot_errors, ReplicationError, SourceError, SourceEvent};
use crate::state::{AckTracker, PeriodicWrite, Store};

/// The transaction being read: its id in the tracker. The source hands over each of its
/// changes once, whatever reconnects happened.
pub(super) struct Open {
    pub(super) txn: TxnId,
    /// Jobs handed out for it.
    pub(super) jobs: u32,
}

pub(super) struct Pipeline {
    pub(super) mapper: Mapper,
    pub(super) acks: AckTracker,
    pub(super) queues: Vec<mpsc::Sender<Job>>,
    pub(super) open: Option<Open>,
    /// The commit LSN of the last transaction fully read: how far the stream has been read,
    /// for a backfill that asks about the load.
    pub(super) last_commit: Lsn,
    pub(super) routed: Vec<Routed>,
    pub(super) max_unsettled: usize,
    pub(super) store: Arc<dyn Store>,
    pub(super) confirmed_tx: watch::Sender<Lsn>,
    /// The confirmed LSN's record in the state file, for `walhook status`.
    pub(super) checkpoint: PeriodicWrite,
    pub(super) slot: String,
    /// Backfill chunks between their watermarks.
    pub(super) windows: Windows,
    /// Per running backfill, in stream order, what holds the confirmed position at the start
    /// of the changes its next reports fold (see [`Pipeline::hold`]).
    pub(super) holds: VecDeque<(i64, TxnId)>,
    /// Backfill chunks dispatched: the runner hears once their events settled.
    pub(super) reads: Vec<(TxnId, oneshot::Sender<ChunkReport>, ChunkReport)>,
}

/// What the pipeline listens to, besides the workers.
pub(super) struct Inputs {
    pub(super) events: mpsc::Receiver<SourceEvent>,
    pub(super) settled: mpsc::UnboundedReceiver<Vec<TxnId>>,
    pub(super) source: tokio::task::JoinHandle<Result<(), SourceError>>,
    pub(super) problems: mpsc::Receiver<SlotProblem>,
    /// Backfill chunks, announced before their low watermark is written.
    pub(super) chunks: mpsc::Receiver<Signal>,
    /// A waiting backfill's questions about the load, to say why it waits.
    pub(super) loads: mpsc::Receiver<LoadProbe>,
    /// Stops the source, once the final confirmed position is known.
    pub(super) stop_source: CancellationToken,
}

impl Pipeline {
    /// Runs until `shutdown` is cancelled or something fails, then drains: closes the workers'
    /// queues and takes their settlements until every worker has finished, saves the
    /// checkpoint, and stops the source, which reports the final confirmed position to
    /// Postgres.
    pub(super) async fn run(
        &mut self,
        inputs: Inputs,
        workers: &mut JoinSet<Result<(), WorkerError>>,
        shutdown: CancellationToken,
    ) -> Result<(), AppError> {
        let Inputs {
            mut events,
            mut settled,
            mut source,
            mut problems,
            mut chunks,
            mut loads,
            stop_source,
        } = inputs;
        let failure: Option<AppError> = loop {
            let room = self.acks.unsettled() < self.max_unsettled;
            tokio::select! {
                biased;
                // 1. Shutdown: stop reading and drain.
                () = shutdown.cancelled() => {
                    info!("shutting down: finishing requests in flight, storing the rest");
                    break None;
                }
                // 2. Fatal errors from the source or a worker.
                done = &mut source => break Some(self.source_ended(done)),
                Some(problem) = problems.recv() => break Some(problem.into()),
                Some(done) = workers.join_next() => {
                    break Some(match done {
                        Ok(Err(e)) => e.into(),
                        _ => SourceError::PipelineClosed.into(),
                    });
                }
                // 3. Settlements move the confirmed position.
                Some(txns) = settled.recv() => self.settle(&txns),
                // 4. Backfill chunks, ahead of the stream events: a chunk is sent before its
                //    low watermark is written, so it is known when the watermark arrives.
                Some(signal) = chunks.recv() => self.backfill_signal(signal),
                // 5. A backfill whose chunk waits asks how loaded the pipeline is (at most once
                //    a second; unanswered while a dispatch waits for a full worker queue).
                Some(probe) = loads.recv() => {
                    let _ = probe.send(self.load());
                }
                // 6. New input, while the unsettled budget allows.
                event = events.recv(), if room => match event {
                    Some(event) => self.handle(event).await,
                    // The source task is ending: its result says why.
                    None => break Some(self.source_ended((&mut source).await)),
                },
            }
        };
        // Drain: close the workers' queues; they finish or store what they hold and report it.
        self.queues.clear();
        let mut worker_error = None;
        loop {
            tokio::select! {
                Some(txns) = settled.recv() => self.settle(&txns),
                done = workers.join_next() => match done {
                    Some(Ok(Err(e))) => worker_error = Some(e),
                    Some(_) => {}
                    None => break,
                },
            }
        }
        while let Ok(txns) = settled.try_recv() {
            self.settle(&txns);
        }
        self.record_checkpoint().await;
        stop_source.cancel();
        let source_result = if source.is_finished() && failure.is_some() {
            Ok(())
        } else {
            // Keep taking what the source still hands over until it has sent its final status
            // and stopped, so it never meets a closed pipeline. Those events are dropped: they
            // are not confirmed, so the next start reads them again.
            loop {
                tokio::select! {
                    done = &mut source => break done.unwrap_or(Ok(())),
                    Some(_) = events.recv() => {}
                }
            }
        };
        info!(confirmed = %self.acks.confirmed(), "stopped");
        match (failure, worker_error) {
            (Some(e), _) => Err(e),
            (None, Some(e)) => Err(e.into()),
            (None, None) => source_result.map_err(AppError::from),
        }
    }

    /// Why the source task ended early, in the operator's terms.
    fn source_ended(
        &self,
        done: Result<Result<(), SourceError>, tokio::task::JoinError>,
    ) -> AppError {
        match done {
            Ok(Ok(())) => SourceError::PipelineClosed.into(),
            Ok(Err(e)) => match slot_errors::explain(&self.slot, &e) {
                Some(problem) => problem.into(),
                None => e.into(),
            },
            Err(e) => SourceError::Replication(ReplicationError::Protocol {
                addr: String::new(),
                what: format!("a crashed source task ({e})"),
                source: None,
            })
            .into(),
        }
    }

    pub(super) async fn handle(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Begin { .. } => {
                self.open = Some(Open {
                    txn: self.acks.begin(),
                    jobs: 0,
                });
            }
            SourceEvent::Change(change) => {
                self.windows.observe(&change);
                let Some(open) = &self.open else { return };
                let txn = open.txn;
                self.routed.clear();
                self.mapper.map(&change, &mut self.routed);
                let mut jobs = 0;
                for routed in std::mem::take(&mut self.routed) {
                    for &subscriber in &routed.subscribers {
                        self.acks.add(txn, 1);
                        jobs += 1;
                        let job = Job {
                            event: routed.event.clone(),
                            txn,
                        };
                        self.dispatch(subscriber, job).await;
                    }
                }
                if let Some(open) = &mut self.open {
                    open.jobs += jobs;
                }
            }
            SourceEvent::Commit {
                commit_lsn,
                end_lsn,
            } => {
                if let Some(open) = self.open.take() {
                    debug!(commit_lsn = %commit_lsn, end_lsn = %end_lsn, jobs = open.jobs, "transaction handed out");
                    self.acks.commit(open.txn, end_lsn);
                    self.last_commit = commit_lsn;
                    self.advance();
                }
            }
            SourceEvent::Message {
                lsn,
                prefix,
                content,
            } => {
                if let Some((kind, id, chunk)) = backfill::parse_watermark(&prefix, &content) {
                    if let Some(closed) = self.windows.watermark(kind, id, chunk) {
                        self.dispatch_reads(closed, lsn).await;
                    }
                }
                // A heartbeat (or any message outside a transaction): everything before it has
                // been handed over.
                if self.open.is_none() {
                    self.acks.caught_up(lsn);
                    self.advance();
                }
            }
            SourceEvent::CaughtUp { wal_end } => {
                if self.open.is_none() {
                    self.acks.caught_up(wal_end);
                    self.advance();
                }
            }
            SourceEvent::Replay { from } => self.replay(from),
        }
    }

    /// Everything committed after `from` comes again from the source and is handed out again,
    /// even what was handed out before. A transaction half read is closed where it stands: its
    /// events are out and settle as usual, and it comes again whole.
    fn replay(&mut self, from: Lsn) {
        warn!(%from, "reading the stream again from the canary's position; events after it may be delivered twice");
        if let Some(open) = self.open.take() {
            self.acks.commit(open.txn, from);
        }
        self.last_commit = self.last_commit.min(from);
        self.acks.rewind(from);
        self.confirmed_tx.send_replace(self.acks.confirmed());
        self.advance();
    }

    /// Queues `job` for its subscriber's worker. A closed queue means the worker stopped (the
    /// pipeline hears why from its task next): the job is dropped and stays unsettled, so no
    /// position at or past its transaction is ever confirmed.
    async fn dispatch(&self, subscriber: usize, job: Job) {
        if let Some(queue) = self.queues.get(subscriber) {
            let _ = queue.send(job).await;
        }
    }

    pub(super) fn settle(&mut self, txns: &[TxnId]) {
        for txn in txns {
            self.acks.settle(*txn, 1);
        }
        self.settle_reads();
        self.advance();
    }

    /// Dispatches a backfill chunk's surviving rows as `read` events at its high watermark
    /// (`lsn`): after every earlier stream event of their keys, before every later one. They
    /// are tracked as one transaction ending at `lsn`.
    async fn dispatch_reads(&mut self, closed: Closed, lsn: Lsn) {
        // The runner now waits for subscribers, no longer for the stream.
        let _ = closed.dispatched.send(closed.rows.len());
        let txn = self.acks.begin();
        let mut routed = Vec::new();
        for row in &closed.rows {
            routed.clear();
            self.mapper.map_read(
                &ReadRow {
                    backfill: closed.backfill,
                    table: &closed.table,
                    key: &row.key,
                    row: &row.row,
                    lsn,
                    read_at_micros: closed.read_at_micros,
                },
                &mut routed,
            );
            for routed in &routed {
                for &subscriber in &routed.subscribers {
                    if !closed.subscribers.contains(&subscriber) {
                        continue;
                    }
                    self.acks.add(txn, 1);
                    let job = Job {
                        event: routed.event.clone(),
                        txn,
                    };
                    self.dispatch(subscriber, job).await;
                }
            }
        }
        self.acks.commit(txn, lsn);
        tracing::debug!(backfill = closed.backfill, rows = closed.rows.len(), dropped = closed.report.dropped.len(), %lsn, "backfill chunk dispatched");
        let mut report = closed.report;
        // The changes after this high watermark go to the next report: hold from here.
        report.release = self.holds.back().map(|&(_, hold)| hold);
        self.hold(closed.backfill, lsn);
        self.reads.push((txn, closed.settled, report));
        self.settle_reads();
        self.advance();
    }

    /// How loaded the pipeline is, for a backfill whose chunk waits.
    fn load(&self) -> Load {
        Load {
            unsettled: self.acks.unsettled(),
            limit: self.max_unsettled,
            read: self.last_commit.max(self.acks.confirmed()),
            chunk_unsettled: self
                .reads
                .iter()
                .map(|(txn, _, _)| self.acks.outstanding(*txn))
                .sum(),
        }
    }

    /// A backfill's reports fold the stream's changes of its table between its chunks, in
    /// memory; the runner saves what it learns from a report with its progress. Until it has,
    /// the slot must not confirm past the start of those changes, so that after a crash the
    /// stream brings them again (and [`Windows::watch`] folds them again). A hold is a
    /// transaction of one delivery in the ack tracker, at the position the changes start from,
    /// settled when the runner says it saved (or the backfill ended).
    fn hold(&mut self, backfill: i64, at: Lsn) {
        let txn = self.acks.begin();
        self.acks.add(txn, 1);
        self.acks.commit(txn, at);
        self.holds.push_back((backfill, txn));
    }

    /// What the runner says: a chunk to register, a report saved, or a backfill ended.
    pub(super) fn backfill_signal(&mut self, signal: Signal) {
        match signal {
            Signal::Open(open) => {
                if !self.holds.iter().any(|&(b, _)| b == open.backfill) {
                    // The backfill's first chunk in this run: its reports start from here.
                    let at = self.acks.confirmed();
                    self.hold(open.backfill, at);
                }
                self.windows.register(open);
            }
            Signal::Saved(release) => {
                while let Some(&(_, hold)) = self.holds.front().filter(|&&(_, h)| h <= release) {
                    self.acks.settle(hold, 1);
                    self.holds.pop_front();
                }
                self.advance();
            }
            Signal::Ended(backfill) => {
                for &(_, hold) in self.holds.iter().filter(|&&(b, _)| b == backfill) {
                    self.acks.settle(hold, 1);
                }
                self.holds.retain(|&(b, _)| b != backfill);
                self.windows.end(backfill);
                self.advance();
            }
        }
    }

    /// At start, for a backfill a stopped walhook left running: its next report must fold the
    /// changes the slot sends again from its confirmed position.
    pub(super) fn resume_backfill(&mut self, backfill: i64, schema: &str, name: &str) {
        self.windows.watch(backfill, schema, name);
        let at = self.acks.confirmed();
        self.hold(backfill, at);
    }

    /// Tells the runner about backfill chunks whose events all settled.
    fn settle_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let acks = &self.acks;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads)
            .into_iter()
            .partition(|(txn, _, _)| acks.is_settled(*txn));
        self.reads = waiting;
        for (_, settled, report) in done {
            let _ = settled.send(report);
        }
    }

    fn advance(&mut self) {
        if let Some(lsn) = self.acks.advance() {
            debug!(confirmed = %lsn, "confirmed");
            self.confirmed_tx.send_replace(lsn);
            self.start_checkpoint();
        }
    }

    /// Records the confirmed LSN in the state file (for `walhook status`) in the background,
    /// at most once a second.
    fn start_checkpoint(&mut self) {
        let record = checkpoint(self.store.clone(), self.acks.confirmed());
        self.checkpoint.start(record);
    }

    /// Records the confirmed LSN in the state file now (at the end).
    async fn record_checkpoint(&mut self) {
        checkpoint(self.store.clone(), self.acks.confirmed()).await;
    }
}

async fn checkpoint(store: Arc<dyn Store>, lsn: Lsn) {
    if let Err(e) = store.save_confirmed(lsn).await {
        warn!(error = %crate::error_chain(&e), "cannot record the checkpoint in the state file");
    }
}
