//! Per-key order and truncate barriers of one subscriber's live events (DESIGN.md "Delivery
//! semantics"): which events may be sent now, and which must wait.
//!
//! - Events of one key go one at a time, in the order they were pushed: a key's next event
//!   becomes ready only when its head was [`Order::finished`]. A key whose head failed gives up
//!   its waiting events ([`Order::failed`]) to follow the failed one; other keys flow on.
//! - A truncate is a barrier for its table: it is sent only when every earlier event of its
//!   table has finished, and the table's later events wait behind it until it has finished.
//! - Keys take turns: ready keys are served oldest first, and a key whose head finished queues
//!   again behind the keys already waiting, so one busy key cannot starve the others.
//!
//! The first two are the rule of [`Event::must_follow`], applied to live jobs (the state store
//! applies it to held events); the property test `no_event_is_sent_before_one_it_must_follow`
//! checks this structure against it.
//!
//! Pure: no I/O, no async, no clock (callers pass `now`), so every rule has a unit test.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::model::Event;

/// What the order holds: anything that carries an event (the worker's jobs; events in tests).
pub(super) trait Ordered: Clone {
    fn event(&self) -> &Event;
}

#[derive(Debug)]
pub(super) struct Order<J> {
    /// Live jobs in commit order per key; the head may be in flight.
    keys: HashMap<String, VecDeque<J>>,
    /// Keys whose head is waiting to be sent, oldest first, with when it became ready.
    ready: VecDeque<(String, Instant)>,
    /// Keys with a job in flight.
    busy: HashSet<String>,
    /// Per table, a truncate waiting for its table's earlier events (always the front), and
    /// the table's later jobs.
    barriers: HashMap<String, VecDeque<J>>,
    /// Jobs in `keys` per table: what a truncate waits for.
    table_load: HashMap<String, usize>,
}

impl<J: Ordered> Default for Order<J> {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
            ready: VecDeque::new(),
            busy: HashSet::new(),
            barriers: HashMap::new(),
            table_load: HashMap::new(),
        }
    }
}

impl<J: Ordered> Order<J> {
    /// Whether `key` has a job queued or in flight.
    #[cfg(test)]
    pub fn has_key(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Whether a new `event` must follow a live job here: its key has a job queued or in
    /// flight, its table has a barrier waiting or in flight, or it is a barrier and its table
    /// has live jobs ([`Event::must_follow`] against every live job).
    pub fn holds_back(&self, event: &Event) -> bool {
        self.keys.contains_key(&event.key)
            || self.barriers.contains_key(&event.table)
            || (event.is_truncate && self.table_busy(&event.table))
    }

    /// Queues `job` after every job pushed before it: behind its key, or behind its table's
    /// truncate if one waits; a truncate starts a barrier for its table.
    pub fn push(&mut self, job: J, now: Instant) {
        let event = job.event();
        if let Some(barrier) = self.barriers.get_mut(&event.table) {
            barrier.push_back(job);
            return;
        }
        if event.is_truncate {
            let table = event.table.clone();
            self.barriers.insert(table, VecDeque::from([job]));
            return;
        }
        self.enqueue(job, now);
    }

    fn enqueue(&mut self, job: J, now: Instant) {
        let event = job.event();
        *self.table_load.entry(event.table.clone()).or_default() += 1;
        let key = event.key.clone();
        let queue = self.keys.entry(key.clone()).or_default();
        queue.push_back(job);
        if queue.len() == 1 && !self.busy.contains(&key) {
            self.ready.push_back((key, now));
        }
    }

    /// Since when the oldest ready job has waited, if any job is ready.
    pub fn oldest_ready(&self) -> Option<Instant> {
        self.ready.front().map(|(_, since)| *since)
    }

    /// How many keys have a job ready to send.
    pub fn ready_keys(&self) -> usize {
        self.ready.len()
    }

    /// The truncates that may go now (their table's earlier jobs have all finished), at most
    /// `limit`, each marked in flight.
    pub fn take_truncates(&mut self, limit: usize) -> Vec<J> {
        let quiet: Vec<String> = self
            .barriers
            .iter()
            .filter(|(table, queue)| {
                self.table_load.get(*table).copied().unwrap_or(0) == 0
                    && queue
                        .front()
                        .is_some_and(|job| !self.busy.contains(&job.event().key))
            })
            .map(|(table, _)| table.clone())
            .take(limit)
            .collect();
        let mut taken = Vec::with_capacity(quiet.len());
        for table in quiet {
            if let Some(job) = self.barriers.get(&table).and_then(|q| q.front()).cloned() {
                self.busy.insert(job.event().key.clone());
                taken.push(job);
            }
        }
        taken
    }

    /// The next batch: the heads of up to `size` ready keys, oldest ready first, each marked in
    /// flight. A batch smaller than `size` goes only once its oldest job has waited `wait`, or
    /// at once if `partial_now` (draining). Empty when nothing may go.
    pub fn take_batch(
        &mut self,
        size: usize,
        wait: Duration,
        partial_now: bool,
        now: Instant,
    ) -> Vec<J> {
        if size > 1 && self.ready.len() < size && !partial_now {
            let waited = self
                .oldest_ready()
                .is_some_and(|since| now.saturating_duration_since(since) >= wait);
            if !waited {
                return Vec::new();
            }
        }
        let mut jobs = Vec::with_capacity(size.min(self.ready.len()));
        while jobs.len() < size {
            let Some((key, _)) = self.ready.pop_front() else {
                break;
            };
            if let Some(job) = self.keys.get(&key).and_then(|q| q.front()) {
                jobs.push(job.clone());
                self.busy.insert(key);
            }
        }
        jobs
    }

    /// `job`, taken earlier, came back (whatever the outcome): removes it and returns it as it
    /// was queued. Its key's next job becomes ready; after a truncate, the jobs that waited
    /// behind it are queued.
    pub fn finished(&mut self, job: &J, now: Instant) -> Option<J> {
        let event = job.event();
        self.busy.remove(&event.key);
        if event.is_truncate {
            self.finish_truncate(&event.table, now)
        } else {
            self.pop_head(&event.key, now)
        }
    }

    fn pop_head(&mut self, key: &str, now: Instant) -> Option<J> {
        let queue = self.keys.get_mut(key)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            self.keys.remove(key);
        } else {
            self.ready.push_back((key.to_string(), now));
        }
        self.unload(&job.event().table, 1);
        Some(job)
    }

