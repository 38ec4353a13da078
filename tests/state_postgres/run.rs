//! `walhook run` end to end with `[state] url` naming the source database: events held for a
//! subscriber that is down wait in the Postgres state while the slot moves on, and arrive when
//! it is back; dead letters are listed and replayed from there by the real binary.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use walhook::model::Lsn;

use crate::e2e::{current_lsn, shop, slot_lsn, source_section, wait_streaming, Walhook};
use crate::e2e_more::{dead_letters, fresh_state_dir, walhook_cli, write_config};
use crate::support::receiver::{Receiver, Reply};
use crate::support::TestDb;

/// One answer the receiver gave: the row, the operation, the event id, and the status.
type Answer = (i64, String, String, u16);

/// Answers 503 while `up` is false; then 400 to row `refused`'s events, 200 to the rest.
/// Records every answer.
async fn receiver(
    up: Arc<AtomicBool>,
    refused: Arc<Mutex<Option<i64>>>,
    answers: Arc<Mutex<Vec<Answer>>>,
) -> Receiver {
    Receiver::with_policy(move |r, _| {
        let body = r.json();
        let row = body["data"]["row"]["id"].as_i64().unwrap();
        let status = if !up.load(Ordering::SeqCst) {
            503
        } else if *refused.lock().unwrap() == Some(row) {
            400
        } else {
            200
        };
        let operation = body["data"]["operation"].as_str().unwrap().to_string();
        let id = r.header("webhook-id").unwrap().to_string();
        answers.lock().unwrap().push((row, operation, id, status));
        Reply::status(status)
    })
    .await
}

/// The events answered 200, in the order they were answered, each once.
fn delivered(answers: &Mutex<Vec<Answer>>) -> Vec<Answer> {
    let mut seen = HashSet::new();
    answers
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.3 == 200 && seen.insert(a.2.clone()))
        .cloned()
        .collect()
}

