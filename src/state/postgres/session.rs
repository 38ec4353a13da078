//! The store's connection, and how a call runs on it: every call is one statement.
//!
//! A read is the statement alone, which sees one consistent snapshot. A write is the statement
//! in a transaction of its own that first takes the schema's write lock (a transaction-level
//! advisory lock): writes to one schema are serialized, across processes as SQLite's write
//! lock serializes them, so `seq` order is commit order and each write sees every earlier one.
//! The BEGIN (with the lock), the statement and the COMMIT are sent together and answered in
//! one round trip; if the statement fails, the server turns the COMMIT into a ROLLBACK. Since
//! all three are sent at the first poll, a call dropped midway still leaves the connection
//! outside any transaction.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::state::StateError;

/// The first half of the advisory lock's key: "WHKS" (walhook state), as in SQLite's
/// `application_id`. The second half is the hash of the schema's name.
const LOCK_CLASS: i32 = 0x5748_4B53;

/// Why a call failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The database refused it, or the connection failed.
    Sql(tokio_postgres::Error),
    /// It answered with a value walhook never writes.
    Corrupt(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Sql(e)
    }
}

/// Where the state is, for error messages.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The database, as the operator knows it (no password).
    pub place: String,
    pub schema: String,
}

impl Target {
    pub fn error(&self, op: &'static str, closed: bool, failure: Failure) -> StateError {
        match failure {
            Failure::Sql(source) => {
                StateError::from_postgres(&self.place, &self.schema, op, closed, source)
            }
            Failure::Corrupt(what) => StateError::PostgresCorrupt {
                place: self.place.clone(),
                schema: self.schema.clone(),
                what,
            },
        }
    }
}

pub(super) type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// One connection and what was prepared on it.
pub(super) struct Session {
    pub client: Client,
    /// The schema as an SQL identifier, for `{s}`.
    pub quoted_schema: String,
    /// Takes the schema's write lock until the transaction ends.
    pub lock_sql: String,
    /// Begins a write: a transaction holding the write lock.
    begin_sql: String,
    /// A call found the connection lost: the next one connects again.
    pub broken: bool,
    statements: HashMap<&'static str, Statement>,
}

impl Session {
    pub fn new(client: Client, schema: &str) -> Session {
        let lock_sql = format!(
            "SELECT pg_advisory_xact_lock({LOCK_CLASS}, hashtext({}))",
            quote_literal(schema)
        );
        Session {
            client,
            quoted_schema: quote_identifier(schema),
            begin_sql: format!("BEGIN; {lock_sql}"),
            lock_sql,
            broken: false,
            statements: HashMap::new(),
        }
    }

    /// Whether a call can use this connection.
    pub fn usable(&self) -> bool {
        !self.broken && !self.client.is_closed()
    }

    /// Runs `sql` (with `{s}` for the schema), prepared once per connection; a `write` in a
    /// transaction of its own holding the write lock, and with a `fence` (a leadership term)
    /// only while that term still leads (see `schema::V3`): the check is part of the BEGIN,
    /// so it costs no round trip.
    pub async fn run(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
        write: bool,
        fence: Option<i64>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        if !write {
            return self.client.query(&statement, params).await;
        }
        let fenced;
        let begin = match fence {
            Some(epoch) => {
                fenced = format!(
                    "{}; SELECT {}.fence({epoch})",
                    self.begin_sql, self.quoted_schema
                );
                &fenced
            }
            None => &self.begin_sql,
        };
        let (begun, rows, committed) = tokio::join!(
            self.client.batch_execute(begin),
            self.client.query(&statement, params),
            self.client.batch_execute("COMMIT"),
        );
        begun?;
        let rows = rows?;
        committed?;
        Ok(rows)
    }

    async fn statement(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .prepare(&in_schema(sql, &self.quoted_schema))
            .await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// `sql` with `{s}` naming the schema.
pub(super) fn in_schema(sql: &str, quoted_schema: &str) -> String {
    sql.replace("{s}", quoted_schema)
}

/// `name` as an SQL identifier.
pub(super) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal.
pub(super) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
