//! The scenario file format (TOML) and its validation.
//!
//! A file is deserialized into the `Raw*` structs (serde, unknown keys
//! refused), then validated into [`Scenario`], whose types say what each
//! behaviour needs. Every error names the file, the line and column, and
//! the dotted key at fault; see `locate.rs` for how spans are found. The
//! `[short]` block overrides a few keys so CI can run a scenario in seconds;
//! both forms are validated whichever one is asked for, and an error in a
//! value that came from `[short]` points at `[short]`.
//!
//! The format, key by key, is documented in `scenarios/catalog/README.md`.

use crate::locate::{self, Locator, Step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A scenario file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    /// The file is not valid TOML, has an unknown or mistyped key, or a
    /// value that makes no sense.
    #[error("{}", render_invalid(.file, *.line, *.column, .key, .message))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        /// Dotted key path, e.g. `endpoints.mix[1].probability`; empty when
        /// the error is not about one key (a TOML syntax error).
        key: String,
        message: String,
    },
}

fn render_invalid(file: &str, line: usize, column: usize, key: &str, message: &str) -> String {
    if key.is_empty() {
        format!("{file}:{line}:{column}: {message}")
    } else {
        format!("{file}:{line}:{column}: key `{key}`: {message}")
    }
}

/// The divergence categories, as the comparator names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Signature,
    Header,
    Payload,
    RetryDecision,
    TimeoutClassification,
    StateTransition,
    ApiResponse,
    Missing,
    Extra,
}

impl Category {
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

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ------------------------------------------------------------------ typed

/// A validated scenario, in its full or its short form.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    /// The file it came from.
    pub source: PathBuf,
    /// Whether the `[short]` overrides were applied.
    pub short: bool,
    pub endpoints: Endpoints,
    pub traffic: Traffic,
    pub senders: Senders,
    pub ramp: Option<Ramp>,
    pub faults: Vec<Fault>,
    pub expectations: Expectations,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    pub count: u32,
    pub mix: Vec<MixEntry>,
}

/// One kind of receiver in the fleet, and how many endpoints (by weight)
/// behave this way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixEntry {
    pub weight: u32,
    pub behaviour: Behaviour,
    /// Delay before the behaviour starts answering.
    pub latency: Latency,
    /// From this attempt number on, the endpoint answers 200 instead.
    pub recover_after: Option<u32>,
}

/// What a receiver does with one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Behaviour {
    /// 200 with a small JSON body.
    Ok,
    /// `status` (5xx) with probability `probability` per attempt, else 200.
    Flaky { probability: f64, status: u16 },
    /// 429 with `Retry-After: retry_after_s`.
    RateLimited { retry_after_s: u32 },
    /// A permanent 4xx such as 401, 404 or 410.
    ClientError { status: u16 },
    /// Reads the head, never answers; the sender's timeout ends it.
    Hang,
    /// Reads the whole request (the work is done) and never answers.
    ProcessThenTimeout,
    /// Reads the request, then resets the connection (RST).
    Reset,
    /// 301 or 307 to `/ep/{n}/moved`, which answers 200.
    Redirect { status: u16 },
    /// 200 with `Content-Length: declared_bytes`, `sent_bytes` of it, then silence.
    StalledBody {
        declared_bytes: u64,
        sent_bytes: u64,
    },
    /// 200 with a body of `bytes` bytes.
    HugeBody { bytes: u64 },
}

impl Behaviour {
    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Ok => "ok",
            Behaviour::Flaky { .. } => "flaky",
            Behaviour::RateLimited { .. } => "rate_limited",
            Behaviour::ClientError { .. } => "client_error",
            Behaviour::Hang => "hang",
            Behaviour::ProcessThenTimeout => "process_then_timeout",
            Behaviour::Reset => "reset",
            Behaviour::Redirect { .. } => "redirect",
            Behaviour::StalledBody { .. } => "stalled_body",
            Behaviour::HugeBody { .. } => "huge_body",
        }
    }
}

/// A uniform delay between `min` and `max`, except a `slow_fraction` of
/// requests that take `slow` instead (a tail).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    #[serde(with = "ms")]
    pub min: Duration,
    #[serde(with = "ms")]
    pub max: Duration,
    pub slow_fraction: f64,
    #[serde(with = "ms")]
    pub slow: Duration,
}

impl Latency {
    pub const ZERO: Latency = Latency {
        min: Duration::ZERO,
        max: Duration::ZERO,
        slow_fraction: 0.0,
        slow: Duration::ZERO,
    };
}