    fn finish_truncate(&mut self, table: &str, now: Instant) -> Option<J> {
        let mut queue = self.barriers.remove(table)?;
        let truncate = queue.pop_front();
        for job in queue {
            if self.barriers.contains_key(table) || job.event().is_truncate {
                self.barriers
                    .entry(table.to_string())
                    .or_default()
                    .push_back(job);
            } else {
                self.enqueue(job, now);
            }
        }
        truncate
    }

    /// Removes and returns `table`'s waiting truncate and the jobs behind it, after an earlier
    /// job of the table failed: the truncate must follow that job wherever it goes.
    fn take_barrier(&mut self, table: &str) -> VecDeque<J> {
        self.barriers.remove(table).unwrap_or_default()
    }

    /// `job`, taken earlier, failed and goes to the store: removes it and returns it with every
    /// job that must follow it there, in order. For a row, its key's later jobs, and its table's
    /// waiting barrier (with what waits behind that) once no other job of the table is live;
    /// for a barrier, every job that waited behind it.
    ///
    /// A barrier left here waits for the table's other live jobs, as it did; when its turn
    /// comes, the worker finds the failed job in the store and stores the barrier after it.
    /// Taken now, it could stand in the store before a job of its table still in flight (the
    /// rest of a failed batch), which would then be stored after it, and the events behind the
    /// barrier before that job of their key. Nothing that came after the failed job goes out
    /// before its retry either way.
    pub fn failed(&mut self, job: &J) -> Option<(J, Vec<J>)> {
        let event = job.event();
        self.busy.remove(&event.key);
        if event.is_truncate {
            let mut queue = self.barriers.remove(&event.table)?;
            let truncate = queue.pop_front()?;
            return Some((truncate, queue.into()));
        }
        let (key, table) = (event.key.clone(), event.table.clone());
        let mut queue = self.keys.remove(&key)?;
        self.ready.retain(|(k, _)| k != &key);
        let failed = queue.pop_front()?;
        self.unload(&table, 1 + queue.len());
        let mut follow: Vec<J> = queue.into();
        if !self.table_busy(&table) {
            follow.extend(self.take_barrier(&table));
        }
        Some((failed, follow))
    }

    /// Live jobs queued or in flight (counted per table, so cheap enough to ask per pass).
    pub fn live_jobs(&self) -> usize {
        self.table_load.values().sum::<usize>()
            + self.barriers.values().map(VecDeque::len).sum::<usize>()
    }

    /// Whether a truncate waits for its turn.
    pub fn has_barriers(&self) -> bool {
        !self.barriers.is_empty()
    }

    /// Whether `table` has live jobs queued or in flight (a held truncate of it waits for them).
    pub fn table_busy(&self, table: &str) -> bool {
        self.table_load.get(table).is_some_and(|&n| n > 0)
    }

    /// Removes and returns every queued job that is not behind a job in flight: those follow
    /// their head when it finishes (take them then), so a failed head goes before its
    /// successors. Keys first, then each table's barrier (a truncate and what waits behind it)
    /// whose table has no job left in flight, each in order; across keys in no particular
    /// order.
    pub fn take_queued(&mut self) -> Vec<J> {
        let busy = &self.busy;
        let mut queued = Vec::new();
        for (key, queue) in self.keys.iter_mut() {
            if !busy.contains(key) {
                queued.extend(queue.drain(..));
            }
        }
        self.keys.retain(|_, q| !q.is_empty());
        self.ready.clear();
        let tables: Vec<String> = queued.iter().map(|j| j.event().table.clone()).collect();
        for table in &tables {
            self.unload(table, 1);
        }
        let (busy, load) = (&self.busy, &self.table_load);
        for (table, barrier) in self.barriers.iter_mut() {
            let in_flight = load.contains_key(table)
                || barrier
                    .front()
                    .is_some_and(|j| busy.contains(&j.event().key));
            if !in_flight {
                queued.extend(barrier.drain(..));
            }
        }
        self.barriers.retain(|_, q| !q.is_empty());
        queued
    }

    fn unload(&mut self, table: &str, n: usize) {
        if let Some(load) = self.table_load.get_mut(table) {
            *load = load.saturating_sub(n);
            if *load == 0 {
                self.table_load.remove(table);
            }
        }
    }
}

#[cfg(test)]
mod tests;
