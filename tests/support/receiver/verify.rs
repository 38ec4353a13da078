//! An independent Standard Webhooks verifier, written from the spec with its own HMAC (hmac,
//! sha2 and base64, not walhook's `Signer`), so a test that checks walhook's signatures does not
//! trust walhook's signer to judge itself.

use std::time::SystemTime;

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far `webhook-timestamp` may be from the verifier's clock, either way. The spec leaves the
/// value to the receiver; five minutes is what its reference libraries use.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// Verifies a request as a Standard Webhooks receiver would, against the current clock.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    verify_at(
        secret,
        headers,
        body,
        i64::try_from(now).expect("seconds fit i64"),
    )
}

/// [`verify`] at Unix time `now`. Written from the spec (standardwebhooks.com, "Verifying
/// webhook authenticity"): the key is the base64 after `whsec_`; the signed content is
/// `{webhook-id}.{webhook-timestamp}.{body}` with the header values exactly as received;
/// `webhook-signature` is a space-separated list of `<version>,<base64>` of which one `v1` must
/// match (compared in constant time); the timestamp must be within the tolerance of `now`.
pub fn verify_at(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
    // The reference libraries also take the bare base64; so does this.
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .map_err(|e| format!("the secret is not base64 after `whsec_`: {e}"))?;

    let id = required(headers, "webhook-id")?;
    let timestamp_text = required(headers, "webhook-timestamp")?;
    let signatures = required(headers, "webhook-signature")?;

    if timestamp_text.is_empty() || !timestamp_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "webhook-timestamp `{timestamp_text}` is not Unix seconds"
        ));
    }
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| format!("webhook-timestamp `{timestamp_text}` is out of range"))?;
    let skew = now.abs_diff(timestamp);
    if skew > TIMESTAMP_TOLERANCE_SECS.unsigned_abs() {
        return Err(format!(
            "webhook-timestamp {timestamp} is {skew} s from now ({now}); the tolerance is {TIMESTAMP_TOLERANCE_SECS} s"
        ));
    }

    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(body);

    for signature in signatures.split(' ') {
        let Some(encoded) = signature.strip_prefix("v1,") else {
            continue;
        };
        let Ok(candidate) = STANDARD.decode(encoded) else {
            continue;
        };
        if mac.clone().verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    Err(format!(
        "no v1 signature in webhook-signature `{signatures}` matches"
    ))
}

fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or_else(|| format!("{name} is missing"))?;
    if values.next().is_some() {
        return Err(format!("{name} is sent more than once"));
    }
    value
        .to_str()
        .map_err(|_| format!("{name} is not visible ASCII"))
}
