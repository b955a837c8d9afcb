//! The `hookshift` command: argument parsing and wiring only. The work is
//! done by the library crates (`engine`, `proxy`, `comparator`, `scenarios`).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
            let cfg = cfg.validate()?;
            engine::server::run(cfg, shutdown_signal())
                .await
                .context("engine stopped")
        }
    }
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
