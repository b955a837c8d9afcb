//! The ingress tee: producers' API calls go to the API primary, whose answer
//! is returned unchanged; the same call is mirrored to the other sender.
//!
//! Layers of one request (`handle`): read the body (capped, 413 above the
//! cap) → give `POST /v1/events` without an id one (`evt_` + UUIDv7, spliced
//! into the JSON so the rest of the bytes stay as sent; both senders get
//! the same bytes) → forward to the primary and wait for its answer → offer
//! the mirror job to a bounded queue with `try_send` (full: dropped, counted
//! and recorded as dropped) → answer the producer. Mirror workers take jobs
//! off the queue, send them to the shadow with its own timeout and record
//! the exchange (request, both answers, both latencies).
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
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Request headers not forwarded (they concern the hop to the proxy).
const HOP_BY_HOP: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
];

/// Header values replaced in the capture store (credentials).
const REDACTED: &[&str] = &["authorization", "cookie", "x-api-key"];

/// One mirror job: the request as forwarded, and the row to complete.
struct MirrorJob {
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    rec: IngressRecord,
}

/// The ingress tee's shared state.
pub struct Ingress {
    cfg: Arc<ValidConfig>,
    store: CaptureStore,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    queue: mpsc::Sender<MirrorJob>,
    primary: SenderName,
}

impl Ingress {
    /// Builds the tee and starts its mirror workers.
    pub fn start(
        cfg: Arc<ValidConfig>,
        store: CaptureStore,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Ingress>, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let (tx, rx) = mpsc::channel::<MirrorJob>(cfg.queue_bound);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let primary = cfg.api_primary;
        let shadow_base = cfg.sender(primary.other()).api.clone();
        for _ in 0..cfg.mirror_workers {
            let rx = rx.clone();
            let client = client.clone();
            let store = store.clone();
            let metrics = metrics.clone();
            let base = shadow_base.clone();
            let timeout = cfg.shadow_timeout;
            tokio::spawn(async move {
                loop {
                    // Holding the lock only while waiting for the next job.
                    let job = { rx.lock().await.recv().await };
                    let Some(job) = job else { return };
                    mirror(&client, &base, timeout, &store, &metrics, job).await;
                }
            });
        }
        Ok(Arc::new(Ingress {
            cfg,
            store,
            metrics,
            client,
            queue: tx,
            primary,
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
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
    store: &CaptureStore,
    metrics: &Metrics,
    job: MirrorJob,
) {
    let MirrorJob {
        method,
        path,
        headers,
        body,
        mut rec,
    } = job;
    let started = Instant::now();
    match send(
        client,
        method,
        &format!("{base}{path}"),
        &headers,
        body,
        timeout,
    )
    .await
    {
        Ok((status, headers, body)) => {
            Metrics::inc(&metrics.mirrored);
            rec.shadow_status = Some(status.as_u16() as i64);
            rec.shadow_headers = Some(header_pairs(&headers, false));
            rec.shadow_body = Some(body.to_vec());
        }
        Err(e) => {
            Metrics::inc(&metrics.shadow_errors);
            rec.shadow_error = Some(e);
        }
    }
    rec.shadow_latency_us = Some(started.elapsed().as_micros() as i64);
    if let Err(e) = store.insert_ingress(rec).await {
        tracing::error!(error = %e, "ingress exchange not recorded");
    }
}

/// One request to a sender's API, its whole answer read.
async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let mut req = client.request(method, url).timeout(timeout).body(body);
    for (n, v) in headers {
        req = req.header(n.as_str(), v.as_str());
    }
    let resp = req.send().await.map_err(|e| describe(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| describe(&e))?;
    Ok((status, headers, body))
}

/// An error's text without the URL (it may carry credentials).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "error"
    };
    let mut s = kind.to_string();
    let mut src = std::error::Error::source(e);
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
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return (body.clone(), None, false);
    };
    if let Some(id) = obj.get("id") {
        return (body.clone(), id.as_str().map(String::from), false);
    }
    if let Some(key) = idempotency_key {
        // Both senders derive the id from the same key.
        return (body.clone(), Some(key.to_string()), false);
    }
    let Some(open) = body.iter().position(|b| *b == b'{') else {
        return (body.clone(), None, false);
    };
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let member = if obj.is_empty() {
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
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let method = match reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => return problem(StatusCode::METHOD_NOT_ALLOWED, "unknown method"),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let (body, event_id, injected) =
        if method == reqwest::Method::POST && parts.uri.path() == "/v1/events" {
            let key = parts
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok());
            ensure_event_id(&body, key)
        } else {
            (body, None, false)
        };

    let mut rec = IngressRecord {
        method: method.as_str().to_string(),
        path: path.clone(),
        request_headers: header_pairs(&parts.headers, true),
        request_body: body.to_vec(),
        event_id,
        injected_id: injected,
        primary_sender: ing.primary.as_str(),
        at,
        ..IngressRecord::default()
    };

    let base = &ing.cfg.sender(ing.primary).api;
    let t1 = Instant::now();
    let primary = send(
        &ing.client,
        method.clone(),
        &format!("{base}{path}"),
        &headers,
        body.clone(),
        ing.cfg.primary_timeout,
    )
    .await;
    let primary_latency = t1.elapsed();
    rec.primary_latency_us = primary_latency.as_micros() as i64;
    let response = match &primary {
        Ok((status, h, b)) => {
            rec.primary_status = Some(status.as_u16() as i64);
            rec.primary_headers = Some(header_pairs(h, false));
            rec.primary_body = Some(b.to_vec());
            let mut resp = Response::new(Body::from(b.clone()));
            *resp.status_mut() = *status;
            for (n, v) in h {
                if matches!(
                    n.as_str(),
                    "connection" | "keep-alive" | "transfer-encoding" | "content-length"
                ) {
                    continue;
                }
                resp.headers_mut().append(n.clone(), v.clone());
            }
            resp
        }
        Err(e) => {
            rec.primary_error = Some(e.clone());
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
    let job = MirrorJob {
        method,
        path,
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
}
