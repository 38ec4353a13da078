//! `walhook dead-letters list|replay` with `--type`, `--table`, `--since` and `--json`: the
//! real binary against a real state file filled by a real `walhook run`, and a real receiver
//! that gets exactly the replayed events.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::faults::harness::{
    fresh_dir, source_section, wait_streaming, walhook_command, write_config, Process,
};
use crate::support::receiver::{Receiver, Recorded, Reply};
use crate::support::TestDb;

/// `walhook dead-letters <args>`'s stdout (logs go to stderr); asserts exit 0.
async fn cli(config: &Path, args: &[&str]) -> String {
    let mut command = walhook_command(config, &["dead-letters"]);
    command.args(args);
    let shown = format!("walhook dead-letters {}", args.join(" "));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("run {shown}: {e}"));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{shown} exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `list --json [filters]`: one object per line.
async fn list_json(config: &Path, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["list", "--json"];
    args.extend(filters);
    cli(config, &args)
        .await
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The (type, row id) of every event in `requests`.
fn events(requests: &[Recorded]) -> BTreeSet<(String, i64)> {
    requests
        .iter()
        .map(|r| {
            let body = r.json();
            let id = body["data"]["row"]["id"].as_i64().unwrap();
            (body["type"].as_str().unwrap().to_string(), id)
        })
        .collect()
}

fn of(event_type: &str, ids: &[i64]) -> BTreeSet<(String, i64)> {
    ids.iter().map(|&id| (event_type.to_string(), id)).collect()
}

/// (type, row id) of listed dead letters.
fn listed(letters: &[Value]) -> BTreeSet<(String, i64)> {
    letters
        .iter()
        .map(|l| {
            let id = l["event"]["data"]["row"]["id"].as_i64().unwrap();
            (l["type"].as_str().unwrap().to_string(), id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_by_type_and_by_since_sends_exactly_the_matching_dead_letters() {
    // GIVEN a receiver that refuses everything (400: dead-lettered at once) and walhook (the
    // binary) mapping orders and customers
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, status text);
             CREATE TABLE customers (id bigint PRIMARY KEY, name text);",
        )
        .await
        .unwrap();
    let receiver = Receiver::with_policy(|_, _| Reply::status(400)).await;
    let dir = fresh_dir(&format!("dlfilters-{}", db.name()));
    let config = write_config(
        &dir,
        &format!(
            "{}[state]\npath = \"state.db\"\n[subscribers.s]\nurl = \"{}\"\n\
             [[events]]\ntype = \"order.created\"\ntable = \"public.orders\"\noperations = [\"insert\"]\nsubscribers = [\"s\"]\n\
             [[events]]\ntype = \"customer.created\"\ntable = \"public.customers\"\noperations = [\"insert\"]\nsubscribers = [\"s\"]\n",
            source_section(&db.url(), db.name()),
            receiver.url("/hooks")
        ),
    );
    let mut walhook = Process::run(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;

    // AND ten dead letters: orders and customers 1-3, then, after a time T, 4-5 of each
    let insert = |ids: std::ops::RangeInclusive<i64>| {
        let client = &client;
        async move {
            for id in ids {
                client
                    .execute("INSERT INTO orders VALUES ($1, 'new')", &[&id])
                    .await
                    .unwrap();
                client
                    .execute("INSERT INTO customers VALUES ($1, 'c')", &[&id])
                    .await
                    .unwrap();
            }
        }
    };
    insert(1..=3).await;
    receiver
        .wait_for(|r| r.len() >= 6, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let t_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let mut t = String::new();
    walhook::mapping::push_rfc3339_micros(t_micros, &mut t);
    tokio::time::sleep(Duration::from_millis(300)).await;
    insert(4..=5).await;
    receiver
        .wait_for(|r| r.len() >= 10, Duration::from_secs(30))
        .await;
    walhook.stop().await;
    assert_eq!(receiver.requests().len(), 10, "each refused once");

    // WHEN they are listed as JSON
    let all = list_json(&config, &[]).await;

    // THEN each line is one dead letter with its fields and the event as sent
    assert_eq!(all.len(), 10, "{all:#?}");
    let mut everything = of("order.created", &[1, 2, 3, 4, 5]);
    everything.extend(of("customer.created", &[1, 2, 3, 4, 5]));
    assert_eq!(listed(&all), everything);
    for letter in &all {
        assert_eq!(letter["subscriber"], "s");
        assert_eq!(letter["attempts"], 1);
        assert_eq!(letter["last_status"], 400);
        assert_eq!(letter["id"], letter["event"]["id"]);
        assert_eq!(letter["type"], letter["event"]["type"]);
        assert_eq!(letter["table"], letter["event"]["data"]["table"]);
        assert_eq!(letter["commit_time"], letter["event"]["timestamp"]);
        assert!(letter["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("400")));
    }
    // and the filters narrow the list in the store's query, combined with AND
    let customers = list_json(&config, &["--table", "customers"]).await;
    assert_eq!(listed(&customers), of("customer.created", &[1, 2, 3, 4, 5]));
    let late_orders = list_json(&config, &["--type", "order.created", "--since", &t]).await;
    assert_eq!(listed(&late_orders), of("order.created", &[4, 5]));
    let early = list_json(&config, &["--until", &t, "--subscriber", "s"]).await;
    let mut want = of("order.created", &[1, 2, 3]);
    want.extend(of("customer.created", &[1, 2, 3]));
    assert_eq!(listed(&early), want);
    assert_eq!(
        list_json(&config, &["--since", "1h", "--until", "1h"]).await,
        Vec::<Value>::new()
    );

    // WHEN the customers are replayed by type, then what came after T by --since
    let by_type = cli(&config, &["replay", "--type", "customer.created"]).await;
    assert!(
        by_type.starts_with("5 dead letter(s) put back"),
        "{by_type}"
    );
    let by_since = cli(&config, &["replay", "--since", &t, "--json"]).await;
    let by_since: Value = serde_json::from_str(&by_since).unwrap();
    assert_eq!(by_since, serde_json::json!({ "replayed": 2 }));

    // THEN only orders 1-3 remain dead letters
    assert_eq!(
        listed(&list_json(&config, &[]).await),
        of("order.created", &[1, 2, 3])
    );

    // AND once the receiver takes them, exactly the replayed events arrive
    receiver.set_policy(|_, _| Reply::ok());
    let before = receiver.requests().len();
    let mut walhook = Process::run(&config);
    let mut want = of("customer.created", &[1, 2, 3, 4, 5]);
    want.extend(of("order.created", &[4, 5]));
    let got = receiver
        .wait_for(
            |r| events(&r[before..]).len() >= want.len(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(events(&got[before..]), want);
    // Nothing else follows (the retry round runs every 100 ms; give it a few seconds).
    tokio::time::sleep(Duration::from_secs(3)).await;
    walhook.assert_running("the replayed events arrived");
    walhook.stop().await;
    assert_eq!(events(&receiver.requests()[before..]), want);
    assert_eq!(
        listed(&list_json(&config, &[]).await),
        of("order.created", &[1, 2, 3])
    );
    let _ = std::fs::remove_dir_all(dir);
}
