//! Receiver faults: answers slower than `timeout`, connections reset mid-body, a storm of 5xx,
//! 429 with `Retry-After`, and 410 Gone. Each time every event arrives, accepted exactly once,
//! each row's events in commit order.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::harness::{
    check, current_lsn, db_with_items, deliveries, fresh_dir, only_redeliveries, source_section,
    wait_all, wait_confirmed, wait_streaming, walhook_command, write_config, Checked, Expected,
    Oracle, Process,
};
use super::raw_http::{RawReply, RawServer};
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::TestDb;

/// A database with `items` and its oracle, and walhook (the binary) streaming to the
/// subscribers in `subscribers` (TOML `[subscribers.*]` sections) for every change of items.
struct Setup {
    db: TestDb,
    client: tokio_postgres::Client,
    oracle: Oracle,
    config: PathBuf,
    walhook: Process,
}

async fn setup(subscribers: &[(&str, String, &str)]) -> Setup {
    let db = TestDb::new().await;
    let (client, oracle) = db_with_items(&db).await;
    let dir = fresh_dir(db.name());
    let mut config = source_section(&db.url(), db.name());
    let mut names = Vec::new();
    for (name, url, extra) in subscribers {
        let retry = if extra.contains("retry") {
            ""
        } else {
            "retry = { initial = \"100ms\", max = \"500ms\" }\n"
        };
        config.push_str(&format!(
            "[subscribers.{name}]\nurl = \"{url}\"\n{retry}{extra}\n"
        ));
        names.push(format!("\"{name}\""));
    }
    config.push_str(&format!(
        "[[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\nsubscribers = [{}]\n",
        names.join(", ")
    ));
    let config = write_config(&dir, &config);
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    Setup {
        db,
        client,
        oracle,
        config,
        walhook,
    }
}

impl Setup {
    /// 200 rows inserted, 10 per transaction; then rows 1..=50 updated twice, one row per
    /// transaction (`updates`). Returns the WAL position after it all.
    async fn write(&self, updates: bool) -> walhook::model::Lsn {
        for t in 0..20i64 {
            self.client
                .execute(
                    "INSERT INTO items SELECT g, 0, 'new' FROM generate_series($1::bigint, $1::bigint + 9) g",
                    &[&(t * 10 + 1)],
                )
                .await
                .unwrap();
        }
        if updates {
            for round in 1..=2 {
                for id in 1..=50i64 {
                    self.client
                        .execute("UPDATE items SET n = $1 WHERE id = $2", &[&round, &id])
                        .await
                        .unwrap();
                }
            }
        }
        current_lsn(&self.client).await
    }

    async fn expected(&self) -> Vec<Expected> {
        self.oracle.expected(&self.client).await
    }

    /// Stops walhook; returns its output.
    async fn finish(self) -> String {
        let output = self.walhook.stop().await;
        self.oracle.drop(&self.client).await;
        output
    }
}

/// A policy for the test receiver that remembers which (webhook-id, attempt) it answered 2xx.
#[derive(Clone, Default)]
struct Answers(Arc<Mutex<HashSet<(String, u32)>>>);

impl Answers {
    fn policy(
        &self,
        decide: impl Fn(&Recorded, u32) -> Reply + Send + Sync + 'static,
    ) -> impl Fn(&Recorded, u32) -> Reply + Send + Sync + 'static {
        let answers = self.0.clone();
        move |r, attempt| {
            let reply = decide(r, attempt);
            let accepted =
                matches!(&reply, Reply::Answer { status, .. } if (200..300).contains(status));
            if accepted {
                let id = r.header("webhook-id").unwrap_or_default().to_string();
                answers.lock().unwrap().insert((id, attempt));
            }
            reply
        }
    }

    fn accepted(&self) -> impl Fn(&Recorded) -> bool + Copy + '_ {
        move |r| {
            let id = r.header("webhook-id").unwrap_or_default().to_string();
            self.0.lock().unwrap().contains(&(id, r.attempt))
        }
    }
}

fn row_id(r: &Recorded) -> i64 {
    r.json()["data"]["row"]["id"].as_i64().unwrap()
}

