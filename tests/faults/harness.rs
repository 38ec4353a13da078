//! The fault suite's harness: walhook as the real binary (spawned, SIGKILLed, its output and
//! peak memory read), a seeded random source, and waiting on the slot. The oracle and the
//! checks by id are in `oracle.rs`; both are used through this module.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walhook::model::Lsn;

pub(crate) use super::oracle::{
    check, deliveries, events_in, only_redeliveries, row_of, wait_all, Checked, Delivery, Expected,
    Oracle,
};
use crate::support::TestDb;

/// A seeded xorshift64* generator: the fault tests print their seed, and
/// `WALHOOK_FAULT_SEED=<seed>` replays the same choices (thread timing aside).
pub(crate) struct Rng(u64);

impl Rng {
    /// From the environment variable `var` if set, else from the clock; prints the seed.
    pub(crate) fn from_env(test: &str, var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{test}: seed {seed} (replay with {var}={seed})");
        Rng::new(seed)
    }

    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..high` (`high` excluded).
    pub(crate) fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }

    /// True with probability `percent`/100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// `walhook` (the binary built with the tests) running as a child process. Its stdout and
/// stderr are read as they come, so it never blocks on a full pipe. Killed if dropped running.
pub(crate) struct Process {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    pub(crate) started: Instant,
}

/// A command for the walhook binary with `--config config` and `args`, logging at debug.
pub(crate) fn walhook_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_walhook"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("WALHOOK_TEST_LOG").unwrap_or_else(|_| "info,walhook=debug".into()),
        )
        .env_remove("WALHOOK_CONFIG");
    command
}

impl Process {
    /// `walhook --config config run`.
    pub(crate) fn run(config: &Path) -> Process {
        Process::spawn(walhook_command(config, &["run"]))
    }

    pub(crate) fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for mut pipe in pipes.into_iter().flatten() {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        Process {
            child,
            output,
            readers,
            started: Instant::now(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far (stdout and stderr, interleaved as read), without the
    /// terminal colour codes of its logs.
    pub(crate) fn output(&self) -> String {
        strip_colours(&self.output.lock().unwrap())
    }

    /// Panics with its output if it has exited.
    pub(crate) fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.join_readers();
            panic!(
                "walhook exited ({status}) before {what}; its output:\n{}",
                self.output()
            );
        }
    }

    /// Its exit code (None: killed by a signal) and output, if it has exited.
    pub(crate) fn exited(&mut self) -> Option<(Option<i32>, String)> {
        let status = self.child.try_wait().ok()??;
        self.join_readers();
        Some((status.code(), self.output()))
    }

    /// SIGKILL, and reaps it. Panics if it had already exited by itself.
    pub(crate) fn kill(&mut self) {
        self.assert_running("the kill");
        self.child.kill().expect("SIGKILL walhook");
        self.child.wait().expect("reap walhook");
        self.join_readers();
    }

    /// Sends SIGTERM (a graceful stop).
    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for it to exit by itself; returns its exit code (None: killed by a signal) and
    /// its output. Panics with the output after `timeout`.
    pub(crate) async fn exit(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for walhook") {
                self.join_readers();
                return (status.code(), self.output());
            }
            if Instant::now() > deadline {
                let output = self.output();
                let _ = self.child.kill();
                panic!("walhook did not exit within {timeout:?}; its output:\n{output}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the exit; asserts it was a clean exit 0.
    pub(crate) async fn stop(self) -> String {
        self.terminate();
        let (code, output) = self.exit(Duration::from_secs(60)).await;
        assert_eq!(
            code,
            Some(0),
            "walhook did not stop cleanly; its output:\n{output}"
        );
        output
    }

    /// The peak resident set size so far (VmHWM), in KiB; `None` once it has exited.
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// `text` without ANSI SGR sequences (`ESC [ ... m`).
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\u{1b}') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after
            .strip_prefix('[')
            .and_then(|a| a.find('m').map(|m| &a[m + 1..]))
        {
            Some(tail) => rest = tail,
            None => {
                out.push('\u{1b}');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A test failed while walhook ran: its last lines tell what it was doing.
        if std::thread::panicking() {
            let output = strip_colours(&self.output.lock().unwrap_or_else(|p| p.into_inner()));
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LINES_SHOWN_ON_PANIC)..];
            eprintln!(
                "---- the last {} lines of walhook (pid {}) ----\n{}",
                tail.len(),
                self.child.id(),
                tail.join("\n")
            );
        }
    }
}

/// How many of walhook's last output lines a failing test shows.
const LINES_SHOWN_ON_PANIC: usize = 150;

/// A directory of its own for one test's config and state file, emptied first.
pub(crate) fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("walhook-faults-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `config` to `dir/walhook.toml` and returns its path.
pub(crate) fn write_config(dir: &Path, config: &str) -> PathBuf {
    let path = dir.join("walhook.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The `[source]` section for `url`, with slot and publication `name`.
pub(crate) fn source_section(url: &str, name: &str) -> String {
    format!(
        "[source]\nurl = \"{url}\"\nslot = \"{name}\"\npublication = \"{name}\"\nstatus_interval = \"200ms\"\n"
    )
}

/// The table the fault tests write: one event per change, keyed by `id`.
pub(crate) const ITEMS: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, n int NOT NULL, note text)";

/// Creates `items`, its publication `name`, and the oracle's slot, in this order, so the
/// oracle sees every change walhook's slot (created later, by walhook) can see.
pub(crate) async fn items_with_oracle(client: &tokio_postgres::Client, name: &str) -> Oracle {
    client
        .batch_execute(&format!(
            "{ITEMS}; CREATE PUBLICATION {name} FOR TABLE items;"
        ))
        .await
        .unwrap();
    Oracle::create(client, name).await
}

pub(crate) async fn db_with_items(db: &TestDb) -> (tokio_postgres::Client, Oracle) {
    let client = db.client().await;
    let oracle = items_with_oracle(&client, db.name()).await;
    (client, oracle)
}

/// The slot's confirmed position; `None` while the slot does not exist.
pub(crate) async fn confirmed(client: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()?;
    row.get::<_, Option<String>>(0).map(|t| t.parse().unwrap())
}

pub(crate) async fn current_lsn(client: &tokio_postgres::Client) -> Lsn {
    let text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    text.parse().unwrap()
}

/// Waits until `slot` exists and nothing streams from it (a killed walhook's walsender has
/// noticed), then returns its confirmed position.
pub(crate) async fn wait_inactive(client: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        match row {
            None => return None,
            Some(row) if !row.get::<_, bool>(0) => return confirmed(client, slot).await,
            Some(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "slot {slot} stayed active for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until walhook streams from `slot`.
pub(crate) async fn wait_streaming(
    client: &tokio_postgres::Client,
    slot: &str,
    walhook: &mut Process,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active = client
            .query_opt(crate::e2e::STREAMING_SQL, &[&slot])
            .await
            .unwrap()
            .is_some();
        if active {
            return;
        }
        walhook.assert_running("it streamed");
        assert!(
            Instant::now() < deadline,
            "walhook never started streaming; its output:\n{}",
            walhook.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the slot's confirmed position reaches `lsn`.
pub(crate) async fn wait_confirmed(
    client: &tokio_postgres::Client,
    slot: &str,
    lsn: Lsn,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let at = confirmed(client, slot).await;
        if at.is_some_and(|at| at >= lsn) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slot {slot} stayed at {at:?}, short of {lsn}, for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
