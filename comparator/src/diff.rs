//! The diff engine: walks the histories of two sides (the legacy as
//! reference, the engine as candidate, or two legacy runs for learned noise)
//! and produces divergences per attempt pair and per (event, endpoint)
//! history. It is pure: no I/O, no clock.
//!
//! Per attempt pair (both sides' exchanges for one (event, URL, attempt)):
//! payload bytes, headers, signatures. Per history: presence (missing,
//! extra), unpaired attempts, the outcome class each side recorded for the
//! same attempt, the retry decision after each outcome, the delays against
//! each side's declared schedule, and the canonical state sequence.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use engine::profile::{self, Profile, RetryPolicy};
use engine::signing::{self, Scheme, SignInput};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::jcs::{self, Json, Normalize};
use crate::model::{Attempt, Exchange, History, Ingress, Key, Outcome, Sender, SideData};
use crate::rules::{describe_schedule, NoiseCheck, Rules, SidePolicy};

/// What a divergence is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A signature that does not verify, or differs when recomputed.
    Signature,
    /// Header names, case, values or presence.
    Header,
    /// Body bytes.
    Payload,
    /// Retried or not after an outcome, attempt counts, delays.
    RetryDecision,
    /// The outcome class recorded for the same exchange.
    TimeoutClassification,
    /// The canonical state sequence of a delivery.
    StateTransition,
    /// Ingress answers to producers.
    ApiResponse,
    /// Something the legacy did that the engine did not.
    Missing,
    /// Something the engine did that the legacy did not.
    Extra,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 9] = [
        Category::Signature,
        Category::Header,
        Category::Payload,
        Category::RetryDecision,
        Category::TimeoutClassification,
        Category::StateTransition,
        Category::ApiResponse,
        Category::Missing,
        Category::Extra,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Signature => "signature",
            Category::Header => "header",
            Category::Payload => "payload",
            Category::RetryDecision => "retry_decision",
            Category::TimeoutClassification => "timeout_classification",
            Category::StateTransition => "state_transition",
            Category::ApiResponse => "api_response",
            Category::Missing => "missing",
            Category::Extra => "extra",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the category is counted per attempt pair (else per history or ingress call).
    pub fn per_pair(self) -> bool {
        matches!(
            self,
            Category::Signature | Category::Header | Category::Payload
        )
    }
}

/// How much a divergence matters to a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Noticeable but harmless to a correct receiver (header case, whitespace).
    Minor,
    /// A receiver may behave differently.
    Major,
    /// A receiver will: a signature fails, a delivery is lost or doubled, meaning changes.
    Critical,
}

/// Where a divergence is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DivKey {
    /// The event id.
    pub event_id: String,
    /// The endpoint URL (for API responses: the request path).
    pub endpoint_url: String,
    /// The attempt number, for attempt-level divergences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// One difference a customer could notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// What it is about.
    pub category: Category,
    /// How much it matters.
    pub severity: Severity,
    /// Where it is.
    pub key: DivKey,
    /// The precise field (`header:x-foo`, `payload:key_order`, `outcome`, ...), used for learned noise.
    pub field: String,
    /// One sentence for people.
    pub summary: String,
    /// The rule that explains it.
    pub rule: String,
    /// The legacy's side of the evidence.
    pub legacy: Value,
    /// The engine's side of the evidence.
    pub engine: Value,
    /// A unified diff, where one helps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Unix ms of the exchange or history it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

/// A suppressed difference, aggregated by rule, category and field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppressed {
    /// The rule that explained it away.
    pub rule: String,
    /// Its category.
    pub category: Category,
    /// The field.
    pub field: String,
    /// How many times.
    pub count: u64,
    /// The first key it happened at.
    pub example: DivKey,
}

/// What one diff of two sides produced.
#[derive(Debug, Clone, Default)]
pub struct DiffResult {
    /// Every divergence, in key order.
    pub divergences: Vec<Divergence>,
    /// Suppressions by (rule, category, field).
    pub suppressed: BTreeMap<(String, Category, String), Suppressed>,
    /// Checks that could not run, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// (event, URL, attempt) keys where both sides' exchanges were recorded.
    pub attempt_pairs: u64,
    /// Attempts seen on either side.
    pub attempts: u64,
    /// (event, endpoint) histories compared.
    pub histories: u64,
    /// Ingress calls compared.
    pub ingress_calls: u64,
    /// Per attempt pair: (unix ms, whether it diverged), for the timeline.
    pub pair_times: Vec<(i64, bool)>,
}

impl DiffResult {
    fn suppress(&mut self, rule: &str, category: Category, field: &str, key: &DivKey) {
        self.suppressed
            .entry((rule.to_owned(), category, field.to_owned()))
            .and_modify(|s| s.count += 1)
            .or_insert_with(|| Suppressed {
                rule: rule.to_owned(),
                category,
                field: field.to_owned(),
                count: 1,
                example: key.clone(),
            });
    }

    fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_owned()).or_default() += 1;
    }
}

/// One side as the diff sees it: its data, label and declarations.
pub struct SideView<'a> {
    /// The data.
    pub data: &'a SideData,
    /// The sender's role in the report.
    pub sender: Sender,
    /// What the rules declare for it.
    pub policy: &'a SidePolicy,
}

