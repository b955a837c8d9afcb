//! The HTTP half of one delivery attempt: send the signed request with a hard
//! deadline, read the response body (capped), and classify what happened.
//!
//! Order inside [`Sender::send`]: validate the URL → refuse blocked IP
//! literals (names are checked by the guarded resolver when dialling, see
//! [`super::ssrf`]; behind the egress proxy they are resolved and checked
//! here) → send → follow redirects when the profile does → read the body to
//! its end or to the cap → classify. One deadline covers connect, every
//! hop, the response head and the body: if it passes before the head
//! arrived the outcome is [`Outcome::Timeout`] (ambiguous: the receiver may
//! have processed the request); if it passes after, [`Outcome::BodyRead`].
//! A 2xx is [`Outcome::Delivered`] only once the body was read to its end,
//! or to `body_cap` (then `truncated` is set).
//!
//! Request headers carry signatures, so no error text produced here contains
//! them, and URLs are never quoted in errors (they may carry credentials).
//!
//! What goes on the wire is [`OutboundRequest::headers`] and nothing the
//! profile did not ask for, in Go's net/http order: `Host`, then the
//! profile's `User-Agent` (if any), then `Content-Length` (requests with a
//! body), then the remaining headers in the order given (the profile sorts
//! them as Go does and puts `Accept-Encoding` last). `Authorization: Basic …`
//! is added when the URL has userinfo and the request no Authorization
//! header, in its sorted place, as Go's net/http does. No `Accept`, no
//! `Referer`. Names are lowercase, or Title-Case when
//! [`OutboundRequest::title_case_headers`] is set. The transport is
//! [`super::client`] (hyper's HTTP/1.1 connection API and our own pool).
//!
//! Redirects (when [`OutboundRequest::follow_redirects`]) follow Go's
//! client: 301, 302 and 303 turn a POST into a GET without body and without
//! the body's headers (Content-Type, Content-Encoding, Content-Language,
//! Content-Location), 307 and 308 repeat the request with its body; once a
//! hop dropped the body it stays dropped. Other headers are kept, except
//! Authorization, Cookie and the like on a hop to a host that is neither the
//! first request's host nor one of its subdomains. Every hop's destination
//! is checked by the guard.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, DATE, HOST, LOCATION,
    RETRY_AFTER, TRANSFER_ENCODING, USER_AGENT,
};
use hyper::{Method, Request, StatusCode};
use url::Url;

use super::client::{self, Client, ProxyError, SendError};
use super::ssrf::{BlockedDestination, Guard, GuardedResolver};
use crate::state::OutcomeClass;

/// Requests one attempt makes at most when it follows redirects: the first
/// and nine redirects, as Go's `http.Client`, whose default policy stops
/// "after 10 redirects" counting the first request (checked against Go:
/// a receiver that always redirects gets 10 requests). The last 3xx is then
/// reported as [`Outcome::Redirect`].
pub const MAX_REQUESTS_PER_ATTEMPT: usize = 10;

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
    /// The egress proxy URL is not usable.
    #[error("invalid egress proxy URL: {0}")]
    Proxy(#[source] ProxyError),
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
    /// Follow redirects, up to [`MAX_REQUESTS_PER_ATTEMPT`] requests in all
    /// (each hop guarded).
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

/// Sends deliveries over one pooled [`Client`] (connections are pooled per
/// origin and header case), with the SSRF guard applied to every hop.
pub struct Sender {
    client: Client,
    guard: Arc<Guard>,
    body_cap: usize,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("guard", &self.guard)
            .field("body_cap", &self.body_cap)
            .field("client", &self.client)
            .finish()
    }
}

/// What the hops so far did to the request (Go's redirect rules).
struct Hop {
    method: Method,
    /// `None` once a 301/302/303 dropped it.
    body: Option<Bytes>,
    /// A hop went to a host that is not the first one nor a subdomain of it.
    strip_sensitive: bool,
}

