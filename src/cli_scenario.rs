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
    },
}

/// The catalog next to the current directory, else the one this binary was built from.
fn catalog(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let here = PathBuf::from("scenarios/catalog");
        if here.is_dir() {
            here
        } else {
            scenarios::catalog_dir()
        }
    })
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
            let repo_root = repo.unwrap_or_else(|| {
                if PathBuf::from("fixtures/legacy-go").is_dir() {
                    PathBuf::from(".")
                } else {
                    scenarios::repo_root()
                }
            });
            let repo_root = std::fs::canonicalize(&repo_root)
                .with_context(|| format!("repository root {}", repo_root.display()))?;
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
                stages: scenarios::runner::Stages::builtin(),
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

fn print_outcome(o: &scenarios::runner::RunOutcome) {
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
    println!(
        "\nverdict: {} (built-in state check; not the comparator)",
        if v.passed { "PASS" } else { "FAIL" }
    );
    println!("report: {}", o.report_dir.join("summary.md").display());
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
