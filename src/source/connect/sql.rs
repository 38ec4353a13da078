//! The ordinary SQL connection (tokio-postgres), for slot and publication management, `check`
//! and `status`. It opens its socket and TLS through [`super::open`] and hands the ready stream
//! to tokio-postgres, so TLS behaves exactly as on the replication connection.

use std::io;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::warn;

use super::{open, ConnectSpec, OpenError, SpecError, TlsError};

/// The SQL connection could not be set up. Each message names the cause and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("source.url is not a usable connection string")]
    Spec(#[source] SpecError),
    #[error("could not reach Postgres at {addr}{}", io_advice(.source, .addr))]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS with Postgres at {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: TlsError,
    },
    #[error("Postgres at {addr} did not let user `{user}` in; check the user and password in source.url, and that pg_hba.conf allows this user")]
    Auth {
        addr: String,
        user: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("Postgres at {addr} refused the connection (SQLSTATE {code}){}", server_advice(.code))]
    Server {
        addr: String,
        code: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the connection to Postgres at {addr} failed during startup")]
    Startup {
        addr: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl From<OpenError> for ConnectError {
    fn from(err: OpenError) -> Self {
        match err {
            OpenError::Io { addr, source } => ConnectError::Io { addr, source },
            OpenError::Tls { addr, source } => ConnectError::Tls { addr, source },
        }
    }
}

/// [`connect_sql`] for a `source.url` string.
pub async fn connect_sql_url(url: &str) -> Result<Client, ConnectError> {
    let spec = url.parse().map_err(ConnectError::Spec)?;
    connect_sql(&spec).await
}

/// Connects for ordinary SQL and spawns the connection's task on the current runtime. The
/// session runs with `TimeZone=UTC`, so timestamps read as text are in UTC.
///
/// The socket is opened by walhook, so the client's `CancelToken` can only cancel through
/// `cancel_query_raw` on a stream the caller opens.
pub async fn connect_sql(spec: &ConnectSpec) -> Result<Client, ConnectError> {
    let (stream, addr) = open(spec).await?;
    let mut config = tokio_postgres::Config::new();
    config
        .user(&spec.user)
        .dbname(&spec.dbname)
        .application_name(&spec.application_name)
        .options("-c TimeZone=UTC");
    if let Some(password) = &spec.password {
        config.password(password);
    }
    // TLS, if any, is already on: tokio-postgres must not ask again.
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, connection) = config
        .connect_raw(stream, NoTls)
        .await
        .map_err(|source| classify(source, addr.clone(), &spec.user))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            warn!(addr = %addr, error = %error, "the SQL connection to Postgres ended with an error");
        }
    });
    Ok(client)
}

fn classify(source: tokio_postgres::Error, addr: String, user: &str) -> ConnectError {
    let code = source.code().cloned();
    let auth = |source| ConnectError::Auth {
        addr: addr.clone(),
        user: user.to_string(),
        source,
    };
    match code {
        Some(c)
            if c == SqlState::INVALID_PASSWORD
                || c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            auth(source)
        }
        Some(c) => ConnectError::Server {
            addr,
            code: c.code().to_string(),
            source,
        },
        // tokio-postgres's own auth failures (no password given, bad SCRAM proof) carry no
        // SQLSTATE; its error kinds are private, so their text is all there is to go on.
        None if is_client_side_auth_failure(&source) => auth(source),
        None => ConnectError::Startup { addr, source },
    }
}

fn is_client_side_auth_failure(err: &tokio_postgres::Error) -> bool {
    let text = err.to_string();
    text.starts_with("authentication error") || text.contains("password missing")
}

/// Advice for an I/O error while reaching `addr`, chosen by its kind.
pub(crate) fn io_advice(err: &io::Error, addr: &str) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => format!("; is Postgres running at {addr}?"),
        io::ErrorKind::NotFound if addr.starts_with('/') => format!(
            "; is Postgres running with its socket at {addr}? check the host (socket directory) and port in source.url"
        ),
        io::ErrorKind::TimedOut => "; is the host reachable and the port open? check the host and port in source.url".to_string(),
        io::ErrorKind::PermissionDenied => "; check the permissions of the socket directory".to_string(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            "; the server closed the connection (restarted, or the backend was terminated?)".to_string()
        }
        _ => "; check the host and port in source.url".to_string(),
    }
}

/// Advice for a server error, chosen by its SQLSTATE; empty when the server's message and
/// hint say it all.
pub(crate) fn server_advice(code: &str) -> &'static str {
    match code {
        "3D000" => "; the database does not exist: check the database name in source.url",
        "28P01" | "28000" => {
            "; check the user and password in source.url, and that pg_hba.conf allows this user"
        }
        "42501" => {
            "; the role lacks a privilege: walhook's role needs REPLICATION (ALTER ROLE ... REPLICATION)"
        }
        "53300" => "; the server has too many connections: raise max_connections or max_wal_senders",
        "57P03" => "; the server is starting up or shutting down: try again shortly",
        "55006" => "; the slot is in use by another connection: stop the other walhook or client",
        "42704" => "; the slot or publication does not exist: run `walhook setup`",
        "42710" => "; it already exists",
        "55000" => "; check wal_level = logical and max_replication_slots in postgresql.conf",
        _ => "",
    }
}