impl SideView<'_> {
    fn label(&self) -> &'static str {
        match self.sender {
            Sender::Legacy => "legacy",
            Sender::Engine => "engine",
        }
    }

    /// The profile the side used for `url`: the rules', else the stored one,
    /// else detected from the signature headers, else the side's default.
    fn profile(&self, url: &str, h: Option<&History>) -> Profile {
        // Callers cache the answer per endpoint URL (see `Differ`).
        if let Some(p) = &self.policy.profile {
            return p.clone();
        }
        if let Some(p) = self
            .data
            .profiles
            .get(url)
            .and_then(|n| profile::by_name(n).ok())
        {
            return p;
        }
        let ex = h.and_then(|h| h.attempts.values().find_map(|a| a.exchange.as_deref()));
        let detected = ex.and_then(|ex| {
            [
                ("webhook-signature", "standard-webhooks"),
                ("x-signature", "legacy"),
                ("x-hub-signature-256", "github"),
                ("stripe-signature", "stripe"),
            ]
            .into_iter()
            .find(|(h, _)| ex.header(h).is_some())
            .map(|(_, p)| p)
        });
        let fallback = match self.sender {
            Sender::Legacy => "legacy",
            Sender::Engine => "standard-webhooks",
        };
        profile::by_name(detected.unwrap_or(fallback)).unwrap_or_default()
    }

    fn retry(&self, p: &Profile) -> RetryPolicy {
        self.policy.retry.clone().unwrap_or_else(|| p.retry.clone())
    }
}

/// Diffs one history at a time, accumulating a [`DiffResult`]: what a
/// streaming reader feeds as each (event, endpoint) is read.
pub struct Differ<'a> {
    left: SideView<'a>,
    right: SideView<'a>,
    rules: &'a Rules,
    /// Profiles and retry policies per endpoint URL, resolved once.
    resolved: HashMap<String, std::rc::Rc<Resolved>>,
    /// What was found so far.
    pub result: DiffResult,
}

/// Both sides' profile and retry policy for one endpoint.
struct Resolved {
    lp: Profile,
    rp: Profile,
    lretry: RetryPolicy,
    rretry: RetryPolicy,
}

