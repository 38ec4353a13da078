//! The background tasks `run` starts beside the pipeline: the replication source with its
//! reconnects, and the slot guard with its heartbeat.

use super::*;
use crate::source::canary::Canary;
use tracing::Instrument;

/// Streams, reconnecting with backoff after transient failures, until stopped.
pub(super) async fn run_source(
    settings: SourceSettings,
    events: mpsc::Sender<SourceEvent>,
    mut confirmed: watch::Receiver<Lsn>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build();
    let slot_confirmed = *confirmed.borrow();
    let mut canary = match &settings.canary {
        Some((table, every)) => Some(
            Canary::start(
                settings.spec.clone(),
                table.clone(),
                (&settings.slot, &settings.publication),
                *every,
                slot_confirmed,
            )
            .await,
        ),
        None => None,
    };
    loop {
        let started = Instant::now();
        // Every line the session logs names its slot and database, so several walhooks (or
        // the tests' many) can be told apart in one log.
        let session = tracing::info_span!(
            "replication",
            slot = %settings.slot,
            database = %settings.spec.dbname
        );
        match stream(
            &settings,
            &events,
            &mut confirmed,
            &mut stop,
            canary.as_mut(),
        )
        .instrument(session)
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && !*stop.borrow() => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(500))
                        .with_max_delay(Duration::from_secs(30))
                        .with_jitter()
                        .without_max_times()
                        .build();
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                warn!(error = %crate::error_chain(&e), retry_in = ?delay, "replication connection lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

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
