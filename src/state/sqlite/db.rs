//! Opening the state file, running work in transactions, and the checkpoint.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, MAIN_DB,
};

use super::schema::{self, Refusal};
use crate::model::Lsn;
use crate::state::StateError;

/// How long a write waits for another process (`walhook dead-letters replay` next to a running
/// `walhook run`) to release the file's write lock before failing with [`StateError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to the state file, called synchronously: it lives on the store's own thread
/// (see [`super::SqliteStore`]), never on a runtime thread.
///
/// Durability: every method that writes runs in one transaction and returns only after it is
/// committed with `synchronous=FULL`. Other processes may open the same file at the same time
/// (the file is in WAL mode, so readers such as `walhook status` never block the writer); two
/// writers wait up to 5 s for each other.
pub struct Db {
    pub(super) conn: Connection,
    /// For error messages; `:memory:` for an in-memory store.
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the store at `path`, creating the file (not its directory) if it is missing, and
    /// brings its schema up to date.
    ///
    /// Fails with [`StateError::MissingDirectory`] if the directory is missing,
    /// [`StateError::Open`] if the file cannot be written, [`StateError::Corrupt`] if it is not
    /// a walhook state file, and [`StateError::NewerSchema`] if a later walhook wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Db, StateError> {
        let path = path.as_ref().to_path_buf();
        check_directory(&path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .map_err(|e| StateError::from_sqlite(path.clone(), "open", e))?;
        // SQLite quietly opens a write-protected file read-only; refuse it now rather than at
        // the first event that needs storing.
        let read_only = conn
            .is_readonly(MAIN_DB)
            .map_err(|e| StateError::from_sqlite(path.clone(), "open", e))?;
        if read_only {
            return Err(StateError::Open { path, source: None });
        }
        Db::init(conn, path, true)
    }

    /// A store that lives only as long as this value: for tests.
    pub fn open_in_memory() -> Result<Db, StateError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory()
            .map_err(|e| StateError::from_sqlite(path.clone(), "open", e))?;
        Db::init(conn, path, false)
    }

    fn init(mut conn: Connection, path: PathBuf, on_disk: bool) -> Result<Db, StateError> {
        let fail = |e| StateError::from_sqlite(path.clone(), "open", e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        // The first statement reads the header: a file that is not SQLite fails here.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(fail)?;
        if on_disk && !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                path = %path.display(),
                journal_mode = %mode,
                "state file cannot use WAL mode (network filesystem?); it stays durable, \
                 but readers such as `walhook status` may wait for writers"
            );
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        conn.set_prepared_statement_cache_capacity(64);
        match schema::migrate(&mut conn).map_err(fail)? {
            Ok(()) => Ok(Db { conn, path }),
            Err(Refusal::NotOurs(what)) => Err(StateError::Corrupt {
                path,
                what,
                source: None,
            }),
            Err(Refusal::Newer(found)) => Err(StateError::NewerSchema {
                path,
                found,
                supported: schema::SCHEMA_VERSION,
            }),
        }
    }

    /// Runs `work` in one transaction that holds the write lock from its start, and commits.
    /// On any error the transaction rolls back, leaving the store as it was.
    pub(super) fn write<T>(
        &mut self,
        op: &'static str,
        work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let result = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|tx| {
                let value = work(&tx)?;
                tx.commit()?;
                Ok(value)
            });
        result.map_err(|e| StateError::from_sqlite(self.path.clone(), op, e))
    }

    /// Runs `work` in one read transaction, so what it reads is one consistent snapshot.
    pub(super) fn read<T>(
        &self,
        op: &'static str,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let result = self.conn.unchecked_transaction().and_then(|tx| {
            let value = work(&tx)?;
            tx.finish()?;
            Ok(value)
        });
        result.map_err(|e| StateError::from_sqlite(self.path.clone(), op, e))
    }

    /// Records that Postgres may forget WAL up to `lsn`, and returns the checkpoint now stored.
    ///
    /// Never moves the checkpoint backward: the stored value becomes the larger of `lsn` and
    /// what was stored, so a late or repeated call with an older LSN is harmless.
    pub fn save_confirmed(&mut self, lsn: Lsn) -> Result<Lsn, StateError> {
        self.write("save the confirmed LSN", |tx| {
            let stored = read_confirmed(tx)?;
            let keep = stored.map_or(lsn, |stored| stored.max(lsn));
            if stored != Some(keep) {
                tx.prepare_cached(
                    "INSERT INTO checkpoint (id, confirmed_lsn) VALUES (0, ?1)
                     ON CONFLICT (id) DO UPDATE SET confirmed_lsn = excluded.confirmed_lsn",
                )?
                .execute([schema::lsn_to_sql(keep)])?;
            }
            Ok(keep)
        })
    }

    /// The last confirmed LSN, if one was ever saved.
    pub fn confirmed(&self) -> Result<Option<Lsn>, StateError> {
        self.read("read the confirmed LSN", read_confirmed)
    }
}

fn read_confirmed(conn: &Connection) -> rusqlite::Result<Option<Lsn>> {
    conn.prepare_cached("SELECT confirmed_lsn FROM checkpoint WHERE id = 0")?
        .query_row([], |r| r.get(0))
        .optional()
        .map(|v| v.map(schema::lsn_from_sql))
}

/// SQLite's own message for a missing directory is "unable to open database file"; name the
/// directory and the fix instead.
fn check_directory(path: &Path) -> Result<(), StateError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let missing = || StateError::MissingDirectory {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(missing()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Err(missing())
        }
        Err(source) => Err(StateError::Io {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}