impl<'a> Differ<'a> {
    /// A differ of `left` (the reference) against `right`; the views' own
    /// histories are not read, only their secrets and profiles.
    pub fn new(left: SideView<'a>, right: SideView<'a>, rules: &'a Rules) -> Differ<'a> {
        Differ {
            left,
            right,
            rules,
            resolved: HashMap::new(),
            result: DiffResult::default(),
        }
    }

    /// Diffs one (event, endpoint) history.
    pub fn history(&mut self, key: &Key, l: Option<&History>, r: Option<&History>) {
        let resolved = match self.resolved.get(&key.1) {
            Some(x) => x.clone(),
            None => {
                let lp = self.left.profile(&key.1, l);
                let rp = self.right.profile(&key.1, r);
                let x = std::rc::Rc::new(Resolved {
                    lretry: self.left.retry(&lp),
                    rretry: self.right.retry(&rp),
                    lp,
                    rp,
                });
                // Detection from headers needs an exchange; cache only a settled answer.
                if l.is_some() && r.is_some() {
                    self.resolved.insert(key.1.clone(), x.clone());
                }
                x
            }
        };
        diff_history(
            key,
            l,
            r,
            (&self.left, &self.right),
            &resolved,
            self.rules,
            &mut self.result,
        );
    }
}

/// Diffs two sides: `left` is the reference (the legacy), `right` the candidate.
pub fn diff_sides(left: &SideView<'_>, right: &SideView<'_>, rules: &Rules) -> DiffResult {
    let mut differ = Differ::new(
        SideView {
            data: left.data,
            sender: left.sender,
            policy: left.policy,
        },
        SideView {
            data: right.data,
            sender: right.sender,
            policy: right.policy,
        },
        rules,
    );
    let keys: BTreeSet<&Key> = left
        .data
        .histories
        .keys()
        .chain(right.data.histories.keys())
        .collect();
    for key in keys {
        differ.history(
            key,
            left.data.histories.get(key),
            right.data.histories.get(key),
        );
    }
    differ.result
}

/// Evidence of an exchange, without bodies.
fn exchange_evidence(ex: &Exchange) -> Value {
    json!({
        "role": ex.role.map(|r| r.as_str()),
        "started_at": ex.started_at,
        "latency_ms": ex.latency_us as f64 / 1000.0,
        "response_status": ex.response_status,
        "response_body_bytes": ex.response_body_len,
        "fault": ex.fault,
        "note": ex.note,
    })
}

fn attempt_evidence(a: &Attempt) -> Value {
    json!({
        "recorded_outcome": a.recorded.as_ref().map(|r| r.raw_outcome.clone()),
        "recorded_status": a.recorded.as_ref().and_then(|r| r.status),
        "outcome_class": a.outcome().map(Outcome::as_str),
        "exchange": a.exchange.as_deref().map(exchange_evidence),
    })
}

fn attempt_time(a: &Attempt) -> Option<i64> {
    a.exchange
        .as_ref()
        .map(|e| e.started_at)
        .or_else(|| a.recorded.as_ref().map(|r| r.started_at))
}

fn history_time(h: Option<&History>) -> Option<i64> {
    h.and_then(|h| h.attempts.values().find_map(attempt_time))
}

#[allow(clippy::too_many_arguments)]
fn push(
    out: &mut DiffResult,
    category: Category,
    severity: Severity,
    key: DivKey,
    field: impl Into<String>,
    summary: impl Into<String>,
    rule: impl Into<String>,
    (legacy, engine): (Value, Value),
    diff: Option<String>,
    at: Option<i64>,
) {
    out.divergences.push(Divergence {
        category,
        severity,
        key,
        field: field.into(),
        summary: summary.into(),
        rule: rule.into(),
        legacy,
        engine,
        diff,
        at,
    });
}

fn diff_history(
    key: &Key,
    l: Option<&History>,
    r: Option<&History>,
    (lv, rv): (&SideView<'_>, &SideView<'_>),
    resolved: &Resolved,
    rules: &Rules,
    out: &mut DiffResult,
) {
    out.histories += 1;
    let hkey = DivKey {
        event_id: key.0.clone(),
        endpoint_url: key.1.clone(),
        attempt: None,
    };
    let (l, r) = match (l, r) {
        (Some(l), Some(r)) => (l, r),
        (l, r) => {
            let (cat, who, other, h) = match (l, r) {
                (Some(l), None) => (Category::Missing, lv.label(), rv.label(), l),
                (None, Some(r)) => (Category::Extra, rv.label(), lv.label(), r),
                _ => return,
            };
            out.attempts += h.attempts.len() as u64;
            let ev = json!({
                "delivery_id": h.delivery_id,
                "attempts": h.attempts.len(),
                "states": h.states,
            });
            let evidence = if cat == Category::Missing {
                (ev, Value::Null)
            } else {
                (Value::Null, ev)
            };
            push(
                out,
                cat,
                Severity::Critical,
                hkey,
                "delivery",
                format!(
                    "the {who} delivered this event to this endpoint ({} attempts); the {other} has no delivery for it",
                    h.attempts.len()
                ),
                "pairing.history",
                evidence,
                None,
                history_time(Some(h)),
            );
            return;
        }
    };

    let Resolved {
        lp,
        rp,
        lretry,
        rretry,
    } = resolved;
    let lsecrets = lv
        .data
        .secrets
        .get(&key.1)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let rsecrets = rv
        .data
        .secrets
        .get(&key.1)
        .map(Vec::as_slice)
        .unwrap_or(&[]);

    // Attempt level.
    let numbers: BTreeSet<u32> = l
        .attempts
        .keys()
        .chain(r.attempts.keys())
        .copied()
        .collect();
    for &n in &numbers {
        out.attempts += 1;
        let akey = DivKey {
            attempt: Some(n),
            ..hkey.clone()
        };
        match (l.attempts.get(&n), r.attempts.get(&n)) {
            (Some(la), Some(ra)) => {
                if let (Some(lx), Some(rx)) = (&la.exchange, &ra.exchange) {
                    out.attempt_pairs += 1;
                    let before = out.divergences.len();
                    let body_len_differs = lx.request_body.len() != rx.request_body.len();
                    diff_payload(lx, rx, &akey, out);
                    diff_headers(lx, rx, body_len_differs, &akey, rules, out);
                    diff_signature(
                        lx,
                        rx,
                        (lp, rp),
                        (lsecrets, rsecrets),
                        (lv.label(), rv.label()),
                        &akey,
                        out,
                    );
                    out.pair_times
                        .push((lx.started_at, out.divergences.len() > before));
                } else if la.exchange.is_some() || ra.exchange.is_some() {
                    out.skip("attempt recorded in a database but not captured by the egress");
                }
                diff_outcome(la, ra, (lv.label(), rv.label()), &akey, rules, out);
            }
            (Some(a), None) | (None, Some(a)) => {
                let left_only = l.attempts.contains_key(&n);
                let (cat, who, other) = if left_only {
                    (Category::Missing, lv.label(), rv.label())
                } else {
                    (Category::Extra, rv.label(), lv.label())
                };
                let shadow_only = a
                    .exchange
                    .as_ref()
                    .is_some_and(|e| e.role == Some(crate::model::Role::ShadowOnly));
                let ev = attempt_evidence(a);
                let evidence = if left_only {
                    (ev, Value::Null)
                } else {
                    (Value::Null, ev)
                };
                let (summary, rule) = if shadow_only {
                    (
                        format!("the {who} made attempt {n}, which the {other} (primary) never made; the egress answered it with its default (shadow-only)"),
                        "pairing.shadow_only",
                    )
                } else {
                    (
                        format!("the {who} made attempt {n}; the {other} did not"),
                        "pairing.attempt",
                    )
                };
                push(
                    out,
                    cat,
                    Severity::Major,
                    akey,
                    "attempt",
                    summary,
                    rule,
                    evidence,
                    None,
                    attempt_time(a),
                );
            }
            (None, None) => {}
        }
    }

    diff_retries(
        l,
        r,
        (lv.label(), rv.label()),
        (lretry, rretry),
        &hkey,
        rules,
        out,
    );

    if !l.states.is_empty() && !r.states.is_empty() && l.states != r.states {
        let step = l
            .states
            .iter()
            .zip(&r.states)
            .position(|(a, b)| a != b)
            .unwrap_or(l.states.len().min(r.states.len()));
        let final_differs = l.states.last() != r.states.last();
        let at = |s: &[String]| s.get(step).cloned().unwrap_or_else(|| "(end)".into());
        push(
            out,
            Category::StateTransition,
            if final_differs {
                Severity::Critical
            } else {
                Severity::Major
            },
            hkey.clone(),
            "states",
            format!(
                "state sequences differ at step {}: {} {}, {} {}{}",
                step + 1,
                lv.label(),
                at(&l.states),
                rv.label(),
                at(&r.states),
                if final_differs {
                    format!(
                        "; final state {} vs {}",
                        l.states.last().map(String::as_str).unwrap_or("-"),
                        r.states.last().map(String::as_str).unwrap_or("-")
                    )
                } else {
                    String::new()
                }
            ),
            "states.canonical_sequence",
            (
                json!({"delivery_id": l.delivery_id, "states": l.states.join(" → ")}),
                json!({"delivery_id": r.delivery_id, "states": r.states.join(" → ")}),
            ),
            Some(unified(
                &(l.states.join("\n") + "\n"),
                &(r.states.join("\n") + "\n"),
                lv.label(),
                rv.label(),
            )),
            history_time(Some(l)),
        );
    }
}

/// A unified diff of two texts, three lines of context.
pub fn unified(a: &str, b: &str, a_name: &str, b_name: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(a_name, b_name)
        .to_string()
}

/// At most 4 KiB of a body as text, for evidence.
fn body_text(b: &[u8]) -> String {
    let cut = b.len().min(4096);
    let mut s = String::from_utf8_lossy(&b[..cut]).into_owned();
    if cut < b.len() {
        s.push_str(&format!("… ({} more bytes)", b.len() - cut));
    }
    s
}

/// Which normalisation explains a byte difference of two JSON documents.
pub fn payload_kinds(l: &Json, r: &Json, l_raw: &[u8], r_raw: &[u8]) -> Vec<&'static str> {
    let ser = |v: &Json, how| jcs::serialize(v, how).ok();
    let plain = Normalize::default();
    let mut kinds = Vec::new();
    let compact_l = ser(l, plain);
    let compact_r = ser(r, plain);
    let whitespace = compact_l.as_deref().map(str::as_bytes) != Some(l_raw)
        || compact_r.as_deref().map(str::as_bytes) != Some(r_raw);
    if compact_l == compact_r {
        return vec!["whitespace"];
    }
    let aspects = [
        (
            "key_order",
            Normalize {
                key_order: true,
                ..plain
            },
        ),
        (
            "escaping",
            Normalize {
                escaping: true,
                ..plain
            },
        ),
        (
            "number_format",
            Normalize {
                numbers: true,
                ..plain
            },
        ),
    ];
    for (name, how) in aspects {
        if ser(l, how) == ser(r, how) {
            kinds.push(name);
            if whitespace {
                kinds.push("whitespace");
            }
            return kinds;
        }
    }
    // Several aspects together: name each one that changes either side.
    for (name, how) in aspects {
        if ser(l, how) != compact_l || ser(r, how) != compact_r {
            kinds.push(name);
        }
    }
    if whitespace {
        kinds.push("whitespace");
    }
    kinds
}

