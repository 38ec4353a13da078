//! A backfill behind a backlog of stream events says what it waits for: `walhook backfill`'s
//! progress line, the backfill's state row and `walhook status` all show it, phase by phase.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use walhook::state::BackfillStatus;

use super::{backfill_in, cli, fresh_dir, items, wait_backfill, write_config};
use crate::e2e::{source_section, wait_streaming, Walhook};
use crate::support::receiver::{Receiver, Reply};
use crate::support::TestDb;

/// What the receiver does: slow for stream events, then slow for read events, then fast.
const SLOW_STREAM: u8 = 0;
const SLOW_READS: u8 = 1;
const FAST: u8 = 2;

/// `walhook backfill` following a backfill, its plain progress lines collected as they come.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(config: &std::path::Path) -> Follower {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"))
            .arg("--config")
            .arg(config)
            .args(["backfill", "--table", "public.items"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start walhook backfill");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    /// Waits until a progress line contains `text`; gives that line.
    async fn wait_line(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress line says `{text}`; lines so far:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_behind_a_stream_backlog_says_what_it_waits_for() {
    // GIVEN 20 rows, walhook holding at most 50 unsettled events, and a receiver that takes
    // one event at a time, 20ms each: slower than the stream is written
    let db = TestDb::new().await;
    let client = db.client().await;
    items(&client, 20).await;
    let mode = Arc::new(AtomicU8::new(SLOW_STREAM));
    let receiver_mode = mode.clone();
    let receiver = Receiver::with_policy(move |request, _| {
        let read = request.body_text().contains(r#""operation":"read""#);
        match (receiver_mode.load(Ordering::SeqCst), read) {
            (SLOW_STREAM, false) => Reply::ok().after(Duration::from_millis(20)),
            (SLOW_READS, true) => Reply::ok().after(Duration::from_millis(300)),
            _ => Reply::ok(),
        }
    })
    .await;
    let dir = fresh_dir(&db);
    let config = format!(
        r#"{source}max_unsettled = 50
        [subscribers.app]
        url = "{url}"
        concurrency = 1
        [[events]]
        type = "item.changed"
        table = "public.items"
        operations = ["insert", "update", "delete"]
        subscribers = ["app"]
        "#,
        source = source_section(&db),
        url = receiver.url("/hooks"),
    );
    let config_file = write_config(&dir, &config);
    let walhook = Walhook::start(&config, &dir);
    wait_streaming(&client, db.name()).await;
    // AND a backlog of 500 committed updates ahead of anything the backfill writes
    client
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..500 LOOP \
                 UPDATE items SET v = v + 1 WHERE id = 1 + i % 20; COMMIT; \
             END LOOP; END $$",
        )
        .await
        .unwrap();

    // WHEN `walhook backfill` asks for the table and follows it
    let follower = Follower::start(&config_file);

    // THEN, while the backlog drains, the progress line says the chunk waits for the stream,
    // how far behind walhook is, and why
    let line = follower
        .wait_line("waiting for the stream to reach the chunk (walhook is ")
        .await;
    assert!(
        line.starts_with("backfill 1 public.items: 0 / ~20 rows (0%)")
            && line
                .contains(" behind it: subscribers take events slower than the table was written"),
        "{line}"
    );
    assert!(
        receiver.requests().len() < 500,
        "the backlog was not delivered yet"
    );
    // AND the backfill's state row and `walhook status` say the same
    let row = backfill_in(&dir, 1).await.unwrap();
    let waiting = row.waiting.expect("a wait recorded in the state row");
    assert!(
        waiting.starts_with("waiting for the stream to reach the chunk (walhook is "),
        "{waiting}"
    );
    let (code, status, _) = cli(&config_file, &["status"]).await;
    assert_eq!(code, 0, "{status}");
    assert!(
        status.contains("\n    waiting for the stream to reach the chunk (walhook is "),
        "{status}"
    );

    // WHEN the stream's events go fast but the chunk's rows are slow
    mode.store(SLOW_READS, Ordering::SeqCst);
    // THEN the line says the chunk waits for the subscriber to accept its rows
    let line = follower
        .wait_line("waiting for subscriber app to accept the chunk's 20 rows")
        .await;
    assert!(
        line.starts_with("backfill 1 public.items: 0 / ~20 rows (0%)")
            && line.contains(" events to go, among "),
        "{line}"
    );

    // WHEN every event goes fast
    mode.store(FAST, Ordering::SeqCst);
    // THEN the backfill finishes with its 20 rows and no wait recorded
    let done = wait_backfill(&dir, |b| b.status == BackfillStatus::Done).await;
    assert_eq!((done.rows_done, done.waiting), (20, None));
    let mut follower = follower;
    let exit = tokio::task::spawn_blocking(move || {
        let status = follower.child.wait().unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(follower.child.stdout.as_mut().unwrap(), &mut stdout)
            .unwrap();
        (status.code(), stdout)
    })
    .await
    .unwrap();
    assert_eq!(exit.0, Some(0), "{}", exit.1);
    assert!(
        exit.1
            .contains("backfill 1 done: 20 rows of public.items sent in "),
        "{}",
        exit.1
    );
    walhook.stop().await;
}
