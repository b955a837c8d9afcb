//! The ramp gate: a policy (`gate.toml`) and a pure evaluation of a report
//! against it, answering advance, hold or rollback with its reasons. Moving
//! the proxy's ramp is the binary's job (`hookshift gate evaluate --apply`).
//!
//! ```toml
//! stages = [0, 1, 5, 25, 50, 100]          # percent of endpoints on the engine
//! rollback_on = ["signature", "payload", "missing", "extra", "state_transition"]
//!
//! [budgets]                                # per category: a count (integer) or a rate ("0.1%" or 0.001)
//! signature = 0
//! payload = 0
//! retry_decision = "0.1%"                  # categories not listed have budget 0
//!
//! [samples]                                # for every stage unless [[stage]] overrides
//! min_attempt_pairs = 100
//! min_histories = 100
//! soak = "10m"
//!
//! [[stage]]
//! percent = 50
//! min_attempt_pairs = 10000
//! soak = "1h"
//!
//! [health]
//! max_shadow_drop_rate = 0.01
//! max_unpaired_rate = 0.01
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diff::{Category, Severity};
use crate::report::{Report, SCHEMA_VERSION};

/// What the gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Move to the next stage.
    Advance,
    /// Stay.
    Hold,
    /// Go back to 0%.
    Rollback,
}

impl Action {
    /// The process exit code for scripts: 0 advance, 1 hold, 2 rollback.
    pub fn exit_code(self) -> u8 {
        match self {
            Action::Advance => 0,
            Action::Hold => 1,
            Action::Rollback => 2,
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Advance => "advance",
            Action::Hold => "hold",
            Action::Rollback => "rollback",
        }
    }
}

/// A budget: a number of divergences or a rate of the category's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// At most this many.
    Count(u64),
    /// At most this fraction (0.001 = 0.1%).
    Rate(f64),
}

/// Sample and soak minimums for a stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minimums {
    /// Attempt pairs.
    pub min_attempt_pairs: u64,
    /// Histories.
    pub min_histories: u64,
    /// Seconds of traffic at the stage.
    pub soak_s: f64,
}

/// A validated gate policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Stages in percent, ascending, starting at 0.
    pub stages: Vec<f64>,
    /// Budget per category.
    pub budgets: BTreeMap<Category, Budget>,
    /// Categories whose breach rolls back (others hold).
    pub rollback_on: Vec<Category>,
    /// Minimums per stage percent (the defaults where not overridden).
    pub defaults: Minimums,
    /// Overrides by stage.
    pub per_stage: Vec<(f64, Minimums)>,
    /// Largest shadow drop rate.
    pub max_shadow_drop_rate: Option<f64>,
    /// Largest unpaired-attempt rate.
    pub max_unpaired_rate: Option<f64>,
}

/// A policy file that cannot be used; names the file and key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PolicyError {
    /// The file.
    pub path: String,
    /// What is wrong, naming the key.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    stages: Vec<f64>,
    #[serde(default)]
    rollback_on: Option<Vec<String>>,
    #[serde(default)]
    budgets: BTreeMap<String, toml::Value>,
    #[serde(default)]
    samples: Option<MinFile>,
    #[serde(default)]
    stage: Vec<StageFile>,
    #[serde(default)]
    health: Option<HealthFile>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct MinFile {
    min_attempt_pairs: Option<u64>,
    min_histories: Option<u64>,
    soak: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    percent: f64,
    min_attempt_pairs: Option<u64>,
    min_histories: Option<u64>,
    soak: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    max_shadow_drop_rate: Option<f64>,
    max_unpaired_rate: Option<f64>,
}

fn parse_soak(s: &str) -> Result<f64, String> {
    engine::profile::RetryPolicy {
        schedule: engine::profile::Schedule::Explicit(vec![]),
        jitter: engine::profile::Jitter::None,
        max_attempts: 1,
        honor_retry_after: false,
        retry_after_cap: std::time::Duration::ZERO,
    }
    .with_override(s)
    .map_err(|e| e.to_string())
    .and_then(|p| match p.schedule {
        engine::profile::Schedule::Explicit(v) if v.len() == 1 => Ok(v[0].as_secs_f64()),
        _ => Err(format!("{s:?} is not one duration like 10m")),
    })
}

