//! Mapping: compiled `[[events]]` rules turn a change into zero or more events. Pure: no
//! Postgres, no HTTP.

mod event;

pub use event::{Event, Routed};
