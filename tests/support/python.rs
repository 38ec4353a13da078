//! The reference sync receiver (`receivers/python/`) as a real process for the tests: its
//! virtual environment is made on first use (`python3 -m venv`, then the pinned requirements
//! from PyPI), once per machine, under a lock so concurrent test processes share it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

/// `receivers/python/` in this checkout.
pub fn receiver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("receivers/python")
}

/// The Python of the receiver's virtual environment, with its requirements installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let dir = receiver_dir();
        let python = dir.join(".venv/bin/python");
        let script = "set -e
            if ! .venv/bin/python -c 'import psycopg, standardwebhooks' 2>/dev/null; then
              python3 -m venv .venv
              .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
            fi";
        let status = Command::new("flock")
            .arg(dir.join(".venv.lock"))
            .args(["sh", "-c", script])
            .current_dir(&dir)
            .status()
            .expect("run flock and sh to prepare the receiver's virtual environment");
        assert!(
            status.success(),
            "could not prepare receivers/python/.venv (python3 -m venv; pip install -r \
             requirements.txt): needs python3 with venv, and PyPI"
        );
        python
    })
}

/// `receivers/python/receiver.py` listening on a free port, applying to `database_url`.
pub struct SyncReceiver {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl SyncReceiver {
    pub fn start(database_url: &str, secret: &str) -> SyncReceiver {
        let mut child = Command::new(python())
            .arg(receiver_dir().join("receiver.py"))
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .args(["--secret", secret, "--trace"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start receivers/python/receiver.py");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("its stderr");
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read its first line");
        let port = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the sync receiver did not start: {line:?}\n{}",
                    log.lock().unwrap()
                )
            });
        SyncReceiver { child, port, log }
    }

    /// Its log: one line per request.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for SyncReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
