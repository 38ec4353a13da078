//! What `walhook status` shows per subscriber, and the subscriber state that outlives a run:
//! a pause (by an operator, or by a 410 Gone) holds across restarts until it is resumed.

use super::millis::UnixMillis;

/// One subscriber as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberStatus {
    pub name: String,
    /// Events held for a later attempt.
    pub pending: u64,
    /// Commit time of the oldest held event: how far behind the subscriber is.
    pub oldest_pending_commit_at: Option<UnixMillis>,
    pub dead_letters: u64,
    /// The pause in force; `None` if delivery is not paused.
    pub paused: Option<Pause>,
    pub last_success_at: Option<UnixMillis>,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub at: UnixMillis,
    pub text: String,
}

/// A recorded pause: nothing is sent to the subscriber (its events are held in the store, so
/// the slot still advances) until it is resumed, whichever walhook process runs meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// Why, as the operator or walhook put it (e.g. "410 Gone from billing.internal");
    /// `None` when an operator gave no reason.
    pub reason: Option<String>,
    /// Who paused: e.g. `receiver` (a 410), `command line`, `api`.
    pub by: String,
    pub since: UnixMillis,
}

impl Pause {
    /// The reason, or words saying who paused when none was given.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(reason) => reason.clone(),
            None => format!("paused by {}", self.by),
        }
    }
}
