//! The slot guard: the task `run` starts beside the pipeline to write heartbeats and watch the
//! slot's health and lag.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::warn;

use crate::database::slot_guard::{self, LagWarning, SlotProblem};
use crate::source::{connect_sql, ConnectSpec};

/// How often the slot's health and lag are read.
const SLOT_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Writes heartbeats every `heartbeat` and watches the slot: lag (metric and warning), and
/// problems that must stop walhook (sent on `problems`). Query failures are logged and retried:
/// the replication connection's own errors decide about reconnecting.
pub(super) async fn guard_slot(
    spec: ConnectSpec,
    slot: String,
    heartbeat: Duration,
    lag_warn: u64,
    problems: mpsc::Sender<SlotProblem>,
) {
    let mut lag_warning = LagWarning::new(lag_warn, Duration::from_secs(60));
    let mut client: Option<tokio_postgres::Client> = None;
    let mut last_heartbeat = Instant::now();
    let mut tick = tokio::time::interval(SLOT_CHECK_EVERY.min(heartbeat));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect_sql(&spec).await.ok();
        }
        let Some(sql) = &client else { continue };
        if last_heartbeat.elapsed() >= heartbeat {
            last_heartbeat = Instant::now();
            if let Err(e) = slot_guard::heartbeat(sql).await {
                warn!(error = %crate::error_chain(&e), "cannot write the heartbeat");
            }
        }
        match slot_guard::slot_health(sql, &slot).await {
            Ok(health) => {
                if let Some(problem) = health.problem(&slot) {
                    let _ = problems.send(problem).await;
                    return;
                }
                if let Some(lag) = health.lag_bytes {
                    metrics::gauge!(crate::telemetry::SLOT_LAG_BYTES).set(lag as f64);
                }
                if let Some(retained) = health.retained_bytes.or(health.lag_bytes) {
                    lag_warning.check(&slot, retained);
                }
            }
            Err(e) => warn!(error = %crate::error_chain(&e), "cannot read the slot's health"),
        }
    }
}
