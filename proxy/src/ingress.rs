//! The ingress tee: producers' API calls go to the API primary, whose answer
//! is returned unchanged; the same call is mirrored to the other sender.
//!
//! Layers of one request (`handle`): read the body (capped, 413 above the
//! cap) → give `POST /v1/events` without an id one (`evt_` + UUIDv7, spliced
//! into the JSON so the rest of the bytes stay as sent; both senders get
//! the same bytes) → forward to the primary and wait for its answer → offer
//! the mirror job to a bounded queue with `try_send` (full: dropped, counted
//! and recorded as dropped) → answer the producer. Mirror workers take jobs
//! off the queue, send them to the shadow with its own timeout and queue the
//! exchange (request, both answers, both latencies) for the capture writer.
//!
//! The hot path is kept short: both senders are reached through one pooled
//! keep-alive hyper client whose base URLs were split once at start-up, the
//! body is read once into `Bytes` that the primary request, the mirror job
//! and the capture row share, and the capture row is handed to the store's
//! background writer, which batches rows into transactions.
//!
//! Architecture invariant: the ingress never waits on the mirror leg. The
//! only thing the primary path does for the mirror is a non-blocking
//! `try_send`; the capture row of a dropped mirror is offered the same way.
//! Memory is bounded by the queue bound plus the mirror workers.

use crate::capture::{now_ms, CaptureStore, IngressRecord, SenderName};
use crate::config::ValidConfig;
use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Request headers not forwarded (they concern the hop to the proxy).
const HOP_BY_HOP: [HeaderName; 10] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
];

/// Response headers not passed back (the proxy frames its own answer).
const RESPONSE_HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
];

/// Header values replaced in the capture store (credentials).
const REDACTED: &[&str] = &["authorization", "cookie", "x-api-key"];

/// The HTTP client both legs use: pooled keep-alive connections per sender.
type HttpClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why the ingress could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// A sender's API base URL is not usable as an upstream.
    #[error("senders.{sender}.api `{base}`: {message}")]
    Upstream {
        sender: &'static str,
        base: String,
        message: String,
    },
    /// TLS could not be set up for https upstreams.
    #[error("setting up TLS for the ingress client: {0}")]
    Tls(#[from] rustls::Error),
    /// The mirror leg's thread or runtime could not be started.
    #[error("starting the mirror thread: {0}")]
    Runtime(std::io::Error),
}

/// A pooled keep-alive client for sender APIs (http or https).
fn http_client() -> Result<HttpClient, IngressError> {
    let mut http = HttpConnector::new();
    // Requests and answers are small: no Nagle delay on either leg.
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            // Enough idle connections for every producer connection and
            // every mirror worker, so steady load never reconnects.
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https),
    )
}

/// A sender's API base URL, split once so that each request only joins its
/// path onto it.
#[derive(Debug, Clone)]
struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The base's path without its trailing slash ("" for a bare host).
    prefix: String,
    /// `Authorization: Basic …` from credentials in the base URL, added
    /// when the request carries no `Authorization` of its own.
    basic_auth: Option<HeaderValue>,
}

