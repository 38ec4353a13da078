//! Standard Webhooks signatures (https://www.standardwebhooks.com, spec "Signature scheme"):
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`. Pure: no I/O, no clock.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs requests for one subscriber. Built once from the decoded `whsec_` key and reused: the
/// HMAC state keyed at construction is cloned for each signature, so signing does not re-derive
/// the key. Debug never shows the key.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl Signer {
    /// `key` is the base64-decoded part of a `whsec_` secret (config validation decodes it).
    pub fn new(key: &[u8]) -> Self {
        // HMAC is defined for keys of any length (longer ones are hashed first), so this never
        // fails; the `Result` exists for MACs with fixed key sizes.
        let keyed = HmacSha256::new_from_slice(key).expect("HMAC accepts a key of any length");
        Signer { keyed }
    }

    /// The `webhook-signature` header value for one attempt.
    ///
    /// `id` and the decimal `timestamp` are joined to the body with `.`, so neither may contain a
    /// `.` (event ids never do); otherwise two different messages could sign the same bytes.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let mut header = String::with_capacity(3 + 44);
        header.push_str("v1,");
        STANDARD.encode_string(digest, &mut header);
        header
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer { key: [redacted] }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(secret: &str) -> Vec<u8> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        STANDARD
            .decode(encoded)
            .expect("test secrets are valid base64")
    }

    /// The vector every Standard Webhooks reference library checks its `sign` against:
    /// standard-webhooks/standard-webhooks, `libraries/javascript/src/webhook.test.ts`
    /// ("sign function works"), and the same values in `libraries/php/tests/WebhookTest.php`
    /// (`testSignFunctionWorks`). Reproducing it is what tells us a receiver's library accepts
    /// our signatures; a round trip against our own code could not.
    #[test]
    fn reproduces_the_reference_libraries_test_vector() {
        let signer = Signer::new(&decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let signature = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_signed_part_changes_the_signature() {
        let signer = Signer::new(&decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        let base = signer.sign("evt_1", 1_700_000_000, b"{}");
        assert_ne!(base, signer.sign("evt_2", 1_700_000_000, b"{}"));
        assert_ne!(base, signer.sign("evt_1", 1_700_000_001, b"{}"));
        assert_ne!(base, signer.sign("evt_1", 1_700_000_000, b"{ }"));
        let other_key = Signer::new(b"another key");
        assert_ne!(base, other_key.sign("evt_1", 1_700_000_000, b"{}"));
    }

    #[test]
    fn signs_the_dot_joined_id_timestamp_and_body() {
        // The same HMAC over the concatenated message, computed in one piece.
        let key = b"0123456789abcdef0123456789abcdef";
        let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
        mac.update(br#"evt_00000000016B3748_3.1764179470.{"id":"evt_00000000016B3748_3"}"#);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));

        let signature = Signer::new(key).sign(
            "evt_00000000016B3748_3",
            1_764_179_470,
            br#"{"id":"evt_00000000016B3748_3"}"#,
        );
        assert_eq!(signature, expected);
    }

    #[test]
    fn output_is_v1_and_44_base64_characters() {
        let signature = Signer::new(b"k").sign("evt_1", 0, b"");
        let encoded = signature.strip_prefix("v1,").expect("v1 prefix");
        assert_eq!(encoded.len(), 44, "{signature}");
        assert_eq!(STANDARD.decode(encoded).expect("base64").len(), 32);
    }

    #[test]
    fn signing_twice_gives_the_same_signature() {
        // The keyed state is cloned per signature, never consumed.
        let signer = Signer::new(b"key");
        assert_eq!(
            signer.sign("evt_1", 1, b"body"),
            signer.sign("evt_1", 1, b"body")
        );
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let shown = format!("{:?}", Signer::new(b"super-secret-key"));
        assert_eq!(shown, "Signer { key: [redacted] }");
    }
}