impl Sender {
    pub fn new(cfg: SenderConfig) -> Result<Sender, SenderError> {
        let guard = Arc::new(Guard::new(cfg.allow_cidrs.clone()));
        let client = Client::new(
            guard.clone(),
            cfg.pool_idle_per_host,
            cfg.egress_proxy.as_deref(),
        )
        .map_err(SenderError::Proxy)?;
        Ok(Sender {
            client,
            guard,
            body_cap: cfg.body_cap,
        })
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

    /// Idle pooled connections to `url`'s origin for the given header case
    /// (tests: connection reuse).
    #[doc(hidden)]
    pub fn idle_connections(&self, url: &str, title_case: bool) -> usize {
        validate_url(url)
            .map(|u| self.client.idle_for(&u, title_case))
            .unwrap_or(0)
    }

    async fn exchange(&self, req: OutboundRequest, deadline: tokio::time::Instant) -> Partial {
        // 1. The URL, and the guard for its destination.
        let mut url = match validate_url(&req.url) {
            Ok(u) => u,
            Err(why) => return Partial::failed(Outcome::InvalidUrl, why),
        };
        if let Err(p) = self.check_destination(&url, deadline).await {
            return p;
        }

        // 2. The profile's headers, checked once for every hop.
        let headers = match profile_headers(&req.headers) {
            Ok(h) => h,
            Err(why) => return Partial::failed(Outcome::Internal, why),
        };
        let first_host = url.host_str().unwrap_or_default().to_string();
        let mut hop = Hop {
            method: Method::POST,
            body: Some(req.body),
            strip_sensitive: false,
        };
        let mut hops = 0;

        loop {
            // 3. Send; the deadline runs until the head arrives...
            let request = match build_request(&url, &headers, &hop) {
                Ok(r) => r,
                Err(why) => return Partial::failed(Outcome::Internal, why),
            };
            let sent = self.client.send(&url, req.title_case_headers, request);
            let (resp, lease) = match tokio::time::timeout_at(deadline, sent).await {
                Err(_) => {
                    return Partial::failed(
                        Outcome::Timeout,
                        format!(
                            "deadline of {} ms passed before the response head arrived",
                            req.deadline.as_millis()
                        ),
                    )
                }
                Ok(Err(e)) => return Partial::failed(classify_send_error(&e), e.to_string()),
                Ok(Ok(r)) => r,
            };

            // 4. A redirect the profile follows: on to the next hop.
            let status = resp.status().as_u16();
            if req.follow_redirects
                && matches!(status, 301 | 302 | 303 | 307 | 308)
                && hops + 1 < MAX_REQUESTS_PER_ATTEMPT
            {
                if let Some(next) = next_hop(&url, resp.headers()) {
                    // The connection is reused only if the 3xx had no body
                    // left to read; otherwise it is closed, not drained.
                    if resp.body().is_end_stream() {
                        lease.release();
                    }
                    drop(resp);
                    if (301..=303).contains(&status) {
                        if hop.method != Method::GET && hop.method != Method::HEAD {
                            hop.method = Method::GET;
                        }
                        hop.body = None;
                    }
                    if !hop.strip_sensitive
                        && !is_domain_or_subdomain(next.host_str().unwrap_or_default(), &first_host)
                    {
                        hop.strip_sensitive = true;
                    }
                    if let Err(p) = self.check_destination(&next, deadline).await {
                        return p;
                    }
                    url = next;
                    hops += 1;
                    continue;
                }
            }

            // 5. ...and on through the body, to its end or to the cap.
            return self
                .read_response(
                    resp,
                    lease,
                    status,
                    deadline,
                    &req.deadline,
                    req.follow_redirects,
                )
                .await;
        }
    }

    /// The guard for one hop's destination: IP literals are checked here
    /// (they never reach a resolver). Behind the egress proxy the proxy
    /// resolves names, not us, so they are resolved and checked here too;
    /// otherwise the guarded resolver checks them when dialling.
    async fn check_destination(
        &self,
        url: &Url,
        deadline: tokio::time::Instant,
    ) -> Result<(), Partial> {
        if let Some(ip) = literal_ip(url) {
            return self.guard.check(&ip.to_string(), ip).map_err(|blocked| {
                Partial::failed(Outcome::BlockedDestination, blocked.to_string())
            });
        }
        if !self.client.proxied() {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let check =
            tokio::time::timeout_at(deadline, GuardedResolver::resolve_host(&self.guard, host));
        match check.await {
            Err(_) => Err(Partial::failed(
                Outcome::Timeout,
                "deadline passed while resolving the destination".into(),
            )),
            Ok(Err(e)) => {
                let outcome = match e.downcast_ref::<BlockedDestination>() {
                    Some(_) => Outcome::BlockedDestination,
                    None => Outcome::ConnectError,
                };
                Err(Partial::failed(outcome, e.to_string()))
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Read the final response's body to its end or to the cap, and classify.
    async fn read_response(
        &self,
        resp: hyper::Response<hyper::body::Incoming>,
        lease: client::Lease<'_>,
        status: u16,
        deadline: tokio::time::Instant,
        budget: &Duration,
        following: bool,
    ) -> Partial {
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
        let mut incoming = resp.into_body();
        let content_length = incoming.size_hint().exact();

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
                match incoming.frame().await {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(frame)) => {
                        // Trailers are not kept.
                        let Ok(chunk) = frame.into_data() else {
                            continue;
                        };
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
        // Read to its end: the connection can carry the next request.
        // Otherwise dropping the body and the lease closes it.
        if matches!(read, Ok(Ok(()))) && incoming.is_end_stream() {
            lease.release();
        }

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
                    budget.as_millis(),
                    partial.response_body.len()
                ));
            }
            Ok(Err(e)) => {
                partial.outcome = Outcome::BodyRead { status };
                partial.error = Some(format!(
                    "response body broke off after {} bytes: {}",
                    partial.response_body.len(),
                    SendError::Http(e)
                ));
            }
            Ok(Ok(())) => {
                let (outcome, error) =
                    classify_status(status, &partial.response_headers, following);
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
        Some(h) if !h.is_empty() => {
            // The WHATWG parser accepts hosts HTTP does not (`{{hostname}}`).
            if h.parse::<hyper::http::uri::Authority>().is_err() {
                return Err("URL host is not valid in HTTP".to_string());
            }
        }
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

/// The profile's headers, parsed and checked. Errors name the header but
/// never show its value.
fn profile_headers(headers: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid request header name `{}`", name.escape_debug()))?;
            if n == HOST || n == CONTENT_LENGTH || n == TRANSFER_ENCODING {
                return Err(format!(
                    "request header `{n}` is written by the transport, not the profile"
                ));
            }
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for request header `{n}`"))?;
            Ok((n, v))
        })
        .collect()
}

/// Headers whose meaning goes with the body, dropped with it on a
/// 301/302/303 (Go, after the Fetch standard).
fn is_body_header(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "content-type" | "content-encoding" | "content-language" | "content-location"
    )
}

/// Headers Go does not carry to a host outside the first request's domain.
fn is_sensitive_header(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "authorization"
            | "www-authenticate"
            | "cookie"
            | "cookie2"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// One hop's request: method, headers in wire order (see the module
/// documentation), body. The URI is set by the client.
fn build_request(
    url: &Url,
    profile: &[(HeaderName, HeaderValue)],
    hop: &Hop,
) -> Result<Request<Full<Bytes>>, String> {
    let mut map = HeaderMap::with_capacity(profile.len() + 3);
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let host =
        HeaderValue::from_str(&host).map_err(|_| "the URL's host is not a valid Host header")?;
    map.insert(HOST, host);
    for (n, v) in profile {
        if n == USER_AGENT {
            map.append(n.clone(), v.clone());
        }
    }
    if let Some(body) = &hop.body {
        map.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let keep = |n: &HeaderName| {
        let dropped_with_body = hop.body.is_none() && is_body_header(n);
        let dropped_off_domain = hop.strip_sensitive && is_sensitive_header(n);
        !dropped_with_body && !dropped_off_domain
    };
    let mut basic = if profile.iter().any(|(n, _)| n == AUTHORIZATION && keep(n)) {
        None
    } else {
        client::basic_auth(url)
    };
    for (n, v) in profile {
        if n == USER_AGENT || !keep(n) {
            continue;
        }
        if basic.is_some() && n.as_str() > AUTHORIZATION.as_str() {
            append_basic(&mut map, basic.take())?;
        }
        map.append(n.clone(), v.clone());
    }
    append_basic(&mut map, basic)?;

    let mut request = Request::new(Full::new(hop.body.clone().unwrap_or_default()));
    *request.method_mut() = hop.method.clone();
    *request.headers_mut() = map;
    Ok(request)
}

fn append_basic(map: &mut HeaderMap, basic: Option<String>) -> Result<(), String> {
    if let Some(b) = basic {
        let v = HeaderValue::from_str(&b).map_err(|_| "the URL's userinfo is not usable")?;
        map.append(AUTHORIZATION, v);
    }
    Ok(())
}

/// The next hop's URL, when the 3xx names a usable one: a Location that
/// resolves against `url` to an http(s) URL with a host.
fn next_hop(url: &Url, headers: &HeaderMap) -> Option<Url> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    let next = url.join(location).ok()?;
    match (next.scheme(), next.host_str()) {
        ("http" | "https", Some(h)) if !h.is_empty() => Some(next),
        _ => None,
    }
}

/// Go's `isDomainOrSubdomain`: `sub` is `parent` or ends in `.parent`.
fn is_domain_or_subdomain(sub: &str, parent: &str) -> bool {
    if sub == parent {
        return true;
    }
    // An IPv6 literal (or zone) is never a subdomain.
    if sub.contains([':', '%']) {
        return false;
    }
    sub.len() > parent.len()
        && sub.ends_with(parent)
        && sub.as_bytes()[sub.len() - parent.len() - 1] == b'.'
}

/// The outcome for a request that got no response head.
fn classify_send_error(e: &SendError) -> Outcome {
    match e {
        SendError::Blocked(_) => Outcome::BlockedDestination,
        // Refused, DNS failure, unreachable, TLS handshake, the proxy's
        // refusal: nothing was sent.
        SendError::Connect(_) => Outcome::ConnectError,
        SendError::Target => Outcome::InvalidUrl,
        // hyper refused what we gave it: our side.
        SendError::Http(e) if e.is_user() => Outcome::Internal,
        // The connection failed before a valid response head: reset,
        // closed, a response that is not HTTP. Retryable.
        SendError::Http(_) => Outcome::Reset,
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
    let reason = StatusCode::from_u16(status)
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
                    "{answered}; redirect not followed ({MAX_REQUESTS_PER_ATTEMPT} requests made, or no usable http(s) Location)"
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
        let err =
            profile_headers(&[("x-signature".into(), "v1,secret\nvalue".into())]).unwrap_err();
        assert!(err.contains("x-signature"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = profile_headers(&[("bad name".into(), "v".into())]).unwrap_err();
        assert!(err.contains("bad name"), "{err}");
        for transport in ["Host", "content-length", "Transfer-Encoding"] {
            let err = profile_headers(&[(transport.into(), "1".into())]).unwrap_err();
            assert!(err.contains("transport"), "{err}");
        }
    }

    fn wire(url: &str, headers: &[(&str, &str)], hop: &Hop) -> Vec<(String, String)> {
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let parsed = profile_headers(&owned).unwrap();
        let req = build_request(&Url::parse(url).unwrap(), &parsed, hop).unwrap();
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    fn post(body: &'static [u8]) -> Hop {
        Hop {
            method: Method::POST,
            body: Some(Bytes::from_static(body)),
            strip_sensitive: false,
        }
    }

    /// What the legacy profile hands over (`Profile::wire_headers`).
    const LEGACY: &[(&str, &str)] = &[
        ("User-Agent", "Go-http-client/1.1"),
        ("Content-Type", "application/json"),
        ("X-Event-Id", "evt_1"),
        ("X-Signature", "sig"),
        ("X-Timestamp", "1"),
        ("Accept-Encoding", "gzip"),
    ];

    fn names(w: &[(String, String)]) -> Vec<&str> {
        w.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn wire_order_is_go_s() {
        let w = wire("http://example.com:8080/hook", LEGACY, &post(b"{}"));
        assert_eq!(
            names(&w),
            [
                "host",
                "user-agent",
                "content-length",
                "content-type",
                "x-event-id",
                "x-signature",
                "x-timestamp",
                "accept-encoding"
            ]
        );
        assert_eq!(w[0].1, "example.com:8080");
        assert_eq!(w[2].1, "2");
        // A default port is not written; no Accept ever.
        let w = wire("https://example.com/", &[("x-a", "1")], &post(b""));
        assert_eq!(
            w,
            [
                ("host".to_string(), "example.com".to_string()),
                ("content-length".to_string(), "0".to_string()),
                ("x-a".to_string(), "1".to_string()),
            ]
        );
    }

    #[test]
    fn userinfo_basic_auth_goes_in_its_sorted_place() {
        let w = wire("http://u:p@example.com/", LEGACY, &post(b"{}"));
        assert_eq!(
            &names(&w)[..5],
            [
                "host",
                "user-agent",
                "content-length",
                "authorization",
                "content-type"
            ]
        );
        assert_eq!(w[3].1, "Basic dTpw");
        // The profile's own Authorization wins.
        let w = wire(
            "http://u:p@example.com/",
            &[("Authorization", "Bearer t")],
            &post(b""),
        );
        assert_eq!(
            w.iter().filter(|(n, _)| n == "authorization").count(),
            1,
            "{w:?}"
        );
        assert_eq!(w[2].1, "Bearer t");
    }

    #[test]
    fn redirect_hops_drop_body_and_sensitive_headers_as_go_does() {
        let headers = &[
            ("User-Agent", "ua"),
            ("Authorization", "Bearer t"),
            ("Content-Type", "application/json"),
            ("Cookie", "c=1"),
            ("X-Event-Id", "e"),
        ];
        let get = Hop {
            method: Method::GET,
            body: None,
            strip_sensitive: false,
        };
        let w = wire("http://example.com/", headers, &get);
        assert_eq!(
            names(&w),
            [
                "host",
                "user-agent",
                "authorization",
                "cookie",
                "x-event-id"
            ]
        );
        let elsewhere = Hop {
            strip_sensitive: true,
            ..post(b"{}")
        };
        let w = wire("http://example.com/", headers, &elsewhere);
        assert_eq!(
            names(&w),
            [
                "host",
                "user-agent",
                "content-length",
                "content-type",
                "x-event-id"
            ]
        );

        assert!(is_domain_or_subdomain("example.com", "example.com"));
        assert!(is_domain_or_subdomain("hooks.example.com", "example.com"));
        assert!(!is_domain_or_subdomain("badexample.com", "example.com"));
        assert!(!is_domain_or_subdomain("example.com", "hooks.example.com"));
        assert!(!is_domain_or_subdomain("[::1]", "1]"));
    }

    #[test]
    fn redirect_locations() {
        let base = Url::parse("http://u:p@example.com/a/b").unwrap();
        let loc = |l: &str| {
            let mut h = HeaderMap::new();
            h.insert(LOCATION, HeaderValue::from_str(l).unwrap());
            next_hop(&base, &h).map(|u| u.to_string())
        };
        assert_eq!(
            loc("/target").as_deref(),
            Some("http://u:p@example.com/target")
        );
        assert_eq!(loc("c").as_deref(), Some("http://u:p@example.com/a/c"));
        assert_eq!(
            loc("https://other.example/x").as_deref(),
            Some("https://other.example/x")
        );
        assert_eq!(loc("ftp://other.example/x"), None);
        assert_eq!(loc("mailto:a@example.com"), None);
        assert_eq!(next_hop(&base, &HeaderMap::new()), None);
    }
}
