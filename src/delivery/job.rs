//! What a worker is given to deliver.

use std::sync::Arc;

use super::order::Ordered;
use crate::model::Event;
use crate::model::TxnId;

/// An event for this subscriber, and the transaction it settles a part of.
#[derive(Debug, Clone)]
pub struct Job {
    pub event: Arc<Event>,
    pub txn: TxnId,
}

impl Ordered for Job {
    fn event(&self) -> &Event {
        &self.event
    }
}