fn diff_payload(lx: &Exchange, rx: &Exchange, key: &DivKey, out: &mut DiffResult) {
    let (lb, rb) = (&lx.request_body, &rx.request_body);
    if lb == rb {
        return;
    }
    let ev = |b: &[u8]| json!({"bytes": b.len(), "body": body_text(b)});
    let evidence = (ev(lb), ev(rb));
    let (lj, rj) = match (jcs::parse(lb), jcs::parse(rb)) {
        (Ok(l), Ok(r)) => (l, r),
        (l, r) => {
            let which = match (&l, &r) {
                (Err(e), _) => format!("the legacy's body is not JSON ({e})"),
                (_, Err(e)) => format!("the engine's body is not JSON ({e})"),
                _ => unreachable!("one of the two failed"),
            };
            push(
                out,
                Category::Payload,
                Severity::Critical,
                key.clone(),
                "payload:not_json",
                format!("body bytes differ and {which}"),
                "payload.bytes",
                evidence,
                Some(unified(&body_text(lb), &body_text(rb), "legacy", "engine")),
                Some(lx.started_at),
            );
            return;
        }
    };
    let canon = |v: &Json| jcs::serialize(v, Normalize::ALL).ok();
    if canon(&lj).is_some() && canon(&lj) == canon(&rj) {
        let kinds = payload_kinds(&lj, &rj, lb, rb);
        let first = lb
            .iter()
            .zip(rb.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(lb.len().min(rb.len()));
        let snippet = |b: &[u8]| {
            let s = first.saturating_sub(20);
            String::from_utf8_lossy(&b[s..(first + 20).min(b.len())]).into_owned()
        };
        let mut ev = evidence;
        ev.0["near_first_difference"] = json!(snippet(lb));
        ev.1["near_first_difference"] = json!(snippet(rb));
        push(
            out,
            Category::Payload,
            if kinds == ["whitespace"] {
                Severity::Minor
            } else {
                Severity::Major
            },
            key.clone(),
            format!("payload:{}", kinds.join("+")),
            format!(
                "body bytes differ (first at byte {first}) but are equal as RFC 8785 canonical JSON: {}",
                kinds.join(", ").replace('_', " ")
            ),
            format!("payload.rfc8785.{}", kinds.join("+")),
            ev,
            None,
            Some(lx.started_at),
        );
    } else {
        push(
            out,
            Category::Payload,
            Severity::Critical,
            key.clone(),
            "payload:meaning",
            "body bytes differ in meaning: the RFC 8785 canonical forms are not equal",
            "payload.rfc8785.meaning",
            evidence,
            Some(unified(
                &jcs::pretty(&lj),
                &jcs::pretty(&rj),
                "legacy",
                "engine",
            )),
            Some(lx.started_at),
        );
    }
}

fn header_map(ex: &Exchange) -> BTreeMap<String, (String, String)> {
    let mut m: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, value) in &ex.request_headers {
        m.entry(name.to_ascii_lowercase())
            .and_modify(|(_, v)| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| (name.clone(), value.clone()));
    }
    m
}

