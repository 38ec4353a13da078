//! `subscribers.<name>.rate_limit`: a token bucket that every request of a worker passes, live
//! and held alike (a batch is one request).
//!
//! The bucket holds at most one second's worth of tokens (at least one), so after a quiet spell
//! a subscriber gets one second's burst and then the configured rate. The worker asks
//! [`Gate::permits`] before each request and [`Gate::take`]s a token as it sends; when there is
//! no token, the request's events stay
//! where they are (queued in order, or due in the store) and the worker wakes at
//! [`Gate::wake_at`].
//!
//! Our own code rather than the `governor` crate: the worker's select loop needs "may I send
//! now, and if not, when" on tokio's clock (which tests pause), not a future to await per
//! request, and the arithmetic is a dozen lines; a worker without a `rate_limit` has no gate at
//! all.
//!
//! Pure apart from the metric handles: callers pass `now`.

use std::time::{Duration, Instant};

use metrics::{gauge, histogram, Histogram};

use crate::config::RateLimit;
use crate::telemetry::{LABEL_SUBSCRIBER, RATE_LIMIT, RATE_LIMIT_WAIT};

/// Tokens refill continuously at `rate` per second up to `capacity`; one token is one request.
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket for `limit`: one second's worth of requests, at least one.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        let rate = limit.per_second();
        let capacity = rate.floor().max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whole tokens there are now.
    pub fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        self.tokens.floor() as usize
    }

    /// When the next token will be there (`now` if one is).
    pub fn next_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            return now;
        }
        let missing = (1.0 - self.tokens) / self.rate;
        // Rounded up to the microsecond, so a wake-up never comes a hair too early.
        self.at + Duration::from_micros((missing * 1e6).ceil() as u64)
    }
}

/// A worker's rate limit: the bucket, and how long requests waited for it.
pub(super) struct Gate {
    bucket: TokenBucket,
    /// Since when a request has waited for a token (the first refusal since the last token).
    waiting_since: Option<Instant>,
    /// A request was refused in this pass of the worker's loop: it must wake for the next
    /// token.
    refused: bool,
    wait: Histogram,
}

impl Gate {
    /// The gate for `limit`, or `None` without a limit; sets the limit gauge.
    pub fn new(subscriber: &str, limit: Option<RateLimit>, now: Instant) -> Option<Self> {
        let limit = limit?;
        let label = [(LABEL_SUBSCRIBER, subscriber.to_string())];
        gauge!(RATE_LIMIT, &label).set(limit.per_second());
        Some(Self {
            bucket: TokenBucket::new(limit, now),
            waiting_since: None,
            refused: false,
            wait: histogram!(RATE_LIMIT_WAIT, &label),
        })
    }

    /// Starts a pass of the worker's loop: what was refused before is asked again in it.
    pub fn begin_pass(&mut self) {
        self.refused = false;
    }

    /// How many requests may start now: the whole tokens there are. Asked when a request is
    /// ready to go; none means it waits, and the worker must wake for the next token.
    pub fn permits(&mut self, now: Instant) -> usize {
        let tokens = self.bucket.available(now);
        if tokens == 0 {
            self.refused = true;
            self.waiting_since.get_or_insert(now);
        }
        tokens
    }

    /// Takes a token for a request that goes now (after [`Gate::permits`] said one may).
    pub fn take(&mut self, now: Instant) {
        if self.bucket.try_take(now) {
            if let Some(since) = self.waiting_since.take() {
                self.wait
                    .record(now.saturating_duration_since(since).as_secs_f64());
            }
        }
    }

    /// Whether a request was refused in this pass: events wait for the limit.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// When the worker must look again: at the next token, if a request was refused in this
    /// pass; else never (and what waited went elsewhere, so the wait is forgotten).
    pub fn wake_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.refused {
            self.waiting_since = None;
            return None;
        }
        Some(self.bucket.next_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, secs: u64) -> RateLimit {
        RateLimit {
            requests,
            per: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_full_bucket_gives_one_seconds_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(20, 1), t0);
        let burst = (0..100).take_while(|_| bucket.try_take(t0)).count();
        assert_eq!(burst, 20);
        assert_eq!(bucket.next_at(t0), t0 + Duration::from_millis(50));
        // Over the next ten seconds, one request per 50 ms and no more.
        let mut sent = 0;
        for ms in 1..=10_000 {
            if bucket.try_take(t0 + Duration::from_millis(ms)) {
                sent += 1;
            }
        }
        assert_eq!(sent, 200);
    }

    #[test]
    fn no_window_of_one_second_holds_more_than_rate_plus_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(20, 1), t0);
        let mut sent = Vec::new();
        for ms in 0..5_000u64 {
            let now = t0 + Duration::from_millis(ms);
            while bucket.try_take(now) {
                sent.push(ms);
            }
        }
        for (i, &start) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|&&t| t < start + 1_000).count();
            assert!(in_window <= 40, "{in_window} requests from {start} ms");
        }
        // After the first second, never more than the rate.
        let late: Vec<u64> = sent.into_iter().filter(|&t| t >= 1_000).collect();
        for (i, &start) in late.iter().enumerate() {
            let in_window = late[i..].iter().take_while(|&&t| t < start + 1_000).count();
            assert!(in_window <= 20, "{in_window} requests from {start} ms");
        }
    }

    #[test]
    fn a_slow_rate_still_allows_one_request_and_refills_over_minutes() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(6, 60), t0);
        assert_eq!(bucket.available(t0), 1);
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0 + Duration::from_secs(9)));
        assert_eq!(bucket.next_at(t0), t0 + Duration::from_secs(10));
        assert!(bucket.try_take(t0 + Duration::from_secs(10)));
        // A long quiet spell fills the bucket only to its capacity.
        assert_eq!(bucket.available(t0 + Duration::from_secs(3_600)), 1);
    }

    #[test]
    fn per_minute_and_per_hour_limits_refill_at_their_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit(3000, 60), t0);
        assert_eq!(bucket.available(t0), 50);
        let mut hourly = TokenBucket::new(limit(7_200, 3_600), t0);
        assert_eq!(hourly.available(t0), 2);
        assert!(hourly.try_take(t0) && hourly.try_take(t0));
        assert_eq!(hourly.next_at(t0), t0 + Duration::from_millis(500));
    }

    #[test]
    fn the_gate_wakes_only_when_a_request_was_refused() {
        let t0 = Instant::now();
        let mut gate = Gate::new("a", Some(limit(1, 1)), t0).expect("a gate");
        gate.begin_pass();
        assert_eq!(gate.permits(t0), 1);
        gate.take(t0);
        assert!(!gate.refused());
        assert_eq!(gate.wake_at(t0), None);
        gate.begin_pass();
        assert_eq!(gate.permits(t0), 0);
        assert!(gate.refused());
        assert_eq!(gate.wake_at(t0), Some(t0 + Duration::from_secs(1)));
        // Nothing asked in the next pass: no wake-up, the wait is forgotten.
        gate.begin_pass();
        assert_eq!(gate.wake_at(t0), None);
        assert!(Gate::new("a", None, t0).is_none());
    }
}