impl Upstream {
    fn parse(sender: SenderName, base: &str) -> Result<Upstream, IngressError> {
        let err = |message: String| IngressError::Upstream {
            sender: sender.as_str(),
            base: base.to_string(),
            message,
        };
        let url = reqwest::Url::parse(base).map_err(|e| err(e.to_string()))?;
        let basic_auth = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = percent_decode(url.username());
            let pass = url.password().map(percent_decode).unwrap_or_default();
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut v =
                HeaderValue::try_from(format!("Basic {token}")).map_err(|e| err(e.to_string()))?;
            v.set_sensitive(true);
            Some(v)
        };
        let host = url.host_str().ok_or_else(|| err("no host".into()))?;
        // `host_str` keeps an IPv6 address's brackets.
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Upstream {
            scheme: url
                .scheme()
                .parse()
                .map_err(|e: axum::http::uri::InvalidUri| err(e.to_string()))?,
            authority: authority
                .parse()
                .map_err(|e: axum::http::uri::InvalidUri| err(e.to_string()))?,
            prefix: url.path().trim_end_matches('/').to_string(),
            basic_auth,
        })
    }

    /// The upstream URI for a request's path and query.
    fn uri(&self, path_and_query: &str) -> Result<Uri, axum::http::Error> {
        let pq: PathAndQuery = if self.prefix.is_empty() {
            path_and_query.parse()?
        } else {
            format!("{}{path_and_query}", self.prefix).parse()?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// Decodes `%XX` escapes (URL user names and passwords).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mirror job: the request as forwarded to the primary, and the row to
/// complete. The body is the same `Bytes` the primary was sent.
struct MirrorJob {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    rec: IngressRecord,
}

/// The ingress tee's shared state.
pub struct Ingress {
    cfg: Arc<ValidConfig>,
    store: CaptureStore,
    metrics: Arc<Metrics>,
    client: HttpClient,
    queue: mpsc::Sender<MirrorJob>,
    primary: SenderName,
    primary_api: Upstream,
    shadow_api: Upstream,
}

impl Ingress {
    /// Builds the tee and starts its mirror workers.
    pub fn start(
        cfg: Arc<ValidConfig>,
        store: CaptureStore,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Ingress>, IngressError> {
        let primary = cfg.api_primary;
        let primary_api = Upstream::parse(primary, &cfg.sender(primary).api)?;
        let shadow_api = Upstream::parse(primary.other(), &cfg.sender(primary.other()).api)?;
        let client = http_client()?;
        let (tx, rx) = mpsc::channel::<MirrorJob>(cfg.queue_bound);
        // The mirror leg runs on its own thread and runtime, with its own
        // connection pool: its tasks never queue in front of a primary
        // request on the ingress's workers, and the kernel shares the CPU
        // between the two legs instead.
        let mirror_client = http_client()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(IngressError::Runtime)?;
        let (workers, timeout) = (cfg.mirror_workers, cfg.shadow_timeout);
        let (store2, metrics2) = (store.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("hookshift-mirror".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let rx = Arc::new(tokio::sync::Mutex::new(rx));
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..workers {
                        let rx = rx.clone();
                        let client = mirror_client.clone();
                        let store = store2.clone();
                        let metrics = metrics2.clone();
                        set.spawn(async move {
                            loop {
                                // Holding the lock only while waiting for the next job.
                                let job = { rx.lock().await.recv().await };
                                let Some(job) = job else { return };
                                mirror(&client, timeout, &store, &metrics, job).await;
                            }
                        });
                    }
                    // Ends once the ingress is dropped and the queue drained.
                    while set.join_next().await.is_some() {}
                })
            })
            .map_err(IngressError::Runtime)?;
        Ok(Arc::new(Ingress {
            cfg,
            store,
            metrics,
            client,
            queue: tx,
            primary,
            primary_api,
            shadow_api,
        }))
    }

    /// Mirror jobs waiting in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// The axum router: every path goes through [`handle`].
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(handle).with_state(self)
    }
}

async fn mirror(
    client: &HttpClient,
    timeout: Duration,
    store: &CaptureStore,
    metrics: &Metrics,
    job: MirrorJob,
) {
    let MirrorJob {
        method,
        uri,
        headers,
        body,
        mut rec,
    } = job;
    let started = Instant::now();
    match send(client, method, uri, headers, body, timeout).await {
        Ok((status, headers, body)) => {
            Metrics::inc(&metrics.mirrored);
            rec.shadow_status = Some(status.as_u16() as i64);
            rec.shadow_headers = Some(header_pairs(&headers, false));
            rec.shadow_body = Some(body);
        }
        Err(e) => {
            Metrics::inc(&metrics.shadow_errors);
            rec.shadow_error = Some(e);
        }
    }
    rec.shadow_latency_us = Some(started.elapsed().as_micros() as i64);
    // Waits only for room in the writer's queue, not for the commit, so a
    // slow disk slows the mirror workers (and then fills the mirror queue,
    // whose drops are counted) without losing rows here.
    if store.queue_ingress(rec).await.is_err() {
        tracing::error!("ingress exchange not recorded: the capture writer has stopped");
    }
}

/// One request to a sender's API, its whole answer read within `timeout`.
async fn send(
    client: &HttpClient,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let mut req = hyper::Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            let kind = if e.is_connect() {
                "connect error"
            } else {
                "error"
            };
            describe(kind, &e)
        })?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| describe("error reading the body", &e))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout: no complete answer within {timeout:?}")),
    }
}

/// An error's text and its causes, without the URL (it may carry
/// credentials; hyper's errors do not include it).
fn describe(kind: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = kind.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn header_pairs(h: &HeaderMap, redact: bool) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            let value = if redact && REDACTED.contains(&n.as_str()) {
                "[redacted]".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (n.as_str().to_string(), value)
        })
        .collect()
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}
/// For `POST /v1/events`: the event id the body carries, or a new one
/// spliced in. Returns (body to forward, event id, whether injected).
/// Bodies that are not JSON objects are forwarded as they are, for the
/// senders to reject.
pub fn ensure_event_id(
    body: &Bytes,
    idempotency_key: Option<&str>,
) -> (Bytes, Option<String>, bool) {
    let Some(obj) = TopLevel::of(body) else {
        return (body.clone(), None, false);
    };
    if let Some(id) = obj.id {
        return (body.clone(), id, false);
    }
    if let Some(key) = idempotency_key {
        // Both senders derive the id from the same key.
        return (body.clone(), Some(key.to_string()), false);
    }
    let Some(open) = body.iter().position(|b| *b == b'{') else {
        return (body.clone(), None, false);
    };
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let member = if obj.empty {
        format!("\"id\":\"{id}\"")
    } else {
        format!("\"id\":\"{id}\",")
    };
    let mut out = Vec::with_capacity(body.len() + member.len());
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(&body[open + 1..]);
    (Bytes::from(out), Some(id), true)
}

