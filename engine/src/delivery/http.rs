//! The HTTP half of one delivery attempt: send the signed request with a hard
//! deadline, read the response body (capped), and classify what happened.
//!
//! Order inside [`Sender::send`]: validate the URL → refuse blocked IP
//! literals (names are checked by the guarded resolver, see
//! [`super::ssrf`]) → send → read the body to its end or to the cap →
//! classify. One deadline covers connect, the response head and the body:
//! if it passes before the head arrived the outcome is [`Outcome::Timeout`]
//! (ambiguous: the receiver may have processed the request); if it passes
//! after, [`Outcome::BodyRead`]. A 2xx is [`Outcome::Delivered`] only once the
//! body was read to its end, or to `body_cap` (then `truncated` is set).
//!
//! Request headers carry signatures, so no error text produced here contains
//! them, and reqwest's URL is stripped from its errors (it may carry
//! credentials in its userinfo).
//!
//! What reqwest adds on the wire beyond [`OutboundRequest::headers`]:
//! `accept: */*` when the request has no Accept header (reqwest always merges
//! that default; it cannot be removed), `host` and `content-length` (hyper),
//! and `authorization: Basic …` when the URL has userinfo and the request no
//! Authorization header (as Go's net/http does). No User-Agent, no
//! Accept-Encoding (no compression features are enabled), no Referer on
//! redirects (disabled). On a cross-host redirect reqwest drops
//! Authorization/Cookie headers; 301/302/303 turn a POST into a GET without
//! body, 307/308 repeat the POST with its body.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, DATE, LOCATION, RETRY_AFTER};
use reqwest::redirect;
use reqwest::Url;

use super::ssrf::{BlockedDestination, Guard, GuardedResolver};
use crate::state::OutcomeClass;

/// Redirect hops a following client takes before it stops and reports the
/// last 3xx as [`Outcome::Redirect`].
pub const MAX_REDIRECT_HOPS: usize = 10;

/// Default cap on the response body kept (and read): 64 KiB.
pub const DEFAULT_BODY_CAP: usize = 64 * 1024;

/// How the [`Sender`] is built.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Bytes of response body read and kept; reading stops there and the
    /// body counts as complete (`Exchange::truncated`).
    pub body_cap: usize,
    /// Ranges the SSRF guard lets through although they are blocked by
    /// default (tests: `127.0.0.0/8`).
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Idle keep-alive connections kept per host, per client.
    pub pool_idle_per_host: usize,
    /// Send every delivery through this HTTP forward proxy (the tee proxy's
    /// egress listener). The proxy resolves the destination, not us, so
    /// [`Sender::send`] resolves and checks the destination host itself
    /// first. The proxy's own address should be an IP literal: a name would
    /// go through the guarded resolver like any destination.
    pub egress_proxy: Option<String>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            body_cap: DEFAULT_BODY_CAP,
            allow_cidrs: Vec::new(),
            pool_idle_per_host: 32,
            egress_proxy: None,
        }
    }
}

/// The sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The egress proxy URL is not usable.
    #[error("invalid egress proxy URL: {0}")]
    Proxy(#[source] reqwest::Error),
}

/// One delivery request, fully built and signed.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub url: String,
    /// Header names and values in wire order. Always sent with POST.
    pub headers: Vec<(String, String)>,
    /// The exact bytes that were signed.
    pub body: Bytes,
    /// Covers connect, the response head and the body read.
    pub deadline: Duration,
    /// Follow up to [`MAX_REDIRECT_HOPS`] redirects (each hop guarded).
    pub follow_redirects: bool,
    /// Write header names in Title-Case (`X-Event-Id`) instead of hyper's
    /// lowercase.
    pub title_case_headers: bool,
}

/// What one HTTP exchange produced.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub outcome: Outcome,
    /// The final response's status, when a response head arrived.
    pub status: Option<u16>,
    /// Response headers in the order received (names lowercase).
    pub response_headers: Vec<(String, String)>,
    /// At most `body_cap` bytes.
    pub response_body: Vec<u8>,
    /// The body was longer than `body_cap` and reading stopped at the cap.
    pub truncated: bool,
    /// From the start of `send` to the classification.
    pub duration: Duration,
    /// Human detail for anything but a delivery; never contains request
    /// headers.
    pub error: Option<String>,
}

