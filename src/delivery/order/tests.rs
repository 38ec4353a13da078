//! The ordering rules, one at a time, with events as the queued jobs.

use std::sync::Arc;

use super::*;
use crate::model::Lsn;

type Job = Arc<Event>;

impl Ordered for Arc<Event> {
    fn event(&self) -> &Event {
        self
    }
}

const NONE: Duration = Duration::ZERO;
const MS: Duration = Duration::from_millis(1);

/// A row event `id` of `table` with key `key` (keys are table-qualified, as mapping makes them).
fn row(id: &str, table: &str, key: &str) -> Job {
    event(id, table, &format!("{table}:[{key}]"), false)
}

/// A truncate of `table`; mapping keys a truncate by its table's name.
fn truncate(id: &str, table: &str) -> Job {
    event(id, table, table, true)
}

fn event(id: &str, table: &str, key: &str, is_truncate: bool) -> Job {
    Arc::new(Event {
        id: id.to_string(),
        event_type: "t.changed".to_string(),
        key: key.to_string(),
        table: table.to_string(),
        body: "{}".to_string(),
        commit_lsn: Lsn(0),
        commit_time_micros: 0,
        is_truncate,
    })
}

fn ids(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

fn order(jobs: &[&Job], now: Instant) -> Order<Job> {
    let mut order = Order::default();
    for job in jobs {
        order.push(Job::clone(job), now);
    }
    order
}

/// Everything that may go now, in batches of one (the order in which a worker sends them).
fn take_all(order: &mut Order<Job>, now: Instant) -> Vec<Job> {
    let mut taken = order.take_truncates(usize::MAX);
    loop {
        let batch = order.take_batch(1, NONE, true, now);
        if batch.is_empty() {
            return taken;
        }
        taken.extend(batch);
    }
}

/// Marks `job` finished and checks that the order gives it back.
fn finish(order: &mut Order<Job>, job: &Job, now: Instant) {
    let back = order.finished(job, now).expect("a job in flight is known");
    assert_eq!(back.id, job.id);
}

#[test]
fn a_key_sends_one_event_at_a_time_in_the_order_pushed() {
    let t0 = Instant::now();
    let (a1, a2, a3) = (
        row("a1", "t", "1"),
        row("a2", "t", "1"),
        row("a3", "t", "1"),
    );
    let mut order = order(&[&a1, &a2, &a3], t0);

    assert_eq!(ids(&order.take_batch(10, NONE, true, t0)), ["a1"]);
    assert!(
        order.take_batch(10, NONE, true, t0).is_empty(),
        "a2 waits for a1"
    );
    finish(&mut order, &a1, t0);
    assert_eq!(ids(&order.take_batch(10, NONE, true, t0)), ["a2"]);
    finish(&mut order, &a2, t0);
    assert_eq!(ids(&order.take_batch(10, NONE, true, t0)), ["a3"]);
    assert!(order.has_key(&a3.key), "in flight");
    finish(&mut order, &a3, t0);
    assert!(!order.has_key(&a3.key));
    assert!(order.take_batch(10, NONE, true, t0).is_empty());
    assert_eq!(order.ready_keys(), 0);
}

#[test]
fn other_keys_flow_while_a_key_waits_for_its_head() {
    let t0 = Instant::now();
    let (a1, a2) = (row("a1", "t", "1"), row("a2", "t", "1"));
    let (b1, b2) = (row("b1", "t", "2"), row("b2", "t", "2"));
    let mut order = order(&[&a1, &a2, &b1, &b2], t0);

    assert_eq!(ids(&take_all(&mut order, t0)), ["a1", "b1"]);
    finish(&mut order, &b1, t0);
    assert_eq!(
        ids(&take_all(&mut order, t0)),
        ["b2"],
        "a1 is still in flight"
    );
    finish(&mut order, &b2, t0);
    assert!(take_all(&mut order, t0).is_empty());
    finish(&mut order, &a1, t0);
    assert_eq!(ids(&take_all(&mut order, t0)), ["a2"]);
}

#[test]
fn a_failed_head_holds_back_only_its_own_key_and_its_rest_keeps_its_order() {
    let t0 = Instant::now();
    let (a1, a2, a3) = (
        row("a1", "t", "1"),
        row("a2", "t", "1"),
        row("a3", "t", "1"),
    );
    let (b1, b2) = (row("b1", "t", "2"), row("b2", "t", "2"));
    let mut order = order(&[&a1, &a2, &b1, &a3, &b2], t0);
    assert_eq!(ids(&order.take_batch(10, NONE, true, t0)), ["a1", "b1"]);

    // a1 fails: it and everything behind it leave together, a1 first.
    let (failed, rest) = order.failed(&a1).unwrap();
    assert_eq!(failed.id, "a1");
    assert_eq!(ids(&rest), ["a2", "a3"]);
    assert!(!order.has_key(&a1.key));
    assert!(
        order.take_batch(10, NONE, true, t0).is_empty(),
        "no stale ready entry of the failed key; b1 is in flight"
    );

    // The other key goes on as if nothing happened.
    finish(&mut order, &b1, t0);
    assert_eq!(ids(&order.take_batch(10, NONE, true, t0)), ["b2"]);

    // A later event of the failed key starts afresh (the worker holds it if the store has
    // its key; the order does not know the store).
    let a4 = row("a4", "t", "1");
    order.push(a4.clone(), t0);
    assert_eq!(ids(&order.take_batch(10, NONE, true, t0)), ["a4"]);
}

#[test]
fn a_truncate_goes_after_every_earlier_event_of_its_table_and_before_any_later_one() {
    let t0 = Instant::now();
    let (r1, r2) = (row("r1", "t", "1"), row("r2", "t", "2"));
    let trunc = truncate("T", "t");
    let (r3, u1) = (row("r3", "t", "1"), row("u1", "u", "1"));
    let mut order = order(&[&r1, &r2, &trunc, &r3, &u1], t0);

    assert!(order.take_truncates(10).is_empty(), "r1 and r2 come first");
    assert_eq!(
        ids(&order.take_batch(10, NONE, true, t0)),
        ["r1", "r2", "u1"],
        "r3 waits behind the truncate; another table flows"
    );
    finish(&mut order, &r1, t0);
    assert!(order.take_truncates(10).is_empty(), "r2 is still in flight");
    finish(&mut order, &r2, t0);
    assert_eq!(ids(&order.take_truncates(10)), ["T"]);
    assert!(
        order.take_truncates(10).is_empty(),
        "in flight, not sent twice"
    );

    // Later events of the table, of a new key or an old one, wait behind it; other tables
    // do not.
    let (r4, u2) = (row("r4", "t", "3"), row("u2", "u", "2"));
    order.push(r4.clone(), t0);
    order.push(u2.clone(), t0);
    assert_eq!(ids(&take_all(&mut order, t0)), ["u2"]);

    finish(&mut order, &trunc, t0);
    assert_eq!(ids(&take_all(&mut order, t0)), ["r3", "r4"]);
}

#[test]
fn a_truncate_with_nothing_before_it_goes_at_once_and_only_once() {
    let t0 = Instant::now();
    let trunc = truncate("T", "t");
    let mut order = order(&[&trunc], t0);
    assert!(order.take_batch(10, NONE, true, t0).is_empty(), "not a row");
    assert_eq!(ids(&order.take_truncates(10)), ["T"]);
    assert!(order.take_truncates(10).is_empty());
    finish(&mut order, &trunc, t0);
    assert!(take_all(&mut order, t0).is_empty());
}

#[test]
fn truncates_of_one_table_go_one_after_another_with_their_events_between() {
    let t0 = Instant::now();
    let (t1, r1, t2, r2) = (
        truncate("T1", "t"),
        row("r1", "t", "1"),
        truncate("T2", "t"),
        row("r2", "t", "1"),
    );
    let mut order = order(&[&t1, &r1, &t2, &r2], t0);

    assert_eq!(ids(&take_all(&mut order, t0)), ["T1"]);
    finish(&mut order, &t1, t0);
    assert_eq!(ids(&take_all(&mut order, t0)), ["r1"], "T2 waits for r1");
    finish(&mut order, &r1, t0);
    assert_eq!(ids(&take_all(&mut order, t0)), ["T2"], "r2 waits for T2");
    finish(&mut order, &t2, t0);
    assert_eq!(ids(&take_all(&mut order, t0)), ["r2"]);
}

#[test]
fn truncates_of_different_tables_do_not_wait_for_each_other() {
    let t0 = Instant::now();
    let (tt, ru, tu) = (
        truncate("Tt", "t"),
        row("ru", "u", "1"),
        truncate("Tu", "u"),
    );
    let mut order = order(&[&tt, &ru, &tu], t0);
    let first = take_all(&mut order, t0);
    assert_eq!(first.len(), 2, "{:?}", ids(&first));
    assert!(ids(&first).contains(&"Tt") && ids(&first).contains(&"ru"));
    finish(&mut order, &ru, t0);
    assert_eq!(ids(&take_all(&mut order, t0)), ["Tu"]);
}

#[test]
fn at_most_limit_truncates_are_taken() {
    let t0 = Instant::now();
    let (ta, tb, tc) = (
        truncate("Ta", "a"),
        truncate("Tb", "b"),
        truncate("Tc", "c"),
    );
    let mut order = order(&[&ta, &tb, &tc], t0);
    assert_eq!(order.take_truncates(2).len(), 2);
    assert_eq!(order.take_truncates(2).len(), 1);
    assert!(order.take_truncates(2).is_empty());
}

#[test]
fn keys_take_turns_and_a_finished_key_queues_behind_those_waiting() {
    let t0 = Instant::now();
    let (a1, a2, a3) = (
        row("a1", "t", "1"),
        row("a2", "t", "1"),
        row("a3", "t", "1"),
    );
    let (b1, c1) = (row("b1", "t", "2"), row("c1", "t", "3"));
    let mut order = order(&[&a1, &a2, &a3, &b1], t0);
    order.push(c1.clone(), t0 + MS);

    assert_eq!(ids(&order.take_batch(2, NONE, true, t0)), ["a1", "b1"]);
    finish(&mut order, &a1, t0 + 2 * MS);
    // c1 was ready before a2: it goes first, however many events key a has.
    assert_eq!(order.oldest_ready(), Some(t0 + MS));
    assert_eq!(ids(&order.take_batch(1, NONE, true, t0)), ["c1"]);
    let d1 = row("d1", "t", "4");
    order.push(d1.clone(), t0 + 3 * MS);
    assert_eq!(ids(&order.take_batch(2, NONE, true, t0)), ["a2", "d1"]);
}

#[test]
fn a_partial_batch_waits_for_batch_wait_and_a_full_one_goes_at_once() {
    let t0 = Instant::now();
    let wait = 20 * MS;
    let (a1, b1) = (row("a1", "t", "1"), row("b1", "t", "2"));
    let mut order = order(&[&a1], t0);
    order.push(b1.clone(), t0 + 5 * MS);

    assert!(order.take_batch(3, wait, false, t0 + 19 * MS).is_empty());
    assert_eq!(
        order.oldest_ready(),
        Some(t0),
        "the deadline counts from the oldest"
    );
    assert_eq!(
        ids(&order.take_batch(3, wait, false, t0 + 20 * MS)),
        ["a1", "b1"]
    );

    let (c1, d1, e1, f1) = (
        row("c1", "t", "3"),
        row("d1", "t", "4"),
        row("e1", "t", "5"),
        row("f1", "t", "6"),
    );
    let t1 = t0 + 100 * MS;
    for job in [&c1, &d1, &e1, &f1] {
        order.push(Job::clone(job), t1);
    }
    assert_eq!(order.ready_keys(), 4);
    assert_eq!(
        ids(&order.take_batch(3, wait, false, t1)),
        ["c1", "d1", "e1"]
    );
    assert!(order.take_batch(3, wait, false, t1).is_empty(), "f1 waits");
    assert_eq!(
        ids(&order.take_batch(3, wait, true, t1)),
        ["f1"],
        "draining"
    );
}

#[test]
fn a_batch_never_holds_two_events_of_one_key() {
    let t0 = Instant::now();
    let (a1, a2, b1) = (
        row("a1", "t", "1"),
        row("a2", "t", "1"),
        row("b1", "t", "2"),
    );
    let mut order = order(&[&a1, &a2, &b1], t0);
    assert_eq!(ids(&order.take_batch(10, NONE, true, t0)), ["a1", "b1"]);
}

#[test]
fn draining_takes_what_is_queued_but_leaves_what_waits_behind_a_job_in_flight() {
    let t0 = Instant::now();
    let (a1, a2, a3) = (
        row("a1", "t", "1"),
        row("a2", "t", "1"),
        row("a3", "t", "1"),
    );
    let (b1, b2) = (row("b1", "t", "2"), row("b2", "t", "2"));
    let mut order = order(&[&a1, &a2, &a3], t0);
    assert_eq!(ids(&order.take_batch(1, NONE, true, t0)), ["a1"]);
    order.push(b1.clone(), t0);
    order.push(b2.clone(), t0);

    assert_eq!(ids(&order.take_queued()), ["b1", "b2"]);
    assert!(!order.has_key(&b1.key));
    assert!(order.take_batch(10, NONE, true, t0).is_empty());

    // a1 comes back; what waited behind it is taken only now, after it, in order.
    finish(&mut order, &a1, t0);
    assert_eq!(ids(&order.take_queued()), ["a2", "a3"]);
    assert!(!order.has_key(&a1.key));
    assert!(order.take_queued().is_empty());
}

#[test]
fn draining_takes_a_waiting_barrier_whole_once_its_table_has_nothing_in_flight() {
    let t0 = Instant::now();
    let (r1, tt, r2) = (
        row("r1", "t", "1"),
        truncate("Tt", "t"),
        row("r2", "t", "1"),
    );
    let (tu, ru) = (truncate("Tu", "u"), row("ru", "u", "1"));
    let mut order = order(&[&r1, &tt, &r2, &tu, &ru], t0);
    let sent = take_all(&mut order, t0);
    assert_eq!(sent.len(), 2, "r1 and Tu; Tt waits for r1");

    // r1 and Tu are in flight: Tt's barrier stays until r1 is back (r1 may yet fail and be
    // stored, and Tt must be stored after it); Tu's stays until Tu is back.
    assert!(order.take_queued().is_empty());
    finish(&mut order, &r1, t0);
    assert_eq!(ids(&order.take_queued()), ["Tt", "r2"]);
    finish(&mut order, &tu, t0);
    assert_eq!(ids(&order.take_queued()), ["ru"]);
    assert!(take_all(&mut order, t0).is_empty());
}

#[test]
fn a_key_drained_while_its_head_was_in_flight_is_gone_after_the_head_returns() {
    let t0 = Instant::now();
    let a1 = row("a1", "t", "1");
    let mut order = order(&[&a1], t0);
    assert_eq!(ids(&order.take_batch(1, NONE, true, t0)), ["a1"]);
    assert!(order.take_queued().is_empty());
    finish(&mut order, &a1, t0);
    assert!(!order.has_key(&a1.key));
    assert_eq!(order.ready_keys(), 0);
}

#[test]
fn a_truncate_waiting_for_an_event_that_failed_follows_it_out() {
    // GIVEN a row of t in flight and a truncate of t (with a later row) waiting for it
    let now = Instant::now();
    let (a, t, b) = (row("a", "t", "1"), truncate("T", "t"), row("b", "t", "2"));
    let mut order = order(&[&a, &t, &b], now);
    assert_eq!(ids(&take_all(&mut order, now)), ["a"]);
    assert!(order.table_busy("t"));
    // WHEN the row fails
    let (failed, follow) = order.failed(&a).unwrap();
    // THEN the truncate and what waited behind it follow it, in order, and nothing of t is
    // left to go out before the failed row
    assert_eq!(failed.id, "a");
    assert_eq!(ids(&follow), ["T", "b"]);
    assert!(!order.table_busy("t"));
    assert!(take_all(&mut order, now).is_empty());
}

#[test]
fn a_barrier_waits_for_every_job_of_its_table_in_flight_before_it_follows_a_failed_one() {
    // GIVEN rows of keys 1 and 2 of t in flight (one batch), and a barrier of t with a later
    // row of key 2 waiting behind them
    let now = Instant::now();
    let (a, b, t, b2) = (
        row("a", "t", "1"),
        row("b", "t", "2"),
        truncate("T", "t"),
        row("b2", "t", "2"),
    );
    let mut order = order(&[&a, &b, &t, &b2], now);
    assert_eq!(ids(&order.take_batch(2, NONE, true, now)), ["a", "b"]);
    // WHEN the first row fails
    let (failed, follow) = order.failed(&a).unwrap();
    // THEN it goes alone: the barrier (and b2 behind it) waits for b, which may fail too
    assert_eq!((failed.id.as_str(), ids(&follow)), ("a", vec![]));
    assert!(order.take_truncates(usize::MAX).is_empty());
    assert!(order.take_queued().is_empty());
    // and when b fails as well, the barrier and b2 follow it, after it
    let (failed, follow) = order.failed(&b).unwrap();
    assert_eq!((failed.id.as_str(), ids(&follow)), ("b", vec!["T", "b2"]));
    assert!(take_all(&mut order, now).is_empty());
}

#[test]
fn the_events_behind_a_truncate_that_failed_follow_it_out() {
    // GIVEN a truncate of t in flight, with rows of t (and of u) pushed after it
    let now = Instant::now();
    let (t, a, b, c) = (
        truncate("T", "t"),
        row("a", "t", "1"),
        row("b", "t", "2"),
        row("c", "u", "1"),
    );
    let mut order = order(&[&t, &a, &b, &c], now);
    assert_eq!(ids(&take_all(&mut order, now)), ["T", "c"]);
    // WHEN the truncate fails
    let (failed, follow) = order.failed(&t).unwrap();
    // THEN t's later rows follow it instead of going out before its retry
    assert_eq!(failed.id, "T");
    assert_eq!(ids(&follow), ["a", "b"]);
    assert!(take_all(&mut order, now).is_empty());
}

#[test]
fn a_failed_row_takes_its_keys_later_events_and_leaves_other_keys_be() {
    let now = Instant::now();
    let (a1, a2, b1) = (
        row("a1", "t", "1"),
        row("a2", "t", "1"),
        row("b1", "t", "2"),
    );
    let mut order = order(&[&a1, &a2, &b1], now);
    assert_eq!(ids(&take_all(&mut order, now)), ["a1", "b1"]);
    let (failed, follow) = order.failed(&a1).unwrap();
    assert_eq!((failed.id.as_str(), ids(&follow)), ("a1", vec!["a2"]));
    assert!(order.table_busy("t"), "b1 is still in flight");
    assert!(!order.has_key(&a1.key));
}

#[test]
fn a_new_event_is_held_back_by_its_keys_jobs_and_by_its_tables_barrier() {
    let now = Instant::now();
    let mut order = Order::default();
    order.push(row("a1", "t", "1"), now);
    assert!(order.holds_back(&row("a2", "t", "1")));
    assert!(!order.holds_back(&row("b1", "t", "2")));
    assert!(!order.holds_back(&row("c1", "u", "1")));
    // A barrier waiting for a1 holds back every later event of its table, not of others.
    order.push(truncate("T", "t"), now);
    assert!(order.holds_back(&row("b1", "t", "2")));
    assert!(!order.holds_back(&row("c1", "u", "1")));
}

/// What a random run of the order did: events in the order pushed, and for each event sent,
/// its push index and the push indexes that had finished by then.
mod rule {
    use super::*;
    use proptest::prelude::*;

    /// One step: push the next event (key 0..4 of table `t` or `u`, or a barrier), or finish
    /// the in-flight job at this index (modulo), or take what may go, in batches of `size`.
    #[derive(Debug, Clone)]
    enum Step {
        Push { table: u8, key: u8, barrier: bool },
        Finish(usize),
        Take(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..2u8, 0..4u8, prop::bool::weighted(0.2))
                .prop_map(|(table, key, barrier)| Step::Push { table, key, barrier }),
            2 => (0..8usize).prop_map(Step::Finish),
            2 => (1..4usize).prop_map(Step::Take),
        ]
    }

    proptest! {
        /// Whatever the interleaving of pushes, sends and completions, an event is sent only
        /// after every earlier event it must follow (`Event::must_follow`) has finished, and
        /// every event is sent exactly once.
        #[test]
        fn no_event_is_sent_before_one_it_must_follow(steps in prop::collection::vec(step(), 1..80)) {
            let now = Instant::now();
            let mut order: Order<Job> = Order::default();
            let mut pushed: Vec<Job> = Vec::new();
            let mut finished: Vec<bool> = Vec::new();
            let mut in_flight: Vec<(usize, Job)> = Vec::new();
            let index = |pushed: &[Job], job: &Job| {
                pushed.iter().position(|p| p.id == job.id).expect("sent jobs were pushed")
            };
            let take = |order: &mut Order<Job>, size: usize, pushed: &[Job], finished: &[bool], in_flight: &mut Vec<(usize, Job)>| {
                let mut taken = order.take_truncates(usize::MAX);
                taken.extend(order.take_batch(size, NONE, true, now));
                for job in taken {
                    let at = index(pushed, &job);
                    for (earlier, done) in pushed[..at].iter().zip(finished) {
                        assert!(
                            *done || !job.must_follow(earlier),
                            "{} sent before {} finished",
                            job.id,
                            earlier.id
                        );
                    }
                    assert!(in_flight.iter().all(|(i, _)| *i != at), "{} sent twice", job.id);
                    in_flight.push((at, job));
                }
            };
            for step in steps {
                match step {
                    Step::Push { table, key, barrier } => {
                        let table = if table == 0 { "t" } else { "u" };
                        let id = format!("e{}", pushed.len());
                        let job = if barrier {
                            // A key change: a barrier keyed by its row's new key.
                            event(&id, table, &format!("{table}:[{key}]"), true)
                        } else {
                            row(&id, table, &key.to_string())
                        };
                        order.push(job.clone(), now);
                        pushed.push(job);
                        finished.push(false);
                    }
                    Step::Finish(n) if !in_flight.is_empty() => {
                        let (at, job) = in_flight.remove(n % in_flight.len());
                        order.finished(&job, now).expect("a job in flight is known");
                        finished[at] = true;
                    }
                    Step::Finish(_) => {}
                    Step::Take(size) => take(&mut order, size, &pushed, &finished, &mut in_flight),
                }
            }
            // Drain: everything goes out in the end.
            loop {
                take(&mut order, 1, &pushed, &finished, &mut in_flight);
                let Some((at, job)) = in_flight.pop() else { break };
                order.finished(&job, now).expect("a job in flight is known");
                finished[at] = true;
            }
            prop_assert!(finished.iter().all(|f| *f), "every event finished");
        }
    }

    /// A job's fate in [`failures`]' model of the worker.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fate {
        Live,
        Delivered,
        Stored,
    }

    /// One step of the worker, as the order sees it: push an event, finish or fail the job in
    /// flight at this index, take what may go, or store everything queued (pause, shutdown).
    #[derive(Debug, Clone)]
    enum Act {
        Push { table: u8, key: u8, barrier: bool },
        Deliver(usize),
        Fail(usize),
        Take(usize),
        StoreQueued,
    }

    fn act() -> impl Strategy<Value = Act> {
        prop_oneof![
            4 => (0..2u8, 0..4u8, prop::bool::weighted(0.2))
                .prop_map(|(table, key, barrier)| Act::Push { table, key, barrier }),
            2 => (0..8usize).prop_map(Act::Deliver),
            2 => (0..8usize).prop_map(Act::Fail),
            3 => (1..4usize).prop_map(Act::Take),
            1 => Just(Act::StoreQueued),
        ]
    }

    /// The worker's side of a random run: the store keeps what it is given in that order and
    /// never gives it back (enough to check what goes in, and in what order).
    struct Model {
        order: Order<Job>,
        pushed: Vec<Job>,
        fate: Vec<Fate>,
        in_flight: Vec<(usize, Job)>,
    }

    impl Model {
        fn index(&self, job: &Job) -> usize {
            self.pushed
                .iter()
                .position(|p| p.id == job.id)
                .expect("pushed")
        }

        /// Whether the store holds an event `job` must follow (`Store::must_hold`).
        fn store_holds_before(&self, job: &Job) -> bool {
            let at = self.index(job);
            (0..at).any(|i| self.fate[i] == Fate::Stored && job.must_follow(&self.pushed[i]))
        }

        /// Stores `job`: every earlier event it must follow was delivered or stored before it.
        fn store(&mut self, job: &Job) {
            let at = self.index(job);
            for i in 0..at {
                assert!(
                    self.fate[i] != Fate::Live || !job.must_follow(&self.pushed[i]),
                    "{} stored while {} it must follow is still live",
                    job.id,
                    self.pushed[i].id
                );
            }
            assert_eq!(self.fate[at], Fate::Live, "{} settled twice", job.id);
            self.fate[at] = Fate::Stored;
        }

        /// As `Worker::accept`: behind a live job, or stored behind a held one, or queued.
        fn push(&mut self, job: Job, now: Instant) {
            self.pushed.push(job.clone());
            self.fate.push(Fate::Live);
            if !self.order.holds_back(&job) && self.store_holds_before(&job) {
                self.store(&job);
            } else {
                self.order.push(job, now);
            }
        }

        /// As `Worker::launch` and `held_instead`: a job whose turn came goes out, or to the
        /// store when the store holds one it must follow.
        fn take(&mut self, size: usize, now: Instant) {
            let mut taken = self.order.take_truncates(usize::MAX);
            taken.extend(self.order.take_batch(size, NONE, true, now));
            for job in taken {
                if self.store_holds_before(&job) {
                    let back = self.order.finished(&job, now).expect("in the order");
                    self.store(&back);
                    continue;
                }
                let at = self.index(&job);
                for i in 0..at {
                    assert!(
                        self.fate[i] == Fate::Delivered || !job.must_follow(&self.pushed[i]),
                        "{} sent before {} was delivered",
                        job.id,
                        self.pushed[i].id
                    );
                }
                self.in_flight.push((at, job));
            }
        }

        fn deliver(&mut self, n: usize, now: Instant) {
            if self.in_flight.is_empty() {
                return;
            }
            let (at, job) = self.in_flight.remove(n % self.in_flight.len());
            self.order.finished(&job, now).expect("in flight");
            self.fate[at] = Fate::Delivered;
        }

        /// As `Worker::completed_live` for a failure: the job, then what must follow it.
        fn fail(&mut self, n: usize) {
            if self.in_flight.is_empty() {
                return;
            }
            let (_, job) = self.in_flight.remove(n % self.in_flight.len());
            let (job, follow) = self.order.failed(&job).expect("in flight");
            self.store(&job);
            for later in &follow {
                self.store(later);
            }
        }

        /// As `Worker::store_queued`: in commit (here: push) order.
        fn store_queued(&mut self) {
            let mut queued = self.order.take_queued();
            queued.sort_by_key(|j| self.index(j));
            for job in &queued {
                self.store(job);
            }
        }
    }

    proptest! {
        /// With failures and stores as well: nothing is sent before an event it must follow
        /// was delivered, and nothing is stored while an event it must follow is still live
        /// (queued or in flight), since that one could be stored after it.
        #[test]
        fn nothing_is_stored_or_sent_before_one_it_must_follow(acts in prop::collection::vec(act(), 1..100)) {
            let now = Instant::now();
            let mut m = Model {
                order: Order::default(),
                pushed: Vec::new(),
                fate: Vec::new(),
                in_flight: Vec::new(),
            };
            for act in acts {
                match act {
                    Act::Push { table, key, barrier } => {
                        let table = if table == 0 { "t" } else { "u" };
                        let id = format!("e{}", m.pushed.len());
                        let job = if barrier {
                            event(&id, table, &format!("{table}:[{key}]"), true)
                        } else {
                            row(&id, table, &key.to_string())
                        };
                        m.push(job, now);
                    }
                    Act::Deliver(n) => m.deliver(n, now),
                    Act::Fail(n) => m.fail(n),
                    Act::Take(size) => m.take(size, now),
                    Act::StoreQueued => m.store_queued(),
                }
            }
            // Drain: everything is delivered or stored in the end.
            loop {
                let live = m.fate.iter().filter(|f| **f == Fate::Live).count();
                m.take(1, now);
                if !m.in_flight.is_empty() {
                    m.deliver(0, now);
                } else if m.fate.iter().filter(|f| **f == Fate::Live).count() == live {
                    break;
                }
            }
            prop_assert!(m.fate.iter().all(|f| *f != Fate::Live), "every event settled: {:?}", m.fate);
        }
    }
}
