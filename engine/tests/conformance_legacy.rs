//! Live conformance of the engine's `legacy` profile against the real Go
//! sender: builds `fixtures/legacy-go/cmd/legacy-sender` once, starts one
//! `legacy-sender oracle` subprocess and checks generated cases byte for byte
//! (`engine::conformance::run`). `HOOKSHIFT_CONFORMANCE_CASES` sets the number
//! of cases (default 2000), `HOOKSHIFT_CONFORMANCE_SEED` the seed (default
//! random, printed). Without Go on PATH the test is skipped, except with
//! `CI=true`, where Go is required.

use std::time::Instant;

use engine::conformance::{self, ConformanceError, ConformanceOptions};

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
    let started = Instant::now();
    let Some(binary) = engine::testing::legacy_sender_binary("the live-oracle conformance test")
    else {
        return;
    };
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
    // This test binary holds this one test, so nothing else will ask for
    // the built sender again: remove it.
    if let Some(dir) = binary.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    match result {
        Ok(report) => {
            println!("{report}");
            assert_eq!(report.cases, cases);
        }
        Err(ConformanceError::Mismatch(failure)) => panic!("\n{failure}"),
        Err(e) => panic!("{e}"),
    }
}
