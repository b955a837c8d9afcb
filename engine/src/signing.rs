//! Webhook signature schemes as pure functions: `sign` produces the headers a
//! scheme adds to a delivery, `verify` checks them on a received or recorded
//! one. All schemes are HMAC-SHA256 and differ in the signed content, the key
//! derivation and the header layout: Standard Webhooks (`webhook-*`), the legacy
//! Go sender (`X-Signature`), GitHub (`X-Hub-Signature-256`), Stripe
//! (`Stripe-Signature`) and Slack (`X-Slack-Signature`). Secrets never appear in
//! any error, `Debug` or `Display` output. No clock is read: timestamp tolerance
//! is the caller's policy.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of Standard Webhooks secrets; the rest is the base64 of the key.
const WHSEC_PREFIX: &str = "whsec_";

/// A signature scheme: which headers are added and what content is signed with which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` over `{id}.{ts}.{body}`.
    #[serde(alias = "standard_webhooks")]
    StandardWebhooks,
    /// The legacy Go sender: `X-Event-Id`, `X-Timestamp`, `X-Signature: <hex>` over `{ts}.{body}`.
    Legacy,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// Stripe: `Stripe-Signature: t={ts},v1=<hex>` over `{ts}.{body}`.
    Stripe,
    /// Slack: `X-Slack-Request-Timestamp`, `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`.
    Slack,
}

impl Scheme {
    /// Every scheme, in documentation order.
    pub const ALL: [Scheme; 5] = [
        Scheme::StandardWebhooks,
        Scheme::Legacy,
        Scheme::Github,
        Scheme::Stripe,
        Scheme::Slack,
    ];

    /// The scheme's name as used in configuration and serde (`standard-webhooks`, `legacy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::Legacy => "legacy",
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::Slack => "slack",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scheme name that `Scheme::from_str` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown signing scheme {name:?} (valid: standard-webhooks, legacy, github, stripe, slack)"
)]
pub struct UnknownScheme {
    /// The name that was given.
    pub name: String,
}

impl FromStr for Scheme {
    type Err = UnknownScheme;

    /// Parses a scheme name; `standard_webhooks` is accepted as well as `standard-webhooks`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standard_webhooks" => Ok(Scheme::StandardWebhooks),
            _ => Scheme::ALL
                .into_iter()
                .find(|scheme| scheme.as_str() == s)
                .ok_or_else(|| UnknownScheme { name: s.to_owned() }),
        }
    }
}

/// What a delivery's signature covers besides the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInput<'a> {
    /// The message/event id (used by standard-webhooks and legacy headers).
    pub id: &'a str,
    /// Unix seconds of the attempt (unused by github).
    pub timestamp: i64,
    /// The exact body bytes sent on the wire.
    pub body: &'a [u8],
}

/// Why headers could not be signed; never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// `sign` was given an empty list of secrets.
    #[error("no signing secret given")]
    NoSecret,
    /// A standard-webhooks secret whose key part is not base64.
    #[error("secret is not valid base64 after the whsec_ prefix")]
    InvalidStandardWebhooksSecret,
}

/// Why a signature did not verify; names the header and the problem, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but not in the scheme's format.
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        /// The header, as the scheme spells it.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature is well-formed but does not match the body and secret.
    #[error("signature in {0} does not match")]
    Mismatch(&'static str),
    /// The secret given to `verify` is unusable (standard-webhooks: not base64).
    #[error("{0}")]
    Secret(SigningError),
}