impl Policy {
    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// Parses a policy; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let err = |message: String| PolicyError {
            path: origin.to_owned(),
            message,
        };
        let f: PolicyFile =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_owned()))?;
        if f.stages.is_empty() {
            return Err(err("key `stages`: needs at least one stage".into()));
        }
        if f.stages.windows(2).any(|w| w[0] >= w[1])
            || f.stages.iter().any(|s| !(0.0..=100.0).contains(s))
        {
            return Err(err(
                "key `stages`: must be ascending percentages between 0 and 100".into(),
            ));
        }
        let cat = |key: &str, name: &str| {
            Category::parse(name).ok_or_else(|| {
                err(format!(
                    "key `{key}`: unknown category {name:?} (signature, header, payload, retry_decision, timeout_classification, state_transition, api_response, missing, extra)"
                ))
            })
        };
        let mut budgets = BTreeMap::new();
        for c in Category::ALL {
            budgets.insert(c, Budget::Count(0));
        }
        for (name, v) in &f.budgets {
            let c = cat(&format!("budgets.{name}"), name)?;
            let b = match v {
                toml::Value::Integer(n) if *n >= 0 => Budget::Count(*n as u64),
                toml::Value::Float(x) if (0.0..=1.0).contains(x) => Budget::Rate(*x),
                toml::Value::String(s) if s.trim().ends_with('%') => {
                    let x: f64 = s.trim().trim_end_matches('%').trim().parse().map_err(|_| {
                        err(format!("key `budgets.{name}`: {s:?} is not a percentage"))
                    })?;
                    if !(0.0..=100.0).contains(&x) {
                        return Err(err(format!("key `budgets.{name}`: {s:?} is out of 0–100%")));
                    }
                    Budget::Rate(x / 100.0)
                }
                other => {
                    return Err(err(format!(
                        "key `budgets.{name}`: {other} is not a count (integer ≥ 0), a rate (0–1) or a percentage like \"0.1%\""
                    )))
                }
            };
            budgets.insert(c, b);
        }
        let rollback_on = match f.rollback_on {
            Some(list) => list
                .iter()
                .map(|n| cat("rollback_on", n))
                .collect::<Result<_, _>>()?,
            None => vec![
                Category::Signature,
                Category::Payload,
                Category::Missing,
                Category::Extra,
                Category::StateTransition,
            ],
        };
        let base = f.samples.clone().unwrap_or_default();
        let soak = |key: &str, s: &Option<String>, dflt: f64| match s {
            Some(s) => parse_soak(s).map_err(|m| err(format!("key `{key}`: {m}"))),
            None => Ok(dflt),
        };
        let defaults = Minimums {
            min_attempt_pairs: base.min_attempt_pairs.unwrap_or(100),
            min_histories: base.min_histories.unwrap_or(100),
            soak_s: soak("samples.soak", &base.soak, 600.0)?,
        };
        let mut per_stage = Vec::new();
        for (i, s) in f.stage.iter().enumerate() {
            if !f.stages.iter().any(|x| (x - s.percent).abs() < 1e-9) {
                return Err(err(format!(
                    "key `stage[{i}].percent`: {} is not one of `stages`",
                    s.percent
                )));
            }
            per_stage.push((
                s.percent,
                Minimums {
                    min_attempt_pairs: s.min_attempt_pairs.unwrap_or(defaults.min_attempt_pairs),
                    min_histories: s.min_histories.unwrap_or(defaults.min_histories),
                    soak_s: soak(&format!("stage[{i}].soak"), &s.soak, defaults.soak_s)?,
                },
            ));
        }
        Ok(Policy {
            stages: f.stages,
            budgets,
            rollback_on,
            defaults,
            per_stage,
            max_shadow_drop_rate: f.health.as_ref().and_then(|h| h.max_shadow_drop_rate),
            max_unpaired_rate: f.health.as_ref().and_then(|h| h.max_unpaired_rate),
        })
    }

    fn minimums(&self, percent: f64) -> Minimums {
        self.per_stage
            .iter()
            .find(|(p, _)| (p - percent).abs() < 1e-9)
            .map(|(_, m)| *m)
            .unwrap_or(self.defaults)
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// advance, hold or rollback.
    pub action: Action,
    /// The stage the ramp is at (percent).
    pub current: f64,
    /// Where the ramp should go (percent): the next stage, the same, or 0.
    pub target: f64,
    /// Every reason, one sentence each.
    pub reasons: Vec<String>,
}

