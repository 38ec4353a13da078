//! The replication source: the replication connection, the pgoutput decoder, value encoding,
//! and the slot and publication SQL. It never sees subscribers or HTTP.

mod catalog;
mod connect;
mod pgoutput;
mod replication;
mod value;
mod wire;

pub use catalog::{resolve_type, CatalogError};
pub use connect::{
    connect_sql, connect_sql_url, server_version, ConnectError, ConnectSpec, Endpoint, Host,
    SpecError, SslMode, TlsError,
};
pub use pgoutput::{
    Begin, Commit, DecodeError, LogicalMessage, OldTuple, PgTimestamp, RelationColumn,
    RelationMessage, TruncateOptions, TupleData, TupleValue,
};
pub use replication::{
    AuthFailure, ReplicationClient, ReplicationError, ReplicationStream, SystemIdentity,
};
pub use value::{encode_text, PgType, TypeRegistry, ValueError};
pub use wire::{PrimaryKeepalive, ReplicationMessage, StandbyStatusUpdate, XLogData};

mod assembler;
pub mod canary;
pub mod prerequisites;
pub mod provision;
pub mod slot_info;
mod sql;
pub use assembler::{AssembleError, Assembled, Assembler};
mod stream;
pub use stream::{stream, SourceError, SourceEvent, SourceSettings};
pub mod slot_guard;
