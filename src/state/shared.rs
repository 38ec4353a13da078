//! The store as walhook's tasks share it.

use std::sync::{Mutex, PoisonError};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::Store;

/// Runs `work` on the shared store, off the async runtime's worker threads.
///
/// A store call may wait for an fsync, or for another task's call to finish one, for
/// milliseconds at a time. Run inline, that wait would stop every task scheduled on the same
/// thread (deliveries, the replication stream). On a multi-thread runtime this hands the
/// thread's other tasks to another thread for the duration of the call
/// ([`tokio::task::block_in_place`]); elsewhere (a current-thread runtime in tests, no
/// runtime) it runs in place.
pub fn with_store<T>(store: &Mutex<Store>, work: impl FnOnce(&mut Store) -> T) -> T {
    let run = || {
        let mut guard = store.lock().unwrap_or_else(PoisonError::into_inner);
        work(&mut guard)
    };
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(run)
        }
        _ => run(),
    }
}
