//! One very large transaction: walhook reads it, delivers every row's event, and its peak
//! resident memory (VmHWM of the process) stays within DESIGN.md's target of 64 MiB.

use std::time::{Duration, Instant};

use super::harness::{fresh_dir, source_section, wait_streaming, write_config, Process, ITEMS};
use super::raw_http::{RawReply, RawServer};
use crate::support::TestDb;

/// DESIGN.md: "peak RSS ≤ 64 MiB while delivering one 1,000,000-row transaction".
const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow in a debug build (minutes): cargo test --test main -- --ignored one_million"]
async fn one_million_row_transaction_within_the_memory_target() {
    one_large_transaction(1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_transaction_within_the_memory_target() {
    one_large_transaction(100_000).await;
}

async fn one_large_transaction(rows: i64) {
    // GIVEN walhook (the binary) streaming `items` to a receiver that accepts everything, in
    // batches of 100
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let receiver = RawServer::lean(|_, _| RawReply::Ok).await;
    let dir = fresh_dir(db.name());
    let config = write_config(
        &dir,
        &format!(
            r#"{source}
            [subscribers.s]
            url = "{url}"
            batch_size = 100
            [[events]]
            type = "item.created"
            table = "public.items"
            subscribers = ["s"]
            "#,
            source = source_section(&db.url(), db.name()),
            url = receiver.url("/s"),
        ),
    );
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    let baseline = walhook.peak_rss_kib().unwrap();

    // WHEN one transaction inserts `rows` rows
    let started = Instant::now();
    client
        .execute(
            "INSERT INTO items SELECT g, 0, 'a large transaction' FROM generate_series(1, $1::bigint) g",
            &[&rows],
        )
        .await
        .unwrap();

    // THEN every row's event arrives, with the ids of its place in the transaction
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut seen = vec![false; rows as usize];
    let mut distinct = 0;
    let mut read = 0;
    let mut commit = None;
    while distinct < rows {
        let (deliveries, now) = receiver.deliveries_after(read);
        for d in &deliveries {
            let (prefix, index) = d.id.rsplit_once('_').unwrap();
            let index: i64 = index.parse().unwrap();
            assert_eq!(*commit.get_or_insert_with(|| prefix.to_string()), prefix);
            assert_eq!(d.row, index + 1, "{}", d.id);
            let slot = &mut seen[index as usize];
            if !*slot {
                *slot = true;
                distinct += 1;
            }
        }
        read = now;
        walhook.assert_running("it delivered the large transaction");
        assert!(
            Instant::now() < deadline,
            "{distinct} of {rows} events arrived in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = started.elapsed();
    // AND walhook's peak memory stayed within the target
    let peak = walhook.peak_rss_kib().unwrap();
    walhook.stop().await;
    println!(
        "one large transaction: {rows} rows delivered in {took:?} ({} requests); walhook's peak \
         RSS {} KiB ({:.1} MiB; {} KiB when it started streaming); target {} MiB",
        receiver.len(),
        peak,
        peak as f64 / 1024.0,
        baseline,
        PEAK_RSS_LIMIT_KIB / 1024,
    );
    assert!(
        peak <= PEAK_RSS_LIMIT_KIB,
        "walhook's peak RSS was {peak} KiB, above the {PEAK_RSS_LIMIT_KIB} KiB target"
    );
}
