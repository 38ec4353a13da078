//! `subscribers.<name>.rate_limit`: the walhook binary against a real Postgres and a real
//! receiver. The receiver never sees more than the limit (plus one bucket of burst), nothing is
//! lost, order per key holds, and the slot advances while the backlog drains at the limit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::faults::harness::{
    confirmed, current_lsn, fresh_dir, source_section, wait_streaming, write_config, Process, ITEMS,
};
use crate::support::receiver::{Receiver, Recorded};
use crate::support::TestDb;

/// Rows, and changes per row (an insert, then updates setting `n` to 1, 2, ...).
const ROWS: i64 = 200;
const CHANGES: i32 = 10;
const LIMIT: usize = 20;

/// Every event in `requests` (a batch body holds several), in arrival order, as (row id, n).
fn events(requests: &[Recorded]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for request in requests {
        let body = request.json();
        let list = match body["events"].as_array() {
            Some(list) => list.clone(),
            None => vec![body],
        };
        for event in list {
            let row = &event["data"]["row"];
            out.push((row["id"].as_i64().unwrap(), row["n"].as_i64().unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_backlog_drains_at_the_limit_in_order_while_the_slot_advances() {
    // GIVEN walhook (the binary) with a limit of 20 requests a second, batches of 10, and room
    // for only 100 unsettled events in memory
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&format!("rate-{}", db.name()));
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "{}max_unsettled = 100\n[state]\npath = \"state.db\"\n[api]\nlisten = \"{listen}\"\n\
         [subscribers.slow]\nurl = \"{}\"\nbatch_size = 10\nrate_limit = \"{LIMIT}/s\"\n\
         [[events]]\ntype = \"item.changed\"\ntable = \"public.items\"\nsubscribers = [\"slow\"]\n",
        source_section(&db.url(), db.name()),
        receiver.url("/hooks")
    );
    let mut walhook = Process::run(&write_config(&dir, &config));
    wait_streaming(&client, db.name(), &mut walhook).await;

    // WHEN a backlog of 2,000 events (200 rows, 10 changes each) is committed at once
    let total = (ROWS * i64::from(CHANGES)) as usize;
    client
        .execute(
            "INSERT INTO items (id, n) SELECT g, 0 FROM generate_series(1, $1::bigint) g",
            &[&ROWS],
        )
        .await
        .unwrap();
    for n in 1..CHANGES {
        client
            .execute("UPDATE items SET n = $1", &[&n])
            .await
            .unwrap();
    }
    let written = current_lsn(&client).await;
    let started = Instant::now();

    // THEN the slot's confirmed position passes the backlog while it is still draining: what
    // the limit holds back moved to the state store
    let deadline = started + Duration::from_secs(30);
    loop {
        if confirmed(&client, db.name())
            .await
            .is_some_and(|at| at >= written)
        {
            break;
        }
        walhook.assert_running("the slot advanced");
        assert!(Instant::now() < deadline, "the slot never passed {written}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrived_by_then = events(&receiver.requests()).len();
    assert!(
        arrived_by_then < total / 2,
        "{arrived_by_then} of {total} events had arrived when the slot passed the backlog: it did not advance while draining"
    );

    // and every event arrives
    let requests = receiver
        .wait_for(
            |r| events(r).iter().collect::<BTreeSet<_>>().len() == total,
            Duration::from_secs(90),
        )
        .await;
    let took = started.elapsed();

    // and the metrics show the limit and the time requests waited for it
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{subscriber=\"slow\"}} ");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"));
        line[prefix.len()..].parse().unwrap()
    };
    assert_eq!(value("walhook_rate_limit_per_second"), LIMIT as f64);
    assert!(value("walhook_rate_limit_wait_seconds_count") >= 50.0);
    // About 180 requests waited about 50 ms each.
    assert!(value("walhook_rate_limit_wait_seconds_sum") >= 3.0);
    walhook.stop().await;

    // and in no one-second window did the receiver see more than the limit plus one bucket of
    // burst (and two for the jitter between sending and arrival)
    let times: Vec<Instant> = requests.iter().map(|r| r.arrived).collect();
    let mut worst = 0;
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|&&t| t.saturating_duration_since(*start) < Duration::from_secs(1))
            .count();
        worst = worst.max(in_window);
    }
    assert!(
        worst <= 2 * LIMIT + 2,
        "{worst} requests arrived within one second; the limit is {LIMIT}/s"
    );
    // 200 requests at 20 a second after a burst of 20 take at least 9 s
    let least =
        Duration::from_secs(((times.len() - LIMIT) / LIMIT) as u64) - Duration::from_millis(500);
    assert!(took >= least, "{} requests in {took:?}", times.len());
    assert!(
        times.len() >= total / 10,
        "{} requests for {total} events in batches of 10",
        times.len()
    );

    // and each row's changes arrived in commit order
    let mut per_row: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (id, n) in events(&requests) {
        let seen = per_row.entry(id).or_default();
        // A redelivery repeats the last one; a step back is an order violation.
        if seen.last() != Some(&n) {
            seen.push(n);
        }
    }
    let want: Vec<i64> = (0..i64::from(CHANGES)).collect();
    assert_eq!(per_row.len(), ROWS as usize);
    for (id, seen) in per_row {
        assert_eq!(seen, want, "row {id}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
