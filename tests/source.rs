//! The replication source against a real Postgres: what comes out of the slot, decoded, with
//! values exactly as `to_jsonb()` gives them, positions confirmed and resumed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use walhook::model::{Change, Lsn, Operation};
use walhook::source::{
    stream, ConnectSpec, ReplayFilter, SourceError, SourceEvent, SourceSettings,
};
use walhook::telemetry::Health;

use crate::support::json::{differences, same};
use crate::support::{connect, Cluster, TestDb};

/// A source streaming in the background, with the handles a pipeline would hold.
struct Running {
    events: mpsc::Receiver<SourceEvent>,
    confirm: watch::Sender<Lsn>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SourceError>>,
}

impl Running {
    fn start(url: &str, name: &str, status_interval: Duration) -> Running {
        let settings = SourceSettings {
            spec: url.parse::<ConnectSpec>().unwrap(),
            slot: name.to_string(),
            publication: name.to_string(),
            status_interval,
            health: Arc::new(Health::default()),
            canary: None,
        };
        let (tx, events) = mpsc::channel(1024);
        let (confirm, mut confirmed) = watch::channel(Lsn(0));
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut replay = ReplayFilter::default();
            stream(&settings, &tx, &mut replay, &mut confirmed, &stopping, None).await
        });
        Running {
            events,
            confirm,
            stop,
            task,
        }
    }

    /// The changes of the next `n` transactions that have some, with each one's end LSN.
    async fn transactions(&mut self, n: usize) -> Vec<(Lsn, Vec<Change>)> {
        let mut done = Vec::new();
        let mut current = Vec::new();
        while done.len() < n {
            let event = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
                .await
                .expect("no event within 30s")
                .expect("source ended");
            match event {
                SourceEvent::Change(change) => current.push(change),
                // Before Postgres 15, pgoutput also sends transactions without a published
                // change (a DDL statement's) as Begin and Commit alone: not counted.
                SourceEvent::Commit { end_lsn, .. } if !current.is_empty() => {
                    done.push((end_lsn, std::mem::take(&mut current)))
                }
                _ => {}
            }
        }
        done
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// `{column: value}` of a row image, as a receiver would get it.
fn row_json(change: &Change, old: bool) -> Value {
    let image = if old {
        change.old.as_ref()
    } else {
        change.row.as_ref()
    }
    .unwrap();
    let mut text = String::from("{");
    for (i, column) in change.table.columns.iter().enumerate() {
        if let Some(value) = image.get(i) {
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(&column.name).unwrap());
            text.push(':');
            text.push_str(value);
        }
    }
    text.push('}');
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Runs each `;`-separated statement in its own transaction (a multi-statement simple query
/// would run them all in one).
async fn each(client: &tokio_postgres::Client, statements: &str) {
    for statement in statements.split(";\n").filter(|s| !s.trim().is_empty()) {
        client
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

async fn setup(db: &TestDb, ddl: &str) -> tokio_postgres::Client {
    let client = db.client().await;
    let name = db.name();
    client
        .batch_execute(&format!("{ddl}; CREATE PUBLICATION {name} FOR ALL TABLES;"))
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')"
        ))
        .await
        .unwrap();
    client
}

const EVERY_TYPE: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE DOMAIN positive AS int CHECK (VALUE > 0);
    CREATE TYPE address AS (street text, zip int, tags text[]);
    CREATE TABLE everything (
        id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, o oid, f4 float4, f8 float8,
        n numeric, t text, vc varchar(10), c char(4), nm name, u uuid, j json, jb jsonb,
        by bytea, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
        iv interval, ip inet, cidr_ cidr, mac macaddr, m money, bt bit(4), vb varbit,
        e mood, dom positive, r int4range, comp address,
        a_int int[], a_text text[], a_2d int[][], a_tstz timestamptz[], a_comp address[]
    )";

const EVERY_TYPE_ROWS: &str = r#"
    INSERT INTO everything VALUES
    (1, true, -32768, -2147483648, -9223372036854775808, 4294967295, 'NaN', 'Infinity',
     '123456789012345678901234567890.123456789', 'plain', 'short', 'ab', 'name',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.50, null], "b": "x"}', '{"z": {"y": 1e3}}',
     '\xdeadbeef', '2026-11-26', '17:51:10.57433', '17:51:10+02', '2026-11-26 17:51:10.57433',
     '2026-11-26 17:51:10.57433+00', '1 year 2 mons 3 days 04:05:06.7', '192.168.0.1/24', '10.0.0.0/8',
     '08:00:2b:01:02:03', 12.50, B'1010', B'101', 'happy', 7, '[1,10)', ROW('Main "St"', 12345, ARRAY['a','b c']),
     ARRAY[1, NULL, 3], ARRAY['quote"d', 'back\slash', 'comma,', NULL, ''], ARRAY[[1,2],[3,4]],
     ARRAY['2026-11-26 17:51:10+00'::timestamptz, 'infinity'], ARRAY[ROW('x', 1, NULL)::address]),
    (2, false, 32767, 2147483647, 9223372036854775807, 0, '-Infinity', 1e308,
     'NaN', E'tab\there\nnewline "quotes" \\ unicode é ☃', '', ' ', '', '00000000-0000-0000-0000-000000000000',
     '[]', 'null', '\x', 'infinity', '00:00:00', '00:00:00-05:30', '-infinity', 'infinity', '-1 days',
     '::1', '::/0', 'ff:ff:ff:ff:ff:ff', -0.01, B'0000', B'', 'sad', 1, 'empty', ROW(NULL, NULL, '{}'),
     '{}', '{}', '{}', '{}', '{}'),
    (3, NULL, NULL, NULL, NULL, NULL, -0.0, 5e-324, -0.000000000000000000001, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, '0044-03-15 BC', NULL, NULL, '0001-01-01 00:00:00 BC', NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"#;

#[tokio::test]
async fn every_type_decodes_as_to_jsonb_gives_it() {
    // GIVEN a table with a column of every type, three rows of ordinary, extreme and NULL values
    let db = TestDb::new().await;
    let client = setup(&db, EVERY_TYPE).await;
    let mut source = Running::start(&db.url(), db.name(), Duration::from_secs(1));
    // WHEN they are inserted, updated and deleted
    client.batch_execute(EVERY_TYPE_ROWS).await.unwrap();
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let reference = |id: i32| {
        let client = &client;
        async move {
            let text: String = client
                .query_one(
                    "SELECT to_jsonb(everything)::text FROM everything WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    let inserted = [reference(1).await, reference(2).await, reference(3).await];
    client
        .batch_execute("ALTER TABLE everything REPLICA IDENTITY FULL; UPDATE everything SET i4 = i4 / 2 WHERE id = 1")
        .await
        .unwrap();
    let updated = reference(1).await;
    client
        .batch_execute("DELETE FROM everything WHERE id = 2")
        .await
        .unwrap();

    // THEN each decoded row equals to_jsonb of the row, value for value
    let txns = source.transactions(3).await;
    let inserts = &txns[0].1;
    assert_eq!(inserts.len(), 3);
    for (change, want) in inserts.iter().zip(&inserted) {
        assert_eq!(change.operation, Operation::Insert);
        let got = row_json(change, false);
        assert!(same(&got, want), "{:#?}", differences(&got, want));
    }
    let update = &txns[1].1[0];
    assert_eq!(update.operation, Operation::Update);
    let got = row_json(update, false);
    assert!(same(&got, &updated), "{:#?}", differences(&got, &updated));
    let old = row_json(update, true);
    assert!(
        same(&old, &inserted[0]),
        "{:#?}",
        differences(&old, &inserted[0])
    );
    let i4 = update
        .table
        .columns
        .iter()
        .position(|c| c.name == "i4")
        .unwrap();
    assert_eq!(update.changed_columns(), Some(vec![i4]));
    let delete = &txns[2].1[0];
    assert_eq!(delete.operation, Operation::Delete);
    let old = row_json(delete, true);
    assert!(
        same(&old, &inserted[1]),
        "{:#?}",
        differences(&old, &inserted[1])
    );
    source.stop().await;
}

#[tokio::test]
async fn unchanged_toast_is_reported_not_sent_and_full_identity_sends_old_rows() {
    // GIVEN a row with a large, incompressible text value (stored out of line)
    let db = TestDb::new().await;
    let client = setup(
        &db,
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text)",
    )
    .await;
    let mut source = Running::start(&db.url(), db.name(), Duration::from_secs(1));
    each(
        &client,
        "INSERT INTO docs SELECT 1, 'a', string_agg(md5(g::text), '') FROM generate_series(1, 400) g;
         UPDATE docs SET title = 'b' WHERE id = 1;
         ALTER TABLE docs REPLICA IDENTITY FULL;
         UPDATE docs SET title = 'c' WHERE id = 1;
         DELETE FROM docs WHERE id = 1;",
    )
    .await;
    let txns = source.transactions(4).await;
    let body = 2;
    // THEN the insert carries the body
    let insert = &txns[0].1[0];
    assert_eq!(
        insert.row.as_ref().unwrap().get(body).unwrap().len(),
        400 * 32 + 2
    );
    // AND an update that leaves it alone reports it as unchanged TOAST, absent from the row
    let update = &txns[1].1[0];
    assert_eq!(update.unchanged_toast, vec![body]);
    assert_eq!(update.row.as_ref().unwrap().get(body), None);
    assert_eq!(
        row_json(update, false),
        serde_json::json!({"id": 1, "title": "b"})
    );
    assert!(
        update.old.is_none(),
        "the key did not change, so no old key is sent"
    );
    // AND with REPLICA IDENTITY FULL the old row carries every column, large values included
    let full = &txns[2].1[0];
    let old = full.old.as_ref().unwrap();
    assert!(old.is_complete());
    assert_eq!(old.get(1), Some("\"b\""));
    assert_eq!(old.get(body).unwrap().len(), 400 * 32 + 2);
    assert_eq!(full.changed_columns(), Some(vec![1]));
    // AND the new row is complete: the unchanged large value comes from the old row, and
    // nothing is reported as unchanged TOAST
    assert_eq!(full.unchanged_toast, Vec::<usize>::new());
    assert_eq!(full.row.as_ref().unwrap().get(body), old.get(body));
    assert!(full.row.as_ref().unwrap().is_complete());
    let delete = &txns[3].1[0];
    assert!(delete.old.as_ref().unwrap().is_complete());
    source.stop().await;
}

#[tokio::test]
async fn default_identity_deletes_carry_only_the_key() {
    let db = TestDb::new().await;
    let client = setup(&db, "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let mut source = Running::start(&db.url(), db.name(), Duration::from_secs(1));
    each(
        &client,
        "INSERT INTO t VALUES (1, 'x');\nUPDATE t SET id = 2 WHERE id = 1;\nDELETE FROM t;\nTRUNCATE t",
    )
    .await;
    let txns = source.transactions(4).await;
    let key_change = &txns[1].1[0];
    assert_eq!(row_json(key_change, true), serde_json::json!({"id": 1}));
    assert_eq!(key_change.changed_columns(), None);
    let delete = &txns[2].1[0];
    assert_eq!(row_json(delete, true), serde_json::json!({"id": 2}));
    let truncate = &txns[3].1[0];
    assert_eq!(truncate.operation, Operation::Truncate);
    assert!(truncate.row.is_none() && truncate.old.is_none());
    source.stop().await;
}

#[tokio::test]
async fn alter_table_mid_stream_changes_the_shape_of_later_changes() {
    let db = TestDb::new().await;
    let client = setup(&db, "CREATE TABLE t (id int PRIMARY KEY, a text, b text)").await;
    let mut source = Running::start(&db.url(), db.name(), Duration::from_secs(1));
    each(
        &client,
        "INSERT INTO t VALUES (1, 'a1', 'b1');
         ALTER TABLE t ADD COLUMN c numeric DEFAULT 1.50;
         INSERT INTO t VALUES (2, 'a2', 'b2', 2.25);
         ALTER TABLE t DROP COLUMN a;
         INSERT INTO t VALUES (3, 'b3', 3);",
    )
    .await;
    let txns = source.transactions(3).await;
    let rows: Vec<Value> = txns.iter().map(|(_, c)| row_json(&c[0], false)).collect();
    assert_eq!(rows[0], serde_json::json!({"id": 1, "a": "a1", "b": "b1"}));
    assert!(same(
        &rows[1],
        &serde_json::json!({"id": 2, "a": "a2", "b": "b2", "c": 2.25})
    ));
    assert!(same(
        &rows[2],
        &serde_json::json!({"id": 3, "b": "b3", "c": 3})
    ));
    source.stop().await;
}

#[tokio::test]
async fn confirmed_positions_reach_the_slot_and_a_restart_resumes_after_them() {
    // GIVEN three committed transactions
    let db = TestDb::new().await;
    let client = setup(&db, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let mut source = Running::start(&db.url(), db.name(), Duration::from_millis(200));
    for id in 1..=3 {
        client
            .execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap();
    }
    let txns = source.transactions(3).await;
    // WHEN the first is confirmed
    let first_end = txns[0].0;
    source.confirm.send(first_end).unwrap();
    // THEN the slot's confirmed_flush_lsn follows
    let slot_lsn = || async {
        let text: String = client
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&db.name()],
            )
            .await
            .unwrap()
            .get(0);
        text.parse::<Lsn>().unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while slot_lsn().await != first_end {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never reached {first_end}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    source.stop().await;
    // WHEN streaming again THEN exactly the unconfirmed transactions come again, same LSNs
    let mut again = Running::start(&db.url(), db.name(), Duration::from_millis(200));
    client
        .execute("INSERT INTO t VALUES (4)", &[])
        .await
        .unwrap();
    let replay = again.transactions(3).await;
    let ids: Vec<Value> = replay
        .iter()
        .map(|(_, c)| row_json(&c[0], false)["id"].clone())
        .collect();
    assert_eq!(ids, vec![2, 3, 4]);
    assert_eq!(replay[0].0, txns[1].0);
    assert_eq!(replay[0].1[0].commit_lsn, txns[1].1[0].commit_lsn);
    again.stop().await;
}

#[tokio::test]
async fn an_idle_stream_outlives_wal_sender_timeout() {
    // GIVEN a server that drops replication connections silent for 2 seconds
    let cluster = Cluster::start("wal_sender_timeout = 2s");
    let url = cluster.superuser_url("postgres");
    let client = connect(&url).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION idle FOR TABLE t;")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('idle', 'pgoutput')")
        .await
        .unwrap();
    let mut source = Running::start(&url, "idle", Duration::from_millis(500));
    // WHEN nothing happens for three times that long
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!source.task.is_finished(), "the source stopped while idle");
    // THEN the stream still delivers
    client
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    let txns = source.transactions(1).await;
    assert_eq!(row_json(&txns[0].1[0], false), serde_json::json!({"id": 1}));
    source.stop().await;
}
