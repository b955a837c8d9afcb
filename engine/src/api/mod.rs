//! The platform API (axum): endpoints, events, deliveries, health, metrics.
//!
//! Handlers validate input into store types, call the store or the
//! [`Ingestor`](crate::ingest::Ingestor), and shape rows into
//! [`views`]. Every error leaves through [`Problem`].

mod problem;
pub mod views;

pub use problem::Problem;

use crate::clock::SharedClock;
use crate::config::{ValidConfig, PROFILES};
use crate::ids;
use crate::ingest::{IngestError, Ingestor};
use crate::metrics::Metrics;
use crate::state::DeliveryState;
use crate::store::{DeliveryFilter, EndpointSpec, IngestOutcome, NewEvent, ReplayResult, Store};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every handler can reach.
pub struct AppState {
    pub store: Store,
    pub ingestor: Ingestor,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub config: ValidConfig,
}

type Shared = State<Arc<AppState>>;
type ApiResult = Result<Response, Problem>;

/// The whole API as a router.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/endpoints", get(list_endpoints))
        .route(
            "/endpoints/{id}",
            put(upsert_endpoint)
                .get(get_endpoint)
                .delete(delete_endpoint),
        )
        .route("/endpoints/{id}/secret", get(get_secret))
        .route("/endpoints/{id}/secret/rotate", post(rotate_secret))
        .route("/events", post(post_event))
        .route("/events/{id}", get(get_event))
        .route("/events/{id}/deliveries", get(event_deliveries))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}", get(get_delivery))
        .route("/deliveries/{id}/replay", post(replay_delivery))
        // Auth applies to the platform API only; health and metrics are open.
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    // A worker-only process answers health and metrics but not the API.
    let base = if state.config.run_api {
        Router::new().nest("/v1", v1)
    } else {
        Router::new()
    };
    base.route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            Problem {
                kind: "urn:hookshift:problem:not-found",
                title: "Not found",
                status: 404,
                detail: "no such route".into(),
                field: None,
            }
        })
        // Outermost: every response, errors included, is counted and timed.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

async fn record_metrics(State(s): Shared, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .http_response(resp.status().as_u16(), started.elapsed());
    resp
}

async fn require_token(State(s): Shared, req: Request, next: Next) -> Response {
    let tokens = &s.config.raw.api_tokens;
    if tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p)
            if tokens
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), p.as_bytes())) =>
        {
            next.run(req).await
        }
        _ => Problem::unauthorized().into_response(),
    }
}

/// Compares without an early exit, so timing does not leak a prefix match.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(s): Shared) -> ApiResult {
    match tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"})).into_response()),
        Ok(Err(e)) => Err(Problem::unavailable(&e)),
        Err(_) => Err(Problem::unavailable(&"database ping timed out after 2s")),
    }
}

async fn metrics(State(s): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

// ----- request bodies --------------------------------------------------------

/// Reads the body up to `limit` bytes, answering 413 beyond it and 415 for a
/// content type that is not JSON.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Problem> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Problem::unsupported_media(format!(
                "Content-Type `{ct}` is not application/json"
            )));
        }
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = src {
            if err.is::<http_body_util::LengthLimitError>() {
                return Problem::too_large(format!("request body exceeds {limit} bytes"));
            }
            src = err.source();
        }
        Problem::malformed(format!("could not read the request body: {e}"))
    })
}

/// Parses JSON, answering 400 for syntax errors and 422 naming the field for
/// missing fields and wrong types.
fn parse_json<T: DeserializeOwned, Shape: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    if std::str::from_utf8(body).is_err() {
        return Err(Problem::malformed("request body is not valid UTF-8"));
    }
    match serde_json::from_slice::<T>(body) {
        Ok(v) => Ok(v),
        Err(e) if e.classify() != serde_json::error::Category::Data => {
            Err(Problem::malformed(e.to_string()))
        }
        Err(e) => {
            // Parse again through a shape without borrowed raw values to
            // learn the path of the offending field.
            let de = &mut serde_json::Deserializer::from_slice(body);
            let (path, msg) = match serde_path_to_error::deserialize::<_, Shape>(de) {
                Err(pe) => (pe.path().to_string(), pe.into_inner().to_string()),
                Ok(_) => (".".to_string(), e.to_string()),
            };
            let field = if path == "." {
                missing_field(&msg).unwrap_or_else(|| unknown_field(&msg).unwrap_or(path))
            } else {
                path
            };
            Err(Problem::invalid(field, msg))
        }
    }
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn validate_id(field: &str, id: &str) -> Result<(), Problem> {
    if ids::is_valid_client_id(id) {
        Ok(())
    } else {
        Err(Problem::invalid(
            field,
            format!("`{id}` is not a valid id: use 1 to 128 letters, digits, `_`, `-`, `.` or `:`"),
        ))
    }
}

