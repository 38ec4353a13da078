//! The select loop against a scripted sink and an in-memory store: no HTTP, no Postgres.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::config::RetryConfig;
use crate::model::Lsn;
use crate::model::TxnId;
use crate::state::{AckTracker, DeadLetterFilter, Pause, SqliteStore, Store, UnixMillis};

mod pause;

const SUBSCRIBER: &str = "s";
/// Long enough that nothing stored is retried while a test runs.
const HOUR: Duration = Duration::from_secs(3600);

/// Answers each batch with the outcome scripted for the key of one of its events (delivered if
/// none is), and records the ids of every batch it was given.
struct ScriptedSink {
    outcomes: HashMap<String, Outcome>,
    sent: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Sink for ScriptedSink {
    async fn send(&self, events: &[&Event]) -> Report {
        let ids = events.iter().map(|e| e.id.clone()).collect();
        self.sent.lock().expect("not poisoned").push(ids);
        let outcome = events
            .iter()
            .find_map(|e| self.outcomes.get(&e.key).cloned())
            .unwrap_or(Outcome::Delivered);
        let failed = outcome != Outcome::Delivered;
        Report {
            outcome,
            code: failed.then_some(503),
            detail: failed.then(|| "scripted failure".to_string()),
            took: Duration::ZERO,
        }
    }
}

struct Harness {
    store: Arc<dyn Store>,
    sent: Arc<Mutex<Vec<Vec<String>>>>,
    jobs: Option<mpsc::Sender<Job>>,
    settled: mpsc::UnboundedReceiver<Vec<TxnId>>,
    worker: tokio::task::JoinHandle<Result<(), WorkerError>>,
    tracker: AckTracker,
    next_lsn: u64,
}

impl Harness {
    async fn start(batch_size: usize, outcomes: &[(&str, Outcome)]) -> Self {
        Self::start_lingering(batch_size, Duration::from_millis(20), outcomes).await
    }

    /// A worker whose partial batches wait `batch_wait` for more events.
    async fn start_lingering(
        batch_size: usize,
        batch_wait: Duration,
        outcomes: &[(&str, Outcome)],
    ) -> Self {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in_memory().expect("an in-memory store"));
        Self::start_on(store, batch_size, batch_wait, outcomes).await
    }