/// Why a report cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The report's schema version is not the one this gate reads.
    #[error("report schema_version {0}; this gate reads version {SCHEMA_VERSION}")]
    Schema(u32),
}

/// Evaluates a report at the current stage. `stage_since_ms` is when the ramp
/// moved to this stage (only traffic after it counts towards soak).
pub fn evaluate(
    policy: &Policy,
    report: &Report,
    current: f64,
    stage_since_ms: Option<i64>,
) -> Result<Decision, GateError> {
    if report.schema_version != SCHEMA_VERSION {
        return Err(GateError::Schema(report.schema_version));
    }
    let mut rollback = Vec::new();
    let mut hold = Vec::new();
    for (cat, budget) in &policy.budgets {
        let name = cat.as_str();
        let count = report.counts.get(name).copied().unwrap_or(0);
        let rate = report.rates.get(name).copied().unwrap_or(0.0);
        let (over, limit) = match budget {
            Budget::Count(n) => (count > *n, format!("{n}")),
            Budget::Rate(r) => (rate > *r, format!("{:.3}%", r * 100.0)),
        };
        if !over {
            continue;
        }
        let critical = report
            .divergences
            .iter()
            .any(|d| d.category == *cat && d.severity == Severity::Critical);
        let reason = format!(
            "{name}: {count} divergences ({:.3}%) over budget {limit}{}",
            rate * 100.0,
            if critical { ", some critical" } else { "" }
        );
        if policy.rollback_on.contains(cat) {
            rollback.push(reason);
        } else {
            hold.push(reason);
        }
    }
    if let Some(max) = policy.max_shadow_drop_rate {
        if report.health.shadow_drop_rate > max {
            hold.push(format!(
                "health: shadow drop rate {:.3}% over {:.3}%: the comparison saw too little of the engine",
                report.health.shadow_drop_rate * 100.0,
                max * 100.0
            ));
        }
    }
    if let Some(max) = policy.max_unpaired_rate {
        if report.health.unpaired_rate > max {
            rollback.push(format!(
                "health: unpaired attempt rate {:.3}% over {:.3}%",
                report.health.unpaired_rate * 100.0,
                max * 100.0
            ));
        }
    }
    let min = policy.minimums(current);
    if report.samples.attempt_pairs < min.min_attempt_pairs {
        hold.push(format!(
            "samples: {} attempt pairs, {} required at {current}%",
            report.samples.attempt_pairs, min.min_attempt_pairs
        ));
    }
    if report.samples.histories < min.min_histories {
        hold.push(format!(
            "samples: {} histories, {} required at {current}%",
            report.samples.histories, min.min_histories
        ));
    }
    let soak = match (report.window.start_ms, report.window.end_ms) {
        (Some(a), Some(b)) => (b - stage_since_ms.map_or(a, |s| s.max(a))).max(0) as f64 / 1000.0,
        _ => 0.0,
    };
    if soak < min.soak_s {
        hold.push(format!(
            "soak: {soak:.0}s of traffic at this stage, {:.0}s required at {current}%",
            min.soak_s
        ));
    }
    let next = policy.stages.iter().copied().find(|s| *s > current + 1e-9);
    if !rollback.is_empty() {
        rollback.extend(hold);
        return Ok(Decision {
            action: Action::Rollback,
            current,
            target: 0.0,
            reasons: rollback,
        });
    }
    let Some(next) = next else {
        hold.push(format!("at the last stage ({current}%)"));
        return Ok(Decision {
            action: Action::Hold,
            current,
            target: current,
            reasons: hold,
        });
    };
    if !hold.is_empty() {
        return Ok(Decision {
            action: Action::Hold,
            current,
            target: current,
            reasons: hold,
        });
    }
    Ok(Decision {
        action: Action::Advance,
        current,
        target: next,
        reasons: vec![format!(
            "every budget met with {} attempt pairs and {} histories over {soak:.0}s; verdict {}",
            report.samples.attempt_pairs,
            report.samples.histories,
            report.verdict.as_str()
        )],
    })
}
