//! Mapping: compiled `[[events]]` rules turn a change into zero or more events. Pure: no
//! Postgres, no HTTP.

mod body;
mod filter;
mod id;
mod names;
mod routed;
mod rules;
#[cfg(test)]
mod tests;

pub use body::push_rfc3339_micros;
pub use filter::FilterError;
pub use routed::Routed;
pub use rules::{fnv1a, Mapper, ReadRow};
