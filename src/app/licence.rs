//! The leader's licence to deliver: until when this walhook may send, by its own monotonic
//! clock, extended by each lease renewal (see `leader`). Every request checks it first, a
//! clock read and no round trip, so a walhook that wakes from a freeze longer than its lease
//! sends nothing, whatever its tasks run first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delivery::{Outcome, Report, Sink};
use crate::model::Event;

/// Shared by the leadership task, which extends it, and every subscriber's sink.
#[derive(Debug, Clone)]
pub(super) struct Licence(Option<Arc<Until>>);

#[derive(Debug)]
struct Until {
    start: Instant,
    /// Milliseconds after `start` up to which sending is allowed.
    millis: AtomicU64,
}

impl Licence {
    /// For the only walhook (an SQLite state): it always may.
    pub fn unlimited() -> Licence {
        Licence(None)
    }

    /// Valid until `until`.
    pub fn until(until: Instant) -> Licence {
        let licence = Licence(Some(Arc::new(Until {
            start: Instant::now(),
            millis: AtomicU64::new(0),
        })));
        licence.extend_to(until);
        licence
    }

    /// Moves the end to `until` (never backward).
    pub fn extend_to(&self, until: Instant) {
        if let Some(inner) = &self.0 {
            let millis = until.saturating_duration_since(inner.start).as_millis();
            inner
                .millis
                .fetch_max(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::SeqCst);
        }
    }

    /// When it ends (`None`: never).
    pub fn ends_at(&self) -> Option<Instant> {
        self.0
            .as_ref()
            .map(|inner| inner.start + Duration::from_millis(inner.millis.load(Ordering::SeqCst)))
    }

    pub fn valid(&self) -> bool {
        self.ends_at().is_none_or(|end| Instant::now() < end)
    }
}

/// A sink that sends only while the licence is valid; past it, an attempt fails as if the
/// receiver were unreachable (the worker stops sending live events and stores them, which
/// the state then refuses once another walhook leads).
pub(super) struct Licensed<S> {
    pub sink: S,
    pub licence: Licence,
}

impl<S: Sink> Sink for Licensed<S> {
    async fn send(&self, events: &[&Event]) -> Report {
        if !self.licence.valid() {
            return Report {
                outcome: Outcome::Unreachable,
                code: None,
                detail: Some("not sent: this walhook's leadership lease ran out".into()),
                took: Duration::ZERO,
            };
        }
        self.sink.send(events).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_licence_ends_when_it_says_and_only_moves_forward() {
        assert!(Licence::unlimited().valid());
        let now = Instant::now();
        let licence = Licence::until(now + Duration::from_secs(60));
        assert!(licence.valid());
        licence.extend_to(now);
        assert!(licence.valid(), "an extension never shortens it");
        let past = Licence::until(now);
        assert!(!past.valid());
        past.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(past.valid());
    }
}
