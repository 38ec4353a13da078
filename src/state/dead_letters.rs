//! Events given up on: kept until an operator replays or discards them
//! (`walhook dead-letters list|replay|discard`).

use std::sync::Arc;

use super::millis::UnixMillis;
use crate::model::Event;

/// A live event given up on at its first attempt (a 4xx other than 408 and 429).
#[derive(Debug, Clone)]
pub struct DeadLetterInsert {
    pub event: Arc<Event>,
    pub attempts: u32,
    pub first_attempt_at: UnixMillis,
    pub dead_at: UnixMillis,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// A dead letter as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub subscriber: String,
    pub event: Event,
    pub attempts: u32,
    pub first_attempt_at: UnixMillis,
    pub dead_at: UnixMillis,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// Which dead letters an operation applies to; the default is all of them.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub subscriber: Option<String>,
    pub id: Option<String>,
}
