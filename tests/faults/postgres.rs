//! Postgres faults: the server stopped for seconds (cleanly, or as a crash) and started again,
//! and walhook's replication connection killed with `pg_terminate_backend`. The same walhook
//! process rides them out: it reconnects, loses nothing and sends nothing twice.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::harness::{
    check, current_lsn, fresh_dir, items_with_oracle, only_redeliveries, source_section, wait_all,
    wait_confirmed, wait_streaming, write_config, Process, Rng,
};
use crate::support::receiver::{Receiver, Recorded};
use crate::support::{connect, Cluster, TestDb};

fn config(dir: &std::path::Path, url: &str, name: &str, receiver: &Receiver) -> PathBuf {
    write_config(
        dir,
        &format!(
            r#"{source}
            [subscribers.s]
            url = "{url}"
            retry = {{ initial = "100ms", max = "500ms" }}
            [[events]]
            type = "item.changed"
            table = "public.items"
            subscribers = ["s"]
            "#,
            source = source_section(url, name),
            url = receiver.url("/s"),
        ),
    )
}

/// Inserts rows `ids`, one per transaction, and updates each even one right after.
async fn write_rows(client: &tokio_postgres::Client, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        client
            .execute("INSERT INTO items VALUES ($1, 0, 'new')", &[&id])
            .await
            .unwrap();
        if id % 2 == 0 {
            client
                .execute("UPDATE items SET n = 1 WHERE id = $1", &[&id])
                .await
                .unwrap();
        }
    }
}

/// Postgres stopped for 3 s while walhook streams (cleanly, or as a crash when `crash`), then
/// started again: every event arrives once, in order per row.
async fn postgres_down_for_seconds(crash: bool) {
    // GIVEN walhook (the binary) streaming from a cluster of the test's own
    let cluster = Cluster::start("");
    let url = cluster.superuser_url("postgres");
    let client = connect(&url).await;
    let oracle = items_with_oracle(&client, "down").await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&format!("pg-down-{}-{crash}", std::process::id()));
    let config = config(&dir, &url, "down", &receiver);
    let mut walhook = Process::run(&config);
    wait_streaming(&client, "down", &mut walhook).await;
    write_rows(&client, 1..=150).await;

    // WHEN Postgres stops while walhook is still delivering, stays down for 3 s, and starts
    // again; then more is committed
    drop(client);
    if crash {
        cluster.crash();
    } else {
        cluster.stop();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    walhook.assert_running("Postgres came back");
    cluster.start_again();
    let client = connect(&url).await;
    write_rows(&client, 151..=300).await;

    // THEN the same walhook delivers every event, each once, in order per row
    let expected = oracle.expected(&client).await;
    assert_eq!(expected.len(), 450);
    let all = |_: &Recorded| true;
    wait_all(
        || receiver.requests(),
        &["/s"],
        all,
        &expected,
        Duration::from_secs(90),
    )
    .await;
    // AND confirms all of it: nothing stays unsettled after the reconnect
    let end = current_lsn(&client).await;
    wait_confirmed(&client, "down", end, Duration::from_secs(30)).await;
    let output = walhook.stop().await;
    oracle.drop(&client).await;
    let deliveries = super::harness::deliveries(&receiver.requests(), "/s", all);
    let found = check("s", &expected, &deliveries);
    // AND nothing was sent twice but after a failed attempt: the reconnect re-read nothing
    // that had been handed over already
    only_redeliveries("s", &found, &output);
    // AND it said it lost the connection and reconnected
    assert!(
        output.contains("replication connection lost; reconnecting"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_again_loses_nothing() {
    postgres_down_for_seconds(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_and_recovered_loses_nothing() {
    postgres_down_for_seconds(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_connection_killed_by_pg_terminate_backend_loses_nothing() {
    // GIVEN walhook (the binary) streaming, and a writer committing single-row inserts and
    // updates
    let mut rng = Rng::from_env("pg_terminate_backend", "WALHOOK_FAULT_SEED");
    let db = TestDb::new().await;
    let client = db.client().await;
    let oracle = items_with_oracle(&client, db.name()).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(db.name());
    let config = config(&dir, &db.url(), db.name(), &receiver);
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    let (stop, stopped) = watch::channel(false);
    let writer = tokio::spawn({
        let url = db.url();
        async move {
            let client = connect(&url).await;
            let mut next = 1i64;
            while !*stopped.borrow() {
                write_rows(&client, next..=next + 9).await;
                next += 10;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // WHEN its walsender is terminated five times, at random moments
    let mut kills = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.range(300, 1500))).await;
        wait_streaming(&client, db.name(), &mut walhook).await;
        let killed: Option<bool> = client
            .query_one(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1",
                &[&db.name()],
            )
            .await
            .unwrap()
            .get(0);
        if killed == Some(true) {
            kills += 1;
        }
    }
    stop.send_replace(true);
    writer.await.unwrap();
    assert_eq!(kills, 5);

    // THEN the same walhook delivers every event once, in order per row
    let expected = oracle.expected(&client).await;
    let all = |_: &Recorded| true;
    wait_all(
        || receiver.requests(),
        &["/s"],
        all,
        &expected,
        Duration::from_secs(90),
    )
    .await;
    // AND confirms all of it: nothing stays unsettled after the reconnects
    let end = current_lsn(&client).await;
    wait_confirmed(&client, db.name(), end, Duration::from_secs(30)).await;
    let output = walhook.stop().await;
    oracle.drop(&client).await;
    let deliveries = super::harness::deliveries(&receiver.requests(), "/s", all);
    let found = check("s", &expected, &deliveries);
    // AND nothing was sent twice but after a failed attempt: the reconnect re-read nothing
    // that had been handed over already
    only_redeliveries("s", &found, &output);
    assert_eq!(
        output
            .matches("replication connection lost; reconnecting")
            .count(),
        5,
        "{output}"
    );
    println!(
        "pg_terminate_backend: {kills} connections killed, {} events checked by id",
        found.events
    );
}
