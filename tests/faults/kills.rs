//! walhook SIGKILLed at random moments while a writer commits small and large transactions,
//! restarted each time: every committed change arrives, rows keep their order, and an event
//! comes again only after a kill, and only if the slot had not confirmed it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use walhook::model::Lsn;

use super::harness::{
    check, current_lsn, db_with_items, deliveries, fresh_dir, source_section, wait_all,
    wait_confirmed, wait_inactive, wait_streaming, write_config, Expected, Process, Rng,
};
use crate::support::receiver::Receiver;
use crate::support::{connect, TestDb};

/// How hard one run pushes.
#[derive(Debug, Clone, Copy)]
struct Plan {
    kills: usize,
    /// Each walhook lives this long (uniform, milliseconds) before its SIGKILL.
    life_ms: (u64, u64),
    /// Rows in a large transaction (uniform).
    large_rows: (u64, u64),
    /// Per mille of the writer's transactions that are large.
    large_per_mille: u64,
    /// The writer's pause after each transaction (uniform, milliseconds).
    pause_ms: (u64, u64),
}

impl Plan {
    /// The CI run: well under a minute.
    fn short() -> Plan {
        Plan {
            kills: 12,
            life_ms: (30, 1800),
            large_rows: (100, 1000),
            large_per_mille: 5,
            pause_ms: (4, 12),
        }
    }

