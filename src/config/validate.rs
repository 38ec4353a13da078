//! Raw config -> validated [`Config`], reporting every problem at once, each with its key, the
//! constraint, and an example of a good value.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use super::raw::{RawConfig, RawEvent, RawRetry, RawSubscriber, Unknown};
use super::units::{parse_bytes, parse_duration};
use super::*;

/// Headers walhook sets itself; a configured header may not replace them.
const RESERVED_HEADERS: [&str; 5] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
];

struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn unknown(&mut self, prefix: &str, unknown: &Unknown, known: &[&str]) {
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

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
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

    fn count(&mut self, key: &str, value: Option<i64>, default: usize, example: &str) -> usize {
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
    fn pg_name(&mut self, key: &str, value: Option<String>, default: &str) -> String {
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

pub fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors(Vec::new());
    errors.unknown(
        "",
        &raw.unknown,
        &["source", "state", "api", "subscribers", "events"],
    );

    let source = validate_source(raw.source, &mut errors);
    let state = {
        let raw_state = raw.state.unwrap_or_default();
        errors.unknown("state", &raw_state.unknown, &["path"]);
        let path = raw_state
            .path
            .unwrap_or_else(|| "walhook-state.db".to_string());
        if path.is_empty() {
            errors.add(
                "state.path",
                "must be a file path, e.g. `walhook-state.db`; got an empty string",
            );
        }
        StateConfig {
            path: base_dir.join(path),
        }
    };
    let api = raw.api.map(|api| {
        errors.unknown("api", &api.unknown, &["listen"]);
        let text = api.listen.unwrap_or_else(|| "127.0.0.1:9187".to_string());
        let listen = text.parse().unwrap_or_else(|_| {
            errors.add(
                "api.listen",
                format!("must be an IP address and port, e.g. `127.0.0.1:9187`; got `{text}`"),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 9187))
        });
        ApiConfig { listen }
    });

    let subscribers: Vec<SubscriberConfig> = raw
        .subscribers
        .into_iter()
        .map(|(name, sub)| validate_subscriber(name, sub, &mut errors))
        .collect();
    if raw.events.is_empty() {
        errors.add(
            "events",
            "at least one [[events]] rule is needed, e.g. `[[events]] type = \"order.created\" table = \"public.orders\" operations = [\"insert\"] subscribers = [\"billing\"]`",
        );
    }
    let names: Vec<&str> = subscribers.iter().map(|s| s.name.as_str()).collect();
    let events = raw
        .events
        .into_iter()
        .enumerate()
        .map(|(i, event)| validate_event(i, event, &names, &mut errors))
        .collect::<Vec<EventRule>>();
    for subscriber in subscribers.iter().filter(|s| s.initial_backfill) {
        let sends_inserts = events.iter().any(|rule| {
            rule.operations.contains(&Operation::Insert)
                && rule.subscribers.contains(&subscriber.name)
        });
        if !sends_inserts {
            errors.add(
                format!("subscribers.{}.initial_backfill", subscriber.name),
                format!(
                    "needs an [[events]] rule with operations including \"insert\" for `{}`: a backfill sends rows through those rules, e.g. `operations = [\"insert\", \"update\", \"delete\"]`",
                    subscriber.name
                ),
            );
        }
    }

    if let Some(canary) = &source.canary {
        if events.iter().any(|rule| &rule.table == canary) {
            errors.add(
                "source.canary",
                format!("must be a table of walhook's own, not one that [[events]] rules map, e.g. `public.walhook_canary`; got `{canary}`"),
            );
        }
    }

    if errors.0.is_empty() {
        Ok(Config {
            source,
            state,
            api,
            subscribers,
            events,
        })
    } else {
        Err(errors.0)
    }
}

fn validate_source(raw: Option<super::raw::RawSource>, errors: &mut Errors) -> SourceConfig {
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
    }
}

/// `schema.table` as the config writes it; an error names `key` and shows `example`.
fn table_name(key: &str, text: String, example: &str, errors: &mut Errors) -> TableName {
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

fn validate_subscriber(name: String, raw: RawSubscriber, errors: &mut Errors) -> SubscriberConfig {
    let at = format!("subscribers.{name}");
    errors.unknown(
        &at,
        &raw.unknown,
        &[
            "url",
            "secret",
            "headers",
            "timeout",
            "concurrency",
            "batch_size",
            "batch_wait",
            "retry",
            "initial_backfill",
        ],
    );
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        errors.add(
            &at,
            "a subscriber name may hold letters, digits, `_` and `-`, e.g. `[subscribers.billing]`",
        );
    }
    let url = match raw.url.as_deref().map(url::Url::parse) {
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
        other => {
            let got = match (&raw.url, other) {
                (None, _) => "it is missing".to_string(),
                (Some(text), _) => format!("got `{text}`"),
            };
            errors.add(
                format!("{at}.url"),
                format!("must be an http or https URL with a host, e.g. `https://billing.internal/hooks/walhook`; {got}"),
            );
            url::Url::parse("http://invalid.invalid/").expect("literal URL")
        }
    };
    let signing_key = raw.secret.as_deref().and_then(|secret| {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|key| !key.is_empty());
        if key.is_none() {
            errors.add(
                format!("{at}.secret"),
                "must be a Standard Webhooks secret: `whsec_` then base64, e.g. `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`",
            );
        }
        key.map(SecretBytes)
    });
    let headers = validate_headers(&at, raw.headers, errors);
    let retry = validate_retry(&at, raw.retry.unwrap_or_default(), errors);
    SubscriberConfig {
        url,
        signing_key,
        headers,
        timeout: errors.duration(
            &format!("{at}.timeout"),
            raw.timeout.as_deref(),
            Duration::from_secs(10),
        ),
        concurrency: errors.count(&format!("{at}.concurrency"), raw.concurrency, 16, "16"),
        batch_size: errors.count(&format!("{at}.batch_size"), raw.batch_size, 1, "100"),
        batch_wait: errors.duration(
            &format!("{at}.batch_wait"),
            raw.batch_wait.as_deref(),
            Duration::from_millis(20),
        ),
        retry,
        initial_backfill: raw.initial_backfill.unwrap_or(false),
        name,
    }
}

