//! Events held for a later attempt, per subscriber, as the store takes and gives them back.
//! The rules they are held by are the store's contract: see [`super::Store`].

use std::sync::Arc;

use super::millis::UnixMillis;
use crate::model::Event;

/// An event to hold for a subscriber.
#[derive(Debug, Clone)]
pub struct PendingInsert {
    pub event: Arc<Event>,
    /// Attempts made so far (0 for an event held behind its key).
    pub attempts: u32,
    /// When its first attempt failed; `None` if it was never attempted.
    pub first_failure_at: Option<UnixMillis>,
    /// Not attempted before this. An event held behind its key is due as soon as it becomes
    /// its key's head, so give it the time it was stored.
    pub next_attempt_at: UnixMillis,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

impl PendingInsert {
    /// An event that was not attempted because an earlier event of its key (or a truncate of
    /// its table) is pending.
    pub fn held(event: Arc<Event>, now: UnixMillis) -> Self {
        PendingInsert {
            event,
            attempts: 0,
            first_failure_at: None,
            next_attempt_at: now,
            last_status: None,
            last_error: None,
        }
    }
}

/// A held event as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub event: Event,
    pub attempts: u32,
    pub first_failure_at: Option<UnixMillis>,
    pub next_attempt_at: UnixMillis,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// A failed attempt at a held event.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// When this attempt failed.
    pub at: UnixMillis,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// A failed attempt and when to try again.
#[derive(Debug, Clone)]
pub struct Retry {
    pub failure: Failure,
    pub next_attempt_at: UnixMillis,
}