/// What [`ensure_event_id`] needs to know of a JSON object: whether it has
/// members, and its `"id"` member if any (`Some(None)` when that is not a
/// string). Read in one pass that skips every other value without building
/// it: the ingress sees every event, and a full parse into a
/// `serde_json::Value` was a few percent of the proxy's CPU.
struct TopLevel {
    empty: bool,
    id: Option<Option<String>>,
}

impl TopLevel {
    /// None when `body` is not one JSON object (or not JSON).
    fn of(body: &[u8]) -> Option<TopLevel> {
        use serde::de::Deserializer as _;
        let mut de = serde_json::Deserializer::from_slice(body);
        let top = (&mut de).deserialize_map(TopLevelVisitor).ok()?;
        // Trailing bytes other than whitespace make it not JSON.
        de.end().ok()?;
        Some(top)
    }
}

struct TopLevelVisitor;

impl<'de> serde::de::Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut top = TopLevel {
            empty: true,
            id: None,
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            top.empty = false;
            if key == "id" {
                // As a `Value` map would: the last "id" wins.
                let v = map.next_value::<serde_json::Value>()?;
                top.id = Some(v.as_str().map(String::from));
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(top)
    }
}

async fn handle(State(ing): State<Arc<Ingress>>, req: Request) -> Response {
    let t0 = Instant::now();
    let at = now_ms();
    Metrics::inc(&ing.metrics.ingress_requests);
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, ing.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "request body over the proxy's limit of {} bytes (ingress.max_body_bytes)",
                    ing.cfg.max_body_bytes
                ),
            )
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let (primary_uri, shadow_uri) = match (ing.primary_api.uri(path), ing.shadow_api.uri(path)) {
        (Ok(p), Ok(s)) => (p, s),
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "the request target cannot be forwarded",
            )
        }
    };
    let mut headers = parts.headers.clone();
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    let (body, event_id, injected) =
        if parts.method == Method::POST && parts.uri.path() == "/v1/events" {
            let key = parts
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok());
            ensure_event_id(&body, key)
        } else {
            (body, None, false)
        };

    let mut rec = IngressRecord {
        method: parts.method.as_str().to_string(),
        path: path.to_string(),
        request_headers: header_pairs(&parts.headers, true),
        request_body: body.clone(),
        event_id,
        injected_id: injected,
        primary_sender: ing.primary.as_str(),
        at,
        ..IngressRecord::default()
    };

    let mut primary_headers = headers.clone();
    if let Some(auth) = &ing.primary_api.basic_auth {
        if !primary_headers.contains_key(header::AUTHORIZATION) {
            primary_headers.insert(header::AUTHORIZATION, auth.clone());
        }
    }
    let t1 = Instant::now();
    let primary = send(
        &ing.client,
        parts.method.clone(),
        primary_uri,
        primary_headers,
        body.clone(),
        ing.cfg.primary_timeout,
    )
    .await;
    let primary_latency = t1.elapsed();
    rec.primary_latency_us = primary_latency.as_micros() as i64;
    let response = match primary {
        Ok((status, h, b)) => {
            rec.primary_status = Some(status.as_u16() as i64);
            rec.primary_headers = Some(header_pairs(&h, false));
            rec.primary_body = Some(b.clone());
            let mut resp = Response::new(Body::from(b));
            *resp.status_mut() = status;
            let mut h = h;
            for n in &RESPONSE_HOP_BY_HOP {
                h.remove(n);
            }
            *resp.headers_mut() = h;
            resp
        }
        Err(e) => {
            rec.primary_error = Some(e);
            let mut resp = problem(
                StatusCode::BAD_GATEWAY,
                "the API primary could not be reached",
            );
            resp.headers_mut().insert(
                HeaderName::from_static("x-hookshift-primary-error"),
                HeaderValue::from_static("unreachable"),
            );
            resp
        }
    };

    // The mirror leg: a non-blocking offer, never awaited.
    if !ing.cfg.mirror {
        rec.shadow_error = Some("mirror off (ingress.mirror = false)".into());
        if !ing.store.offer_ingress(rec) {
            Metrics::inc(&ing.metrics.capture_dropped);
        }
        ing.metrics
            .observe_added_latency(t0.elapsed().saturating_sub(primary_latency).as_micros() as u64);
        return response;
    }
    if let Some(auth) = &ing.shadow_api.basic_auth {
        if !headers.contains_key(header::AUTHORIZATION) {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
    }
    let job = MirrorJob {
        method: parts.method,
        uri: shadow_uri,
        headers,
        body,
        rec,
    };
    if let Err(e) = ing.queue.try_send(job) {
        let mut job = match e {
            mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
        };
        Metrics::inc(&ing.metrics.mirror_dropped);
        job.rec.shadow_error = Some("dropped: queue full".into());
        if !ing.store.offer_ingress(job.rec) {
            Metrics::inc(&ing.metrics.capture_dropped);
        }
    }
    let added = t0.elapsed().saturating_sub(primary_latency);
    ing.metrics.observe_added_latency(added.as_micros() as u64);
    response
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_keep_the_base_path_and_turn_credentials_into_basic_auth() {
        let u =
            Upstream::parse(SenderName::Legacy, "http://user:p%40ss@127.0.0.1:8080/api").unwrap();
        assert_eq!(
            u.uri("/v1/events?x=1").unwrap().to_string(),
            "http://127.0.0.1:8080/api/v1/events?x=1"
        );
        let token = base64::engine::general_purpose::STANDARD.encode("user:p@ss");
        assert_eq!(u.basic_auth.unwrap(), format!("Basic {token}").as_str());
        let u = Upstream::parse(SenderName::Engine, "https://[::1]").unwrap();
        assert_eq!(u.uri("/").unwrap().to_string(), "https://[::1]/");
        assert!(u.basic_auth.is_none());
        let u = Upstream::parse(SenderName::Engine, "http://[::1]:9000").unwrap();
        assert_eq!(u.uri("/a").unwrap().to_string(), "http://[::1]:9000/a");
    }

    #[test]
    fn an_id_is_spliced_in_and_the_rest_of_the_bytes_kept() {
        let body = Bytes::from_static(b" { \"type\": \"a.b\",\n \"payload\": {\"n\": 1.0} }");
        let (out, id, injected) = ensure_event_id(&body, None);
        let id = id.unwrap();
        assert!(injected);
        assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            format!(" {{\"id\":\"{id}\", \"type\": \"a.b\",\n \"payload\": {{\"n\": 1.0}} }}")
        );
        let (out, _, _) = ensure_event_id(&Bytes::from_static(b"{}"), None);
        assert!(serde_json::from_slice::<serde_json::Value>(&out).unwrap()["id"].is_string());
    }

    #[test]
    fn an_existing_id_or_key_is_kept_and_non_objects_pass() {
        let body = Bytes::from_static(b"{\"id\":\"evt_1\",\"type\":\"x\"}");
        assert_eq!(
            ensure_event_id(&body, None),
            (body.clone(), Some("evt_1".into()), false)
        );
        let body = Bytes::from_static(b"{\"type\":\"x\"}");
        assert_eq!(
            ensure_event_id(&body, Some("k1")),
            (body.clone(), Some("k1".into()), false)
        );
        let body = Bytes::from_static(b"[1]");
        assert_eq!(ensure_event_id(&body, None), (body.clone(), None, false));
    }

    /// What the one-pass reader must agree with: a full parse into a
    /// `serde_json::Value` (the code before it).
    fn reference(body: &[u8]) -> Option<(bool, Option<Option<String>>)> {
        let serde_json::Value::Object(obj) = serde_json::from_slice(body).ok()? else {
            return None;
        };
        let id = obj.get("id").map(|v| v.as_str().map(String::from));
        Some((obj.is_empty(), id))
    }

    #[test]
    fn the_one_pass_reader_agrees_with_a_full_parse() {
        let cases: &[&str] = &[
            "{}",
            " { } ",
            r#"{"id":"evt_1"}"#,
            r#"{"id":7,"type":"x"}"#,
            r#"{"id":null}"#,
            r#"{"id":"a","id":"b"}"#,
            r#"{"\u0069d":"escaped"}"#,
            r#"{"type":"x","payload":{"id":"nested"}}"#,
            r#"{"type":"x","payload":[{"id":1}],"n":1.5e3,"t":true}"#,
            r#"{"id":"evt_1"} trailing"#,
            r#"{"id":"evt_1"}{"id":"two"}"#,
            r#"{"type":"x""#,
            r#"{"type":}"#,
            "[]",
            "\"id\"",
            "",
            "null",
            "{\"id\":\"é\"}\n",
        ];
        for case in cases {
            let ours = TopLevel::of(case.as_bytes()).map(|t| (t.empty, t.id));
            assert_eq!(ours, reference(case.as_bytes()), "{case:?}");
        }
    }
}
