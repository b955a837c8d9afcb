//! Compatibility profiles: everything about a delivery request that a sender
//! does and a receiver may depend on, in one value. A profile names the
//! signature scheme, how the payload bytes are produced (raw pass-through or
//! Go `encoding/json` re-encoding), the header names and their case on the
//! wire, the user agent and `Accept-Encoding`, the timeout, the redirect policy
//! and the retry schedule with its jitter.
//!
//! [`Profile::render`] is a pure function from a message to the exact body
//! bytes and the headers the profile sets. For `legacy` it reproduces the Go
//! fixture's `wire.NewRequest` byte for byte (checked by `engine::conformance`
//! against the real binary and by `tests/legacy_vectors.rs` against recorded
//! vectors). Errors never contain a secret.

use std::fmt;
use std::time::Duration;

use crate::gojson::{self, GoJsonError};
use crate::signing::{self, Scheme, SignInput, SigningError};

/// Every profile name [`by_name`] knows, the default first.
pub const NAMES: &[&str] = &["standard-webhooks", "legacy", "github", "stripe"];

/// How the body bytes are produced from the stored payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadEncoding {
    /// The payload bytes exactly as received.
    Raw,
    /// What the legacy Go sender does: decode into `interface{}` and `json.Marshal` ([`gojson::reencode`]).
    GoJson,
}

/// Header-name case on the wire over HTTP/1.1 (HTTP/2 is always lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCase {
    /// `webhook-id`.
    Lower,
    /// Go's `textproto.CanonicalMIMEHeaderKey`: `X-Event-Id`, `X-Github-Event`.
    GoCanonical,
    /// Exactly as the profile spells the name (`X-GitHub-Event`).
    AsSpelled,
}

impl HeaderCase {
    /// `name` in this case.
    pub fn apply(self, name: &str) -> String {
        match self {
            HeaderCase::Lower => name.to_ascii_lowercase(),
            HeaderCase::GoCanonical => gojson::canonical_header_key(name),
            HeaderCase::AsSpelled => name.to_owned(),
        }
    }
}

/// Random spread applied to each scheduled delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// The delay as scheduled.
    None,
    /// Uniform in `[0, d]` ("full jitter").
    Full,
    /// Uniform in `d*(1-p) ..= d*(1+p)`; the legacy sender uses 0.2.
    Proportional(f64),
}

/// The delay before each retry, before jitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// `base * 2^(retry-1)`, at most `cap`.
    Exponential {
        /// Delay before the first retry.
        base: Duration,
        /// Upper limit of any delay.
        cap: Duration,
    },
    /// The delay before retry `i` is entry `i-1`; past the end the last entry repeats.
    Explicit(Vec<Duration>),
}