fn diff_headers(
    lx: &Exchange,
    rx: &Exchange,
    body_len_differs: bool,
    key: &DivKey,
    rules: &Rules,
    out: &mut DiffResult,
) {
    let lm = header_map(lx);
    let rm = header_map(rx);
    let names: BTreeSet<&String> = lm.keys().chain(rm.keys()).collect();
    let http1 = lx.http_version == "HTTP/1.1" && rx.http_version == "HTTP/1.1";
    for lower in names {
        if rules.header_ignore.contains(lower.as_str()) {
            continue;
        }
        let field = format!("header:{lower}");
        let (l, r) = (lm.get(lower), rm.get(lower));
        let (Some((ln, lval)), Some((rn, rval))) = (l, r) else {
            let (who, (name, value)) = match (l, r) {
                (Some(x), None) => ("engine", x),
                (None, Some(x)) => ("legacy", x),
                _ => continue,
            };
            let present = json!({ name.clone(): value });
            push(
                out,
                Category::Header,
                Severity::Major,
                key.clone(),
                field,
                format!("header {name} is missing on the {who}'s request"),
                "headers.presence",
                if who == "engine" {
                    (present, Value::Null)
                } else {
                    (Value::Null, present)
                },
                None,
                Some(lx.started_at),
            );
            continue;
        };
        if http1 && ln != rn {
            push(
                out,
                Category::Header,
                Severity::Minor,
                key.clone(),
                format!("header-case:{lower}"),
                format!("header name case differs on HTTP/1.1: {ln} vs {rn}"),
                "headers.case_http1",
                (json!(ln), json!(rn)),
                None,
                Some(lx.started_at),
            );
        }
        if lval == rval {
            continue;
        }
        if lower == "content-length" && body_len_differs {
            out.suppress(
                "content_length_follows_payload",
                Category::Header,
                &field,
                key,
            );
            continue;
        }
        let evidence = (json!({ ln.clone(): lval }), json!({ rn.clone(): rval }));
        let Some(rule) = rules.noise_for(lower) else {
            push(
                out,
                Category::Header,
                Severity::Major,
                key.clone(),
                field,
                format!("header {ln} differs"),
                "headers.value",
                evidence,
                None,
                Some(lx.started_at),
            );
            continue;
        };
        let problem = match &rule.check {
            NoiseCheck::Ignore | NoiseCheck::Signature => None,
            NoiseCheck::Differs => {
                if lval.trim().is_empty() || rval.trim().is_empty() {
                    Some(format!("header {ln} is empty on one side"))
                } else {
                    None
                }
            }
            NoiseCheck::UnixSeconds { max_skew_s } => [("legacy", lval, lx), ("engine", rval, rx)]
                .into_iter()
                .find_map(|(who, v, ex)| match v.trim().parse::<i64>() {
                    Err(_) => Some(format!("the {who}'s {ln} {v:?} is not unix seconds")),
                    Ok(ts) => {
                        let skew = ts - ex.started_at.div_euclid(1000);
                        (skew.abs() > *max_skew_s).then(|| {
                            format!("the {who}'s {ln} is {skew}s off the egress's clock (allowed ±{max_skew_s}s)")
                        })
                    }
                }),
        };
        match problem {
            None => out.suppress(&rule.name, Category::Header, &field, key),
            Some(summary) => push(
                out,
                Category::Header,
                Severity::Major,
                key.clone(),
                field,
                summary,
                format!("noise.{}", rule.name),
                evidence,
                None,
                Some(lx.started_at),
            ),
        }
    }
}

/// The (id, timestamp) a scheme signed, read from its headers.
fn signed_id_and_ts(scheme: Scheme, ex: &Exchange, event_id: &str) -> (String, i64) {
    let id_header = match scheme {
        Scheme::StandardWebhooks => Some("webhook-id"),
        Scheme::Legacy => Some("x-event-id"),
        _ => None,
    };
    let id = id_header
        .and_then(|h| ex.header(h))
        .unwrap_or(event_id)
        .to_owned();
    let ts = match scheme {
        Scheme::StandardWebhooks => ex.header("webhook-timestamp").map(str::to_owned),
        Scheme::Legacy => ex.header("x-timestamp").map(str::to_owned),
        Scheme::Slack => ex.header("x-slack-request-timestamp").map(str::to_owned),
        Scheme::Stripe => ex.header("stripe-signature").and_then(|v| {
            v.split(',')
                .find_map(|p| p.strip_prefix("t=").map(str::to_owned))
        }),
        Scheme::Github => None,
    };
    let ts = ts
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(ex.started_at.div_euclid(1000));
    (id, ts)
}

fn diff_signature(
    lx: &Exchange,
    rx: &Exchange,
    (lp, rp): (&Profile, &Profile),
    (ls, rs): (&[String], &[String]),
    (lname, rname): (&str, &str),
    key: &DivKey,
    out: &mut DiffResult,
) {
    for (who, ex, p, secrets) in [(lname, lx, lp, ls), (rname, rx, rp, rs)] {
        if secrets.is_empty() {
            out.skip(&format!("signature: no {who} secret for the endpoint"));
            continue;
        }
        let headers = &ex.request_headers;
        let results: Vec<_> = secrets
            .iter()
            .map(|s| signing::verify(p.scheme, s, headers, &ex.request_body))
            .collect();
        if let Some(Err(e)) = results
            .iter()
            .find(|r| r.is_err())
            .filter(|_| results.iter().all(|r| r.is_err()))
        {
            push(
                out,
                Category::Signature,
                Severity::Critical,
                key.clone(),
                format!("signature:verify_{who}"),
                format!(
                    "the {who}'s signature does not verify against its own body with its secret ({} scheme): {e}",
                    p.scheme
                ),
                "signature.verify_own",
                if who == lname {
                    (signature_headers(ex), Value::Null)
                } else {
                    (Value::Null, signature_headers(ex))
                },
                None,
                Some(lx.started_at),
            );
        }
    }
    if rs.is_empty() {
        return;
    }
    // The engine's signing over the legacy's id, timestamp and body must give the legacy's bytes.
    let (id, ts) = signed_id_and_ts(lp.scheme, lx, &key.event_id);
    let secrets: Vec<&str> = rs.iter().map(String::as_str).collect();
    let Ok(recomputed) = signing::sign(
        rp.scheme,
        &secrets,
        SignInput {
            id: &id,
            timestamp: ts,
            body: &lx.request_body,
        },
    ) else {
        out.skip("signature: the engine's secret cannot be used by its scheme");
        return;
    };
    let same_secrets = !ls.is_empty() && ls.first() == rs.first();
    for (name, value) in recomputed {
        let sent = lx.header(&name);
        if sent == Some(value.as_str()) {
            continue;
        }
        let (summary, rule) = match sent {
            None => (
                format!(
                    "the engine's {} profile signs with {name}, which the {lname} never sent",
                    rp.name
                ),
                "signature.scheme",
            ),
            Some(_) if !ls.is_empty() && !same_secrets => (
                format!("{name} recomputed with the engine's secret over the {lname}'s id, timestamp and body differs: the engine's secret for this endpoint is not the {lname}'s"),
                "signature.secret_differs",
            ),
            Some(_) => (
                format!("{name} recomputed by the engine's {} profile over the {lname}'s id, timestamp and body differs from the {lname}'s bytes", rp.name),
                "signature.recompute",
            ),
        };
        push(
            out,
            Category::Signature,
            Severity::Critical,
            key.clone(),
            "signature:recompute",
            summary,
            rule,
            (
                json!({"header": name, "value": sent}),
                json!({"header": name, "recomputed": value}),
            ),
            None,
            Some(lx.started_at),
        );
    }
}

