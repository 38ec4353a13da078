//! `walhook run` end to end: a real Postgres, walhook in-process, real HTTP receivers.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;
use walhook::model::Lsn;

use crate::support::json::same;
use crate::support::receiver::{verify, Receiver, Recorded, Reply};
use crate::support::TestDb;

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// walhook running in this process until stopped.
pub(crate) struct Walhook {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), walhook::app::AppError>>,
}

impl Walhook {
    pub(crate) fn start(config_text: &str, dir: &Path) -> Walhook {
        crate::support::init_logs();
        let config = walhook::config::parse(config_text, dir, &|_| None).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(walhook::app::run(config, async move {
            let _ = stopped.await;
        }));
        Walhook {
            stop: Some(stop),
            task,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("walhook did not stop within 30s")
            .unwrap()
            .unwrap();
    }
}

pub(crate) fn state_dir(db: &TestDb) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("walhook-e2e-{}", db.name()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn shop(db: &TestDb) -> tokio_postgres::Client {
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, note text);
             CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, status text, amount numeric);
             ALTER TABLE orders REPLICA IDENTITY FULL;",
        )
        .await
        .unwrap();
    client
}

pub(crate) fn source_section(db: &TestDb) -> String {
    format!(
        "[source]\nurl = \"{}\"\nslot = \"{n}\"\npublication = \"{n}\"\nstatus_interval = \"200ms\"\n",
        db.url(),
        n = db.name()
    )
}

/// Whether a walsender streams from `slot`: a slot is also `active` while
/// `pg_create_logical_replication_slot` is still building it (held by the creating backend,
/// with no `confirmed_flush_lsn` yet), and a change committed then lies before the slot's
/// consistent point, which no slot ever streams. Only a walsender holding the slot means that
/// what is committed next will be streamed.
pub(crate) const STREAMING_SQL: &str = "SELECT 1 FROM pg_replication_slots s \
     JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1";

/// Waits until walhook streams from `slot`, so what is written next is captured.
pub(crate) async fn wait_streaming(client: &tokio_postgres::Client, slot: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active = client
            .query_opt(STREAMING_SQL, &[&slot])
            .await
            .unwrap()
            .is_some();
        if active {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "walhook never started streaming"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or("").to_string())
        .collect()
}

pub(crate) async fn slot_lsn(client: &tokio_postgres::Client, slot: &str) -> Lsn {
    let text: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    text.parse().unwrap()
}

