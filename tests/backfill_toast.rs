//! A backfill while the stream updates rows without touching their TOASTed column: such an
//! update carries the column as "unchanged TOAST", so a chunk row dropped for it must be read
//! again, or the receiver never gets the column's value (issue 13).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use walhook::state::BackfillStatus;

use crate::backfill::{backfill_in, cli, events_of, fresh_dir, write_config};
use crate::e2e::{source_section, wait_streaming, Walhook};
use crate::faults::harness::Rng;
use crate::support::json::{differences, same};
use crate::support::receiver::{Receiver, Reply};
use crate::support::TestDb;

/// `rows` rows of `public.docs` whose `body` (3,200 characters, stored out of line and
/// uncompressed) is a TOASTed value.
async fn docs(client: &tokio_postgres::Client, rows: i64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE docs (id bigint PRIMARY KEY, v int NOT NULL, body text);
             ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
             INSERT INTO docs SELECT g, 0, \
                 (SELECT string_agg(md5(g::text || '.' || n), '') FROM generate_series(1, 100) n) \
             FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
    client.batch_execute("VACUUM ANALYZE docs").await.unwrap();
}

/// What a receiver that merges unchanged TOAST columns from its own copy holds: per key, in
/// arrival order (per-key order), a delete removes the row, a key change moves it.
#[derive(Default)]
struct Replica {
    seen: usize,
    rows: BTreeMap<i64, Map<String, Value>>,
    reads: usize,
}

impl Replica {
    fn catch_up(&mut self, receiver: &Receiver) {
        let requests = receiver.requests();
        for request in &requests[self.seen..] {
            for event in events_of(request) {
                self.apply(&event["data"]);
            }
        }
        self.seen = requests.len();
    }

    fn apply(&mut self, data: &Value) {
        let id = |image: &Value| image["id"].as_i64().expect("an image with an id");
        match data["operation"].as_str().unwrap() {
            "delete" => {
                self.rows.remove(&id(&data["old"]));
            }
            "insert" | "read" => {
                self.reads += usize::from(data["operation"] == "read");
                let row = data["row"].as_object().unwrap().clone();
                self.rows.insert(id(&data["row"]), row);
            }
            "update" => {
                let to = id(&data["row"]);
                let from = if data["old"].is_null() {
                    to
                } else {
                    id(&data["old"])
                };
                let mut row = data["row"].as_object().unwrap().clone();
                let held = self.rows.remove(&from);
                for column in data["unchanged_toast"].as_array().unwrap() {
                    let column = column.as_str().unwrap();
                    if let Some(value) = held.as_ref().and_then(|h| h.get(column)) {
                        row.insert(column.to_string(), value.clone());
                    }
                }
                self.rows.insert(to, row);
            }
            other => panic!("unexpected operation {other}"),
        }
    }

    /// The rows that differ from `table` (at most 10) and how many differ in all.
    fn differences(&self, table: &BTreeMap<i64, Value>) -> (usize, Vec<String>) {
        let ids: std::collections::BTreeSet<&i64> = self.rows.keys().chain(table.keys()).collect();
        let wrong: Vec<String> = ids
            .into_iter()
            .filter_map(|id| {
                let got = self.rows.get(id).map(|r| Value::Object(r.clone()));
                match (got, table.get(id)) {
                    (Some(got), Some(want)) if same(&got, want) => None,
                    (Some(got), Some(want)) => {
                        let text = format!("row {id}: {:?}", differences(&got, want));
                        Some(text.chars().take(160).collect())
                    }
                    (Some(_), None) => Some(format!("row {id}: received but not in the table")),
                    (None, _) => Some(format!("row {id}: in the table but not received")),
                }
            })
            .collect();
        (wrong.len(), wrong.into_iter().take(10).collect())
    }
}

async fn table_rows(client: &tokio_postgres::Client) -> BTreeMap<i64, Value> {
    client
        .query("SELECT id, to_jsonb(t)::text FROM docs t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                serde_json::from_str(&r.get::<_, String>(1)).unwrap(),
            )
        })
        .collect()
}

