//! The replication connection: walhook's own client for Postgres's streaming replication
//! protocol, on `postgres-protocol`'s message codec (tokio-postgres cannot do CopyBoth).
//!
//! A [`ReplicationClient`] logs in with `replication=database`, runs replication commands
//! (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`), and turns into a [`ReplicationStream`] with
//! `START_REPLICATION`. The stream yields each CopyData payload as it arrives; decoding them is
//! [`super::ReplicationMessage`]'s job.

use std::io;

use bytes::Bytes;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tracing::{debug, info};

use super::connect::{io_advice, open, server_advice, ConnectSpec, OpenError};
use super::StandbyStatusUpdate;
use crate::model::Lsn;
use auth::authenticate;
use conn::{Conn, Frame};

mod auth;
mod conn;

/// Anything that went wrong on the replication connection.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The socket or TLS: its text says it all (and says it once in an error chain).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The open connection failed (the server closed it, the network dropped it).
    #[error("connection to Postgres at {addr} failed{}", io_advice(.source, .addr))]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("Postgres at {addr} did not let user `{user}` in; check the user and password in source.url, and that pg_hba.conf allows this user")]
    Auth {
        addr: String,
        user: String,
        #[source]
        source: AuthFailure,
    },
    #[error("{message} (SQLSTATE {code}){}{}{}", prefixed("; ", .detail), prefixed("; hint: ", .hint), server_advice(.code))]
    Server {
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    #[error("protocol error with Postgres at {addr}: {what}")]
    Protocol {
        addr: String,
        what: String,
        #[source]
        source: Option<io::Error>,
    },
}

/// Why logging in failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("{message} (SQLSTATE {code})")]
    Rejected { code: String, message: String },
    #[error("the server asks for a password but source.url has none; add it, e.g. `postgres://walhook:${{PGPASSWORD}}@host/db`")]
    PasswordMissing,
    #[error("the server asks for {method} authentication, which walhook does not support; use scram-sha-256, md5 or password for this user in pg_hba.conf")]
    Unsupported { method: &'static str },
    #[error("the server offers SASL mechanisms `{offered}` but not SCRAM-SHA-256")]
    NoScram { offered: String },
    #[error("the SCRAM exchange failed; the server's proof did not verify (is something between walhook and Postgres?)")]
    Scram {
        #[source]
        source: io::Error,
    },
}

impl ReplicationError {
    /// The SQLSTATE of a server error, e.g. `42710` when a slot already exists.
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            ReplicationError::Auth {
                source: AuthFailure::Rejected { code, .. },
                ..
            } => Some(code),
            _ => None,
        }
    }
}

fn prefixed(prefix: &str, text: &Option<String>) -> String {
    text.as_deref()
        .map(|t| format!("{prefix}{t}"))
        .unwrap_or_default()
}

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's unique id (a 64-bit number, as text).
    pub system_id: String,
    pub timeline: u32,
    /// The current end of WAL.
    pub xlogpos: Lsn,
    /// The database connected to.
    pub dbname: Option<String>,
}

/// A logged-in replication connection, ready for replication commands.
pub struct ReplicationClient {
    conn: Conn,
    server_version_num: u32,
    backend_pid: i32,
}