fn validate_headers(
    at: &str,
    raw: BTreeMap<String, String>,
    errors: &mut Errors,
) -> Vec<(String, Secret)> {
    let mut headers = Vec::new();
    for (name, value) in raw {
        let key = format!("{at}.headers.{name}");
        let lower = name.to_ascii_lowercase();
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            errors.add(
                key,
                "must be an HTTP header name (letters, digits, `-`), e.g. `Authorization`",
            );
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            errors.add(
                key,
                format!("walhook sets `{lower}` itself; choose another header, e.g. `X-Source`"),
            );
        } else if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
            errors.add(
                key,
                "must not contain control characters or newlines, e.g. `Bearer abc123`",
            );
        } else {
            headers.push((name, Secret::new(value)));
        }
    }
    headers
}

fn validate_retry(at: &str, raw: RawRetry, errors: &mut Errors) -> RetryConfig {
    let at = format!("{at}.retry");
    errors.unknown(&at, &raw.unknown, &["initial", "max", "give_up_after"]);
    let retry = RetryConfig {
        initial: errors.duration(
            &format!("{at}.initial"),
            raw.initial.as_deref(),
            Duration::from_secs(1),
        ),
        max: errors.duration(
            &format!("{at}.max"),
            raw.max.as_deref(),
            Duration::from_secs(600),
        ),
        give_up_after: errors.duration(
            &format!("{at}.give_up_after"),
            raw.give_up_after.as_deref(),
            Duration::from_secs(3 * 86_400),
        ),
    };
    if retry.initial.is_zero() {
        errors.add(format!("{at}.initial"), "must be more than 0, e.g. `1s`");
    }
    if retry.max < retry.initial {
        errors.add(
            format!("{at}.max"),
            "must be at least retry.initial, e.g. `initial = \"1s\", max = \"10m\"`",
        );
    }
    retry
}

fn validate_event(i: usize, raw: RawEvent, subscribers: &[&str], errors: &mut Errors) -> EventRule {
    let at = format!("events[{i}]");
    errors.unknown(
        &at,
        &raw.unknown,
        &[
            "type",
            "table",
            "operations",
            "subscribers",
            "when",
            "columns",
            "key",
        ],
    );
    let event_type = raw.event_type.unwrap_or_default();
    let type_ok = !event_type.is_empty()
        && event_type.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !type_ok {
        errors.add(
            format!("{at}.type"),
            format!("must be a dot-separated name of letters, digits, `_` and `-`, e.g. `order.created`; got `{event_type}`"),
        );
    }
    let table = table_name(
        &format!("{at}.table"),
        raw.table.unwrap_or_default(),
        "public.orders",
        errors,
    );
    let operations = match raw.operations {
        None => Operation::ALL.to_vec(),
        Some(names) => {
            if names.is_empty() {
                errors.add(
                    format!("{at}.operations"),
                    "must name at least one of insert, update, delete, truncate, e.g. `[\"insert\"]`",
                );
            }
            let mut ops = Vec::new();
            for (j, name) in names.iter().enumerate() {
                match Operation::parse(name) {
                    Some(op) if !ops.contains(&op) => ops.push(op),
                    Some(_) => {}
                    None => errors.add(
                        format!("{at}.operations[{j}]"),
                        format!("must be one of insert, update, delete, truncate, e.g. `insert`; got `{name}`"),
                    ),
                }
            }
            ops
        }
    };
    let names = raw.subscribers.unwrap_or_default();
    if names.is_empty() {
        errors.add(
            format!("{at}.subscribers"),
            format!(
                "must name at least one subscriber, e.g. `[\"{}\"]`",
                subscribers.first().copied().unwrap_or("billing")
            ),
        );
    }
    for (j, name) in names.iter().enumerate() {
        if !subscribers.contains(&name.as_str()) {
            let declared = if subscribers.is_empty() {
                "none is declared; add a [subscribers.<name>] section".to_string()
            } else {
                format!("declared: {}", subscribers.join(", "))
            };
            errors.add(
                format!("{at}.subscribers[{j}]"),
                format!("no subscriber named `{name}`; {declared}"),
            );
        }
    }
    if let Some(expr) = &raw.when {
        if let Err(e) = cel::Program::compile(expr) {
            errors.add(
                format!("{at}.when"),
                format!("is not a valid CEL expression ({e}), e.g. `row.status == 'paid' && old.status != 'paid'`"),
            );
        }
    }
    let columns = column_list(&format!("{at}.columns"), raw.columns, errors);
    let key = column_list(&format!("{at}.key"), raw.key, errors);
    EventRule {
        event_type,
        table,
        operations,
        subscribers: names,
        when: raw.when,
        columns,
        key,
    }
}

fn column_list(key: &str, raw: Option<Vec<String>>, errors: &mut Errors) -> Option<Vec<String>> {
    let columns = raw?;
    if columns.is_empty() || columns.iter().any(String::is_empty) {
        errors.add(
            key,
            "must list one or more column names, e.g. `[\"id\", \"status\"]`",
        );
    }
    for (j, c) in columns.iter().enumerate() {
        if columns[..j].contains(c) {
            errors.add(key, format!("names column `{c}` twice"));
        }
    }
    Some(columns)
}