/// How an exchange ended. Maps onto the stored [`OutcomeClass`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, body read to its end or to the cap within the deadline.
    Delivered { status: u16 },
    /// 5xx and 408.
    ServerError { status: u16 },
    /// 429, with Retry-After as seconds or an HTTP-date (relative to the
    /// response's Date header when present, else to now).
    RateLimited { retry_after: Option<Duration> },
    /// The deadline passed before the response head arrived (ambiguous).
    Timeout,
    /// Refused, DNS failure, unreachable: nothing was sent.
    ConnectError,
    /// Connection reset or closed before the response head (also a response
    /// that is not valid HTTP).
    Reset,
    /// The head arrived but the body stalled past the deadline or broke off.
    /// Never a success, whatever the status.
    BodyRead { status: u16 },
    /// Other 4xx (410 included).
    ClientError { status: u16 },
    /// 3xx when not following, or when following stopped (too many hops, no
    /// usable Location).
    Redirect {
        status: u16,
        location: Option<String>,
    },
    /// Unparseable, not http(s), no host.
    InvalidUrl,
    /// The SSRF guard refused the destination; no connection was attempted
    /// to a refused address.
    BlockedDestination,
    /// Our side (client build failure, invalid header in the profile).
    Internal,
}

impl Outcome {
    /// The stored class.
    pub fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Delivered { .. } => OutcomeClass::Delivered,
            Outcome::ServerError { .. } => OutcomeClass::ServerError,
            Outcome::RateLimited { .. } => OutcomeClass::RateLimited,
            Outcome::Timeout => OutcomeClass::Timeout,
            Outcome::ConnectError => OutcomeClass::ConnectError,
            Outcome::Reset => OutcomeClass::Reset,
            Outcome::BodyRead { .. } => OutcomeClass::BodyRead,
            Outcome::ClientError { .. } => OutcomeClass::ClientError,
            Outcome::Redirect { .. } => OutcomeClass::Redirect,
            Outcome::InvalidUrl => OutcomeClass::InvalidUrl,
            Outcome::BlockedDestination => OutcomeClass::BlockedDestination,
            Outcome::Internal => OutcomeClass::Internal,
        }
    }

    /// The HTTP status the outcome carries (429 for rate limiting).
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status }
            | Outcome::ServerError { status }
            | Outcome::BodyRead { status }
            | Outcome::ClientError { status }
            | Outcome::Redirect { status, .. } => Some(*status),
            Outcome::RateLimited { .. } => Some(429),
            Outcome::Timeout
            | Outcome::ConnectError
            | Outcome::Reset
            | Outcome::InvalidUrl
            | Outcome::BlockedDestination
            | Outcome::Internal => None,
        }
    }
}

impl fmt::Display for Outcome {
    /// The class name with its detail: `server_error (503)`,
    /// `rate_limited (retry after 2000 ms)`, `timeout`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class().as_str())?;
        match self {
            Outcome::RateLimited {
                retry_after: Some(d),
            } => {
                write!(f, " (retry after {} ms)", d.as_millis())
            }
            Outcome::RateLimited { retry_after: None } => Ok(()),
            other => match other.status() {
                Some(s) => write!(f, " ({s})"),
                None => Ok(()),
            },
        }
    }
}

/// Sends deliveries. Holds one pooled client per combination of header case
/// and redirect policy; all share the guarded resolver.
pub struct Sender {
    /// Indexed by `title_case as usize * 2 + follow as usize`.
    clients: [reqwest::Client; 4],
    guard: Arc<Guard>,
    body_cap: usize,
    /// Whether deliveries go through an egress proxy (then names are
    /// resolved and checked before sending).
    proxied: bool,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("guard", &self.guard)
            .field("body_cap", &self.body_cap)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub fn new(cfg: SenderConfig) -> Result<Sender, SenderError> {
        let guard = Arc::new(Guard::new(cfg.allow_cidrs.clone()));
        let resolver = Arc::new(GuardedResolver::new(guard.clone()));
        let build = |title_case: bool, follow: bool| -> Result<reqwest::Client, SenderError> {
            let policy = if follow {
                following_policy(guard.clone())
            } else {
                redirect::Policy::none()
            };
            let mut b = reqwest::Client::builder();
            b = match &cfg.egress_proxy {
                Some(url) => b.proxy(reqwest::Proxy::all(url).map_err(SenderError::Proxy)?),
                None => b.no_proxy(),
            };
            let mut b = b
                .dns_resolver(resolver.clone())
                .redirect(policy)
                .referer(false)
                .pool_max_idle_per_host(cfg.pool_idle_per_host);
            if title_case {
                b = b.http1_title_case_headers();
            }
            b.build().map_err(SenderError::Client)
        };
        Ok(Sender {
            clients: [
                build(false, false)?,
                build(false, true)?,
                build(true, false)?,
                build(true, true)?,
            ],
            guard,
            body_cap: cfg.body_cap,
            proxied: cfg.egress_proxy.is_some(),
        })
    }

