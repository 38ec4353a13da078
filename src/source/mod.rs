//! The replication source: the replication connection, the pgoutput decoder, value encoding,
//! the assembler, the canary, and the slot problems the stream reports. [`run`] is the source
//! task: it reconnects after transient failures, and its replay filter hands the pipeline each
//! change once, as one [`SourceEvent`] type. It never sees subscribers or HTTP; creating and
//! checking the slot and publication is `database`'s.

mod catalog;
mod connect;
mod pgoutput;
mod replication;
mod value;
mod wire;

pub use catalog::{resolve_type, CatalogError};
pub use connect::{
    connect_sql, connect_sql_url, ConnectError, ConnectSpec, Endpoint, Host, OpenError, SpecError,
    SslMode, TlsError,
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
mod event;
mod replay;
mod run;
pub mod slot_errors;
mod stream;
pub use assembler::{AssembleError, Assembler};
pub use event::SourceEvent;
pub use replay::ReplayFilter;
pub use run::run;
pub use stream::{stream, SourceError, SourceSettings};
