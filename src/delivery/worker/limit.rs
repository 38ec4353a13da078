//! A worker's rate limit (`rate_limit`): the pass that lets due held events go first and moves
//! what the limit holds back to the store, and how many requests may start now.

use super::{now, Worker};
use crate::delivery::rate::Gate;
use crate::delivery::sink::Sink;
use crate::delivery::spill::WorkerError;

impl<S: Sink> Worker<S> {
    /// A pass under a rate limit: due held events go first (they are older). Live jobs the
    /// limit holds back move to the store, where they settle, when there are more than
    /// `queue_limit` or the store holds events (which go first): the slot advances meanwhile.
    pub(super) async fn rate_limited_pass(&mut self, open: bool) -> Result<(), WorkerError> {
        if let Some(gate) = &mut self.gate {
            gate.begin_pass();
        }
        if open && self.spill.has_due() {
            self.retry_due(false).await?;
        }
        let held_back = self.gate.as_ref().is_some_and(Gate::refused)
            || (self.order.ready_keys() > 0 && self.permits() == 0);
        let too_many = self.order.live_jobs() > self.queue_limit;
        if held_back && self.paused.is_none() && (too_many || self.spill.may_hold_events()) {
            self.store_queued();
        }
        Ok(())
    }

    /// How many requests the rate limit lets start now (any number without a limit). Asked
    /// only when a request is ready: none means it waits, and the loop wakes for the next
    /// token.
    pub(super) fn permits(&mut self) -> usize {
        match &mut self.gate {
            Some(gate) => gate.permits(now()),
            None => usize::MAX,
        }
    }
}
