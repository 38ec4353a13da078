//! `[state]`: where walhook keeps what it must remember, an SQLite file or a Postgres schema.

use std::path::Path;

use super::errors::Errors;
use crate::config::raw::RawState;
use crate::config::{Secret, StateConfig};

const DEFAULT_PATH: &str = "walhook-state.db";
const DEFAULT_SCHEMA: &str = "walhook";
const EXAMPLE_URL: &str = "postgres://walhook:${PGPASSWORD}@db.internal:5432/app";

pub(super) fn validate_state(
    raw: Option<RawState>,
    base_dir: &Path,
    errors: &mut Errors,
) -> StateConfig {
    let raw = raw.unwrap_or_default();
    errors.unknown("state", &raw.unknown, &["path", "url", "schema"]);
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
        if raw.schema.is_some() {
            errors.add(
                "state.schema",
                format!(
                    "applies only to state in Postgres: set state.url too, e.g. `url = \"{EXAMPLE_URL}\"`, or remove it"
                ),
            );
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
    StateConfig::Postgres {
        url: Secret::new(url),
        schema,
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
