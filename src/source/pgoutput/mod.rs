//! Decoder for pgoutput's logical replication messages, protocol version 1.
//!
//! Pure: bytes in, typed messages out, no I/O and no state. The relation cache, not this
//! module, remembers what a Relation message said about a table; tuples here are only aligned
//! with it by position.
//!
//! The contract every caller relies on: [`LogicalMessage::decode`] never panics on any input,
//! and it accepts a message only if it is complete and has no trailing bytes. A message the
//! decoder does not understand stops the stream with a [`DecodeError`] rather than being
//! skipped, because a skipped Insert or Commit would break at-least-once delivery silently.
//!
//! The decoder sits on the hot path (one call per row change), so decoded messages borrow from
//! the input buffer: column values and names are slices of it, and the only allocation per
//! message is the vector of a tuple's columns.

mod cursor;
mod decode;
mod error;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use cursor::Cursor;
pub use error::DecodeError;

use crate::model::{Lsn, ReplicaIdentity, Table, TableColumn};

/// A Postgres timestamp on the wire: microseconds since 2000-01-01 00:00:00 UTC.
///
/// Kept apart from Unix time by type because the two epochs differ by 30 years, and a mix-up
/// would put every event timestamp in the wrong decade without any error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Microseconds from the Unix epoch to Postgres's epoch (2000-01-01).
    pub const UNIX_OFFSET_MICROS: i64 = 946_684_800_000_000;

    /// Microseconds since the Unix epoch. Saturates: Postgres's own infinity sentinels stay at
    /// the extremes instead of wrapping.
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(Self::UNIX_OFFSET_MICROS)
    }

    /// From microseconds since the Unix epoch (saturating, as [`Self::unix_micros`]).
    pub fn from_unix_micros(micros: i64) -> Self {
        Self(micros.saturating_sub(Self::UNIX_OFFSET_MICROS))
    }

    /// The wall clock as Postgres expects it in standby status updates.
    pub fn from_system_time(time: SystemTime) -> Self {
        let micros = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => saturating_micros(after),
            Err(before) => saturating_micros(before.duration()).saturating_neg(),
        };
        Self::from_unix_micros(micros)
    }
}

fn saturating_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// One pgoutput message (protocol version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage<'a> {
    Begin(Begin),
    Commit(Commit),
    /// The transaction came from another node through replication origin `name`.
    Origin {
        lsn: Lsn,
        name: &'a str,
    },
    /// The shape of a table; sent before the first change to it in a session and again after
    /// it changes.
    Relation(RelationMessage<'a>),
    /// A non-built-in data type used by a following Relation message.
    Type {
        oid: u32,
        /// Empty for `pg_catalog`.
        namespace: &'a str,
        name: &'a str,
    },
    Insert {
        relation: u32,
        new: TupleData<'a>,
    },
    /// `old` is present only when the replica identity sends it: the key when the key changed,
    /// or the whole old row under `REPLICA IDENTITY FULL`.
    Update {
        relation: u32,
        old: Option<OldTuple<'a>>,
        new: TupleData<'a>,
    },
    Delete {
        relation: u32,
        old: OldTuple<'a>,
    },
    Truncate {
        options: TruncateOptions,
        relations: Vec<u32>,
    },
    /// A message from `pg_logical_emit_message` (sent only with the `messages` option).
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: &'a str,
        content: &'a [u8],
    },
}

/// Start of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record: known up front because pgoutput (v1) sends
    /// a transaction only once it has committed. Event ids are built from it.
    pub final_lsn: Lsn,
    pub commit_time: PgTimestamp,
    pub xid: u32,
}

/// End of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused by Postgres so far; kept rather than rejected so a future flag does not stop the
    /// stream.
    pub flags: u8,
    /// Equals the matching Begin's `final_lsn`.
    pub commit_lsn: Lsn,
    /// Just past the commit record: the position to confirm once the transaction is settled.
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

/// A table's shape as pgoutput describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationMessage<'a> {
    pub oid: u32,
    /// As sent: empty for `pg_catalog`. See [`Self::schema`].
    pub namespace: &'a str,
    pub name: &'a str,
    pub replica_identity: ReplicaIdentity,
    /// In the order tuple values arrive (generated columns are not sent).
    pub columns: Vec<RelationColumn<'a>>,
}

impl RelationMessage<'_> {
    /// The schema name, with pgoutput's empty-string shorthand for `pg_catalog` expanded.
    pub fn schema(&self) -> &str {
        if self.namespace.is_empty() {
            "pg_catalog"
        } else {
            self.namespace
        }
    }

    /// An owned [`Table`] for the relation cache, which outlives the message buffer.
    pub fn to_table(&self) -> Table {
        Table {
            oid: self.oid,
            schema: self.schema().to_owned(),
            name: self.name.to_owned(),
            replica_identity: self.replica_identity,
            primary_key: Vec::new(),
            columns: self
                .columns
                .iter()
                .map(|c| TableColumn {
                    name: c.name.to_owned(),
                    type_oid: c.type_oid,
                    type_modifier: c.type_modifier,
                    is_key: c.is_key,
                })
                .collect(),
        }
    }
}

/// One column of a Relation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Part of the replica identity (flag bit 1).
    pub is_key: bool,
    pub name: &'a str,
    pub type_oid: u32,
    /// `atttypmod`, e.g. varchar length + 4; -1 when none.
    pub type_modifier: i32,
}

/// A row's column values, in the order of the relation's columns.
pub type TupleData<'a> = Vec<TupleValue<'a>>;

/// One column value of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleValue<'a> {
    /// SQL NULL.
    Null,
    /// A TOASTed value the update did not change, so Postgres did not send it.
    UnchangedToast,
    /// The value in Postgres's text output format. Not checked for UTF-8 here: the value
    /// encoder looks at every byte anyway, so checking twice would cost on the hot path.
    Text(&'a [u8]),
    /// The value in binary send format (only with the `binary` option, never requested by
    /// walhook; decoded so such a stream fails later with a clear error, not here).
    Binary(&'a [u8]),
}

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// Only the replica identity's key columns carry values ('K'); the others are sent as null.
    Key(TupleData<'a>),
    /// Every column, as `REPLICA IDENTITY FULL` sends it ('O').
    Full(TupleData<'a>),
}

impl<'a> OldTuple<'a> {
    pub fn values(&self) -> &[TupleValue<'a>] {
        match self {
            Self::Key(values) | Self::Full(values) => values,
        }
    }
}

/// The options of a TRUNCATE. Unknown bits are ignored: they could only refine how the table
/// was emptied, never that it was, which is all walhook reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncateOptions {
    /// `TRUNCATE ... CASCADE` (bit 1).
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY` (bit 2).
    pub restart_identity: bool,
}

impl TruncateOptions {
    pub fn from_bits(bits: u8) -> Self {
        Self {
            cascade: bits & 1 != 0,
            restart_identity: bits & 2 != 0,
        }
    }
}
