//! `hookshift compare`: reads the capture store and both senders' databases,
//! writes report.json, report.md and index.html, prints the verdict. The
//! work is `comparator::run` and `comparator::write_reports`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Capture store written by the tee proxy: sqlite://PATH or postgres://…
    #[arg(long)]
    captures: Option<String>,
    /// The engine's database URL.
    #[arg(long)]
    engine_db: Option<String>,
    /// The legacy sender's database URL.
    #[arg(long)]
    legacy_db: Option<String>,
    /// SQL mapping the legacy's history to canonical states [default: the fixture's state-transitions.sql].
    #[arg(long)]
    legacy_query: Option<PathBuf>,
    /// Noise rules, declared schedules and tolerances (TOML).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Endpoint URL → secret(s), TOML or JSON, for endpoints the stores hold no secret for.
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// A second legacy run's capture store, to learn noise from (Diffy).
    #[arg(long)]
    secondary_captures: Option<String>,
    /// A second legacy run's database, to learn noise from.
    #[arg(long)]
    secondary_legacy_db: Option<String>,
    /// Report folder, e.g. reports/ramp-5pct.
    #[arg(long)]
    out: PathBuf,
    /// Exit with status 1 when the verdict is fail.
    #[arg(long)]
    fail_on_divergence: bool,
}

/// Runs the comparison; returns the process exit code.
pub async fn run(args: CompareArgs) -> anyhow::Result<u8> {
    let rules = match &args.rules {
        Some(p) => comparator::Rules::load(p)?,
        None => comparator::Rules::default(),
    };
    let name = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .ok();
    let input = comparator::CompareInput {
        name,
        captures: args.captures,
        engine_db: args.engine_db,
        legacy_db: args.legacy_db,
        legacy_query: args.legacy_query,
        secrets: args.secrets,
        secondary_captures: args.secondary_captures,
        secondary_legacy_db: args.secondary_legacy_db,
        rules,
        generated_at_ms: now_ms,
    };
    let started = std::time::Instant::now();
    let mut last_stage = String::new();
    let report = comparator::run(&input, |stage, rows| {
        // Progress on stderr: one line per stage, rows counted in place.
        if stage != last_stage {
            if !last_stage.is_empty() {
                eprintln!();
            }
            last_stage = stage.to_owned();
        }
        eprint!(
            "\r  {stage}{} ({:.1}s)",
            if rows > 0 {
                format!(": {rows} rows")
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    })
    .await?;
    eprintln!();
    let paths = comparator::write_reports(&report, &args.out)
        .with_context(|| format!("writing the reports to {}", args.out.display()))?;
    println!(
        "verdict: {} ({})",
        report.verdict.as_str(),
        report.verdict_reason
    );
    let nonzero: Vec<String> = report
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    if !nonzero.is_empty() {
        println!("divergences: {}", nonzero.join(", "));
    }
    println!(
        "samples: {} attempt pairs, {} histories, {} ingress calls; {} suppressed as noise",
        report.samples.attempt_pairs,
        report.samples.histories,
        report.samples.ingress_calls,
        report.suppressed_total
    );
    println!("report: {}", paths.json.display());
    println!("        {}", paths.markdown.display());
    println!("        {}", paths.html.display());
    Ok(
        if args.fail_on_divergence && report.verdict == comparator::Verdict::Fail {
            1
        } else {
            0
        },
    )
}
