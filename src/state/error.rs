//! What can go wrong with the state store, each with what the operator can do about it.
//!
//! One place per backend ([`StateError::from_sqlite`], [`StateError::from_postgres`]) decides
//! which kind a failure is, so callers can match on the kind: a full disk, a locked file or a
//! lost connection is worth retrying later, a damaged file or a newer schema is not.

use std::io;
use std::path::PathBuf;

use rusqlite::ErrorCode;
use tokio_postgres::error::SqlState;

/// The SQLSTATE the state's `fence` raises for a leadership term that has ended.
const NOT_LEADER: &str = "WK001";

/// A failure whose type the store does not know: how walhook's own connection code failed to
/// reach the state database (see `postgres::Connect`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

    /// `[state] url` could not be understood.
    #[error(
        "[state] url is not a usable connection string: write it like `postgres://walhook:${{PGPASSWORD}}@db.internal:5432/app`"
    )]
    PostgresUrl {
        #[source]
        source: BoxError,
    },

    /// The state database could not be reached, or did not let walhook in.
    #[error(
        "cannot connect to the state database {place}: check that it is running and reachable, \
         and the host, port, database, user, password and TLS settings in [state] url (where \
         the cause below says source.url, it means [state] url)"
    )]
    PostgresUnreachable {
        place: String,
        #[source]
        source: BoxError,
    },

    /// The connection to the state database was lost (the server restarted, the session was
    /// terminated, the network failed). The next call connects again.
    #[error(
        "the connection to the state database {place} was lost while trying to {op}; walhook \
         connects again at the next call (if it was lost at the commit, that call may or may not \
         have taken effect)"
    )]
    PostgresLost {
        place: String,
        op: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// This walhook led, and no longer does: another took over (its lease had run out), so
    /// the state refuses this one's writes (the fence of its leadership term).
    #[error(
        "this walhook no longer leads: its lease in {place} ran out and another walhook took \
         over or may take over, so its writes to the state are refused; it stops delivering and \
         stands by"
    )]
    PostgresNotLeader {
        place: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The user of `[state] url` lacks a privilege walhook needs on the state schema.
    #[error(
        "the user of [state] url may not {op} in schema `{schema}` of the state database {place}: \
         create the schema for it (`CREATE SCHEMA {schema} AUTHORIZATION <that user>`), or grant \
         it CREATE on the database, or set [state] schema to a schema it owns"
    )]
    PostgresPrivilege {
        place: String,
        schema: String,
        op: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The state database accepts no writes: a standby, or a read-only default.
    #[error(
        "the state database {place} is read-only (a standby, or default_transaction_read_only \
         is on): point [state] url at the primary"
    )]
    PostgresReadOnly {
        place: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The schema exists and holds something else than walhook's state.
    #[error(
        "schema `{schema}` of the state database {place} is not walhook's state ({what}): set \
         [state] schema to another name"
    )]
    PostgresNotOurs {
        place: String,
        schema: String,
        what: String,
    },

    /// The schema was written by a later walhook whose layout this one does not know.
    #[error(
        "schema `{schema}` of the state database {place} has version {found}, newer than the \
         {supported} this walhook knows: run the newer walhook, or set [state] schema to a new schema"
    )]
    PostgresNewerSchema {
        place: String,
        schema: String,
        found: i64,
        supported: i64,
    },

    /// The database cannot store every text walhook must keep.
    #[error(
        "the state database {place} has encoding {encoding}, but walhook keeps text in UTF-8: \
         point [state] url at a database created with ENCODING 'UTF8'"
    )]
    PostgresEncoding { place: String, encoding: String },

    /// A stored value is not one walhook writes (the schema was changed by hand?).
    #[error(
        "schema `{schema}` of the state database {place} holds a value walhook cannot read \
         ({what}): restore the schema from a backup, or set [state] schema to a new schema (the \
         events held in the old one are then not delivered)"
    )]
    PostgresCorrupt {
        place: String,
        schema: String,
        what: String,
    },

    /// Any other failure of the state database (out of disk, a statement timeout, ...).
    #[error(
        "the state database {place} failed to {op}{}: see the cause; what was stored before is \
         intact",
        sqlstate(.code)
    )]
    Postgres {
        place: String,
        op: &'static str,
        /// The SQLSTATE; `None` for a failure on walhook's side of the connection.
        code: Option<String>,
        #[source]
        source: tokio_postgres::Error,
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

    /// Classifies a failure of the Postgres store at `place` (schema `schema`) while doing `op`;
    /// `closed` says whether the connection it came over has ended.
    pub(crate) fn from_postgres(
        place: &str,
        schema: &str,
        op: &'static str,
        closed: bool,
        source: tokio_postgres::Error,
    ) -> Self {
        let place = place.to_string();
        let code = source.code().cloned();
        let ended = |c: &SqlState| c.code().starts_with("08") || c.code().starts_with("57P");
        match code {
            _ if closed || source.is_closed() => StateError::PostgresLost { place, op, source },
            Some(c) if ended(&c) => StateError::PostgresLost { place, op, source },
            Some(c) if c.code() == NOT_LEADER => StateError::PostgresNotLeader { place, source },
            Some(c) if c == SqlState::INSUFFICIENT_PRIVILEGE => StateError::PostgresPrivilege {
                place,
                schema: schema.to_string(),
                op,
                source,
            },
            Some(c) if c == SqlState::READ_ONLY_SQL_TRANSACTION => {
                StateError::PostgresReadOnly { place, source }
            }
            code => StateError::Postgres {
                place,
                op,
                code: code.map(|c| c.code().to_string()),
                source,
            },
        }
    }

    /// Whether the Postgres connection this came from is unusable, so the next call must
    /// connect again.
    pub(crate) fn lost_connection(&self) -> bool {
        matches!(self, StateError::PostgresLost { .. })
    }
}

fn sqlstate(code: &Option<String>) -> String {
    code.as_ref()
        .map_or(String::new(), |code| format!(" (SQLSTATE {code})"))
}
