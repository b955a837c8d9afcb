//! The comparator stages of a scenario run: the tee proxy between the
//! senders and the receiver simulator, the comparator as the run's check,
//! and the ramp gate over the comparator's report.
//!
//! How a run is wired with these stages (the runner calls them in order):
//! 1. [`TeeProxy::start`] starts the `proxy` crate in-process on four
//!    loopback listeners (port 0), with its capture store a SQLite file in
//!    the run's folder (`captures.db`), and returns each sender's egress
//!    URL; the runner starts both senders with `--egress-proxy URL` and
//!    points every endpoint of both at one receiver listener, so the
//!    pairing key (event id, endpoint URL, attempt) is the same on both
//!    sides. In replay mode (the default with a ramp plan) only the
//!    primary's request reaches the receiver; the shadow is answered from
//!    the primary's recorded exchange. In passthrough mode (the default
//!    without one, as DESIGN.md allows for scenario runs) both reach it,
//!    each named by the proxy's sender header so the receiver counts their
//!    attempts apart.
//! 2. With a ramp plan (and replay mode), the [`ramp_controller`] walks the
//!    stages while the traffic runs: after each soak it compares what has
//!    settled, asks the gate, and applies its decision to the proxy's ramp.
//! 3. [`ComparatorCheck`] runs `comparator::run` once over the capture
//!    store and both senders' databases after settling, writes
//!    `report.json`, `report.md` and `index.html` into the run's folder,
//!    and hands the runner its divergences in the runner's categories.
//! 4. [`RampGate`] stops the controller, evaluates the final report at the
//!    ramp's current stage, applies that too, and reports every step.
//!
//! What the comparator may ignore and what the gate budgets come from the
//! scenario (its schedule, profile, expectations and ramp plan) and, when
//! present, `harness/NAME.toml` beside the scenario file:
//!
//! ```toml
//! [proxy]
//! mode = "replay"            # replay | passthrough (default: replay with a ramp plan)
//!
//! [rules]                    # merged over the derived comparator rules (rules.toml keys)
//! headers = { ignore = ["Accept"] }
//!
//! [gate]                     # replaces the derived gate policy (gate.toml keys)
//! stages = [0, 1, 5, 25, 50, 100]
//! budgets = { header = "100%" }
//! ```

