//! Where and how to reach Postgres: the connection settings parsed from `source.url`, the
//! socket and TLS setup both connections share, and the ordinary SQL connection.
//!
//! `source.url` is parsed here rather than by tokio-postgres, because its parser rejects
//! `sslmode=verify-ca` and `verify-full`. Both connections open their socket and negotiate TLS
//! through [`transport`], so sslmode means the same thing for SQL and for replication.

mod advice;
mod sql;
mod transport;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub(crate) use advice::{io_advice, server_advice};
pub use sql::{connect_sql, connect_sql_url, ConnectError};
pub(crate) use transport::{open, PgStream};
pub use transport::{OpenError, TlsError};

const DEFAULT_PORT: u16 = 5432;
const DEFAULT_HOST: &str = "localhost";
const DEFAULT_APPLICATION_NAME: &str = "walhook";
const EXAMPLE_URL: &str = "postgres://walhook:secret@db.internal:5432/app?sslmode=require";
const SUPPORTED_PARAMS: &str =
    "host, port, user, password, dbname, sslmode, sslrootcert, application_name, connect_timeout";

/// How to reach one Postgres server and log in, parsed from `source.url`.
///
/// Both `postgres://user:pass@host:port/db?param=value` URLs and libpq's `key=value` form are
/// accepted. Several hosts (`h1:5432,h2:5433`) are tried in order, like libpq does. A host that
/// starts with `/` (percent-encoded in a URL: `%2Ftmp`) is a Unix socket directory.
///
/// `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectSpec {
    /// Tried in order; never empty when parsed.
    pub hosts: Vec<Endpoint>,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    /// PEM file of trusted CA certificates. `None` or the path `system`: the public web roots.
    pub sslrootcert: Option<PathBuf>,
    pub application_name: String,
    /// Limit for opening the socket and the TLS handshake, per host. `None`: the OS's limit.
    pub connect_timeout: Option<Duration>,
}

/// One server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name or an IP address.
    Tcp(String),
    /// The directory holding the server's socket `.s.PGSQL.<port>`. TLS is never used on it.
    Unix(PathBuf),
}

/// libpq's sslmode, minus `allow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, else plain; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked, unless `sslrootcert` names a file, in
    /// which case it behaves as `VerifyCa` (as libpq does).
    Require,
    /// TLS, and the certificate must chain to a trusted CA; its host name is not checked.
    VerifyCa,
    /// TLS, the certificate must chain to a trusted CA and name the host connected to.
    VerifyFull,
}

/// `source.url` could not be understood. Messages never quote the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("must be a `postgres://` or `postgresql://` URL or libpq `key=value` pairs, e.g. `{EXAMPLE_URL}`")]
    Form,
    #[error("{what} has a bad percent-escape; write a literal `%` as `%25`")]
    BadEscape { what: &'static str },
    #[error("{what} is not UTF-8 after percent-decoding")]
    NotUtf8 { what: &'static str },
    #[error("{what} contains a NUL character, which Postgres cannot accept")]
    Nul { what: &'static str },
    #[error("host `{host}` has an unclosed `[`; write IPv6 addresses like `[::1]:5432`")]
    BadHost { host: String },
    #[error("port `{port}` is not a number from 1 to 65535, e.g. `db.internal:5432`")]
    BadPort { port: String },
    #[error("{ports} ports for {hosts} hosts; give one port for all hosts or one per host")]
    PortCount { ports: usize, hosts: usize },
    #[error("names no user; add one, e.g. `{EXAMPLE_URL}`")]
    NoUser,
    #[error("sslmode `{value}` is not one of disable, prefer, require, verify-ca, verify-full")]
    BadSslMode { value: String },
    #[error(
        "connect_timeout `{value}` is not a whole number of seconds, e.g. `connect_timeout=10`"
    )]
    BadTimeout { value: String },
    #[error(
        "walhook does not support the connection parameter `{key}`; supported: {SUPPORTED_PARAMS}"
    )]
    UnknownParam { key: String },
    #[error("expected `key=value` at character {at}, e.g. `host=db.internal user=walhook`")]
    KeyValue { at: usize },
    #[error("the quoted value of `{key}` has no closing `'`")]
    Unterminated { key: String },
}