    fn client(&self, title_case: bool, follow: bool) -> &reqwest::Client {
        &self.clients[title_case as usize * 2 + follow as usize]
    }

    /// One HTTP exchange with a hard deadline covering connect, headers and
    /// the body read.
    pub async fn send(&self, req: OutboundRequest) -> Exchange {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + req.deadline;
        let ex = self.exchange(req, deadline).await;
        let ex = ex.finish(started);
        tracing::debug!(outcome = %ex.outcome, duration_ms = ex.duration.as_millis() as u64, "delivery exchange");
        ex
    }

    async fn exchange(&self, req: OutboundRequest, deadline: tokio::time::Instant) -> Partial {
        // 1. The URL.
        let url = match validate_url(&req.url) {
            Ok(u) => u,
            Err(why) => return Partial::failed(Outcome::InvalidUrl, why),
        };

        // 2. IP literals never reach the resolver: check them here.
        if let Some(ip) = literal_ip(&url) {
            if let Err(blocked) = self.guard.check(&ip.to_string(), ip) {
                return Partial::failed(Outcome::BlockedDestination, blocked.to_string());
            }
        } else if self.proxied {
            // Through a proxy reqwest never resolves the destination, so the
            // guarded resolver would not see it: resolve and check here.
            let host = url.host_str().unwrap_or_default();
            let check =
                tokio::time::timeout_at(deadline, GuardedResolver::resolve_host(&self.guard, host));
            match check.await {
                Err(_) => {
                    return Partial::failed(
                        Outcome::Timeout,
                        "deadline passed while resolving the destination".into(),
                    )
                }
                Ok(Err(e)) => {
                    let outcome = match e.downcast_ref::<BlockedDestination>() {
                        Some(_) => Outcome::BlockedDestination,
                        None => Outcome::ConnectError,
                    };
                    return Partial::failed(outcome, e.to_string());
                }
                Ok(Ok(_)) => {}
            }
        }

        // 3. The request, headers in wire order.
        let headers = match header_map(&req.headers) {
            Ok(h) => h,
            Err(why) => return Partial::failed(Outcome::Internal, why),
        };
        let client = self.client(req.title_case_headers, req.follow_redirects);
        let request = match client.post(url).headers(headers).body(req.body).build() {
            Ok(r) => r,
            Err(e) => return Partial::failed(Outcome::Internal, error_detail(e)),
        };

        // 4. Send; the deadline runs until the head arrives...
        let mut resp = match tokio::time::timeout_at(deadline, client.execute(request)).await {
            Err(_) => {
                return Partial::failed(
                    Outcome::Timeout,
                    format!(
                        "deadline of {} ms passed before the response head arrived",
                        req.deadline.as_millis()
                    ),
                )
            }
            Ok(Err(e)) => {
                let outcome = classify_error(&e);
                let why = match find_blocked(&e) {
                    // The guard's own words, without reqwest's "dns error" framing.
                    Some(blocked) => blocked.to_string(),
                    None => error_detail(e),
                };
                return Partial::failed(outcome, why);
            }
            Ok(Ok(r)) => r,
        };

        let status = resp.status().as_u16();
        let response_headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let content_length = resp.content_length();

        // 5. ...and on through the body, to its end or to the cap.
        let cap = self.body_cap;
        let mut body: Vec<u8> = Vec::new();
        let mut truncated = false;
        let read = tokio::time::timeout_at(deadline, async {
            loop {
                if body.len() >= cap {
                    // Read to the cap: complete. Exactly-cap bodies whose
                    // length was announced are not truncated.
                    truncated = content_length != Some(body.len() as u64);
                    return Ok(());
                }
                match resp.chunk().await? {
                    None => return Ok(()),
                    Some(chunk) => {
                        let room = cap - body.len();
                        if chunk.len() > room {
                            body.extend_from_slice(&chunk[..room]);
                            truncated = true;
                            return Ok(());
                        }
                        body.extend_from_slice(&chunk);
                    }
                }
            }
        })
        .await;
        drop(resp);

        let mut partial = Partial {
            outcome: Outcome::Internal,
            status: Some(status),
            response_headers,
            response_body: body,
            truncated,
            error: None,
        };
        match read {
            Err(_) => {
                partial.outcome = Outcome::BodyRead { status };
                partial.error = Some(format!(
                    "deadline of {} ms passed while reading the response body ({} bytes read)",
                    req.deadline.as_millis(),
                    partial.response_body.len()
                ));
            }
            Ok(Err(e)) => {
                partial.outcome = Outcome::BodyRead { status };
                partial.error = Some(format!(
                    "response body broke off after {} bytes: {}",
                    partial.response_body.len(),
                    error_detail(e)
                ));
            }
            Ok(Ok(())) => {
                let (outcome, error) =
                    classify_status(status, &partial.response_headers, req.follow_redirects);
                partial.outcome = outcome;
                partial.error = error;
            }
        }
        partial
    }
}