use crate::ramp_controller::{self, Controller, ControllerConfig, Step};
use crate::runner::{
    boxed, ApiCheck, Check, CheckReport, Divergence, Evidence, GateReport, GateStage, ProxyStage,
    RunError, Stages,
};
use crate::spec::{go_duration, Budget, Category, Scenario, SenderSpec, Side};
use comparator::gate::{self, Action, Policy};
use comparator::{Report, Rules};
use futures::future::BoxFuture;
use proxy::capture::CaptureStore;
use proxy::config::{EgressMode, ProxyConfig};
use proxy::ramp::Ramp;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A harness file or a derived rule set that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StagesError {
    #[error("{file}: {message}")]
    Harness { file: String, message: String },
    #[error(transparent)]
    Rules(#[from] comparator::rules::RulesError),
    #[error(transparent)]
    Policy(#[from] gate::PolicyError),
}

/// What the stages run with, derived from the scenario and its harness file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: EgressMode,
    pub rules: Rules,
    /// The rules as TOML, written to the run's folder as `rules.toml`.
    pub rules_text: String,
    pub policy: Policy,
    /// The policy as TOML, written to the run's folder as `gate.toml`.
    pub policy_text: String,
    /// The harness file that was read, if any.
    pub harness: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HarnessFile {
    #[serde(default)]
    proxy: Option<ProxySection>,
    #[serde(default)]
    rules: Option<toml::Table>,
    #[serde(default)]
    gate: Option<toml::Table>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxySection {
    mode: String,
}

/// `harness/NAME.toml` beside the scenario file, where NAME is the file's stem.
pub fn harness_path(scenario: &Scenario) -> PathBuf {
    let dir = scenario
        .source
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let stem = scenario
        .source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| scenario.name.clone());
    dir.join("harness").join(format!("{stem}.toml"))
}

fn schedule_toml(schedule: &[Duration]) -> toml::Value {
    toml::Value::Array(
        schedule
            .iter()
            .map(|d| toml::Value::String(go_duration(*d)))
            .collect(),
    )
}

/// Overlays `over` onto `base`, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The comparator rules a scenario implies: both senders' declared retry
/// schedule (the scenario gives both the same) and the engine's profile.
fn derived_rules(scenario: &Scenario) -> toml::Table {
    let mut t = toml::Table::new();
    let mut side = |name: &str, profile: Option<&str>| {
        let mut s = toml::Table::new();
        if let Some(p) = profile {
            s.insert("profile".into(), toml::Value::String(p.to_owned()));
        }
        let mut retry = toml::Table::new();
        retry.insert(
            "schedule".into(),
            schedule_toml(&scenario.senders.retry_schedule),
        );
        s.insert("retry".into(), toml::Value::Table(retry));
        t.insert(name.into(), toml::Value::Table(s));
    };
    side("legacy", None);
    let profile = match &scenario.senders.engine {
        SenderSpec::Engine { profile, .. } => Some(profile.as_str()),
        _ => None,
    };
    side("engine", profile);
    t
}

/// The gate policy a scenario implies: its ramp plan's stages and soak,
/// the budgets its expectations name (every other category, including the
/// ones the scenario is meant to expose, keeps the gate's budget of 0: the
/// gate does not know what a rehearsal expects), and one sample minimum.
fn derived_policy(scenario: &Scenario) -> toml::Table {
    let mut t = toml::Table::new();
    let (stages, soak) = match &scenario.ramp {
        Some(r) => (r.stages.clone(), r.soak),
        None => (vec![0.0, 100.0], Duration::ZERO),
    };
    t.insert(
        "stages".into(),
        toml::Value::Array(stages.into_iter().map(toml::Value::Float).collect()),
    );
    let mut budgets = toml::Table::new();
    for (c, b) in &scenario.expectations.budget {
        let v = match b {
            Budget::Count(n) => toml::Value::Integer(i64::try_from(*n).unwrap_or(i64::MAX)),
            Budget::Percent(p) => toml::Value::String(format!("{p}%")),
        };
        budgets.insert(c.as_str().into(), v);
    }
    t.insert("budgets".into(), toml::Value::Table(budgets));
    let mut samples = toml::Table::new();
    samples.insert("min_attempt_pairs".into(), toml::Value::Integer(1));
    samples.insert("min_histories".into(), toml::Value::Integer(1));
    samples.insert("soak".into(), toml::Value::String(go_duration(soak)));
    t.insert("samples".into(), toml::Value::Table(samples));
    t
}

impl Settings {
    /// Derives the settings and applies the scenario's harness file.
    pub fn for_scenario(scenario: &Scenario) -> Result<Settings, StagesError> {
        let path = harness_path(scenario);
        let shown = path.display().to_string();
        let file: Option<HarnessFile> = match std::fs::read_to_string(&path) {
            Ok(text) => Some(toml::from_str(&text).map_err(|e| StagesError::Harness {
                file: shown.clone(),
                message: e.to_string().trim_end().to_owned(),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(StagesError::Harness {
                    file: shown,
                    message: e.to_string(),
                })
            }
        };
        let harness = file.is_some().then(|| path.clone());
        let file = file.unwrap_or_default();
        // Without a ramp plan nothing decides who is primary, and the
        // receiver simulator gives both senders the same behaviour at the
        // same attempt by itself; passthrough then keeps the two senders'
        // timing independent (in replay a shadow's answer waits for the
        // primary's, so their skew can time the shadow out alone).
        let mode = match file.proxy.as_ref().map(|p| p.mode.as_str()) {
            None if scenario.ramp.is_none() => EgressMode::Passthrough,
            None | Some("replay") => EgressMode::Replay,
            Some("passthrough") => EgressMode::Passthrough,
            Some(other) => {
                return Err(StagesError::Harness {
                    file: shown,
                    message: format!(
                        "key `proxy.mode`: `{other}` is neither replay nor passthrough"
                    ),
                })
            }
        };
        let mut rules = derived_rules(scenario);
        if let Some(over) = file.rules {
            merge(&mut rules, over);
        }
        let rules_text = toml::to_string(&rules).map_err(|e| StagesError::Harness {
            file: shown.clone(),
            message: format!("key `rules`: {e}"),
        })?;
        let policy = file.gate.unwrap_or_else(|| derived_policy(scenario));
        let policy_text = toml::to_string(&policy).map_err(|e| StagesError::Harness {
            file: shown.clone(),
            message: format!("key `gate`: {e}"),
        })?;
        let origin = |table: &str| match &harness {
            Some(_) => format!("{shown} [{table}]"),
            None => format!("the {table} derived from {}", scenario.source.display()),
        };
        Ok(Settings {
            mode,
            rules: Rules::parse(&rules_text, &origin("rules"))?,
            policy: Policy::parse(&policy_text, &origin("gate"))?,
            rules_text,
            policy_text,
            harness,
        })
    }
}

/// Why a scenario cannot run through the tee proxy, if it cannot: a sender
/// given as a URL (already running, so the run cannot point it at an egress
/// listener), or as a command without an `{egress_proxy}` placeholder.
pub fn proxy_unsupported(scenario: &Scenario) -> Option<String> {
    for (side, spec) in [
        (Side::Legacy, &scenario.senders.legacy),
        (Side::Engine, &scenario.senders.engine),
    ] {
        match spec {
            SenderSpec::Url { .. } => {
                return Some(format!(
                    "the {side} sender is an already running URL, which the run cannot send \
                     through the tee proxy's egress"
                ))
            }
            SenderSpec::Command { command } if !command.contains("{egress_proxy}") => {
                return Some(format!(
                    "the {side} sender's command has no {{egress_proxy}} placeholder for the \
                     tee proxy's egress URL"
                ))
            }
            _ => {}
        }
    }
    None
}

/// The three comparator stages for a scenario, sharing one harness; the
/// runner's built-in API check stays for `api_response`, because the
/// scenario driver posts to both senders itself (no ingress tee traffic).
pub fn comparator_stages(scenario: &Scenario, progress: bool) -> Result<Stages, StagesError> {
    let settings = Settings::for_scenario(scenario)?;
    let harness = Arc::new(Harness {
        scenario: scenario.clone(),
        settings,
        progress,
        running: Mutex::new(None),
        report: tokio::sync::Mutex::new(None),
        controller: Mutex::new(None),
    });
    Ok(Stages {
        proxy: Some(Box::new(TeeProxy {
            harness: harness.clone(),
        })),
        checks: vec![
            Box::new(ComparatorCheck {
                harness: harness.clone(),
                part: Part::Pairs,
            }),
            Box::new(ComparatorCheck {
                harness: harness.clone(),
                part: Part::Histories,
            }),
            Box::new(ApiCheck),
        ],
        gate: Some(Box::new(RampGate { harness })),
    })
}

/// State the stages share.
struct Harness {
    scenario: Scenario,
    settings: Settings,
    progress: bool,
    running: Mutex<Option<Running>>,
    /// The final comparison, made once by whichever check asks first.
    report: tokio::sync::Mutex<Option<Arc<Report>>>,
    controller: Mutex<Option<Controller>>,
}

/// The proxy while it serves.
struct Running {
    work: PathBuf,
    ramp: Arc<Ramp>,
    store: CaptureStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), proxy::ProxyError>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn stage_err(stage: &str, message: impl std::fmt::Display) -> RunError {
    RunError::Stage {
        stage: stage.into(),
        message: message.to_string(),
    }
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

impl Harness {
    /// The senders' database URLs, where the runner put them.
    fn db_urls(&self, work: &Path) -> (Option<String>, Option<String>) {
        let legacy = match &self.scenario.senders.legacy {
            SenderSpec::Legacy { .. } => Some(sqlite_url(&work.join("legacy.db"))),
            _ => None,
        };
        let engine = match &self.scenario.senders.engine {
            SenderSpec::Engine { .. } => Some(sqlite_url(&work.join("engine.db"))),
            _ => None,
        };
        (legacy, engine)
    }

    /// The comparison of everything, once deliveries have settled; made
    /// on the first call and reused.
    async fn final_report(&self, work: &Path) -> Result<Arc<Report>, RunError> {
        let mut slot = self.report.lock().await;
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let work = std::fs::canonicalize(work).unwrap_or_else(|_| work.to_path_buf());
        let (legacy_db, engine_db) = self.db_urls(&work);
        let input = comparator::CompareInput {
            name: self.scenario.name.clone(),
            captures: Some(sqlite_url(&work.join("captures.db"))),
            engine_db,
            legacy_db,
            rules: self.settings.rules.clone(),
            generated_at_ms: Some(proxy::capture::now_ms()),
            ..comparator::CompareInput::default()
        };
        eprintln!("  comparing both senders' captures and databases…");
        let report = run_comparator(input)
            .await
            .map_err(|e| stage_err("comparator", e))?;
        comparator::write_reports(&report, &work)
            .map_err(|e| stage_err("comparator", format!("writing the reports: {e}")))?;
        std::fs::write(work.join("rules.toml"), &self.settings.rules_text)
            .and_then(|_| std::fs::write(work.join("gate.toml"), &self.settings.policy_text))
            .map_err(|e| stage_err("comparator", format!("writing rules.toml/gate.toml: {e}")))?;
        let report = Arc::new(report);
        *slot = Some(report.clone());
        Ok(report)
    }
}

/// Runs the comparison on a thread of its own: `comparator::run`'s future
/// is not `Send` (it shares resolved profiles through `Rc`), and the
/// runner's stage futures must be.
async fn run_comparator(input: comparator::CompareInput) -> Result<Report, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("comparator".into())
        .spawn(move || {
            let r = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting a runtime: {e}"))
                .and_then(|rt| {
                    rt.block_on(comparator::run(&input, |_, _| {}))
                        .map_err(|e| e.to_string())
                });
            let _ = tx.send(r);
        })
        .map_err(|e| format!("starting the comparison thread: {e}"))?;
    rx.await
        .map_err(|_| "the comparison thread ended without an answer".to_string())?
}

// ------------------------------------------------------------------ proxy

/// The tee proxy, in-process.
pub struct TeeProxy {
    harness: Arc<Harness>,
}

impl TeeProxy {
    async fn start_inner(&mut self, work: &Path) -> Result<BTreeMap<Side, String>, RunError> {
        let h = &self.harness;
        let s = &h.scenario.senders;
        let work = std::fs::canonicalize(work).unwrap_or_else(|_| work.to_path_buf());
        let listeners = proxy::Listeners::loopback()
            .await
            .map_err(|e| stage_err("proxy", e))?;
        let addrs = listeners.addrs().map_err(|e| stage_err("proxy", e))?;
        let captures_url = sqlite_url(&work.join("captures.db"));
        let mut cfg = ProxyConfig {
            capture_store: captures_url.clone(),
            ..ProxyConfig::default()
        };
        for l in [
            &mut cfg.listen.ingress,
            &mut cfg.listen.egress_legacy,
            &mut cfg.listen.egress_engine,
            &mut cfg.listen.admin,
        ] {
            *l = "127.0.0.1:0".into();
        }
        // The scenario driver posts every event to both senders itself, so
        // the ingress tee carries no traffic in a run; its sender API URLs
        // point at the discard port, where a stray call fails loudly.
        cfg.senders.legacy.api = "http://127.0.0.1:9".into();
        cfg.senders.engine.api = "http://127.0.0.1:9".into();
        let total_delay: Duration = s.retry_schedule.iter().sum();
        // A shadow waits for the primary's exchange, which takes up to the
        // sender timeout; the two senders' jittered schedules drift apart
        // by at most a fraction of the delays (±20% each for the legacy).
        let pairing = s.timeout + total_delay / 2 + Duration::from_secs(1);
        cfg.egress.mode = match h.settings.mode {
            EgressMode::Replay => "replay".into(),
            EgressMode::Passthrough => "passthrough".into(),
        };
        cfg.egress.pairing_wait = go_duration(pairing);
        // In passthrough both senders reach the receiver at the same URLs;
        // this header lets it count each sender's attempts apart.
        cfg.egress.sender_header = crate::receiver::SENDER_HEADER.into();
        cfg.egress.upstream_timeout = go_duration(s.timeout * 2 + Duration::from_secs(1));
        cfg.egress.hang_limit = go_duration(s.timeout * 2 + Duration::from_secs(1));
        let cfg = cfg.validate().map_err(|e| stage_err("proxy", e))?;
        let proxy = proxy::Proxy::start(cfg)
            .await
            .map_err(|e| stage_err("proxy", e))?;
        let (ramp, store) = (proxy.ramp.clone(), proxy.store.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(proxy.serve(listeners, async {
            let _ = stopped.await;
        }));
        eprintln!(
            "  tee proxy ({} mode): egress legacy {}, engine {}, admin {}; captures in {}",
            if h.settings.mode == EgressMode::Replay {
                "replay"
            } else {
                "passthrough"
            },
            addrs.egress_legacy,
            addrs.egress_engine,
            addrs.admin,
            work.join("captures.db").display()
        );
        if let Some(plan) = &h.scenario.ramp {
            let first = plan.stages.first().copied().unwrap_or(0.0);
            let bp = proxy::ramp::percent_to_bp(first).unwrap_or(0);
            ramp.set(
                bp,
                &format!(
                    "scenario {}: the ramp plan starts at {first}%",
                    h.scenario.name
                ),
                "scenario",
            )
            .await
            .map_err(|e| stage_err("proxy", e))?;
            if h.settings.mode == EgressMode::Replay {
                let (legacy_db, engine_db) = h.db_urls(&work);
                let controller = ramp_controller::spawn(
                    ControllerConfig {
                        scenario: h.scenario.name.clone(),
                        stages: plan.stages.clone(),
                        soak: plan.soak,
                        policy: h.settings.policy.clone(),
                        rules: h.settings.rules.clone(),
                        captures_url: captures_url.clone(),
                        legacy_db,
                        engine_db,
                        work: work.clone(),
                        progress: h.progress,
                    },
                    ramp.clone(),
                );
                *lock(&h.controller) = Some(controller);
            }
        }
        *lock(&h.running) = Some(Running {
            work: work.clone(),
            ramp,
            store,
            stop: Some(stop),
            task: Some(task),
        });
        let mut out = BTreeMap::new();
        out.insert(Side::Legacy, format!("http://{}", addrs.egress_legacy));
        out.insert(Side::Engine, format!("http://{}", addrs.egress_engine));
        Ok(out)
    }
}

impl ProxyStage for TeeProxy {
    fn name(&self) -> &str {
        "tee-proxy"
    }

    fn start<'a>(
        &'a mut self,
        _receiver: &'a BTreeMap<Side, String>,
        work: &'a Path,
    ) -> BoxFuture<'a, Result<BTreeMap<Side, String>, RunError>> {
        boxed(self.start_inner(work))
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        boxed(async move {
            let controller = lock(&self.harness.controller).take();
            if let Some(c) = controller {
                // Joining blocks; do it off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || c.finish()).await;
            }
            let running = lock(&self.harness.running).take();
            if let Some(mut r) = running {
                if let Some(stop) = r.stop.take() {
                    let _ = stop.send(());
                }
                if let Some(task) = r.task.take() {
                    let _ = task.await;
                }
                r.store.close().await;
            }
        })
    }
}

// ------------------------------------------------------------------ check

#[derive(Debug, Clone, Copy)]
enum Part {
    /// Per attempt pair: signature, header, payload.
    Pairs,
    /// Per (event, endpoint) history: retries, timeouts, states, presence.
    Histories,
}

/// The comparator as the runner's check, in two parts so each category
/// gets its own denominator (attempt pairs or histories).
pub struct ComparatorCheck {
    harness: Arc<Harness>,
    part: Part,
}

/// The runner's category for a comparator category (the names are shared).
fn category(c: comparator::Category) -> Option<Category> {
    Category::parse(c.as_str())
}

fn evidence_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Check for ComparatorCheck {
    fn name(&self) -> &str {
        match self.part {
            Part::Pairs => "comparator-attempt-pairs",
            Part::Histories => "comparator-histories",
        }
    }

    fn categories(&self) -> Vec<Category> {
        match self.part {
            Part::Pairs => vec![Category::Signature, Category::Header, Category::Payload],
            Part::Histories => vec![
                Category::RetryDecision,
                Category::TimeoutClassification,
                Category::StateTransition,
                Category::Missing,
                Category::Extra,
            ],
        }
    }

    fn check<'a>(&'a self, ev: &'a Evidence<'a>) -> BoxFuture<'a, Result<CheckReport, RunError>> {
        boxed(self.check_inner(ev))
    }
}

impl ComparatorCheck {
    async fn check_inner(&self, ev: &Evidence<'_>) -> Result<CheckReport, RunError> {
        let report = self.harness.final_report(ev.work).await?;
        let mine = Check::categories(self);
        let divergences = report
            .divergences
            .iter()
            .filter_map(|d| {
                let c = category(d.category)?;
                mine.contains(&c).then(|| Divergence {
                    category: c,
                    key: format!(
                        "{} → {}{}",
                        d.key.event_id,
                        d.key.endpoint_url,
                        d.key
                            .attempt
                            .map(|a| format!(" attempt {a}"))
                            .unwrap_or_default()
                    ),
                    legacy: evidence_text(&d.legacy),
                    engine: evidence_text(&d.engine),
                    detail: format!(
                        "{} ({}, rule {})",
                        d.summary,
                        serde_json::to_value(d.severity)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        d.rule
                    ),
                })
            })
            .collect();
        let suppressed: u64 = report
            .suppressed
            .iter()
            .filter(|s| category(s.category).is_some_and(|c| mine.contains(&c)))
            .map(|s| s.count)
            .sum();
        let (compared, what) = match self.part {
            Part::Pairs => (
                report.samples.attempt_pairs,
                "each (event, endpoint URL, attempt) both senders made, as the tee proxy \
                 captured it: signatures, header names, case and values, body bytes",
            ),
            Part::Histories => (
                report.samples.histories,
                "each (event, endpoint) history: attempts, retry decisions and delays \
                 against the declared schedule, the outcome class each sender recorded for \
                 the same exchange, canonical state sequences, missing and extra deliveries",
            ),
        };
        Ok(CheckReport {
            check: Check::name(self).into(),
            categories: mine,
            compared,
            divergences,
            description: format!(
                "the comparator over the capture store and both senders' databases: {what}; \
                 {suppressed} differences suppressed as noise by named rules (see report.json); \
                 full report in index.html"
            ),
        })
    }
}

// ------------------------------------------------------------------- gate

/// The ramp gate: the controller's steps, then a final evaluation.
pub struct RampGate {
    harness: Arc<Harness>,
}

impl GateStage for RampGate {
    fn name(&self) -> &str {
        "comparator-gate"
    }

    fn evaluate<'a>(
        &'a self,
        scenario: &'a Scenario,
        _checks: &'a [CheckReport],
        work: &'a Path,
    ) -> BoxFuture<'a, Result<GateReport, RunError>> {
        boxed(self.evaluate_inner(scenario, work))
    }
}