/// Every event accepted, in order per row, and only once unless walhook logged a failed
/// attempt for it (a 200 that came after walhook's timeout is accepted twice).
fn exactly_once(
    what: &str,
    expected: &[Expected],
    got: &[super::harness::Delivery],
    output: &str,
) -> Checked {
    let found = check(what, expected, got);
    only_redeliveries(what, &found, output);
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_timeout_are_given_up_on_and_retried() {
    // GIVEN a receiver that answers the first attempt of every third row's events after 5 s,
    // and walhook with a 300 ms timeout
    let answers = Answers::default();
    let receiver = Receiver::with_policy(answers.policy(|r, attempt| {
        if attempt == 1 && row_id(r) % 3 == 0 {
            Reply::ok().after(Duration::from_secs(5))
        } else {
            Reply::ok()
        }
    }))
    .await;
    let setup = setup(&[("s", receiver.url("/s"), "timeout = \"300ms\"")]).await;
    // WHEN 300 changes are committed
    setup.write(true).await;
    // THEN every event arrives and is accepted once, in order per row
    let expected = setup.expected().await;
    wait_all(
        || receiver.requests(),
        &["/s"],
        answers.accepted(),
        &expected,
        Duration::from_secs(90),
    )
    .await;
    let output = setup.finish().await;
    let requests = receiver.requests();
    exactly_once(
        "s",
        &expected,
        &deliveries(&requests, "/s", answers.accepted()),
        &output,
    );
    // AND each slow attempt was given up on after the timeout, not after the 5 s answer
    let mut slow = 0;
    for first in requests
        .iter()
        .filter(|r| r.attempt == 1 && row_id(r) % 3 == 0)
    {
        let id = first.header("webhook-id");
        let second = requests
            .iter()
            .find(|r| r.attempt == 2 && r.header("webhook-id") == id)
            .expect("a slow event was not retried");
        let gap = second.arrived - first.arrived;
        assert!(
            gap >= Duration::from_millis(290) && gap < Duration::from_secs(4),
            "{id:?} was retried {gap:?} after its slow attempt"
        );
        slow += 1;
    }
    assert_eq!(slow, expected.iter().filter(|e| e.row % 3 == 0).count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_mid_body_are_retried() {
    // GIVEN a receiver that resets the connection halfway through the body of the first
    // attempt of every other event
    let receiver = RawServer::start(|head, attempt| {
        let id = head.header("webhook-id").unwrap_or_default();
        if attempt == 1 && id.bytes().last().is_some_and(|b| b % 2 == 0) {
            RawReply::ResetMidBody
        } else {
            RawReply::Ok
        }
    })
    .await;
    let setup = setup(&[("s", receiver.url("/s"), "")]).await;
    // WHEN 300 changes are committed
    setup.write(true).await;
    // THEN every event arrives and is accepted once, in order per row
    let expected = setup.expected().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let got = loop {
        let got = receiver.deliveries();
        let ids: HashSet<&str> = got
            .iter()
            .filter(|d| d.accepted)
            .map(|d| d.id.as_str())
            .collect();
        if expected.iter().all(|e| ids.contains(e.id.as_str())) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} arrived",
            ids.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = setup.finish().await;
    exactly_once("s", &expected, &got, &output);
    let resets = receiver
        .requests()
        .iter()
        .filter(|r| r.body.is_none())
        .count();
    let even = expected
        .iter()
        .filter(|e| e.id.bytes().last().is_some_and(|b| b % 2 == 0))
        .count();
    assert_eq!(resets, even);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_5xx_holds_no_wal_and_everything_arrives_after_it() {
    // GIVEN a receiver answering 500, 502, 503 and 504 to everything until the storm is over
    let storm = Arc::new(AtomicBool::new(true));
    let answers = Answers::default();
    let receiver = Receiver::with_policy(answers.policy({
        let storm = storm.clone();
        move |r, attempt| {
            if storm.load(Ordering::SeqCst) {
                let statuses = [500, 502, 503, 504];
                Reply::status(statuses[(row_id(r) as usize + attempt as usize) % 4])
            } else {
                Reply::ok()
            }
        }
    }))
    .await;
    let setup = setup(&[("s", receiver.url("/s"), "concurrency = 4")]).await;
    // WHEN 300 changes are committed during the storm
    let written = setup.write(true).await;
    // THEN the slot confirms them while the storm goes on: the events wait in the state file
    wait_confirmed(
        &setup.client,
        setup.db.name(),
        written,
        Duration::from_secs(60),
    )
    .await;
    let during = receiver.requests().len();
    assert!(during > 0);
    // WHEN the storm ends THEN every event arrives, accepted once, in order per row
    storm.store(false, Ordering::SeqCst);
    let expected = setup.expected().await;
    wait_all(
        || receiver.requests(),
        &["/s"],
        answers.accepted(),
        &expected,
        Duration::from_secs(90),
    )
    .await;
    let output = setup.finish().await;
    exactly_once(
        "s",
        &expected,
        &deliveries(&receiver.requests(), "/s", answers.accepted()),
        &output,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_go_back_in_batches_after_a_storm() {
    // GIVEN a subscriber with batch_size 20 and a receiver answering 503 to everything until
    // the storm is over
    let storm = Arc::new(AtomicBool::new(true));
    let answers = Answers::default();
    let receiver = Receiver::with_policy(answers.policy({
        let storm = storm.clone();
        move |_, _| {
            if storm.load(Ordering::SeqCst) {
                Reply::status(503)
            } else {
                Reply::ok()
            }
        }
    }))
    .await;
    let setup = setup(&[(
        "s",
        receiver.url("/s"),
        "batch_size = 20\nbatch_wait = \"10ms\"",
    )])
    .await;
    // WHEN 300 changes to 200 rows are committed during the storm, and held in the state file
    let written = setup.write(true).await;
    wait_confirmed(
        &setup.client,
        setup.db.name(),
        written,
        Duration::from_secs(60),
    )
    .await;
    // AND the storm ends
    storm.store(false, Ordering::SeqCst);
    let expected = setup.expected().await;
    wait_all(
        || receiver.requests(),
        &["/s"],
        answers.accepted(),
        &expected,
        Duration::from_secs(90),
    )
    .await;
    let output = setup.finish().await;
    // THEN every event arrives, accepted once, in order per row
    let requests = receiver.requests();
    exactly_once(
        "s",
        &expected,
        &deliveries(&requests, "/s", answers.accepted()),
        &output,
    );
    // AND the held events went back several to a request, not one each (how many share a
    // request depends on how their jittered retry times fall)
    let accepted = requests.iter().filter(|r| answers.accepted()(r)).count();
    assert!(
        accepted * 2 <= expected.len(),
        "{accepted} accepted requests carried {} events",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out() {
    // GIVEN a receiver that answers the first attempt of every fourth row's events with 429
    // and `Retry-After: 2`, and walhook whose own backoff would retry within 100 ms
    let answers = Answers::default();
    let receiver = Receiver::with_policy(answers.policy(|r, attempt| {
        if attempt == 1 && row_id(r) % 4 == 0 {
            Reply::status(429).header("retry-after", "2")
        } else {
            Reply::ok()
        }
    }))
    .await;
    let setup = setup(&[(
        "s",
        receiver.url("/s"),
        "retry = { initial = \"100ms\", max = \"5s\" }",
    )])
    .await;
    // WHEN 300 changes are committed
    setup.write(true).await;
    // THEN every event arrives, accepted once, in order per row
    let expected = setup.expected().await;
    wait_all(
        || receiver.requests(),
        &["/s"],
        answers.accepted(),
        &expected,
        Duration::from_secs(90),
    )
    .await;
    let output = setup.finish().await;
    let requests = receiver.requests();
    exactly_once(
        "s",
        &expected,
        &deliveries(&requests, "/s", answers.accepted()),
        &output,
    );
    // AND each event answered 429 was tried again only after the 2 s it was told to wait
    let mut limited = 0;
    for first in requests
        .iter()
        .filter(|r| r.attempt == 1 && row_id(r) % 4 == 0)
    {
        let id = first.header("webhook-id");
        let second = requests
            .iter()
            .find(|r| r.attempt == 2 && r.header("webhook-id") == id)
            .expect("a 429 was not retried");
        let gap = second.arrived - first.arrived;
        assert!(
            gap >= Duration::from_millis(1950),
            "{id:?} was retried {gap:?} after a 429 with Retry-After: 2"
        );
        limited += 1;
    }
    assert_eq!(limited, expected.iter().filter(|e| e.row % 4 == 0).count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_dead_letters_its_event_pauses_only_its_subscriber_until_resumed() {
    // GIVEN two subscribers; `gone` (one request at a time) answers 410 to its first request,
    // 200 after that
    let answers = Answers::default();
    let gone = Receiver::with_policy(answers.policy({
        let first = AtomicBool::new(true);
        move |_, _| {
            if first.swap(false, Ordering::SeqCst) {
                Reply::status(410)
            } else {
                Reply::ok()
            }
        }
    }))
    .await;
    let fine = Receiver::start().await;
    let setup = setup(&[
        ("gone", gone.url("/gone"), "concurrency = 1"),
        ("fine", fine.url("/fine"), ""),
    ])
    .await;
    // WHEN 200 rows are inserted
    let written = setup.write(false).await;
    let expected = setup.expected().await;
    // THEN `fine` gets all 200 events, and the slot confirms all of them: `gone`'s wait in
    // the state file
    let all = |_: &Recorded| true;
    wait_all(
        || fine.requests(),
        &["/fine"],
        all,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    wait_confirmed(
        &setup.client,
        setup.db.name(),
        written,
        Duration::from_secs(60),
    )
    .await;
    // AND `gone` was sent nothing after its 410
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let requests = gone.requests();
    assert_eq!(requests.len(), 1, "requests after the 410");
    let rejected = requests[0].header("webhook-id").unwrap().to_string();

    let list = dead_letters(&setup.config, "list").await;
    assert!(
        list.contains(&format!(
            "gone\t{rejected}\titem.changed\tattempts=1\tstatus=410"
        )),
        "{list}"
    );
    // AND `subscribers list` shows `gone` paused by the receiver, `fine` active
    let list = walhook_output(&setup.config, &["subscribers", "list"]).await;
    assert!(
        list.contains("gone  PAUSED since ")
            && list.contains(" by receiver: 410 Gone from 127.0.0.1")
            && list.contains("fine  ACTIVE"),
        "{list}"
    );

    // WHEN `gone` is resumed, walhook running on
    let resumed = walhook_output(&setup.config, &["subscribers", "resume", "gone"]).await;
    assert!(
        resumed.contains("gone resumed (it was paused since "),
        "{resumed}"
    );
    // THEN `gone` gets the other 199 events
    let others: Vec<Expected> = expected
        .iter()
        .filter(|e| e.id != rejected)
        .cloned()
        .collect();
    wait_all(
        || gone.requests(),
        &["/gone"],
        answers.accepted(),
        &others,
        Duration::from_secs(60),
    )
    .await;
    // WHEN the dead letter is replayed THEN it arrives too, with its id
    let replayed = dead_letters(&setup.config, "replay").await;
    assert!(replayed.contains("1 dead letter(s) put back"), "{replayed}");
    wait_all(
        || gone.requests(),
        &["/gone"],
        answers.accepted(),
        &expected,
        Duration::from_secs(30),
    )
    .await;
    let output = setup.finish().await;
    // AND each subscriber accepted each event once (the rows have one event each, so the
    // replayed one is in order too)
    exactly_once(
        "gone",
        &expected,
        &deliveries(&gone.requests(), "/gone", answers.accepted()),
        &output,
    );
    exactly_once(
        "fine",
        &expected,
        &deliveries(&fine.requests(), "/fine", all),
        &output,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_in_flight_when_the_receiver_goes_down_keeps_its_order() {
    // GIVEN a receiver that holds the first request for row 1 for 1.5 s and then drops the
    // connection, drops the first request for row 2 at once (so walhook sees the receiver as
    // down), and accepts everything else
    let answers = Answers::default();
    let first_of = |row: i64| {
        let seen = AtomicBool::new(false);
        move |r: &Recorded| row_id(r) == row && !seen.swap(true, Ordering::SeqCst)
    };
    let (row1_first, row2_first) = (first_of(1), first_of(2));
    let receiver = Receiver::with_policy(answers.policy(move |r, _| {
        if row1_first(r) {
            Reply::drop_connection().after(Duration::from_millis(1500))
        } else if row2_first(r) {
            Reply::drop_connection()
        } else {
            Reply::ok()
        }
    }))
    .await;
    let setup = setup(&[("s", receiver.url("/s"), "")]).await;
    // WHEN row 1 is inserted, and while its event is in flight row 2 is inserted (its event
    // fails at once), and then row 1 is updated
    let sql = &setup.client;
    sql.batch_execute("INSERT INTO items VALUES (1, 0, 'new')")
        .await
        .unwrap();
    receiver
        .wait_for(|r| r.len() == 1, Duration::from_secs(30))
        .await;
    sql.batch_execute("INSERT INTO items VALUES (2, 0, 'new')")
        .await
        .unwrap();
    receiver
        .wait_for(|r| r.len() == 2, Duration::from_secs(30))
        .await;
    sql.batch_execute("UPDATE items SET n = 1 WHERE id = 1")
        .await
        .unwrap();
    // THEN all three events are accepted, row 1's insert before its update
    let expected = setup.expected().await;
    wait_all(
        || receiver.requests(),
        &["/s"],
        answers.accepted(),
        &expected,
        Duration::from_secs(30),
    )
    .await;
    let output = setup.finish().await;
    exactly_once(
        "s",
        &expected,
        &deliveries(&receiver.requests(), "/s", answers.accepted()),
        &output,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_while_a_rows_event_fails_keeps_its_order() {
    // GIVEN a receiver that holds the first request for row 1 for 1.5 s and then answers 503,
    // and accepts everything else
    let answers = Answers::default();
    let first = AtomicBool::new(true);
    let receiver = Receiver::with_policy(answers.policy(move |r, _| {
        if row_id(r) == 1 && first.swap(false, Ordering::SeqCst) {
            Reply::status(503).after(Duration::from_millis(1500))
        } else {
            Reply::ok()
        }
    }))
    .await;
    let mut setup = setup(&[("s", receiver.url("/s"), "")]).await;
    // WHEN row 1 is inserted, then updated while its insert is in flight, and walhook is told
    // to stop (SIGTERM) before the 503 comes back
    let sql = &setup.client;
    sql.batch_execute("INSERT INTO items VALUES (1, 0, 'new')")
        .await
        .unwrap();
    receiver
        .wait_for(|r| r.len() == 1, Duration::from_secs(30))
        .await;
    sql.batch_execute("UPDATE items SET n = 1 WHERE id = 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first_output = setup.walhook.stop().await;
    // ... and started again
    setup.walhook = Process::run(&setup.config);
    // THEN both events are accepted, the insert before the update
    let expected = setup.expected().await;
    wait_all(
        || receiver.requests(),
        &["/s"],
        answers.accepted(),
        &expected,
        Duration::from_secs(30),
    )
    .await;
    let output = first_output + &setup.finish().await;
    exactly_once(
        "s",
        &expected,
        &deliveries(&receiver.requests(), "/s", answers.accepted()),
        &output,
    );
}

/// `walhook dead-letters <action>`'s stdout; asserts exit 0.
async fn dead_letters(config: &std::path::Path, action: &str) -> String {
    walhook_output(config, &["dead-letters", action]).await
}

/// `walhook <args>`'s output; asserts exit 0.
async fn walhook_output(config: &std::path::Path, args: &[&str]) -> String {
    let (code, output) = Process::spawn(walhook_command(config, args))
        .exit(Duration::from_secs(30))
        .await;
    assert_eq!(code, Some(0), "{output}");
    output
}
