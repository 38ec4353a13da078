//! The TOML file as written, before validation. Every section keeps the keys it does not know
//! in `unknown`, so validation can report all of them at once instead of stopping at the first.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Keys a section does not declare.
pub type Unknown = BTreeMap<String, toml::Value>;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub source: Option<RawSource>,
    pub state: Option<RawState>,
    pub api: Option<RawApi>,
    #[serde(default)]
    pub subscribers: BTreeMap<String, RawSubscriber>,
    #[serde(default)]
    pub events: Vec<RawEvent>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSource {
    pub url: Option<String>,
    pub slot: Option<String>,
    pub publication: Option<String>,
    pub status_interval: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub lag_warn: Option<String>,
    pub max_unsettled: Option<i64>,
    pub canary: Option<String>,
    pub failover: Option<bool>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawState {
    pub path: Option<String>,
    pub url: Option<String>,
    pub schema: Option<String>,
    pub lease: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawApi {
    pub listen: Option<String>,
    pub token: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSubscriber {
    pub url: Option<String>,
    pub secret: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<String>,
    pub concurrency: Option<i64>,
    pub batch_size: Option<i64>,
    pub batch_wait: Option<String>,
    pub retry: Option<RawRetry>,
    pub initial_backfill: Option<bool>,
    pub h2c: Option<bool>,
    pub rate_limit: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRetry {
    pub initial: Option<String>,
    pub max: Option<String>,
    pub give_up_after: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEvent {
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub table: Option<String>,
    pub operations: Option<Vec<String>>,
    pub subscribers: Option<Vec<String>>,
    pub when: Option<String>,
    pub columns: Option<Vec<String>>,
    pub key: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