/// Updates random rows of `1..=rows` until stopped, almost always leaving `body` alone; now
/// and then it rewrites a body, deletes a row, or moves a row to a new key behind the
/// backfill (negative) or ahead of it.
fn start_storm(
    client: tokio_postgres::Client,
    rows: i64,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut done = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            let id = rng.range(1, rows as u64 + 1) as i64;
            let sql = match rng.range(0, 100) {
                0 => format!("UPDATE docs SET body = repeat('b', 3000) || v WHERE id = {id}"),
                1 => format!("DELETE FROM docs WHERE id = {id}"),
                2 => format!("UPDATE docs SET id = -id, v = v + 1 WHERE id = {id}"),
                3 => format!("UPDATE docs SET id = id + 1000000, v = v + 1 WHERE id = {id}"),
                _ => format!(
                    "BEGIN; UPDATE docs SET v = v + 1 WHERE id IN ({id}, {}); COMMIT",
                    (id * 7 % rows) + 1
                ),
            };
            client.batch_execute(&sql).await.unwrap();
            done += 1;
        }
        done
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_under_updates_that_leave_a_toasted_column_alone_sends_every_row_whole() {
    // GIVEN 3,000 rows with a TOASTed body, walhook streaming the table to a receiver, and a
    // storm of updates that mostly leave the body alone (so the stream sends it as unchanged
    // TOAST)
    const ROWS: i64 = 3_000;
    let db = TestDb::new().await;
    let client = db.client().await;
    docs(&client, ROWS).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&db);
    let config = format!(
        r#"{source}
        [subscribers.app]
        url = "{url}"
        batch_size = 50
        batch_wait = "5ms"
        [[events]]
        type = "doc.changed"
        table = "public.docs"
        operations = ["insert", "update", "delete"]
        subscribers = ["app"]
        "#,
        source = source_section(&db),
        url = receiver.url("/hooks"),
    );
    let config_file = write_config(&dir, &config);
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;
    let (stop, storm) = start_storm(db.client().await, ROWS);

    // WHEN a backfill in small chunks runs to its end under the storm
    let (code, stdout, stderr) = cli(
        &config_file,
        &["backfill", "--table", "public.docs", "--batch-rows", "200"],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let writes = storm.await.unwrap();
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        backfill_in(&dir, 1).await.unwrap().status,
        BackfillStatus::Done
    );
    assert!(
        writes > 200,
        "the storm wrote during the backfill: {writes}"
    );

    // THEN the receiver, merging unchanged TOAST columns from its own copy, holds exactly the
    // table: every body included
    let table = table_rows(&client).await;
    let mut replica = Replica::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        replica.catch_up(&receiver);
        let (count, wrong) = replica.differences(&table);
        if count == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} of {} rows differ from the table after {writes} writes and {} reads: \
             {wrong:#?}",
            table.len(),
            replica.reads
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    walhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_change_waits_for_the_old_keys_earlier_events() {
    // GIVEN a receiver that fails the first attempt of every insert, and walhook streaming
    // public.docs to it with a short retry delay
    let db = TestDb::new().await;
    let client = db.client().await;
    docs(&client, 0).await;
    let receiver = Receiver::with_policy(|request, attempt| {
        if attempt == 1 && request.body_text().contains(r#""operation":"insert""#) {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let dir = fresh_dir(&db);
    let config = format!(
        r#"{source}
        [subscribers.app]
        url = "{url}"
        retry = {{ initial = "300ms", max = "1s" }}
        [[events]]
        type = "doc.changed"
        table = "public.docs"
        subscribers = ["app"]
        "#,
        source = source_section(&db),
        url = receiver.url("/hooks"),
    );
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;
    // WHEN a row is inserted (its event fails once and waits for its retry), then moved to
    // another primary key without its TOASTed body
    client
        .batch_execute(
            "INSERT INTO docs VALUES (1, 0, repeat('x', 3000));
             UPDATE docs SET id = 2, v = 1 WHERE id = 1;",
        )
        .await
        .unwrap();
    let requests = receiver
        .wait_for(|r| r.len() >= 3, Duration::from_secs(30))
        .await;
    // THEN the move reaches the receiver only after the insert of the key it moves from, so a
    // receiver that moves the row it holds keeps the body
    let accepted: Vec<String> = requests
        .iter()
        .filter(|r| r.attempt > 1 || !r.body_text().contains(r#""operation":"insert""#))
        .flat_map(events_of)
        .map(|e| e["data"]["operation"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(accepted, ["insert", "update"]);
    let mut replica = Replica::default();
    replica.catch_up(&receiver);
    let (count, wrong) = replica.differences(&table_rows(&client).await);
    assert_eq!(count, 0, "{wrong:#?}");
    walhook.stop().await;
}