fn validate_text(field: &str, value: &str, max: usize) -> Result<(), Problem> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Problem::invalid(
            field,
            format!("must be 1 to {max} characters with no control characters"),
        ));
    }
    Ok(())
}

// ----- endpoints -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointIn {
    url: String,
    secret: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    disabled: Option<bool>,
    rate_limit_per_s: Option<i64>,
    profile: Option<String>,
}

/// An absolute http(s) URL with a host.
fn validate_url(url: &str) -> Result<(), Problem> {
    let bad = |why: &str| Problem::invalid("url", format!("`{url}` {why}"));
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must be at most 2048 characters with no spaces"));
    }
    let uri: axum::http::Uri = url.parse().map_err(|_| bad("is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("must be an absolute http:// or https:// URL")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err(bad("has no host")),
    }
}

fn validate_secret(secret: &str, profile: &str) -> Result<(), Problem> {
    if secret.len() < 8 || secret.len() > 256 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::invalid(
            "secret",
            "must be 8 to 256 printable ASCII characters with no spaces",
        ));
    }
    if profile == "standard-webhooks" {
        use base64::Engine as _;
        let key = secret.strip_prefix("whsec_").unwrap_or(secret);
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(k) if k.len() >= 16 => {}
            _ => {
                return Err(Problem::invalid(
                    "secret",
                    "the standard-webhooks profile needs `whsec_` followed by base64 of at least 16 bytes",
                ))
            }
        }
    }
    Ok(())
}

async fn upsert_endpoint(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    validate_id("id", &id)?;
    let body = read_body(&headers, body, 64 * 1024).await?;
    let input: EndpointIn = parse_json::<EndpointIn, EndpointIn>(&body)?;
    validate_url(&input.url)?;
    let event_types = input.event_types.unwrap_or_default();
    for (i, t) in event_types.iter().enumerate() {
        validate_text(&format!("event_types[{i}]"), t, 256)?;
    }
    if let Some(d) = &input.description {
        if d.len() > 4096 {
            return Err(Problem::invalid(
                "description",
                "must be at most 4096 bytes",
            ));
        }
    }
    if let Some(r) = input.rate_limit_per_s {
        if r <= 0 {
            return Err(Problem::invalid(
                "rate_limit_per_s",
                "must be a positive whole number",
            ));
        }
    }
    if let Some(p) = &input.profile {
        if !PROFILES.contains(&p.as_str()) {
            return Err(Problem::invalid(
                "profile",
                format!(
                    "unknown profile `{p}` (expected one of {})",
                    PROFILES.join(", ")
                ),
            ));
        }
    }
    let profile = input
        .profile
        .as_deref()
        .unwrap_or(&s.config.raw.default_profile);
    if let Some(secret) = &input.secret {
        validate_secret(secret, profile)?;
    }
    let spec = EndpointSpec {
        url: input.url,
        description: input.description,
        event_types,
        disabled: input.disabled.unwrap_or(false),
        rate_limit_per_s: input.rate_limit_per_s,
        profile: input.profile,
    };
    let existing = s.store.get_endpoint(&id).await?;
    // A new endpoint always gets a secret; an update keeps its secret unless
    // one is given.
    let secret = match (&input.secret, &existing) {
        (Some(given), _) => Some(given.clone()),
        (None, None) => Some(ids::generate_secret()),
        (None, Some(_)) => None,
    };
    let up = s
        .store
        .upsert_endpoint(&id, &spec, secret.as_deref(), s.clock.now_ms())
        .await?;
    let status = if up.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let shown = if up.created { secret } else { None };
    Ok((status, Json(views::EndpointView::new(&up.endpoint, shown))).into_response())
}

async fn list_endpoints(State(s): Shared) -> ApiResult {
    let rows = s.store.list_endpoints().await?;
    let data: Vec<_> = rows
        .iter()
        .map(|e| views::EndpointView::new(e, None))
        .collect();
    Ok(Json(json!({ "data": data })).into_response())
}

async fn get_endpoint(State(s): Shared, Path(id): Path<String>) -> ApiResult {
    match s.store.get_endpoint(&id).await? {
        Some(e) => Ok(Json(views::EndpointView::new(&e, None)).into_response()),
        None => Err(Problem::not_found("endpoint", &id)),
    }
}

async fn delete_endpoint(State(s): Shared, Path(id): Path<String>) -> ApiResult {
    if s.store.delete_endpoint(&id, s.clock.now_ms()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::not_found("endpoint", &id))
    }
}

