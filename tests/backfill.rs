//! Backfills against a real Postgres: rows that already exist reach the receiver as `read`
//! events, merged with the live stream so that replaying what the receiver got gives exactly
//! the table's final contents; a crash mid-backfill resumes; `--where` and a missing primary
//! key. What a backfill says it waits for: `waiting`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use walhook::state::{Backfill, BackfillStatus, SqliteStore, Store};

use crate::e2e::{source_section, state_dir, wait_streaming, Walhook};
use crate::support::json::{differences, same};
use crate::support::receiver::{Receiver, Recorded};
use crate::support::TestDb;

mod waiting;

/// A state directory with nothing left in it from an earlier run.
pub(crate) fn fresh_dir(db: &TestDb) -> PathBuf {
    let dir = state_dir(db);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `rows` rows of varied types (numeric, timestamptz, arrays, NULLs) in `public.items`, vacuumed
/// so `pg_class.reltuples` is exact.
async fn items(client: &tokio_postgres::Client, rows: i64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text, \
                 amount numeric(12,2), at timestamptz, tags int[]);
             INSERT INTO items SELECT g, g % 7, CASE WHEN g % 5 = 0 THEN NULL ELSE 'row ' || g END, \
                 g * 1.25, timestamptz '2026-01-01 00:00:00+00' + g * interval '1.5 seconds', \
                 ARRAY[g, g + 1] FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
    client.batch_execute("VACUUM ANALYZE items").await.unwrap();
}

/// A config: subscriber `app` (batches of 100) gets every change of `public.items`.
fn config(db: &TestDb, receiver: &Receiver, extra: &str) -> String {
    format!(
        r#"{source}
        [subscribers.app]
        url = "{url}"
        batch_size = 100
        batch_wait = "5ms"
        {extra}
        [[events]]
        type = "item.changed"
        table = "public.items"
        operations = ["insert", "update", "delete"]
        subscribers = ["app"]
        "#,
        source = source_section(db),
        url = receiver.url("/hooks"),
    )
}

