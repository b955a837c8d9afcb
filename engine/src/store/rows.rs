//! Row types read from the store, and the inputs written to it.

use crate::state::DeliveryState;

/// What an endpoint upsert sets (the secret travels separately so it is
/// never part of a value that could be logged).
#[derive(Debug, Clone, Default)]
pub struct EndpointSpec {
    /// Absolute http(s) URL.
    pub url: String,
    /// Free text.
    pub description: Option<String>,
    /// Event types delivered; empty means all.
    pub event_types: Vec<String>,
    /// A disabled endpoint gets no new deliveries.
    pub disabled: bool,
    /// Requests per second the receiver accepts, if limited.
    pub rate_limit_per_s: Option<i64>,
    /// Signing profile; None uses the server default.
    pub profile: Option<String>,
}

/// An endpoint as stored. Its secrets live in `endpoint_secrets`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    /// JSON list of event types.
    pub event_types: String,
    pub disabled: bool,
    pub rate_limit_per_s: Option<i64>,
    pub profile: Option<String>,
    pub deleted_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `closed` or `open` (see `crate::breaker`).
    pub breaker_state: String,
    pub consecutive_failures: i64,
    pub failing_since: Option<i64>,
    pub breaker_opened_at: Option<i64>,
    pub breaker_probe_at: Option<i64>,
    /// `operator`, `gone` (410) or `breaker`, while disabled.
    pub disabled_reason: Option<String>,
}

impl EndpointRow {
    /// The decoded event-type filter (stored rows are written by this crate,
    /// so a bad value decodes as "all" rather than failing a read).
    pub fn event_types(&self) -> Vec<String> {
        serde_json::from_str(&self.event_types).unwrap_or_default()
    }
}

/// Result of an upsert.
#[derive(Debug, Clone)]
pub struct UpsertedEndpoint {
    /// The endpoint after the write.
    pub endpoint: EndpointRow,
    /// True when the endpoint did not exist before.
    pub created: bool,
}

/// An event to ingest, fully prepared by the API layer.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    pub tenant: Option<String>,
    /// The payload's bytes exactly as received.
    pub payload_raw: Vec<u8>,
    /// The parsed payload, re-serialized compactly, for queries.
    pub payload_parsed: String,
    /// SHA-256 (hex) of the whole request body.
    pub request_hash: String,
    pub idempotency_key: Option<String>,
}

/// An event as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub tenant: Option<String>,
    pub payload_raw: Vec<u8>,
    pub request_hash: String,
    pub idempotency_key: Option<String>,
    pub created_at: i64,
}

/// A delivery id with its endpoint, as ingest answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRef {
    pub id: String,
    pub endpoint_id: String,
}

/// What ingest did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored, with these deliveries (ordered by endpoint id).
    Inserted(Vec<DeliveryRef>),
    /// An event with this id or idempotency key already exists.
    Exists,
}

/// A delivery as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub state: String,
    pub attempt_count: i64,
    pub next_attempt_at: Option<i64>,
    pub lease_expires_at: Option<i64>,
    pub last_outcome: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One attempt as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: String,
    pub delivery_id: String,
    pub attempt: i64,
    pub request_headers: String,
    pub body_sha256: String,
    pub response_status: Option<i64>,
    pub response_headers: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub response_truncated: bool,
    pub duration_ms: i64,
    pub outcome: String,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: i64,
}

/// One state transition as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransitionRow {
    pub seq: i64,
    pub delivery_id: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub attempt: i64,
    pub outcome: Option<String>,
    pub reason: String,
    pub at: i64,
}

/// Filters for listing deliveries.
#[derive(Debug, Clone)]
pub struct DeliveryFilter {
    pub state: Option<DeliveryState>,
    pub endpoint_id: Option<String>,
    /// Return deliveries with ids after this one.
    pub cursor: Option<String>,
    pub limit: i64,
}

/// What a replay request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayResult {
    /// Back to pending, due now.
    Replayed,
    /// No such delivery.
    NotFound,
    /// The delivery is not finished yet.
    NotTerminal(DeliveryState),
}

/// A delivery leased to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    /// The attempt number this lease is for (1 for the first).
    pub attempt: i64,
    /// The state the claim moved it out of.
    pub from: DeliveryState,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClaimedRaw {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub attempt_count: i64,
    pub claimed_from: String,
}

/// Who claims new deliveries at ingest ([`crate::store::Store::ingest_claiming`]).
pub struct ClaimAtIngest<'a> {
    /// The lease owner (the worker in this process).
    pub owner: &'a str,
    /// When the leases expire, unix ms.
    pub lease_until: i64,
    /// Asked once per new delivery that may be claimed, with its endpoint
    /// id: whether the worker takes it now (it reserves room for it).
    pub admit: &'a mut (dyn FnMut(&str) -> bool + Send),
}

/// What [`crate::store::Store::claim_with`] may lease in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct ClaimSpec<'a> {
    /// The worker taking the lease.
    pub owner: &'a str,
    pub now: i64,
    pub lease_until: i64,
    /// Most deliveries to lease in all.
    pub limit: i64,
    /// Endpoints left alone (saturated here, or rate-limited: those are
    /// claimed only through `quotas`).
    pub skip_endpoints: &'a [String],
    /// Endpoints claimed separately, at most this many each (what their
    /// rate limit and concurrency cap allow now).
    pub quotas: &'a [(String, i64)],
    /// Rate-limited endpoints are claimed only through `quotas`, never by
    /// the unlimited part (checked in the claim's transaction).
    pub rate_limits_by_quota: bool,
    /// With the breaker on: how long a probe slot lasts. Each open endpoint
    /// whose probe is due gets one delivery leased as its probe, and its
    /// next probe moved this far out.
    pub probe_interval_ms: Option<i64>,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Whether the delivery moved (false: the lease was lost meanwhile).
    pub moved: bool,
    /// What happened to the endpoint's breaker.
    pub breaker: crate::breaker::Change,
}

/// Endpoints by breaker state, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerCounts {
    /// Enabled, breaker closed.
    pub closed: i64,
    /// Enabled, breaker open.
    pub open: i64,
    /// Disabled by the breaker.
    pub disabled_by_breaker: i64,
}

/// A finished attempt, ready to persist (built by the worker from a
/// completed attempt; see `worker::Completed`).
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: String,
    /// The delivery's endpoint (its breaker is updated with the outcome).
    pub endpoint_id: String,
    /// The worker that held the lease.
    pub owner: String,
    pub attempt: i64,
    /// succeeded, retry_scheduled or failed.
    pub to: DeliveryState,
    /// When the next attempt is due (retry_scheduled only).
    pub next_attempt_at: Option<i64>,
    pub outcome: crate::state::OutcomeClass,
    /// JSON `[[name, value], ...]` as sent.
    pub request_headers: String,
    pub body_sha256: String,
    pub response_status: Option<i64>,
    pub response_headers: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub response_truncated: bool,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: i64,
    /// Disable this endpoint in the same transaction (410 Gone).
    pub disable_endpoint: Option<String>,
}