impl FromStr for ConnectSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        let parts = if let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            Parts::from_url(rest)?
        } else if s.contains('=') {
            Parts::from_key_values(s)?
        } else {
            return Err(SpecError::Form);
        };
        parts.build()
    }
}

/// The raw settings as given, before defaults and cross-checks.
#[derive(Default)]
struct Parts {
    hosts: Vec<String>,
    ports: Vec<Option<u16>>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<SslMode>,
    sslrootcert: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<Duration>,
}

impl Parts {
    /// `[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`, scheme stripped.
    fn from_url(rest: &str) -> Result<Parts, SpecError> {
        let mut parts = Parts::default();
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // The last `@` ends the credentials, so a password may contain a raw `@`.
        let hostlist = match authority.rsplit_once('@') {
            Some((userinfo, hostlist)) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                parts.user = Some(decode(user, "the user")?).filter(|u| !u.is_empty());
                parts.password = password.map(|p| decode(p, "the password")).transpose()?;
                hostlist
            }
            None => authority,
        };
        if !hostlist.is_empty() {
            for entry in hostlist.split(',') {
                let (host, port) = split_host_port(entry)?;
                parts.hosts.push(decode(host, "a host")?);
                parts.ports.push(port.map(parse_port).transpose()?);
            }
        }
        if !path.is_empty() {
            parts.dbname = Some(decode(path, "the database name")?);
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key, "a parameter name")?;
            parts.set(&key, decode(value, "a parameter value")?)?;
        }
        Ok(parts)
    }

    /// libpq's `key=value key2='quoted \' value'` form.
    fn from_key_values(s: &str) -> Result<Parts, SpecError> {
        let mut parts = Parts::default();
        let mut chars = s.char_indices().peekable();
        let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        };
        loop {
            skip_space(&mut chars);
            let Some(&(start, _)) = chars.peek() else {
                return Ok(parts);
            };
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
                key.push(c);
            }
            skip_space(&mut chars);
            if key.is_empty() || chars.next_if(|(_, c)| *c == '=').is_none() {
                return Err(SpecError::KeyValue { at: start });
            }
            skip_space(&mut chars);
            let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '\'' if quoted => {
                        closed = true;
                        break;
                    }
                    c if c.is_whitespace() && !quoted => break,
                    c => value.push(c),
                }
            }
            if quoted && !closed {
                return Err(SpecError::Unterminated { key });
            }
            parts.set(&key, value)?;
        }
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), SpecError> {
        match key {
            "host" => self.hosts = value.split(',').map(str::to_string).collect(),
            "port" => {
                self.ports = value
                    .split(',')
                    .map(|p| Some(p).filter(|p| !p.is_empty()).map(parse_port))
                    .map(Option::transpose)
                    .collect::<Result<_, _>>()?
            }
            "user" => self.user = Some(value).filter(|u| !u.is_empty()),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value).filter(|d| !d.is_empty()),
            "sslmode" => self.sslmode = Some(value.parse()?),
            "sslrootcert" => self.sslrootcert = Some(value).filter(|p| !p.is_empty()),
            "application_name" => self.application_name = Some(value),
            "connect_timeout" => {
                let secs: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| SpecError::BadTimeout { value })?;
                // libpq: zero means wait forever.
                self.connect_timeout = Some(Duration::from_secs(secs)).filter(|d| !d.is_zero());
            }
            _ => {
                return Err(SpecError::UnknownParam {
                    key: key.to_string(),
                })
            }
        }
        Ok(())
    }

    fn build(self) -> Result<ConnectSpec, SpecError> {
        let mut hosts = self.hosts;
        if hosts.is_empty() {
            hosts.push(String::new());
        }
        let ports = match self.ports.len() {
            0 => vec![None; hosts.len()],
            1 => vec![self.ports[0]; hosts.len()],
            n if n == hosts.len() => self.ports,
            n => {
                return Err(SpecError::PortCount {
                    ports: n,
                    hosts: hosts.len(),
                })
            }
        };
        let hosts = hosts
            .into_iter()
            .zip(ports)
            .map(|(host, port)| {
                let host = if host.is_empty() {
                    Host::Tcp(DEFAULT_HOST.to_string())
                } else if host.starts_with('/') {
                    Host::Unix(PathBuf::from(host))
                } else {
                    Host::Tcp(host)
                };
                let port = port.unwrap_or(DEFAULT_PORT);
                Endpoint { host, port }
            })
            .collect();
        let user = self.user.ok_or(SpecError::NoUser)?;
        let spec = ConnectSpec {
            hosts,
            dbname: self.dbname.unwrap_or_else(|| user.clone()),
            user,
            password: self.password,
            sslmode: self.sslmode.unwrap_or_default(),
            sslrootcert: self.sslrootcert.map(PathBuf::from),
            application_name: self
                .application_name
                .unwrap_or_else(|| DEFAULT_APPLICATION_NAME.to_string()),
            connect_timeout: self.connect_timeout,
        };
        spec.check_no_nul()?;
        Ok(spec)
    }
}

