//! walhook's integration tests: one binary, against a real Postgres the tests start themselves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod backfill;
mod backfill_toast;
mod bad_input;
mod check;
mod cluster;
mod dead_letter_filters;
mod delivery_http;
mod e2e;
mod e2e_more;
mod faults;
mod fidelity;
mod fuzz_decoder;
mod logs;
mod metrics;
mod operations;
mod rate_limit;
mod replication;
mod source;
mod state_postgres;
mod status;
mod subscribers;
mod values;
