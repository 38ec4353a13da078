//! What a failed attempt means, and when to try again: classification (`classify`,
//! `classify_failure`) is kept apart from scheduling (`Schedule`), so each can be read and tested
//! on its own and the dispatcher only combines them. Both work on plain facts (a status code, a
//! header's text, a [`TransportFailure`]); what an HTTP client's error means is the sink's to say.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::RetryConfig;

/// What an attempt's outcome means for the event (or batch) it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: settled.
    Delivered,
    /// A transient failure: try again later, no sooner than `retry_after` if the receiver asked
    /// for that (see [`Schedule::next_delay`]).
    Retry { retry_after: Option<Duration> },
    /// The receiver refused it and will refuse it again: dead-letter it now.
    DeadLetter,
    /// 410 Gone: the receiver wants no more webhooks. Dead-letter it, and the caller pauses the
    /// subscriber.
    Gone,
}

/// Classifies an HTTP answer (Standard Webhooks, "Delivery success and failure"; DESIGN.md
/// "Delivery semantics"):
/// - 2xx: delivered.
/// - 408, 429 and 5xx except 501: retry, honouring `Retry-After` as delay-seconds or an HTTP date.
/// - 410: gone.
/// - 501 (the receiver does not implement POST there), other 4xx, 3xx (redirects are not
///   followed: the subscriber's URL should be updated instead), 1xx and anything else: dead letter.
pub fn classify(status: u16, retry_after_header: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        408 | 429 | 500 | 502..=599 => Verdict::Retry {
            retry_after: retry_after_header.and_then(|v| parse_retry_after(v, SystemTime::now())),
        },
        _ => Verdict::DeadLetter,
    }
}

/// Why a request got no answer, as far as classifying it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// It was sent, or about to be, and something on the way failed: a timeout, a refused or
    /// reset connection, a TLS failure, a body cut off mid-request.
    Interrupted,
    /// It could not even be built (a URL or header the client rejects), so it never left.
    Unbuildable,
}

/// Classifies a request that got no answer. An interrupted one is transient as far as walhook
/// can tell, and at least once makes a duplicate harmless, so it retries. Only a request that
/// could not be built fails the same way every time: dead letter.
pub fn classify_failure(failure: TransportFailure) -> Verdict {
    match failure {
        TransportFailure::Interrupted => Verdict::Retry { retry_after: None },
        TransportFailure::Unbuildable => Verdict::DeadLetter,
    }
}

/// `Retry-After` (RFC 9110 section 10.2.3): delay-seconds, or an HTTP date (IMF-fixdate, or the
/// obsolete RFC 850 and asctime forms, parsed by `httpdate`). A date in the past means "now".
/// Anything else is ignored.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too many for a u64 is still a (very long) delay; the schedule caps it.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// When to try again, from a subscriber's `retry = { initial, max, give_up_after }`.
///
/// Attempts are numbered from 0: attempt 0 is the first try, and attempt `n` follows `n` failed
/// ones, so a retry store that counts failures can compute the next attempt time after a
/// restart: `failed_at + schedule.next_delay(failures, retry_after)`.
///
/// Delays use exponential backoff with full jitter: the delay before attempt `n >= 1` is uniform
/// in `[0, ceiling(n)]` with `ceiling(n) = min(max, initial * 2^(n-1))`. The exponential part is
/// backon's `ExponentialBuilder` (factor 2, computed in `f32`, so ceilings are exact for whole
/// seconds and accurate to about 1e-7 otherwise). Its own jitter is not used: backon's
/// `with_jitter` *adds* a uniform `[0, delay)` to the delay, giving `[delay, 2 * delay)`, which is
/// not full jitter and can exceed `max` by up to twice. Full jitter spreads the retries of many
/// keys that failed together (a receiver that was down) instead of sending them in waves.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    config: RetryConfig,
    backoff: ExponentialBuilder,
}

impl Schedule {
    pub fn new(config: RetryConfig) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.initial)
            .with_max_delay(config.max)
            .without_max_times();
        Schedule { config, backoff }
    }

    /// The backoff before attempt `attempt`: zero for the first try, else full jitter below
    /// [`Schedule::ceiling`].
    pub fn delay(&self, attempt: u32) -> Duration {
        jittered(self.ceiling(attempt), unit_draw())
    }

    /// The delay before attempt `attempt` after an answer that may carry `Retry-After`:
    /// `min(max(retry_after, backoff), retry.max)`.
    ///
    /// A receiver's `Retry-After` wins over a shorter backoff, but never beyond the configured
    /// `max`: one receiver's header must not hold a key's later events back longer than the
    /// operator allowed (a receiver that is still not ready answers again, and
    /// `give_up_after` bounds the whole affair).
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.delay(attempt);
        retry_after
            .map_or(backoff, |asked| asked.max(backoff))
            .min(self.config.max)
    }

    /// The exponential delay before attempt `attempt`, before jitter: zero for attempt 0, then
    /// `min(max, initial * 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let mut ceiling = Duration::ZERO;
        // Once the delay reaches `max` (or is stuck at zero) it stays there, so at most about
        // 64 steps are ever taken, however large `attempt` is.
        for step in self.backoff.build().take(attempt as usize) {
            ceiling = step;
            if step >= self.config.max || step.is_zero() {
                break;
            }
        }
        // backon yields `initial` first even when it exceeds `max`.
        ceiling.min(self.config.max)
    }

    /// Whether to stop retrying an event whose first failed attempt was `first_failure_age` ago:
    /// from `give_up_after` on, the next failure dead-letters it.
    pub fn gives_up(&self, first_failure_age: Duration) -> bool {
        first_failure_age >= self.config.give_up_after
    }
}