impl ConnectSpec {
    /// Startup messages are NUL-terminated strings: a NUL would cut a value short silently.
    fn check_no_nul(&self) -> Result<(), SpecError> {
        let fields = [
            (&self.user, "the user"),
            (&self.dbname, "the database name"),
            (&self.application_name, "application_name"),
        ];
        let password = self.password.iter().map(|p| (p, "the password"));
        for (value, what) in fields.into_iter().chain(password) {
            if value.contains('\0') {
                return Err(SpecError::Nul { what });
            }
        }
        Ok(())
    }

    /// The hosts and ports for messages and logs: `db1:5432,db2:5432`.
    pub fn addresses(&self) -> String {
        let all: Vec<String> = self.hosts.iter().map(Endpoint::to_string).collect();
        all.join(",")
    }
}

/// `host:port`, `[v6]:port`, `host`, `:port` or empty.
fn split_host_port(entry: &str) -> Result<(&str, Option<&str>), SpecError> {
    if let Some(v6) = entry.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| SpecError::BadHost {
            host: entry.to_string(),
        })?;
        return Ok((host, after.strip_prefix(':')));
    }
    Ok(match entry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (entry, None),
    })
}

fn parse_port(text: &str) -> Result<u16, SpecError> {
    text.parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| SpecError::BadPort {
            port: text.to_string(),
        })
}

/// Percent-decoding as libpq does it: `%XX` only; `+` stays a plus.
fn decode(text: &str, what: &'static str) -> Result<String, SpecError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(SpecError::BadEscape { what })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| SpecError::NotUtf8 { what })
}

/// Percent-encodes all but URL-unreserved characters, so `Display` output parses back.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FromStr for SslMode {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(SpecError::BadSslMode {
                    value: s.to_string(),
                })
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

impl fmt::Display for Endpoint {
    /// `host:port`, `[::1]:port`, or the socket file's path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]:{}", self.port),
            Host::Tcp(name) => write!(f, "{name}:{}", self.port),
            Host::Unix(dir) => write!(
                f,
                "{}",
                dir.join(format!(".s.PGSQL.{}", self.port)).display()
            ),
        }
    }
}

impl fmt::Display for ConnectSpec {
    /// The settings as a URL without the password, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}@", encode(&self.user))?;
        for (i, ep) in self.hosts.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            match &ep.host {
                Host::Tcp(name) if name.contains(':') => write!(f, "{sep}[{name}]:{}", ep.port)?,
                Host::Tcp(name) => write!(f, "{sep}{}:{}", encode(name), ep.port)?,
                Host::Unix(dir) => {
                    write!(f, "{sep}{}:{}", encode(&dir.to_string_lossy()), ep.port)?
                }
            }
        }
        write!(f, "/{}?sslmode={}", encode(&self.dbname), self.sslmode)?;
        if let Some(root) = &self.sslrootcert {
            write!(f, "&sslrootcert={}", encode(&root.to_string_lossy()))?;
        }
        write!(f, "&application_name={}", encode(&self.application_name))?;
        if let Some(t) = self.connect_timeout {
            write!(f, "&connect_timeout={}", t.as_secs())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectSpec")
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests;
