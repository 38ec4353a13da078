//! What `walhook status` shows per subscriber, and the subscriber state that outlives a run
//! (a subscriber paused by a 410 Gone stays paused after a restart).

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
    /// Why delivery is paused (e.g. "410 Gone from <url>"); `None` if it is not.
    pub paused: Option<String>,
    pub last_success_at: Option<UnixMillis>,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub at: UnixMillis,
    pub text: String,
}