/// `ceiling` scaled by `draw` in `[0, 1)`.
fn jittered(ceiling: Duration, draw: f64) -> Duration {
    ceiling.mul_f64(draw.clamp(0.0, 1.0))
}

/// A uniform draw from `[0, 1)`. Jitter needs spread, not unpredictability, so std's randomly
/// keyed SipHash will do: each `RandomState` hashes differently, so hashing nothing under a fresh
/// one gives a fresh 64-bit value, of which the top 53 bits fill an `f64` mantissa.
fn unit_draw() -> f64 {
    let bits = RandomState::new().hash_one(());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn schedule(initial: u64, max: u64, give_up_after: u64) -> Schedule {
        Schedule::new(RetryConfig {
            initial: Duration::from_secs(initial),
            max: Duration::from_secs(max),
            give_up_after: Duration::from_secs(give_up_after),
        })
    }

    #[test]
    fn status_classes() {
        let retry = Verdict::Retry { retry_after: None };
        let cases = [
            (200, Verdict::Delivered),
            (201, Verdict::Delivered),
            (204, Verdict::Delivered),
            (299, Verdict::Delivered),
            (100, Verdict::DeadLetter),
            (101, Verdict::DeadLetter),
            (301, Verdict::DeadLetter),
            (302, Verdict::DeadLetter),
            (307, Verdict::DeadLetter),
            (308, Verdict::DeadLetter),
            (400, Verdict::DeadLetter),
            (401, Verdict::DeadLetter),
            (403, Verdict::DeadLetter),
            (404, Verdict::DeadLetter),
            (408, retry),
            (409, Verdict::DeadLetter),
            (410, Verdict::Gone),
            (413, Verdict::DeadLetter),
            (422, Verdict::DeadLetter),
            (429, retry),
            (500, retry),
            (501, Verdict::DeadLetter),
            (502, retry),
            (503, retry),
            (504, retry),
            (599, retry),
            (600, Verdict::DeadLetter),
            (999, Verdict::DeadLetter),
        ];
        for (status, expected) in cases {
            assert_eq!(classify(status, None), expected, "status {status}");
        }
    }

    #[test]
    fn an_interrupted_request_retries_and_an_unbuildable_one_is_dead_lettered() {
        assert_eq!(
            classify_failure(TransportFailure::Interrupted),
            Verdict::Retry { retry_after: None }
        );
        assert_eq!(
            classify_failure(TransportFailure::Unbuildable),
            Verdict::DeadLetter
        );
    }

    #[test]
    fn retry_after_in_seconds_is_kept_on_retryable_answers() {
        for status in [408, 429, 500, 503] {
            assert_eq!(
                classify(status, Some("7")),
                Verdict::Retry {
                    retry_after: Some(7 * SEC)
                },
                "status {status}"
            );
        }
        assert_eq!(
            classify(503, Some(" 120 ")),
            Verdict::Retry {
                retry_after: Some(120 * SEC)
            }
        );
    }

    #[test]
    fn retry_after_does_not_change_a_final_verdict() {
        assert_eq!(classify(200, Some("7")), Verdict::Delivered);
        assert_eq!(classify(302, Some("7")), Verdict::DeadLetter);
        assert_eq!(classify(410, Some("7")), Verdict::Gone);
        assert_eq!(classify(404, Some("7")), Verdict::DeadLetter);
    }

    #[test]
    fn unreadable_retry_after_is_ignored() {
        for header in [
            "",
            "-5",
            "1.5",
            "soon",
            "7s",
            "Wed, 32 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(
                classify(503, Some(header)),
                Verdict::Retry { retry_after: None },
                "header {header:?}"
            );
        }
    }

    #[test]
    fn retry_after_as_an_http_date() {
        // 2015-10-21T07:28:00Z, the example date of RFC 9110.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(date, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(date, now - 90 * SEC),
            Some(90 * SEC),
            "a date 90 s ahead"
        );
        assert_eq!(
            parse_retry_after(date, now + 90 * SEC),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        // The obsolete forms a sender must still accept (RFC 9110 section 5.6.7).
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now - SEC),
            Some(SEC)
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:00 2015", now - SEC),
            Some(SEC)
        );
    }

    #[test]
    fn an_enormous_delay_in_seconds_saturates() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn ceilings_double_from_initial_up_to_max() {
        let schedule = schedule(1, 60, 3600);
        let ceilings: Vec<u64> = (0..10).map(|n| schedule.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(schedule.ceiling(u32::MAX), 60 * SEC);
    }

    #[test]
    fn ceiling_never_exceeds_max_even_when_initial_does() {
        let schedule = schedule(10, 5, 3600);
        assert_eq!(schedule.ceiling(1), 5 * SEC);
        assert_eq!(schedule.ceiling(2), 5 * SEC);
    }

    #[test]
    fn a_zero_initial_delay_stays_zero() {
        let schedule = schedule(0, 5, 3600);
        assert_eq!(schedule.ceiling(1), Duration::ZERO);
        assert_eq!(schedule.ceiling(u32::MAX), Duration::ZERO);
        assert_eq!(schedule.delay(7), Duration::ZERO);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let ceiling = 8 * SEC;
        assert_eq!(jittered(ceiling, 0.0), Duration::ZERO);
        assert_eq!(jittered(ceiling, 0.5), 4 * SEC);
        // Durations round to nanoseconds, so the top of the range is the ceiling itself.
        assert_eq!(jittered(ceiling, 1.0 - f64::EPSILON), ceiling);
        assert_eq!(jittered(ceiling, 1.0), ceiling);
    }

    #[test]
    fn delays_lie_within_zero_and_min_of_max_and_initial_times_two_to_the_n_minus_one() {
        let schedule = schedule(1, 60, 3600);
        assert_eq!(
            schedule.delay(0),
            Duration::ZERO,
            "the first try waits for nothing"
        );
        for attempt in 1..=12u32 {
            let bound = (SEC * 2u32.pow(attempt - 1)).min(60 * SEC);
            for _ in 0..200 {
                let delay = schedule.delay(attempt);
                assert!(delay <= bound, "attempt {attempt}: {delay:?} > {bound:?}");
            }
        }
    }

    #[test]
    fn delays_are_spread_over_the_whole_range() {
        // Full jitter, not backon's [d, 2d): both halves of [0, 16 s] get hit. The chance that
        // 400 uniform draws all miss one half is 2^-399.
        let schedule = schedule(1, 60, 3600);
        let delays: Vec<Duration> = (0..400).map(|_| schedule.delay(5)).collect();
        assert!(delays.iter().any(|d| *d < 8 * SEC), "{delays:?}");
        assert!(delays.iter().any(|d| *d >= 8 * SEC), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 16 * SEC), "{delays:?}");
    }

    #[test]
    fn retry_after_wins_over_a_shorter_backoff() {
        let schedule = schedule(1, 600, 3600);
        // Attempt 1's backoff is below 1 s, so the receiver's 7 s decides.
        for _ in 0..100 {
            assert_eq!(schedule.next_delay(1, Some(7 * SEC)), 7 * SEC);
        }
    }

    #[test]
    fn a_longer_backoff_wins_over_retry_after() {
        let schedule = schedule(100, 600, 3600);
        // Attempt 4's backoff lies in [0, 600 s]; a 0 s Retry-After never shortens it.
        let delays: Vec<Duration> = (0..100)
            .map(|_| schedule.next_delay(4, Some(Duration::ZERO)))
            .collect();
        assert!(delays.iter().all(|d| *d <= 600 * SEC), "{delays:?}");
        assert!(delays.iter().any(|d| *d > Duration::ZERO), "{delays:?}");
    }

    #[test]
    fn retry_after_is_capped_at_max() {
        let schedule = schedule(1, 600, 3600);
        assert_eq!(schedule.next_delay(1, Some(86_400 * SEC)), 600 * SEC);
        assert_eq!(
            schedule.next_delay(1, Some(Duration::from_secs(u64::MAX))),
            600 * SEC
        );
    }

    #[test]
    fn without_retry_after_next_delay_is_the_backoff() {
        let schedule = schedule(1, 60, 3600);
        for _ in 0..100 {
            assert!(schedule.next_delay(3, None) <= 4 * SEC);
        }
    }

    #[test]
    fn gives_up_from_give_up_after_on() {
        let schedule = schedule(1, 600, 3 * 86_400);
        assert!(!schedule.gives_up(Duration::ZERO));
        assert!(!schedule.gives_up(3 * 86_400 * SEC - Duration::from_millis(1)));
        assert!(schedule.gives_up(3 * 86_400 * SEC));
        assert!(schedule.gives_up(4 * 86_400 * SEC));
    }

    #[test]
    fn unit_draws_lie_in_the_unit_interval_and_differ() {
        let draws: Vec<f64> = (0..100).map(|_| unit_draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)), "{draws:?}");
        let first = draws[0];
        assert!(draws.iter().any(|d| *d != first), "{draws:?}");
    }
}
