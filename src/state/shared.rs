//! The store as walhook's tasks share it.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinHandle;

use super::Store;

/// Runs `work` on the shared store, on this thread.
///
/// A store call may wait for an fsync, or for another call to finish one, for milliseconds at
/// a time, and stops the tasks of the thread meanwhile: use it where the caller needs the
/// answer (storing events before settling them, reading what is due), not for records
/// nobody waits for (see [`in_background`]).
pub fn with_store<T>(store: &Mutex<Store>, work: impl FnOnce(&mut Store) -> T) -> T {
    let mut guard = store.lock().unwrap_or_else(PoisonError::into_inner);
    work(&mut guard)
}

/// Runs `work` on the shared store on tokio's blocking pool, for writes nobody waits for (the
/// last delivery's time, the checkpoint): their fsyncs stall no task. Must be called within a
/// tokio runtime.
pub fn in_background(
    store: &Arc<Mutex<Store>>,
    work: impl FnOnce(&mut Store) + Send + 'static,
) -> JoinHandle<()> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || with_store(&store, work))
}
