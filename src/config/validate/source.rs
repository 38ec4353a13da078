//! `[source]`: the database to stream from, and how walhook reads it.

use std::time::Duration;

use super::errors::{table_name, Errors};
use crate::config::raw::RawSource;
use crate::config::units::parse_bytes;
use crate::config::{Secret, SourceConfig};

pub(super) fn validate_source(raw: Option<RawSource>, errors: &mut Errors) -> SourceConfig {
    let raw = raw.unwrap_or_default();
    errors.unknown(
        "source",
        &raw.unknown,
        &[
            "url",
            "slot",
            "publication",
            "status_interval",
            "heartbeat_interval",
            "lag_warn",
            "max_unsettled",
            "canary",
            "failover",
        ],
    );
    let url = match raw.url {
        None => {
            errors.add(
                "source.url",
                "is required: the database to stream from, e.g. `postgres://walhook:${PGPASSWORD}@db.internal:5432/app`",
            );
            String::new()
        }
        Some(url) => {
            let scheme_ok = url::Url::parse(&url)
                .map(|u| matches!(u.scheme(), "postgres" | "postgresql") && u.has_host())
                .unwrap_or(false);
            if !scheme_ok {
                errors.add(
                    "source.url",
                    "must be a postgres:// URL with a host, e.g. `postgres://walhook:${PGPASSWORD}@db.internal:5432/app`",
                );
            }
            url
        }
    };
    let lag_warn_bytes = match raw.lag_warn {
        None => 1 << 30,
        Some(text) => parse_bytes(&text).unwrap_or_else(|| {
            errors.add(
                "source.lag_warn",
                format!("must be a size: a whole number with unit B, kB, MB, GB or TB, e.g. `1GB`; got `{text}`"),
            );
            1 << 30
        }),
    };
    SourceConfig {
        url: Secret::new(url),
        slot: errors.pg_name("source.slot", raw.slot, "walhook"),
        publication: errors.pg_name("source.publication", raw.publication, "walhook"),
        status_interval: errors.duration(
            "source.status_interval",
            raw.status_interval.as_deref(),
            Duration::from_secs(10),
        ),
        heartbeat_interval: errors.duration(
            "source.heartbeat_interval",
            raw.heartbeat_interval.as_deref(),
            Duration::from_secs(60),
        ),
        lag_warn_bytes,
        max_unsettled: errors.count("source.max_unsettled", raw.max_unsettled, 20_000, "20000"),
        canary: raw
            .canary
            .map(|text| table_name("source.canary", text, "public.walhook_canary", errors)),
        failover: raw.failover.unwrap_or(false),
    }
}
