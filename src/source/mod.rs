//! The replication source: the replication connection, the pgoutput decoder, value encoding,
//! and the slot and publication SQL. It never sees subscribers or HTTP.

mod catalog;
mod change;
mod lsn;
mod pgoutput;
mod value;
mod wire;

pub use catalog::{resolve_type, CatalogError};
pub use change::{Change, Datum, Operation, ReplicaIdentity, RowImage, Table, TableColumn};
pub use lsn::{Lsn, ParseLsnError};
pub use pgoutput::{
    Begin, Commit, DecodeError, LogicalMessage, OldTuple, PgTimestamp, RelationColumn,
    RelationMessage, TruncateOptions, TupleData, TupleValue,
};
pub use value::{encode_text, PgType, TypeRegistry, ValueError};
pub use wire::{PrimaryKeepalive, ReplicationMessage, StandbyStatusUpdate, XLogData};