async fn get_secret(State(s): Shared, Path(id): Path<String>) -> ApiResult {
    if s.store.get_endpoint(&id).await?.is_none() {
        return Err(Problem::not_found("endpoint", &id));
    }
    let secrets = s.store.signing_secrets(&id, s.clock.now_ms()).await?;
    let current = secrets.first().cloned();
    Ok(Json(json!({ "secret": current })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateIn {
    secret: Option<String>,
}

async fn rotate_secret(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let body = read_body(&headers, body, 16 * 1024).await?;
    let input: RotateIn = if body.iter().all(u8::is_ascii_whitespace) {
        RotateIn::default()
    } else {
        parse_json::<RotateIn, RotateIn>(&body)?
    };
    let Some(endpoint) = s.store.get_endpoint(&id).await? else {
        return Err(Problem::not_found("endpoint", &id));
    };
    let profile = endpoint
        .profile
        .as_deref()
        .unwrap_or(&s.config.raw.default_profile);
    if let Some(secret) = &input.secret {
        validate_secret(secret, profile)?;
    }
    let new_secret = input.secret.unwrap_or_else(ids::generate_secret);
    let now = s.clock.now_ms();
    let grace_ms = s.config.secret_rotation_grace.as_millis() as i64;
    if !s
        .store
        .rotate_secret(&id, &new_secret, now, grace_ms)
        .await?
    {
        return Err(Problem::not_found("endpoint", &id));
    }
    Ok(Json(json!({
        "secret": new_secret,
        "previous_expires_at": views::rfc3339(now + grace_ms),
    }))
    .into_response())
}

// ----- events ----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn<'a> {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    tenant: Option<String>,
}

/// The same shape with an owned payload, for locating errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EventShape {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    payload: serde::de::IgnoredAny,
    tenant: Option<String>,
}

async fn post_event(State(s): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let limit = s.config.raw.payload_limit_bytes;
    // The envelope around the payload is small; allow some room for it.
    let body = read_body(&headers, body, limit + 16 * 1024).await?;
    if std::str::from_utf8(&body).is_err() {
        return Err(Problem::malformed("request body is not valid UTF-8"));
    }
    let input: EventIn<'_> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return Err(parse_json::<EventShape, EventShape>(&body)
                .err()
                .unwrap_or_else(|| Problem::malformed("request body is not an event object")))
        }
    };
    let raw = input.payload.get();
    if raw.len() > limit {
        return Err(Problem::too_large(format!(
            "payload is {} bytes; the limit is {limit}",
            raw.len()
        )));
    }
    if let Some(id) = &input.id {
        validate_id("id", id)?;
    }
    validate_text("type", &input.event_type, 256)?;
    if let Some(t) = &input.tenant {
        validate_text("tenant", t, 256)?;
    }
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255);
            Some(
                k.ok_or_else(|| {
                    Problem::invalid(
                        "Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                    )
                })?
                .to_string(),
            )
        }
    };
    let request_hash = hex::encode(Sha256::digest(&body));

    // A reused id or key is found by the insert itself (ON CONFLICT): only
    // then is the stored event read, to answer with the original response
    // (same request) or 409 (different request). A request with only an
    // Idempotency-Key is checked first, since its id is generated here.
    if input.id.is_none() {
        if let Some(resp) =
            existing_event(&s, None, idempotency_key.as_deref(), &request_hash).await?
        {
            return Ok(resp);
        }
    }
    let parsed: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| Problem::invalid("payload", e.to_string()))?;
    let event = NewEvent {
        id: input.id.clone().unwrap_or_else(ids::event_id),
        event_type: input.event_type,
        tenant: input.tenant,
        payload_raw: raw.as_bytes().to_vec(),
        payload_parsed: parsed.to_string(),
        request_hash: request_hash.clone(),
        idempotency_key: idempotency_key.clone(),
    };
    let event_id = event.id.clone();
    match s.ingestor.ingest(event).await {
        Ok(IngestOutcome::Inserted(deliveries)) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": event_id, "deliveries": deliveries })),
        )
            .into_response()),
        Ok(IngestOutcome::Exists) => existing_event(
            &s,
            Some(&event_id),
            idempotency_key.as_deref(),
            &request_hash,
        )
        .await?
        .ok_or_else(|| Problem::unavailable(&"event vanished after a conflicting insert")),
        Err(IngestError::Store(e)) => Err(Problem::unavailable(&e)),
        Err(IngestError::Closed) => Err(Problem::unavailable(&"ingest is shutting down")),
    }
}