impl RampGate {
    async fn evaluate_inner(
        &self,
        scenario: &Scenario,
        work: &Path,
    ) -> Result<GateReport, RunError> {
        let h = &self.harness;
        let controller = lock(&h.controller).take();
        let mut steps: Vec<Step> = match controller {
            // Joining blocks; do it off the runtime's workers.
            Some(c) => tokio::task::spawn_blocking(move || c.finish())
                .await
                .map_err(|e| stage_err("gate", format!("the ramp controller: {e}")))?,
            None => Vec::new(),
        };
        let report = h.final_report(work).await?;
        let (ramp, run_dir) = {
            let running = lock(&h.running);
            let r = running
                .as_ref()
                .ok_or_else(|| stage_err("gate", "the proxy is not running"))?;
            (r.ramp.clone(), r.work.clone())
        };
        let current = f64::from(ramp.bp()) / 100.0;
        // Soak counts from the last change the gate (or the plan) made.
        let since = steps.iter().rev().find(|s| s.applied).map(|s| s.at_ms);
        let decision = gate::evaluate(&h.settings.policy, &report, current, since)
            .map_err(|e| stage_err("gate", e))?;
        let report_path = run_dir.join("report.json");
        let applies = scenario.ramp.is_some()
            && h.settings.mode == EgressMode::Replay
            && decision.action != Action::Hold;
        let mut reasons = decision.reasons.clone();
        if applies {
            let reason = ramp_controller::audit_reason(&decision, &report, &report_path, true);
            let bp = proxy::ramp::percent_to_bp(decision.target).unwrap_or(0);
            ramp.set(bp, &reason, "gate")
                .await
                .map_err(|e| stage_err("gate", e))?;
        } else if scenario.ramp.is_none() {
            reasons.push("not applied: the scenario has no ramp plan".into());
        }
        steps.push(Step::new(
            steps.len() + 1,
            &decision,
            &report,
            0,
            report_path.display().to_string(),
            applies,
            true,
        ));
        ramp_controller::write_steps(&run_dir, &steps)
            .map_err(|e| stage_err("gate", format!("writing ramp.json: {e}")))?;
        Ok(GateReport {
            gate: GateStage::name(self).into(),
            decision: decision.action.as_str().into(),
            reasons,
            steps: steps.iter().map(Step::line).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = "name = \"t\"\nseed = 1\n[endpoints]\ncount = 2\nmix = [{ behaviour = \"ok\" }]\n\
        [traffic]\nrate_per_s = 1\ncount = 1\n[senders]\nretry_schedule = [\"100ms\", \"200ms\"]\n\
        [senders.engine]\nprofile = \"legacy\"\n[ramp]\nstages = [0, 5, 100]\nsoak = \"2s\"\n\
        [expectations]\nbudget = { header = \"100%\", retry_decision = 3 }\nexpose = [\"payload\"]\n";

    fn scenario_in(dir: &Path, text: &str) -> Scenario {
        let file = dir.join("t.toml");
        std::fs::write(&file, text).unwrap();
        Scenario::load(&file, false).unwrap()
    }

    #[test]
    fn rules_and_policy_follow_the_scenario() {
        let dir = tempfile::tempdir().unwrap();
        let s = scenario_in(dir.path(), SCENARIO);
        let set = Settings::for_scenario(&s).unwrap();
        assert_eq!(set.mode, EgressMode::Replay, "a ramp plan needs replay");
        assert_eq!(set.policy.stages, [0.0, 5.0, 100.0]);
        use comparator::Category as C;
        assert_eq!(set.policy.budgets[&C::Header], gate::Budget::Rate(1.0));
        assert_eq!(
            set.policy.budgets[&C::RetryDecision],
            gate::Budget::Count(3)
        );
        // What a rehearsal means to expose is still over the gate's budget.
        assert_eq!(set.policy.budgets[&C::Payload], gate::Budget::Count(0));
        assert!(set.rules_text.contains("\"100ms\""), "{}", set.rules_text);
        assert!(set.rules.engine.profile.is_some());

        let no_ramp = SCENARIO.replace("[ramp]\nstages = [0, 5, 100]\nsoak = \"2s\"\n", "");
        let s = scenario_in(dir.path(), &no_ramp);
        assert_eq!(
            Settings::for_scenario(&s).unwrap().mode,
            EgressMode::Passthrough
        );
    }

    #[test]
    fn a_harness_file_overrides_and_its_errors_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = scenario_in(dir.path(), SCENARIO);
        std::fs::create_dir_all(dir.path().join("harness")).unwrap();
        let harness = dir.path().join("harness/t.toml");
        std::fs::write(
            &harness,
            "[proxy]\nmode = \"passthrough\"\n[rules.retry]\ntolerance_ms = 3000\n",
        )
        .unwrap();
        let set = Settings::for_scenario(&s).unwrap();
        assert_eq!(set.mode, EgressMode::Passthrough);
        assert_eq!(set.rules.tolerance_ms, 3000);
        assert_eq!(set.harness.as_deref(), Some(harness.as_path()));

        std::fs::write(&harness, "[proxy]\nmode = \"mirror\"\n").unwrap();
        let err = Settings::for_scenario(&s).unwrap_err().to_string();
        assert!(
            err.contains("t.toml") && err.contains("proxy.mode"),
            "{err}"
        );
        std::fs::write(&harness, "[proxy]\nmod = \"replay\"\n").unwrap();
        let err = Settings::for_scenario(&s).unwrap_err().to_string();
        assert!(err.contains("t.toml") && err.contains("mod"), "{err}");
        std::fs::write(&harness, "[gate]\nstages = [5, 1]\n").unwrap();
        let err = Settings::for_scenario(&s).unwrap_err().to_string();
        assert!(err.contains("[gate]") && err.contains("stages"), "{err}");
    }
}
