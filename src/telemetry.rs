//! Metric and label names, in one place (they are public interface: dashboards and alerts use
//! them), and the health that `/ready` reports.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Changes decoded from the stream (counter).
pub const EVENTS_DECODED: &str = "walhook_changes_decoded_total";
/// Events delivered with a 2xx, by `subscriber` and `event_type` (counter).
pub const EVENTS_DELIVERED: &str = "walhook_events_delivered_total";
/// Failed delivery attempts, by `subscriber` and `event_type` (counter).
pub const EVENTS_FAILED: &str = "walhook_events_failed_total";
/// Events dead-lettered, by `subscriber` and `event_type` (counter).
pub const EVENTS_DEAD_LETTERED: &str = "walhook_events_dead_lettered_total";
/// Commit to 2xx, seconds, by `subscriber` (histogram).
pub const DELIVERY_LATENCY: &str = "walhook_delivery_latency_seconds";
/// One HTTP request, seconds, by `subscriber` (histogram).
pub const REQUEST_DURATION: &str = "walhook_request_duration_seconds";
/// Events held in the state store for a later attempt, by `subscriber` (gauge).
pub const RETRY_BACKLOG: &str = "walhook_retry_backlog";
/// 1 while delivery to the subscriber is paused (by an operator or a 410 Gone), else 0, by
/// `subscriber` (gauge).
pub const SUBSCRIBER_PAUSED: &str = "walhook_subscriber_paused";
/// A subscriber's `rate_limit`, in requests per second, by `subscriber` (gauge; only for
/// subscribers with a limit).
pub const RATE_LIMIT: &str = "walhook_rate_limit_per_second";
/// Seconds a ready request waited for its subscriber's rate limit, by `subscriber` (histogram).
pub const RATE_LIMIT_WAIT: &str = "walhook_rate_limit_wait_seconds";
/// WAL the slot retains: `pg_current_wal_lsn() - confirmed_flush_lsn`, bytes (gauge).
pub const SLOT_LAG_BYTES: &str = "walhook_slot_lag_bytes";
/// The LSN walhook last reported to Postgres as flushed, as a number (gauge).
pub const CONFIRMED_LSN: &str = "walhook_confirmed_lsn";
/// 1 while the replication connection streams, else 0 (gauge).
pub const REPLICATION_UP: &str = "walhook_replication_connected";
/// Seconds since the last standby status update was sent (gauge, set when scraped).
pub const STATUS_UPDATE_AGE: &str = "walhook_status_update_age_seconds";

/// 1 while this walhook leads (streams and delivers), 0 while it stands by (gauge).
pub const LEADER: &str = "walhook_leader";

/// Canaries the walsender passed without sending them (counter; see `source.canary`).
pub const CANARY_GAPS: &str = "walhook_canary_gaps_total";

/// Label keys.
pub const LABEL_SUBSCRIBER: &str = "subscriber";
pub const LABEL_EVENT_TYPE: &str = "event_type";

/// Registers the HELP text of every metric with the installed recorder (a no-op without one).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        EVENTS_DECODED,
        "Changes decoded from the replication stream"
    );
    describe_counter!(EVENTS_DELIVERED, "Events delivered with a 2xx answer");
    describe_counter!(
        EVENTS_FAILED,
        "Events in delivery attempts that failed (a batch counts each event)"
    );
    describe_counter!(EVENTS_DEAD_LETTERED, "Events moved to the dead letters");
    describe_histogram!(
        DELIVERY_LATENCY,
        "Seconds from the commit in Postgres to the 2xx answer"
    );
    describe_histogram!(
        REQUEST_DURATION,
        "Seconds one webhook request took, answer included"
    );
    describe_gauge!(
        RETRY_BACKLOG,
        "Events held in the state store for a later attempt"
    );
    describe_gauge!(
        SUBSCRIBER_PAUSED,
        "1 while delivery to the subscriber is paused (walhook subscribers pause, or a 410 Gone), else 0"
    );
    describe_gauge!(
        RATE_LIMIT,
        "The subscriber's rate_limit, in requests per second"
    );
    describe_histogram!(
        RATE_LIMIT_WAIT,
        "Seconds a request that was ready waited for the subscriber's rate_limit"
    );
    describe_gauge!(SLOT_LAG_BYTES, "Bytes of WAL the replication slot retains");
    describe_counter!(
        CANARY_GAPS,
        "Canaries the walsender decoded past without sending them (each one ends the replication session)"
    );
    describe_gauge!(
        CONFIRMED_LSN,
        "The LSN walhook last confirmed to Postgres, as a number"
    );
    describe_gauge!(
        REPLICATION_UP,
        "1 while the replication connection streams, else 0"
    );
    describe_gauge!(
        LEADER,
        "1 while this walhook leads (streams and delivers), 0 while it stands by"
    );
    describe_gauge!(
        STATUS_UPDATE_AGE,
        "Seconds since the last standby status update was sent"
    );
}

/// What this walhook does among those that share its config (see `app::leader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only one: its state is an SQLite file.
    Single,
    /// It streams and delivers; others may stand by.
    Leader,
    /// It waits to take over, and can: it reaches the state database.
    Standby,
    /// It waits to take over, but cannot reach the state database now.
    StandbyUnreachable,
}

/// What `/ready` and the status-age gauge read; written by the source and the leadership.
#[derive(Debug, Default)]
pub struct Health {
    streaming: AtomicBool,
    /// Unix milliseconds of the last standby status update; 0 = never.
    last_status_ms: AtomicI64,
    /// The [`Role`], as its index.
    role: AtomicU8,
    /// The walsender serving the replication connection (0: none yet), which the leader
    /// records in its lease so a standby knows which to end.
    walsender_pid: AtomicI32,
}

impl Health {
    pub fn set_role(&self, role: Role) {
        let index = match role {
            Role::Single => 0,
            Role::Leader => 1,
            Role::Standby => 2,
            Role::StandbyUnreachable => 3,
        };
        self.role.store(index, Ordering::Relaxed);
        let leads = matches!(role, Role::Single | Role::Leader);
        metrics::gauge!(LEADER).set(if leads { 1.0 } else { 0.0 });
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Leader,
            2 => Role::Standby,
            3 => Role::StandbyUnreachable,
            _ => Role::Single,
        }
    }

    pub fn set_walsender_pid(&self, pid: i32) {
        self.walsender_pid.store(pid, Ordering::Relaxed);
    }

    /// The walsender of the current replication connection, if one was opened.
    pub fn walsender_pid(&self) -> Option<i32> {
        Some(self.walsender_pid.load(Ordering::Relaxed)).filter(|&pid| pid != 0)
    }

    pub fn set_streaming(&self, up: bool) {
        self.streaming.store(up, Ordering::Relaxed);
        metrics::gauge!(REPLICATION_UP).set(if up { 1.0 } else { 0.0 });
    }

    pub fn status_sent(&self) {
        self.last_status_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn is_streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
    }

    /// Seconds since the last status update, if one was sent.
    pub fn status_age_secs(&self) -> Option<f64> {
        match self.last_status_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some((now_ms() - at).max(0) as f64 / 1000.0),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
