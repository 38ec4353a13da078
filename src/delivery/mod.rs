//! Delivery: events to signed webhook POSTs. This module holds the parts that decide nothing
//! about order or state: the shared HTTP client and one request (`post`), retry classification
//! and schedule, and Standard Webhooks signing. Delivery never talks to Postgres and never
//! confirms LSNs; it reports outcomes.

mod http;
mod meters;
mod retry;
mod signing;
mod worker;

pub use http::{batch_body, batch_id, build_client, post, Attempt};
pub use retry::{classify, classify_error, Schedule, Verdict};
pub use signing::Signer;
pub use worker::{announce, Job, Worker, WorkerContext, WorkerError};