/// An exchange before its duration is known.
struct Partial {
    outcome: Outcome,
    status: Option<u16>,
    response_headers: Vec<(String, String)>,
    response_body: Vec<u8>,
    truncated: bool,
    error: Option<String>,
}

impl Partial {
    fn failed(outcome: Outcome, why: String) -> Partial {
        Partial {
            outcome,
            status: None,
            response_headers: Vec::new(),
            response_body: Vec::new(),
            truncated: false,
            error: Some(why),
        }
    }

    fn finish(self, started: Instant) -> Exchange {
        Exchange {
            outcome: self.outcome,
            status: self.status,
            response_headers: self.response_headers,
            response_body: self.response_body,
            truncated: self.truncated,
            duration: started.elapsed(),
            error: self.error,
        }
    }
}

/// Parse and check an endpoint URL: http or https, with a host.
fn validate_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("invalid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported URL scheme `{other}` (expected http or https)"
            ))
        }
    }
    match url.host_str() {
        Some(h) if !h.is_empty() => {}
        _ => return Err("URL has no host".to_string()),
    }
    Ok(url)
}

/// The host of `url` when it is an IP literal.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    // The URL parser normalises IPv4 literals (`0x7f.1` → `127.0.0.1`) and
    // brackets IPv6 ones, so parsing the host string is exact.
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// Build the header map, appending in wire order. Errors name the header but
/// never show its value.
fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid request header name `{}`", name.escape_debug()))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for request header `{n}`"))?;
        map.append(n, v);
    }
    Ok(map)
}

/// Redirect policy for following clients: at most [`MAX_REDIRECT_HOPS`]
/// hops; a hop to a non-http(s) URL stops (the 3xx is reported); a hop to a
/// blocked IP literal is an error carrying [`BlockedDestination`]. Hops to
/// names go through the guarded resolver like any request.
fn following_policy(guard: Arc<Guard>) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        // `previous` holds the original URL plus every hop taken so far.
        if attempt.previous().len() > MAX_REDIRECT_HOPS {
            return attempt.stop();
        }
        let next = attempt.url();
        if !matches!(next.scheme(), "http" | "https") || next.host_str().is_none() {
            return attempt.stop();
        }
        if let Some(ip) = literal_ip(next) {
            if let Err(blocked) = guard.check(&ip.to_string(), ip) {
                return attempt.error(blocked);
            }
        }
        attempt.follow()
    })
}

/// The guard's refusal, if it is somewhere in the error's chain (from the
/// resolver or the redirect policy).
fn find_blocked(e: &reqwest::Error) -> Option<&BlockedDestination> {
    let mut src: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(b) = s.downcast_ref::<BlockedDestination>() {
            return Some(b);
        }
        src = s.source();
    }
    None
}

