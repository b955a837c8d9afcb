//! The JSON shapes the API answers with, built from store rows.

use crate::store::{AttemptRow, DeliveryRow, EndpointRow, EventRow, TransitionRow};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

#[derive(Serialize)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub disabled: bool,
    pub rate_limit_per_s: Option<i64>,
    pub profile: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// While disabled: `operator`, `gone` (a 410 answer) or `breaker`.
    pub disabled_reason: Option<String>,
    /// The endpoint's circuit breaker.
    pub breaker: BreakerView,
    /// Present only in the answer that created the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointView {
    pub fn new(e: &EndpointRow, secret: Option<String>) -> Self {
        EndpointView {
            id: e.id.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types(),
            disabled: e.disabled,
            rate_limit_per_s: e.rate_limit_per_s,
            profile: e.profile.clone(),
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            disabled_reason: e.disabled_reason.clone(),
            breaker: BreakerView {
                state: e.breaker_state.clone(),
                consecutive_failures: e.consecutive_failures,
                failing_since: e.failing_since.map(rfc3339),
                opened_at: e.breaker_opened_at.map(rfc3339),
                next_probe_at: (e.breaker_state == "open")
                    .then_some(e.breaker_probe_at)
                    .flatten()
                    .map(rfc3339),
            },
            secret,
        }
    }
}

/// An endpoint's circuit breaker (see `crate::breaker`).
#[derive(Serialize)]
pub struct BreakerView {
    /// `closed` or `open`.
    pub state: String,
    pub consecutive_failures: i64,
    /// When the current run of failures began.
    pub failing_since: Option<String>,
    /// When the breaker last opened.
    pub opened_at: Option<String>,
    /// While open: when the next probe attempt may go out.
    pub next_probe_at: Option<String>,
}

#[derive(Serialize)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub tenant: Option<String>,
    /// The payload's bytes exactly as received.
    pub payload: Box<RawValue>,
    pub created_at: String,
}

impl EventView {
    pub fn new(e: &EventRow) -> Self {
        // Stored payloads were validated as JSON text on the way in.
        let text = String::from_utf8_lossy(&e.payload_raw).into_owned();
        let payload = RawValue::from_string(text)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        EventView {
            id: e.id.clone(),
            event_type: e.event_type.clone(),
            tenant: e.tenant.clone(),
            payload,
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct AttemptView {
    pub id: String,
    pub attempt: i64,
    pub request_headers: serde_json::Value,
    pub body_sha256: String,
    pub response_status: Option<i64>,
    pub response_headers: Option<serde_json::Value>,
    /// The response body (capped), lossily decoded as UTF-8.
    pub response_body: Option<String>,
    pub response_truncated: bool,
    pub duration_ms: i64,
    pub outcome: String,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Serialize)]
pub struct TransitionView {
    pub from: Option<String>,
    pub to: String,
    pub attempt: i64,
    pub outcome: Option<String>,
    pub reason: String,
    pub at: String,
}

#[derive(Serialize)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub state: String,
    pub attempt_count: i64,
    pub next_attempt_at: Option<String>,
    pub last_outcome: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub attempts: Vec<AttemptView>,
    pub transitions: Vec<TransitionView>,
}

/// Builds delivery views, attaching each delivery's attempts and transitions.
pub fn deliveries(
    rows: Vec<DeliveryRow>,
    attempts: Vec<AttemptRow>,
    transitions: Vec<TransitionRow>,
) -> Vec<DeliveryView> {
    let mut by_delivery: HashMap<String, (Vec<AttemptView>, Vec<TransitionView>)> = HashMap::new();
    for a in attempts {
        let json = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
        by_delivery
            .entry(a.delivery_id.clone())
            .or_default()
            .0
            .push(AttemptView {
                id: a.id,
                attempt: a.attempt,
                request_headers: json(&a.request_headers),
                body_sha256: a.body_sha256,
                response_status: a.response_status,
                response_headers: a.response_headers.as_deref().map(json),
                response_body: a
                    .response_body
                    .map(|b| String::from_utf8_lossy(&b).into_owned()),
                response_truncated: a.response_truncated,
                duration_ms: a.duration_ms,
                outcome: a.outcome,
                error: a.error,
                started_at: rfc3339(a.started_at),
                finished_at: rfc3339(a.finished_at),
            });
    }
    for t in transitions {
        by_delivery
            .entry(t.delivery_id.clone())
            .or_default()
            .1
            .push(TransitionView {
                from: t.from_state,
                to: t.to_state,
                attempt: t.attempt,
                outcome: t.outcome,
                reason: t.reason,
                at: rfc3339(t.at),
            });
    }
    rows.into_iter()
        .map(|d| {
            let (attempts, transitions) = by_delivery.remove(&d.id).unwrap_or_default();
            DeliveryView {
                id: d.id,
                event_id: d.event_id,
                endpoint_id: d.endpoint_id,
                state: d.state,
                attempt_count: d.attempt_count,
                next_attempt_at: d.next_attempt_at.map(rfc3339),
                last_outcome: d.last_outcome,
                created_at: rfc3339(d.created_at),
                updated_at: rfc3339(d.updated_at),
                attempts,
                transitions,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_614_265_330_123),
            "2021-02-25T15:02:10.123Z"
        );
    }
}
