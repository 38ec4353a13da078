//! Delivery: events to signed webhook POSTs. A worker per subscriber ([`Worker`]) sends its
//! events through a [`Sink`] (HTTP: [`HttpSink`], with `post`, retry classification and
//! Standard Webhooks signing beside it), keeps each key's events in commit order, and hands
//! what it cannot deliver now to the state store. Delivery never talks to Postgres and never
//! confirms LSNs; it reports outcomes.

mod http;
mod job;
mod meters;
mod order;
mod retry;
mod signing;
mod sink;
mod worker;

pub use http::{batch_body, batch_id, build_client, post, Attempt, HttpSink};
pub use job::Job;
pub use retry::{classify, classify_error, Schedule, Verdict};
pub use signing::Signer;
pub use sink::{Outcome, Report, Sink};
pub use worker::{announce, Worker, WorkerContext, WorkerError};
