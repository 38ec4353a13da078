//! Records nobody waits for.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A record nobody waits for (the last delivery's time, the checkpoint), written at most once
/// per `every` in a task of its own, so no caller waits for its commit, and never twice at
/// once.
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

    /// Starts `write` in the background if `every` has passed since the last start and that
    /// write has finished; says whether it started. Must be called within a tokio runtime.
    pub fn start(&mut self, write: impl Future<Output = ()> + Send + 'static) -> bool {
        let due = self.started.is_none_or(|at| at.elapsed() >= self.every);
        let busy = self.running.as_ref().is_some_and(|h| !h.is_finished());
        if !due || busy {
            return false;
        }
        self.started = Some(Instant::now());
        self.running = Some(tokio::spawn(write));
        true
    }
}
