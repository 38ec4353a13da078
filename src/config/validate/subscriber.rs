//! `[subscribers.<name>]`: where webhooks go, how they are signed, and how they are retried.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;

use super::errors::Errors;
use crate::config::raw::{RawRetry, RawSubscriber};
use crate::config::units::parse_rate;
use crate::config::{RateLimit, RetryConfig, Secret, SecretBytes, SubscriberConfig};

/// Headers walhook sets itself; a configured header may not replace them.
const RESERVED_HEADERS: [&str; 5] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
];

pub(super) fn validate_subscriber(
    name: String,
    raw: RawSubscriber,
    errors: &mut Errors,
) -> SubscriberConfig {
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
            "h2c",
            "rate_limit",
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
    let h2c = raw.h2c.unwrap_or(false);
    if h2c && url.scheme() != "http" {
        errors.add(
            format!("{at}.h2c"),
            "cleartext HTTP/2 applies to `http://` URLs; an `https://` receiver that offers HTTP/2 gets it without this key (TLS negotiates it), so remove `h2c`",
        );
    }
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
            Duration::ZERO,
        ),
        retry,
        initial_backfill: raw.initial_backfill.unwrap_or(false),
        h2c,
        rate_limit: validate_rate_limit(&at, raw.rate_limit.as_deref(), errors),
        name,
    }
}

fn validate_rate_limit(at: &str, raw: Option<&str>, errors: &mut Errors) -> Option<RateLimit> {
    let text = raw?;
    let rate = parse_rate(text);
    if rate.is_none() {
        errors.add(
            format!("{at}.rate_limit"),
            format!("must be a number of requests per second, minute or hour (a whole number above 0, then /s, /m or /h), e.g. `50/s` or `3000/m`; got `{text}`"),
        );
    }
    rate
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