/// The signature-related headers of a request, as evidence (signatures are not secrets).
fn signature_headers(ex: &Exchange) -> Value {
    let names = [
        "x-signature",
        "x-timestamp",
        "x-event-id",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-hub-signature-256",
        "stripe-signature",
    ];
    let mut m = serde_json::Map::new();
    for (n, v) in &ex.request_headers {
        if names.contains(&n.to_ascii_lowercase().as_str()) {
            m.insert(n.clone(), json!(v));
        }
    }
    Value::Object(m)
}

fn diff_outcome(
    la: &Attempt,
    ra: &Attempt,
    (lname, rname): (&str, &str),
    key: &DivKey,
    rules: &Rules,
    out: &mut DiffResult,
) {
    let (Some(lo), Some(ro)) = (la.outcome(), ra.outcome()) else {
        return;
    };
    if lo == ro {
        return;
    }
    if rules.outcomes_equivalent(lo, ro) {
        out.suppress(
            "outcomes.equivalent",
            Category::TimeoutClassification,
            "outcome",
            key,
        );
        return;
    }
    let delivered = lo == Outcome::Delivered || ro == Outcome::Delivered;
    // A success recorded while the egress saw the exchange fail is the
    // legacy's early-success bug: with a response head it is success before
    // the body was read; without one, a timeout recorded as success.
    let (who, succeeded) = if lo == Outcome::Delivered {
        (lname, la)
    } else {
        (rname, ra)
    };
    let seen = succeeded.exchange.as_ref().filter(|_| delivered);
    let partial = seen.is_some_and(|e| {
        e.fault.is_some() || e.note.as_deref().is_some_and(|n| n.contains("partial"))
    });
    let (summary, rule) = match seen {
        Some(e) if partial && e.response_status.is_some() => (
            format!(
                "the {who} recorded success after a {} whose body never completed ({}): success recorded before the body was read; {lname} {}, {rname} {}",
                e.response_status.unwrap_or(0),
                e.fault.as_deref().or(e.note.as_deref()).unwrap_or("partial body"),
                lo.as_str(),
                ro.as_str()
            ),
            "outcome.success_before_body",
        ),
        Some(e) if partial => (
            format!(
                "the {who} recorded success although the exchange ended in {} with no response; {lname} {}, {rname} {}",
                e.fault.as_deref().unwrap_or("a fault"),
                lo.as_str(),
                ro.as_str()
            ),
            "outcome.fault_as_success",
        ),
        _ => (
            format!(
                "for the same exchange the {lname} recorded {} and the {rname} {}",
                lo.as_str(),
                ro.as_str()
            ),
            "outcome.class",
        ),
    };
    push(
        out,
        Category::TimeoutClassification,
        if delivered {
            Severity::Critical
        } else {
            Severity::Major
        },
        key.clone(),
        "outcome",
        summary,
        rule,
        (attempt_evidence(la), attempt_evidence(ra)),
        None,
        attempt_time(la),
    );
}

/// `Retry-After` seconds on a 429/503 response.
fn retry_after(ex: &Exchange) -> Option<i64> {
    if !matches!(ex.response_status, Some(429 | 503)) {
        return None;
    }
    ex.response_headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<i64>().ok())
        .filter(|s| *s >= 0)
}

/// Milliseconds between the end of attempt `n` and the start of `n + 1`.
fn delay_ms(h: &History, n: u32) -> Option<i64> {
    let a = h.attempts.get(&n)?;
    let b = h.attempts.get(&(n + 1))?;
    match (&a.exchange, &b.exchange) {
        (Some(x), Some(y)) => Some(y.started_at - x.finished_at()),
        _ => Some(b.recorded.as_ref()?.started_at - a.recorded.as_ref()?.started_at),
    }
}

