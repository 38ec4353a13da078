//! The fault suite: walhook as the real binary against a real Postgres and real receivers,
//! with faults injected (SIGKILL, a full disk or unwritable state directory, misbehaving
//! receivers, Postgres stopped or its connection killed, one huge transaction), and every
//! outcome checked by event id against what the committed changes must give (see
//! `faults/oracle.rs`). docs/guarantees.md lists each fault and its test.
//!
//! Longer runs: `WALHOOK_SOAK=1 cargo test --test main faults::kills` (or `-- --ignored`).
//! `WALHOOK_FAULT_SEED=<n>` replays a run's random choices.

mod canary;
pub(crate) mod harness;
mod kills;
mod memory;
pub(crate) mod oracle;
mod postgres;
pub(crate) mod raw_http;
mod receivers;
mod state_dir;