pub(crate) async fn current_lsn(client: &tokio_postgres::Client) -> Lsn {
    let text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_get_exactly_their_events_signed() {
    // GIVEN two subscribers with different rules, a filter and a projection
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let billing = Receiver::start().await;
    let crm = Receiver::start().await;
    let dir = state_dir(&db);
    let config = format!(
        r#"{source}
        [subscribers.billing]
        url = "{billing}"
        secret = "{SECRET}"
        headers = {{ "Authorization" = "Bearer t0ken" }}
        [subscribers.crm]
        url = "{crm}"
        [[events]]
        type = "order.created"
        table = "public.orders"
        operations = ["insert"]
        subscribers = ["billing"]
        [[events]]
        type = "order.paid"
        table = "public.orders"
        operations = ["update"]
        when = "row.status == 'paid' && old.status != 'paid'"
        subscribers = ["billing"]
        [[events]]
        type = "customer.changed"
        table = "public.customers"
        operations = ["insert", "update", "delete"]
        columns = ["id", "name"]
        subscribers = ["crm"]
        "#,
        source = source_section(&db),
        billing = billing.url("/billing"),
        crm = crm.url("/crm"),
    );
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;
    // WHEN the shop changes
    for sql in [
        "INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com', 'vip')",
        "INSERT INTO orders VALUES (10, 1, 'new', 12.50)",
        "UPDATE orders SET status = 'paid' WHERE id = 10",
        "UPDATE orders SET amount = 13 WHERE id = 10",
        "UPDATE customers SET email = 'ada@example.org', name = 'Ada L' WHERE id = 1",
        "DELETE FROM customers WHERE id = 1",
        "DELETE FROM orders WHERE id = 10",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    // THEN billing gets the creation and the payment, signed; crm the customer's three changes
    let got = billing
        .wait_for(|r| r.len() >= 2, Duration::from_secs(30))
        .await;
    let crm_got = crm
        .wait_for(|r| r.len() >= 3, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        billing.requests().len(),
        2,
        "{:?}",
        ids(&billing.requests())
    );
    assert_eq!(crm.requests().len(), 3);
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    assert_eq!(bodies[0]["type"], "order.created");
    let row = &bodies[0]["data"]["row"];
    assert!(
        same(
            row,
            &json!({"id": 10, "customer_id": 1, "status": "new", "amount": 12.5})
        ),
        "{row}"
    );
    assert_eq!(bodies[0]["data"]["old"], Value::Null);
    assert_eq!(bodies[1]["type"], "order.paid");
    assert_eq!(bodies[1]["data"]["changed"], json!(["status"]));
    assert_eq!(bodies[1]["data"]["old"]["status"], "new");
    for (request, body) in got.iter().zip(&bodies) {
        let id = request.header("webhook-id").unwrap();
        assert_eq!(body["id"], id);
        let lsn: Lsn = body["data"]["commit_lsn"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(id, format!("evt_{}_0", lsn.to_hex16()));
        verify(SECRET, &request.headers, &request.body).expect("signature verifies");
        assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert!(request
            .header("user-agent")
            .unwrap()
            .starts_with("walhook/"));
    }
    let crm_bodies: Vec<Value> = crm_got.iter().map(|r| r.json()).collect();
    let ops: Vec<&str> = crm_bodies
        .iter()
        .map(|b| b["data"]["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["insert", "update", "delete"]);
    assert_eq!(
        crm_bodies[0]["data"]["row"],
        json!({"id": 1, "name": "Ada"})
    );
    assert_eq!(
        crm_bodies[1]["data"]["row"],
        json!({"id": 1, "name": "Ada L"})
    );
    assert_eq!(crm_bodies[2]["data"]["old"], json!({"id": 1}));
    assert!(
        crm_got[0].header("webhook-signature").is_none(),
        "crm has no secret"
    );
    walhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receiver_holds_only_its_keys_and_everything_arrives_in_order() {
    // GIVEN a receiver that answers 503 to every first attempt of row 1's events
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let receiver = Receiver::with_policy(|r, attempt| {
        let body = r.json();
        if body["data"]["row"]["id"] == 1 && attempt == 1 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let dir = state_dir(&db);
    let config = format!(
        r#"{source}
        [subscribers.s]
        url = "{url}"
        retry = {{ initial = "200ms", max = "1s" }}
        [[events]]
        type = "order.changed"
        table = "public.orders"
        subscribers = ["s"]
        "#,
        source = source_section(&db),
        url = receiver.url("/"),
    );
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;
    // WHEN rows 1 and 2 each get five changes, interleaved
    client
        .batch_execute("INSERT INTO orders VALUES (1, 1, 's0', 0), (2, 2, 's0', 0)")
        .await
        .unwrap();
    for n in 1..=5 {
        for id in [1i64, 2] {
            client
                .execute(
                    "UPDATE orders SET status = $1 WHERE id = $2",
                    &[&format!("s{n}"), &id],
                )
                .await
                .unwrap();
        }
    }
    // THEN every event arrives; per row, first deliveries are in commit order
    let done = |r: &[Recorded]| {
        let delivered: std::collections::HashSet<String> = r
            .iter()
            .filter(|x| !(x.json()["data"]["row"]["id"] == 1 && x.attempt == 1))
            .map(|x| x.header("webhook-id").unwrap().to_string())
            .collect();
        delivered.len() == 12
    };
    let requests = receiver.wait_for(done, Duration::from_secs(60)).await;
    let mut per_row: HashMap<i64, Vec<String>> = HashMap::new();
    let mut first_ok_at = HashMap::new();
    for r in &requests {
        let body = r.json();
        let id = body["data"]["row"]["id"].as_i64().unwrap();
        if id == 1 && r.attempt == 1 {
            continue;
        }
        let event_id = r.header("webhook-id").unwrap().to_string();
        if first_ok_at.insert(event_id.clone(), r.arrived).is_none() {
            per_row
                .entry(id)
                .or_default()
                .push(body["data"]["row"]["status"].as_str().unwrap().to_string());
        }
    }
    let expected: Vec<String> = (0..=5).map(|n| format!("s{n}")).collect();
    assert_eq!(per_row[&1], expected);
    assert_eq!(per_row[&2], expected);
    // AND row 2 was not held back by row 1's failures: all of its events were through before
    // row 1's last one
    let last_of = |row: i64| {
        requests
            .iter()
            .filter(|r| r.json()["data"]["row"]["id"] == row)
            .map(|r| r.arrived)
            .max()
            .unwrap()
    };
    assert!(last_of(2) < last_of(1));
    walhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_receiver_does_not_hold_the_slot_and_gets_everything_later() {
    // GIVEN a subscriber whose receiver is down
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let receiver = Receiver::start().await;
    receiver.stop().await;
    let dir = state_dir(&db);
    let config = format!(
        r#"{source}
        [subscribers.s]
        url = "{url}"
        concurrency = 8
        retry = {{ initial = "300ms", max = "1s" }}
        [[events]]
        type = "order.created"
        table = "public.orders"
        operations = ["insert"]
        subscribers = ["s"]
        "#,
        source = source_section(&db),
        url = receiver.url("/"),
    );
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;
    // WHEN 10,000 changes are committed
    client
        .batch_execute("INSERT INTO orders SELECT g, 1, 'new', g FROM generate_series(1, 5000) g")
        .await
        .unwrap();
    for chunk in 0..50 {
        let start = 5001 + chunk * 100;
        client
            .execute(
                "INSERT INTO orders SELECT g, 1, 'new', g FROM generate_series($1::int, $1::int + 99) g",
                &[&start],
            )
            .await
            .unwrap();
    }
    let written = current_lsn(&client).await;
    // THEN the slot's confirmed position passes them while the receiver is still down
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while slot_lsn(&client, db.name()).await < written {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot did not advance while the receiver was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(receiver.requests().is_empty());
    // WHEN the receiver comes back THEN every event arrives, with its original id
    receiver.restart().await;
    let requests = receiver
        .wait_for(
            |r| {
                r.iter()
                    .map(|x| x.header("webhook-id").unwrap())
                    .collect::<std::collections::HashSet<_>>()
                    .len()
                    == 10_000
            },
            Duration::from_secs(120),
        )
        .await;
    let rows: std::collections::HashSet<i64> = requests
        .iter()
        .map(|r| r.json()["data"]["row"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(rows.len(), 10_000);
    for r in requests.iter().take(50) {
        let body = r.json();
        let lsn: Lsn = body["data"]["commit_lsn"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(r
            .header("webhook-id")
            .unwrap()
            .starts_with(&format!("evt_{}_", lsn.to_hex16())));
    }
    walhook.stop().await;
}

/// Waits until walhook streams from the test's slot, then keeps a witness slot beside it (see
/// [`crate::faults::oracle::Witness`]): if the test fails, it shows what Postgres decoded.
pub(crate) async fn wait_streaming_witnessed(
    client: &tokio_postgres::Client,
    db: &TestDb,
) -> crate::faults::oracle::Witness {
    wait_streaming(client, db.name()).await;
    crate::faults::oracle::Witness::create(client, &db.url(), db.name()).await
}

/// The orders a test committed, each with the WAL position its insert was written at, printed
/// if the test fails: the lines to look for in the server log and walhook's trace.
#[derive(Default, Clone)]
pub(crate) struct Writes(std::sync::Arc<std::sync::Mutex<Vec<(i64, String)>>>);

impl Writes {
    /// Inserts order `id` in a transaction of its own.
    pub(crate) async fn insert_order(&self, client: &tokio_postgres::Client, id: i64) {
        let row = client
            .query_one(
                "INSERT INTO orders VALUES ($1, 1, 'new', 1) RETURNING pg_current_wal_insert_lsn()::text",
                &[&id],
            )
            .await
            .unwrap();
        self.0.lock().unwrap().push((id, row.get(0)));
    }
}

impl Drop for Writes {
    fn drop(&mut self) {
        if std::thread::panicking() && std::sync::Arc::strong_count(&self.0) == 1 {
            let writes = self.0.lock().unwrap();
            let listed: Vec<String> = writes
                .iter()
                .map(|(id, lsn)| format!("{id}@{lsn}"))
                .collect();
            eprintln!(
                "orders committed (id@WAL position of the insert): {}",
                listed.join(" ")
            );
        }
    }
}