    /// A worker with a `rate_limit` and a queue limit.
    async fn start_limited(
        batch_size: usize,
        outcomes: &[(&str, Outcome)],
        rate_limit: Option<crate::config::RateLimit>,
        queue_limit: usize,
    ) -> Self {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in_memory().expect("an in-memory store"));
        let batch_wait = Duration::from_millis(20);
        Self::start_configured(
            store,
            batch_size,
            batch_wait,
            outcomes,
            rate_limit,
            queue_limit,
        )
        .await
    }

    /// A worker on `store`, which may hold something already.
    async fn start_on(
        store: Arc<dyn Store>,
        batch_size: usize,
        batch_wait: Duration,
        outcomes: &[(&str, Outcome)],
    ) -> Self {
        Self::start_configured(store, batch_size, batch_wait, outcomes, None, usize::MAX).await
    }

    async fn start_configured(
        store: Arc<dyn Store>,
        batch_size: usize,
        batch_wait: Duration,
        outcomes: &[(&str, Outcome)],
        rate_limit: Option<crate::config::RateLimit>,
        queue_limit: usize,
    ) -> Self {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = ScriptedSink {
            outcomes: outcomes
                .iter()
                .map(|(key, outcome)| (key.to_string(), outcome.clone()))
                .collect(),
            sent: sent.clone(),
        };
        let config = SubscriberConfig {
            name: SUBSCRIBER.to_string(),
            url: "http://127.0.0.1:9/hooks".parse().expect("a valid URL"),
            signing_key: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            concurrency: 4,
            batch_size,
            batch_wait,
            retry: RetryConfig {
                initial: HOUR,
                max: HOUR,
                give_up_after: 3 * 24 * HOUR,
            },
            initial_backfill: false,
            h2c: false,
            rate_limit,
        };
        let (settled_tx, settled) = mpsc::unbounded_channel();
        let ctx = WorkerContext {
            store: store.clone(),
            settled: settled_tx,
        };
        let worker = Worker::new(config, sink, ctx)
            .await
            .expect("the worker starts")
            .with_queue_limit(queue_limit);
        let (jobs, rx) = mpsc::channel(64);
        Self {
            store,
            sent,
            jobs: Some(jobs),
            settled,
            worker: tokio::spawn(worker.run(rx)),
            tracker: AckTracker::new(Lsn(0)),
            next_lsn: 0x100,
        }
    }

    /// Sends a row event of table `t` with key `key`, in a transaction of its own.
    async fn send(&mut self, id: &str, key: &str) -> TxnId {
        self.send_event(id, key, false).await
    }

    /// Sends a truncate of table `t` (keyed by the table's name, as mapping does), in a
    /// transaction of its own.
    async fn send_truncate(&mut self, id: &str) -> TxnId {
        self.send_event(id, "public.t", true).await
    }

    async fn send_event(&mut self, id: &str, key: &str, is_truncate: bool) -> TxnId {
        self.next_lsn += 0x10;
        let txn = self.tracker.begin();
        let event = Event {
            id: id.to_string(),
            event_type: "t.changed".to_string(),
            key: key.to_string(),
            table: "public.t".to_string(),
            body: format!(r#"{{"id":"{id}"}}"#),
            commit_lsn: Lsn(self.next_lsn),
            commit_time_micros: 0,
            is_truncate,
        };
        let job = Job {
            event: Arc::new(event),
            txn,
        };
        let jobs = self.jobs.as_ref().expect("the worker is running");
        jobs.send(job).await.expect("the worker takes jobs");
        txn
    }

    /// Waits until `n` more jobs were reported settled; returns their transactions, sorted.
    async fn settled(&mut self, n: usize) -> Vec<TxnId> {
        let mut txns = Vec::new();
        while txns.len() < n {
            let wait = tokio::time::timeout(Duration::from_secs(10), self.settled.recv());
            let more = wait.await.expect("settled in time").expect("worker alive");
            txns.extend(more);
        }
        assert_eq!(txns.len(), n, "nothing settles twice");
        txns.sort();
        txns
    }

    /// Closes the job channel and waits for the worker to drain and stop.
    async fn stop(&mut self) {
        self.jobs = None;
        let worker = (&mut self.worker).await.expect("the worker task ends");
        worker.expect("the worker stops cleanly");
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.sent.lock().expect("not poisoned").clone()
    }

    fn store(&self) -> &dyn Store {
        &*self.store
    }
}

