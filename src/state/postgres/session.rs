//! The store's connection: opened through the caller's connect function, used by one call at
//! a time, with its prepared statements; and how a call runs on it.
//!
//! Every write runs in one transaction that first takes the schema's write lock (a
//! transaction-level advisory lock): writes to one schema are serialized, across processes as
//! SQLite's write lock serializes them, so `seq` order is commit order and each statement sees
//! every earlier write. Reads are single statements, each a consistent snapshot, and take no
//! lock.

use std::collections::HashMap;

use tokio::sync::MutexGuard;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::schema::{in_schema, quote_literal};
use crate::state::StateError;

/// The first half of the advisory lock's key: "WHKS" (walhook state), as in SQLite's
/// `application_id`. The second half is the hash of the schema's name.
const LOCK_CLASS: i32 = 0x5748_4B53;

/// Why a step of a call failed.
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

/// Where the state is, for error messages and SQL.
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

/// One connection and what was prepared on it.
pub(super) struct Session {
    pub client: Client,
    /// The schema as an SQL identifier, for `{s}`.
    pub quoted_schema: String,
    /// Takes the schema's write lock until the transaction ends.
    pub lock_sql: String,
    /// Begins a write: a transaction holding the write lock, in one round trip.
    pub begin_sql: String,
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
            quoted_schema: super::schema::quote_identifier(schema),
            begin_sql: format!("BEGIN; {lock_sql}"),
            lock_sql,
            statements: HashMap::new(),
        }
    }

    /// `sql` (with `{s}` for the schema), prepared once per connection.
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

/// The connection, held by one call until [`Conn::finish`]; a write's transaction is open.
///
/// Every path must end in `finish`, which gives the connection back. One that does not (the
/// call's future was dropped midway) drops the connection instead, which ends its transaction
/// on the server; the next call connects again.
pub(super) struct Conn<'a> {
    pub(super) slot: MutexGuard<'a, Option<Session>>,
    pub(super) session: Session,
    pub(super) target: &'a Target,
    pub(super) op: &'static str,
    pub(super) write: bool,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Conn<'_> {
    pub async fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Failure> {
        let statement = self.session.statement(sql).await?;
        Ok(self.session.client.query(&statement, params).await?)
    }

    pub async fn query_one(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Row, Failure> {
        let statement = self.session.statement(sql).await?;
        Ok(self.session.client.query_one(&statement, params).await?)
    }

    pub async fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, Failure> {
        let statement = self.session.statement(sql).await?;
        Ok(self.session.client.query_opt(&statement, params).await?)
    }

    /// Runs `sql`; returns how many rows it changed.
    pub async fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, Failure> {
        let statement = self.session.statement(sql).await?;
        Ok(self.session.client.execute(&statement, params).await?)
    }

    /// Ends the call with `result`: commits a write that succeeded, rolls back one that failed,
    /// and gives the connection back unless it broke.
    pub async fn finish<T>(self, result: Result<T, Failure>) -> Result<T, StateError> {
        let Conn {
            mut slot,
            session,
            target,
            op,
            write,
        } = self;
        // A connection is given back only when it is known to be outside a transaction.
        let mut reusable = true;
        let result = match result {
            Ok(value) if write => match session.client.batch_execute("COMMIT").await {
                Ok(()) => Ok(value),
                Err(e) => Err(Failure::Sql(e)),
            },
            Ok(value) => Ok(value),
            Err(failure) => {
                if write {
                    reusable = session.client.batch_execute("ROLLBACK").await.is_ok();
                }
                Err(failure)
            }
        };
        let closed = session.client.is_closed();
        match result {
            Ok(value) => {
                *slot = Some(session);
                Ok(value)
            }
            Err(failure) => {
                let error = target.error(op, closed, failure);
                if reusable && !error.lost_connection() {
                    *slot = Some(session);
                }
                Err(error)
            }
        }
    }
}
