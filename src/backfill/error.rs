//! What can stop a backfill request or a running backfill, each with what to do about it.

use crate::source::ConnectError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("table `{0}` must be written `schema.table`, e.g. `public.orders`")]
    TableName(String),
    #[error("table {0} does not exist; check the name (`schema.table`)")]
    MissingTable(String),
    #[error(
        "table {table} has no primary key: walhook reads a backfill in primary key order (keyset \
         pagination). Add one, e.g. `ALTER TABLE {table} ADD PRIMARY KEY (id)`, and run the \
         backfill again"
    )]
    NoPrimaryKey { table: String },
    #[error("no subscriber named `{0}` in the config")]
    UnknownSubscriber(String),
    #[error(
        "backfills need Postgres 14 or later: walhook merges a backfill with the stream at \
         watermarks it writes as logical messages, which pgoutput sends from Postgres 14 on; this \
         server is Postgres {version}. Copy the rows another way (e.g. COPY), or upgrade"
    )]
    ServerTooOld { version: String },
    #[error(
        "no [[events]] rule maps inserts of {table} to {who}: a backfill sends rows as `read` \
         events through the rules of the table whose operations include \"insert\""
    )]
    NotMapped { table: String, who: String },
    #[error("--where `{condition}` does not work on {table}")]
    BadWhere {
        table: String,
        condition: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("a row of {table} read by the backfill is not a JSON object")]
    BadRow {
        table: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the pipeline stopped taking backfill chunks")]
    PipelineClosed,
    #[error("chunk {chunk} of backfill {backfill} was read {attempts} times without its watermarks arriving in order")]
    Watermarks {
        backfill: i64,
        chunk: u64,
        attempts: u32,
    },
    #[error("cannot connect to Postgres")]
    Connect(#[from] ConnectError),
    #[error("database query failed")]
    Sql(#[from] tokio_postgres::Error),
    #[error("the state file failed")]
    State(#[from] StateError),
}
