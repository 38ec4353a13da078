//! Configuration: the TOML file is parsed into raw structs, `${VAR}`s are expanded, and
//! `validate` turns it into a [`Config`] or reports every problem at once. The rest of walhook
//! only ever sees the validated types.

mod expand;
mod raw;
mod units;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use expand::{expand, ExpandError};
pub use units::{parse_bytes, parse_duration};

use crate::model::{Operation, TableName};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: SourceConfig,
    pub state: StateConfig,
    pub api: Option<ApiConfig>,
    /// Sorted by name.
    pub subscribers: Vec<SubscriberConfig>,
    /// In file order; the order numbers events that one change yields several of.
    pub events: Vec<EventRule>,
}

impl Config {
    pub fn subscriber(&self, name: &str) -> Option<&SubscriberConfig> {
        self.subscribers.iter().find(|s| s.name == name)
    }

    /// Every table some rule maps, each once, in first-mention order.
    pub fn tables(&self) -> Vec<&TableName> {
        let mut tables: Vec<&TableName> = Vec::new();
        for rule in &self.events {
            if !tables.contains(&&rule.table) {
                tables.push(&rule.table);
            }
        }
        tables
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The connection URL; holds the password, so only `expose` shows it.
    pub url: Secret,
    pub slot: String,
    pub publication: String,
    pub status_interval: Duration,
    pub heartbeat_interval: Duration,
    pub lag_warn_bytes: u64,
    /// Events decoded but not yet settled that walhook holds in memory before it pauses
    /// reading the stream.
    pub max_unsettled: usize,
    /// The canary table: walhook writes a row to it in a transaction of its own and checks
    /// that the stream carries it (see `source::canary`). `None`: no canary.
    pub canary: Option<TableName>,
    /// Create the slot as a failover slot (Postgres 17+), so that it is synchronized to
    /// physical standbys and survives a promotion.
    pub failover: bool,
}

/// Where walhook keeps what it must remember (`[state]`).
#[derive(Debug, Clone)]
pub enum StateConfig {
    /// One SQLite file, the default. Relative paths in the config file are resolved against
    /// its directory.
    File { path: PathBuf },
    /// A schema of its own in a Postgres database, created by walhook if missing.
    Postgres {
        /// The connection URL; holds the password, so only `expose` shows it.
        url: Secret,
        schema: String,
        /// How long a leader's lease lasts without renewal: a standby takes over at most this
        /// long (plus its poll) after the leader stopped renewing (see `app::leader`).
        lease: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: std::net::SocketAddr,
    /// The bearer token of the control routes (`POST /subscribers/{name}/pause|resume`,
    /// `GET /subscribers`); without one they are not served.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    pub name: String,
    pub url: url::Url,
    /// The decoded HMAC key of a `whsec_` secret; `None` sends unsigned requests.
    pub signing_key: Option<SecretBytes>,
    /// Extra request headers; values may hold tokens, so they are secrets.
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub batch_size: usize,
    /// How long a partial batch may wait for more events while a request slot is free; zero
    /// (the default) sends it at once. Under load, batches fill while every slot is busy.
    pub batch_wait: Duration,
    pub retry: RetryConfig,
    /// When `walhook run` creates the slot, backfill every table mapped to this subscriber.
    pub initial_backfill: bool,
    /// Cleartext HTTP/2 with prior knowledge to an `http://` URL (the receiver must speak it).
    pub h2c: bool,
    /// The most requests per unit of time (`rate_limit = "50/s"`); `None`: no limit.
    pub rate_limit: Option<RateLimit>,
}

/// `subscribers.<name>.rate_limit`: at most `requests` requests per `per` (a second, a minute
/// or an hour), live and held deliveries alike; a batch is one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    /// The limit in requests per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.per.as_secs_f64()
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    pub initial: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
}

/// One `[[events]]` rule.
#[derive(Debug, Clone)]
pub struct EventRule {
    pub event_type: String,
    pub table: TableName,
    pub operations: Vec<Operation>,
    pub subscribers: Vec<String>,
    /// A CEL expression over `row` and `old`; it compiled during validation.
    pub when: Option<String>,
    pub columns: Option<Vec<String>>,
    pub key: Option<Vec<String>>,
}

/// A string that must never reach a log line: Debug and Display print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Key bytes that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One problem in the config file: where, and what a good value looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}; pass --config or set WALHOOK_CONFIG")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n{}", .errors.len(), list(.errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<ConfigError>,
    },
}

fn list(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  - {e}")).collect();
    lines.join("\n")
}

/// Reads, expands and validates the config file at `path`, with `${VAR}`s from the process
/// environment.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, base_dir, &|name| std::env::var(name).ok()).map_err(|e| match e {
        ParseError::Syntax(message) => LoadError::Syntax {
            path: path.to_path_buf(),
            message,
        },
        ParseError::Invalid(errors) => LoadError::Invalid {
            path: path.to_path_buf(),
            errors,
        },
    })
}

/// Why config text was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<ConfigError>),
}

/// Parses and validates config text; `lookup` supplies `${VAR}` values and `base_dir` anchors
/// relative paths.
pub fn parse(
    text: &str,
    base_dir: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ParseError> {
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ParseError::Syntax(e.to_string()))?;
    let mut errors = Vec::new();
    expand_strings(&mut doc, "", lookup, &mut errors);
    if !errors.is_empty() {
        return Err(ParseError::Invalid(errors));
    }
    let raw: raw::RawConfig =
        toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| {
                // A value of the wrong type. The expanded document has no positions, but expansion
                // only changes the text inside strings, never a value's type: the file as written
                // has the same error, and reading it again says where (line, column, the key).
                match toml::from_str::<raw::RawConfig>(text) {
                    Err(spanned) => ParseError::Syntax(spanned.to_string()),
                    Ok(_) => ParseError::Syntax(e.message().to_string()),
                }
            })?;
    validate::validate(raw, base_dir).map_err(ParseError::Invalid)
}

/// Expands `${VAR}` in every string value of the document (never in keys).
fn expand_strings(
    table: &mut toml::Table,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        expand_value(value, &path, lookup, errors);
    }
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        toml::Value::String(s) => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(e) => errors.push(ConfigError {
                key: path.to_string(),
                message: e.to_string(),
            }),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        toml::Value::Table(table) => expand_strings(table, path, lookup, errors),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
