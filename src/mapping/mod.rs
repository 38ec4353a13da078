//! Mapping: compiled `[[events]]` rules turn a change into zero or more events. Pure: no
//! Postgres, no HTTP.

mod body;
mod event;
mod filter;
mod id;
mod names;
mod rules;
#[cfg(test)]
mod tests;

pub use body::push_rfc3339_micros;
pub use event::{Event, Routed};
pub use filter::FilterError;
pub use rules::{fnv1a, Mapper, ReadRow};