/// Signs a delivery and returns every header the scheme adds, names spelled as the scheme does.
///
/// Several secrets (rotation) give several signatures where the scheme allows it:
/// standard-webhooks puts space-separated `v1,` entries in one header and stripe
/// adds one `v1=` entry per secret, in the given order. legacy (the Go sender
/// supports one secret), github and slack sign with the first secret only.
pub fn sign(
    scheme: Scheme,
    secrets: &[&str],
    input: SignInput<'_>,
) -> Result<Vec<(String, String)>, SigningError> {
    let first = *secrets.first().ok_or(SigningError::NoSecret)?;
    let ts = input.timestamp.to_string();
    let headers = match scheme {
        Scheme::StandardWebhooks => {
            let signatures = secrets
                .iter()
                .map(|secret| {
                    let key = standard_webhooks_key(secret)?;
                    let mac = hmac(
                        &key,
                        &[input.id.as_bytes(), b".", ts.as_bytes(), b".", input.body],
                    );
                    Ok(format!("v1,{}", BASE64.encode(mac)))
                })
                .collect::<Result<Vec<_>, SigningError>>()?;
            vec![
                ("webhook-id", input.id.to_owned()),
                ("webhook-timestamp", ts),
                ("webhook-signature", signatures.join(" ")),
            ]
        }
        Scheme::Legacy => {
            let mac = hmac(first.as_bytes(), &[ts.as_bytes(), b".", input.body]);
            vec![
                ("X-Event-Id", input.id.to_owned()),
                ("X-Timestamp", ts),
                ("X-Signature", hex::encode(mac)),
            ]
        }
        Scheme::Github => {
            let mac = hmac(first.as_bytes(), &[input.body]);
            vec![(
                "X-Hub-Signature-256",
                format!("sha256={}", hex::encode(mac)),
            )]
        }
        Scheme::Stripe => {
            let mut value = format!("t={ts}");
            for secret in secrets {
                let mac = hmac(secret.as_bytes(), &[ts.as_bytes(), b".", input.body]);
                value.push_str(",v1=");
                value.push_str(&hex::encode(mac));
            }
            vec![("Stripe-Signature", value)]
        }
        Scheme::Slack => {
            let mac = hmac(first.as_bytes(), &[b"v0:", ts.as_bytes(), b":", input.body]);
            vec![
                ("X-Slack-Request-Timestamp", ts),
                ("X-Slack-Signature", format!("v0={}", hex::encode(mac))),
            ]
        }
    };
    Ok(headers
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect())
}

/// Checks a delivery's signature headers (names matched case-insensitively) against one secret, in constant time.
///
/// Passes if any signature entry matches (standard-webhooks and stripe may carry
/// several). The signed timestamp is taken verbatim from the headers; its age is
/// not checked.
pub fn verify(
    scheme: Scheme,
    secret: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), VerifyError> {
    match scheme {
        Scheme::StandardWebhooks => {
            let key = standard_webhooks_key(secret).map_err(VerifyError::Secret)?;
            let id = header(headers, "webhook-id")?;
            let ts = header(headers, "webhook-timestamp")?;
            let value = header(headers, "webhook-signature")?;
            let mac = hmac_state(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            let mut seen_v1 = false;
            for entry in value.split(' ').filter(|e| !e.is_empty()) {
                let Some(sig) = entry.strip_prefix("v1,") else {
                    continue; // other versions (e.g. v1a) are not ours to check
                };
                seen_v1 = true;
                if let Ok(sig) = BASE64.decode(sig) {
                    if mac.clone().verify_slice(&sig).is_ok() {
                        return Ok(());
                    }
                }
            }
            if seen_v1 {
                Err(VerifyError::Mismatch("webhook-signature"))
            } else {
                Err(malformed("webhook-signature", "no v1, entry"))
            }
        }
        Scheme::Legacy => {
            header(headers, "X-Event-Id")?;
            let ts = header(headers, "X-Timestamp")?;
            let sig = header(headers, "X-Signature")?;
            let sig = hex::decode(sig).map_err(|_| malformed("X-Signature", "not hex"))?;
            check(
                hmac_state(secret.as_bytes(), &[ts.as_bytes(), b".", body]),
                &sig,
                "X-Signature",
            )
        }
        Scheme::Github => {
            let value = header(headers, "X-Hub-Signature-256")?;
            let sig = value
                .strip_prefix("sha256=")
                .ok_or_else(|| malformed("X-Hub-Signature-256", "no sha256= prefix"))?;
            let sig = hex::decode(sig).map_err(|_| malformed("X-Hub-Signature-256", "not hex"))?;
            check(
                hmac_state(secret.as_bytes(), &[body]),
                &sig,
                "X-Hub-Signature-256",
            )
        }
        Scheme::Stripe => {
            const NAME: &str = "Stripe-Signature";
            let value = header(headers, NAME)?;
            let mut ts = None;
            let mut sigs = Vec::new();
            for item in value.split(',') {
                match item.split_once('=') {
                    Some(("t", t)) => ts = Some(t),
                    Some(("v1", sig)) => sigs.push(sig),
                    _ => {}
                }
            }
            let ts = ts.ok_or_else(|| malformed(NAME, "no t= entry"))?;
            if sigs.is_empty() {
                return Err(malformed(NAME, "no v1= entry"));
            }
            let mac = hmac_state(secret.as_bytes(), &[ts.as_bytes(), b".", body]);
            let matched = sigs.iter().any(|sig| {
                hex::decode(sig).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok())
            });
            if matched {
                Ok(())
            } else {
                Err(VerifyError::Mismatch(NAME))
            }
        }
        Scheme::Slack => {
            let ts = header(headers, "X-Slack-Request-Timestamp")?;
            let value = header(headers, "X-Slack-Signature")?;
            let sig = value
                .strip_prefix("v0=")
                .ok_or_else(|| malformed("X-Slack-Signature", "no v0= prefix"))?;
            let sig = hex::decode(sig).map_err(|_| malformed("X-Slack-Signature", "not hex"))?;
            check(
                hmac_state(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]),
                &sig,
                "X-Slack-Signature",
            )
        }
    }
}