#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    pub rate_per_s: f64,
    pub limit: Limit,
    /// Endpoints each event is delivered to.
    pub fan_out: u32,
    pub payload: PayloadSpec,
}

/// When the traffic stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Count(u64),
    #[serde(with = "ms")]
    Duration(Duration),
}

impl Traffic {
    /// How many events the driver will send.
    pub fn event_count(&self) -> u64 {
        match self.limit {
            Limit::Count(n) => n,
            Limit::Duration(d) => (d.as_secs_f64() * self.rate_per_s).ceil() as u64,
        }
    }
}

/// What goes into generated payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayloadSpec {
    pub html: bool,
    pub unicode: bool,
    pub big_numbers: bool,
    pub floats: bool,
    /// Extra filler text, in bytes.
    pub pad_bytes: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Senders {
    /// Per-attempt timeout, the same for both senders.
    #[serde(with = "ms")]
    pub timeout: Duration,
    /// Delays before each retry, the same for both senders.
    #[serde(with = "ms_list")]
    pub retry_schedule: Vec<Duration>,
    /// How long to wait for every delivery to be terminal on both sides.
    #[serde(with = "ms")]
    pub settle_timeout: Duration,
    pub legacy: SenderSpec,
    pub engine: SenderSpec,
}

/// How a sender is started (or reached).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SenderSpec {
    /// The legacy Go fixture, built from fixtures/legacy-go.
    Legacy {
        early_success: bool,
        args: Vec<String>,
    },
    /// `hookshift engine serve` with a profile.
    Engine {
        profile: String,
        #[serde(with = "ms")]
        lease: Duration,
        args: Vec<String>,
    },
    /// Any command (run with `sh -c`) that serves the platform API and
    /// prints a line containing `listening on http://HOST:PORT`. `{listen}`
    /// and `{database_url}` in it are replaced.
    Command { command: String },
    /// An already running sender's API base URL (cannot be faulted).
    Url { url: String },
}

/// Which of the two senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Legacy,
    Engine,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Legacy, Side::Engine];

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Legacy => "legacy",
            Side::Engine => "engine",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ramp {
    /// Percent of endpoints on the engine, in order.
    pub stages: Vec<f64>,
    /// Time spent at each stage.
    #[serde(with = "ms")]
    pub soak: Duration,
}

/// A fault injected at a time after the traffic starts.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    #[serde(with = "ms")]
    pub at: Duration,
    pub sender: Side,
    /// kill -9, then start again after `restart_after` with the same port
    /// and database.
    #[serde(with = "ms")]
    pub restart_after: Duration,
}

/// What must hold at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Expectations {
    /// Most divergences allowed per category. Categories not listed have a
    /// budget of 0, except those in `expose`, which are unlimited unless
    /// listed.
    pub budget: BTreeMap<Category, Budget>,
    /// Categories the scenario is meant to expose: at least one divergence
    /// of each must be found.
    pub expose: Vec<Category>,
    pub note: String,
}

impl Expectations {
    /// The budget that applies to `c`, or None for unlimited.
    pub fn budget_for(&self, c: Category) -> Option<Budget> {
        match self.budget.get(&c) {
            Some(b) => Some(*b),
            None if self.expose.contains(&c) => None,
            None => Some(Budget::Count(0)),
        }
    }
}

/// A divergence budget: a count, or a percentage of the compared items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    Count(u64),
    Percent(f64),
}

impl Budget {
    /// Whether `found` divergences out of `compared` items fit.
    pub fn allows(self, found: u64, compared: u64) -> bool {
        match self {
            Budget::Count(n) => found <= n,
            Budget::Percent(p) => {
                compared == 0 || (found as f64) * 100.0 <= p * (compared as f64) + 1e-9
            }
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Count(n) => write!(f, "≤ {n}"),
            Budget::Percent(p) => write!(f, "≤ {p}%"),
        }
    }
}

