//! The problems found so far, and the checks of the kinds of value every section has:
//! durations, counts, Postgres names, table names and unknown keys.

use std::time::Duration;

use crate::config::raw::Unknown;
use crate::config::units::parse_duration;
use crate::config::ConfigError;
use crate::model::TableName;

pub(super) struct Errors(pub(super) Vec<ConfigError>);

impl Errors {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn unknown(&mut self, prefix: &str, unknown: &Unknown, known: &[&str]) {
        for key in unknown.keys() {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            self.add(
                path,
                format!("unknown key; the keys here are {}", known.join(", ")),
            );
        }
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        let Some(text) = value else { return default };
        parse_duration(text).unwrap_or_else(|| {
            self.add(
                key,
                format!(
                    "must be a duration: a whole number with unit ms, s, m, h or d, e.g. `10s`; got `{text}`"
                ),
            );
            default
        })
    }

    pub(super) fn count(
        &mut self,
        key: &str,
        value: Option<i64>,
        default: usize,
        example: &str,
    ) -> usize {
        match value {
            None => default,
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            Some(n) => {
                self.add(
                    key,
                    format!(
                        "must be a whole number from 1 to 1000000, e.g. `{example}`; got `{n}`"
                    ),
                );
                default
            }
        }
    }

    /// A slot or publication name: what Postgres accepts for a replication slot.
    pub(super) fn pg_name(&mut self, key: &str, value: Option<String>, default: &str) -> String {
        let name = value.unwrap_or_else(|| default.to_string());
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            self.add(
                key,
                format!(
                    "must be 1 to 63 lower-case letters, digits or `_`, e.g. `walhook`; got `{name}`"
                ),
            );
        }
        name
    }
}

/// `schema.table` as the config writes it; an error names `key` and shows `example`.
pub(super) fn table_name(key: &str, text: String, example: &str, errors: &mut Errors) -> TableName {
    match text.split_once('.') {
        Some((schema, name)) if !schema.is_empty() && !name.is_empty() && !name.contains('.') => {
            TableName {
                schema: schema.to_string(),
                name: name.to_string(),
            }
        }
        _ => {
            errors.add(
                key,
                format!("must be written `schema.table`, e.g. `{example}`; got `{text}`"),
            );
            TableName {
                schema: String::new(),
                name: text,
            }
        }
    }
}