/// Polls `walhook status --json` until `done` holds for subscriber `s`; returns the report.
async fn wait_status(config: &std::path::Path, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let report: Value =
            serde_json::from_str(&walhook_cli(config, &["status", "--json"]).await).unwrap();
        let s = report["subscribers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "s")
            .cloned()
            .unwrap_or(Value::Null);
        if done(&s) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never showed it; last report:\n{report:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_wait_in_the_postgres_state_and_everything_arrives() {
    // GIVEN walhook with its state in a schema of the source database, streaming to a
    // subscriber whose receiver answers 503
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let up = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(Mutex::new(Some(3)));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let receiver = receiver(up.clone(), refused.clone(), answers.clone()).await;
    let dir = fresh_state_dir(&db);
    let config = format!(
        r#"{source}
        [state]
        url = "{state_url}"
        schema = "walhook_state"
        [subscribers.s]
        url = "{url}"
        retry = {{ initial = "200ms", max = "500ms" }}
        [[events]]
        type = "order.changed"
        table = "public.orders"
        operations = ["insert", "update"]
        subscribers = ["s"]
        "#,
        source = source_section(&db),
        state_url = db.url(),
        url = receiver.url("/"),
    );
    let config_file = write_config(&dir, &config);
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;

    // WHEN five orders are inserted and then updated, one transaction each
    for id in 1i64..=5 {
        client
            .execute("INSERT INTO orders VALUES ($1, 1, 'new', 1)", &[&id])
            .await
            .unwrap();
    }
    for id in 1i64..=5 {
        client
            .execute("UPDATE orders SET status = 'paid' WHERE id = $1", &[&id])
            .await
            .unwrap();
    }
    let written = current_lsn(&client).await;

    // THEN the slot confirms past them while the receiver is still down: all ten are held in
    // the state schema of the source database
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while slot_lsn(&client, db.name()).await < written {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot did not advance while the receiver was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held: i64 = client
        .query_one(
            "SELECT count(*) FROM walhook_state.pending WHERE subscriber = 's'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 10);
    assert!(delivered(&answers).is_empty());
    assert!(
        !dir.join("walhook-state.db").exists(),
        "an SQLite file was made"
    );
    // AND `walhook status` (the real binary) reads them from there, naming the state without
    // its password
    let report = wait_status(&config_file, |s| s["pending"] == 10).await;
    let state_url = report["state"]["url"].as_str().unwrap();
    assert_eq!(
        state_url,
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
            crate::support::Server::get().port(),
            db.name()
        )
    );
    assert_eq!(report["state"]["schema"], "walhook_state");
    assert_eq!(report["state"]["error"], Value::Null);
    assert!(report["state"].get("path").is_none(), "{report:#}");
    assert!(lsn(&report["state"]["confirmed_lsn"]) > Lsn(0));

    // WHEN the receiver is back (refusing row 3's events with 400)
    up.store(true, Ordering::SeqCst);

    // THEN the other rows' eight events arrive, each row's insert before its update, each
    // with its original id
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while delivered(&answers).len() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything arrived: {:?}",
            delivered(&answers)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = delivered(&answers);
    assert_in_order_per_row(&first, &[1, 2, 4, 5]);
    let attempted_while_down: HashSet<String> = answers
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.3 == 503)
        .map(|a| a.2.clone())
        .collect();
    for (row, operation, id, _) in first.iter().filter(|a| a.1 == "insert") {
        assert!(
            attempted_while_down.contains(id),
            "row {row}'s {operation} came back with another id: {id}"
        );
    }
    // AND row 3's two events are dead letters, listed by `walhook dead-letters list` from the
    // Postgres state, and nothing else is held
    wait_status(&config_file, |s| {
        s["pending"] == 0 && s["dead_letters"] == 2
    })
    .await;
    let letters = dead_letters(&config_file).await;
    let refused_ids: Vec<String> = answers
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.3 == 400)
        .map(|a| a.2.clone())
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter[0], "s");
        assert!(refused_ids.contains(&letter[1]), "{letter:?}");
        assert_eq!(letter[4], "status=400");
    }
    walhook.stop().await;

    // WHEN row 3 is accepted, its dead letters are replayed, and walhook starts again on the
    // same state
    *refused.lock().unwrap() = None;
    let replayed = walhook_cli(&config_file, &["dead-letters", "replay"]).await;
    assert!(
        replayed.starts_with("2 dead letter(s) put back for delivery"),
        "{replayed}"
    );
    assert!(dead_letters(&config_file).await.is_empty());
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;

    // THEN row 3's insert and update arrive, in that order, with the ids they were refused
    // with, and nothing is left held
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while delivered(&answers).len() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "row 3 never arrived: {:?}",
            delivered(&answers)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = delivered(&answers);
    assert_in_order_per_row(&all, &[1, 2, 3, 4, 5]);
    let row_3: Vec<&String> = all.iter().filter(|a| a.0 == 3).map(|a| &a.2).collect();
    assert_eq!(row_3.len(), 2);
    assert!(row_3.iter().all(|id| refused_ids.contains(id)));
    wait_status(&config_file, |s| {
        s["pending"] == 0 && s["dead_letters"] == 0
    })
    .await;
    walhook.stop().await;
}

/// Each of `rows` got exactly its insert, then its update.
fn assert_in_order_per_row(delivered: &[Answer], rows: &[i64]) {
    let mut per_row: HashMap<i64, Vec<&str>> = HashMap::new();
    for (row, operation, _, _) in delivered {
        per_row.entry(*row).or_default().push(operation);
    }
    let mut got: Vec<i64> = per_row.keys().copied().collect();
    got.sort_unstable();
    assert_eq!(got, rows, "{delivered:?}");
    for row in rows {
        assert_eq!(
            per_row[row],
            ["insert", "update"],
            "row {row}: {delivered:?}"
        );
    }
}

fn lsn(value: &Value) -> Lsn {
    value.as_str().unwrap().parse().unwrap()
}
