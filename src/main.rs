//! The `hookshift` command: argument parsing and wiring only. The work is
//! done by the library crates (`engine`, `proxy`, `comparator`, `scenarios`).

mod cli_scenario;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod cli_compare;
mod cli_demo;
mod cli_gate;
mod cli_proxy;

#[derive(Parser)]
#[command(
    name = "hookshift",
    version,
    about = "Move a webhook platform from a legacy sender to a new engine, safely"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The Rust delivery engine.
    Engine {
        #[command(subcommand)]
        command: EngineCommand,
    },
    /// Print the headers a profile would send for a JSON payload read on stdin.
    Sign(SignArgs),
    /// Check, on generated payloads, that a profile's bytes equal a legacy oracle's.
    Conformance(ConformanceArgs),
    /// Compare the two senders' captures and databases; write divergence reports.
    Compare(cli_compare::CompareArgs),
    /// The ramp gate: advance, hold or roll back from a report.
    Gate {
        #[command(subcommand)]
        command: cli_gate::GateCommand,
    },
    /// Rehearse a migration: run a scenario against a simulated receiver fleet.
    Scenario(cli_scenario::ScenarioArgs),
    /// The whole harness in a couple of minutes: legacy and engine through the
    /// tee proxy, the comparator, and the gate ramping 0 → 100%.
    Demo(cli_demo::DemoArgs),
    /// The tee proxy: ingress mirroring, egress record/replay, ramp.
    Proxy {
        #[command(subcommand)]
        command: cli_proxy::ProxyCommand,
    },
    /// Read or move the ramp stage through the proxy's admin listener.
    Ramp {
        #[command(subcommand)]
        command: cli_proxy::RampCommand,
    },
    /// The capture store the proxy writes.
    Captures {
        #[command(subcommand)]
        command: cli_proxy::CapturesCommand,
    },
}

