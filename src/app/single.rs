//! With an SQLite state one walhook runs: the file is on one machine, and two walhooks
//! delivering the events it holds would break their order. `run` holds an exclusive `flock`
//! on the file while it runs (SQLite's own locks are `fcntl` locks, which `flock` does not
//! touch), so a second `walhook run` on the same file refuses to start, before it delivers
//! anything. Other commands (`status`, `dead-letters`, `backfill`) take no such lock.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Another `walhook run` holds the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateInUse {
    #[error(
        "the state file {} is in use by another `walhook run`: with an SQLite state only one \
         walhook runs at a time. Stop the other one, or put the state in Postgres ([state] url) \
         to run standbys beside a leader",
        path.display()
    )]
    Running { path: PathBuf },
    #[error("cannot lock the state file {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the lock, held until the returned file is dropped (or the process ends).
pub(super) fn lock_state_file(path: &Path) -> Result<File, StateInUse> {
    let failed = |source| StateInUse::Lock {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(failed)?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        return Ok(file);
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::WouldBlock {
        return Err(StateInUse::Running {
            path: path.to_path_buf(),
        });
    }
    Err(failed(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_file_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("walhook-single-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("state.db");
        std::fs::write(&path, b"").expect("file");
        let first = lock_state_file(&path).expect("the first lock");
        let second = lock_state_file(&path).expect_err("a second lock");
        assert!(
            second.to_string().starts_with(&format!(
                "the state file {} is in use by another `walhook run`",
                path.display()
            )),
            "{second}"
        );
        drop(first);
        lock_state_file(&path).expect("free again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