fn diff_retries(
    l: &History,
    r: &History,
    (lname, rname): (&str, &str),
    (lretry, rretry): (&RetryPolicy, &RetryPolicy),
    hkey: &DivKey,
    rules: &Rules,
    out: &mut DiffResult,
) {
    let last = |h: &History| h.attempts.keys().next_back().copied().unwrap_or(0);
    let (ll, rl) = (last(l), last(r));
    // The first attempt after which one side retried and the other stopped.
    for n in 1..=ll.min(rl) {
        let (Some(la), Some(ra)) = (l.attempts.get(&n), r.attempts.get(&n)) else {
            continue;
        };
        let lr = l.attempts.contains_key(&(n + 1));
        let rr = r.attempts.contains_key(&(n + 1));
        if lr == rr {
            continue;
        }
        let (stopped, retried) = if lr { (rname, lname) } else { (lname, rname) };
        push(
            out,
            Category::RetryDecision,
            Severity::Major,
            DivKey {
                attempt: Some(n),
                ..hkey.clone()
            },
            "retry:decision",
            format!(
                "after attempt {n} ({lname}: {}, {rname}: {}) the {stopped} stopped and the {retried} retried; attempts in all: {lname} {ll}, {rname} {rl}",
                la.outcome().map(Outcome::as_str).unwrap_or("unknown"),
                ra.outcome().map(Outcome::as_str).unwrap_or("unknown"),
            ),
            "retry.decision",
            (
                json!({"attempts": ll, "retried_after": n, "retried": lr, "attempt": attempt_evidence(la)}),
                json!({"attempts": rl, "retried_after": n, "retried": rr, "attempt": attempt_evidence(ra)}),
            ),
            None,
            attempt_time(la),
        );
        break;
    }

    // Delays against each side's declared schedule, where both retried.
    for n in 1..ll.min(rl) {
        let (Some(ld), Some(rd)) = (delay_ms(l, n), delay_ms(r, n)) else {
            continue;
        };
        let ra_secs = l.attempts[&n]
            .exchange
            .as_deref()
            .and_then(retry_after)
            .or_else(|| r.attempts[&n].exchange.as_deref().and_then(retry_after));
        let key = DivKey {
            attempt: Some(n + 1),
            ..hkey.clone()
        };
        let mut off_schedule = false;
        for (who, d, p) in [(lname, ld, lretry), (rname, rd, rretry)] {
            let Some((lo, hi)) = p.bounds(n + 1) else {
                off_schedule = true;
                push(
                    out,
                    Category::RetryDecision,
                    Severity::Major,
                    key.clone(),
                    "retry:attempts",
                    format!(
                        "the {who} made attempt {} although its declared policy allows {} attempts",
                        n + 1,
                        p.max_attempts
                    ),
                    "retry.max_attempts",
                    (
                        json!(describe_schedule(lretry)),
                        json!(describe_schedule(rretry)),
                    ),
                    None,
                    None,
                );
                continue;
            };
            let (mut lo, mut hi) = (lo.as_millis() as i64, hi.as_millis() as i64);
            let honoured = ra_secs
                .filter(|_| p.honor_retry_after)
                .map(|s| (s * 1000).min(p.retry_after_cap.as_millis() as i64));
            if let Some(ra) = honoured {
                lo = lo.max(ra);
                hi = hi.max(ra);
            }
            let tol = rules.tolerance_ms + (hi as f64 * rules.tolerance_ratio) as i64;
            if d >= lo - tol && d <= hi + tol {
                continue;
            }
            off_schedule = true;
            let (summary, rule) = match honoured {
                Some(ra) if d < ra - tol => (
                    format!(
                        "the {who} ignored Retry-After: {}s on attempt {n}: it waited {:.1}s, its policy honours Retry-After",
                        ra / 1000,
                        d as f64 / 1000.0
                    ),
                    "retry.retry_after_ignored",
                ),
                _ => (
                    format!(
                        "the {who} waited {:.1}s before attempt {}; its declared schedule allows {:.1}–{:.1}s",
                        d as f64 / 1000.0,
                        n + 1,
                        lo as f64 / 1000.0,
                        hi as f64 / 1000.0
                    ),
                    "retry.schedule",
                ),
            };
            let ev = json!({"delay_ms": d, "allowed_ms": [lo, hi], "policy": describe_schedule(p)});
            push(
                out,
                Category::RetryDecision,
                Severity::Major,
                key.clone(),
                "retry:delay",
                summary,
                rule,
                if who == lname {
                    (ev, json!({"delay_ms": rd}))
                } else {
                    (json!({"delay_ms": ld}), ev)
                },
                None,
                None,
            );
        }
        // Both within their own declarations, but one honours Retry-After and the other does not.
        if let Some(ra) = ra_secs {
            let tol = rules.tolerance_ms;
            if !off_schedule
                && lretry.honor_retry_after != rretry.honor_retry_after
                && (ld - rd).abs() > tol
            {
                let (h, i) = if lretry.honor_retry_after {
                    (lname, rname)
                } else {
                    (rname, lname)
                };
                push(
                    out,
                    Category::RetryDecision,
                    Severity::Minor,
                    key.clone(),
                    "retry:retry_after",
                    format!(
                        "Retry-After: {ra}s on attempt {n}: the {h} honours it and the {i} ignores it ({lname} waited {:.1}s, {rname} {:.1}s)",
                        ld as f64 / 1000.0,
                        rd as f64 / 1000.0
                    ),
                    "retry.retry_after_policy_differs",
                    (json!({"delay_ms": ld}), json!({"delay_ms": rd})),
                    None,
                    None,
                );
            }
        }
    }
}

