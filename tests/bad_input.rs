//! Bad input: invalid configs, `walhook run` against a database that is not ready, receivers
//! that misbehave, and the security promises (secrets never logged, TLS verify-full, the API on
//! loopback by default). Each case must end in a clear message naming the cause and the fix,
//! never in a panic, and never affect more than the subscriber at fault. docs/guarantees.md
//! lists them; the pgoutput decoder's fuzzing is in `fuzz_decoder.rs`.

mod api;
mod config;
mod receivers;
mod run_failures;
mod secrets;
mod tls;