/// When and how often a failed delivery is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delays before jitter.
    pub schedule: Schedule,
    /// Spread applied to each delay.
    pub jitter: Jitter,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Whether a `Retry-After` on 429/503 replaces the scheduled delay.
    pub honor_retry_after: bool,
    /// The longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// Delay before attempt `next_attempt` (2 = first retry), or `None` when attempts are exhausted.
    ///
    /// Attempt 1 (or 0) has no delay. `Proportional` jitter mirrors the Go
    /// sender: `time.Duration(float64(d) * ((1-p) + 2p*rand.Float64()))`.
    pub fn delay(&self, next_attempt: u32, rng: &mut impl rand::Rng) -> Option<Duration> {
        let d = self.base_delay(next_attempt)?;
        Some(match self.jitter {
            Jitter::None => d,
            Jitter::Full => {
                let nanos = saturating_nanos(d);
                Duration::from_nanos(rng.gen_range(0..=nanos))
            }
            Jitter::Proportional(p) => {
                let p = p.clamp(0.0, 1.0);
                let factor = (1.0 - p) + 2.0 * p * rng.gen::<f64>();
                // `as` truncates towards zero, as Go's float64 → Duration conversion does.
                Duration::from_nanos((saturating_nanos(d) as f64 * factor) as u64)
            }
        })
    }

    /// The bounds `[min, max]` that [`delay`](Self::delay) can return for that attempt.
    pub fn bounds(&self, next_attempt: u32) -> Option<(Duration, Duration)> {
        let d = self.base_delay(next_attempt)?;
        Some(match self.jitter {
            Jitter::None => (d, d),
            Jitter::Full => (Duration::ZERO, d),
            Jitter::Proportional(p) => {
                let p = p.clamp(0.0, 1.0);
                let nanos = saturating_nanos(d) as f64;
                (
                    Duration::from_nanos((nanos * (1.0 - p)) as u64),
                    Duration::from_nanos((nanos * (1.0 + p)).ceil() as u64),
                )
            }
        })
    }

    /// The scheduled delay before jitter.
    fn base_delay(&self, next_attempt: u32) -> Option<Duration> {
        if next_attempt <= 1 {
            return Some(Duration::ZERO);
        }
        if next_attempt > self.max_attempts {
            return None;
        }
        let retry = next_attempt - 1; // 1 = first retry
        Some(match &self.schedule {
            Schedule::Exponential { base, cap } => {
                let factor = 1u32.checked_shl(retry - 1).unwrap_or(u32::MAX);
                base.checked_mul(factor).unwrap_or(*cap).min(*cap)
            }
            Schedule::Explicit(delays) => {
                let i = (retry as usize - 1).min(delays.len().checked_sub(1)?);
                delays[i]
            }
        })
    }

    /// Parses `"1s,2s,4s"` into an `Explicit` schedule with `max_attempts = len+1`,
    /// keeping the jitter and the `Retry-After` policy.
    ///
    /// Like the Go sender's `--retry-schedule`: items are trimmed, empty items
    /// are skipped (so `""` means a single attempt), negative delays are
    /// refused. An item is a sequence of decimal numbers with units `ms`, `s`,
    /// `m`, `h` (`1m30s`, `1.5s`), or `0`. The error names the bad item.
    pub fn with_override(&self, schedule: &str) -> Result<RetryPolicy, ProfileError> {
        let mut delays = Vec::new();
        for item in schedule.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let d = parse_duration(item).map_err(|reason| ProfileError::BadSchedule {
                item: item.to_owned(),
                reason,
            })?;
            delays.push(d);
        }
        let max_attempts = u32::try_from(delays.len())
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| ProfileError::BadSchedule {
                item: schedule.chars().take(40).collect(),
                reason: "too many entries".into(),
            })?;
        Ok(RetryPolicy {
            schedule: Schedule::Explicit(delays),
            max_attempts,
            ..self.clone()
        })
    }
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Parses one schedule item: `0`, or one or more `<decimal><unit>` with units ms, s, m, h.
fn parse_duration(item: &str) -> Result<Duration, String> {
    if item.starts_with('-') {
        return Err("negative delay".into());
    }
    let s = item.strip_prefix('+').unwrap_or(item);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64; // seconds
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err("expected a number like 10s, 1.5m or 300ms".into());
        }
        let value: f64 = num.parse().map_err(|_| format!("bad number {num:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit after {num} (use ms, s, m or h)")),
            other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| "delay too large".into())
}

/// Why a profile could not be found or used. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// [`by_name`] was given a name it does not know.
    #[error("unknown profile {name:?} (known: {known})", known = NAMES.join(", "))]
    UnknownProfile {
        /// The name that was given.
        name: String,
    },
    /// An item of a retry schedule override is not a duration.
    #[error("retry schedule item {item:?}: {reason}")]
    BadSchedule {
        /// The item as written (trimmed).
        item: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload cannot be re-encoded the way the Go sender does; the Go sender cannot send it either.
    #[error("payload cannot be encoded as the legacy Go sender does: {0}")]
    Payload(#[from] GoJsonError),
    /// The signature headers could not be computed.
    #[error("cannot sign: {0}")]
    Signing(#[from] SigningError),
}

/// What one delivery attempt carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The event id, stable across retries and replays.
    pub event_id: &'a str,
    /// The delivery id (one per event and endpoint), if the profile sends one.
    pub delivery_id: Option<&'a str>,
    /// The event type (`X-GitHub-Event`).
    pub event_type: &'a str,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    /// The payload as stored: raw JSON text as received.
    pub payload: &'a [u8],
}

/// A rendered request: the exact body and the headers the profile sets.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The exact body bytes; signatures cover these.
    pub body: Vec<u8>,
    /// Header names in wire case, values as written, in the order they go out.
    /// The transport's own headers are not included: `Host`, `Content-Length`,
    /// and the profile's `User-Agent` and `Accept-Encoding` (see [`Profile::wire_headers`]).
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("headers", &self.headers)
            .finish()
    }
}

