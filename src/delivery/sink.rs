//! The seam between a worker and the receiver: a [`Sink`] takes a batch of events and says what
//! became of it, in terms that name no protocol. HTTP ([`super::HttpSink`]) is the first
//! implementation; a test sink or another kind of receiver needs no change to the worker.

use std::future::Future;
use std::time::Duration;

use crate::model::Event;

/// Sends one subscriber's events to its receiver.
///
/// Contract:
/// - `send` makes one attempt at delivering every event of `events` together (one request; a
///   batch of more than one event is all or nothing). `events` is never empty, holds at most
///   `batch_size` events and never two of one key; events of a key arrive in commit order
///   across calls, because the worker sends a key's next event only after its previous one was
///   delivered.
/// - It never panics and never fails: every failure is a [`Report`] whose [`Outcome`] tells
///   the worker what to do with the events. It retries nothing itself; the worker owns
///   retries, their schedule and the order they keep.
/// - The same events may be sent again (after a failure, a crash, a restart) and may then be
///   grouped differently: a receiver de-duplicates on event ids.
/// - Up to `concurrency` calls run at once, from the tasks of the worker's runtime; a call
///   that takes long (a slow receiver) holds only its own events.
pub trait Sink: Send + Sync + 'static {
    fn send(&self, events: &[&Event]) -> impl Future<Output = Report> + Send;
}

/// What became of one attempt, for the worker to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver has the events: they are settled.
    Delivered,
    /// The receiver answered that it cannot take them now: try again later, and no sooner
    /// than `after` if it asked for that.
    Retry { after: Option<Duration> },
    /// No answer came (no connection, a timeout): try again later. The receiver is probably
    /// down, so the worker stops sending live events to it until it answers again.
    Unreachable,
    /// The receiver refused them and would refuse them again: dead-letter them now.
    Reject,
    /// The receiver wants no more events: dead-letter them and pause the subscriber until
    /// walhook restarts. `reason` says why, for the log and `walhook status`.
    Gone { reason: String },
}

/// One attempt's outcome, and what the log, the metrics and the stored event say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    /// The receiver's own code for its answer, if an answer came (for HTTP, the status).
    /// Stored as the event's last status and logged as `status`.
    pub code: Option<u16>,
    /// Why the events were not delivered, short enough for a log line or a dead letter; never
    /// a secret (no header value, no URL). `None` when they were delivered.
    pub detail: Option<String>,
    /// How long the attempt took, for the request duration metric.
    pub took: Duration,
}

impl Report {
    /// The delay the receiver asked for, if this outcome is one that is tried again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Retry { after } => after,
            _ => None,
        }
    }
}
