//! What a running backfill waits for, in words, recorded in its state row so that
//! `walhook backfill` and `walhook status` can say why the progress stands still.
//!
//! A chunk's rows go out at its high watermark, after every earlier stream event of their keys,
//! so a chunk waits in two phases once its high watermark is written: until the pipeline reaches
//! the watermark in the stream (it reads no further while subscribers have not taken what it
//! holds, so a backlog of stream events delays the chunk), then until subscribers accepted its
//! rows. Between chunks a backfill may pause for `--rate`, and after the table's end it reads
//! again the rows the stream changed without their TOASTed columns.
//!
//! A wait is recorded once it lasted [`SHOW_AFTER`], the text refreshed at most once per
//! [`WRITE_EVERY`], and cleared when the chunk's progress is saved. The runner asks the
//! pipeline where it is and how loaded only while a chunk waits, once a second: nothing is
//! done per event.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::model::Lsn;
use crate::state::Store;
use crate::text::{duration, size};

use super::reread::ChunkReport;

/// A wait shorter than this is not worth a word.
const SHOW_AFTER: Duration = Duration::from_secs(2);
/// The recorded text changes at most this often.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// How long the pipeline has to answer how loaded it is. It does not answer while it waits to
/// hand an event to a subscriber whose queue is full.
const PROBE_WAIT: Duration = Duration::from_millis(250);

/// Where the pipeline is and how loaded: its answer to a backfill that waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Events handed to subscribers and not settled yet.
    pub unsettled: usize,
    /// `source.max_unsettled`: with that many unsettled, the pipeline reads no further.
    pub limit: usize,
    /// How far the pipeline read the stream: the last transaction it read whole (or the
    /// confirmed position, if further).
    pub read: Lsn,
    /// Events of dispatched backfill chunks not settled yet.
    pub chunk_unsettled: usize,
}

/// A question to the pipeline: how loaded are you?
pub type LoadProbe = oneshot::Sender<Load>;

impl Load {
    /// The pipeline holds back reading because subscribers have not taken what it holds. Within
    /// a tenth of the limit: it reads again as soon as a few events settle, so a probe rarely
    /// finds it exactly at the limit.
    fn full(&self) -> bool {
        self.unsettled.saturating_mul(10) >= self.limit.saturating_mul(9)
    }
}

/// What a backfill waits for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Wait<'a> {
    /// The chunk is written between its watermarks; the pipeline has not reached the high one.
    Stream {
        /// WAL between what the pipeline read and the high watermark, if known.
        behind: Option<u64>,
        /// `None`: the pipeline did not answer, busy handing an event to a full subscriber queue.
        load: Option<Load>,
        /// When the pipeline should get there, at the pace it read since the wait began; `None`
        /// if it did not move.
        eta: Option<Duration>,
    },
    /// The pipeline handed the chunk's rows to the subscribers; not all were accepted yet.
    Subscribers {
        names: &'a [String],
        rows: usize,
        load: Option<Load>,
    },
    /// Pausing between chunks to keep to `--rate`.
    Rate { rate: u32 },
    /// After the table's end: the stream changed the rows to read again while they were read.
    Overtaken,
}

/// The words for what a backfill waits for: the rows still to read again after the table's
/// end (`rereading`), then the wait, if any.
pub(super) fn describe(rereading: Option<usize>, wait: Option<&Wait<'_>>) -> Option<String> {
    let again = rereading.map(|n| {
        format!(
            "reading again {} the stream changed without their TOASTed columns",
            rows(n)
        )
    });
    let wait = wait.map(|wait| match wait {
        Wait::Stream { behind, load, eta } => {
            let cause = match load {
                Some(load) if !load.full() => "still reading the changes written before it",
                _ => "subscribers take events slower than the table was written",
            };
            let mut text = String::from("waiting for the stream to reach the chunk (");
            if let Some(behind) = behind.filter(|b| *b > 0) {
                text.push_str(&format!("walhook is {} behind it: ", size(behind)));
            }
            text.push_str(cause);
            if let Some(eta) = eta {
                // In whole seconds, rounded up: "about 0s" reads as a wait that is not there.
                let eta = Duration::from_secs(eta.as_secs_f64().ceil() as u64);
                text.push_str(&format!("; about {} at the current pace", duration(eta)));
            }
            text.push(')');
            text
        }
        Wait::Subscribers {
            names,
            rows: n,
            load,
        } => {
            let who = match names {
                [one] => format!("subscriber {one}"),
                many => format!("subscribers {}", many.join(", ")),
            };
            let mut text = format!("waiting for {who} to accept the chunk's {}", rows(*n));
            if let Some(load) = load {
                text.push_str(&format!(
                    " ({} to go, among {} walhook holds for subscribers)",
                    events(load.chunk_unsettled),
                    load.unsettled
                ));
            }
            text
        }
        Wait::Rate { rate } => format!("pausing to keep to --rate {rate} rows/s"),
        Wait::Overtaken => {
            "pausing: the stream changed them again while they were read".to_string()
        }
    });
    match (again, wait) {
        (Some(again), Some(wait)) => Some(format!("{again}; {wait}")),
        (again, wait) => again.or(wait),
    }
}

fn rows(n: usize) -> String {
    if n == 1 {
        "1 row".to_string()
    } else {
        format!("{n} rows")
    }
}

fn events(n: usize) -> String {
    if n == 1 {
        "1 event".to_string()
    } else {
        format!("{n} events")
    }
}