fn batch(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

#[tokio::test]
async fn a_failing_key_goes_to_the_store_with_its_later_events_while_other_keys_flow_in_order() {
    // GIVEN a receiver that asks key 1 to come back in an hour and takes key 2
    let retry = Outcome::Retry { after: Some(HOUR) };
    let mut h = Harness::start(1, &[("t:[1]", retry)]).await;

    // WHEN two events of key 1 and three of key 2 arrive, interleaved
    let mut txns = vec![
        h.send("a1", "t:[1]").await,
        h.send("b1", "t:[2]").await,
        h.send("a2", "t:[1]").await,
        h.send("b2", "t:[2]").await,
        h.send("b3", "t:[2]").await,
    ];
    txns.sort();

    // THEN every job settles once: key 2 delivered, key 1 stored
    assert_eq!(h.settled(5).await, txns);
    h.stop().await;

    // and key 2 went out one event at a time in order, a1 once, a2 never (it waits behind a1)
    let batches = h.batches();
    let of_key_2: Vec<_> = batches.iter().filter(|b| b[0].starts_with('b')).collect();
    assert_eq!(
        of_key_2,
        [&batch(&["b1"]), &batch(&["b2"]), &batch(&["b3"])]
    );
    assert_eq!(batches.iter().filter(|b| b[0] == "a1").count(), 1);
    assert!(!batches.iter().any(|b| b.contains(&"a2".to_string())));

    // and the store holds a1 with its failed attempt, a2 behind it
    let store = h.store();
    let status = store.subscriber_status(SUBSCRIBER).await.unwrap();
    assert_eq!(status.pending, 2);
    assert_eq!(
        status.last_error.map(|e| e.text).as_deref(),
        Some("scripted failure")
    );
    let far = UnixMillis::now().saturating_add(2 * HOUR);
    let heads = store.due(SUBSCRIBER, far, 10).await.unwrap();
    assert_eq!(heads.len(), 1, "only the key's head is due: {heads:?}");
    assert_eq!(heads[0].event.id, "a1");
    assert_eq!(heads[0].attempts, 1);
    assert_eq!(heads[0].last_status, Some(503));
    assert_eq!(heads[0].last_error.as_deref(), Some("scripted failure"));
    assert!(
        store
            .due(SUBSCRIBER, UnixMillis::now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "not before an hour"
    );
}

#[tokio::test]
async fn a_gone_receiver_dead_letters_the_event_and_pauses_the_subscriber() {
    // GIVEN a receiver that is gone for key 1
    let gone = Outcome::Gone {
        reason: "gone for good".to_string(),
    };
    let mut h = Harness::start(1, &[("t:[1]", gone)]).await;

    // WHEN an event of key 1 is sent, then two of key 2
    let first = h.send("a1", "t:[1]").await;
    assert_eq!(h.settled(1).await, [first]);
    let mut later = vec![h.send("b1", "t:[2]").await, h.send("b2", "t:[2]").await];
    later.sort();

    // THEN the later ones are stored, not sent, and the pause is recorded with its reason
    assert_eq!(h.settled(2).await, later);
    h.stop().await;
    assert_eq!(h.batches(), [batch(&["a1"])]);
    let store = h.store();
    let status = store.subscriber_status(SUBSCRIBER).await.unwrap();
    let pause = status.paused.expect("paused");
    assert_eq!(
        (pause.reason.as_deref(), pause.by.as_str()),
        (Some("gone for good"), "receiver")
    );
    assert_eq!(status.pending, 2);
    assert_eq!(status.dead_letters, 1);
    let filter = DeadLetterFilter {
        subscriber: Some(SUBSCRIBER.to_string()),
        ..Default::default()
    };
    let dead = store.list_dead_letters(filter, 10).await.unwrap();
    assert_eq!(dead[0].event.id, "a1");
    assert_eq!(dead[0].last_status, Some(503));
    assert_eq!(dead[0].last_error.as_deref(), Some("scripted failure"));
}

#[tokio::test]
async fn full_batches_go_at_once_and_a_partial_one_after_batch_wait() {
    // GIVEN batches of 3
    let mut h = Harness::start(3, &[]).await;

    // WHEN five events of five keys arrive together
    let mut txns = Vec::new();
    for (id, key) in [
        ("e1", "1"),
        ("e2", "2"),
        ("e3", "3"),
        ("e4", "4"),
        ("e5", "5"),
    ] {
        txns.push(h.send(id, &format!("t:[{key}]")).await);
    }
    txns.sort();

    // THEN they all settle, as one full batch in order and then the rest
    assert_eq!(h.settled(5).await, txns);
    h.stop().await;
    assert_eq!(
        h.batches(),
        [batch(&["e1", "e2", "e3"]), batch(&["e4", "e5"])]
    );
    assert_eq!(
        h.store()
            .subscriber_status(SUBSCRIBER)
            .await
            .unwrap()
            .pending,
        0
    );
}

#[tokio::test]
async fn without_batch_wait_a_partial_batch_goes_as_soon_as_a_request_slot_is_free() {
    // GIVEN batches of up to 3 and no batch_wait (the default)
    let mut h = Harness::start_lingering(3, Duration::ZERO, &[]).await;

    // WHEN one event arrives alone
    let started = Instant::now();
    let txn = h.send("e1", "t:[1]").await;

    // THEN it goes out at once, alone, without waiting for more
    assert_eq!(h.settled(1).await, [txn]);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    h.stop().await;
    assert_eq!(h.batches(), [batch(&["e1"])]);
}

#[tokio::test]
async fn with_batch_wait_a_partial_batch_waits_for_more_events() {
    // GIVEN batches of up to 3 that may wait a second
    let mut h = Harness::start_lingering(3, Duration::from_secs(1), &[]).await;

    // WHEN one event arrives alone
    let started = Instant::now();
    let txn = h.send("e1", "t:[1]").await;

    // THEN it goes out alone once it waited that second
    assert_eq!(h.settled(1).await, [txn]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    h.stop().await;
    assert_eq!(h.batches(), [batch(&["e1"])]);
}

#[tokio::test]
async fn a_truncate_goes_out_after_its_tables_earlier_events_and_before_its_later_ones() {
    // GIVEN a receiver that takes everything, one event per request
    let mut h = Harness::start(1, &[]).await;

    // WHEN two rows, a truncate and two more rows of the table arrive together
    let mut txns = vec![
        h.send("r1", "t:[1]").await,
        h.send("r2", "t:[2]").await,
        h.send_truncate("T").await,
        h.send("r3", "t:[1]").await,
        h.send("r4", "t:[3]").await,
    ];
    txns.sort();

    // THEN all are delivered, the truncate after r1 and r2 and before r3 and r4
    assert_eq!(h.settled(5).await, txns);
    h.stop().await;
    let sent: Vec<String> = h.batches().into_iter().flatten().collect();
    let at = |id: &str| sent.iter().position(|s| s == id).expect("sent");
    assert_eq!(sent.len(), 5, "{sent:?}");
    assert!(at("r1") < at("T") && at("r2") < at("T"), "{sent:?}");
    assert!(at("T") < at("r3") && at("T") < at("r4"), "{sent:?}");
}

#[tokio::test]
async fn a_barrier_held_in_a_burst_keeps_its_tables_later_events_behind_it() {
    // GIVEN a receiver that asks key 9 to come back in an hour, so the store holds an event
    // of the table
    let retry = Outcome::Retry { after: Some(HOUR) };
    let mut h = Harness::start(1, &[("t:[9]", retry)]).await;
    let held = h.send("h1", "t:[9]").await;
    assert_eq!(h.settled(1).await, [held]);

    // WHEN a barrier of the table (an update that moved its row to key 2) and a later update
    // of key 2 arrive together, before the worker writes to the store
    let mut txns = vec![
        h.send_event("moved", "t:[2]", true).await,
        h.send("later", "t:[2]").await,
    ];
    txns.sort();

    // THEN both wait in the store, the update behind the barrier, behind the held event
    assert_eq!(h.settled(2).await, txns);
    h.stop().await;
    let sent: Vec<String> = h.batches().into_iter().flatten().collect();
    assert_eq!(sent, ["h1"], "nothing overtakes the held barrier");
    let status = h.store().subscriber_status(SUBSCRIBER).await.unwrap();
    assert_eq!(status.pending, 3);
}

/// The held events of `SUBSCRIBER` in the order the store gives them out: the due heads,
/// delivered one at a time.
async fn drain(store: &dyn Store) -> Vec<String> {
    let far = UnixMillis::now().saturating_add(4 * HOUR);
    let mut order = Vec::new();
    loop {
        let due = store.due(SUBSCRIBER, far, 1).await.unwrap();
        let Some(head) = due.into_iter().next() else {
            return order;
        };
        store
            .remove_pending(SUBSCRIBER, vec![head.event.id.clone()])
            .await
            .unwrap();
        order.push(head.event.id);
    }
}

#[tokio::test]
async fn a_live_job_that_fails_is_stored_before_the_later_events_that_must_follow_it() {
    // GIVEN a receiver that asks keys 9 and 1 to come back in an hour, and an event of key 9
    // already held, so the store holds an event of the table
    let retry = Outcome::Retry { after: Some(HOUR) };
    let mut h = Harness::start(1, &[("t:[9]", retry.clone()), ("t:[1]", retry)]).await;
    let held = h.send("h1", "t:[9]").await;
    assert_eq!(h.settled(1).await, [held]);

    // WHEN a row of key 1 (sent live), then a barrier of the table and a later update of key 1
    // arrive together, and the row's attempt fails
    let mut txns = vec![
        h.send("r1", "t:[1]").await,
        h.send_event("moved", "t:[2]", true).await,
        h.send("later", "t:[1]").await,
    ];
    txns.sort();
    assert_eq!(h.settled(3).await, txns);
    h.stop().await;

    // THEN the store gives them out in commit order: the failed row before the barrier and
    // the update that came after it
    assert_eq!(drain(h.store()).await, ["h1", "r1", "moved", "later"]);
}

#[tokio::test]
async fn a_failed_batch_is_stored_before_its_tables_barrier_and_what_waits_behind_it() {
    // GIVEN batches of 2 and a receiver that asks key 1 to come back in an hour (a batch
    // holding key 1 fails whole)
    let retry = Outcome::Retry { after: Some(HOUR) };
    let mut h = Harness::start(2, &[("t:[1]", retry)]).await;

    // WHEN rows of keys 1 and 2, then a barrier of the table (a row moved to key 3) and a later
    // update of key 2 arrive together, and the batch of the two rows fails
    let mut txns = vec![
        h.send("r1", "t:[1]").await,
        h.send("r2", "t:[2]").await,
        h.send_event("moved", "t:[3]", true).await,
        h.send("later", "t:[2]").await,
    ];
    txns.sort();
    assert_eq!(h.settled(4).await, txns);
    h.stop().await;
    assert_eq!(h.batches(), [batch(&["r1", "r2"])]);

    // THEN the store gives them out in commit order: both rows of the failed batch before the
    // barrier, and the barrier before the later update of key 2 (found by the fidelity test:
    // a backfill read stored behind a later update of its row)
    assert_eq!(drain(h.store()).await, ["r1", "r2", "moved", "later"]);
}

#[tokio::test]
async fn a_rate_limited_worker_stores_what_the_limit_holds_back_and_sends_it_at_the_rate() {
    // GIVEN a limit of 10 requests a second and room for 5 queued jobs
    let limit = crate::config::RateLimit {
        requests: 10,
        per: Duration::from_secs(1),
    };
    let mut h = Harness::start_limited(1, &[], Some(limit), 5).await;
    let started = std::time::Instant::now();

    // WHEN 30 events of 10 keys arrive at once (three per key)
    let mut txns = Vec::new();
    for n in 0..30 {
        txns.push(h.send(&format!("e{n}"), &format!("t:[{}]", n % 10)).await);
    }
    txns.sort();

    // THEN every job settles well before the limit lets them all out: what waits is stored
    assert_eq!(h.settled(30).await, txns);
    let settled_after = started.elapsed();
    let sent_by_then = h.batches().len();
    assert!(
        sent_by_then < 20,
        "{sent_by_then} requests sent by {settled_after:?}: the limit held none back"
    );

    // and all 30 go out, one request per token: a burst of 10, then 10 a second
    let deadline = started + Duration::from_secs(10);
    while h.batches().len() < 30 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    h.stop().await;
    let batches = h.batches();
    assert_eq!(batches.len(), 30, "{batches:?}");
    assert!(
        took >= Duration::from_millis(1_900),
        "30 requests in {took:?}"
    );

    // and each key's events went out in order, each once
    for key in 0..10 {
        let of_key: Vec<&str> = batches
            .iter()
            .map(|b| b[0].as_str())
            .filter(|id| id[1..].parse::<usize>().is_ok_and(|n| n % 10 == key))
            .collect();
        let want: Vec<String> = (0..3).map(|i| format!("e{}", key + 10 * i)).collect();
        assert_eq!(of_key, want, "key {key}");
    }
}

#[tokio::test]
async fn a_rate_limited_worker_keeps_truncate_barriers_through_the_store() {
    // GIVEN a limit of 3 requests a second and room for 2 queued jobs
    let limit = crate::config::RateLimit {
        requests: 3,
        per: Duration::from_secs(1),
    };
    let mut h = Harness::start_limited(1, &[], Some(limit), 2).await;

    // WHEN rows of three keys, a truncate of their table and rows after it arrive at once
    let mut txns = vec![
        h.send("a1", "t:[1]").await,
        h.send("b1", "t:[2]").await,
        h.send("c1", "t:[3]").await,
        h.send("a2", "t:[1]").await,
        h.send_truncate("tr").await,
        h.send("a3", "t:[1]").await,
        h.send("b3", "t:[2]").await,
    ];
    txns.sort();

    // THEN all settle (what the limit held back was stored), and all go out once
    assert_eq!(h.settled(7).await, txns);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.batches().len() < 7 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
    let sent: Vec<String> = h.batches().into_iter().flatten().collect();
    assert_eq!(sent.len(), 7, "{sent:?}");

    // and the truncate went after every earlier row of its table and before every later one
    let at = |id: &str| sent.iter().position(|s| s == id).expect(id);
    for before in ["a1", "b1", "c1", "a2"] {
        assert!(
            at(before) < at("tr"),
            "{before} after the truncate: {sent:?}"
        );
    }
    for after in ["a3", "b3"] {
        assert!(
            at(after) > at("tr"),
            "{after} before the truncate: {sent:?}"
        );
    }
    assert!(at("a1") < at("a2"), "{sent:?}");
}
