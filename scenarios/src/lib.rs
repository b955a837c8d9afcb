//! Scenarios: reproducible rehearsals of a migration against a simulated
//! customer fleet.
//!
//! Layout:
//! - `spec.rs`: the scenario file format (TOML) and its validation; errors
//!   name the file, line, column and key (`locate.rs` finds them).
//! - `receiver.rs`: the receiver fleet simulator. `Fleet` decides each
//!   request's behaviour from (seed, endpoint, event id, attempt);
//!   `Receiver` serves it over raw TCP, one listener per sender, and
//!   records every request.
//! - `driver.rs`: the plan derived from the seed (endpoints, secrets,
//!   subscriptions, events, payloads) and the traffic driver that posts it
//!   to both senders' APIs at a rate.
//! - `senders.rs`: starting, killing (-9) and restarting the senders as
//!   child processes; building the legacy Go fixture when needed.
//! - `runner.rs`: one run end to end, the stage traits (`ProxyStage`,
//!   `Check`, `GateStage`) that the proxy, comparator and gate plug into,
//!   the built-in checks, the verdict and the report.
//! - `rng.rs`: the deterministic hash and random stream everything uses.
//! - `stages.rs`: the default stages: the tee proxy in-process, the
//!   comparator as the check, and the ramp gate; `ramp_controller.rs`
//!   walks a ramp plan with the gate deciding each step.
//!
//! The catalog of scenario files is `scenarios/catalog/*.toml`.

pub mod driver;
pub mod locate;
pub mod ramp_controller;
pub mod receiver;
pub mod rng;
pub mod runner;
pub mod senders;
pub mod spec;
pub mod stages;

use std::path::{Path, PathBuf};

/// The catalog directory of this source tree.
pub fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog")
}

/// The repository root of this source tree (where `fixtures/` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Every `*.toml` in `dir`, sorted by name, each with its validated full
/// form (or the error that stops it).
pub fn list_catalog(
    dir: &Path,
) -> std::io::Result<Vec<(PathBuf, Result<spec::Scenario, spec::SpecError>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|p| {
            let s = spec::Scenario::load(&p, false);
            (p, s)
        })
        .collect())
}

/// Resolves `name_or_path`: an existing file, or the name of a catalog
/// scenario (`baseline` → `catalog/baseline.toml`).
pub fn resolve(name_or_path: &str, catalog: &Path) -> PathBuf {
    let p = PathBuf::from(name_or_path);
    if p.exists() || name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return p;
    }
    catalog.join(format!("{name_or_path}.toml"))
}
