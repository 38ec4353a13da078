//! The ordinary SQL connection (tokio-postgres), for slot and publication management, `check`
//! and `status`. It opens its socket and TLS through [`super::open`] and hands the ready stream
//! to tokio-postgres, so TLS behaves exactly as on the replication connection.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::warn;

use super::{open, server_advice, ConnectSpec, OpenError, SpecError};

/// The SQL connection could not be set up. Each message names the cause and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("source.url is not a usable connection string")]
    Spec(#[source] SpecError),
    /// The socket or TLS: its text says it all (and says it once in an error chain).
    #[error(transparent)]
    Open(#[from] OpenError),
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
