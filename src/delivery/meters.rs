//! One subscriber's metric handles (names and labels in [`crate::telemetry`]). Handles are
//! looked up once per event type and kept: a lookup hashes the name and labels, and the hot
//! path of a backlog delivery runs through here for every event.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::model::Event;
use crate::telemetry::{
    DELIVERY_LATENCY, EVENTS_DEAD_LETTERED, EVENTS_DELIVERED, EVENTS_FAILED, LABEL_EVENT_TYPE,
    LABEL_SUBSCRIBER, REQUEST_DURATION, RETRY_BACKLOG, SUBSCRIBER_PAUSED,
};

pub(super) struct Meters {
    subscriber: String,
    by_type: HashMap<String, TypeMeters>,
    latency: Histogram,
    request: Histogram,
    backlog_gauge: Gauge,
    paused: Gauge,
    /// Events of this subscriber held in the store, as far as this worker knows: it adds what
    /// it stores and subtracts what it removes; [`Meters::set_backlog`] corrects it from a count.
    backlog: u64,
}

struct TypeMeters {
    delivered: Counter,
    failed: Counter,
    dead_lettered: Counter,
}

impl Meters {
    pub(super) fn new(subscriber: &str) -> Self {
        let label = || (LABEL_SUBSCRIBER, subscriber.to_string());
        Self {
            subscriber: subscriber.to_string(),
            by_type: HashMap::new(),
            latency: histogram!(DELIVERY_LATENCY, &[label()]),
            request: histogram!(REQUEST_DURATION, &[label()]),
            backlog_gauge: gauge!(RETRY_BACKLOG, &[label()]),
            paused: gauge!(SUBSCRIBER_PAUSED, &[label()]),
            backlog: 0,
        }
    }

    /// One request, whatever its outcome.
    pub(super) fn request(&self, took: Duration) {
        self.request.record(took.as_secs_f64());
    }

    /// `event` got a 2xx at `now_micros` (Unix microseconds).
    pub(super) fn delivered(&mut self, event: &Event, now_micros: i64) {
        let latency = now_micros.saturating_sub(event.commit_time_micros).max(0);
        // Before the counter: whoever sees the counter at N sees N latencies too.
        self.latency.record(latency as f64 / 1e6);
        self.of(&event.event_type).delivered.increment(1);
    }

    /// `event` was in a request that failed.
    pub(super) fn failed(&mut self, event_type: &str) {
        self.of(event_type).failed.increment(1);
    }

    pub(super) fn dead_lettered(&mut self, event_type: &str) {
        self.of(event_type).dead_lettered.increment(1);
    }

    /// `n` more events are held.
    pub(super) fn held(&mut self, n: usize) {
        self.set_backlog(self.backlog.saturating_add(n as u64));
    }

    /// `n` held events were delivered or dead-lettered.
    pub(super) fn released(&mut self, n: usize) {
        self.set_backlog(self.backlog.saturating_sub(n as u64));
    }

    pub(super) fn set_backlog(&mut self, held: u64) {
        self.backlog = held;
        self.backlog_gauge.set(held as f64);
    }

    pub(super) fn set_paused(&self, paused: bool) {
        self.paused.set(if paused { 1.0 } else { 0.0 });
    }

    fn of(&mut self, event_type: &str) -> &TypeMeters {
        if !self.by_type.contains_key(event_type) {
            let labels = [
                (LABEL_SUBSCRIBER, self.subscriber.clone()),
                (LABEL_EVENT_TYPE, event_type.to_string()),
            ];
            let meters = TypeMeters {
                delivered: counter!(EVENTS_DELIVERED, &labels),
                failed: counter!(EVENTS_FAILED, &labels),
                dead_lettered: counter!(EVENTS_DEAD_LETTERED, &labels),
            };
            self.by_type.insert(event_type.to_string(), meters);
        }
        &self.by_type[event_type]
    }
}

/// Now, in Unix microseconds (the unit of [`Event::commit_time_micros`]).
pub(super) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
