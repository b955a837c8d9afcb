//! The scenario runner: start everything, drive, settle, check, report.
//!
//! A run goes through fixed steps: the receiver simulator (one listener per
//! sender), the optional proxy stage, both senders, endpoint upserts, the
//! traffic (with faults on their timers), settling (poll both APIs until
//! every delivery is terminal or the settle timeout passes), a snapshot of
//! both senders' deliveries, the checks, the optional gate, the verdict
//! against the scenario's expectations, and the report in
//! `reports/SCENARIO/TIMESTAMP/`.
//!
//! The stage boundary is [`Stages`]: a [`ProxyStage`] (the tee proxy puts
//! itself between the senders and the receiver), any number of [`Check`]s
//! (the comparator becomes one), and a [`GateStage`]. Until those exist,
//! [`Stages::builtin`] runs the runner's own checks, which compare what can
//! be compared honestly without them: final delivery states, attempt
//! counts and each attempt's outcome class per (event, endpoint), read
//! through both senders' APIs; both senders' answers to each event post;
//! the first-attempt body bytes the receiver recorded; and whether each
//! sender waited out a `Retry-After`, from the receiver's arrival times. Categories no check evaluates are reported as
//! "not evaluated", never as passed.

use crate::driver::{self, DriveResult, Plan, SenderApi};
use crate::receiver::{Fleet, Receiver, Record};
use crate::senders::{self, SenderProcess, Toolbox};
use crate::spec::{Budget, Category, Scenario, SenderSpec, Side};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Why a run could not finish (as opposed to finishing with a failed verdict).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("receiver simulator: {0}")]
    Receiver(#[source] std::io::Error),
    #[error(transparent)]
    Sender(#[from] senders::SenderError),
    #[error(transparent)]
    Driver(#[from] driver::DriverError),
    #[error("stage {stage}: {message}")]
    Stage { stage: String, message: String },
    #[error("writing the report in {dir}: {source}")]
    Report {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted; every process the run started has been stopped")]
    Cancelled,
}

// ------------------------------------------------------------- the stages

/// A proxy placed between the senders and the receiver.
pub trait ProxyStage: Send {
    fn name(&self) -> &str;
    /// Starts in front of the receiver, whose per-sender base URLs are
    /// given; returns, per sender, the egress (forward proxy) URL that
    /// sender must send its webhooks through.
    fn start<'a>(
        &'a mut self,
        receiver: &'a BTreeMap<Side, String>,
        work: &'a Path,
    ) -> BoxFuture<'a, Result<BTreeMap<Side, String>, RunError>>;
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

/// Everything a check may look at once deliveries have settled.
pub struct Evidence<'a> {
    pub scenario: &'a Scenario,
    pub plan: &'a Plan,
    pub legacy: &'a Snapshot,
    pub engine: &'a Snapshot,
    pub posts: &'a DriveResult,
    pub records: &'a [Record],
    /// Where the senders' databases and logs are (`legacy.db`, `engine.db`).
    pub work: &'a Path,
}

/// A comparison that finds divergences.
pub trait Check: Send + Sync {
    fn name(&self) -> &str;
    /// The categories it evaluates. When several checks evaluate one
    /// category their divergences add up (so a comparator replaces the
    /// built-in checks rather than joining them).
    fn categories(&self) -> Vec<Category>;
    /// Asynchronous, because a comparator reads databases.
    fn check<'a>(&'a self, ev: &'a Evidence<'a>) -> BoxFuture<'a, Result<CheckReport, RunError>>;
}

/// A check that needs no I/O: implement this, and `Check` comes with it.
pub trait SyncCheck: Send + Sync {
    fn name(&self) -> &str;
    fn categories(&self) -> Vec<Category>;
    fn compare(&self, ev: &Evidence<'_>) -> Result<CheckReport, RunError>;
}

impl<T: SyncCheck> Check for T {
    fn name(&self) -> &str {
        SyncCheck::name(self)
    }
    fn categories(&self) -> Vec<Category> {
        SyncCheck::categories(self)
    }
    fn check<'a>(&'a self, ev: &'a Evidence<'a>) -> BoxFuture<'a, Result<CheckReport, RunError>> {
        boxed(std::future::ready(self.compare(ev)))
    }
}

/// A gate that reads the checks' results and decides about the ramp
/// (asynchronous, because applying a stage talks to the proxy).
pub trait GateStage: Send + Sync {
    fn name(&self) -> &str;
    fn evaluate<'a>(
        &'a self,
        scenario: &'a Scenario,
        checks: &'a [CheckReport],
        work: &'a Path,
    ) -> BoxFuture<'a, Result<GateReport, RunError>>;
}

/// What a gate decided.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub gate: String,
    pub decision: String,
    pub reasons: Vec<String>,
    /// demo: every ramp step the gate decided, one line each (stages.rs).
    pub steps: Vec<String>,
}

/// The pluggable part of a run.
pub struct Stages {
    pub proxy: Option<Box<dyn ProxyStage>>,
    pub checks: Vec<Box<dyn Check>>,
    pub gate: Option<Box<dyn GateStage>>,
}

impl Stages {
    /// No proxy, no gate, the runner's own checks.
    pub fn builtin() -> Stages {
        Stages {
            proxy: None,
            checks: vec![
                Box::new(StateCheck),
                Box::new(ApiCheck),
                Box::new(FirstBodyCheck),
                Box::new(RetryAfterCheck),
                Box::new(OutcomeClassCheck),
            ],
            gate: None,
        }
    }
}

/// One divergence found by a check.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    pub category: Category,
    /// What was compared, e.g. `evt_000003 → ep_4`.
    pub key: String,
    pub legacy: String,
    pub engine: String,
    pub detail: String,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub check: String,
    pub categories: Vec<Category>,
    /// Items compared (the denominator of percentage budgets).
    pub compared: u64,
    pub divergences: Vec<Divergence>,
    /// What exactly was compared, for the report.
    pub description: String,
}

