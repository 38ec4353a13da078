//! An event and the subscribers it goes to: what mapping hands on.

use std::sync::Arc;

use crate::model::Event;

/// An event bound for a set of subscribers (indexes into the config's subscriber list).
#[derive(Debug, Clone)]
pub struct Routed {
    pub event: Arc<Event>,
    pub subscribers: Vec<usize>,
}