// -------------------------------------------------------------------- raw

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "one")]
    seed: u64,
    endpoints: RawEndpoints,
    traffic: RawTraffic,
    #[serde(default)]
    senders: RawSenders,
    ramp: Option<RawRamp>,
    #[serde(default)]
    faults: Vec<RawFault>,
    #[serde(default)]
    expectations: RawExpectations,
    short: Option<RawShort>,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoints {
    count: u32,
    mix: Vec<RawMix>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMix {
    behaviour: String,
    weight: Option<u32>,
    latency: Option<RawLatency>,
    recover_after: Option<u32>,
    probability: Option<f64>,
    status: Option<u16>,
    retry_after_s: Option<u32>,
    bytes: Option<u64>,
    sent_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    min: Option<String>,
    max: Option<String>,
    slow_fraction: Option<f64>,
    slow: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    rate_per_s: f64,
    count: Option<u64>,
    duration: Option<String>,
    #[serde(default = "one_u32")]
    fan_out: u32,
    #[serde(default)]
    payload: RawPayload,
}

fn one_u32() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    #[serde(default = "yes")]
    html: bool,
    #[serde(default = "yes")]
    unicode: bool,
    #[serde(default = "yes")]
    big_numbers: bool,
    #[serde(default = "yes")]
    floats: bool,
    #[serde(default)]
    pad_bytes: u32,
}