#[derive(clap::Args)]
struct SignArgs {
    /// Profile: standard-webhooks, legacy, github or stripe.
    #[arg(long, default_value = "standard-webhooks")]
    profile: String,
    /// Signing secret (repeat for rotation: the first is current).
    #[arg(long, required = true)]
    secret: Vec<String>,
    /// Event id.
    #[arg(long)]
    id: String,
    /// Unix seconds.
    #[arg(long)]
    timestamp: i64,
    /// Delivery id, for profiles that send one.
    #[arg(long)]
    delivery_id: Option<String>,
    /// Event type, for profiles that send one.
    #[arg(long, default_value = "")]
    event_type: String,
    /// Write the exact body bytes here.
    #[arg(long)]
    body_out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ConformanceArgs {
    /// Command that starts the oracle (run with sh -c), speaking JSON lines.
    #[arg(long)]
    oracle: String,
    /// Profile under test.
    #[arg(long, default_value = "legacy")]
    profile: String,
    /// Cases to run.
    #[arg(long, default_value_t = 2000)]
    cases: u32,
    /// RNG seed (printed when not given, so a failure can be replayed).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Subcommand)]
enum EngineCommand {
    /// Serve the platform API (and, once built, the delivery worker).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file; HOOKSHIFT_* variables override it, flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// sqlite://PATH (created if missing), sqlite::memory: or postgres://… [default: sqlite://hookshift.db]
    #[arg(long)]
    database_url: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<String>,
    /// api, worker or all [default: all]
    #[arg(long)]
    role: Option<String>,
    /// Override every profile's retry schedule, e.g. 1s,2s,4s.
    #[arg(long)]
    retry_schedule: Option<String>,
    /// Allow deliveries to this range despite the SSRF guard (repeatable), e.g. 127.0.0.0/8.
    #[arg(long = "allow-cidr")]
    allow_cidr: Vec<String>,
    /// Send every delivery through this HTTP forward proxy (the tee proxy's egress listener).
    #[arg(long)]
    egress_proxy: Option<String>,
    /// Consecutive failed attempts that open an endpoint's circuit breaker; 0 turns it off.
    #[arg(long)]
    breaker_failures: Option<u32>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Engine {
            command: EngineCommand::Serve(args),
        } => {
            let mut cfg =
                engine::config::EngineConfig::load(args.config.as_deref(), std::env::vars())?;
            if let Some(url) = args.database_url {
                cfg.database_url = url;
            }
            if let Some(listen) = args.listen {
                cfg.listen = listen;
            }
            if let Some(role) = args.role {
                cfg.role = role;
            }
            if let Some(schedule) = args.retry_schedule {
                cfg.worker.retry_schedule = Some(schedule);
            }
            if !args.allow_cidr.is_empty() {
                cfg.worker.allow_cidrs = args.allow_cidr;
            }
            if let Some(proxy) = args.egress_proxy {
                cfg.worker.egress_proxy = Some(proxy);
            }
            if let Some(n) = args.breaker_failures {
                cfg.worker.breaker.failures = n;
            }
            let cfg = cfg.validate()?;
            engine::server::run(cfg, shutdown_signal())
                .await
                .context("engine stopped")
        }
        Command::Sign(args) => sign(args),
        Command::Conformance(args) => conformance(args),
        Command::Compare(args) => exit_with(cli_compare::run(args).await?),
        Command::Gate { command } => exit_with(cli_gate::run(command).await?),
        Command::Scenario(args) => cli_scenario::run(args, shutdown_signal()).await,
        Command::Demo(args) => cli_demo::run(args, shutdown_signal()).await,
        Command::Proxy { command } => cli_proxy::proxy(command, shutdown_signal()).await,
        Command::Ramp { command } => cli_proxy::ramp(command).await,
        Command::Captures { command } => cli_proxy::captures(command).await,
    }
}

/// Ends the process with a command's own exit code (the gate's 0/1/2).
fn exit_with(code: u8) -> anyhow::Result<()> {
    use std::io::Write as _;
    if code == 0 {
        return Ok(());
    }
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(code))
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    use std::io::Read as _;
    let profile = engine::profile::by_name(&args.profile)?;
    let mut payload = Vec::new();
    std::io::stdin()
        .read_to_end(&mut payload)
        .context("reading the payload from stdin")?;
    let trimmed = payload.trim_ascii();
    serde_json::from_slice::<serde_json::Value>(trimmed).context("stdin is not a JSON payload")?;
    let secrets: Vec<&str> = args.secret.iter().map(String::as_str).collect();
    let rendered = profile.render(
        &secrets,
        &engine::profile::Message {
            event_id: &args.id,
            delivery_id: args.delivery_id.as_deref(),
            event_type: &args.event_type,
            timestamp: args.timestamp,
            payload: trimmed,
        },
    )?;
    for (name, value) in profile.wire_headers(&rendered) {
        println!("{name}: {value}");
    }
    if let Some(path) = args.body_out {
        std::fs::write(&path, &rendered.body)
            .with_context(|| format!("writing the body to {}", path.display()))?;
    }
    Ok(())
}

fn conformance(args: ConformanceArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand_seed);
    eprintln!(
        "conformance: profile {}, {} cases, seed {seed}, oracle `{}`",
        args.profile, args.cases, args.oracle
    );
    let mut opts = engine::conformance::ConformanceOptions::new(args.oracle, args.cases);
    opts.profile = args.profile;
    opts.seed = Some(seed);
    let mut last = std::time::Instant::now();
    let report = engine::conformance::run(&opts, |done, total| {
        if last.elapsed() >= std::time::Duration::from_secs(1) || done == total {
            eprint!("\r  {done}/{total} cases");
            last = std::time::Instant::now();
        }
    });
    eprintln!();
    match report {
        Ok(r) => {
            println!("{r}");
            Ok(())
        }
        Err(e) => anyhow::bail!("{e}"),
    }
}

fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