/// If an event with this id (or idempotency key) exists: the original 202
/// answer when the request is the same, 409 when it is not.
async fn existing_event(
    s: &AppState,
    id: Option<&str>,
    key: Option<&str>,
    request_hash: &str,
) -> Result<Option<Response>, Problem> {
    // By id first; a conflict on the key alone means another event owns it.
    let by_id = match id {
        Some(id) => s.store.get_event(id).await?,
        None => None,
    };
    let (event, via_key) = match (by_id, key) {
        (Some(e), _) => (e, false),
        (None, Some(key)) => match s.store.get_event_by_idempotency_key(key).await? {
            Some(e) => (e, true),
            None => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    if event.request_hash != request_hash {
        let what = if via_key {
            "this Idempotency-Key was already used with a different body".to_string()
        } else {
            format!("event `{}` already exists with a different body", event.id)
        };
        return Err(Problem::conflict(what));
    }
    let deliveries: Vec<_> = s
        .store
        .event_deliveries(&event.id)
        .await?
        .into_iter()
        .map(|d| json!({"id": d.id, "endpoint_id": d.endpoint_id}))
        .collect();
    Ok(Some(
        (
            StatusCode::ACCEPTED,
            Json(json!({ "id": event.id, "deliveries": deliveries })),
        )
            .into_response(),
    ))
}

async fn get_event(State(s): Shared, Path(id): Path<String>) -> ApiResult {
    match s.store.get_event(&id).await? {
        Some(e) => Ok(Json(views::EventView::new(&e)).into_response()),
        None => Err(Problem::not_found("event", &id)),
    }
}

async fn event_deliveries(State(s): Shared, Path(id): Path<String>) -> ApiResult {
    if s.store.get_event(&id).await?.is_none() {
        return Err(Problem::not_found("event", &id));
    }
    let rows = s.store.event_deliveries(&id).await?;
    Ok(Json(json!({ "data": with_history(&s, rows).await? })).into_response())
}

// ----- deliveries ------------------------------------------------------------

async fn with_history(
    s: &AppState,
    rows: Vec<crate::store::DeliveryRow>,
) -> Result<Vec<views::DeliveryView>, Problem> {
    let ids: Vec<String> = rows.iter().map(|d| d.id.clone()).collect();
    let attempts = s.store.attempts_for(&ids).await?;
    let transitions = s.store.transitions_for(&ids).await?;
    Ok(views::deliveries(rows, attempts, transitions))
}

async fn get_delivery(State(s): Shared, Path(id): Path<String>) -> ApiResult {
    let Some(row) = s.store.get_delivery(&id).await? else {
        return Err(Problem::not_found("delivery", &id));
    };
    let mut views = with_history(&s, vec![row]).await?;
    Ok(Json(views.remove(0)).into_response())
}

async fn list_deliveries(State(s): Shared, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    for key in q.keys() {
        if !matches!(key.as_str(), "state" | "endpoint_id" | "limit" | "cursor") {
            return Err(Problem::invalid(
                key.clone(),
                "unknown query parameter (expected state, endpoint_id, limit, cursor)",
            ));
        }
    }
    let state = match q.get("state") {
        None => None,
        Some(v) => Some(
            v.parse::<DeliveryState>()
                .map_err(|e| Problem::invalid("state", e.to_string()))?,
        ),
    };
    let limit = match q.get("limit") {
        None => 50,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| Problem::invalid("limit", "must be a whole number from 1 to 500"))?,
    };
    let filter = DeliveryFilter {
        state,
        endpoint_id: q.get("endpoint_id").cloned(),
        cursor: q.get("cursor").cloned(),
        limit,
    };
    let rows = s.store.list_deliveries(&filter).await?;
    let next_cursor = if rows.len() as i64 == limit {
        rows.last().map(|d| d.id.clone())
    } else {
        None
    };
    let data = with_history(&s, rows).await?;
    Ok(Json(json!({ "data": data, "next_cursor": next_cursor })).into_response())
}

async fn replay_delivery(State(s): Shared, Path(id): Path<String>) -> ApiResult {
    match s.store.replay(&id, s.clock.now_ms()).await? {
        ReplayResult::Replayed => {
            let row = s.store.get_delivery(&id).await?;
            let mut views = with_history(&s, row.into_iter().collect()).await?;
            match views.pop() {
                Some(v) => Ok((StatusCode::ACCEPTED, Json(v)).into_response()),
                None => Err(Problem::not_found("delivery", &id)),
            }
        }
        ReplayResult::NotFound => Err(Problem::not_found("delivery", &id)),
        ReplayResult::NotTerminal(state) => Err(Problem::conflict(format!(
            "delivery `{id}` is {state}; only succeeded, failed or cancelled deliveries can be replayed"
        ))),
    }
}
