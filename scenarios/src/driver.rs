//! The traffic driver: the plan (endpoints, their secrets and
//! subscriptions, events and their payloads, all derived from the seed) and
//! the code that puts it to a sender's platform API.
//!
//! Fan-out works through subscriptions: endpoint `n` subscribes to event
//! type `scenario.g{n / fan_out}`, and each event picks one group, so it is
//! delivered to `fan_out` endpoints (fewer in a short last group). Both
//! senders get the same ids and the same payload bytes; each event is
//! posted to both at the same moment.

use crate::rng::{self, Rng};
use crate::spec::{PayloadSpec, Scenario, Side};
use base64::Engine as _;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A driver failure: which sender, which call, and why.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{side} API: {call}: {message}")]
    Api {
        side: Side,
        call: String,
        message: String,
    },
    #[error("cancelled")]
    Cancelled,
}

/// One endpoint of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointPlan {
    pub index: u32,
    pub id: String,
    pub event_type: String,
    /// Never written to reports.
    #[serde(skip)]
    pub secret: String,
}

/// One event of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct EventPlan {
    pub index: u64,
    pub id: String,
    pub event_type: String,
    /// The exact payload text posted.
    pub payload: String,
    /// The endpoints it should reach.
    pub endpoints: Vec<u32>,
}

/// Everything the driver will send, derived from the scenario alone.
#[derive(Debug, Clone)]
pub struct Plan {
    pub endpoints: Vec<EndpointPlan>,
    pub events: Vec<EventPlan>,
}

impl Plan {
    pub fn new(s: &Scenario) -> Plan {
        let fan = s.traffic.fan_out;
        let count = s.endpoints.count;
        let groups = count.div_ceil(fan);
        let endpoints = (0..count)
            .map(|n| {
                let mut r = Rng::keyed(&[b"secret", &s.seed.to_le_bytes(), &n.to_le_bytes()]);
                let bytes: Vec<u8> = (0..24).map(|_| r.next_u64() as u8).collect();
                EndpointPlan {
                    index: n,
                    id: endpoint_id(n),
                    event_type: format!("scenario.g{}", n / fan),
                    secret: format!(
                        "whsec_{}",
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    ),
                }
            })
            .collect();
        let events = (0..s.traffic.event_count())
            .map(|i| {
                let group = (rng::hash(&[b"group", &s.seed.to_le_bytes(), &i.to_le_bytes()])
                    % u64::from(groups)) as u32;
                let first = group * fan;
                let last = (first + fan).min(count);
                EventPlan {
                    index: i,
                    id: event_id(i),
                    event_type: format!("scenario.g{group}"),
                    payload: payload(s.seed, i, &s.traffic.payload),
                    endpoints: (first..last).collect(),
                }
            })
            .collect();
        Plan { endpoints, events }
    }

    /// The deliveries the plan should produce on each sender.
    pub fn expected_deliveries(&self) -> usize {
        self.events.iter().map(|e| e.endpoints.len()).sum()
    }
}

pub fn endpoint_id(n: u32) -> String {
    format!("ep_{n}")
}

pub fn event_id(i: u64) -> String {
    format!("evt_{i:06}")
}

/// The payload text of event `index`: deterministic from the seed, with
/// the characters and numbers that senders are known to encode
/// differently (HTML characters, line separators, astral characters,
/// integers beyond 2^53, exponents and short floats), and keys out of
/// order.
pub fn payload(seed: u64, index: u64, spec: &PayloadSpec) -> String {
    let mut r = Rng::keyed(&[b"payload", &seed.to_le_bytes(), &index.to_le_bytes()]);
    let mut fields: Vec<String> = vec![
        format!("\"seq\":{index}"),
        format!(
            "\"order\":{{\"id\":\"ord_{:08x}\",\"qty\":{}}}",
            r.next_u64() as u32,
            r.below(50) + 1
        ),
    ];
    if spec.html {
        let notes = [
            "<b>bold</b> & more",
            "<a href=\"https://example.com/?a=1&b=2\">link</a>",
            "1 < 2 && 3 > 2",
        ];
        fields.push(format!(
            "\"note\":\"{}\"",
            json_escape(notes[r.below(3) as usize])
        ));
    }
    if spec.unicode {
        let names = [
            "Zoë Ångström",
            "名前 テスト",
            "emoji 😀🎉",
            "line\u{2028}sep\u{2029}",
        ];
        fields.push(format!(
            "\"name\":\"{}\"",
            json_escape(names[r.below(4) as usize])
        ));
    }
    if spec.big_numbers {
        let bigs = [
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
        ];
        fields.push(format!("\"big\":{}", bigs[r.below(3) as usize]));
    }
    if spec.floats {
        let floats = ["1e21", "0.1", "1.0", "1E2", "-0", "3.14159", "1e-7"];
        fields.push(format!("\"amount\":{}", floats[r.below(7) as usize]));
    }
    if spec.pad_bytes > 0 {
        let pad: String = (0..spec.pad_bytes)
            .map(|_| (b'a' + r.below(26) as u8) as char)
            .collect();
        fields.push(format!("\"pad\":\"{pad}\""));
    }
    // Keys in a seed-chosen order, so key-order rewrites show.
    for i in (1..fields.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        fields.swap(i, j);
    }
    format!("{{{}}}", fields.join(","))
}

fn json_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A sender's platform API.
#[derive(Debug, Clone)]
pub struct SenderApi {
    pub side: Side,
    pub base: String,
    http: reqwest::Client,
}

