//! What can go wrong with the state store, each with what the operator can do about it.
//!
//! One place ([`StateError::from_sqlite`]) decides which kind an SQLite failure is, so callers
//! can match on the kind: a full disk or a locked file is worth retrying later, a damaged file
//! or a newer schema is not.

use std::io;
use std::path::PathBuf;

use rusqlite::ErrorCode;

/// A failure of the state store. Whatever the kind, a failed call has changed nothing: every
/// write runs in one transaction, so what was committed before it is still there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The directory that should hold the state file is missing or is not a directory.
    #[error(
        "state directory {} does not exist or is not a directory: create it, or set [state] path \
         to a file in an existing directory",
        dir.display()
    )]
    MissingDirectory { path: PathBuf, dir: PathBuf },

    /// The directory could not be inspected.
    #[error("cannot inspect the state directory {}: check its permissions", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    /// SQLite could not open or create the file for writing.
    #[error(
        "cannot open the state file {} for writing: make sure it and its directory are writable \
         by walhook (fix their permissions), or set [state] path",
        path.display()
    )]
    Open {
        path: PathBuf,
        /// Absent when the file opened but only for reading.
        #[source]
        source: Option<rusqlite::Error>,
    },

    /// The file is damaged or is not a walhook state store.
    #[error(
        "state file {} is unusable ({what}): restore it from a backup, or set [state] path to a \
         new file (the events held in the old one are then not delivered)",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        what: String,
        #[source]
        source: Option<rusqlite::Error>,
    },

    /// The file was written by a later walhook whose schema this one does not know.
    #[error(
        "state file {} has schema version {found}, newer than the {supported} this walhook knows: \
         run the newer walhook, or set [state] path to a new file",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// The filesystem holding the state file is full. Nothing already stored is lost.
    #[error(
        "no space left for the state file {}: free space on its filesystem; what was stored \
         before is intact",
        path.display()
    )]
    DiskFull {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// Another process held the file's write lock for longer than the busy timeout.
    #[error(
        "state file {} is locked by another process (another `walhook run` on the same file?): \
         retry, or give each walhook its own [state] path",
        path.display()
    )]
    Busy {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The store's thread could not be started.
    #[error("cannot start the thread of the state store {}", path.display())]
    Thread {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The store's thread is gone (it panicked): nothing more can be stored.
    #[error("the state store {} stopped: restart walhook", path.display())]
    Stopped { path: PathBuf },

    /// Any other SQLite failure (I/O error, out of memory, ...).
    #[error("state store {} failed to {op}: check the disk and the file", path.display())]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

impl StateError {
    /// Classifies a failure of the store at `path` while doing `op` (said as a verb phrase:
    /// "store pending events").
    pub(crate) fn from_sqlite(path: PathBuf, op: &'static str, source: rusqlite::Error) -> Self {
        let corrupt = |what: &str, source| StateError::Corrupt {
            path: path.clone(),
            what: what.to_string(),
            source: Some(source),
        };
        match source.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StateError::DiskFull { path, source },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StateError::Busy { path, source }
            }
            Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
                StateError::Open {
                    path,
                    source: Some(source),
                }
            }
            Some(ErrorCode::NotADatabase) => corrupt("not an SQLite database", source),
            Some(ErrorCode::DatabaseCorrupt) => corrupt("SQLite reports it damaged", source),
            _ => match source {
                rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..) => corrupt(
                    "a stored value is out of range or of the wrong type",
                    source,
                ),
                source => StateError::Sqlite { path, op, source },
            },
        }
    }
}
