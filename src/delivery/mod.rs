//! Delivery: events to signed webhook POSTs, one [`Worker`] per subscriber.
//!
//! - `worker`: the select loop; it decides nothing about order or storage itself.
//! - `order`: per-key order and truncate barriers of live events (pure, unit-tested).
//! - `spill`: the only door to the state store: held events out and back, dead letters,
//!   removals, and reporting what the store made safe as settled.
//! - `rate`: a subscriber's `rate_limit`, the token bucket every request passes.
//! - `sink`: the [`Sink`] trait, what a worker sends through; `http` is its first
//!   implementation ([`HttpSink`], with `post`), `retry` classifies answers (a status, or a
//!   [`TransportFailure`]) apart from the retry schedule and names no HTTP client, `signing`
//!   signs Standard Webhooks.
//!
//! Delivery never talks to Postgres and never confirms LSNs; it reports outcomes.

mod http;
mod job;
mod meters;
mod order;
mod rate;
mod retry;
mod signing;
mod sink;
mod spill;
mod worker;

pub use http::{batch_body, batch_id, build_client, post, Attempt, HttpSink};
pub use job::Job;
pub use retry::{classify, classify_failure, Schedule, TransportFailure, Verdict};
pub use signing::Signer;
pub use sink::{Outcome, Report, Sink};
pub use spill::{WorkerContext, WorkerError};
pub use worker::{announce, Worker};
