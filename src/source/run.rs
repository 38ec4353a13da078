//! The source task: replication sessions one after another, reconnecting with backoff after
//! transient failures, until stopped. What lives longer than one session lives here: the
//! canary (a canary owed stays owed) and the replay filter (a change handed over stays handed
//! over).

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use super::canary::Canary;
use super::event::SourceEvent;
use super::replay::ReplayFilter;
use super::stream::{stream, SourceError, SourceSettings};
use crate::model::Lsn;

/// A session that lasted this long before it failed starts the backoff afresh.
const STABLE_SESSION: Duration = Duration::from_secs(60);

/// Streams into `events`, reconnecting with backoff after transient failures, until `stop` is
/// cancelled: then the session sends its last standby status (the position `confirmed` holds
/// then) and CopyDone, and this returns `Ok`. An error that reconnecting cannot mend is
/// returned. `confirmed` carries the LSN the ack tracker confirmed; it never moves backward.
///
/// Whatever reconnects happen, the pipeline gets each change once (see [`super::replay`]).
pub async fn run(
    settings: SourceSettings,
    events: mpsc::Sender<SourceEvent>,
    mut confirmed: watch::Receiver<Lsn>,
    stop: CancellationToken,
) -> Result<(), SourceError> {
    let mut backoff = reconnect_backoff();
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
    let mut replay = ReplayFilter::default();
    loop {
        let started = Instant::now();
        // Every line the session logs names its slot and database, so several walhooks (or
        // the tests' many) can be told apart in one log.
        let session = tracing::info_span!(
            "replication",
            slot = %settings.slot,
            database = %settings.spec.dbname
        );
        let ended = stream(
            &settings,
            &events,
            &mut replay,
            &mut confirmed,
            &stop,
            canary.as_mut(),
        )
        .instrument(session)
        .await;
        match ended {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && !stop.is_cancelled() => {
                if started.elapsed() > STABLE_SESSION {
                    backoff = reconnect_backoff();
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                warn!(error = %crate::error_chain(&e), retry_in = ?delay, "replication connection lost; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// From half a second to 30 s, with jitter, for as long as it takes.
fn reconnect_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}