impl Default for RawPayload {
    fn default() -> Self {
        RawPayload {
            html: true,
            unicode: true,
            big_numbers: true,
            floats: true,
            pad_bytes: 0,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSenders {
    timeout: Option<String>,
    retry_schedule: Option<Vec<String>>,
    settle_timeout: Option<String>,
    #[serde(default)]
    legacy: RawSender,
    #[serde(default)]
    engine: RawSender,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSender {
    kind: Option<String>,
    early_success: Option<bool>,
    profile: Option<String>,
    lease: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    command: Option<String>,
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRamp {
    stages: Vec<f64>,
    soak: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: String,
    sender: String,
    action: String,
    restart_after: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpectations {
    #[serde(default)]
    budget: BTreeMap<String, toml::Value>,
    #[serde(default)]
    expose: Vec<String>,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShort {
    endpoints: Option<ShortEndpoints>,
    traffic: Option<ShortTraffic>,
    senders: Option<ShortSenders>,
    ramp: Option<ShortRamp>,
    faults: Option<Vec<RawFault>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortEndpoints {
    count: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortTraffic {
    rate_per_s: Option<f64>,
    count: Option<u64>,
    duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortSenders {
    timeout: Option<String>,
    retry_schedule: Option<Vec<String>>,
    settle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortRamp {
    soak: Option<String>,
}

// ------------------------------------------------------------- loading

fn k(s: &str) -> Step {
    Step::Key(s.to_string())
}

/// A validation failure before it is given a line: the key path and why.
struct Fail {
    path: Vec<Step>,
    message: String,
}

fn fail<T>(path: Vec<Step>, message: impl Into<String>) -> Result<T, Fail> {
    Err(Fail {
        path,
        message: message.into(),
    })
}

impl Scenario {
    /// Reads and validates a scenario file; `short` applies its `[short]`
    /// block. Both forms are validated either way.
    pub fn load(path: &Path, short: bool) -> Result<Scenario, SpecError> {
        let source = std::fs::read_to_string(path).map_err(|error| SpecError::Read {
            file: path.display().to_string(),
            error,
        })?;
        Scenario::parse(&source, path, short)
    }

    /// Validates scenario text; `file` is used in messages and recorded as
    /// the source.
    pub fn parse(source: &str, file: &Path, short: bool) -> Result<Scenario, SpecError> {
        let name = file.display().to_string();
        let locator = Locator::new(source);
        let invalid = |offset: usize, key: String, message: String| {
            let (line, column) = locate::line_col(source, offset);
            SpecError::Invalid {
                file: name.clone(),
                line,
                column,
                key,
                message,
            }
        };
        let raw: RawScenario = toml::from_str(source).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let key = locator
                .path_at(offset)
                .map(|p| locate::render(&p))
                .unwrap_or_default();
            invalid(offset, key, e.message().trim().to_string())
        })?;
        let to_error = |f: Fail| {
            let offset = locator.offset_of(&f.path).unwrap_or(0);
            invalid(offset, locate::render(&f.path), f.message)
        };
        let full = validate(&raw, file, false).map_err(to_error)?;
        let short_form = match &raw.short {
            Some(s) => {
                let (applied, overridden) = apply_short(&raw, s);
                Some(validate(&applied, file, true).map_err(|f| to_error(remap(f, &overridden)))?)
            }
            None => None,
        };
        if short {
            short_form.ok_or_else(|| {
                invalid(
                    0,
                    "short".into(),
                    "this scenario has no [short] block, so it cannot run in short form".into(),
                )
            })
        } else {
            Ok(full)
        }
    }
}

/// The key paths `[short]` replaced: (path in the full form, path in `[short]`).
type Overrides = Vec<(Vec<Step>, Vec<Step>)>;

fn remap(f: Fail, overridden: &Overrides) -> Fail {
    for (main, short) in overridden {
        if f.path.starts_with(main) {
            let mut path = short.clone();
            path.extend_from_slice(&f.path[main.len()..]);
            return Fail {
                path,
                message: f.message,
            };
        }
    }
    f
}

fn apply_short(raw: &RawScenario, s: &RawShort) -> (RawScenario, Overrides) {
    let mut out = RawScenario {
        name: raw.name.clone(),
        description: raw.description.clone(),
        seed: raw.seed,
        endpoints: RawEndpoints {
            count: raw.endpoints.count,
            mix: raw
                .endpoints
                .mix
                .iter()
                .map(|m| RawMix {
                    behaviour: m.behaviour.clone(),
                    weight: m.weight,
                    latency: m.latency.as_ref().map(|l| RawLatency {
                        min: l.min.clone(),
                        max: l.max.clone(),
                        slow_fraction: l.slow_fraction,
                        slow: l.slow.clone(),
                    }),
                    recover_after: m.recover_after,
                    probability: m.probability,
                    status: m.status,
                    retry_after_s: m.retry_after_s,
                    bytes: m.bytes,
                    sent_bytes: m.sent_bytes,
                })
                .collect(),
        },
        traffic: RawTraffic {
            rate_per_s: raw.traffic.rate_per_s,
            count: raw.traffic.count,
            duration: raw.traffic.duration.clone(),
            fan_out: raw.traffic.fan_out,
            payload: RawPayload {
                html: raw.traffic.payload.html,
                unicode: raw.traffic.payload.unicode,
                big_numbers: raw.traffic.payload.big_numbers,
                floats: raw.traffic.payload.floats,
                pad_bytes: raw.traffic.payload.pad_bytes,
            },
        },
        senders: RawSenders {
            timeout: raw.senders.timeout.clone(),
            retry_schedule: raw.senders.retry_schedule.clone(),
            settle_timeout: raw.senders.settle_timeout.clone(),
            legacy: clone_sender(&raw.senders.legacy),
            engine: clone_sender(&raw.senders.engine),
        },
        ramp: raw.ramp.as_ref().map(|r| RawRamp {
            stages: r.stages.clone(),
            soak: r.soak.clone(),
        }),
        faults: raw.faults.clone(),
        expectations: RawExpectations {
            budget: raw.expectations.budget.clone(),
            expose: raw.expectations.expose.clone(),
            note: raw.expectations.note.clone(),
        },
        short: None,
    };
    let mut over: Overrides = Vec::new();
    let mut note = |main: &[&str]| {
        let main: Vec<Step> = main.iter().map(|s| k(s)).collect();
        let mut short = vec![k("short")];
        short.extend(main.iter().cloned());
        over.push((main, short));
    };
    if let Some(e) = &s.endpoints {
        if let Some(c) = e.count {
            out.endpoints.count = c;
            note(&["endpoints", "count"]);
        }
    }
    if let Some(t) = &s.traffic {
        if let Some(r) = t.rate_per_s {
            out.traffic.rate_per_s = r;
            note(&["traffic", "rate_per_s"]);
        }
        // A short count or duration replaces both limits of the full form.
        if t.count.is_some() || t.duration.is_some() {
            out.traffic.count = t.count;
            out.traffic.duration = t.duration.clone();
            if t.count.is_some() {
                note(&["traffic", "count"]);
            }
            if t.duration.is_some() {
                note(&["traffic", "duration"]);
            }
        }
    }
    if let Some(x) = &s.senders {
        if let Some(v) = &x.timeout {
            out.senders.timeout = Some(v.clone());
            note(&["senders", "timeout"]);
        }
        if let Some(v) = &x.retry_schedule {
            out.senders.retry_schedule = Some(v.clone());
            note(&["senders", "retry_schedule"]);
        }
        if let Some(v) = &x.settle_timeout {
            out.senders.settle_timeout = Some(v.clone());
            note(&["senders", "settle_timeout"]);
        }
    }
    if let (Some(r), Some(ramp)) = (&s.ramp, out.ramp.as_mut()) {
        if let Some(v) = &r.soak {
            ramp.soak = Some(v.clone());
            note(&["ramp", "soak"]);
        }
    }
    if let Some(f) = &s.faults {
        out.faults = f.clone();
        note(&["faults"]);
    }
    (out, over)
}

fn clone_sender(s: &RawSender) -> RawSender {
    RawSender {
        kind: s.kind.clone(),
        early_success: s.early_success,
        profile: s.profile.clone(),
        lease: s.lease.clone(),
        args: s.args.clone(),
        command: s.command.clone(),
        url: s.url.clone(),
    }
}

fn validate(raw: &RawScenario, file: &Path, short: bool) -> Result<Scenario, Fail> {
    if raw.name.trim().is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return fail(
            vec![k("name")],
            "must be a non-empty name of letters, digits, `-` and `_` (it names the report folder)",
        );
    }
    let endpoints = validate_endpoints(&raw.endpoints)?;
    let traffic = validate_traffic(&raw.traffic, endpoints.count)?;
    let senders = validate_senders(&raw.senders)?;
    let ramp = match &raw.ramp {
        Some(r) => Some(validate_ramp(r)?),
        None => None,
    };
    let mut faults = Vec::new();
    for (i, f) in raw.faults.iter().enumerate() {
        faults.push(validate_fault(f, i, &senders)?);
    }
    let expectations = validate_expectations(&raw.expectations)?;
    Ok(Scenario {
        name: raw.name.clone(),
        description: raw.description.clone(),
        seed: raw.seed,
        source: file.to_path_buf(),
        short,
        endpoints,
        traffic,
        senders,
        ramp,
        faults,
        expectations,
    })
}

const BEHAVIOURS: &[&str] = &[
    "ok",
    "flaky",
    "rate_limited",
    "client_error",
    "hang",
    "process_then_timeout",
    "reset",
    "redirect",
    "stalled_body",
    "huge_body",
];

fn validate_endpoints(raw: &RawEndpoints) -> Result<Endpoints, Fail> {
    if raw.count == 0 || raw.count > 100_000 {
        return fail(
            vec![k("endpoints"), k("count")],
            format!("must be between 1 and 100000, got {}", raw.count),
        );
    }
    if raw.mix.is_empty() {
        return fail(
            vec![k("endpoints"), k("mix")],
            "needs at least one behaviour",
        );
    }
    let mut mix = Vec::new();
    for (i, m) in raw.mix.iter().enumerate() {
        let at = |key: &str| vec![k("endpoints"), k("mix"), Step::Index(i), k(key)];
        // Which optional keys this behaviour takes; any other is an error.
        let takes: &[&str] = match m.behaviour.as_str() {
            "flaky" => &["probability", "status"],
            "rate_limited" => &["retry_after_s"],
            "client_error" | "redirect" => &["status"],
            "stalled_body" => &["bytes", "sent_bytes"],
            "huge_body" => &["bytes"],
            "ok" | "hang" | "process_then_timeout" | "reset" => &[],
            other => {
                return fail(
                    at("behaviour"),
                    format!(
                        "unknown behaviour `{other}` (expected one of {})",
                        BEHAVIOURS.join(", ")
                    ),
                )
            }
        };
        let given = [
            ("probability", m.probability.is_some()),
            ("status", m.status.is_some()),
            ("retry_after_s", m.retry_after_s.is_some()),
            ("bytes", m.bytes.is_some()),
            ("sent_bytes", m.sent_bytes.is_some()),
        ];
        for (key, present) in given {
            if present && !takes.contains(&key) {
                return fail(
                    at(key),
                    format!("does not apply to behaviour `{}`", m.behaviour),
                );
            }
        }
        let behaviour = match m.behaviour.as_str() {
            "ok" => Behaviour::Ok,
            "hang" => Behaviour::Hang,
            "process_then_timeout" => Behaviour::ProcessThenTimeout,
            "reset" => Behaviour::Reset,
            "flaky" => {
                let probability = m.probability.unwrap_or(0.5);
                if !(0.0..=1.0).contains(&probability) {
                    return fail(
                        at("probability"),
                        format!("must be between 0 and 1, got {probability}"),
                    );
                }
                let status = m.status.unwrap_or(503);
                if !(500..=599).contains(&status) {
                    return fail(at("status"), format!("must be a 5xx status, got {status}"));
                }
                Behaviour::Flaky {
                    probability,
                    status,
                }
            }
            "rate_limited" => Behaviour::RateLimited {
                retry_after_s: m.retry_after_s.unwrap_or(1),
            },
            "client_error" => {
                let Some(status) = m.status else {
                    return fail(
                        at("status"),
                        "behaviour `client_error` needs a status such as 401, 404 or 410",
                    );
                };
                if !(400..=499).contains(&status) || status == 408 || status == 429 {
                    return fail(
                        at("status"),
                        format!("must be a permanent 4xx (not 408 or 429), got {status}"),
                    );
                }
                Behaviour::ClientError { status }
            }
            "redirect" => {
                let status = m.status.unwrap_or(307);
                if ![301, 302, 303, 307, 308].contains(&status) {
                    return fail(
                        at("status"),
                        format!("must be 301, 302, 303, 307 or 308, got {status}"),
                    );
                }
                Behaviour::Redirect { status }
            }
            "stalled_body" => {
                let declared_bytes = m.bytes.unwrap_or(1000);
                let sent_bytes = m.sent_bytes.unwrap_or(10);
                if sent_bytes >= declared_bytes {
                    return fail(
                        at("sent_bytes"),
                        format!(
                            "must be smaller than bytes ({declared_bytes}), or the body is not stalled"
                        ),
                    );
                }
                Behaviour::StalledBody {
                    declared_bytes,
                    sent_bytes,
                }
            }
            "huge_body" => {
                let bytes = m.bytes.unwrap_or(8 << 20);
                if bytes > 1 << 30 {
                    return fail(at("bytes"), "must be at most 1 GiB");
                }
                Behaviour::HugeBody { bytes }
            }
            _ => unreachable!("checked above"),
        };
        let weight = m.weight.unwrap_or(1);
        if weight == 0 {
            return fail(
                at("weight"),
                "must be at least 1 (remove the entry instead)",
            );
        }
        if m.recover_after == Some(0) {
            return fail(
                at("recover_after"),
                "counts attempts from 1; 0 would mean the behaviour never happens",
            );
        }
        let latency = match &m.latency {
            None => Latency::ZERO,
            Some(l) => {
                let lat = |key: &str| {
                    vec![
                        k("endpoints"),
                        k("mix"),
                        Step::Index(i),
                        k("latency"),
                        k(key),
                    ]
                };
                let min = opt_duration(&l.min, lat("min"))?.unwrap_or(Duration::ZERO);
                let max = opt_duration(&l.max, lat("max"))?.unwrap_or(min);
                if max < min {
                    return fail(lat("max"), "must not be below `min`");
                }
                let slow_fraction = l.slow_fraction.unwrap_or(0.0);
                if !(0.0..=1.0).contains(&slow_fraction) {
                    return fail(lat("slow_fraction"), "must be between 0 and 1");
                }
                let slow = opt_duration(&l.slow, lat("slow"))?.unwrap_or(max);
                Latency {
                    min,
                    max,
                    slow_fraction,
                    slow,
                }
            }
        };
        mix.push(MixEntry {
            weight,
            behaviour,
            latency,
            recover_after: m.recover_after,
        });
    }
    Ok(Endpoints {
        count: raw.count,
        mix,
    })
}

fn validate_traffic(raw: &RawTraffic, endpoint_count: u32) -> Result<Traffic, Fail> {
    let at = |key: &str| vec![k("traffic"), k(key)];
    if !(raw.rate_per_s > 0.0 && raw.rate_per_s <= 100_000.0) {
        return fail(
            at("rate_per_s"),
            format!("must be above 0 and at most 100000, got {}", raw.rate_per_s),
        );
    }
    let limit = match (raw.count, &raw.duration) {
        (Some(_), Some(_)) => {
            return fail(
                at("duration"),
                "give either `count` or `duration`, not both",
            )
        }
        (None, None) => return fail(vec![k("traffic")], "needs `count` or `duration`"),
        (Some(0), None) => return fail(at("count"), "must be at least 1"),
        (Some(n), None) => Limit::Count(n),
        (None, Some(d)) => {
            let d = parse_duration(d).map_err(|m| Fail {
                path: at("duration"),
                message: m,
            })?;
            if d.is_zero() {
                return fail(at("duration"), "must be longer than 0");
            }
            Limit::Duration(d)
        }
    };
    if raw.fan_out == 0 || raw.fan_out > endpoint_count {
        return fail(
            at("fan_out"),
            format!(
                "must be between 1 and endpoints.count ({endpoint_count}), got {}",
                raw.fan_out
            ),
        );
    }
    Ok(Traffic {
        rate_per_s: raw.rate_per_s,
        limit,
        fan_out: raw.fan_out,
        payload: PayloadSpec {
            html: raw.payload.html,
            unicode: raw.payload.unicode,
            big_numbers: raw.payload.big_numbers,
            floats: raw.payload.floats,
            pad_bytes: raw.payload.pad_bytes,
        },
    })
}

fn validate_senders(raw: &RawSenders) -> Result<Senders, Fail> {
    let at = |key: &str| vec![k("senders"), k(key)];
    let timeout = opt_duration(&raw.timeout, at("timeout"))?.unwrap_or(Duration::from_secs(2));
    if timeout.is_zero() {
        return fail(at("timeout"), "must be longer than 0");
    }
    let retry_schedule = match &raw.retry_schedule {
        None => vec![Duration::from_millis(200), Duration::from_millis(400)],
        Some(list) => {
            let mut out = Vec::new();
            for (i, item) in list.iter().enumerate() {
                out.push(parse_duration(item).map_err(|m| Fail {
                    path: vec![k("senders"), k("retry_schedule"), Step::Index(i)],
                    message: m,
                })?);
            }
            out
        }
    };
    let settle_timeout =
        opt_duration(&raw.settle_timeout, at("settle_timeout"))?.unwrap_or(Duration::from_secs(60));
    let legacy = validate_sender(&raw.legacy, Side::Legacy)?;
    let engine = validate_sender(&raw.engine, Side::Engine)?;
    if let SenderSpec::Engine { lease, .. } = &engine {
        if *lease <= timeout {
            return fail(
                vec![k("senders"), k("engine"), k("lease")],
                format!(
                    "must be longer than senders.timeout ({} ms), or a live attempt could be sent twice",
                    timeout.as_millis()
                ),
            );
        }
    }
    Ok(Senders {
        timeout,
        retry_schedule,
        settle_timeout,
        legacy,
        engine,
    })
}

/// Engine profiles a scenario may name (the engine checks again at start).
pub const ENGINE_PROFILES: &[&str] = &["standard-webhooks", "legacy", "github", "stripe"];

fn validate_sender(raw: &RawSender, side: Side) -> Result<SenderSpec, Fail> {
    let at = |key: &str| vec![k("senders"), k(side.as_str()), k(key)];
    let kind = raw
        .kind
        .clone()
        .unwrap_or_else(|| side.as_str().to_string());
    let takes: &[&str] = match kind.as_str() {
        "legacy" => &["early_success", "args"],
        "engine" => &["profile", "lease", "args"],
        "command" => &["command"],
        "url" => &["url"],
        other => {
            return fail(
                at("kind"),
                format!("unknown sender kind `{other}` (expected legacy, engine, command or url)"),
            )
        }
    };
    let given = [
        ("early_success", raw.early_success.is_some()),
        ("profile", raw.profile.is_some()),
        ("lease", raw.lease.is_some()),
        ("args", !raw.args.is_empty()),
        ("command", raw.command.is_some()),
        ("url", raw.url.is_some()),
    ];
    for (key, present) in given {
        if present && !takes.contains(&key) {
            return fail(at(key), format!("does not apply to a `{kind}` sender"));
        }
    }
    Ok(match kind.as_str() {
        "legacy" => SenderSpec::Legacy {
            early_success: raw.early_success.unwrap_or(true),
            args: raw.args.clone(),
        },
        "engine" => {
            let profile = raw.profile.clone().unwrap_or_else(|| "legacy".into());
            if !ENGINE_PROFILES.contains(&profile.as_str()) {
                return fail(
                    at("profile"),
                    format!(
                        "unknown profile `{profile}` (expected one of {})",
                        ENGINE_PROFILES.join(", ")
                    ),
                );
            }
            SenderSpec::Engine {
                profile,
                lease: opt_duration(&raw.lease, at("lease"))?.unwrap_or(Duration::from_secs(10)),
                args: raw.args.clone(),
            }
        }
        "command" => match &raw.command {
            Some(c) if !c.trim().is_empty() => SenderSpec::Command { command: c.clone() },
            _ => return fail(at("command"), "a `command` sender needs a command"),
        },
        _ => match &raw.url {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => SenderSpec::Url {
                url: u.trim_end_matches('/').to_string(),
            },
            _ => {
                return fail(
                    at("url"),
                    "a `url` sender needs an http:// or https:// base URL",
                )
            }
        },
    })
}

fn validate_ramp(raw: &RawRamp) -> Result<Ramp, Fail> {
    let at = |key: &str| vec![k("ramp"), k(key)];
    if raw.stages.is_empty() {
        return fail(at("stages"), "needs at least one stage");
    }
    let mut last = -1.0;
    for (i, s) in raw.stages.iter().enumerate() {
        if !(0.0..=100.0).contains(s) || *s < last {
            return fail(
                vec![k("ramp"), k("stages"), Step::Index(i)],
                format!("stages are percentages from 0 to 100, in increasing order; got {s}"),
            );
        }
        last = *s;
    }
    Ok(Ramp {
        stages: raw.stages.clone(),
        soak: opt_duration(&raw.soak, at("soak"))?.unwrap_or(Duration::from_secs(5)),
    })
}

fn validate_fault(raw: &RawFault, i: usize, senders: &Senders) -> Result<Fault, Fail> {
    let at = |key: &str| vec![k("faults"), Step::Index(i), k(key)];
    let at_time = parse_duration(&raw.at).map_err(|m| Fail {
        path: at("at"),
        message: m,
    })?;
    let sender = match raw.sender.as_str() {
        "legacy" => Side::Legacy,
        "engine" => Side::Engine,
        other => {
            return fail(
                at("sender"),
                format!("unknown sender `{other}` (expected legacy or engine)"),
            )
        }
    };
    let spec = match sender {
        Side::Legacy => &senders.legacy,
        Side::Engine => &senders.engine,
    };
    if matches!(spec, SenderSpec::Url { .. }) {
        return fail(
            at("sender"),
            format!(
                "the {sender} sender is a URL the runner did not start, so it cannot be killed"
            ),
        );
    }
    if raw.action != "kill9-restart" {
        return fail(
            at("action"),
            format!("unknown action `{}` (expected kill9-restart)", raw.action),
        );
    }
    Ok(Fault {
        at: at_time,
        sender,
        restart_after: opt_duration(&raw.restart_after, at("restart_after"))?
            .unwrap_or(Duration::from_secs(1)),
    })
}

fn validate_expectations(raw: &RawExpectations) -> Result<Expectations, Fail> {
    let names = || {
        Category::ALL
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut budget = BTreeMap::new();
    for (key, value) in &raw.budget {
        let at = vec![k("expectations"), k("budget"), k(key)];
        let Some(c) = Category::parse(key) else {
            return fail(
                at,
                format!("unknown divergence category (expected one of {})", names()),
            );
        };
        let b = match value {
            toml::Value::Integer(n) if *n >= 0 => Budget::Count(*n as u64),
            toml::Value::String(s) if s.ends_with('%') => {
                match s.trim_end_matches('%').trim().parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => Budget::Percent(p),
                    _ => return fail(at, format!("`{s}` is not a percentage from 0% to 100%")),
                }
            }
            other => {
                return fail(
                    at,
                    format!(
                    "expected a count (like 0) or a percentage string (like \"0.1%\"), got {other}"
                ),
                )
            }
        };
        budget.insert(c, b);
    }
    let mut expose = Vec::new();
    for (i, name) in raw.expose.iter().enumerate() {
        match Category::parse(name) {
            Some(c) => expose.push(c),
            None => {
                return fail(
                    vec![k("expectations"), k("expose"), Step::Index(i)],
                    format!(
                        "unknown divergence category `{name}` (expected one of {})",
                        names()
                    ),
                )
            }
        }
    }
    Ok(Expectations {
        budget,
        expose,
        note: raw.note.clone(),
    })
}

fn opt_duration(s: &Option<String>, path: Vec<Step>) -> Result<Option<Duration>, Fail> {
    match s {
        None => Ok(None),
        Some(s) => parse_duration(s)
            .map(Some)
            .map_err(|message| Fail { path, message }),
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `3m`, `1h` or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m or h, like \"250ms\")"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like \"250ms\" or \"2s\""))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}` (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs > 86_400.0 * 7.0 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way Go's and the engine's `--retry-schedule` read it.
pub fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

mod ms {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

mod ms_list {
    use serde::ser::SerializeSeq;
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(d.len()))?;
        for x in d {
            seq.serialize_element(&(x.as_millis() as u64))?;
        }
        seq.end()
    }
}