/// The HMAC key of a standard-webhooks secret: base64 after an optional `whsec_` prefix.
fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, SigningError> {
    let encoded = secret.strip_prefix(WHSEC_PREFIX).unwrap_or(secret);
    BASE64
        .decode(encoded)
        .map_err(|_| SigningError::InvalidStandardWebhooksSecret)
}

/// HMAC-SHA256 state keyed with `key` after absorbing `parts` in order.
fn hmac_state(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// HMAC-SHA256 of the concatenated `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    hmac_state(key, parts).finalize().into_bytes().to_vec()
}

/// Constant-time comparison of a computed MAC with a received signature.
fn check(mac: HmacSha256, sig: &[u8], name: &'static str) -> Result<(), VerifyError> {
    mac.verify_slice(sig)
        .map_err(|_| VerifyError::Mismatch(name))
}

/// First header named `name`, ignoring ASCII case.
fn header<'h>(headers: &'h [(String, String)], name: &'static str) -> Result<&'h str, VerifyError> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .ok_or(VerifyError::MissingHeader(name))
}

fn malformed(header: &'static str, reason: &'static str) -> VerifyError {
    VerifyError::MalformedHeader { header, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn input(body: &[u8]) -> SignInput<'_> {
        SignInput {
            id: "msg_1",
            timestamp: 1_700_000_000,
            body,
        }
    }

    fn secret_for(scheme: Scheme) -> &'static str {
        match scheme {
            Scheme::StandardWebhooks => WHSEC,
            _ => "s3cr3t-value",
        }
    }

    /// The shared vectors file: `shared/` sits beside the repository clone
    /// (`{engine}/../../shared`); `HOOKSHIFT_SHARED_DIR` overrides.
    fn vectors_path() -> std::path::PathBuf {
        match std::env::var_os("HOOKSHIFT_SHARED_DIR") {
            Some(dir) => std::path::PathBuf::from(dir).join("vectors/signing.json"),
            None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/vectors/signing.json"),
        }
    }

    #[test]
    fn published_vectors() {
        let path = vectors_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipping published_vectors: {} not found", path.display());
            return;
        };
        let doc: serde_json::Value = serde_json::from_str(&text).expect("vectors JSON");
        let vectors = doc["vectors"].as_array().expect("vectors array");
        assert!(!vectors.is_empty());
        for v in vectors {
            let name = v["name"].as_str().unwrap();
            let scheme: Scheme = v["scheme"].as_str().unwrap().parse().unwrap();
            let secret = v["secret"].as_str().unwrap();
            let body = v["body"].as_str().unwrap().as_bytes();
            let input = SignInput {
                id: v["id"].as_str().unwrap_or(""),
                timestamp: v["timestamp"].as_i64().unwrap_or(0),
                body,
            };
            let headers = sign(scheme, &[secret], input).unwrap();
            let want_name = v["expected_header"].as_str().unwrap();
            let (_, got) = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(want_name))
                .unwrap_or_else(|| panic!("{name}: no {want_name} header"));
            assert_eq!(got, v["expected"].as_str().unwrap(), "{name}");
            assert_eq!(verify(scheme, secret, &headers, body), Ok(()), "{name}");
        }
    }

    #[test]
    fn header_layout() {
        let body = br#"{"a":1}"#;
        let names = |scheme: Scheme| -> Vec<String> {
            sign(scheme, &[secret_for(scheme)], input(body))
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(
            names(Scheme::StandardWebhooks),
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        );
        assert_eq!(
            names(Scheme::Legacy),
            ["X-Event-Id", "X-Timestamp", "X-Signature"]
        );
        assert_eq!(names(Scheme::Github), ["X-Hub-Signature-256"]);
        assert_eq!(names(Scheme::Stripe), ["Stripe-Signature"]);
        assert_eq!(
            names(Scheme::Slack),
            ["X-Slack-Request-Timestamp", "X-Slack-Signature"]
        );
        let legacy = sign(Scheme::Legacy, &["k"], input(body)).unwrap();
        assert_eq!(legacy[0].1, "msg_1");
        assert_eq!(legacy[1].1, "1700000000");
        assert_eq!(
            legacy[2].1,
            hex::encode(hmac(b"k", &[b"1700000000.", body]))
        );
        assert_eq!(legacy[2].1.len(), 64);
        assert!(legacy[2].1.bytes().all(|b| !b.is_ascii_uppercase()));
    }

    #[test]
    fn standard_webhooks_secret_without_prefix() {
        let with = sign(Scheme::StandardWebhooks, &[WHSEC], input(b"x")).unwrap();
        let without = sign(
            Scheme::StandardWebhooks,
            &[WHSEC.trim_start_matches("whsec_")],
            input(b"x"),
        )
        .unwrap();
        assert_eq!(with, without);
    }

    #[test]
    fn rotation_gives_one_entry_per_secret() {
        let other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let h = sign(Scheme::StandardWebhooks, &[WHSEC, other], input(b"x")).unwrap();
        let entries: Vec<&str> = h[2].1.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.starts_with("v1,")));
        let single = |s| {
            sign(Scheme::StandardWebhooks, &[s], input(b"x")).unwrap()[2]
                .1
                .clone()
        };
        assert_eq!(entries, [single(WHSEC), single(other)]);
        assert_eq!(verify(Scheme::StandardWebhooks, other, &h, b"x"), Ok(()));

        let h = sign(Scheme::Stripe, &["one", "two"], input(b"x")).unwrap();
        let parts: Vec<&str> = h[0].1.split(',').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "t=1700000000");
        assert!(parts[1].starts_with("v1=") && parts[2].starts_with("v1="));
        assert_ne!(parts[1], parts[2]);
        assert_eq!(verify(Scheme::Stripe, "two", &h, b"x"), Ok(()));

        // Single-secret schemes sign with the first secret.
        for scheme in [Scheme::Legacy, Scheme::Github, Scheme::Slack] {
            assert_eq!(
                sign(scheme, &["one", "two"], input(b"x")).unwrap(),
                sign(scheme, &["one"], input(b"x")).unwrap()
            );
        }
    }

    #[test]
    fn verify_round_trips_and_rejects_tampering() {
        let body = br#"{"event":"x","n":1}"#;
        for scheme in Scheme::ALL {
            let secret = secret_for(scheme);
            let mut headers = sign(scheme, &[secret], input(body)).unwrap();
            assert_eq!(verify(scheme, secret, &headers, body), Ok(()), "{scheme}");

            let mut flipped = body.to_vec();
            flipped[3] ^= 1;
            assert!(
                matches!(
                    verify(scheme, secret, &headers, &flipped),
                    Err(VerifyError::Mismatch(_))
                ),
                "{scheme}"
            );
            let wrong = if scheme == Scheme::StandardWebhooks {
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
            } else {
                "other"
            };
            assert!(verify(scheme, wrong, &headers, body).is_err(), "{scheme}");

            // Lookup ignores header-name case.
            for (name, _) in &mut headers {
                *name = name.to_ascii_lowercase();
            }
            assert_eq!(verify(scheme, secret, &headers, body), Ok(()), "{scheme}");
            for (name, _) in &mut headers {
                *name = name.to_ascii_uppercase();
            }
            assert_eq!(verify(scheme, secret, &headers, body), Ok(()), "{scheme}");

            // Dropping the signature header is reported as missing.
            let signature_header = headers.last().unwrap().0.clone();
            headers.pop();
            assert!(
                matches!(
                    verify(scheme, secret, &headers, body),
                    Err(VerifyError::MissingHeader(_))
                ),
                "{scheme} without {signature_header}"
            );
        }
    }

    #[test]
    fn malformed_signatures() {
        let h = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert!(matches!(
            verify(
                Scheme::Github,
                "k",
                &h("x-hub-signature-256", "md5=00"),
                b""
            ),
            Err(VerifyError::MalformedHeader { .. })
        ));
        assert!(matches!(
            verify(
                Scheme::Github,
                "k",
                &h("x-hub-signature-256", "sha256=zz"),
                b""
            ),
            Err(VerifyError::MalformedHeader { .. })
        ));
        assert!(matches!(
            verify(Scheme::Stripe, "k", &h("stripe-signature", "v1=00"), b""),
            Err(VerifyError::MalformedHeader { .. })
        ));
        assert!(matches!(
            verify(Scheme::Stripe, "k", &h("stripe-signature", "t=1"), b""),
            Err(VerifyError::MalformedHeader { .. })
        ));
        assert!(matches!(
            verify(
                Scheme::Slack,
                "k",
                &h("x-slack-request-timestamp", "1"),
                b""
            ),
            Err(VerifyError::MissingHeader("X-Slack-Signature"))
        ));
    }

    #[test]
    fn errors_never_show_the_secret() {
        let bad = "whsec_not*base64!SECRETVALUE";
        let err = sign(Scheme::StandardWebhooks, &[bad], input(b"x")).unwrap_err();
        assert_eq!(err, SigningError::InvalidStandardWebhooksSecret);
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("SECRETVALUE"), "{text}");
        }
        assert_eq!(
            err.to_string(),
            "secret is not valid base64 after the whsec_ prefix"
        );
        let err = verify(Scheme::StandardWebhooks, bad, &[], b"x").unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("SECRETVALUE"), "{text}");
        }
        let headers = sign(Scheme::Github, &["SECRETVALUE"], input(b"x")).unwrap();
        let err = verify(Scheme::Github, "SECRETVALUE", &headers, b"y").unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("SECRETVALUE"), "{text}");
        }
        assert_eq!(
            sign(Scheme::Github, &[], input(b"x")),
            Err(SigningError::NoSecret)
        );
    }

    #[test]
    fn scheme_names() {
        for scheme in Scheme::ALL {
            assert_eq!(scheme.as_str().parse::<Scheme>(), Ok(scheme));
            assert_eq!(scheme.to_string(), scheme.as_str());
            let json = serde_json::to_string(&scheme).unwrap();
            assert_eq!(json, format!("\"{}\"", scheme.as_str()));
            assert_eq!(serde_json::from_str::<Scheme>(&json).unwrap(), scheme);
        }
        assert_eq!("standard_webhooks".parse(), Ok(Scheme::StandardWebhooks));
        assert_eq!(
            serde_json::from_str::<Scheme>("\"standard_webhooks\"").unwrap(),
            Scheme::StandardWebhooks
        );
        let err = "svix".parse::<Scheme>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown signing scheme \"svix\" (valid: standard-webhooks, legacy, github, stripe, slack)"
        );
    }

    fn any_secret(scheme: Scheme) -> BoxedStrategy<String> {
        match scheme {
            Scheme::StandardWebhooks => proptest::collection::vec(any::<u8>(), 1..48)
                .prop_map(|key| format!("whsec_{}", BASE64.encode(key)))
                .boxed(),
            _ => proptest::collection::vec(any::<char>(), 1..40)
                .prop_map(|chars| chars.into_iter().collect())
                .boxed(),
        }
    }

    fn scheme_and_secret() -> impl Strategy<Value = (Scheme, String)> {
        proptest::sample::select(Scheme::ALL.to_vec())
            .prop_flat_map(|scheme| (Just(scheme), any_secret(scheme)))
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(
            (scheme, secret) in scheme_and_secret(),
            id in proptest::collection::vec(any::<char>(), 0..30)
                .prop_map(|c| c.into_iter().filter(|c| !c.is_whitespace()).collect::<String>()),
            timestamp in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
            flip in any::<usize>(),
        ) {
            let input = SignInput { id: &id, timestamp, body: &body };
            let headers = sign(scheme, &[secret.as_str()], input).unwrap();
            prop_assert_eq!(verify(scheme, &secret, &headers, &body), Ok(()));
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[flip % body.len()] ^= 0x80;
                prop_assert_eq!(
                    verify(scheme, &secret, &headers, &tampered),
                    Err(VerifyError::Mismatch(match scheme {
                        Scheme::StandardWebhooks => "webhook-signature",
                        Scheme::Legacy => "X-Signature",
                        Scheme::Github => "X-Hub-Signature-256",
                        Scheme::Stripe => "Stripe-Signature",
                        Scheme::Slack => "X-Slack-Signature",
                    }))
                );
            }
        }
    }
}
