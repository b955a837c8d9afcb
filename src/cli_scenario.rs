//! `hookshift scenario list|run`: argument parsing and printing; the work
//! is `scenarios::runner`.

use anyhow::Context as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    command: ScenarioCommand,
}

#[derive(clap::Subcommand)]
enum ScenarioCommand {
    /// Describe the scenarios in the catalog.
    List {
        /// Catalog directory [default: scenarios/catalog]
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Run a scenario (a file, or a catalog name such as `baseline`).
    Run {
        /// Scenario file or catalog name.
        scenario: String,
        /// Apply the scenario's [short] block (seconds instead of minutes; used in CI).
        #[arg(long)]
        short: bool,
        /// Where reports go: REPORTS/SCENARIO/TIMESTAMP/.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Repository root, for fixtures/legacy-go [default: the current directory if it has one]
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Catalog directory for names [default: scenarios/catalog]
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Compare with the runner's built-in checks (no proxy, no comparator, no gate).
        #[arg(long)]
        builtin_checks: bool,
    },
}

/// The catalog next to the current directory, else the one this binary was built from.
pub fn catalog(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let here = PathBuf::from("scenarios/catalog");
        if here.is_dir() {
            here
        } else {
            scenarios::catalog_dir()
        }
    })
}

/// The repository root (for fixtures/legacy-go): given, else the current
/// directory if it has the fixture, else the tree this binary was built from.
pub fn repo_root(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let root = given.unwrap_or_else(|| {
        if PathBuf::from("fixtures/legacy-go").is_dir() {
            PathBuf::from(".")
        } else {
            scenarios::repo_root()
        }
    });
    std::fs::canonicalize(&root).with_context(|| format!("repository root {}", root.display()))
}

pub async fn run(
    args: ScenarioArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    match args.command {
        ScenarioCommand::List { catalog: dir } => list(catalog(dir)),
        ScenarioCommand::Run {
            scenario,
            short,
            reports,
            repo,
            catalog: dir,
            no_progress,
            builtin_checks,
        } => {
            let catalog = catalog(dir);
            let path = scenarios::resolve(&scenario, &catalog);
            if !path.exists() && !scenario.contains('/') && !scenario.ends_with(".toml") {
                anyhow::bail!(
                    "no scenario named `{scenario}` in {} (see `hookshift scenario list`)",
                    catalog.display()
                );
            }
            let spec = scenarios::spec::Scenario::load(&path, short)?;
            let repo_root = repo_root(repo)?;
            let hookshift = std::env::current_exe().context("locating the hookshift executable")?;
            eprintln!(
                "scenario {}{}: {}",
                spec.name,
                if short { " (short)" } else { "" },
                spec.description
            );
            let opts = scenarios::runner::RunOptions {
                tools: scenarios::senders::Toolbox {
                    repo_root,
                    hookshift,
                },
                reports_dir: reports,
                progress: !no_progress,
                // demo: the tee proxy, the comparator and the gate by default.
                stages: match (builtin_checks, scenarios::stages::proxy_unsupported(&spec)) {
                    (true, _) => scenarios::runner::Stages::builtin(),
                    (false, Some(why)) => {
                        eprintln!("  notice: {why}; using the runner's built-in checks");
                        scenarios::runner::Stages::builtin()
                    }
                    (false, None) => scenarios::stages::comparator_stages(&spec, !no_progress)?,
                },
            };
            let outcome = scenarios::runner::run(&spec, opts, shutdown).await?;
            print_outcome(&outcome);
            if outcome.verdict.passed {
                Ok(())
            } else {
                anyhow::bail!(
                    "scenario {} failed its expectations (report: {})",
                    spec.name,
                    outcome.report_dir.display()
                )
            }
        }
    }
}

pub fn print_outcome(o: &scenarios::runner::RunOutcome) {
    let v = &o.verdict;
    println!();
    for e in &v.expectations {
        let mark = if !e.evaluated {
            "  n/a "
        } else if e.ok {
            "  ok  "
        } else {
            "  FAIL"
        };
        println!("{mark} {:<24} {}", e.category.as_str(), e.message);
    }
    for f in &v.failures {
        println!("  FAIL {f}");
    }
    // demo: which comparison decided, and the comparator's own report.
    let by_comparator = o
        .summary
        .checks
        .iter()
        .any(|c| c.check.starts_with("comparator"));
    println!(
        "\nverdict: {} ({})",
        if v.passed { "PASS" } else { "FAIL" },
        if by_comparator {
            "the scenario's expectations against the comparator's divergences"
        } else {
            "built-in state check; not the comparator"
        }
    );
    if let Some(g) = &o.summary.gate {
        println!("gate: {} ({})", g.decision, g.reasons.join("; "));
        for st in &g.steps {
            println!("  step {st}");
        }
    }
    println!("report: {}", o.report_dir.join("summary.md").display());
    let html = o.report_dir.join("index.html");
    if html.exists() {
        println!("        {}", html.display());
    }
}

fn list(dir: PathBuf) -> anyhow::Result<()> {
    let entries = scenarios::list_catalog(&dir)
        .with_context(|| format!("reading the catalog {}", dir.display()))?;
    let mut bad = 0;
    for (path, s) in entries {
        match s {
            Ok(s) => {
                let expose: Vec<&str> = s.expectations.expose.iter().map(|c| c.as_str()).collect();
                println!("{:<26} {}", s.name, s.description);
                println!(
                    "{:<26} {} endpoints, {} events; exposes: {}",
                    "",
                    s.endpoints.count,
                    s.traffic.event_count(),
                    if expose.is_empty() {
                        "nothing (no divergence expected)".to_string()
                    } else {
                        expose.join(", ")
                    }
                );
            }
            Err(e) => {
                bad += 1;
                println!("{:<26} INVALID: {e}", path.display());
            }
        }
    }
    if bad > 0 {
        anyhow::bail!("{bad} catalog file(s) are invalid");
    }
    Ok(())
}