/// What a sender answered to one event post.
#[derive(Debug, Clone, Serialize)]
pub struct PostResult {
    pub status: u16,
    pub deliveries: usize,
    /// Tries needed (more than one when the sender was down).
    pub tries: u32,
}

impl SenderApi {
    pub fn new(side: Side, base: &str) -> SenderApi {
        SenderApi {
            side,
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    fn err(&self, call: &str, message: impl Into<String>) -> DriverError {
        DriverError::Api {
            side: self.side,
            call: call.to_string(),
            message: message.into(),
        }
    }

    /// Creates or replaces an endpoint with its secret and subscription.
    pub async fn upsert_endpoint(&self, ep: &EndpointPlan, url: &str) -> Result<(), DriverError> {
        let call = format!("PUT /v1/endpoints/{}", ep.id);
        let body = serde_json::json!({
            "url": url,
            "secret": ep.secret,
            "event_types": [ep.event_type],
        });
        let r = self
            .http
            .put(format!("{}/v1/endpoints/{}", self.base, ep.id))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.err(&call, e.to_string()))?;
        if !r.status().is_success() {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            return Err(self.err(&call, format!("{status}: {text}")));
        }
        Ok(())
    }

    /// Posts one event, retrying while the sender is unreachable or
    /// answers 5xx (it may be restarting after a fault), up to `patience`.
    pub async fn post_event(
        &self,
        ev: &EventPlan,
        patience: Duration,
    ) -> Result<PostResult, DriverError> {
        let call = format!("POST /v1/events ({})", ev.id);
        let body = format!(
            "{{\"id\":\"{}\",\"type\":\"{}\",\"payload\":{}}}",
            ev.id, ev.event_type, ev.payload
        );
        let started = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = self
                .http
                .post(format!("{}/v1/events", self.base))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let retry_reason = match sent {
                Ok(r) if r.status().is_server_error() => format!("HTTP {}", r.status()),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    let deliveries = v["deliveries"].as_array().map(Vec::len).unwrap_or(0);
                    return Ok(PostResult {
                        status,
                        deliveries,
                        tries,
                    });
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= patience {
                return Err(self.err(
                    &call,
                    format!("gave up after {tries} tries: {retry_reason}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The deliveries of one event, as JSON.
    pub async fn event_deliveries(&self, event_id: &str) -> Result<serde_json::Value, DriverError> {
        let call = format!("GET /v1/events/{event_id}/deliveries");
        let r = self
            .http
            .get(format!("{}/v1/events/{event_id}/deliveries", self.base))
            .send()
            .await
            .map_err(|e| self.err(&call, e.to_string()))?;
        let status = r.status();
        if !status.is_success() {
            return Err(self.err(&call, format!("HTTP {status}")));
        }
        r.json().await.map_err(|e| self.err(&call, e.to_string()))
    }
}

/// What the driver did.
#[derive(Debug, Clone, Serialize)]
pub struct DriveResult {
    /// Per event, each side's answer (in plan order).
    pub posts: Vec<(String, Option<PostResult>, Option<PostResult>)>,
    pub elapsed_ms: u64,
    /// Events per second actually achieved.
    pub achieved_rate: f64,
}

/// Posts every event of the plan to both senders at `rate_per_s`, the same
/// id to both at the same moment, with a progress bar on a terminal.
pub async fn drive(
    legacy: &SenderApi,
    engine: &SenderApi,
    plan: &Plan,
    rate_per_s: f64,
    progress: bool,
) -> Result<DriveResult, DriverError> {
    let bar = if progress {
        indicatif::ProgressBar::new(plan.events.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "  traffic {bar:40} {pos}/{len} events  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(plan.events.len());
    // Patience covers a sender being killed and restarted mid-run.
    let patience = Duration::from_secs(30);
    for (i, ev) in plan.events.iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate_per_s);
        tokio::time::sleep_until(due.into()).await;
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DriverError::Cancelled)?;
        let (l, e, ev, bar) = (legacy.clone(), engine.clone(), ev.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let (a, b) = tokio::join!(l.post_event(&ev, patience), e.post_event(&ev, patience));
            drop(permit);
            bar.inc(1);
            (ev.id, a, b)
        }));
    }
    let mut posts = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (id, a, b) = t.await.map_err(|_| DriverError::Cancelled)?;
        posts.push((id, Some(a?), Some(b?)));
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    Ok(DriveResult {
        elapsed_ms: elapsed.as_millis() as u64,
        achieved_rate: plan.events.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        posts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_deterministic_json_with_the_quirks() {
        let spec = PayloadSpec {
            html: true,
            unicode: true,
            big_numbers: true,
            floats: true,
            pad_bytes: 8,
        };
        let a = payload(7, 3, &spec);
        assert_eq!(a, payload(7, 3, &spec));
        assert_ne!(a, payload(8, 3, &spec));
        let v: serde_json::Value = serde_json::from_str(&a).expect("valid JSON");
        assert!(v["note"].as_str().unwrap().contains('<'));
        assert!(a.contains("\"big\":"));
        // Across many events every float form appears, written as given.
        let all: String = (0..200).map(|i| payload(1, i, &spec)).collect();
        for f in ["1e21", "0.1", "1.0", "9007199254740993", "😀", "&"] {
            assert!(all.contains(f), "{f} never generated");
        }
    }
}
