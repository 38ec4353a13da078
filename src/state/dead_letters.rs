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

/// Which dead letters an operation applies to: those that match every condition set (AND);
/// the default is all of them. The store applies it in its query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    pub subscriber: Option<String>,
    /// The event id.
    pub id: Option<String>,
    /// The event type, e.g. `order.created`.
    pub event_type: Option<String>,
    /// The table, `schema.name`.
    pub table: Option<String>,
    /// Committed at or after this (Unix microseconds, as [`Event::commit_time_micros`]).
    pub since_micros: Option<i64>,
    /// Committed before this (Unix microseconds): `since` and `until` make a half-open range.
    pub until_micros: Option<i64>,
}