/// Everything a sender does that receivers may depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The profile's name, one of [`NAMES`].
    pub name: String,
    /// Signature scheme.
    pub scheme: Scheme,
    /// How the body is produced from the payload.
    pub encoding: PayloadEncoding,
    /// Header-name case on the wire.
    pub header_case: HeaderCase,
    /// `User-Agent`, or none at all.
    pub user_agent: Option<String>,
    /// `Accept-Encoding` the client sends, if any.
    pub accept_encoding: Option<String>,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// Deadline for one attempt: connect, headers and body.
    pub timeout: Duration,
    /// Whether 3xx responses are followed (Go's default: at most 10 requests, the first and 9 redirects; POST → GET on 301/302/303).
    pub follow_redirects: bool,
    /// When and how often to retry.
    pub retry: RetryPolicy,
}

/// The default exponential policy: 5 s doubling up to 10 h, full jitter, 8 attempts, `Retry-After` honoured up to 1 h.
fn exponential_policy() -> RetryPolicy {
    RetryPolicy {
        schedule: Schedule::Exponential {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(10 * 3600),
        },
        jitter: Jitter::Full,
        max_attempts: 8,
        honor_retry_after: true,
        retry_after_cap: Duration::from_secs(3600),
    }
}

/// The profile called `name`; the error lists the known names.
pub fn by_name(name: &str) -> Result<Profile, ProfileError> {
    let p = match name {
        "standard-webhooks" | "standard_webhooks" => Profile {
            name: "standard-webhooks".into(),
            scheme: Scheme::StandardWebhooks,
            encoding: PayloadEncoding::Raw,
            header_case: HeaderCase::Lower,
            user_agent: Some("hookshift/0.1".into()),
            accept_encoding: None,
            content_type: "application/json".into(),
            timeout: Duration::from_secs(15),
            follow_redirects: false,
            retry: exponential_policy(),
        },
        // Mirrors fixtures/legacy-go: internal/wire (request), internal/server
        // (DefaultRetrySchedule, `delay * (0.8 + 0.4*rand.Float64())`, attempts
        // = len(schedule)+1, Retry-After ignored, http.Client{Timeout: 10s} with
        // the default redirect policy).
        "legacy" => Profile {
            name: "legacy".into(),
            scheme: Scheme::Legacy,
            encoding: PayloadEncoding::GoJson,
            header_case: HeaderCase::GoCanonical,
            user_agent: Some("Go-http-client/1.1".into()),
            accept_encoding: Some("gzip".into()),
            content_type: "application/json".into(),
            timeout: Duration::from_secs(10),
            follow_redirects: true,
            retry: RetryPolicy {
                schedule: Schedule::Explicit(vec![
                    Duration::from_secs(10),
                    Duration::from_secs(60),
                    Duration::from_secs(5 * 60),
                    Duration::from_secs(30 * 60),
                    Duration::from_secs(2 * 3600),
                ]),
                jitter: Jitter::Proportional(0.2),
                max_attempts: 6,
                honor_retry_after: false,
                retry_after_cap: Duration::from_secs(3600),
            },
        },
        "github" => Profile {
            name: "github".into(),
            scheme: Scheme::Github,
            encoding: PayloadEncoding::Raw,
            header_case: HeaderCase::AsSpelled,
            user_agent: Some("GitHub-Hookshot/hookshift".into()),
            accept_encoding: None,
            content_type: "application/json".into(),
            timeout: Duration::from_secs(10),
            follow_redirects: false,
            retry: exponential_policy(),
        },
        "stripe" => Profile {
            name: "stripe".into(),
            scheme: Scheme::Stripe,
            encoding: PayloadEncoding::Raw,
            header_case: HeaderCase::GoCanonical,
            user_agent: Some("Stripe/1.0 (+https://stripe.com/docs/webhooks)".into()),
            accept_encoding: None,
            content_type: "application/json; charset=utf-8".into(),
            timeout: Duration::from_secs(30),
            follow_redirects: false,
            retry: exponential_policy(),
        },
        _ => {
            return Err(ProfileError::UnknownProfile {
                name: name.to_owned(),
            })
        }
    };
    Ok(p)
}

impl Default for Profile {
    /// The `standard-webhooks` profile.
    fn default() -> Self {
        by_name("standard-webhooks").expect("the default profile exists")
    }
}