impl ReplicationClient {
    /// Connects and logs in with `replication=database`. The session settings fix how the
    /// server prints values into pgoutput's text: UTC, ISO dates, round-trip floats.
    pub async fn connect(spec: &ConnectSpec) -> Result<Self, ReplicationError> {
        let (stream, addr) = open(spec).await?;
        let tls = stream.is_tls();
        let mut conn = Conn::new(stream, addr);
        let params = [
            ("user", spec.user.as_str()),
            ("database", &spec.dbname),
            ("replication", "database"),
            ("application_name", &spec.application_name),
            ("client_encoding", "UTF8"),
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "1"),
            ("bytea_output", "hex"),
        ];
        frontend::startup_message(params, &mut conn.wbuf).map_err(|e| conn.encode_err(e))?;
        conn.flush().await?;
        authenticate(&mut conn, spec).await?;
        let mut server_version_num = 0;
        let mut backend_pid = 0;
        loop {
            match conn.read().await? {
                Frame::Message(Message::ReadyForQuery(_)) => break,
                Frame::Message(Message::ParameterStatus(p)) => {
                    if p.name().ok() == Some("server_version") {
                        server_version_num = p.value().map(parse_server_version).unwrap_or(0);
                    }
                }
                Frame::Message(Message::BackendKeyData(key)) => backend_pid = key.process_id(),
                Frame::Message(Message::NoticeResponse(_)) => {}
                Frame::Message(Message::ErrorResponse(body)) => return Err(conn.server_err(&body)),
                other => return Err(conn.unexpected(&other, "after authentication")),
            }
        }
        debug!(addr = %conn.addr, server_version_num, tls, "replication connection ready");
        Ok(ReplicationClient {
            conn,
            server_version_num,
            backend_pid,
        })
    }

    /// The server's version as a number, e.g. `150004` for 15.4.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// The server process serving this connection (`pg_replication_slots.active_pid`).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Runs replication commands (or plain SQL) with the simple query protocol and returns
    /// every row's values as text. Commands that start a COPY are refused by the server's
    /// answer being treated as a protocol error; use [`Self::start_replication`] for those.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        let conn = &mut self.conn;
        frontend::query(sql, &mut conn.wbuf).map_err(|e| conn.encode_err(e))?;
        conn.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match conn.read().await? {
                Frame::Message(Message::DataRow(row)) => rows.push(conn.row_text(&row)?),
                Frame::Message(
                    Message::RowDescription(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::ParameterStatus(_)
                    | Message::NoticeResponse(_),
                ) => {}
                // The server still sends ReadyForQuery; read it so the connection stays usable.
                Frame::Message(Message::ErrorResponse(body)) => {
                    error.get_or_insert(conn.server_err(&body));
                }
                Frame::Message(Message::ReadyForQuery(_)) => {
                    return error.map_or(Ok(rows), Err);
                }
                other => return Err(conn.unexpected(&other, "in answer to a query")),
            }
        }
    }

    /// `IDENTIFY_SYSTEM`: the cluster id, timeline and current end of WAL.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = self.conn.single_row(rows, 4, "IDENTIFY_SYSTEM")?;
        let timeline = row[1].as_deref().and_then(|t| t.parse().ok());
        let xlogpos = row[2].as_deref().and_then(|l| l.parse().ok());
        let (Some(system_id), Some(timeline), Some(xlogpos)) = (row[0].clone(), timeline, xlogpos)
        else {
            return Err(self
                .conn
                .protocol(format!("unreadable IDENTIFY_SYSTEM row {row:?}")));
        };
        Ok(SystemIdentity {
            system_id,
            timeline,
            xlogpos,
            dbname: row[3].clone(),
        })
    }

    /// Creates logical slot `name` for pgoutput, without exporting a snapshot, and returns
    /// its consistent point: the slot streams every transaction that commits after it.
    pub async fn create_slot(&mut self, name: &str) -> Result<Lsn, ReplicationError> {
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            quote_ident(name)
        );
        let rows = self.simple_query(&sql).await?;
        let row = self.conn.single_row(rows, 4, "CREATE_REPLICATION_SLOT")?;
        let lsn = row[1].as_deref().and_then(|l| l.parse().ok());
        let lsn = lsn.ok_or_else(|| {
            self.conn.protocol(format!(
                "CREATE_REPLICATION_SLOT row without an LSN: {row:?}"
            ))
        })?;
        info!(slot = name, consistent_point = %lsn, "created replication slot");
        Ok(lsn)
    }

    /// Starts streaming slot `slot` from `start` (pgoutput protocol 1, with logical messages
    /// on Postgres 14+). The server resumes from the slot's confirmed position if `start` is
    /// behind it, so `Lsn(0)` means "where the slot is".
    pub async fn start_replication(
        mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
    ) -> Result<ReplicationStream, ReplicationError> {
        let mut sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names {}",
            quote_ident(slot),
            quote_literal(&quote_ident(publication)),
        );
        // The `messages` option arrived in Postgres 14; older servers reject unknown options.
        if self.server_version_num >= 140_000 {
            sql.push_str(", messages 'true'");
        }
        sql.push(')');
        let conn = &mut self.conn;
        frontend::query(&sql, &mut conn.wbuf).map_err(|e| conn.encode_err(e))?;
        conn.flush().await?;
        let mut error = None;
        loop {
            match conn.read().await? {
                Frame::CopyBoth => break,
                Frame::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                Frame::Message(Message::ErrorResponse(body)) => {
                    error.get_or_insert(conn.server_err(&body));
                }
                Frame::Message(Message::ReadyForQuery(_)) => {
                    return Err(error.unwrap_or_else(|| {
                        conn.protocol("START_REPLICATION ended without starting to copy".into())
                    }));
                }
                other => return Err(conn.unexpected(&other, "in answer to START_REPLICATION")),
            }
        }
        info!(slot, publication, start = %start, "replication started");
        Ok(ReplicationStream {
            conn: self.conn,
            server_done: false,
        })
    }

    /// Ends the session politely.
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        self.conn.terminate().await
    }
}