/// Classify an error from `execute` (no response head) by walking its
/// `source()` chain.
fn classify_error(e: &reqwest::Error) -> Outcome {
    let mut reset = false;
    let mut timed_out = false;
    let mut src: Option<&(dyn StdError + 'static)> = Some(e);
    if find_blocked(e).is_some() {
        return Outcome::BlockedDestination;
    }
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => reset = true,
                io::ErrorKind::TimedOut => timed_out = true,
                _ => {}
            }
        }
        let text = s.to_string();
        if text.contains("connection closed before message completed")
            || text.contains("IncompleteMessage")
            || text.contains("connection reset")
        {
            reset = true;
        }
        src = s.source();
    }
    if e.is_connect() {
        // Nothing was sent: refused, DNS failure, unreachable, TLS handshake.
        Outcome::ConnectError
    } else if reset {
        Outcome::Reset
    } else if timed_out || e.is_timeout() {
        Outcome::Timeout
    } else if e.is_builder() {
        // reqwest refused the URL itself (e.g. a host hyper cannot use).
        Outcome::InvalidUrl
    } else if e.is_request() || e.is_body() || e.is_decode() {
        // The connection failed before a valid response head: a response
        // that is not HTTP, a failed request write. Retryable.
        Outcome::Reset
    } else {
        Outcome::Internal
    }
}

/// The outcome for a complete response, and its detail.
fn classify_status(
    status: u16,
    headers: &[(String, String)],
    following: bool,
) -> (Outcome, Option<String>) {
    let header = |name: &HeaderName| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_str()))
            .map(|(_, v)| v.as_str())
    };
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let answered = format!("receiver answered {status}{reason}");
    match status {
        200..=299 => (Outcome::Delivered { status }, None),
        429 => {
            let retry_after = header(&RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, header(&DATE), SystemTime::now()));
            (Outcome::RateLimited { retry_after }, Some(answered))
        }
        408 | 500..=599 => (Outcome::ServerError { status }, Some(answered)),
        400..=499 => (Outcome::ClientError { status }, Some(answered)),
        300..=399 => {
            let location = header(&LOCATION).map(str::to_string);
            let why = if following {
                format!(
                    "{answered}; redirect not followed (more than {MAX_REDIRECT_HOPS} hops, or no usable http(s) Location)"
                )
            } else {
                format!("{answered}; redirects are not followed for this endpoint")
            };
            (Outcome::Redirect { status, location }, Some(why))
        }
        // 1xx as a final status, or 600 and above: not a valid answer from a
        // receiver; treated as a server fault (retryable).
        _ => (
            Outcome::ServerError { status },
            Some(format!("{answered} (not a valid final status)")),
        ),
    }
}

/// Retry-After as delay-seconds or an HTTP-date. A date is taken relative to
/// the response's Date header when it parses, else to `now`; dates in the past
/// give zero. Anything unparseable gives `None`.
pub fn parse_retry_after(value: &str, date: Option<&str>, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurd values rather than failing.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let base = date
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or(now);
    Some(at.duration_since(base).unwrap_or(Duration::ZERO))
}

