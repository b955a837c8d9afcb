//! `hookshift gate evaluate`: reads a policy and a report, asks the pure
//! `comparator::gate::evaluate`, prints advance, hold or rollback with the
//! reasons, and exits 0, 1 or 2. With `--apply` it reads the proxy's current
//! stage (`GET {ADMIN}/admin/ramp`) and moves it (`POST {ADMIN}/admin/ramp`),
//! recording the verdict, reasons and report path as the audit reason. The
//! HTTP calls live here because the comparator crate does no network I/O.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use comparator::gate::{self, Action, Policy};

#[derive(clap::Subcommand)]
pub enum GateCommand {
    /// Decide advance, hold or rollback from a report (exit 0, 1 or 2).
    Evaluate(EvaluateArgs),
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// The gate policy (TOML): stages, budgets, minimum samples and soak, health.
    #[arg(long)]
    policy: PathBuf,
    /// A report.json written by `hookshift compare`.
    #[arg(long)]
    report: PathBuf,
    /// The current stage in percent, when not read from the proxy.
    #[arg(long)]
    current: Option<f64>,
    /// Move the proxy's ramp according to the decision.
    #[arg(long, requires = "proxy")]
    apply: bool,
    /// The proxy's admin base URL, e.g. http://127.0.0.1:9091.
    #[arg(long)]
    proxy: Option<String>,
}

#[derive(serde::Deserialize)]
struct RampState {
    percent: f64,
    #[serde(default)]
    changed_at: Option<i64>,
}

/// Runs the gate; returns the exit code (0 advance, 1 hold, 2 rollback).
pub async fn run(cmd: GateCommand) -> anyhow::Result<u8> {
    let GateCommand::Evaluate(args) = cmd;
    let policy = Policy::load(&args.policy)?;
    let bytes = std::fs::read(&args.report)
        .with_context(|| format!("reading {}", args.report.display()))?;
    let report: comparator::Report = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a hookshift report.json", args.report.display()))?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let base = args
        .proxy
        .as_deref()
        .map(|p| p.trim_end_matches('/').to_owned());
    let (current, since) = match (&base, args.current) {
        (_, Some(c)) => (c, None),
        (Some(base), None) => {
            let url = format!("{base}/admin/ramp");
            let resp = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            if !resp.status().is_success() {
                bail!("GET {url}: {}", resp.status());
            }
            let state: RampState = resp
                .json()
                .await
                .with_context(|| format!("GET {url}: not a ramp state"))?;
            (state.percent, state.changed_at)
        }
        (None, None) => {
            bail!("give --current PERCENT or --proxy ADMIN_URL to know the current stage")
        }
    };
    let decision = gate::evaluate(&policy, &report, current, since)?;
    println!(
        "{}: {}% → {}% (report {}, verdict {})",
        decision.action.as_str(),
        decision.current,
        decision.target,
        report.name,
        report.verdict.as_str()
    );
    for r in &decision.reasons {
        println!("  - {r}");
    }
    if args.apply {
        let base = base.as_deref().unwrap_or_default();
        if decision.action == Action::Hold {
            println!("ramp unchanged at {}%", decision.current);
        } else {
            let url = format!("{base}/admin/ramp");
            let reason = format!(
                "gate {}: verdict {}; {}; report {}",
                decision.action.as_str(),
                report.verdict.as_str(),
                decision.reasons.join("; "),
                args.report.display()
            );
            let resp = client
                .post(&url)
                .json(&serde_json::json!({
                    "percent": decision.target,
                    "reason": reason,
                    "actor": "gate",
                }))
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                bail!(
                    "POST {url}: {status}: {}",
                    body.chars().take(500).collect::<String>()
                );
            }
            println!("ramp moved to {}%", decision.target);
        }
    }
    Ok(decision.action.exit_code())
}
