//! The ramp controller: walks a scenario's ramp plan while its traffic
//! runs, with the gate deciding each step.
//!
//! Once the first exchange reaches the proxy, at each stage and after its
//! soak: compare what has settled (only (event, endpoint) histories that
//! are terminal on both senders, so deliveries still in flight never count
//! as divergences), write that comparison to `steps/NN-Ppct/`, evaluate
//! the gate policy at the current stage, and apply the decision to the
//! proxy's ramp: advance to the next stage, hold (look again shortly), or
//! roll back to 0 and stop. Every applied change is audited in the capture
//! store's `ramp_changes` with a reason that names the report.
//!
//! It runs on its own thread with its own runtime: the runner waits for it
//! from synchronous code ([`Controller::finish`]), and the comparator's
//! reads and the ramp's audited writes need no worker of the runner's.

use comparator::gate::{self, Action, Decision, Policy};
use comparator::load::{self, CaptureFilter};
use comparator::model::{Dataset, History};
use comparator::{Report, Rules};
use proxy::ramp::Ramp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the controller needs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub scenario: String,
    pub stages: Vec<f64>,
    pub soak: Duration,
    pub policy: Policy,
    pub rules: Rules,
    pub captures_url: String,
    pub legacy_db: Option<String>,
    pub engine_db: Option<String>,
    /// The run's folder; step reports go to `steps/` in it.
    pub work: PathBuf,
    pub progress: bool,
}

/// One gate decision, as the summary and `ramp.json` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: usize,
    /// Unix ms when the decision was made.
    pub at_ms: i64,
    /// The stage evaluated, in percent.
    pub stage: f64,
    pub decision: String,
    /// Where the gate sent the ramp (percent).
    pub target: f64,
    pub reasons: Vec<String>,
    /// Divergences per category in the step's comparison (non-zero only).
    pub counts: BTreeMap<String, u64>,
    pub attempt_pairs: u64,
    pub histories: u64,
    /// Histories left out because a sender had not finished them.
    pub in_flight: u64,
    /// The step's report.json.
    pub report: String,
    /// Whether the decision moved the proxy's ramp (a hold does not).
    pub applied: bool,
    /// The evaluation after the traffic ended and every delivery settled.
    #[serde(rename = "final")]
    pub final_step: bool,
}

impl Step {
    pub fn new(
        step: usize,
        d: &Decision,
        r: &Report,
        in_flight: u64,
        report: String,
        applied: bool,
        final_step: bool,
    ) -> Step {
        Step {
            step,
            at_ms: proxy::capture::now_ms(),
            stage: d.current,
            decision: d.action.as_str().into(),
            target: d.target,
            reasons: d.reasons.clone(),
            counts: r
                .counts
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            attempt_pairs: r.samples.attempt_pairs,
            histories: r.samples.histories,
            in_flight,
            report,
            applied,
            final_step,
        }
    }

    /// One line for people: `0% → advance to 1% (12 pairs, 6 histories): reasons`.
    pub fn line(&self) -> String {
        let moved = match self.decision.as_str() {
            "advance" => format!("advance to {}%", self.target),
            "rollback" => format!("rollback to {}%", self.target),
            other => other.to_string(),
        };
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "{}{}%: {moved} ({} attempt pairs, {} histories{}{}){}: {}",
            if self.final_step { "final, at " } else { "" },
            self.stage,
            self.attempt_pairs,
            self.histories,
            if self.in_flight > 0 {
                format!(", {} in flight left out", self.in_flight)
            } else {
                String::new()
            },
            if counts.is_empty() {
                String::new()
            } else {
                format!("; divergences: {}", counts.join(", "))
            },
            if self.applied || self.decision == "hold" {
                ""
            } else {
                " [not applied]"
            },
            self.reasons.join("; ")
        )
    }
}

/// The audit reason for a ramp change: the decision, its reasons and the report.
pub fn audit_reason(d: &Decision, r: &Report, report: &Path, final_step: bool) -> String {
    format!(
        "gate {}{}: {}% → {}%; verdict {}; {}; report {}",
        d.action.as_str(),
        if final_step { " (after settling)" } else { "" },
        d.current,
        d.target,
        r.verdict.as_str(),
        d.reasons.join("; "),
        report.display()
    )
}