/// The error's chain as one line, without reqwest's URL and without repeats.
fn error_detail(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts: Vec<String> = Vec::new();
    let mut src: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(s) = src {
        let text = s.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_statuses() {
        let cases = [
            (
                Outcome::Delivered { status: 200 },
                OutcomeClass::Delivered,
                Some(200),
            ),
            (
                Outcome::ServerError { status: 503 },
                OutcomeClass::ServerError,
                Some(503),
            ),
            (
                Outcome::RateLimited { retry_after: None },
                OutcomeClass::RateLimited,
                Some(429),
            ),
            (Outcome::Timeout, OutcomeClass::Timeout, None),
            (Outcome::ConnectError, OutcomeClass::ConnectError, None),
            (Outcome::Reset, OutcomeClass::Reset, None),
            (
                Outcome::BodyRead { status: 200 },
                OutcomeClass::BodyRead,
                Some(200),
            ),
            (
                Outcome::ClientError { status: 410 },
                OutcomeClass::ClientError,
                Some(410),
            ),
            (
                Outcome::Redirect {
                    status: 307,
                    location: None,
                },
                OutcomeClass::Redirect,
                Some(307),
            ),
            (Outcome::InvalidUrl, OutcomeClass::InvalidUrl, None),
            (
                Outcome::BlockedDestination,
                OutcomeClass::BlockedDestination,
                None,
            ),
            (Outcome::Internal, OutcomeClass::Internal, None),
        ];
        assert_eq!(cases.len(), OutcomeClass::ALL.len());
        for (outcome, class, status) in cases {
            assert_eq!(outcome.class(), class, "{outcome:?}");
            assert_eq!(outcome.status(), status, "{outcome:?}");
        }
    }

    #[test]
    fn status_classification() {
        let c = |s| classify_status(s, &[], false).0;
        assert_eq!(c(200), Outcome::Delivered { status: 200 });
        assert_eq!(c(204), Outcome::Delivered { status: 204 });
        assert_eq!(c(299), Outcome::Delivered { status: 299 });
        assert_eq!(c(500), Outcome::ServerError { status: 500 });
        assert_eq!(c(503), Outcome::ServerError { status: 503 });
        assert_eq!(c(408), Outcome::ServerError { status: 408 });
        assert_eq!(c(400), Outcome::ClientError { status: 400 });
        assert_eq!(c(410), Outcome::ClientError { status: 410 });
        assert_eq!(c(429), Outcome::RateLimited { retry_after: None });
        assert_eq!(
            c(301),
            Outcome::Redirect {
                status: 301,
                location: None
            }
        );
        assert_eq!(c(600), Outcome::ServerError { status: 600 });
        let hs = vec![("location".to_string(), "/next".to_string())];
        assert_eq!(
            classify_status(308, &hs, false).0,
            Outcome::Redirect {
                status: 308,
                location: Some("/next".into())
            }
        );
        assert_eq!(classify_status(200, &[], false).1, None);
        assert_eq!(
            Outcome::ServerError { status: 503 }.to_string(),
            "server_error (503)"
        );
        assert_eq!(
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
            .to_string(),
            "rate_limited (retry after 2000 ms)"
        );
        assert_eq!(
            Outcome::RateLimited { retry_after: None }.to_string(),
            "rate_limited"
        );
        assert_eq!(Outcome::Timeout.to_string(), "timeout");
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("2", None, now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(" 120 ", None, now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", None, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", None, now), None);
        assert_eq!(parse_retry_after("1.5", None, now), None);
        assert_eq!(parse_retry_after("soon", None, now), None);
        assert_eq!(parse_retry_after("", None, now), None);
        // HTTP-date relative to now
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", None, now),
            Some(Duration::from_secs(60))
        );
        // relative to the response's Date, not to our clock
        assert_eq!(
            parse_retry_after(
                "Sun, 06 Nov 1994 08:49:47 GMT",
                Some("Sun, 06 Nov 1994 08:49:40 GMT"),
                now
            ),
            Some(Duration::from_secs(7))
        );
        // obsolete forms (RFC 850, asctime)
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:57 GMT", None, now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:42 1994", None, now),
            Some(Duration::from_secs(5))
        );
        // in the past → zero; unparseable Date header → now
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", None, now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:39 GMT", Some("garbage"), now),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn url_validation() {
        for bad in [
            "",
            "not a url",
            "example.com/hook",
            "ftp://example.com/hook",
            "mailto:a@example.com",
            "file:///etc/passwd",
            "http://",
            "http://exa mple.com/",
            "http://[::1/",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?} should be invalid");
        }
        for good in [
            "http://example.com/hook",
            "https://example.com:8443/a?b=c",
            "http://127.0.0.1:9/x",
            "http://[::1]:9/x",
        ] {
            assert!(validate_url(good).is_ok(), "{good:?} should be valid");
        }
        // WHATWG parsing: `https:///path` has host `path`, not an empty host.
        assert_eq!(
            validate_url("https:///path").unwrap().host_str(),
            Some("path")
        );
        // Shorthand IPv4 hosts are normalised, so the literal check sees them.
        let u = validate_url("http://0x7f.1/x").unwrap();
        assert_eq!(literal_ip(&u), Some("127.0.0.1".parse().unwrap()));
        let u = validate_url("http://2130706433/x").unwrap();
        assert_eq!(literal_ip(&u), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn header_errors_never_show_values() {
        let err = header_map(&[("x-signature".into(), "v1,secret\nvalue".into())]).unwrap_err();
        assert!(err.contains("x-signature"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = header_map(&[("bad name".into(), "v".into())]).unwrap_err();
        assert!(err.contains("bad name"), "{err}");
        let map = header_map(&[
            ("X-B".into(), "1".into()),
            ("x-a".into(), "2".into()),
            ("x-b".into(), "3".into()),
        ])
        .unwrap();
        assert_eq!(map.get_all("x-b").iter().count(), 2);
    }
}
