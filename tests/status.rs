//! `walhook status` (the real binary) against what a real walhook run left in the database and
//! the state file: a backlog, a paused subscriber, slot lag, no state yet, no database.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use walhook::model::Lsn;

use crate::e2e::{
    current_lsn, shop, slot_lsn, source_section, state_dir, wait_streaming,
    wait_streaming_witnessed, Walhook, Writes,
};
use crate::support::receiver::{Receiver, Reply};
use crate::support::TestDb;

/// A state directory with nothing left in it from an earlier run.
fn fresh_dir(db: &TestDb) -> PathBuf {
    let dir = state_dir(db);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `config` to `dir/<name>`: read from there, the default state path resolves to the
/// same file as the in-process walhook started with `dir` uses.
fn write_config(dir: &Path, name: &str, config: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs the real binary: `walhook --config <config> status [args]`; gives the exit code and
/// stdout.
async fn run_status(config: &Path, args: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"));
    command.arg("--config").arg(config).arg("status").args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run walhook status");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let code = output.status.code().expect("walhook status exited");
    assert!(
        code == 0 || code == 1,
        "walhook status exited {code}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (code, stdout)
}

/// `walhook status --json`, which must exit 0.
async fn status_json(config: &Path) -> Value {
    let (code, stdout) = run_status(config, &["--json"]).await;
    assert_eq!(code, 0, "{stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Polls `walhook status --json` until `done` holds for it; returns that report.
async fn wait_status(config: &Path, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let report = status_json(config).await;
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never showed the expected state; last report:\n{report:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn subscriber<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no subscriber {name} in {report:#}"))
}

fn lsn(value: &Value) -> Lsn {
    value.as_str().unwrap().parse().unwrap()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A subscriber's status as it is with nothing stored for it.
fn untouched(name: &str) -> Value {
    json!({
        "name": name,
        "in_config": true,
        "pending": 0,
        "oldest_pending_commit_at": null,
        "oldest_pending_age_ms": null,
        "dead_letters": 0,
        "paused": false,
        "paused_reason": null,
        "last_success_at": null,
        "last_error": null,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_backlog_of_a_subscriber_that_is_down() {
    // GIVEN walhook streaming to `s`, whose receiver is down, and `idle`, which no rule feeds
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let receiver = Receiver::start().await;
    receiver.stop().await;
    let dir = fresh_dir(&db);
    let config = format!(
        r#"{source}
        [subscribers.s]
        url = "{url}"
        retry = {{ initial = "1m", max = "1m" }}
        [subscribers.idle]
        url = "{url}"
        [[events]]
        type = "order.created"
        table = "public.orders"
        operations = ["insert"]
        subscribers = ["s"]
        "#,
        source = source_section(&db),
        url = receiver.url("/"),
    );
    let config_file = write_config(&dir, "walhook.toml", &config);
    let walhook = Walhook::start(&config, &dir);
    let _witness = wait_streaming_witnessed(&client, &db).await;

    // WHEN 5 orders are committed, one transaction each
    let before_first = unix_ms();
    let mut first_committed = 0;
    let writes = Writes::default();
    for id in 1i64..=5 {
        writes.insert_order(&client, id).await;
        if id == 1 {
            first_committed = unix_ms();
        }
    }

    // THEN status shows all 5 held for `s`, the oldest as old as the first commit
    let asked = unix_ms();
    let report = wait_status(&config_file, |r| subscriber(r, "s")["pending"] == 5).await;
    let answered = unix_ms();
    let s = subscriber(&report, "s");
    let age = s["oldest_pending_age_ms"].as_u64().unwrap();
    assert!(age > 0, "{s}");
    assert!(
        (asked - first_committed..=answered - before_first).contains(&age),
        "age {age} ms; asked {} ms and answered {} ms after the first insert began",
        asked - before_first,
        answered - before_first
    );
    assert!(s["oldest_pending_commit_at"].is_string(), "{s}");
    assert_eq!(s["dead_letters"], 0);
    assert_eq!(s["paused"], false);
    assert_eq!(s["paused_reason"], Value::Null);
    assert_eq!(s["last_success_at"], Value::Null);
    let error = s["last_error"]["text"].as_str().unwrap();
    assert!(error.starts_with("could not connect: "), "{error}");
    assert!(error.contains("Connection refused"), "{error}");
    // AND `idle`, for which nothing was stored, is listed with nothing to show
    assert_eq!(subscriber(&report, "idle"), &untouched("idle"));
    assert_eq!(report["subscribers"].as_array().unwrap().len(), 2);
    // AND the slot is the one walhook streams from
    let pid: i32 = client
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(report["database"]["reachable"], true);
    assert_eq!(report["slot"]["name"], db.name());
    assert_eq!(report["slot"]["exists"], true);
    assert_eq!(report["slot"]["active"], true);
    assert_eq!(report["slot"]["active_pid"], pid);
    assert_eq!(report["state"]["exists"], true);
    walhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_subscriber_paused_by_410_gone() {
    // GIVEN walhook streaming to a receiver that answers 410 Gone
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let receiver = Receiver::with_policy(|_, _| Reply::status(410).body("gone for good")).await;
    let dir = fresh_dir(&db);
    let config = format!(
        r#"{source}
        [subscribers.s]
        url = "{url}"
        [[events]]
        type = "order.created"
        table = "public.orders"
        operations = ["insert"]
        subscribers = ["s"]
        "#,
        source = source_section(&db),
        url = receiver.url("/hooks"),
    );
    let config_file = write_config(&dir, "walhook.toml", &config);
    let walhook = Walhook::start(&config, &dir);
    let _witness = wait_streaming_witnessed(&client, &db).await;

    // WHEN an order is committed
    let writes = Writes::default();
    writes.insert_order(&client, 1).await;

    // THEN status shows `s` paused, with why, and the event dead-lettered
    let report = wait_status(&config_file, |r| subscriber(r, "s")["paused"] == true).await;
    let s = subscriber(&report, "s");
    assert_eq!(s["paused_reason"], "410 Gone from 127.0.0.1");
    assert_eq!(s["dead_letters"], 1);
    assert_eq!(s["pending"], 0);
    assert_eq!(s["oldest_pending_age_ms"], Value::Null);
    assert_eq!(s["last_success_at"], Value::Null);
    assert_eq!(s["last_error"]["text"], "HTTP 410 Gone: gone for good");
    assert_eq!(receiver.requests().len(), 1);

    // WHEN another order is committed while paused
    client
        .execute("INSERT INTO orders VALUES (2, 1, 'new', 1)", &[])
        .await
        .unwrap();
    // THEN it is held, not sent
    let report = wait_status(&config_file, |r| subscriber(r, "s")["pending"] == 1).await;
    let s = subscriber(&report, "s");
    assert_eq!(s["paused"], true);
    assert_eq!(s["dead_letters"], 1);
    assert_eq!(receiver.requests().len(), 1);
    // AND the text form says so at a glance
    let (code, text) = run_status(&config_file, &[]).await;
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "  s  PAUSED: 410 Gone from 127.0.0.1")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lines[at + 1].starts_with("    pending 1, oldest committed ")
            && lines[at + 1].ends_with(" ago; dead letters 1"),
        "{text}"
    );
    assert_eq!(lines[at + 2], "    last success  never", "{text}");
    assert!(
        lines[at + 3].starts_with("    last error    ")
            && lines[at + 3].ends_with("): HTTP 410 Gone: gone for good"),
        "{text}"
    );
    walhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_lag_growing_while_walhook_is_stopped() {
    // GIVEN walhook has run once (so the slot exists) and is stopped
    let db = TestDb::new().await;
    let client = shop(&db).await;
    let receiver = Receiver::start().await;
    let dir = fresh_dir(&db);
    let config = |lag_warn: &str| {
        format!(
            r#"{source}lag_warn = "{lag_warn}"
            [subscribers.s]
            url = "{url}"
            [[events]]
            type = "order.created"
            table = "public.orders"
            subscribers = ["s"]
            "#,
            source = source_section(&db),
            url = receiver.url("/"),
        )
    };
    let low = write_config(&dir, "walhook.toml", &config("64kB"));
    let high = write_config(&dir, "high.toml", &config("1TB"));
    let walhook = Walhook::start(&config("64kB"), &dir);
    wait_streaming(&client, db.name()).await;
    walhook.stop().await;
    let confirmed = slot_lsn(&client, db.name()).await;

    // WHEN rows are written (about 1 MB of WAL) with nothing reading the slot
    let insert = |from: i32| {
        let client = &client;
        async move {
            client
                .execute(
                    "INSERT INTO orders SELECT g, 1, 'new', g FROM generate_series($1::int, $1::int + 9999) g",
                    &[&from],
                )
                .await
                .unwrap();
            current_lsn(client).await
        }
    };
    let written = insert(1).await;

    // THEN the slot is inactive, still at its confirmed position, and lags by at least what
    // was written, exactly as far as the server's position is from it
    let first = status_json(&low).await;
    let slot = &first["slot"];
    assert_eq!(slot["exists"], true, "{first:#}");
    assert_eq!(slot["active"], false);
    assert_eq!(slot["active_pid"], Value::Null);
    assert_eq!(lsn(&slot["confirmed_flush_lsn"]), confirmed);
    let current = lsn(&first["database"]["current_lsn"]);
    assert!(current >= written);
    let lag = slot["lag_bytes"].as_u64().unwrap();
    assert_eq!(lag, current.0 - confirmed.0);
    assert!(lag >= written.0 - confirmed.0, "{lag}");
    let restart = lsn(&slot["restart_lsn"]);
    assert!(restart <= confirmed);
    assert_eq!(
        slot["retained_bytes"].as_u64().unwrap(),
        current.0 - restart.0
    );
    assert_eq!(slot["wal_status"], "reserved");
    // The test server sets no max_slot_wal_keep_size: no limit, so Postgres reports NULL.
    assert_eq!(slot["safe_wal_size"], Value::Null);
    assert_eq!(slot["lag_warn_bytes"], 64 * 1024);
    assert_eq!(slot["lag_warning"], true);
    // AND the state file's checkpoint is where the slot was confirmed
    assert_eq!(lsn(&first["state"]["confirmed_lsn"]), confirmed);
    // AND with a 1TB threshold there is no warning
    assert_eq!(status_json(&high).await["slot"]["lag_warning"], false);

    // WHEN more rows are written THEN the lag grows, to at least the distance from the
    // confirmed position to the end of what was written (other tests share the server and
    // write WAL in between, so it may grow by more)
    let written_more = insert(10_001).await;
    let second = status_json(&low).await;
    let lag_more = second["slot"]["lag_bytes"].as_u64().unwrap();
    assert!(
        lag_more > lag && lag_more >= written_more.0 - confirmed.0,
        "{lag} then {lag_more}"
    );
    assert_eq!(lsn(&second["slot"]["confirmed_flush_lsn"]), confirmed);
    assert_eq!(second["slot"]["active"], false);

    // AND the text form marks the lag
    let (code, text) = run_status(&low, &[]).await;
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("slot {}: inactive (nothing streams from it)", db.name())
    );
    assert!(
        lines[1].starts_with(&format!(
            "  confirmed_flush_lsn  {:<12} lag ",
            confirmed.to_string()
        )) && lines[1].ends_with("  ⚠ over source.lag_warn (64.0 kB)"),
        "{text}"
    );
    assert_eq!(
        lines[4],
        format!("state file {}", dir.join("walhook-state.db").display())
    );
    assert_eq!(lines[5], format!("  confirmed LSN        {confirmed}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_a_database_or_state_says_so_and_creates_nothing() {
    // GIVEN a config whose database is not listening and whose state file does not exist
    let db = TestDb::new().await;
    let dir = fresh_dir(&db);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"[source]
        url = "postgres://walhook:pw@127.0.0.1:{port}/app?sslmode=disable"
        [subscribers.billing]
        url = "http://127.0.0.1:1/"
        [[events]]
        type = "order.created"
        table = "public.orders"
        subscribers = ["billing"]
        "#
    );
    let config_file = write_config(&dir, "walhook.toml", &config);

    // WHEN status runs
    let (code, stdout) = run_status(&config_file, &["--json"]).await;

    // THEN it exits 1, says the database could not be reached, and that there is no state yet
    assert_eq!(code, 1, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["database"]["reachable"], false);
    let error = report["database"]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("could not reach Postgres at 127.0.0.1:{port}")),
        "{error}"
    );
    assert_eq!(report["slot"], Value::Null);
    let state_file = dir.join("walhook-state.db");
    assert_eq!(
        report["state"],
        json!({
            "path": state_file.display().to_string(),
            "exists": false,
            "error": null,
            "confirmed_lsn": null,
        })
    );
    assert_eq!(report["subscribers"], json!([untouched("billing")]));
    // AND the text form says the same
    let (code, text) = run_status(&config_file, &[]).await;
    assert_eq!(code, 1);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("database: could not be reached: {error}"));
    assert_eq!(
        lines[1..],
        [
            format!("state file {}", state_file.display()).as_str(),
            "  no state yet (walhook has not run)",
            "subscribers",
            "  billing",
            "    pending 0; dead letters 0",
            "    last success  never",
            "    last error    none",
        ]
    );
    // AND no state file was created
    assert!(!state_file.exists());
}