/// Compares the ingress answers the producer got (primary) with the shadow's.
pub fn diff_ingress(calls: &[Ingress], rules: &Rules, out: &mut DiffResult) {
    for c in calls {
        out.ingress_calls += 1;
        let key = DivKey {
            event_id: c.event_id.clone().unwrap_or_default(),
            endpoint_url: format!("{} {}", c.method, c.path),
            attempt: None,
        };
        let Some(shadow_status) = c.shadow_status else {
            out.skip("api: shadow answer dropped or failed");
            continue;
        };
        let legacy_primary = c.primary_sender != Some(Sender::Engine);
        let (ls, es) = if legacy_primary {
            (c.primary_status, Some(shadow_status))
        } else {
            (Some(shadow_status), c.primary_status)
        };
        let empty = Vec::new();
        let (pb, sb) = (
            c.primary_body.as_ref().unwrap_or(&empty),
            c.shadow_body.as_ref().unwrap_or(&empty),
        );
        let (lb, eb) = if legacy_primary { (pb, sb) } else { (sb, pb) };
        let ev = |s: Option<u16>, b: &[u8]| json!({"status": s, "body": body_text(b)});
        if ls != es {
            push(
                out,
                Category::ApiResponse,
                Severity::Critical,
                key,
                "api:status",
                format!(
                    "{} {}: the legacy answered {} and the engine {}",
                    c.method,
                    c.path,
                    ls.map(|s| s.to_string()).unwrap_or("nothing".into()),
                    es.map(|s| s.to_string()).unwrap_or("nothing".into())
                ),
                "api.status",
                (ev(ls, lb), ev(es, eb)),
                None,
                Some(c.at),
            );
            continue;
        }
        if lb == eb {
            continue;
        }
        let (Ok(lj), Ok(ej)) = (jcs::parse(lb), jcs::parse(eb)) else {
            push(
                out,
                Category::ApiResponse,
                Severity::Major,
                key,
                "api:body",
                format!("{} {}: response bodies differ", c.method, c.path),
                "api.body",
                (ev(ls, lb), ev(es, eb)),
                Some(unified(&body_text(lb), &body_text(eb), "legacy", "engine")),
                Some(c.at),
            );
            continue;
        };
        let mut paths = Vec::new();
        json_differences(&lj, &ej, String::new(), &mut paths);
        let mut real = Vec::new();
        for p in paths {
            if rules.api_ignore.iter().any(|pat| pointer_matches(pat, &p)) {
                out.suppress(
                    "api.ignore",
                    Category::ApiResponse,
                    &format!("api:{p}"),
                    &key,
                );
            } else {
                real.push(p);
            }
        }
        if !real.is_empty() {
            push(
                out,
                Category::ApiResponse,
                Severity::Major,
                key,
                format!("api:{}", real[0]),
                format!(
                    "{} {}: response bodies differ at {}",
                    c.method,
                    c.path,
                    real.join(", ")
                ),
                "api.body",
                (ev(ls, lb), ev(es, eb)),
                Some(unified(
                    &jcs::pretty(&lj),
                    &jcs::pretty(&ej),
                    "legacy",
                    "engine",
                )),
                Some(c.at),
            );
        }
    }
}

fn key_text(k: &Json) -> &str {
    match k {
        Json::Str { text, .. } => text,
        _ => "",
    }
}

/// JSON pointers where two documents differ in meaning.
fn json_differences(a: &Json, b: &Json, at: String, out: &mut Vec<String>) {
    match (a, b) {
        (Json::Obj(x), Json::Obj(y)) => {
            let xm: HashMap<&str, &Json> = x.iter().map(|(k, v)| (key_text(k), v)).collect();
            let ym: HashMap<&str, &Json> = y.iter().map(|(k, v)| (key_text(k), v)).collect();
            let keys: BTreeSet<&str> = xm.keys().chain(ym.keys()).copied().collect();
            for k in keys {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (xm.get(k), ym.get(k)) {
                    (Some(u), Some(v)) => json_differences(u, v, p, out),
                    _ => out.push(p),
                }
            }
        }
        (Json::Arr(x), Json::Arr(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{at}/{i}");
                match (x.get(i), y.get(i)) {
                    (Some(u), Some(v)) => json_differences(u, v, p, out),
                    _ => out.push(p),
                }
            }
        }
        _ => {
            if jcs::serialize(a, Normalize::ALL).ok() != jcs::serialize(b, Normalize::ALL).ok() {
                out.push(if at.is_empty() { "/".into() } else { at });
            }
        }
    }
}

/// Whether a JSON pointer matches a pattern where `*` stands for one segment.
pub fn pointer_matches(pattern: &str, pointer: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let q: Vec<&str> = pointer.split('/').collect();
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| *a == "*" || a == b)
}

/// Diffy's learned noise: a divergence whose field also differs between two
/// legacy runs is suppressed unless its rate is clearly larger than the
/// noise rate (by `learned_min_ratio` and by `learned_min_abs`).
pub fn apply_learned_noise(primary: &mut DiffResult, noise: &DiffResult, rules: &Rules) {
    let rate = |r: &DiffResult, cat: Category, count: u64| {
        let denom = if cat.per_pair() {
            r.attempt_pairs
        } else {
            r.histories
        };
        if denom == 0 {
            0.0
        } else {
            count as f64 / denom as f64
        }
    };
    let count = |r: &DiffResult| {
        let mut m: HashMap<(Category, String), u64> = HashMap::new();
        for d in &r.divergences {
            *m.entry((d.category, d.field.clone())).or_default() += 1;
        }
        m
    };
    let noise_counts = count(noise);
    let primary_counts = count(primary);
    let divergences = std::mem::take(&mut primary.divergences);
    for d in divergences {
        let k = (d.category, d.field.clone());
        let n = noise_counts.get(&k).copied().unwrap_or(0);
        let rn = rate(noise, d.category, n);
        let rc = rate(primary, d.category, primary_counts[&k]);
        let clearly_larger = rc >= rn * rules.learned_min_ratio && rc - rn >= rules.learned_min_abs;
        if n > 0 && !clearly_larger {
            primary.suppress("learned", d.category, &d.field, &d.key);
        } else {
            primary.divergences.push(d);
        }
    }
}
