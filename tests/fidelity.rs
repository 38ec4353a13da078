//! Fidelity: an app that applies walhook's events by the rules of the reference sync receiver
//! (`receivers/python/`) ends with exactly the source's rows, whatever happens in between:
//! rows that exist before walhook starts (initial backfill), a random workload meanwhile
//! (inserts, updates with and without the TOASTed column, primary-key changes, deletes,
//! multi-row transactions, truncates), walhook killed with SIGKILL several times, a subscriber
//! failing now and then, batching on. Compared as `to_jsonb` of every row, for both replica
//! identities.
//!
//! Seeded: `WALHOOK_FIDELITY_SEEDS=1-50` (or `3,7`) runs those seeds; the long run is
//! `scripts/fidelity.sh 50`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::faults::harness::{
    fresh_dir, source_section, wait_inactive, wait_streaming, write_config, Process,
};
use crate::support::python::SyncReceiver;
use crate::support::{Server, TestDb};

mod proxy;
mod workload;

use workload::{Workload, TABLES};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The seeds to run: `WALHOOK_FIDELITY_SEEDS` (`a-b` or `a,b,c`), else `default`.
fn seeds(default: &[u64]) -> Vec<u64> {
    let Ok(text) = std::env::var("WALHOOK_FIDELITY_SEEDS") else {
        return default.to_vec();
    };
    match text.split_once('-') {
        Some((a, b)) => (a.trim().parse().unwrap()..=b.trim().parse().unwrap()).collect(),
        None => text.split(',').map(|s| s.trim().parse().unwrap()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_converges_under_the_default_replica_identity() {
    for seed in seeds(&[1, 3]) {
        converge(seed, "DEFAULT").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_converges_under_replica_identity_full() {
    for seed in seeds(&[2, 4]) {
        converge(seed, "FULL").await;
    }
}

async fn converge(seed: u64, identity: &str) {
    let started = Instant::now();
    let mut work = Workload::new(seed);
    // GIVEN a source with rows and a replica with the same (empty) tables
    let source = TestDb::new().await;
    let replica = TestDb::new().await;
    let client = source.client().await;
    client.batch_execute(TABLES).await.unwrap();
    client
        .batch_execute(&format!(
            "ALTER TABLE items ALTER body SET STORAGE EXTERNAL;
             ALTER TABLE items REPLICA IDENTITY {identity};
             ALTER TABLE lines REPLICA IDENTITY {identity};"
        ))
        .await
        .unwrap();
    let items = work.rng().range(1500, 2500) as usize;
    let orders = work.rng().range(50, 200) as usize;
    for chunk in work.initial(items, orders).chunks(200) {
        client.batch_execute(&chunk.join("; ")).await.unwrap();
    }
    replica.client().await.batch_execute(TABLES).await.unwrap();

    // AND the reference receiver applying to the replica, behind a proxy that fails 10% of
    // the requests, and walhook with an initial backfill, batching, several requests at once
    let server = Server::get();
    let receiver = SyncReceiver::start(&server.superuser_url(replica.name()), SECRET);
    let proxy = proxy::start(format!("http://127.0.0.1:{}/", receiver.port), seed, 10).await;
    let batch_size = work.rng().range(1, 30);
    let concurrency = work.rng().range(1, 9);
    let dir = fresh_dir(&format!("fidelity-{}", source.name()));
    let config = format!(
        r#"{source}
        [subscribers.replica]
        url = "http://{proxy}/hooks"
        secret = "{SECRET}"
        batch_size = {batch_size}
        batch_wait = "5ms"
        concurrency = {concurrency}
        initial_backfill = true
        retry = {{ initial = "20ms", max = "300ms", give_up_after = "1h" }}
        [[events]]
        type = "item.changed"
        table = "public.items"
        operations = ["insert", "update", "delete", "truncate"]
        subscribers = ["replica"]
        [[events]]
        type = "line.changed"
        table = "public.lines"
        operations = ["insert", "update", "delete", "truncate"]
        subscribers = ["replica"]
        "#,
        source = source_section(&source.url(), source.name()),
    );
    let config = write_config(&dir, &config);
    let mut walhook = Process::run(&config);
    wait_streaming(&client, source.name(), &mut walhook).await;

    // WHEN a random workload runs, with walhook killed three times along the way
    let transactions = work.rng().range(400, 700);
    let kills: Vec<u64> = (0..3).map(|_| work.rng().range(0, transactions)).collect();
    let truncate_lines_at = work.rng().range(0, transactions);
    let truncate_items_at = work
        .rng()
        .chance(30)
        .then(|| work.rng().range(transactions / 2, transactions));
    let mut outputs = Vec::new();
    for n in 0..transactions {
        if kills.contains(&n) {
            walhook.kill();
            outputs.push(walhook.output());
            tokio::time::sleep(Duration::from_millis(work.rng().range(0, 300))).await;
            walhook = Process::run(&config);
        }
        let sql = if n == truncate_lines_at {
            work.truncate_lines()
        } else if Some(n) == truncate_items_at {
            work.truncate_items()
        } else {
            work.transaction()
        };
        client.batch_execute(&sql).await.unwrap();
        tokio::time::sleep(Duration::from_millis(work.rng().range(0, 5))).await;
    }

    // THEN the replica comes to hold exactly the source's rows
    let deadline = Instant::now() + Duration::from_secs(120);
    let replica_client = replica.client().await;
    loop {
        let wrong = [
            compare(&client, &replica_client, "items", "id::text").await,
            compare(&client, &replica_client, "lines", "order_id || '/' || n").await,
        ]
        .concat();
        if wrong.is_empty() {
            break;
        }
        walhook.assert_running("the replica converged");
        if Instant::now() > deadline {
            outputs.push(walhook.output());
            // Everything, for the post-mortem: each walhook process's output and the
            // receiver's log (one line per request) stay in the test's directory.
            for (n, output) in outputs.iter().enumerate() {
                std::fs::write(dir.join(format!("walhook-{n}.log")), output).unwrap();
            }
            std::fs::write(dir.join("receiver.log"), receiver.log()).unwrap();
            println!("the logs of seed {seed} are in {}", dir.display());
            let log = receiver.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "seed {seed} ({identity}): the replica differs from the source after \
                 {transactions} transactions: {wrong:#?}\nreceiver's last lines: {tail:#?}\n\
                 walhook's last output:\n{}",
                outputs.last().map(|o| tail_of(o, 60)).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    walhook.stop().await;
    // The test cluster has room for 100 slots: a long run of seeds frees each one it is done
    // with.
    wait_inactive(&client, source.name()).await;
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&source.name()])
        .await
        .unwrap();
    println!(
        "fidelity seed {seed} ({identity}): {items} rows before, {transactions} transactions, \
         batch_size {batch_size}, concurrency {concurrency}, 3 kills: converged in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// `to_jsonb` of every row of `table` by key in both databases; the differences (at most 5).
async fn compare(
    source: &tokio_postgres::Client,
    replica: &tokio_postgres::Client,
    table: &str,
    key: &str,
) -> Vec<String> {
    let sql = format!(
        "SELECT coalesce(jsonb_object_agg({key}, to_jsonb(t)), '{{}}')::text FROM {table} t"
    );
    let rows = |text: String| -> BTreeMap<String, Value> { serde_json::from_str(&text).unwrap() };
    let want = rows(source.query_one(&sql, &[]).await.unwrap().get(0));
    let got = rows(replica.query_one(&sql, &[]).await.unwrap().get(0));
    let keys: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let text = match (want.get(k), got.get(k)) {
                (Some(w), Some(g)) if w == g => return None,
                (Some(w), Some(g)) => format!("{table} {k}: replica {g} source {w}"),
                (Some(_), None) => format!("{table} {k}: missing in the replica"),
                (None, Some(_)) => format!("{table} {k}: in the replica only"),
                (None, None) => return None,
            };
            Some(text.chars().take(300).collect())
        })
        .take(5)
        .collect()
}

fn tail_of(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
