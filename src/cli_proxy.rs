//! `hookshift proxy serve`, `hookshift ramp …` and `hookshift captures
//! export`: argument parsing and wiring onto the `proxy` crate.

use anyhow::Context as _;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ProxyCommand {
    /// Serve the four listeners: ingress, egress-legacy, egress-engine, admin.
    Serve {
        /// proxy.toml (see the proxy section of README.md).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum RampCommand {
    /// Show the stage and its recent changes.
    Status(AdminArgs),
    /// Move the stage to PERCENT (0..=100) of endpoints on the engine.
    Set {
        /// Percent of endpoint buckets the engine delivers for.
        percent: f64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Move every endpoint back to the legacy sender (stage 0).
    Rollback {
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// The proxy's admin listener.
    #[arg(long, default_value = "http://127.0.0.1:9093")]
    admin: String,
}

#[derive(Subcommand)]
pub enum CapturesCommand {
    /// Write every captured row out, one JSON object per line.
    Export {
        /// sqlite://PATH or postgres://…
        #[arg(long)]
        store: String,
        /// Only jsonl for now.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn proxy(
    cmd: ProxyCommand,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match cmd {
        ProxyCommand::Serve { config } => {
            let cfg = proxy::config::ProxyConfig::load(&config)?.validate()?;
            let listeners = proxy::Listeners::bind(&cfg).await?;
            let a = listeners.addrs()?;
            println!(
                "proxy listening: ingress http://{} egress-legacy http://{} egress-engine http://{} admin http://{}",
                a.ingress, a.egress_legacy, a.egress_engine, a.admin
            );
            proxy::run(listeners, cfg, shutdown)
                .await
                .context("proxy stopped")
        }
    }
}

fn print_view(v: &proxy::ramp::RampView) {
    println!("stage: {}% ({} bp)", v.percent, v.bp);
    if v.changed_at > 0 {
        println!("changed at: {} ms, reason: {}", v.changed_at, v.reason);
    }
    for h in &v.history {
        println!(
            "  {}  {:>6.2}% -> {:>6.2}%  {}  ({})",
            h.at,
            h.from_bp as f64 / 100.0,
            h.to_bp as f64 / 100.0,
            h.reason,
            h.actor
        );
    }
}

pub async fn ramp(cmd: RampCommand) -> anyhow::Result<()> {
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let view = match cmd {
        RampCommand::Status(a) => proxy::admin::Client::new(&a.admin).status().await?,
        RampCommand::Set {
            percent,
            reason,
            admin,
        } => {
            if !(0.0..=100.0).contains(&percent) {
                anyhow::bail!("percent must be between 0 and 100, got {percent}");
            }
            proxy::admin::Client::new(&admin.admin)
                .set(percent, &reason, &actor)
                .await?
        }
        RampCommand::Rollback { reason, admin } => {
            proxy::admin::Client::new(&admin.admin)
                .rollback(&reason, &actor)
                .await?
        }
    };
    print_view(&view);
    Ok(())
}

pub async fn captures(cmd: CapturesCommand) -> anyhow::Result<()> {
    match cmd {
        CapturesCommand::Export { store, format, out } => {
            if format != "jsonl" {
                anyhow::bail!("--format {format}: only jsonl is supported");
            }
            if store.starts_with("sqlite:") {
                // Refuse to create an empty store when the path is mistyped.
                let path = store
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if !std::path::Path::new(path).exists() {
                    anyhow::bail!("--store {store}: no such file");
                }
            }
            let store = proxy::capture::CaptureStore::open(&store)
                .await
                .context("opening the capture store")?;
            let n = match out {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(file);
                    proxy::capture::export_jsonl(&store, &mut w).await?
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut w = std::io::BufWriter::new(stdout.lock());
                    proxy::capture::export_jsonl(&store, &mut w).await?
                }
            };
            eprintln!("exported {n} rows");
            Ok(())
        }
    }
}
