//! The SQLite store: the store contract (`state/contract/`) on a file of its own per test,
//! and what only a file can get wrong (opening, damage, a full disk).

mod open;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::SqliteStore;
use crate::state::contract::{contract_tests, Backend};
use crate::state::{Store, UnixMillis};

/// A state file in a directory of its own.
struct File(TempDir);

impl File {
    fn new() -> File {
        File(TempDir::new())
    }
}

#[async_trait]
impl Backend for File {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.0.path().join("state.db")).expect("open the state file"))
    }
}

contract_tests!(File::new());

/// A directory of its own under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "walhook-state-test-{}-{}-{n}",
            std::process::id(),
            UnixMillis::now().0
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
