//! `hookshift scenario run` end to end, in short form, against the real
//! legacy Go fixture and the engine: `baseline` must show no divergence,
//! `body-stall` must show the legacy/engine state difference (the legacy's
//! early-success bug), a scenario whose expectation is broken on purpose
//! must fail, and a bad file must be refused with its line and key.
//!
//! Needs Go to build fixtures/legacy-go; without it these tests skip with
//! a notice, except under CI=true, where they fail.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn go_available() -> bool {
    if Command::new("go").arg("version").output().is_ok() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("Go is required under CI=true to build the legacy fixture");
    }
    eprintln!("notice: go not found; skipping the scenario end-to-end tests");
    false
}

/// Runs `hookshift scenario run FILE --short` with reports in a fresh
/// directory; returns the output and the run's summary.json (if written).
/// Removes a test's report directory when the test passes; a failing test
/// leaves it for inspection (its path is in the printed output).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn run(file: &Path, name: &str) -> (Output, Option<Value>, Cleanup) {
    run_with(file, name, &[])
}

/// demo: `run` with extra flags, e.g. `--builtin-checks` for the tests
/// written against the runner's own checks (the default is now the tee
/// proxy, the comparator and the gate; tests/demo_e2e.rs covers those).
fn run_with(file: &Path, name: &str, extra: &[&str]) -> (Output, Option<Value>, Cleanup) {
    let reports = std::env::temp_dir().join(format!("hookshift-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&reports);
    let out = Command::new(env!("CARGO_BIN_EXE_hookshift"))
        .args(["scenario", "run", "--short", "--no-progress"])
        .args(extra)
        .arg(file)
        .arg("--reports")
        .arg(&reports)
        .arg("--repo")
        .arg(root())
        .output()
        .expect("run hookshift");
    let summary = find_summary(&reports.join(name)).map(|p| {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).expect("summary.json is JSON")
    });
    (out, summary, Cleanup(reports))
}

/// The run's summary.json, if the run got as far as writing it. A run that
/// stopped early has its directory but no summary; the caller's assertion
/// then prints the child's output, which says why.
fn find_summary(dir: &Path) -> Option<PathBuf> {
    let run = std::fs::read_dir(dir).ok()?.flatten().next()?.path();
    let json = run.join("summary.json");
    if !json.exists() {
        return None;
    }
    assert!(
        run.join("summary.md").exists(),
        "summary.md beside summary.json in {}",
        run.display()
    );
    Some(json)
}

fn explain(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn expectation<'a>(s: &'a Value, category: &str) -> &'a Value {
    s["verdict"]["expectations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["category"] == category)
        .unwrap_or_else(|| panic!("no {category} expectation"))
}

fn catalog(name: &str) -> PathBuf {
    root()
        .join("scenarios/catalog")
        .join(format!("{name}.toml"))
}

#[test]
fn baseline_shows_no_difference() {
    if !go_available() {
        return;
    }
    let (out, s, _cleanup) = run_with(&catalog("baseline"), "baseline", &["--builtin-checks"]);
    assert!(out.status.success(), "{}", explain(&out));
    let s = s.unwrap_or_else(|| panic!("no summary.json: {}", explain(&out)));
    assert_eq!(s["verdict"]["passed"], true);
    assert_eq!(s["settled"], true);
    let expected = s["traffic"]["expected_deliveries"].as_u64().unwrap();
    assert!(expected > 0);
    for side in ["legacy", "engine"] {
        assert_eq!(
            s["senders"][side]["deliveries"].as_u64(),
            Some(expected),
            "{side}"
        );
        assert_eq!(
            s["senders"][side]["by_state"]["succeeded"].as_u64(),
            Some(expected),
            "{side}"
        );
    }
    for c in s["checks"].as_array().unwrap() {
        assert_eq!(c["found"], 0, "{c}");
        // No receiver sends Retry-After here, so that check has nothing to
        // compare; every other check must have compared something.
        if c["check"] != "builtin-retry-after" {
            assert!(c["compared"].as_u64().unwrap() > 0, "{c}: compared nothing");
        }
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    assert!(stdout.contains("report: "), "{stdout}");
}

#[test]
fn body_stall_shows_the_legacy_early_success_bug() {
    if !go_available() {
        return;
    }
    let (out, s, _cleanup) = run_with(&catalog("body-stall"), "body-stall", &["--builtin-checks"]);
    assert!(out.status.success(), "{}", explain(&out));
    let s = s.unwrap_or_else(|| panic!("no summary.json: {}", explain(&out)));
    for category in ["state_transition", "timeout_classification"] {
        let e = expectation(&s, category);
        assert!(e["found"].as_u64().unwrap() > 0, "{e}");
        assert_eq!(e["ok"], true);
    }
    // The legacy counts the stalled deliveries as succeeded; the engine
    // failed them after retrying.
    let l = &s["senders"]["legacy"]["by_state"];
    let e = &s["senders"]["engine"]["by_state"];
    assert!(l["failed"].is_null(), "legacy: {l}");
    assert!(e["failed"].as_u64().unwrap() > 0, "engine: {e}");
    let examples: Vec<&Value> = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["examples"].as_array().unwrap())
        .filter(|d| d["category"] == "state_transition")
        .collect();
    assert!(!examples.is_empty());
    for d in examples {
        assert_eq!(d["legacy"], "succeeded (success)", "{d}");
        assert_eq!(d["engine"], "failed", "{d}");
    }
}

#[test]
fn a_broken_expectation_fails_the_run() {
    if !go_available() {
        return;
    }
    let file = root().join("tests/data/broken-expectation.toml");
    let (out, s, _cleanup) = run(&file, "broken-expectation");
    assert!(!out.status.success(), "must fail: {}", explain(&out));
    let s = s.unwrap_or_else(|| {
        panic!(
            "a report is written even when the verdict fails: {}",
            explain(&out)
        )
    });
    assert_eq!(s["verdict"]["passed"], false);
    let st = expectation(&s, "state_transition");
    assert_eq!(st["ok"], false, "{st}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("verdict: FAIL"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed its expectations"));
}