/// The wait recorded in a backfill's state row.
pub(super) struct Notes {
    id: i64,
    store: Arc<dyn Store>,
    /// What the row holds.
    shown: Option<String>,
    written_at: Option<Instant>,
    /// Rows still to read again once the table was read to its end.
    pub(super) rereading: Option<usize>,
}

impl Notes {
    /// For backfill `id`, whose row holds no wait (starting a backfill clears it).
    pub(super) fn new(id: i64, store: Arc<dyn Store>) -> Notes {
        Notes {
            id,
            store,
            shown: None,
            written_at: None,
            rereading: None,
        }
    }

    /// What a progress save records: the rows still to read again, if any. The wait is over.
    pub(super) fn at_rest(&self) -> Option<String> {
        describe(self.rereading, None)
    }

    /// A progress save recorded `text`.
    pub(super) fn saved(&mut self, text: Option<String>) {
        self.shown = text;
        self.written_at = Some(Instant::now());
    }

    /// What the backfill waits for now, after waiting `waited`: recorded if the wait is long
    /// enough and the last write is old enough. Called again every second while waiting, so a
    /// text held back by [`WRITE_EVERY`] is written at the next call.
    ///
    /// Awaited here, like the progress saves beside it (at most once a second): a write in
    /// the background could land after a later progress save, or after `walhook run` cleared
    /// the waits at its end, and leave a wait that is over on record.
    pub(super) async fn offer(&mut self, wait: Option<&Wait<'_>>, waited: Duration) {
        let text = describe(self.rereading, wait.filter(|_| waited >= SHOW_AFTER));
        if text == self.shown || self.written_at.is_some_and(|at| at.elapsed() < WRITE_EVERY) {
            return;
        }
        self.written_at = Some(Instant::now());
        let id = self.id;
        match self.store.set_backfill_waiting(id, text.clone()).await {
            Ok(()) => {
                debug!(backfill = id, waiting = ?text, "backfill wait recorded");
                self.shown = text;
            }
            Err(e) => {
                warn!(backfill = id, error = %crate::error_chain(&e), "cannot record what the backfill waits for")
            }
        }
    }

    /// Sleeps `duration` between chunks, saying why if it lasts.
    pub(super) async fn pause(&mut self, duration: Duration, wait: Wait<'_>) {
        let started = Instant::now();
        let end = started + duration;
        let mut tick = tokio::time::interval_at(started + WRITE_EVERY, WRITE_EVERY);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                _ = tick.tick() => self.offer(Some(&wait), started.elapsed()).await,
            }
        }
        self.offer(None, Duration::ZERO).await;
    }
}

/// A chunk whose high watermark is written, as the runner follows it.
pub(super) struct Written<'a> {
    /// Where the high watermark is in the WAL.
    pub high: Lsn,
    /// Answered by the pipeline with the rows it dispatched, when it reaches the high watermark.
    pub dispatched: oneshot::Receiver<usize>,
    /// Answered once every event of the chunk settled; dropped if the chunk was abandoned.
    pub settled: oneshot::Receiver<ChunkReport>,
    /// The subscribers the backfill is for.
    pub subscribers: &'a [String],
}

impl Written<'_> {
    /// Waits until the chunk's events settled (`None`: the chunk was abandoned), saying what
    /// it waits for once that lasts.
    pub(super) async fn settled(
        mut self,
        loads: &mpsc::Sender<LoadProbe>,
        notes: &mut Notes,
    ) -> Option<ChunkReport> {
        let started = Instant::now();
        let mut dispatched: Option<usize> = None;
        let mut reached = false;
        // The pipeline's read position: first heard (for the pace) and last heard.
        let mut first: Option<(Instant, Lsn)> = None;
        let mut last: Option<Lsn> = None;
        let mut tick = tokio::time::interval_at(started + WRITE_EVERY, WRITE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                report = &mut self.settled => return report.ok(),
                rows = &mut self.dispatched, if !reached => {
                    reached = true;
                    dispatched = rows.ok();
                }
                _ = tick.tick() => {
                    let load = probe(loads).await;
                    if let Some(load) = load {
                        first.get_or_insert((Instant::now(), load.read));
                        last = Some(load.read);
                    }
                    let waited = started.elapsed();
                    if waited < SHOW_AFTER {
                        notes.offer(None, waited).await;
                        continue;
                    }
                    let wait = match dispatched {
                        Some(rows) => Wait::Subscribers {
                            names: self.subscribers,
                            rows,
                            load,
                        },
                        None => {
                            let behind = last.map(|read| self.high.0.saturating_sub(read.0));
                            Wait::Stream {
                                behind,
                                load,
                                eta: eta(first, last, behind),
                            }
                        }
                    };
                    notes.offer(Some(&wait), waited).await;
                }
            }
        }
    }
}

/// When the pipeline reads `behind` more bytes, at the pace it read from `first` to `last`.
fn eta(first: Option<(Instant, Lsn)>, last: Option<Lsn>, behind: Option<u64>) -> Option<Duration> {
    let (since, from) = first?;
    let moved = last?.0.checked_sub(from.0).filter(|m| *m > 0)?;
    Duration::try_from_secs_f64(since.elapsed().as_secs_f64() * behind? as f64 / moved as f64).ok()
}

/// Asks the pipeline where it is and how loaded; `None` if it does not answer at once.
async fn probe(loads: &mpsc::Sender<LoadProbe>) -> Option<Load> {
    let (ask, answer) = oneshot::channel();
    // A question still unanswered fills the channel: the pipeline is busy.
    loads.try_send(ask).ok()?;
    tokio::time::timeout(PROBE_WAIT, answer).await.ok()?.ok()
}

#[cfg(test)]
mod tests;