// -------------------------------------------------------------- snapshots

/// One delivery as a sender's API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryStatus {
    /// Canonical state: pending, in_flight, retry_scheduled, succeeded,
    /// failed or cancelled.
    pub state: String,
    /// The state as the sender names it.
    pub raw_state: String,
    /// Attempts the sender recorded.
    pub attempts: u32,
    /// Each attempt's outcome, in the sender's words.
    pub outcomes: Vec<String>,
    /// Each attempt's outcome class, in words both senders share (see
    /// [`outcome_class`]).
    pub classes: Vec<String>,
}

impl DeliveryStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// (event id, endpoint id) → delivery.
pub type Snapshot = BTreeMap<(String, String), DeliveryStatus>;

/// Maps one attempt's outcome, as either sender names it (the legacy's
/// `ok`, `http_error`, `timeout`, `network_error`, `body_error`; the
/// engine's outcome classes), with its HTTP status, onto one shared set:
/// delivered, server_error, rate_limited, client_error, redirect, timeout,
/// network, body_read, or the name itself when neither knows it.
pub fn outcome_class(outcome: &str, status: Option<u64>) -> String {
    match (outcome, status) {
        ("ok" | "delivered", _) => "delivered",
        ("http_error", Some(429)) => "rate_limited",
        ("http_error", Some(s)) if s >= 500 => "server_error",
        ("http_error", Some(s)) if (300..400).contains(&s) => "redirect",
        ("http_error", Some(s)) if (400..500).contains(&s) => "client_error",
        ("network_error" | "connect_error" | "reset", _) => "network",
        ("body_error" | "body_read", _) => "body_read",
        (other, _) => other,
    }
    .to_string()
}

/// Maps each sender's state names onto the engine's (the canonical ones).
pub fn canonical_state(raw: &str) -> &str {
    match raw {
        "success" => "succeeded",
        "retrying" => "retry_scheduled",
        "sending" => "in_flight",
        other => other,
    }
}

fn parse_deliveries(v: &serde_json::Value) -> Vec<(String, DeliveryStatus)> {
    let Some(data) = v["data"].as_array() else {
        return Vec::new();
    };
    data.iter()
        .map(|d| {
            let raw = d["state"].as_str().unwrap_or("unknown").to_string();
            let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
            (
                d["endpoint_id"].as_str().unwrap_or_default().to_string(),
                DeliveryStatus {
                    state: canonical_state(&raw).to_string(),
                    raw_state: raw,
                    attempts: attempts.len() as u32,
                    outcomes: attempts
                        .iter()
                        .map(|a| a["outcome"].as_str().unwrap_or_default().to_string())
                        .collect(),
                    classes: attempts
                        .iter()
                        .map(|a| {
                            // The legacy calls the status `status_code`; the
                            // engine `response_status`.
                            let status = a["status_code"]
                                .as_u64()
                                .or_else(|| a["response_status"].as_u64());
                            outcome_class(a["outcome"].as_str().unwrap_or_default(), status)
                        })
                        .collect(),
                },
            )
        })
        .collect()
}

