//! `[state]`: where walhook keeps what it must remember, an SQLite file or a Postgres schema.

use std::path::Path;
use std::time::Duration;

use super::errors::Errors;
use crate::config::raw::RawState;
use crate::config::{Secret, StateConfig};

const DEFAULT_PATH: &str = "walhook-state.db";
const DEFAULT_SCHEMA: &str = "walhook";
/// The default lease: a standby takes over within about 11 s of a leader's death.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Shorter leases would need renewals more often than a loaded state database answers.
const MIN_LEASE: Duration = Duration::from_secs(1);
const EXAMPLE_URL: &str = "postgres://walhook:${PGPASSWORD}@db.internal:5432/app";

pub(super) fn validate_state(
    raw: Option<RawState>,
    base_dir: &Path,
    errors: &mut Errors,
) -> StateConfig {
    let raw = raw.unwrap_or_default();
    errors.unknown("state", &raw.unknown, &["path", "url", "schema", "lease"]);
    if raw.url.is_some() && raw.path.is_some() {
        errors.add(
            "state.url",
            format!(
                "cannot be set together with state.path: the state is either an SQLite file \
                 (`path`) or a schema in Postgres (`url`); remove one, e.g. keep `url = \"{EXAMPLE_URL}\"`"
            ),
        );
    }
    let Some(url) = raw.url else {
        for (key, set) in [
            ("state.schema", raw.schema.is_some()),
            ("state.lease", raw.lease.is_some()),
        ] {
            if set {
                errors.add(
                    key,
                    format!(
                        "applies only to state in Postgres: set state.url too, e.g. `url = \"{EXAMPLE_URL}\"`, or remove it"
                    ),
                );
            }
        }
        return file(raw.path, base_dir, errors);
    };
    let is_postgres = url::Url::parse(&url)
        .map(|u| matches!(u.scheme(), "postgres" | "postgresql") && u.has_host())
        .unwrap_or(false);
    if !is_postgres {
        errors.add(
            "state.url",
            format!("must be a postgres:// URL with a host, e.g. `{EXAMPLE_URL}`"),
        );
    }
    let schema = errors.pg_name("state.schema", raw.schema, DEFAULT_SCHEMA);
    if schema.starts_with("pg_") {
        errors.add(
            "state.schema",
            format!(
                "must not start with `pg_` (Postgres reserves those names), e.g. `{DEFAULT_SCHEMA}`; got `{schema}`"
            ),
        );
    }
    let lease = errors.duration("state.lease", raw.lease.as_deref(), DEFAULT_LEASE);
    if lease < MIN_LEASE {
        errors.add(
            "state.lease",
            format!(
                "must be at least 1s (the leader renews it every quarter of it), e.g. `10s`; got `{}`",
                raw.lease.as_deref().unwrap_or_default()
            ),
        );
    }
    StateConfig::Postgres {
        url: Secret::new(url),
        schema,
        lease,
    }
}

fn file(path: Option<String>, base_dir: &Path, errors: &mut Errors) -> StateConfig {
    let path = path.unwrap_or_else(|| DEFAULT_PATH.to_string());
    if path.is_empty() {
        errors.add(
            "state.path",
            format!("must be a file path, e.g. `{DEFAULT_PATH}`; got an empty string"),
        );
    }
    StateConfig::File {
        path: base_dir.join(path),
    }
}
