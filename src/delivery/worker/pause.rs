//! A worker's pause: recorded in the state store (by `walhook subscribers pause`, the api,
//! or a 410 Gone), read once a second, and followed here. While paused the worker sends
//! nothing new: queued and new live jobs go to the store, requests in flight finish. On
//! resume, the held events go out as retries do, oldest first per key.

use tracing::{info, warn};

use super::Worker;
use crate::delivery::sink::Sink;
use crate::delivery::spill::WorkerError;
use crate::state::Pause;

impl<S: Sink> Worker<S> {
    /// The receiver is gone (for HTTP, a 410): the pause is recorded in the store and holds
    /// until an operator resumes it, across restarts too.
    pub(super) async fn gone(&mut self, reason: &str) -> Result<(), WorkerError> {
        let pause = self.spill.record_pause(reason).await?;
        self.pause(pause);
        Ok(())
    }

    /// Stops sending: queued jobs go to the store, as every new one will; requests in flight
    /// finish (a failed one is stored, in order).
    pub(super) fn pause(&mut self, pause: Pause) {
        if self.paused.is_none() {
            warn!(subscriber = %self.name(), reason = %pause.describe(), by = %pause.by, "subscriber paused; its events are held in the state store until `walhook subscribers resume {}`", self.name());
        }
        self.paused = Some(pause);
        self.meters.set_paused(true);
        self.store_queued();
    }

    /// Follows the pause recorded in the store: pauses, or resumes (the held events then go
    /// out oldest first per key, as retries do, and live events queue behind them). A failed
    /// read keeps things as they are until the next one.
    pub(super) async fn refresh_pause(&mut self) {
        let recorded = match self.spill.recorded_pause().await {
            Ok(recorded) => recorded,
            Err(e) => {
                warn!(subscriber = %self.name(), error = %crate::error_chain(&e), "cannot read whether the subscriber is paused; will try again");
                return;
            }
        };
        match (recorded, self.paused.is_some()) {
            (Some(pause), false) => self.pause(pause),
            (None, true) => {
                info!(subscriber = %self.name(), "subscriber resumed; sending its held events");
                self.paused = None;
                self.meters.set_paused(false);
                self.spill.look_again();
            }
            _ => {}
        }
    }
}