pub(crate) fn write_config(dir: &Path, config: &str) -> PathBuf {
    let path = dir.join("walhook.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `walhook --config <config> <args>` to its end; gives exit code, stdout and stderr.
pub(crate) async fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run walhook");
    (
        output.status.code().expect("walhook exited"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Every event a request carried (a batch body or a single event).
pub(crate) fn events_of(request: &Recorded) -> Vec<Value> {
    let mut body = request.json();
    match body.get_mut("events") {
        Some(Value::Array(events)) => std::mem::take(events),
        _ => vec![body],
    }
}

/// What the receiver makes of the events in arrival order: per key the last event wins, a
/// delete removes the row.
#[derive(Default)]
struct Replay {
    seen: usize,
    rows: BTreeMap<i64, Value>,
    /// Read events: (id, row id).
    reads: Vec<(String, i64)>,
}

impl Replay {
    fn catch_up(&mut self, receiver: &Receiver) {
        let requests = receiver.requests();
        for request in &requests[self.seen..] {
            for event in events_of(request) {
                let data = &event["data"];
                let image = if data["row"].is_null() {
                    &data["old"]
                } else {
                    &data["row"]
                };
                let id = image["id"].as_i64().expect("an event with an id");
                match data["operation"].as_str().unwrap() {
                    "delete" => {
                        self.rows.remove(&id);
                    }
                    "read" => {
                        self.reads
                            .push((event["id"].as_str().unwrap().to_string(), id));
                        self.rows.insert(id, data["row"].clone());
                    }
                    _ => {
                        self.rows.insert(id, data["row"].clone());
                    }
                }
            }
        }
        self.seen = requests.len();
    }

    /// The rows that differ from `table` (at most 10, for the message).
    fn differences(&self, table: &BTreeMap<i64, Value>) -> Vec<String> {
        let ids: std::collections::BTreeSet<&i64> = self.rows.keys().chain(table.keys()).collect();
        ids.into_iter()
            .filter_map(|id| match (self.rows.get(id), table.get(id)) {
                (Some(got), Some(want)) if same(got, want) => None,
                (Some(got), Some(want)) => Some(format!("row {id}: {:?}", differences(got, want))),
                (Some(_), None) => Some(format!("row {id}: received but not in the table")),
                (None, _) => Some(format!("row {id}: in the table but not received")),
            })
            .take(10)
            .collect()
    }
}

/// `SELECT to_jsonb(t)` of every row, the reference for what a receiver should hold.
async fn table_rows(client: &tokio_postgres::Client, where_sql: &str) -> BTreeMap<i64, Value> {
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    client
        .query(
            &format!("SELECT id, to_jsonb(t)::text FROM items t WHERE {where_sql}"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let json: String = r.get(1);
            (r.get(0), serde_json::from_str(&json).unwrap())
        })
        .collect()
}

/// Waits until replaying what `receiver` got gives exactly `table`; fails with the rows that
/// differ.
async fn wait_replayed(replay: &mut Replay, receiver: &Receiver, table: &BTreeMap<i64, Value>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        replay.catch_up(receiver);
        let wrong = replay.differences(table);
        if wrong.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receiver's copy differs from the table ({} rows received, {} in the table): {wrong:#?}",
            replay.rows.len(),
            table.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The id a read event of row `id` of backfill `backfill` must have.
fn read_id(backfill: i64, id: i64) -> String {
    format!(
        "bf_{backfill}_{:016x}",
        walhook::mapping::fnv1a(format!("[{id}]").as_bytes())
    )
}

/// Updates (and with `deletes`, deletes) random rows of `1..=rows`, single-row and three-row
/// transactions, until stopped; gives how many transactions it committed.
fn start_writer(
    client: tokio_postgres::Client,
    rows: i64,
    deletes: bool,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut done = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            let id = (next() % rows as u64) as i64 + 1;
            let sql = match next() % 10 {
                0..=5 => format!(
                    "UPDATE items SET v = v + 1, note = 'written ' || v, at = now() WHERE id = {id}"
                ),
                6 | 7 if deletes => format!("DELETE FROM items WHERE id = {id}"),
                _ => format!(
                    "BEGIN; UPDATE items SET amount = amount + 1 WHERE id IN ({id}, {}, {}); COMMIT",
                    (id + 1).min(rows),
                    (id * 7 % rows) + 1
                ),
            };
            client.batch_execute(&sql).await.unwrap();
            done += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        done
    });
    (stop, task)
}

pub(crate) fn state_file(dir: &Path) -> PathBuf {
    dir.join("walhook-state.db")
}

pub(crate) async fn backfill_in(dir: &Path, id: i64) -> Option<Backfill> {
    let store = SqliteStore::open(state_file(dir)).unwrap();
    store.backfill(id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_under_concurrent_updates_and_deletes_leaves_the_receiver_exact() {
    // GIVEN 100,000 rows, walhook streaming them to a receiver, and a writer updating and
    // deleting random rows
    const ROWS: i64 = 100_000;
    let db = TestDb::new().await;
    let client = db.client().await;
    items(&client, ROWS).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&db);
    let config = config(&db, &receiver, "");
    let config_file = write_config(&dir, &config);
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;
    let (stop_writer, writer) = start_writer(db.client().await, ROWS, true);

    // WHEN `walhook backfill` runs to its end while the writer keeps writing
    let (code, stdout, stderr) = cli(&config_file, &["backfill", "--table", "public.items"]).await;
    stop_writer.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();

    // THEN it recorded backfill 1, followed it with plain progress lines, and ended done
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        lines[0],
        "backfill 1 recorded: public.items for app (about 100000 rows)"
    );
    assert!(
        lines[1].starts_with("backfill 1 done: ")
            && lines[1].contains(" rows of public.items sent in "),
        "{stdout}"
    );
    assert!(!stderr.is_empty());
    for line in stderr.lines() {
        assert!(line.starts_with("backfill 1 public.items: "), "{stderr}");
    }
    let backfill = backfill_in(&dir, 1).await.unwrap();
    assert_eq!(backfill.status, BackfillStatus::Done);
    assert!(
        writes > 100,
        "the writer wrote during the backfill: {writes}"
    );
    // AND replaying what the receiver got gives exactly the table's final contents
    let table = table_rows(&client, "true").await;
    let mut replay = Replay::default();
    wait_replayed(&mut replay, &receiver, &table).await;
    // AND every read event has the id of its key, at most once per key
    let mut read_keys = HashSet::new();
    for (id, row) in &replay.reads {
        assert_eq!(*id, read_id(1, *row));
        assert!(read_keys.insert(*row), "row {row} was read twice");
    }
    // (rows the stream changed between a chunk's watermarks were read but not sent)
    assert!(!read_keys.is_empty() && read_keys.len() as u64 <= backfill.rows_done);
    walhook.stop().await;
}

/// `walhook run` as a child process, its logs in `dir/run-<n>.log`.
fn spawn_run(config: &Path, dir: &Path, n: u32) -> Child {
    let log = std::fs::File::create(dir.join(format!("run-{n}.log"))).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_walhook"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "walhook=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start walhook run")
}

async fn wait_slot_released(client: &tokio_postgres::Client, slot: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active: bool = client
            .query_one(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get(0);
        if !active {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot stayed active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls backfill 1 until `done` holds; gives it.
pub(crate) async fn wait_backfill(dir: &Path, done: impl Fn(&Backfill) -> bool) -> Backfill {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(backfill) = backfill_in(dir, 1).await {
            if done(&backfill) {
                return backfill;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backfill 1 never got there: {:?}",
            backfill_in(dir, 1).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_midway_resumes_where_it_stopped_and_stays_exact() {
    // GIVEN 20,000 rows, `walhook run` (the binary) streaming them, a writer updating random
    // rows, and a detached backfill throttled to 4,000 rows/s in chunks of 500
    const ROWS: i64 = 20_000;
    let db = TestDb::new().await;
    let client = db.client().await;
    items(&client, ROWS).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&db);
    let config_file = write_config(&dir, &config(&db, &receiver, ""));
    let mut run = spawn_run(&config_file, &dir, 1);
    wait_streaming(&client, db.name()).await;
    let (stop_writer, writer) = start_writer(db.client().await, ROWS, false);
    let (code, stdout, stderr) = cli(
        &config_file,
        &[
            "backfill",
            "--table",
            "public.items",
            "--batch-rows",
            "500",
            "--rate",
            "4000",
            "--detach",
        ],
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        stdout,
        "backfill 1 recorded: public.items for app (about 20000 rows)\n\
         the running `walhook run` sends the rows; `walhook status` shows the progress\n"
    );

    // WHEN walhook is killed (SIGKILL) once a quarter of the rows are done
    let recorded = std::time::Instant::now();
    let before = wait_backfill(&dir, |b| b.rows_done >= 5_000).await;
    // (throttled: the 10th chunk of 500 rows cannot start before 4,500 / 4,000 s after the
    // runner took the request up, just after it was recorded)
    assert!(recorded.elapsed() >= Duration::from_millis(1_000));
    run.kill().unwrap();
    run.wait().unwrap();
    let at_kill = backfill_in(&dir, 1).await.unwrap();
    assert_eq!(at_kill.status, BackfillStatus::Running);
    assert!(at_kill.rows_done >= before.rows_done && at_kill.rows_done < ROWS as u64);
    // THEN `walhook status` shows it running with the progress saved before the kill
    wait_slot_released(&client, db.name()).await;
    let (code, stdout, stderr) = cli(&config_file, &["status", "--json"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let shown = &report["backfills"];
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{report:#}");
    assert_eq!(shown[0]["id"], 1);
    assert_eq!(shown[0]["table"], "public.items");
    assert_eq!(shown[0]["subscribers"], serde_json::json!(["app"]));
    assert_eq!(shown[0]["status"], "running");
    assert_eq!(shown[0]["rows_done"], at_kill.rows_done);
    assert_eq!(shown[0]["total_estimate"], ROWS);
    let (_, text, _) = cli(&config_file, &["status"]).await;
    let line = format!(
        "  1 public.items (app): running, {} / ~{ROWS} rows (",
        at_kill.rows_done
    );
    assert!(text.contains(&format!("backfills\n{line}")), "{text}");

    // WHEN it is started again
    let seen_after = Arc::new(AtomicU64::new(u64::MAX));
    let mut run = spawn_run(&config_file, &dir, 2);
    let lowest = seen_after.clone();
    let done = wait_backfill(&dir, move |b| {
        lowest.fetch_min(b.rows_done, Ordering::Relaxed);
        b.status == BackfillStatus::Done
    })
    .await;
    stop_writer.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // THEN it resumed from its saved progress (never from 0) and read every row exactly once
    assert!(
        seen_after.load(Ordering::Relaxed) >= at_kill.rows_done,
        "rows_done went back from {} to {}",
        at_kill.rows_done,
        seen_after.load(Ordering::Relaxed)
    );
    assert_eq!(done.rows_done, ROWS as u64);
    let log = std::fs::read_to_string(dir.join("run-2.log")).unwrap();
    assert!(
        log.contains("backfill resumed after its last settled chunk"),
        "{log}"
    );
    // AND replaying what the receiver got gives exactly the table's final contents
    let table = table_rows(&client, "true").await;
    let mut replay = Replay::default();
    wait_replayed(&mut replay, &receiver, &table).await;
    // AND a row read twice (its chunk was not settled at the kill) came with the same id
    let mut ids: HashMap<i64, HashSet<String>> = HashMap::new();
    for (id, row) in &replay.reads {
        assert_eq!(*id, read_id(1, *row));
        ids.entry(*row).or_default().insert(id.clone());
    }
    assert!(ids.values().all(|ids| ids.len() == 1));
    run.kill().unwrap();
    run.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_limits_the_rows_and_a_table_without_a_primary_key_is_refused() {
    // GIVEN 1,000 rows, a mapped table without a primary key, and walhook streaming
    let db = TestDb::new().await;
    let client = db.client().await;
    items(&client, 1_000).await;
    client
        .batch_execute("CREATE TABLE logs (at timestamptz, line text)")
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&db);
    let config = config(&db, &receiver, "")
        + r#"
        [[events]]
        type = "log.written"
        table = "public.logs"
        operations = ["insert"]
        subscribers = ["app"]
        "#;
    let config_file = write_config(&dir, &config);
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;

    // WHEN the rows with an id divisible by 10 are backfilled
    let (code, stdout, stderr) = cli(
        &config_file,
        &[
            "backfill",
            "--table",
            "public.items",
            "--where",
            "id % 10 = 0",
            "--batch-rows",
            "30",
        ],
    )
    .await;
    // THEN exactly those 100 rows arrive, as read events with their ids, as to_jsonb gives them
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("backfill 1 done: 100 rows of public.items sent in "),
        "{stdout}"
    );
    let table = table_rows(&client, "id % 10 = 0").await;
    let mut replay = Replay::default();
    wait_replayed(&mut replay, &receiver, &table).await;
    let mut expected: Vec<(String, i64)> =
        (1..=100).map(|n| (read_id(1, n * 10), n * 10)).collect();
    let mut got = replay.reads.clone();
    got.sort_by_key(|(_, id)| *id);
    expected.sort_by_key(|(_, id)| *id);
    assert_eq!(got, expected);
    let first = events_of(&receiver.requests()[0]).remove(0);
    assert_eq!(first["type"], "item.changed");
    assert_eq!(first["data"]["table"], "public.items");
    assert_eq!(first["data"]["old"], Value::Null);
    assert_eq!(first["data"]["changed"], Value::Null);
    assert_eq!(first["data"]["unchanged_toast"], serde_json::json!([]));
    assert_eq!(first["data"]["xid"], 0);

    // WHEN the table without a primary key is asked for
    let (code, stdout, stderr) = cli(&config_file, &["backfill", "--table", "public.logs"]).await;
    // THEN the command refuses it, naming the fix, and records nothing
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "error: table public.logs has no primary key: walhook reads a backfill in primary key \
         order (keyset pagination). Add one, e.g. `ALTER TABLE public.logs ADD PRIMARY KEY (id)`, \
         and run the backfill again\n"
    );
    assert!(backfill_in(&dir, 2).await.is_none());
    walhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_backfill_sends_the_existing_rows_when_walhook_creates_the_slot() {
    // GIVEN 50 rows and a subscriber asking for an initial backfill
    let db = TestDb::new().await;
    let client = db.client().await;
    items(&client, 50).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&db);
    let config = config(&db, &receiver, "initial_backfill = true");
    // WHEN walhook runs for the first time (it creates the slot)
    let walhook = Walhook::start(&config, &dir);
    // THEN the 50 rows arrive as read events of backfill 1
    let table = table_rows(&client, "true").await;
    let mut replay = Replay::default();
    wait_replayed(&mut replay, &receiver, &table).await;
    let mut got: Vec<i64> = replay.reads.iter().map(|(_, id)| *id).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=50).collect::<Vec<i64>>());
    assert!(replay.reads.iter().all(|(id, row)| *id == read_id(1, *row)));
    let done = wait_backfill(&dir, |b| b.status == BackfillStatus::Done).await;
    assert_eq!(done.subscribers, ["app"]);
    assert_eq!(done.rows_done, 50);
    walhook.stop().await;
}

/// Before Postgres 14, pgoutput sends no logical messages, and a backfill merges with the
/// stream at watermarks written as such messages: walhook refuses it, saying why. From 14 on
/// the same command is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_before_14_a_backfill_is_refused_with_the_reason() {
    // GIVEN a mapped table with rows
    let db = TestDb::new().await;
    let client = db.client().await;
    items(&client, 10).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&db);
    let config_file = write_config(&dir, &config(&db, &receiver, ""));
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    // WHEN a backfill is asked for
    let (code, stdout, stderr) = cli(
        &config_file,
        &["backfill", "--table", "public.items", "--detach"],
    )
    .await;
    if version < 140_000 {
        // THEN before 14 it is refused with the reason and what to do, and nothing is recorded
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stderr.contains("backfills need Postgres 14 or later")
                && stderr.contains("Copy the rows another way (e.g. COPY), or upgrade"),
            "{stderr}"
        );
        assert!(backfill_in(&dir, 1).await.is_none());
    } else {
        // THEN from 14 on it is recorded
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(backfill_in(&dir, 1).await.is_some());
    }
}