impl Profile {
    /// The exact body and the headers this profile sends for `msg`, signed with `secrets`
    /// (several only where the scheme supports rotation).
    pub fn render(&self, secrets: &[&str], msg: &Message<'_>) -> Result<Rendered, ProfileError> {
        let body = match self.encoding {
            PayloadEncoding::Raw => msg.payload.to_vec(),
            PayloadEncoding::GoJson => gojson::reencode(msg.payload)?,
        };
        let signed = signing::sign(
            self.scheme,
            secrets,
            SignInput {
                id: msg.event_id,
                timestamp: msg.timestamp,
                body: &body,
            },
        )?;
        let mut headers: Vec<(String, String)> = Vec::with_capacity(signed.len() + 3);
        headers.push(("Content-Type".into(), self.content_type.clone()));
        match self.scheme {
            Scheme::Legacy => {
                // The Go sender sets X-Delivery-Id only when non-empty.
                if let Some(d) = msg.delivery_id.filter(|d| !d.is_empty()) {
                    headers.push(("X-Delivery-Id".into(), d.to_owned()));
                }
            }
            Scheme::Github => {
                headers.push(("X-GitHub-Event".into(), msg.event_type.to_owned()));
                headers.push((
                    "X-GitHub-Delivery".into(),
                    msg.delivery_id.unwrap_or(msg.event_id).to_owned(),
                ));
            }
            _ => {}
        }
        headers.extend(signed);
        for (name, _) in &mut headers {
            *name = self.header_case.apply(name);
        }
        if self.header_case == HeaderCase::GoCanonical {
            // What Go's http.Header.Write puts on the wire: newlines in values
            // become spaces, values are trimmed, keys are sorted.
            for (_, value) in &mut headers {
                *value = go_header_value(value);
            }
            headers.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(Rendered { body, headers })
    }

    /// All headers in wire order except `Host` and `Content-Length`: the
    /// rendered ones with the profile's `User-Agent` and `Accept-Encoding` added
    /// where its client puts them (Go: `User-Agent` first, `Accept-Encoding` last).
    pub fn wire_headers(&self, rendered: &Rendered) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(rendered.headers.len() + 2);
        if let Some(ua) = &self.user_agent {
            out.push((self.header_case.apply("User-Agent"), ua.clone()));
        }
        out.extend(rendered.headers.iter().cloned());
        if let Some(ae) = &self.accept_encoding {
            out.push((self.header_case.apply("Accept-Encoding"), ae.clone()));
        }
        out
    }
}