/// A running controller.
pub struct Controller {
    stop: Arc<AtomicBool>,
    steps: Arc<Mutex<Vec<Step>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Controller {
    /// Stops it after the step under way and returns every step taken.
    pub fn finish(mut self) -> Vec<Step> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.steps.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Starts the controller on its own thread.
pub fn spawn(cfg: ControllerConfig, ramp: Arc<Ramp>) -> Controller {
    let stop = Arc::new(AtomicBool::new(false));
    let steps = Arc::new(Mutex::new(Vec::new()));
    let (s, st) = (stop.clone(), steps.clone());
    let thread = std::thread::Builder::new()
        .name("ramp-controller".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("  ramp controller: cannot start a runtime: {e}");
                    return;
                }
            };
            rt.block_on(run(cfg, ramp, s, st));
        })
        .ok();
    Controller {
        stop,
        steps,
        thread,
    }
}

/// Sleeps `d` in short slices; false when asked to stop meanwhile.
async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100).min(until - tokio::time::Instant::now()))
            .await;
    }
    !stop.load(Ordering::Acquire)
}

fn terminal(h: &History) -> bool {
    h.states
        .last()
        .is_some_and(|s| matches!(s.as_str(), "succeeded" | "failed" | "cancelled"))
}

/// Loads everything, keeps the histories both senders have finished, and
/// compares them. Returns the report and how many histories were left out.
pub async fn compare_settled(cfg: &ControllerConfig, name: &str) -> Result<(Report, u64), String> {
    // The databases first: the proxy commits each exchange before its
    // sender sees the answer, so every attempt a database already shows as
    // finished is in the capture store by the time it is read next.
    let mut data = Dataset::default();
    if let Some(url) = &cfg.engine_db {
        load::load_engine_db(url, &mut data.engine)
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(url) = &cfg.legacy_db {
        load::load_legacy_db(url, load::DEFAULT_LEGACY_QUERY, &mut data.legacy)
            .await
            .map_err(|e| e.to_string())?;
    }
    load::load_captures(
        &cfg.captures_url,
        CaptureFilter::Both,
        &mut data.legacy,
        &mut data.engine,
        |_| {},
    )
    .await
    .map_err(|e| e.to_string())?;
    data.ingress = load::load_ingress(&cfg.captures_url)
        .await
        .map_err(|e| e.to_string())?;
    // A side without a database has no states to wait for: its captured
    // exchanges are all there is.
    let done = |h: &History, has_db: bool| !has_db || terminal(h);
    let keys: BTreeSet<(String, String)> = data
        .legacy
        .histories
        .keys()
        .chain(data.engine.histories.keys())
        .cloned()
        .collect();
    let keep: BTreeSet<(String, String)> = keys
        .iter()
        .filter(|k| {
            matches!(
                (data.legacy.histories.get(*k), data.engine.histories.get(*k)),
                (Some(l), Some(e)) if done(l, cfg.legacy_db.is_some()) && done(e, cfg.engine_db.is_some())
            )
        })
        .cloned()
        .collect();
    let in_flight = (keys.len() - keep.len()) as u64;
    data.legacy.histories.retain(|k, _| keep.contains(k));
    data.engine.histories.retain(|k, _| keep.contains(k));
    let mut inputs = BTreeMap::new();
    inputs.insert("captures".into(), load::mask_url(&cfg.captures_url));
    inputs.insert(
        "filter".into(),
        format!("histories terminal on both senders ({in_flight} in flight left out)"),
    );
    let report = comparator::compare(
        &data,
        &cfg.rules,
        name,
        inputs,
        Some(proxy::capture::now_ms()),
    );
    Ok((report, in_flight))
}

async fn any_exchange(url: &str) -> bool {
    let mut legacy = Default::default();
    let mut engine = Default::default();
    // The loader is the cheapest way to ask without a second schema reader;
    // before traffic the store is empty, so this is quick.
    match load::load_captures(url, CaptureFilter::Both, &mut legacy, &mut engine, |_| {}).await {
        Ok(unkeyed) => unkeyed > 0 || !legacy.histories.is_empty() || !engine.histories.is_empty(),
        Err(_) => false,
    }
}

async fn run(
    cfg: ControllerConfig,
    ramp: Arc<Ramp>,
    stop: Arc<AtomicBool>,
    steps: Arc<Mutex<Vec<Step>>>,
) {
    // The soak starts with the traffic, not with the senders' start-up.
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        if any_exchange(&cfg.captures_url).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut since = Some(proxy::capture::now_ms());
    let recheck = (cfg.soak / 4).max(Duration::from_millis(500));
    let mut wait = cfg.soak;
    let mut n = 0usize;
    loop {
        if !sleep_unless_stopped(wait, &stop).await {
            return;
        }
        n += 1;
        let current = f64::from(ramp.bp()) / 100.0;
        let name = format!("{} step {n} at {current}%", cfg.scenario);
        let (report, in_flight) = match compare_settled(&cfg, &name).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("  ramp step {n}: comparison failed ({e}); trying again");
                wait = recheck;
                continue;
            }
        };
        let dir = cfg.work.join("steps").join(format!("{n:02}-{current}pct"));
        let report_path = dir.join("report.json");
        if let Err(e) = comparator::write_reports(&report, &dir) {
            eprintln!("  ramp step {n}: writing {}: {e}", dir.display());
        }
        let decision = match gate::evaluate(&cfg.policy, &report, current, since) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("  ramp step {n}: the gate cannot read the report: {e}");
                return;
            }
        };
        let at_last =
            decision.action == Action::Hold && !cfg.stages.iter().any(|s| *s > current + 1e-9);
        let mut applied = false;
        if decision.action != Action::Hold {
            let reason = audit_reason(&decision, &report, &report_path, false);
            let bp = proxy::ramp::percent_to_bp(decision.target).unwrap_or(0);
            match ramp.set(bp, &reason, "gate").await {
                Ok(_) => {
                    applied = true;
                    since = Some(proxy::capture::now_ms());
                }
                Err(e) => eprintln!("  ramp step {n}: applying the decision failed: {e}"),
            }
        }
        let step = Step::new(
            n,
            &decision,
            &report,
            in_flight,
            report_path.display().to_string(),
            applied,
            false,
        );
        if cfg.progress {
            eprintln!("  ramp step {n}: {}", step.line());
        }
        steps.lock().unwrap_or_else(|p| p.into_inner()).push(step);
        match decision.action {
            Action::Rollback => return,
            Action::Hold if at_last => return,
            Action::Hold => wait = recheck,
            Action::Advance => wait = cfg.soak,
        }
    }
}

/// Writes `ramp.json` and `ramp.md` (every step) into the run's folder.
pub fn write_steps(dir: &Path, steps: &[Step]) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(steps).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("ramp.json"), json + "\n")?;
    let mut md = String::from("# Ramp steps\n\nEach step compared what had settled on both senders, asked the gate (`gate.toml`), and applied its decision to the proxy's ramp (audited in `captures.db`, table `ramp_changes`).\n\n| step | stage | decision | to | pairs | histories | in flight | divergences | applied | report |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for s in steps {
        let counts: Vec<String> = s.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        md.push_str(&format!(
            "| {}{} | {}% | {} | {}% | {} | {} | {} | {} | {} | {} |\n",
            s.step,
            if s.final_step { " (final)" } else { "" },
            s.stage,
            s.decision,
            s.target,
            s.attempt_pairs,
            s.histories,
            s.in_flight,
            counts.join(", "),
            if s.applied { "yes" } else { "no" },
            s.report
        ));
    }
    md.push_str("\n## Reasons\n\n");
    for s in steps {
        md.push_str(&format!("- step {}: {}\n", s.step, s.reasons.join("; ")));
    }
    std::fs::write(dir.join("ramp.md"), md)
}