    /// `WALHOOK_SOAK=1`: many more kills and larger transactions; `WALHOOK_SOAK_KILLS=<n>`
    /// sets the number of kills.
    fn soak() -> Plan {
        let kills = std::env::var("WALHOOK_SOAK_KILLS")
            .ok()
            .and_then(|k| k.parse().ok())
            .unwrap_or(100);
        Plan {
            kills,
            life_ms: (30, 5000),
            large_rows: (500, 5000),
            large_per_mille: 1,
            pause_ms: (4, 12),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing() {
    let plan = if std::env::var_os("WALHOOK_SOAK").is_some() {
        Plan::soak()
    } else {
        Plan::short()
    };
    kill_and_restart(plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak run (minutes): cargo test --test main -- --ignored sigkill_soak"]
async fn sigkill_soak() {
    kill_and_restart(Plan::soak()).await;
}

/// One walhook process's life: when it started and where the slot stood then.
struct Life {
    started: Instant,
    /// The slot's confirmed position when it started: what it may read again.
    slot_at_start: Option<Lsn>,
}

async fn kill_and_restart(plan: Plan) {
    // GIVEN walhook (the binary) streaming `items` to two subscribers, one sent one event per
    // request and one in batches, a receiver that accepts everything, and a writer committing
    // a mix of single-row inserts, single-row updates, small multi-statement transactions, and
    // large inserts and updates of hundreds to thousands of rows
    let mut rng = Rng::from_env("sigkill_at_random_moments", "WALHOOK_FAULT_SEED");
    let db = TestDb::new().await;
    let (client, oracle) = db_with_items(&db).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(db.name());
    let config = write_config(
        &dir,
        &format!(
            r#"{source}
            [subscribers.one]
            url = "{one}"
            retry = {{ initial = "100ms", max = "1s" }}
            [subscribers.batched]
            url = "{batched}"
            batch_size = 20
            batch_wait = "10ms"
            retry = {{ initial = "100ms", max = "1s" }}
            [[events]]
            type = "item.changed"
            table = "public.items"
            subscribers = ["one", "batched"]
            "#,
            source = source_section(&db.url(), db.name()),
            one = receiver.url("/one"),
            batched = receiver.url("/batched"),
        ),
    );
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    let mut lives = vec![Life {
        started: walhook.started,
        slot_at_start: None,
    }];
    let (stop_writer, stopped) = watch::channel(false);
    let writer = tokio::spawn(write(db.url(), Rng::new(rng.next()), plan, stopped));

    // WHEN walhook is SIGKILLed at random moments (some while it starts, some mid-stream) and
    // started again after each kill
    for _ in 0..plan.kills {
        tokio::time::sleep(Duration::from_millis(
            rng.range(plan.life_ms.0, plan.life_ms.1),
        ))
        .await;
        walhook.kill();
        let slot = wait_inactive(&client, db.name()).await;
        walhook = Process::run(&config);
        lives.push(Life {
            started: walhook.started,
            slot_at_start: slot,
        });
    }
    // ... and the writer stops once the last walhook has run for a moment
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_writer.send_replace(true);
    let written = writer.await.unwrap();
    let end = current_lsn(&client).await;

    // THEN the last walhook delivers every event the committed changes give, to both
    let expected = oracle.expected(&client).await;
    let accepted = |_: &crate::support::receiver::Recorded| true;
    wait_all(
        || receiver.requests(),
        &["/one", "/batched"],
        accepted,
        &expected,
        Duration::from_secs(120),
    )
    .await;
    // AND confirms all of it, and stops cleanly
    wait_confirmed(&client, db.name(), end, Duration::from_secs(30)).await;
    walhook.stop().await;
    oracle.drop(&client).await;

    // AND for each subscriber, every row's events were first delivered in commit order, and an
    // event delivered again was delivered again only by a later walhook that had to re-read it:
    // its transaction was past the slot's confirmed position when that walhook started
    let requests = receiver.requests();
    let by_id: std::collections::HashMap<&str, &Expected> =
        expected.iter().map(|e| (e.id.as_str(), e)).collect();
    let life_at = |at: Instant| lives.iter().rposition(|l| l.started <= at).unwrap();
    let mut redelivered = 0;
    let mut checked = 0;
    for path in ["/one", "/batched"] {
        let got = deliveries(&requests, path, accepted);
        let found = check(path, &expected, &got);
        checked += found.events;
        for (id, times) in &found.duplicates {
            let commit = by_id[id.as_str()].commit_lsn;
            for pair in times.windows(2) {
                let (before, again) = (life_at(pair[0]), life_at(pair[1]));
                assert!(
                    before < again,
                    "{path}: event {id} was delivered twice by one walhook (life {again})"
                );
                let slot = lives[again].slot_at_start;
                assert!(
                    slot.is_none_or(|slot| commit >= slot),
                    "{path}: event {id} (commit {commit}) came again from walhook {again}, \
                     though the slot had confirmed {slot:?} before it started"
                );
            }
            redelivered += times.len() - 1;
        }
    }
    let survived = lives.len() - 1;
    let positions: std::collections::BTreeSet<Lsn> =
        lives.iter().filter_map(|l| l.slot_at_start).collect();
    assert!(survived >= 10, "only {survived} kills");
    println!(
        "sigkill_at_random_moments: {survived} kills survived; {} transactions committed \
         ({} large); {} events expected per subscriber; {checked} events checked by id; \
         {redelivered} re-deliveries after kills; the slot had {} confirmed positions \
         more at restarts",
        written.transactions,
        written.large,
        expected.len(),
        positions.len().saturating_sub(1),
    );
    let ids: HashSet<&str> = expected.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), expected.len());
}

#[derive(Debug, Default)]
struct Written {
    transactions: usize,
    large: usize,
}

/// Commits transactions until told to stop.
async fn write(url: String, mut rng: Rng, plan: Plan, stop: watch::Receiver<bool>) -> Written {
    let client = connect(&url).await;
    let mut next: i64 = 1;
    let mut written = Written::default();
    while !*stop.borrow() {
        // Updates go to recent rows, so rows get several changes while walhook dies.
        let recent = |rng: &mut Rng, next: i64| {
            let low = (next - 100).max(1) as u64;
            rng.range(low, next as u64) as i64
        };
        if rng.range(0, 1000) < plan.large_per_mille {
            let n = rng.range(plan.large_rows.0, plan.large_rows.1) as i64;
            if next > n && rng.chance(40) {
                let from = rng.range(1, (next - n) as u64) as i64;
                client
                    .execute(
                        "UPDATE items SET n = n + 1 WHERE id BETWEEN $1 AND $2",
                        &[&from, &(from + n - 1)],
                    )
                    .await
                    .unwrap();
            } else {
                client
                    .execute(
                        "INSERT INTO items SELECT g, 0, 'bulk' FROM generate_series($1::bigint, $2::bigint) g",
                        &[&next, &(next + n - 1)],
                    )
                    .await
                    .unwrap();
                next += n;
            }
            written.large += 1;
        } else if next > 1 && rng.chance(30) {
            let id = recent(&mut rng, next);
            client
                .execute("UPDATE items SET n = n + 1 WHERE id = $1", &[&id])
                .await
                .unwrap();
        } else if next > 1 && rng.chance(15) {
            let other = recent(&mut rng, next);
            client
                .batch_execute(&format!(
                    "BEGIN; INSERT INTO items VALUES ({next}, 0, 'small'); \
                     UPDATE items SET n = n + 1 WHERE id = {other}; \
                     UPDATE items SET note = 'again' WHERE id = {next}; COMMIT;"
                ))
                .await
                .unwrap();
            next += 1;
        } else {
            client
                .execute("INSERT INTO items VALUES ($1, 0, 'one')", &[&next])
                .await
                .unwrap();
            next += 1;
        }
        written.transactions += 1;
        tokio::time::sleep(Duration::from_millis(
            rng.range(plan.pause_ms.0, plan.pause_ms.1),
        ))
        .await;
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_events_wait_in_the_retry_store_loses_nothing() {
    // GIVEN walhook (the binary) whose subscriber is down
    let db = TestDb::new().await;
    let (client, oracle) = db_with_items(&db).await;
    let receiver = Receiver::start().await;
    receiver.stop().await;
    let dir = fresh_dir(db.name());
    let config = write_config(
        &dir,
        &format!(
            r#"{source}
            [subscribers.s]
            url = "{url}"
            concurrency = 8
            retry = {{ initial = "100ms", max = "500ms" }}
            [[events]]
            type = "item.changed"
            table = "public.items"
            subscribers = ["s"]
            "#,
            source = source_section(&db.url(), db.name()),
            url = receiver.url("/s"),
        ),
    );
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    // WHEN 1,000 rows are inserted in 10 transactions and rows 1..=300 are then updated three
    // times, one row per transaction
    for t in 0..10i64 {
        client
            .execute(
                "INSERT INTO items SELECT g, 0, 'new' FROM generate_series($1::bigint, $1::bigint + 99) g",
                &[&(t * 100 + 1)],
            )
            .await
            .unwrap();
    }
    for round in 1..=3 {
        for id in 1..=300i64 {
            client
                .execute("UPDATE items SET n = $1 WHERE id = $2", &[&round, &id])
                .await
                .unwrap();
        }
    }
    let written = current_lsn(&client).await;
    // ... the slot confirms all of it while the subscriber is still down (so every event sits
    // in the retry store), and walhook is SIGKILLed
    wait_confirmed(&client, db.name(), written, Duration::from_secs(60)).await;
    assert!(receiver.requests().is_empty());
    walhook.kill();
    let expected = oracle.expected(&client).await;
    oracle.drop(&client).await;
    assert_eq!(expected.len(), 1900);

    // WHEN the subscriber is back and walhook starts again, and is SIGKILLed again once a
    // third of the events have arrived, and started again
    receiver.restart().await;
    let mut walhook = Process::run(&config);
    receiver
        .wait_for(|r| r.len() >= expected.len() / 3, Duration::from_secs(60))
        .await;
    walhook.kill();
    let killed = Instant::now();
    let walhook = Process::run(&config);

    // THEN every event arrives, each row's in commit order
    let all = |_: &crate::support::receiver::Recorded| true;
    wait_all(
        || receiver.requests(),
        &["/s"],
        all,
        &expected,
        Duration::from_secs(120),
    )
    .await;
    walhook.stop().await;
    let found = check("s", &expected, &deliveries(&receiver.requests(), "/s", all));
    // AND an event came twice only if it had been delivered just before the second kill, when
    // its removal from the store may not have been committed: a few at most, never a backlog
    for (id, times) in &found.duplicates {
        assert_eq!(times.len(), 2, "{id} arrived {} times", times.len());
        assert!(
            times[0] < killed && times[1] > killed,
            "{id} arrived twice without a kill in between"
        );
    }
    assert!(
        found.duplicates.len() <= 32,
        "{} events were sent again after the kill",
        found.duplicates.len()
    );
    println!(
        "sigkill_while_events_wait_in_the_retry_store: {} events checked by id, {} sent again \
         after the kill mid-drain",
        found.events,
        found.duplicates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_start_up_still_stops_cleanly() {
    // GIVEN walhook starting: its endpoints are up, the database is still being prepared
    let db = TestDb::new().await;
    let (client, oracle) = db_with_items(&db).await;
    oracle.drop(&client).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = fresh_dir(db.name());
    let config = write_config(
        &dir,
        &format!(
            "{}[api]\nlisten = \"127.0.0.1:{port}\"\n[subscribers.s]\nurl = \"http://127.0.0.1:9/\"\n\
             [[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\nsubscribers = [\"s\"]\n",
            source_section(&db.url(), db.name())
        ),
    );
    let walhook = Process::run(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !walhook.output().contains("serving /metrics") {
        assert!(Instant::now() < deadline, "{}", walhook.output());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // WHEN it gets SIGTERM THEN it exits 0, as a SIGTERM at any later moment makes it do
    walhook.stop().await;
}