#[test]
fn a_bad_file_is_refused_with_its_line_and_key() {
    let file = root().join("tests/data/bad-key.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_hookshift"))
        .args(["scenario", "run"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-key.toml:10:") && err.contains("key `traffic.fan_out`"),
        "{err}"
    );
}

#[test]
fn every_other_catalog_scenario_meets_its_expectations_in_short_form() {
    if !go_available() {
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(root().join("scenarios/catalog"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        // These two have their own tests above.
        .filter(|n| n != "baseline" && n != "body-stall")
        .collect();
    names.sort();
    assert!(names.len() >= 9, "{names:?}");
    let mut failed = Vec::new();
    for name in &names {
        let (out, s, cleanup) = run(&catalog(name), name);
        let passed = s.as_ref().map(|s| s["verdict"]["passed"] == true);
        if !out.status.success() || passed != Some(true) {
            failed.push(format!("{name}: {}", explain(&out)));
            // Keep the failed run's report.
            std::mem::forget(cleanup);
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// Ctrl-C (SIGINT to hookshift alone) in the middle of the traffic: the run
/// stops promptly and both senders it started are gone.
// Linux: the check reads /proc.
#[cfg(target_os = "linux")]
#[test]
fn interrupting_a_run_stops_every_sender_it_started() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    if !go_available() {
        return;
    }
    let reports =
        std::env::temp_dir().join(format!("hookshift-e2e-{}-interrupt", std::process::id()));
    let _cleanup = Cleanup(reports.clone());
    // The full baseline takes half a minute of traffic: long enough to interrupt.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookshift"))
        .args(["scenario", "run", "--no-progress"])
        .arg(catalog("baseline"))
        .arg("--reports")
        .arg(&reports)
        .arg("--repo")
        .arg(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut senders = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // "  legacy sender listening on http://127.0.0.1:PORT (pid N)"
        if let Some((_, pid)) = line.split_once("(pid ") {
            senders.push(pid.trim_end_matches(')').to_string());
        }
        if line.contains("events at") {
            break;
        }
    }
    assert_eq!(senders.len(), 2, "both senders announced: {senders:?}");
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("hookshift did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    // Each sender process is gone (or a zombie awaiting its reaper) soon
    // after: it was killed, not left running.
    for pid in senders {
        let gone = || match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Err(_) => true,
            Ok(status) => status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z')),
        };
        let since = Instant::now();
        while !gone() && since.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(gone(), "sender process {pid} still runs");
    }
}

/// A `command` sender: any process that serves the platform API and prints
/// its listening line (here the legacy binary, started through sh -c).
#[test]
fn a_command_sender_is_started_and_compared_like_the_fixture() {
    if !go_available() {
        return;
    }
    let bin = scenarios::senders::legacy_binary(&root()).expect("build the legacy fixture");
    let dir = std::env::temp_dir().join(format!("hookshift-e2e-{}-command", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir_cleanup = Cleanup(dir.clone());
    let file = dir.join("command-sender.toml");
    std::fs::write(
        &file,
        format!(
            r#"name = "command-sender"
[endpoints]
count = 3
mix = [{{ behaviour = "ok" }}]
[traffic]
rate_per_s = 20
count = 6
[senders]
timeout = "1s"
retry_schedule = ["100ms"]
settle_timeout = "20s"
[senders.legacy]
kind = "command"
command = "{} serve --listen {{listen}} --database-url {{database_url}} --retry-schedule 100ms --timeout 1s"
[short]
traffic = {{ count = 6 }}
"#,
            bin.display()
        ),
    )
    .unwrap();
    let (out, s, _cleanup) = run(&file, "command-sender");
    assert!(out.status.success(), "{}", explain(&out));
    let s = s.unwrap_or_else(|| panic!("no summary.json: {}", explain(&out)));
    assert_eq!(s["senders"]["legacy"]["kind"], "command");
    assert_eq!(s["senders"]["legacy"]["by_state"]["succeeded"], 6);
    assert_eq!(s["senders"]["engine"]["by_state"]["succeeded"], 6);
}

/// The stage boundary: a check plugged in beside the built-in ones (as the
/// comparator will be) sees the run's evidence, and what it finds is
/// judged against the scenario's budgets.
#[test]
fn a_plugged_in_check_is_run_and_judged() {
    use scenarios::runner::{
        self, CheckReport, Divergence, Evidence, RunError, RunOptions, Stages, SyncCheck,
    };
    use scenarios::spec::{Category, Scenario};

    struct EveryDeliveryIsASignatureDivergence;
    impl SyncCheck for EveryDeliveryIsASignatureDivergence {
        fn name(&self) -> &str {
            "test-signature"
        }
        fn categories(&self) -> Vec<Category> {
            vec![Category::Signature]
        }
        fn compare(&self, ev: &Evidence<'_>) -> Result<CheckReport, RunError> {
            assert!(
                ev.work.join("legacy.db").exists(),
                "the legacy's database is evidence"
            );
            assert!(
                ev.work.join("engine.db").exists(),
                "the engine's database is evidence"
            );
            Ok(CheckReport {
                check: "test-signature".into(),
                categories: vec![Category::Signature],
                compared: ev.legacy.len() as u64,
                divergences: ev
                    .legacy
                    .keys()
                    .map(|(e, p)| Divergence {
                        category: Category::Signature,
                        key: format!("{e} → {p}"),
                        legacy: "a".into(),
                        engine: "b".into(),
                        detail: "made up by the test".into(),
                    })
                    .collect(),
                description: "a test check".into(),
            })
        }
    }

    if !go_available() {
        return;
    }
    let scenario = Scenario::load(&catalog("baseline"), true).unwrap();
    let mut stages = Stages::builtin();
    stages
        .checks
        .push(Box::new(EveryDeliveryIsASignatureDivergence));
    let reports =
        std::env::temp_dir().join(format!("hookshift-e2e-{}-plugged", std::process::id()));
    let _cleanup = Cleanup(reports.clone());
    let opts = RunOptions {
        tools: scenarios::senders::Toolbox {
            repo_root: root(),
            hookshift: PathBuf::from(env!("CARGO_BIN_EXE_hookshift")),
        },
        reports_dir: reports,
        progress: false,
        stages,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt
        .block_on(runner::run(&scenario, opts, std::future::pending()))
        .unwrap();
    assert!(!outcome.verdict.passed, "baseline's signature budget is 0");
    let sig = outcome
        .verdict
        .expectations
        .iter()
        .find(|e| e.category == Category::Signature)
        .unwrap();
    assert!(sig.evaluated && !sig.ok && sig.found > 0, "{sig:?}");
    assert!(outcome
        .summary
        .checks
        .iter()
        .any(|c| c.check == "test-signature"));
}
