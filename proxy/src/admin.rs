//! The admin listener (`GET/POST /admin/ramp`, `/healthz`, `/metrics`) and
//! [`Client`], the small client `hookshift ramp` and the gate use to talk
//! to it.
//!
//! Bad input gets `application/problem+json` with status 422 and a `field`
//! member naming what is wrong.

use crate::capture::CaptureStore;
use crate::metrics::Metrics;
use crate::ramp::{percent_to_bp, Ramp, RampView};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub ramp: Arc<Ramp>,
    pub metrics: Arc<Metrics>,
    pub store: CaptureStore,
    /// Mirror queue depth, for `/metrics`.
    pub queue_depth: Arc<dyn Fn() -> usize + Send + Sync>,
}

/// The admin router. Serve it with connect info (`into_make_service_with_connect_info::<SocketAddr>`)
/// so ramp changes record the caller's address.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/admin/ramp", get(get_ramp).post(post_ramp))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A problem+json answer; `field` names the input at fault, if any.
fn problem(status: StatusCode, detail: &str, field: Option<&str>) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(f) = field {
        body["field"] = f.into();
    }
    (
        status,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn get_ramp(State(s): State<AdminState>) -> Response {
    match s.ramp.view().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading the ramp");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the capture store could not be read",
                None,
            )
        }
    }
}

async fn post_ramp(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "expected a JSON object {percent, reason, actor?}",
                None,
            )
        }
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("body is not JSON: {e}"),
                None,
            )
        }
    };
    let bp = match v.get("percent").map(|p| p.as_f64().and_then(percent_to_bp)) {
        None => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "`percent` is required",
                Some("percent"),
            )
        }
        Some(None) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "`percent` must be a number from 0 to 100",
                Some("percent"),
            )
        }
        Some(Some(bp)) => bp,
    };
    let reason = match v.get("reason").and_then(Value::as_str).map(str::trim) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "`reason` is required: a non-empty string saying why the stage changes",
                Some("reason"),
            )
        }
    };
    let actor = match v.get("actor") {
        None | Some(Value::Null) => "api".to_string(),
        Some(Value::String(a)) if !a.trim().is_empty() => a.trim().to_string(),
        Some(_) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "`actor` must be a non-empty string",
                Some("actor"),
            )
        }
    };
    let actor = format!("{actor} ({peer})");
    if let Err(e) = s.ramp.set(bp, &reason, &actor).await {
        tracing::error!(error = %e, "recording a ramp change");
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the change could not be recorded; the stage is unchanged",
            None,
        );
    }
    get_ramp(State(s)).await
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut text = s.metrics.render();
    text.push_str(&format!(
        "# HELP hookshift_proxy_ramp_bp The ramp stage in basis points.\n# TYPE hookshift_proxy_ramp_bp gauge\nhookshift_proxy_ramp_bp {}\n",
        s.ramp.bp()
    ));
    text.push_str(&format!(
        "# HELP hookshift_proxy_mirror_queue_depth Mirror jobs waiting.\n# TYPE hookshift_proxy_mirror_queue_depth gauge\nhookshift_proxy_mirror_queue_depth {}\n",
        (s.queue_depth)()
    ));
    // The capture writer: what it committed, what it could not, and its
    // backlog (ingress rows dropped because it was full are
    // hookshift_proxy_capture_dropped_total, counted by the ingress).
    let stats = s.store.stats();
    for (name, kind, help, v) in [
        (
            "hookshift_proxy_capture_written_total",
            "counter",
            "Capture rows committed.",
            stats.written.load(Ordering::Relaxed),
        ),
        (
            "hookshift_proxy_capture_failed_total",
            "counter",
            "Capture rows the writer could not commit.",
            stats.failed.load(Ordering::Relaxed),
        ),
        (
            "hookshift_proxy_capture_batches_total",
            "counter",
            "Capture transactions committed.",
            stats.batches.load(Ordering::Relaxed),
        ),
        (
            "hookshift_proxy_capture_queue_depth",
            "gauge",
            "Capture rows waiting for the writer.",
            s.store.queue_depth() as u64,
        ),
    ] {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin listener could not be reached.
    #[error("admin listener {base}: {detail}")]
    Unreachable { base: String, detail: String },
    /// It answered with an error (the detail is its problem text).
    #[error("admin listener answered {status}: {detail}")]
    Rejected { status: u16, detail: String },
    /// It answered something that is not a ramp view.
    #[error("admin listener answered an unexpected body: {0}")]
    Decode(String),
}

/// A client for the admin listener.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` like `http://127.0.0.1:9093`.
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The current stage and history.
    pub async fn status(&self) -> Result<RampView, AdminError> {
        let r = self
            .http
            .get(format!("{}/admin/ramp", self.base))
            .send()
            .await;
        self.decode(r).await
    }

    /// Moves the stage to `percent`.
    pub async fn set(
        &self,
        percent: f64,
        reason: &str,
        actor: &str,
    ) -> Result<RampView, AdminError> {
        let r = self
            .http
            .post(format!("{}/admin/ramp", self.base))
            .json(&json!({"percent": percent, "reason": reason, "actor": actor}))
            .send()
            .await;
        self.decode(r).await
    }

    /// Moves the stage to 0%: every endpoint back to the legacy sender.
    pub async fn rollback(&self, reason: &str, actor: &str) -> Result<RampView, AdminError> {
        self.set(0.0, reason, actor).await
    }

    async fn decode(
        &self,
        r: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<RampView, AdminError> {
        let r = r.map_err(|e| AdminError::Unreachable {
            base: self.base.clone(),
            detail: e.without_url().to_string(),
        })?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| AdminError::Unreachable {
            base: self.base.clone(),
            detail: e.without_url().to_string(),
        })?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(Value::as_str).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(AdminError::Rejected {
                status: status.as_u16(),
                detail,
            });
        }
        serde_json::from_slice(&body).map_err(|e| AdminError::Decode(e.to_string()))
    }
}
