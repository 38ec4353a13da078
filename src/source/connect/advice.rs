//! What to check when a connection fails, chosen by the error's kind or SQLSTATE. Both
//! connections' messages end with it.

use std::io;

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
