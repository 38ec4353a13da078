//! The change model the rest of walhook consumes: one row change of one committed transaction,
//! with every value already encoded as the JSON `to_jsonb()` would give for it.

use std::sync::Arc;

use super::Lsn;

/// How Postgres identifies the old row of an update or delete (`REPLICA IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// The primary key (`d`).
    Default,
    /// No old row at all (`n`).
    Nothing,
    /// Every column (`f`).
    Full,
    /// The columns of a chosen unique index (`i`).
    Index,
}

impl ReplicaIdentity {
    /// Maps pgoutput's / `pg_class.relreplident`'s one-letter code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }
}

/// One column of a table as the stream last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (pgoutput's column flag 1).
    pub is_key: bool,
}

/// A table as the last Relation message described it. Replaced, never mutated, when a new
/// Relation message arrives after `ALTER TABLE`, so changes already decoded keep their shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    /// Indexes of the primary key's columns, in key order; empty without a primary key. Looked
    /// up in the catalog, since pgoutput flags replica identity columns, which under REPLICA
    /// IDENTITY FULL are all of them.
    pub primary_key: Vec<usize>,
    pub columns: Vec<TableColumn>,
}

impl Table {
    /// `schema.name`, the form the config uses.
    pub fn qualified_name(&self) -> String {
        let mut name = String::with_capacity(self.schema.len() + 1 + self.name.len());
        name.push_str(&self.schema);
        name.push('.');
        name.push_str(&self.name);
        name
    }
}

/// A column's state in one row image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datum {
    /// Not sent: an unchanged TOASTed value, or a non-key column of a key-only old row.
    Absent,
    /// SQL NULL.
    Null,
    /// The JSON text at `json[start..end]` of the row image.
    Value { start: u32, end: u32 },
}

/// One row's values, aligned with its table's columns. All encoded JSON lives in one buffer so
/// a row costs two allocations however wide it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowImage {
    pub json: String,
    pub datums: Vec<Datum>,
}

impl RowImage {
    /// The encoded JSON of column `i`: `None` when absent, `Some("null")` for SQL NULL.
    pub fn get(&self, i: usize) -> Option<&str> {
        match self.datums.get(i)? {
            Datum::Absent => None,
            Datum::Null => Some("null"),
            Datum::Value { start, end } => self.json.get(*start as usize..*end as usize),
        }
    }

    /// Whether every column is present (a full old row, as REPLICA IDENTITY FULL sends it).
    pub fn is_complete(&self) -> bool {
        !self.datums.iter().any(|d| matches!(d, Datum::Absent))
    }
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Operation {
    pub const ALL: [Operation; 4] = [Self::Insert, Self::Update, Self::Delete, Self::Truncate];

    /// The name used in config files and event bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Truncate => "truncate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

/// One row change of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub table: Arc<Table>,
    pub operation: Operation,
    /// The new row; `None` for delete and truncate.
    pub row: Option<RowImage>,
    /// The old row as far as the replica identity sends it; `None` for insert and truncate, and
    /// for updates that did not change the key under the default identity.
    pub old: Option<RowImage>,
    /// Columns whose unchanged TOASTed value Postgres did not send (absent from `row`).
    pub unchanged_toast: Vec<usize>,
    /// The transaction's commit LSN (pgoutput's Begin `final_lsn`).
    pub commit_lsn: Lsn,
    pub xid: u32,
    /// Commit time in microseconds since the Unix epoch.
    pub commit_time_micros: i64,
    /// Position of this change in its transaction, from 0; stable across re-reads.
    pub index: u32,
}

impl Change {
    /// Columns whose value differs between `old` and `row`, when the whole old row is known.
    pub fn changed_columns(&self) -> Option<Vec<usize>> {
        self.changed().map(Iterator::collect)
    }

    /// [`Change::changed_columns`] without collecting them.
    pub fn changed(&self) -> Option<impl Iterator<Item = usize> + '_> {
        let (old, row) = (self.old.as_ref()?, self.row.as_ref()?);
        if !old.is_complete() {
            return None;
        }
        Some(
            (0..row.datums.len())
                .filter(|&i| row.get(i).is_some_and(|new| old.get(i) != Some(new))),
        )
    }
}
