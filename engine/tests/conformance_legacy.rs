//! Live conformance of the engine's `legacy` profile against the real Go
//! sender: builds `fixtures/legacy-go/cmd/legacy-sender` once, starts one
//! `legacy-sender oracle` subprocess and checks generated cases byte for byte
//! (`engine::conformance::run`). `HOOKSHIFT_CONFORMANCE_CASES` sets the number
//! of cases (default 2000), `HOOKSHIFT_CONFORMANCE_SEED` the seed (default
//! random, printed). Without Go on PATH the test is skipped, except with
//! `CI=true`, where Go is required.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use engine::conformance::{self, ConformanceError, ConformanceOptions};

/// The repository root: `{engine}/..`, or `HOOKSHIFT_REPO_ROOT`.
fn repo_root() -> PathBuf {
    match std::env::var_os("HOOKSHIFT_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn go_available() -> bool {
    Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// Quotes a path for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn legacy_profile_matches_the_go_sender_byte_for_byte() {
    if !go_available() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("Go is required in CI (CI=true): the live-oracle conformance test needs `go` on PATH to build fixtures/legacy-go");
        }
        println!("notice: go not found; skipping the live-oracle conformance test");
        return;
    }
    let fixture = repo_root().join("fixtures/legacy-go");
    let dir = std::env::temp_dir().join(format!("hookshift-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let binary = dir.join("legacy-sender");
    let started = Instant::now();
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg("./cmd/legacy-sender")
        .current_dir(&fixture)
        .output()
        .unwrap_or_else(|e| panic!("cannot run go build in {}: {e}", fixture.display()));
    assert!(
        out.status.success(),
        "go build ./cmd/legacy-sender in {} failed ({}):\n{}",
        fixture.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let build_time = started.elapsed();

    let cases = env_number("HOOKSHIFT_CONFORMANCE_CASES").unwrap_or(2000);
    let opts = ConformanceOptions {
        seed: Some(env_number("HOOKSHIFT_CONFORMANCE_SEED").unwrap_or_else(rand::random)),
        ..ConformanceOptions::new(
            format!("{} oracle", sh_quote(&binary.to_string_lossy())),
            cases,
        )
    };
    println!(
        "oracle built in {:.1}s; checking {cases} cases, seed {}",
        build_time.as_secs_f64(),
        opts.seed.unwrap()
    );
    let mut next_report = cases as usize / 4;
    let result = conformance::run(&opts, |done, total| {
        if done >= next_report && done < total {
            println!("  {done}/{total} cases agree");
            next_report += total / 4;
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(report) => {
            println!("{report}");
            assert_eq!(report.cases, cases);
        }
        Err(ConformanceError::Mismatch(failure)) => panic!("\n{failure}"),
        Err(e) => panic!("{e}"),
    }
}