/// Polls both senders until every planned delivery is terminal on both, or
/// `timeout` passes. Returns the snapshots and whether all settled.
async fn settle(
    apis: [&SenderApi; 2],
    plan: &Plan,
    posts: &DriveResult,
    timeout: Duration,
) -> ([Snapshot; 2], bool) {
    // Each sender said, when it accepted an event, how many deliveries it
    // created; that is what must become terminal (a sender may create
    // fewer than planned, e.g. for an endpoint it disabled).
    let expected: Vec<[usize; 2]> = plan
        .events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            let p = posts.posts.get(i);
            let n = |r: Option<&driver::PostResult>| r.map_or(ev.endpoints.len(), |r| r.deliveries);
            [
                n(p.and_then(|p| p.1.as_ref())),
                n(p.and_then(|p| p.2.as_ref())),
            ]
        })
        .collect();
    let started = Instant::now();
    let mut snaps: [Snapshot; 2] = [Snapshot::new(), Snapshot::new()];
    let mut open: [BTreeSet<usize>; 2] = [
        (0..plan.events.len()).collect(),
        (0..plan.events.len()).collect(),
    ];
    loop {
        for (side, api) in apis.iter().enumerate() {
            let todo: Vec<usize> = open[side].iter().copied().collect();
            let results: Vec<(usize, Option<serde_json::Value>)> =
                futures::stream::iter(todo.into_iter().map(|i| {
                    let api = (*api).clone();
                    let id = plan.events[i].id.clone();
                    async move { (i, api.event_deliveries(&id).await.ok()) }
                }))
                .buffer_unordered(16)
                .collect()
                .await;
            for (i, v) in results {
                let Some(v) = v else { continue };
                let ev = &plan.events[i];
                let ds = parse_deliveries(&v);
                let done = ds.len() >= expected[i][side] && ds.iter().all(|(_, d)| d.is_terminal());
                for (ep, d) in ds {
                    snaps[side].insert((ev.id.clone(), ep), d);
                }
                if done {
                    open[side].remove(&i);
                }
            }
        }
        if open.iter().all(BTreeSet::is_empty) {
            return (snaps, true);
        }
        if started.elapsed() >= timeout {
            return (snaps, false);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---------------------------------------------------------- built-in checks

fn key(event: &str, endpoint: &str) -> String {
    format!("{event} → {endpoint}")
}

/// Final delivery states and attempt counts per (event, endpoint), read
/// through both senders' APIs.
pub struct StateCheck;

impl SyncCheck for StateCheck {
    fn name(&self) -> &str {
        "builtin-state"
    }
    fn categories(&self) -> Vec<Category> {
        vec![
            Category::StateTransition,
            Category::RetryDecision,
            Category::Missing,
            Category::Extra,
        ]
    }
    fn compare(&self, ev: &Evidence<'_>) -> Result<CheckReport, RunError> {
        let mut out = Vec::new();
        let keys: BTreeSet<&(String, String)> = ev.legacy.keys().chain(ev.engine.keys()).collect();
        for k in &keys {
            let name = key(&k.0, &k.1);
            match (ev.legacy.get(*k), ev.engine.get(*k)) {
                (Some(l), Some(e)) => {
                    if l.state != e.state {
                        out.push(Divergence {
                            category: Category::StateTransition,
                            key: name.clone(),
                            legacy: format!("{} ({})", l.state, l.raw_state),
                            engine: e.state.clone(),
                            detail: "final delivery states differ".into(),
                        });
                    }
                    if l.attempts != e.attempts {
                        out.push(Divergence {
                            category: Category::RetryDecision,
                            key: name,
                            legacy: format!("{} attempts: {}", l.attempts, l.outcomes.join(", ")),
                            engine: format!("{} attempts: {}", e.attempts, e.outcomes.join(", ")),
                            detail: "attempt counts differ".into(),
                        });
                    }
                }
                (Some(l), None) => out.push(Divergence {
                    category: Category::Missing,
                    key: name,
                    legacy: l.state.clone(),
                    engine: "no delivery".into(),
                    detail: "the engine has no delivery the legacy has".into(),
                }),
                (None, Some(e)) => out.push(Divergence {
                    category: Category::Extra,
                    key: name,
                    legacy: "no delivery".into(),
                    engine: e.state.clone(),
                    detail: "the engine has a delivery the legacy does not".into(),
                }),
                (None, None) => {}
            }
        }
        Ok(CheckReport {
            check: SyncCheck::name(self).into(),
            categories: SyncCheck::categories(self),
            compared: keys.len() as u64,
            divergences: out,
            description: "final delivery state and number of recorded attempts per (event, \
                          endpoint), read through both senders' APIs after settling"
                .into(),
        })
    }
}

/// Both senders' answers to each event post: status and delivery count.
pub struct ApiCheck;

impl SyncCheck for ApiCheck {
    fn name(&self) -> &str {
        "builtin-api"
    }
    fn categories(&self) -> Vec<Category> {
        vec![Category::ApiResponse]
    }
    fn compare(&self, ev: &Evidence<'_>) -> Result<CheckReport, RunError> {
        let mut out = Vec::new();
        for (id, l, e) in &ev.posts.posts {
            let (Some(l), Some(e)) = (l, e) else { continue };
            if l.status != e.status || l.deliveries != e.deliveries {
                out.push(Divergence {
                    category: Category::ApiResponse,
                    key: format!("POST /v1/events {id}"),
                    legacy: format!("HTTP {}, {} deliveries", l.status, l.deliveries),
                    engine: format!("HTTP {}, {} deliveries", e.status, e.deliveries),
                    detail: "the senders answered the same event differently".into(),
                });
            }
        }
        Ok(CheckReport {
            check: SyncCheck::name(self).into(),
            categories: SyncCheck::categories(self),
            compared: ev.posts.posts.len() as u64,
            divergences: out,
            description: "status code and number of deliveries in each sender's answer to \
                          POST /v1/events"
                .into(),
        })
    }
}

/// The body bytes of each sender's first attempt per (event, endpoint), as
/// the receiver simulator recorded them.
pub struct FirstBodyCheck;

impl SyncCheck for FirstBodyCheck {
    fn name(&self) -> &str {
        "builtin-first-body"
    }
    fn categories(&self) -> Vec<Category> {
        vec![Category::Payload]
    }
    fn compare(&self, ev: &Evidence<'_>) -> Result<CheckReport, RunError> {
        let mut first: BTreeMap<(&str, &str, u32), &Record> = BTreeMap::new();
        for r in ev.records {
            if let (Some(id), Some(n), 1, false) = (&r.event_id, r.endpoint, r.attempt, r.hop) {
                first.insert((r.sender.as_str(), id.as_str(), n), r);
            }
        }
        let mut out = Vec::new();
        let mut compared = 0;
        for ((sender, id, n), l) in &first {
            if *sender != "legacy" {
                continue;
            }
            let Some(e) = first.get(&("engine", id, *n)) else {
                continue;
            };
            compared += 1;
            if l.body != e.body {
                out.push(Divergence {
                    category: Category::Payload,
                    key: key(id, &driver::endpoint_id(*n)),
                    legacy: String::from_utf8_lossy(&l.body).into_owned(),
                    engine: String::from_utf8_lossy(&e.body).into_owned(),
                    detail: "first-attempt body bytes differ".into(),
                });
            }
        }
        Ok(CheckReport {
            check: SyncCheck::name(self).into(),
            categories: SyncCheck::categories(self),
            compared,
            divergences: out,
            description: "raw body bytes of each sender's first attempt per (event, endpoint), \
                          as the receiver simulator received them"
                .into(),
        })
    }
}

/// Whether each sender waited out a `Retry-After` before its next attempt,
/// from the arrival times the receiver simulator recorded.
pub struct RetryAfterCheck;

/// Arrival-time slack: the receiver stamps arrivals, not departures.
const RETRY_AFTER_SLACK_MS: u64 = 50;

impl SyncCheck for RetryAfterCheck {
    fn name(&self) -> &str {
        "builtin-retry-after"
    }
    fn categories(&self) -> Vec<Category> {
        vec![Category::RetryDecision]
    }
    fn compare(&self, ev: &Evidence<'_>) -> Result<CheckReport, RunError> {
        // (sender, event, endpoint, attempt) → record.
        let mut by: BTreeMap<(&str, &str, u32, u32), &Record> = BTreeMap::new();
        for r in ev.records {
            if let (Some(id), Some(n), false) = (&r.event_id, r.endpoint, r.hop) {
                if r.attempt > 0 {
                    by.insert((r.sender.as_str(), id.as_str(), n, r.attempt), r);
                }
            }
        }
        // Per sender, whether the retry after a Retry-After waited it out.
        let waited = |sender: &str, id: &str, n: u32, a: u32| -> Option<(bool, u64, u32)> {
            let this = by.get(&(sender, id, n, a))?;
            let secs = this.retry_after_s?;
            let next = by.get(&(sender, id, n, a + 1))?;
            let gap = next.at_ms.saturating_sub(this.at_ms);
            Some((
                gap + RETRY_AFTER_SLACK_MS >= u64::from(secs) * 1000,
                gap,
                secs,
            ))
        };
        let mut out = Vec::new();
        let mut compared = 0;
        for (sender, id, n, a) in by.keys() {
            if *sender != "legacy" {
                continue;
            }
            let (Some(l), Some(e)) = (waited("legacy", id, *n, *a), waited("engine", id, *n, *a))
            else {
                continue;
            };
            compared += 1;
            if l.0 != e.0 {
                let say = |(ok, gap, secs): (bool, u64, u32)| {
                    format!(
                        "retried {gap} ms after a 429 with Retry-After: {secs} ({})",
                        if ok { "waited it out" } else { "ignored it" }
                    )
                };
                out.push(Divergence {
                    category: Category::RetryDecision,
                    key: format!("{} attempt {a}", key(id, &driver::endpoint_id(*n))),
                    legacy: say(l),
                    engine: say(e),
                    detail: "one sender honoured Retry-After and the other did not".into(),
                });
            }
        }
        Ok(CheckReport {
            check: SyncCheck::name(self).into(),
            categories: SyncCheck::categories(self),
            compared,
            divergences: out,
            description: "after an answer with Retry-After, whether each sender's next attempt arrived at the receiver only once it had passed"
                .into(),
        })
    }
}

/// The outcome class each sender recorded for the same attempt of the
/// same delivery (both met the same receiver behaviour at attempt n).
pub struct OutcomeClassCheck;

impl SyncCheck for OutcomeClassCheck {
    fn name(&self) -> &str {
        "builtin-outcome-class"
    }
    fn categories(&self) -> Vec<Category> {
        vec![Category::TimeoutClassification]
    }
    fn compare(&self, ev: &Evidence<'_>) -> Result<CheckReport, RunError> {
        let mut out = Vec::new();
        let mut compared = 0;
        for (k, l) in ev.legacy {
            let Some(e) = ev.engine.get(k) else { continue };
            if l.classes.is_empty() || e.classes.is_empty() {
                continue;
            }
            compared += 1;
            // One divergence per delivery: the first attempt that differs.
            if let Some(i) =
                (0..l.classes.len().min(e.classes.len())).find(|&i| l.classes[i] != e.classes[i])
            {
                out.push(Divergence {
                    category: Category::TimeoutClassification,
                    key: format!("{} attempt {}", key(&k.0, &k.1), i + 1),
                    legacy: format!("{} ({})", l.classes[i], l.outcomes[i]),
                    engine: format!("{} ({})", e.classes[i], e.outcomes[i]),
                    detail: "the senders classified the same receiver behaviour differently".into(),
                });
            }
        }
        Ok(CheckReport {
            check: SyncCheck::name(self).into(),
            categories: SyncCheck::categories(self),
            compared,
            divergences: out,
            description: "the outcome class (delivered, timeout, body_read, network, 5xx, …) \
                          each sender's API records for the same attempt number of the same \
                          delivery"
                .into(),
        })
    }
}

// ------------------------------------------------------------------ verdict

/// One expectation and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectationResult {
    pub category: Category,
    /// Whether any check evaluated the category in this run.
    pub evaluated: bool,
    pub found: u64,
    pub compared: u64,
    /// None: unlimited.
    pub budget: Option<Budget>,
    pub meant_to_expose: bool,
    pub ok: bool,
    pub message: String,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub expectations: Vec<ExpectationResult>,
    /// Reasons the run fails that are not one category's budget.
    pub failures: Vec<String>,
}

/// Judges the checks' findings against the scenario's expectations.
pub fn judge(scenario: &Scenario, checks: &[CheckReport], settled: bool) -> Verdict {
    // Per category: divergences summed over the checks that cover it; the
    // largest of their denominators.
    let mut decided: BTreeMap<Category, (u64, u64)> = BTreeMap::new();
    for c in checks {
        for cat in &c.categories {
            let found = c.divergences.iter().filter(|d| d.category == *cat).count() as u64;
            let e = decided.entry(*cat).or_insert((0, 0));
            e.0 += found;
            e.1 = e.1.max(c.compared);
        }
    }
    let exp = &scenario.expectations;
    let mut expectations = Vec::new();
    for cat in Category::ALL {
        let budget = exp.budget_for(cat);
        let meant = exp.expose.contains(&cat);
        let Some(&(found, compared)) = decided.get(&cat) else {
            if meant || exp.budget.contains_key(&cat) {
                expectations.push(ExpectationResult {
                    category: cat,
                    evaluated: false,
                    found: 0,
                    compared: 0,
                    budget,
                    meant_to_expose: meant,
                    ok: true,
                    message: "not evaluated: no check in this run covers this category \
                              (it needs the comparator)"
                        .into(),
                });
            }
            continue;
        };
        let within = budget.is_none_or(|b| b.allows(found, compared));
        let exposed = !meant || found > 0;
        let message = match (within, exposed) {
            (true, true) if meant => format!("exposed as intended: {found} found"),
            (true, true) => format!("{found} found, within budget"),
            (false, _) => format!(
                "{found} of {compared} found, over the budget {}",
                budget.map(|b| b.to_string()).unwrap_or_default()
            ),
            (true, false) => "meant to be exposed, but none was found".into(),
        };
        expectations.push(ExpectationResult {
            category: cat,
            evaluated: true,
            found,
            compared,
            budget,
            meant_to_expose: meant,
            ok: within && exposed,
            message,
        });
    }
    let mut failures = Vec::new();
    if !settled {
        failures.push(format!(
            "deliveries did not all become terminal within senders.settle_timeout ({} ms); \
             the comparison is of unfinished work",
            scenario.senders.settle_timeout.as_millis()
        ));
    }
    let passed = failures.is_empty() && expectations.iter().all(|e| e.ok);
    Verdict {
        passed,
        expectations,
        failures,
    }
}

// ---------------------------------------------------------------- the run

/// How to run.
pub struct RunOptions {
    pub tools: Toolbox,
    /// Reports go to `reports_dir/SCENARIO/TIMESTAMP/`.
    pub reports_dir: PathBuf,
    pub progress: bool,
    pub stages: Stages,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub verdict: Verdict,
    pub report_dir: PathBuf,
    pub summary: Summary,
}

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema: u32,
    pub scenario: String,
    pub description: String,
    pub short: bool,
    pub seed: u64,
    pub source: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub senders: BTreeMap<Side, SenderSummary>,
    pub traffic: TrafficSummary,
    pub settled: bool,
    pub faults: Vec<FaultLog>,
    pub ramp: String,
    pub checks: Vec<CheckSummary>,
    pub gate: Option<GateReport>,
    pub receiver: crate::receiver::Counters,
    pub verdict: Verdict,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SenderSummary {
    pub kind: String,
    pub detail: String,
    pub base: String,
    pub deliveries: usize,
    pub by_state: BTreeMap<String, u64>,
    /// Attempts recorded by the sender, through its API.
    pub attempts: u64,
    /// Attempts the receiver simulator saw from this sender (more than
    /// `attempts` when a crash cut an attempt off before it was recorded).
    pub receiver_attempts: u64,
    pub restarts: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrafficSummary {
    pub events: usize,
    pub endpoints: u32,
    pub expected_deliveries: usize,
    pub rate_per_s: f64,
    pub achieved_rate_per_s: f64,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    pub check: String,
    pub description: String,
    pub categories: Vec<Category>,
    pub compared: u64,
    pub found: usize,
    /// The first divergences of each category (all are counted above).
    pub examples: Vec<Divergence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultLog {
    pub sender: Side,
    pub killed_at_ms: u64,
    pub restarted_at_ms: Option<u64>,
    pub error: Option<String>,
}

/// Runs a scenario until it finishes or `cancel` resolves. On
/// cancellation every child process is killed (their handles drop) and
/// `RunError::Cancelled` is returned.
pub async fn run(
    scenario: &Scenario,
    opts: RunOptions,
    cancel: impl Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    tokio::select! {
        r = run_inner(scenario, opts) => r,
        _ = cancel => Err(RunError::Cancelled),
    }
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(time::macros::format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn run_inner(scenario: &Scenario, mut opts: RunOptions) -> Result<RunOutcome, RunError> {
    let started = Instant::now();
    let started_at = rfc3339_now();
    let mut dir = opts.reports_dir.join(&scenario.name).join(format!(
        "{}{}",
        timestamp(),
        if scenario.short { "-short" } else { "" }
    ));
    // Two runs in the same second get distinct folders.
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir.set_extension(n.to_string());
    }
    let report_err = |source| RunError::Report {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(report_err)?;

    // The receiver holds a hanging connection a little longer than any
    // sender waits, so the sender's timeout is what ends it.
    let fleet = Fleet::new(scenario.seed, &scenario.endpoints);
    let hold = scenario.senders.timeout * 3 + Duration::from_secs(5);
    // demo: with a proxy stage, both senders are told the same endpoint
    // URLs (on a third listener, "proxy"), because the proxy pairs their
    // attempts by (event id, endpoint URL, attempt); the receiver then
    // counts attempts per real request, whichever sender made it.
    let labels: &[&str] = if opts.stages.proxy.is_some() {
        &["legacy", "engine", "proxy"]
    } else {
        &["legacy", "engine"]
    };
    let receiver = Receiver::start_with(fleet, labels, hold)
        .await
        .map_err(RunError::Receiver)?;
    let mut receiver_urls = BTreeMap::new();
    for side in Side::BOTH {
        receiver_urls.insert(side, receiver.base_url(side.as_str()).unwrap_or_default());
    }

    let egress = match opts.stages.proxy.as_mut() {
        Some(p) => p.start(&receiver_urls, &dir).await?,
        None => BTreeMap::new(),
    };

    // Senders.
    let mut procs: BTreeMap<Side, Arc<Mutex<SenderProcess>>> = BTreeMap::new();
    let mut bases: BTreeMap<Side, String> = BTreeMap::new();
    for side in Side::BOTH {
        let spec = match side {
            Side::Legacy => &scenario.senders.legacy,
            Side::Engine => &scenario.senders.engine,
        };
        match senders::launch_for(side, &scenario.senders, &opts.tools, &dir)? {
            Some(mut launch) => {
                if let Some(url) = egress.get(&side) {
                    match spec {
                        SenderSpec::Legacy { .. } => {
                            launch.args.push(format!("--egress-proxy={url}"));
                        }
                        // demo: `hookshift engine serve --egress-proxy URL`.
                        SenderSpec::Engine { .. } => {
                            launch.args.push(format!("--egress-proxy={url}"));
                        }
                        // demo: a command names where its proxy goes.
                        SenderSpec::Command { command } if command.contains("{egress_proxy}") => {
                            for a in launch.args.iter_mut() {
                                *a = a.replace("{egress_proxy}", url);
                            }
                        }
                        _ => {
                            return Err(RunError::Stage {
                                stage: "proxy".into(),
                                message: format!(
                                    "the {side} sender has no way to use an egress proxy yet"
                                ),
                            })
                        }
                    }
                }
                eprintln!("  starting the {side} sender…");
                let p = SenderProcess::start(launch).await?;
                eprintln!(
                    "  {side} sender listening on {} (pid {})",
                    p.base,
                    p.pid().unwrap_or_default()
                );
                bases.insert(side, p.base.clone());
                procs.insert(side, Arc::new(Mutex::new(p)));
            }
            None => {
                if let SenderSpec::Url { url } = spec {
                    bases.insert(side, url.clone());
                }
            }
        }
    }
    let legacy = SenderApi::new(Side::Legacy, &bases[&Side::Legacy]);
    let engine = SenderApi::new(Side::Engine, &bases[&Side::Engine]);

    // Endpoints, on both senders, each pointing at its own listener.
    let plan = Plan::new(scenario);
    eprintln!(
        "  {} endpoints, {} events at {}/s to both senders",
        plan.endpoints.len(),
        plan.events.len(),
        scenario.traffic.rate_per_s
    );
    let shared_label = opts.stages.proxy.as_ref().map(|_| "proxy"); // demo
    for (api, side) in [(&legacy, Side::Legacy), (&engine, Side::Engine)] {
        for ep in &plan.endpoints {
            let url = receiver
                .endpoint_url(shared_label.unwrap_or(side.as_str()), ep.index)
                .unwrap_or_default();
            api.upsert_endpoint(ep, &url).await?;
        }
    }

    // Faults on their timers, from the start of the traffic.
    let traffic_start = Instant::now();
    let fault_log = Arc::new(Mutex::new(Vec::<FaultLog>::new()));
    let mut fault_tasks = AbortOnDrop(Vec::new());
    for f in &scenario.faults {
        let Some(p) = procs.get(&f.sender).cloned() else {
            continue;
        };
        let (f, log) = (f.clone(), fault_log.clone());
        fault_tasks.0.push(tokio::spawn(async move {
            tokio::time::sleep_until((traffic_start + f.at).into()).await;
            let mut entry = FaultLog {
                sender: f.sender,
                killed_at_ms: traffic_start.elapsed().as_millis() as u64,
                restarted_at_ms: None,
                error: None,
            };
            let mut p = p.lock().await;
            if let Err(e) = p.kill9().await {
                entry.error = Some(e.to_string());
            } else {
                tokio::time::sleep(f.restart_after).await;
                match p.restart().await {
                    Ok(()) => {
                        entry.restarted_at_ms = Some(traffic_start.elapsed().as_millis() as u64)
                    }
                    Err(e) => entry.error = Some(e.to_string()),
                }
            }
            log.lock().await.push(entry);
        }));
    }

    let posts = driver::drive(
        &legacy,
        &engine,
        &plan,
        scenario.traffic.rate_per_s,
        opts.progress,
    )
    .await?;
    for t in fault_tasks.0.iter_mut() {
        let _ = t.await;
    }

    eprintln!(
        "  waiting for deliveries to settle (at most {} s)…",
        scenario.senders.settle_timeout.as_secs()
    );
    let ([legacy_snap, engine_snap], settled) = settle(
        [&legacy, &engine],
        &plan,
        &posts,
        scenario.senders.settle_timeout,
    )
    .await;
    let records = receiver.records();
    let counters = receiver.counters();

    // Checks, each over the same evidence.
    let evidence = Evidence {
        scenario,
        plan: &plan,
        legacy: &legacy_snap,
        engine: &engine_snap,
        posts: &posts,
        records: &records,
        work: &dir,
    };
    let mut reports = Vec::new();
    for c in &opts.stages.checks {
        reports.push(c.check(&evidence).await?);
    }
    let gate = match &opts.stages.gate {
        Some(g) => Some(g.evaluate(scenario, &reports, &dir).await?),
        None => None,
    };
    let verdict = judge(scenario, &reports, settled);

    // Stop what we started before writing, so the databases are quiet.
    for p in procs.values() {
        p.lock().await.stop().await;
    }
    if let Some(p) = opts.stages.proxy.as_mut() {
        p.stop().await;
    }
    receiver.shutdown();

    let mut sender_summaries = BTreeMap::new();
    for (side, snap) in [(Side::Legacy, &legacy_snap), (Side::Engine, &engine_snap)] {
        let mut by_state = BTreeMap::new();
        for d in snap.values() {
            *by_state.entry(d.state.clone()).or_insert(0) += 1;
        }
        let spec = match side {
            Side::Legacy => &scenario.senders.legacy,
            Side::Engine => &scenario.senders.engine,
        };
        let (kind, detail) = describe_sender(spec);
        let restarts = match procs.get(&side) {
            Some(p) => p.lock().await.restarts,
            None => 0,
        };
        sender_summaries.insert(
            side,
            SenderSummary {
                kind,
                detail,
                base: bases[&side].clone(),
                deliveries: snap.len(),
                by_state,
                attempts: snap.values().map(|d| u64::from(d.attempts)).sum(),
                receiver_attempts: records
                    .iter()
                    .filter(|r| r.sender == side.as_str() && !r.hop && r.attempt > 0)
                    .count() as u64,
                restarts,
            },
        );
    }
    let mut faults = fault_log.lock().await.clone();
    faults.sort_by_key(|f| f.killed_at_ms);
    let summary = Summary {
        schema: 1,
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        short: scenario.short,
        seed: scenario.seed,
        source: scenario.source.display().to_string(),
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        senders: sender_summaries,
        traffic: TrafficSummary {
            events: plan.events.len(),
            endpoints: scenario.endpoints.count,
            expected_deliveries: plan.expected_deliveries(),
            rate_per_s: scenario.traffic.rate_per_s,
            achieved_rate_per_s: (posts.achieved_rate * 10.0).round() / 10.0,
            elapsed_ms: posts.elapsed_ms,
        },
        settled,
        faults,
        ramp: match &scenario.ramp {
            Some(r) if gate.is_some() => format!("stages {:?} evaluated by the gate", r.stages),
            Some(r) => format!(
                "stages {:?} planned, not applied: applying a ramp needs the tee proxy and the gate",
                r.stages
            ),
            None => "none".into(),
        },
        checks: reports
            .iter()
            .map(|r| CheckSummary {
                check: r.check.clone(),
                description: r.description.clone(),
                categories: r.categories.clone(),
                compared: r.compared,
                found: r.divergences.len(),
                examples: examples(&r.divergences, 10),
            })
            .collect(),
        gate,
        receiver: counters,
        verdict: verdict.clone(),
        note: if opts.stages.proxy.is_none() && opts.stages.gate.is_none() {
            "Checked by the runner's built-in comparison (final delivery states, attempt \
             counts and outcome classes through both senders' APIs, their answers to each \
             event post, the first-attempt body bytes the receiver simulator saw, and \
             Retry-After waits). This is not the comparator: \
             categories marked \"not evaluated\" were not checked. Both senders reached the \
             receiver simulator directly, each on its own listener."
                .into()
        } else {
            String::new()
        },
    };
    write_report(&dir, &summary, &records).map_err(report_err)?;
    Ok(RunOutcome {
        verdict,
        report_dir: dir,
        summary,
    })
}

/// Fault timers hold sender handles; aborting them on drop (an error or
/// Ctrl-C) lets those handles drop, which kills the children.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn describe_sender(spec: &SenderSpec) -> (String, String) {
    match spec {
        SenderSpec::Legacy { early_success, .. } => (
            "legacy".into(),
            format!("legacy Go fixture, --early-success={early_success}"),
        ),
        SenderSpec::Engine { profile, .. } => (
            "engine".into(),
            format!("hookshift engine, profile {profile}"),
        ),
        SenderSpec::Command { command } => ("command".into(), command.clone()),
        SenderSpec::Url { url } => ("url".into(), url.clone()),
    }
}

fn examples(ds: &[Divergence], per_category: usize) -> Vec<Divergence> {
    let mut seen: BTreeMap<Category, usize> = BTreeMap::new();
    ds.iter()
        .filter(|d| {
            let n = seen.entry(d.category).or_default();
            *n += 1;
            *n <= per_category
        })
        .map(|d| {
            let mut d = d.clone();
            d.legacy = clip(&d.legacy);
            d.engine = clip(&d.engine);
            d
        })
        .collect()
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 300 {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(300).collect();
        out.push('…');
        out
    }
}

fn write_report(dir: &Path, summary: &Summary, records: &[Record]) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("summary.json"), json + "\n")?;
    std::fs::write(dir.join("summary.md"), render_markdown(summary))?;
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
        lines.push('\n');
    }
    std::fs::write(dir.join("receiver.jsonl"), lines)?;
    Ok(())
}

/// `summary.md`: the verdict first, then what ran and what was compared.
pub fn render_markdown(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut m = String::new();
    let verdict = if s.verdict.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(
        m,
        "# Scenario `{}`{}: {verdict}\n",
        s.scenario,
        if s.short { " (short)" } else { "" }
    );
    if !s.description.is_empty() {
        let _ = writeln!(m, "{}\n", s.description);
    }
    if !s.note.is_empty() {
        let _ = writeln!(m, "> {}\n", s.note);
    }
    let _ = writeln!(m, "## Expectations\n");
    let _ = writeln!(
        m,
        "| category | found | compared | budget | meant to expose | result |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|");
    for e in &s.verdict.expectations {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} {} |",
            e.category,
            if e.evaluated {
                e.found.to_string()
            } else {
                "–".into()
            },
            if e.evaluated {
                e.compared.to_string()
            } else {
                "–".into()
            },
            e.budget
                .map(|b| b.to_string())
                .unwrap_or_else(|| "unlimited".into()),
            if e.meant_to_expose { "yes" } else { "" },
            if !e.evaluated {
                "not evaluated"
            } else if e.ok {
                "ok"
            } else {
                "FAIL"
            },
            e.message
        );
    }
    for f in &s.verdict.failures {
        let _ = writeln!(m, "\n**Failure:** {f}");
    }
    let _ = writeln!(m, "\n## What ran\n");
    let _ = writeln!(
        m,
        "- seed {}, {} endpoints, {} events ({} deliveries expected per sender) at {}/s (achieved {}/s, {} ms)",
        s.seed,
        s.traffic.endpoints,
        s.traffic.events,
        s.traffic.expected_deliveries,
        s.traffic.rate_per_s,
        s.traffic.achieved_rate_per_s,
        s.traffic.elapsed_ms
    );
    let _ = writeln!(
        m,
        "- settled: {}; whole run {} ms",
        s.settled, s.duration_ms
    );
    let _ = writeln!(m, "- ramp: {}", s.ramp);
    for f in &s.faults {
        let _ = writeln!(
            m,
            "- fault: kill -9 of the {} sender at {} ms, restarted at {}{}",
            f.sender,
            f.killed_at_ms,
            f.restarted_at_ms
                .map(|t| format!("{t} ms"))
                .unwrap_or_else(|| "never".into()),
            f.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        m,
        "\n| sender | what | deliveries | attempts (API) | attempts (receiver) | states | restarts |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|");
    for (side, x) in &s.senders {
        let states: Vec<String> = x.by_state.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            m,
            "| {side} | {} | {} | {} | {} | {} | {} |",
            x.detail,
            x.deliveries,
            x.attempts,
            x.receiver_attempts,
            states.join(", "),
            x.restarts
        );
    }
    let _ = writeln!(m, "\n## Checks\n");
    for c in &s.checks {
        let _ = writeln!(
            m,
            "- **{}** ({}): {} compared, {} divergences. {}",
            c.check,
            c.categories
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            c.compared,
            c.found,
            c.description
        );
    }
    let examples: Vec<&Divergence> = s.checks.iter().flat_map(|c| &c.examples).collect();
    if !examples.is_empty() {
        let _ = writeln!(m, "\n## Divergences (first of each category)\n");
        let _ = writeln!(m, "| category | key | legacy | engine |");
        let _ = writeln!(m, "|---|---|---|---|");
        for d in examples {
            let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                d.category,
                cell(&d.key),
                cell(&d.legacy),
                cell(&d.engine)
            );
        }
    }
    if let Some(g) = &s.gate {
        let _ = writeln!(
            m,
            "\n## Gate ({})\n\n{}: {}",
            g.gate,
            g.decision,
            g.reasons.join("; ")
        );
        // demo: the ramp steps the gate took (stages.rs).
        if !g.steps.is_empty() {
            let _ = writeln!(m, "\nRamp steps (details in ramp.md):\n");
            for st in &g.steps {
                let _ = writeln!(m, "- {st}");
            }
        }
    }
    let _ = writeln!(m, "\n## Receiver\n\n{} requests.\n", s.receiver.requests);
    for (sender, actions) in &s.receiver.by_sender_action {
        let list: Vec<String> = actions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(m, "- {sender}: {}", list.join(", "));
    }
    m
}

