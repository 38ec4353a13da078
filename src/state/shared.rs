//! The store as walhook's tasks share it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::Store;

/// Runs `work` on the shared store, on this thread.
///
/// A store call may wait for an fsync, or for another call to finish one, for milliseconds at
/// a time, and stops the tasks of the thread meanwhile: use it where the caller needs the
/// answer (storing events before settling them, reading what is due), not for records
/// nobody waits for (see [`PeriodicWrite`]).
pub fn with_store<T>(store: &Mutex<Store>, work: impl FnOnce(&mut Store) -> T) -> T {
    let mut guard = store.lock().unwrap_or_else(PoisonError::into_inner);
    work(&mut guard)
}

/// A record nobody waits for (the last delivery's time, the checkpoint), written at most once
/// per `every` on tokio's blocking pool, so its fsync stalls no task, and never twice at once.
#[derive(Debug)]
pub struct PeriodicWrite {
    every: Duration,
    started: Option<Instant>,
    running: Option<JoinHandle<()>>,
}

impl PeriodicWrite {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            started: None,
            running: None,
        }
    }

    /// Starts `work` in the background if `every` has passed since the last start and that
    /// write has finished; says whether it started. Must be called within a tokio runtime.
    pub fn start(
        &mut self,
        store: &Arc<Mutex<Store>>,
        work: impl FnOnce(&mut Store) + Send + 'static,
    ) -> bool {
        let due = self.started.is_none_or(|at| at.elapsed() >= self.every);
        let busy = self.running.as_ref().is_some_and(|h| !h.is_finished());
        if !due || busy {
            return false;
        }
        let store = store.clone();
        self.started = Some(Instant::now());
        self.running = Some(tokio::task::spawn_blocking(move || {
            with_store(&store, work)
        }));
        true
    }
}
