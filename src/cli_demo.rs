//! `hookshift demo`: the ramp rehearsal of `scenarios/catalog/demo.toml`
//! with the legacy Go fixture (its early-success bug on) and the engine on
//! the `legacy` profile, through the tee proxy, the comparator and the
//! gate. Prints the verdict, the ramp steps the gate took and where the
//! HTML report is. The work is `scenarios::runner` with
//! `scenarios::stages::comparator_stages`.

use anyhow::Context as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The short form (seconds instead of a minute or two; used by the tests).
    #[arg(long)]
    short: bool,
    /// Where reports go: REPORTS/demo/TIMESTAMP/.
    #[arg(long, default_value = "reports")]
    reports: PathBuf,
    /// Repository root, for fixtures/legacy-go [default: the current directory if it has one]
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Catalog directory [default: scenarios/catalog]
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let catalog = crate::cli_scenario::catalog(args.catalog);
    let path = catalog.join("demo.toml");
    let spec = scenarios::spec::Scenario::load(&path, args.short)?;
    let repo_root = crate::cli_scenario::repo_root(args.repo)?;
    let hookshift = std::env::current_exe().context("locating the hookshift executable")?;
    let plan = spec
        .ramp
        .as_ref()
        .map(|r| {
            format!(
                "{} with {} s of soak per stage",
                r.stages
                    .iter()
                    .map(|s| format!("{s}%"))
                    .collect::<Vec<_>>()
                    .join(" → "),
                r.soak.as_secs_f64()
            )
        })
        .unwrap_or_default();
    eprintln!(
        "hookshift demo{}: {}\n  legacy Go sender (early-success bug on) and the engine (legacy profile), \
         both through the tee proxy to {} simulated endpoints;\n  the gate walks the ramp {plan}.\n",
        if args.short { " (short)" } else { "" },
        spec.description,
        spec.endpoints.count
    );
    let started = std::time::Instant::now();
    let opts = scenarios::runner::RunOptions {
        tools: scenarios::senders::Toolbox {
            repo_root,
            hookshift,
        },
        reports_dir: args.reports,
        progress: !args.no_progress,
        stages: scenarios::stages::comparator_stages(&spec, !args.no_progress)?,
    };
    let outcome = scenarios::runner::run(&spec, opts, shutdown).await?;
    crate::cli_scenario::print_outcome(&outcome);

    let json = outcome.report_dir.join("report.json");
    let report: comparator::Report = serde_json::from_slice(
        &std::fs::read(&json).with_context(|| format!("reading {}", json.display()))?,
    )
    .with_context(|| format!("{} is not a report.json", json.display()))?;
    let nonzero: Vec<String> = report
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "\ncomparator: {} ({}); {} attempt pairs, {} histories; divergences: {}; {} suppressed as noise",
        report.verdict.as_str(),
        report.verdict_reason,
        report.samples.attempt_pairs,
        report.samples.histories,
        if nonzero.is_empty() {
            "none".to_string()
        } else {
            nonzero.join(", ")
        },
        report.suppressed_total
    );
    let early: Vec<&comparator::Divergence> = report
        .divergences
        .iter()
        .filter(|d| {
            matches!(
                d.category,
                comparator::Category::StateTransition | comparator::Category::TimeoutClassification
            )
        })
        .collect();
    if let Some(d) = early.first() {
        println!(
            "early success: {} state/outcome divergences, e.g. {} → {}: {}",
            early.len(),
            d.key.event_id,
            d.key.endpoint_url,
            d.summary
        );
    }
    println!(
        "ramp steps: {}",
        outcome.report_dir.join("ramp.md").display()
    );
    println!(
        "\nopen {} in a browser ({:.0} s)",
        outcome.report_dir.join("index.html").display(),
        started.elapsed().as_secs_f64()
    );
    if outcome.verdict.passed {
        Ok(())
    } else {
        anyhow::bail!(
            "the demo's expectations did not hold (report: {})",
            outcome.report_dir.display()
        )
    }
}
