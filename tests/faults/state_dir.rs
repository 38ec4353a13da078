//! The state file cannot be written: its directory made read-only, or its filesystem full
//! (a file size limit, RLIMIT_FSIZE, stands in for a full disk). walhook stops before it
//! confirms what it could not store, says why, and loses nothing once the fault is fixed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use walhook::state::{SqliteStore, Store};

use super::harness::{
    check, confirmed, current_lsn, db_with_items, deliveries, fresh_dir, only_redeliveries,
    source_section, wait_all, wait_confirmed, wait_inactive, wait_streaming, walhook_command,
    write_config, Process,
};
use crate::support::receiver::{Receiver, Recorded};
use crate::support::TestDb;

/// Runs as root ignore file permissions; walhook then runs as `postgres`, which owns `dir`.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// `walhook --config config run`, as a user file permissions apply to.
fn run_unprivileged(config: &Path) -> Process {
    let command = walhook_command(config, &["run"]);
    if !running_as_root() {
        return Process::spawn(command);
    }
    let mut setpriv = Command::new("setpriv");
    setpriv
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => setpriv.env(key, value),
            None => setpriv.env_remove(key),
        };
    }
    Process::spawn(setpriv)
}

fn give_to_walhook(dir: &Path) {
    if running_as_root() {
        let status = Command::new("chown")
            .arg("-R")
            .arg("postgres:")
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn config_for(db: &TestDb, dir: &Path, receiver: &Receiver) -> std::path::PathBuf {
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
            source = source_section(&db.url(), db.name()),
            url = receiver.url("/s"),
        ),
    )
}

async fn insert_one_per_transaction(client: &tokio_postgres::Client, ids: std::ops::Range<i64>) {
    for id in ids {
        client
            .execute("INSERT INTO items VALUES ($1, 0, 'x')", &[&id])
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_directory_stops_walhook_and_nothing_is_lost_once_fixed() {
    // GIVEN walhook that stored 100 events for a subscriber that is down, and was stopped
    let db = TestDb::new().await;
    let (client, oracle) = db_with_items(&db).await;
    let receiver = Receiver::start().await;
    receiver.stop().await;
    let dir = fresh_dir(db.name());
    let config = config_for(&db, &dir, &receiver);
    give_to_walhook(&dir);
    let mut walhook = run_unprivileged(&config);
    wait_streaming(&client, db.name(), &mut walhook).await;
    insert_one_per_transaction(&client, 1..101).await;
    wait_confirmed(
        &client,
        db.name(),
        current_lsn(&client).await,
        Duration::from_secs(30),
    )
    .await;
    walhook.stop().await;
    let slot_before = confirmed(&client, db.name()).await.unwrap();

    // WHEN the state directory and file are made read-only, 100 more rows are committed, and
    // walhook is started
    let state = dir.join("walhook-state.db");
    set_mode(&state, 0o444);
    set_mode(&dir, 0o555);
    insert_one_per_transaction(&client, 101..201).await;
    let (code, output) = run_unprivileged(&config)
        .exit(Duration::from_secs(30))
        .await;

    // THEN it refuses to run, exit 1, naming the state file and the fix
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "cannot open the state file {} for writing",
            state.display()
        )),
        "{output}"
    );
    assert!(output.contains("fix their permissions"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
    // AND it confirmed nothing more
    assert_eq!(confirmed(&client, db.name()).await, Some(slot_before));

    // WHEN the permissions are fixed and the subscriber is back
    set_mode(&dir, 0o755);
    set_mode(&state, 0o644);
    receiver.restart().await;
    let walhook = run_unprivileged(&config);
    // THEN all 200 events arrive, each once: the stored ones from the state file, the rest
    // from the slot
    let expected = oracle.expected(&client).await;
    oracle.drop(&client).await;
    assert_eq!(expected.len(), 200);
    let all = |_: &Recorded| true;
    wait_all(
        || receiver.requests(),
        &["/s"],
        all,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    let output = walhook.stop().await;
    let found = check("s", &expected, &deliveries(&receiver.requests(), "/s", all));
    only_redeliveries("s", &found, &output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_confirming_and_nothing_is_lost_once_there_is_room() {
    // GIVEN walhook whose state file may not grow past 1 MB (RLIMIT_FSIZE, with SIGXFSZ
    // ignored so a write past it fails as on a full disk), and a subscriber that is down
    let db = TestDb::new().await;
    let (client, oracle) = db_with_items(&db).await;
    let receiver = Receiver::start().await;
    receiver.stop().await;
    let dir = fresh_dir(db.name());
    let config = config_for(&db, &dir, &receiver);
    let binary = walhook_command(&config, &["run"]);
    let mut limited = Command::new("bash");
    limited
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 1024; exec "$0" "$@""#)
        .arg(binary.get_program())
        .args(binary.get_args())
        .env("RUST_LOG", "info,walhook=debug");
    let mut walhook = Process::spawn(limited);
    wait_streaming(&client, db.name(), &mut walhook).await;

    // WHEN rows are committed one per transaction, so each event is stored on its own, until
    // walhook cannot store any more
    let mut next = 1i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (code, output) = loop {
        insert_one_per_transaction(&client, next..next + 20).await;
        next += 20;
        if let Some(exited) = walhook.exited() {
            break exited;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "walhook still runs after {next} rows; its output:\n{}",
            walhook.output()
        );
    };

    // THEN it stops with exit 1 and says the state file could not be written, and why
    assert_eq!(code, Some(1), "{output}");
    let state = dir.join("walhook-state.db");
    assert!(
        output.contains(&format!("state store {}", state.display()))
            || output.contains(&format!("state file {}", state.display())),
        "{output}"
    );
    assert!(
        output.contains("walhook stops confirming progress"),
        "{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
    // AND what the slot confirmed is all in the state file: every event of a transaction
    // before the slot's position is held there
    let slot = wait_inactive(&client, db.name()).await.unwrap();
    let expected = oracle.expected(&client).await;
    let settled = expected.iter().filter(|e| e.commit_lsn < slot).count();
    let held = SqliteStore::open(&state)
        .unwrap()
        .subscriber_status("s")
        .await
        .unwrap()
        .pending;
    assert!(
        held >= settled as u64,
        "the slot confirmed {settled} events, the state file holds {held}"
    );
    assert!(
        settled < expected.len(),
        "the slot confirmed every event though walhook could not store them"
    );

    // WHEN there is room again (no limit) and the subscriber is back
    receiver.restart().await;
    insert_one_per_transaction(&client, next..next + 20).await;
    let walhook = Process::run(&config);
    // THEN every event arrives; only events the slot had not confirmed may come twice (held
    // in the state file and read again from the slot)
    let expected = oracle.expected(&client).await;
    oracle.drop(&client).await;
    let all = |_: &Recorded| true;
    wait_all(
        || receiver.requests(),
        &["/s"],
        all,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    walhook.stop().await;
    let found = check("s", &expected, &deliveries(&receiver.requests(), "/s", all));
    for id in found.duplicates.keys() {
        let e = expected.iter().find(|e| &e.id == id).unwrap();
        assert!(
            e.commit_lsn >= slot,
            "{id} was confirmed before the failure and still came twice"
        );
    }
    println!(
        "a_full_disk: walhook stopped after {held} events were stored; {} events checked by id, \
         {} delivered twice",
        found.events,
        found.duplicates.len()
    );
}