/// A running `START_REPLICATION`: CopyData both ways.
///
/// [`Self::recv`] is cancel-safe: a partly received message stays in the connection's buffer,
/// so `recv` may sit in a `tokio::select!` against a timer. A send that is cancelled keeps its
/// unsent bytes and finishes them before the next send or receive.
pub struct ReplicationStream {
    conn: Conn,
    /// The server ended the copy (sent CopyDone).
    server_done: bool,
}

impl ReplicationStream {
    /// The next CopyData payload (XLogData or keepalive, see [`super::ReplicationMessage`]),
    /// or `None` once the server has ended the stream; then call [`Self::finish`].
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ReplicationError> {
        if self.server_done {
            return Ok(None);
        }
        if self.conn.unflushed {
            self.conn.flush().await?;
        }
        loop {
            match self.conn.read().await? {
                Frame::Message(Message::CopyData(body)) => return Ok(Some(body.into_bytes())),
                // A server shutting down ends the copy; some send CommandComplete straight away.
                Frame::Message(
                    Message::CopyDone | Message::CommandComplete(_) | Message::ReadyForQuery(_),
                ) => {
                    self.server_done = true;
                    return Ok(None);
                }
                Frame::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                Frame::Message(Message::ErrorResponse(body)) => {
                    return Err(self.conn.server_err(&body))
                }
                other => return Err(self.conn.unexpected(&other, "while streaming")),
            }
        }
    }

    /// Sends one CopyData message with `payload` and flushes it.
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), ReplicationError> {
        let conn = &mut self.conn;
        frontend::CopyData::new(payload)
            .map_err(|e| conn.encode_err(e))?
            .write(&mut conn.wbuf);
        conn.flush().await
    }

    /// Sends a standby status update: the server may free WAL up to `update.flush`.
    pub async fn send_status(
        &mut self,
        update: &StandbyStatusUpdate,
    ) -> Result<(), ReplicationError> {
        self.send_copy_data(&update.encode()).await
    }

    /// Ends streaming: sends CopyDone, discards the data still in flight until the server
    /// confirms, then logs out. The slot becomes inactive.
    pub async fn finish(mut self) -> Result<(), ReplicationError> {
        let conn = &mut self.conn;
        frontend::copy_done(&mut conn.wbuf);
        conn.flush().await?;
        loop {
            match conn.read().await {
                Ok(Frame::Message(Message::ReadyForQuery(_))) => break,
                Ok(Frame::Message(
                    Message::CopyData(_)
                    | Message::CopyDone
                    | Message::CommandComplete(_)
                    | Message::NoticeResponse(_)
                    | Message::ParameterStatus(_),
                )) => {}
                Ok(Frame::Message(Message::ErrorResponse(body))) => {
                    return Err(conn.server_err(&body))
                }
                Ok(other) => return Err(conn.unexpected(&other, "while finishing the stream")),
                // A server that ended the stream itself may close right after.
                Err(ReplicationError::Io { source, .. })
                    if self.server_done && source.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.conn.terminate().await
    }
}

/// `"name"`, with embedded quotes doubled, as the replication command parser reads it.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled (the replication parser knows no backslash escapes).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `server_version` (`15.4 (Debian 15.4-1)`, `16beta1`, `9.6.3`) as `server_version_num`.
fn parse_server_version(text: &str) -> u32 {
    let mut numbers = text
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|part| !part.is_empty())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    if major >= 10 {
        major * 10_000 + minor
    } else {
        let patch = numbers.next().unwrap_or(0);
        major * 10_000 + minor * 100 + patch
    }
}

#[cfg(test)]
mod tests;
