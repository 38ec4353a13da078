//! Operations: the heartbeat keeps an idle slot moving, a Postgres restart is survived, and a
//! slot that is dropped or invalidated stops walhook with a message saying what to do.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::e2e::{current_lsn, shop, slot_lsn, source_section, state_dir, wait_streaming, Walhook};
use crate::support::receiver::{Receiver, Recorded};
use crate::support::{connect, Cluster, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_advances_the_slot_when_only_unrelated_tables_change() {
    // GIVEN walhook mapping `orders`, with a 2 s heartbeat
    let db = TestDb::new().await;
    let client = shop(&db).await;
    client
        .batch_execute("CREATE TABLE audit (id serial PRIMARY KEY, what text)")
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let dir = state_dir(&db);
    let config = format!(
        "{}heartbeat_interval = \"2s\"\n[subscribers.s]\nurl = \"{}\"\n[[events]]\ntype = \"o\"\ntable = \"public.orders\"\nsubscribers = [\"s\"]\n",
        source_section(&db),
        receiver.url("/")
    );
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;
    // WHEN only an unmapped table is written
    for n in 0..20 {
        client
            .execute("INSERT INTO audit (what) VALUES ($1)", &[&format!("w{n}")])
            .await
            .unwrap();
    }
    let written = current_lsn(&client).await;
    // THEN the slot's confirmed position passes that WAL within two heartbeat intervals
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while slot_lsn(&client, db.name()).await < written {
        assert!(
            tokio::time::Instant::now() < deadline,
            "confirmed_flush_lsn did not pass {written} within two heartbeats"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(receiver.requests().is_empty());
    walhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_stream_loses_nothing() {
    // GIVEN walhook streaming from a cluster of the test's own
    let cluster = Cluster::start("");
    let url = cluster.superuser_url("postgres");
    let client = connect(&url).await;
    client
        .batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text)")
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let dir = std::env::temp_dir().join(format!("walhook-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[source]\nurl = \"{url}\"\nslot = \"restart\"\npublication = \"restart\"\nstatus_interval = \"200ms\"\n\
         [subscribers.s]\nurl = \"{}\"\n[[events]]\ntype = \"o\"\ntable = \"public.orders\"\nsubscribers = [\"s\"]\n",
        receiver.url("/")
    );
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, "restart").await;
    for id in 1..=50i64 {
        client
            .execute("INSERT INTO orders VALUES ($1, 'before')", &[&id])
            .await
            .unwrap();
    }
    // WHEN Postgres restarts, and more is committed after
    drop(client);
    cluster.restart();
    let client = connect(&url).await;
    for id in 51..=100i64 {
        client
            .execute("INSERT INTO orders VALUES ($1, 'after')", &[&id])
            .await
            .unwrap();
    }
    // THEN every row's event arrives
    let rows = |r: &[Recorded]| {
        r.iter()
            .map(|x| x.json()["data"]["row"]["id"].as_i64().unwrap())
            .collect::<std::collections::BTreeSet<i64>>()
    };
    let got = receiver
        .wait_for(|r| rows(r).len() == 100, Duration::from_secs(60))
        .await;
    assert_eq!(rows(&got), (1..=100).collect());
    walhook.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts the real binary; returns the child.
fn spawn_walhook(config: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_walhook"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_exit(child: std::process::Child) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_dropped_under_walhook_stops_it_with_the_fix() {
    // GIVEN walhook (the binary) streaming
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let receiver = Receiver::start().await;
    let dir = state_dir(&db);
    let path = dir.join("walhook.toml");
    std::fs::write(
        &path,
        format!(
            "{}[subscribers.s]\nurl = \"{}\"\n[[events]]\ntype = \"o\"\ntable = \"public.orders\"\nsubscribers = [\"s\"]\n",
            source_section(&db),
            receiver.url("/")
        ),
    )
    .unwrap();
    let child = spawn_walhook(&path);
    wait_streaming(&client, db.name()).await;
    // WHEN its slot is dropped (its connection cut first, as Postgres requires)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        client
            .execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&db.name()],
            )
            .await
            .unwrap();
        if client
            .execute("SELECT pg_drop_replication_slot($1)", &[&db.name()])
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not drop the slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // THEN walhook exits 1 and says what happened and what to do
    let (code, stderr) = tokio::time::timeout(Duration::from_secs(60), wait_exit(child))
        .await
        .expect("walhook did not exit");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "replication slot `{}` no longer exists",
            db.name()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("walhook setup --apply"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_walhook_with_the_fix() {
    // GIVEN a cluster that keeps at most 1 MB of WAL for slots, and walhook's slot behind it
    let cluster =
        Cluster::start("max_slot_wal_keep_size = 1MB\nmin_wal_size = 32MB\nmax_wal_size = 64MB");
    let url = cluster.superuser_url("postgres");
    let client = connect(&url).await;
    client
        .batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY, status text); CREATE PUBLICATION lost FOR TABLE orders;")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('lost', 'pgoutput')")
        .await
        .unwrap();
    // WHEN far more WAL than that is written and checkpointed while nobody reads the slot
    for _ in 0..4 {
        client
            .batch_execute(
                "INSERT INTO orders SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status || 'y';",
            )
            .await
            .unwrap();
        client
            .batch_execute("SELECT pg_switch_wal(); CHECKPOINT;")
            .await
            .unwrap();
    }
    let status: Option<String> = client
        .query_one(
            "SELECT wal_status::text FROM pg_replication_slots WHERE slot_name = 'lost'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        status.as_deref(),
        Some("lost"),
        "the slot was not invalidated"
    );
    // THEN walhook refuses to run, naming the loss and the fix
    let dir = std::env::temp_dir().join(format!("walhook-lost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("walhook.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"{url}\"\nslot = \"lost\"\npublication = \"lost\"\n\
             [subscribers.s]\nurl = \"http://127.0.0.1:9/\"\n[[events]]\ntype = \"o\"\ntable = \"public.orders\"\nsubscribers = [\"s\"]\n"
        ),
    )
    .unwrap();
    let (code, stderr) =
        tokio::time::timeout(Duration::from_secs(60), wait_exit(spawn_walhook(&path)))
            .await
            .expect("walhook did not exit");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("was invalidated (wal_status = lost)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`walhook teardown`, then `walhook setup --apply`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