/// A boxed future, for stage implementations.
pub fn boxed<'a, T>(f: impl Future<Output = T> + Send + 'a) -> BoxFuture<'a, T> {
    f.boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(expectations: &str) -> Scenario {
        let text = format!(
            "name = \"t\"\n[endpoints]\ncount = 2\nmix = [{{ behaviour = \"ok\" }}]\n\
             [traffic]\nrate_per_s = 1\ncount = 1\n[expectations]\n{expectations}\n"
        );
        Scenario::parse(&text, Path::new("t.toml"), false).unwrap()
    }

    fn report(cats: &[Category], compared: u64, found: &[Category]) -> CheckReport {
        CheckReport {
            check: "x".into(),
            categories: cats.to_vec(),
            compared,
            divergences: found
                .iter()
                .map(|c| Divergence {
                    category: *c,
                    key: "k".into(),
                    legacy: "a".into(),
                    engine: "b".into(),
                    detail: String::new(),
                })
                .collect(),
            description: String::new(),
        }
    }

    fn result(v: &Verdict, c: Category) -> &ExpectationResult {
        v.expectations.iter().find(|e| e.category == c).unwrap()
    }

    use Category::*;

    #[test]
    fn an_unlisted_category_has_a_budget_of_zero() {
        let s = scenario("");
        let v = judge(&s, &[report(&[StateTransition], 10, &[])], true);
        assert!(v.passed);
        let v = judge(
            &s,
            &[report(&[StateTransition], 10, &[StateTransition])],
            true,
        );
        assert!(!v.passed);
        assert!(result(&v, StateTransition)
            .message
            .contains("over the budget"));
    }

    #[test]
    fn percentage_budgets_use_the_compared_count() {
        let s = scenario("budget = { retry_decision = \"10%\" }");
        let one = [RetryDecision];
        assert!(judge(&s, &[report(&one, 10, &one)], true).passed);
        assert!(!judge(&s, &[report(&one, 5, &one)], true).passed);
    }

    #[test]
    fn exposing_needs_at_least_one_and_is_otherwise_unlimited() {
        let s = scenario("expose = [\"payload\"]");
        let v = judge(&s, &[report(&[Payload], 3, &[])], true);
        assert!(!v.passed);
        assert!(result(&v, Payload).message.contains("none was found"));
        let v = judge(
            &s,
            &[report(&[Payload], 3, &[Payload, Payload, Payload])],
            true,
        );
        assert!(v.passed);
    }

    #[test]
    fn categories_no_check_covers_are_not_evaluated_rather_than_passed() {
        let s = scenario("expose = [\"signature\"]\nbudget = { header = 0 }");
        let v = judge(&s, &[report(&[StateTransition], 1, &[])], true);
        let sig = result(&v, Signature);
        assert!(!sig.evaluated && sig.message.contains("not evaluated"));
        assert!(!result(&v, Header).evaluated);
        // Categories neither covered nor mentioned are left out.
        assert!(v.expectations.iter().all(|e| e.category != Extra));
    }

    #[test]
    fn divergences_add_up_across_checks_and_unsettled_runs_fail() {
        let s = scenario("budget = { retry_decision = 1 }");
        let one = [RetryDecision];
        let v = judge(&s, &[report(&one, 4, &one), report(&one, 2, &one)], true);
        assert_eq!(result(&v, RetryDecision).found, 2);
        assert!(!v.passed);
        let v = judge(&s, &[report(&one, 4, &[])], false);
        assert!(!v.passed);
        assert!(v.failures[0].contains("settle"));
    }

    #[test]
    fn both_senders_outcomes_map_onto_one_set_of_classes() {
        for (outcome, status, class) in [
            ("ok", Some(200), "delivered"),
            ("delivered", Some(200), "delivered"),
            ("http_error", Some(503), "server_error"),
            ("server_error", Some(503), "server_error"),
            ("http_error", Some(429), "rate_limited"),
            ("http_error", Some(410), "client_error"),
            ("http_error", Some(301), "redirect"),
            ("network_error", None, "network"),
            ("reset", None, "network"),
            ("connect_error", None, "network"),
            ("body_error", Some(200), "body_read"),
            ("body_read", Some(200), "body_read"),
            ("timeout", None, "timeout"),
        ] {
            assert_eq!(outcome_class(outcome, status), class, "{outcome}");
        }
    }

    #[test]
    fn sender_states_map_onto_the_canonical_names() {
        for (raw, canonical) in [
            ("success", "succeeded"),
            ("retrying", "retry_scheduled"),
            ("sending", "in_flight"),
            ("failed", "failed"),
            ("pending", "pending"),
            ("succeeded", "succeeded"),
        ] {
            assert_eq!(canonical_state(raw), canonical);
        }
    }
}