/// A header value as Go's `http.Header.Write` writes it: CR and LF become spaces, then ASCII whitespace is trimmed.
fn go_header_value(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    replaced
        .trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn msg<'a>(payload: &'a [u8], delivery_id: Option<&'a str>) -> Message<'a> {
        Message {
            event_id: "evt_1",
            delivery_id,
            event_type: "order.created",
            timestamp: 1_700_000_000,
            payload,
        }
    }

    fn names(r: &Rendered) -> Vec<&str> {
        r.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn get<'r>(r: &'r Rendered, name: &str) -> &'r str {
        &r.headers.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn names_resolve_and_unknown_lists_them() {
        for name in NAMES {
            assert_eq!(by_name(name).unwrap().name, *name);
        }
        assert_eq!(Profile::default().name, "standard-webhooks");
        let err = by_name("svix").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown profile \"svix\" (known: standard-webhooks, legacy, github, stripe)"
        );
    }

    #[test]
    fn standard_webhooks_render() {
        let p = by_name("standard-webhooks").unwrap();
        let payload = br#"{ "b":1, "a":"<" }"#;
        let r = p.render(&[WHSEC], &msg(payload, Some("dlv_1"))).unwrap();
        assert_eq!(r.body, payload, "raw pass-through");
        assert_eq!(
            names(&r),
            [
                "content-type",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature"
            ]
        );
        assert_eq!(
            get(&r, "webhook-id"),
            "evt_1",
            "event id, stable across retries"
        );
        assert_eq!(get(&r, "webhook-timestamp"), "1700000000");
        assert_eq!(get(&r, "content-type"), "application/json");
        assert_eq!(
            signing::verify(Scheme::StandardWebhooks, WHSEC, &r.headers, &r.body),
            Ok(())
        );
        assert_eq!(p.user_agent.as_deref(), Some("hookshift/0.1"));
        assert_eq!(p.timeout, Duration::from_secs(15));
        assert!(!p.follow_redirects);
        assert_eq!(p.retry.max_attempts, 8);
        assert!(p.retry.honor_retry_after);
        assert_eq!(p.retry.retry_after_cap, Duration::from_secs(3600));
        // A secret that is not base64 is an error that does not show it.
        let err = p
            .render(&["whsec_!!SECRETVALUE!!"], &msg(b"{}", None))
            .unwrap_err();
        assert!(!err.to_string().contains("SECRETVALUE"));
        assert!(!format!("{err:?}").contains("SECRETVALUE"));
    }

    #[test]
    fn legacy_render_matches_the_go_fixture() {
        // Expected values from `legacy-sender oracle` and the fixture's own test.
        let p = by_name("legacy").unwrap();
        let r = p
            .render(&["k"], &{
                let mut m = msg(br#"{"b":1,"a":"<"}"#, Some("d"));
                m.event_id = "e";
                m.timestamp = 1;
                m
            })
            .unwrap();
        assert_eq!(r.body, br#"{"a":"\u003c","b":1}"#);
        let want: Vec<(String, String)> = [
            ("Content-Type", "application/json"),
            ("X-Delivery-Id", "d"),
            ("X-Event-Id", "e"),
            (
                "X-Signature",
                "c229cef50822582305442bce1d5d22210ea2c89df652f3723a26746fc2ea8175",
            ),
            ("X-Timestamp", "1"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(r.headers, want);
        assert_eq!(
            signing::verify(Scheme::Legacy, "k", &r.headers, &r.body),
            Ok(())
        );

        // No X-Delivery-Id without one, or with an empty one (Go checks != "").
        for d in [None, Some("")] {
            let r = p.render(&["k"], &msg(b"1", d)).unwrap();
            assert_eq!(
                names(&r),
                ["Content-Type", "X-Event-Id", "X-Signature", "X-Timestamp"]
            );
        }
        // Header values as http.Header.Write writes them.
        let mut m = msg(b"1", Some(" a\r\nb\t"));
        m.event_id = "\tx\ny ";
        let r = p.render(&["k"], &m).unwrap();
        assert_eq!(get(&r, "X-Delivery-Id"), "a  b");
        assert_eq!(get(&r, "X-Event-Id"), "x y");
        // A payload Go cannot decode is an error, as it is for the Go sender.
        assert!(matches!(
            p.render(&["k"], &msg(b"[1e400]", None)),
            Err(ProfileError::Payload(GoJsonError::NumberOutOfRange { .. }))
        ));
        assert!(matches!(
            p.render(&["k"], &msg(b"{", None)),
            Err(ProfileError::Payload(GoJsonError::Syntax { .. }))
        ));
        assert_eq!(
            p.wire_headers(&r).first().unwrap(),
            &("User-Agent".to_string(), "Go-http-client/1.1".to_string())
        );
        assert_eq!(
            p.wire_headers(&r).last().unwrap(),
            &("Accept-Encoding".to_string(), "gzip".to_string())
        );
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert!(p.follow_redirects);
        assert!(!p.retry.honor_retry_after);
        assert_eq!(p.retry.max_attempts, 6);
    }

    #[test]
    fn github_render() {
        let p = by_name("github").unwrap();
        let payload = br#"{"zen":"<>"}"#;
        let r = p
            .render(&["gh-secret"], &msg(payload, Some("dlv_9")))
            .unwrap();
        assert_eq!(r.body, payload);
        assert_eq!(
            names(&r),
            [
                "Content-Type",
                "X-GitHub-Event",
                "X-GitHub-Delivery",
                "X-Hub-Signature-256"
            ]
        );
        assert_eq!(get(&r, "X-GitHub-Event"), "order.created");
        assert_eq!(get(&r, "X-GitHub-Delivery"), "dlv_9");
        assert_eq!(
            signing::verify(Scheme::Github, "gh-secret", &r.headers, &r.body),
            Ok(())
        );
        let r = p.render(&["gh-secret"], &msg(payload, None)).unwrap();
        assert_eq!(
            get(&r, "X-GitHub-Delivery"),
            "evt_1",
            "falls back to the event id"
        );
        assert_eq!(p.user_agent.as_deref(), Some("GitHub-Hookshot/hookshift"));
        assert!(!p.follow_redirects);
    }

    #[test]
    fn stripe_render() {
        let p = by_name("stripe").unwrap();
        let r = p.render(&["sk_1", "sk_2"], &msg(b"{}", None)).unwrap();
        assert_eq!(names(&r), ["Content-Type", "Stripe-Signature"]);
        assert_eq!(get(&r, "Content-Type"), "application/json; charset=utf-8");
        assert!(get(&r, "Stripe-Signature").starts_with("t=1700000000,v1="));
        for s in ["sk_1", "sk_2"] {
            assert_eq!(
                signing::verify(Scheme::Stripe, s, &r.headers, &r.body),
                Ok(())
            );
        }
        assert_eq!(p.timeout, Duration::from_secs(30));
        assert_eq!(
            p.user_agent.as_deref(),
            Some("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
        );
    }

    #[test]
    fn no_secret_is_an_error() {
        for name in NAMES {
            let err = by_name(name).unwrap().render(&[], &msg(b"{}", None));
            assert_eq!(err, Err(ProfileError::Signing(SigningError::NoSecret)));
        }
    }

    #[test]
    fn exponential_bounds_and_delays() {
        let p = by_name("standard-webhooks").unwrap().retry;
        assert_eq!(p.bounds(1), Some((Duration::ZERO, Duration::ZERO)));
        assert_eq!(p.bounds(2), Some((Duration::ZERO, Duration::from_secs(5))));
        assert_eq!(p.bounds(3), Some((Duration::ZERO, Duration::from_secs(10))));
        assert_eq!(
            p.bounds(8),
            Some((Duration::ZERO, Duration::from_secs(5 * 64)))
        );
        assert_eq!(p.bounds(9), None);
        let capped = RetryPolicy {
            max_attempts: 100,
            ..p.clone()
        };
        assert_eq!(capped.bounds(40).unwrap().1, Duration::from_secs(36000));
        assert_eq!(capped.bounds(100).unwrap().1, Duration::from_secs(36000));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 2..=8 {
            let (lo, hi) = p.bounds(attempt).unwrap();
            for _ in 0..200 {
                let d = p.delay(attempt, &mut rng).unwrap();
                assert!(lo <= d && d <= hi, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(p.delay(9, &mut rng), None);
        let fixed = RetryPolicy {
            jitter: Jitter::None,
            ..p
        };
        assert_eq!(fixed.delay(4, &mut rng), Some(Duration::from_secs(20)));
    }

    #[test]
    fn legacy_bounds_and_delays() {
        let p = by_name("legacy").unwrap().retry;
        let s = Duration::from_secs;
        let want = [
            (s(8), s(12)),
            (s(48), s(72)),
            (s(240), s(360)),
            (s(1440), s(2160)),
            (s(5760), s(8640)),
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(p.bounds(i as u32 + 2), Some(*w), "attempt {}", i + 2);
        }
        assert_eq!(p.bounds(7), None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2000 {
            let d = p.delay(2, &mut rng).unwrap();
            assert!(s(8) <= d && d <= s(12), "{d:?}");
            seen_low |= d < Duration::from_millis(8400);
            seen_high |= d > Duration::from_millis(11600);
        }
        assert!(seen_low && seen_high, "jitter spans the range");
        assert_eq!(p.delay(7, &mut rng), None);
    }

    #[test]
    fn schedule_override() {
        let p = by_name("legacy").unwrap().retry;
        let o = p.with_override("1s, 2s,4s").unwrap();
        assert_eq!(
            o.schedule,
            Schedule::Explicit(vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4)
            ])
        );
        assert_eq!(o.max_attempts, 4);
        assert_eq!(o.jitter, Jitter::Proportional(0.2));
        assert!(!o.honor_retry_after);
        let o = p.with_override("250ms,1.5m,1h30m,0").unwrap();
        assert_eq!(
            o.schedule,
            Schedule::Explicit(vec![
                Duration::from_millis(250),
                Duration::from_secs(90),
                Duration::from_secs(5400),
                Duration::ZERO
            ])
        );
        let o = p.with_override("").unwrap();
        assert_eq!(o.max_attempts, 1);
        assert_eq!(o.bounds(2), None);
        // Exponential policies become explicit too.
        let e = by_name("standard-webhooks")
            .unwrap()
            .retry
            .with_override("3s")
            .unwrap();
        assert_eq!(e.max_attempts, 2);
        assert_eq!(e.bounds(2), Some((Duration::ZERO, Duration::from_secs(3))));
    }

    #[test]
    fn schedule_override_errors_name_the_item() {
        let p = by_name("legacy").unwrap().retry;
        for (input, item, reason) in [
            ("1s,10x,3s", "10x", "unknown unit \"x\""),
            ("1s,10", "10", "missing unit"),
            ("-5s", "-5s", "negative delay"),
            ("1s, ms", "ms", "expected a number"),
            ("1..5s", "1..5s", "expected a number"),
            ("5d", "5d", "unknown unit \"d\""),
        ] {
            let err = p.with_override(input).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("retry schedule item {item:?}: ")),
                "{input}: {text}"
            );
            assert!(text.contains(reason), "{input}: {text}");
        }
    }
}
