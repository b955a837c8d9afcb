//! The engine's `legacy` profile reproduces recorded answers of the real Go
//! sender byte for byte, without needing Go: every line of
//! `fixtures/vectors/legacy-golden.jsonl` is `{"input": <oracle input line>,
//! "output": <legacy-sender oracle's answer>}`. The inputs are
//! `fixtures/vectors/legacy-inputs.jsonl` (hand-picked edge cases plus generated
//! cases with a fixed seed); `scripts/gen-legacy-vectors.sh` pipes them through
//! the oracle to regenerate the golden file (`--regen-inputs` rewrites the
//! inputs first, with the ignored test `write_legacy_inputs`).

use std::path::PathBuf;

use engine::conformance::{self, Case, Outcome};
use engine::profile;

/// Seed and count of the generated part of `legacy-inputs.jsonl`.
const SEED: u64 = 20_240_601;
const GENERATED: usize = 120;

/// The repository root: `{engine}/..`, or `HOOKSHIFT_REPO_ROOT`.
fn repo_root() -> PathBuf {
    match std::env::var_os("HOOKSHIFT_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn vectors_dir() -> PathBuf {
    repo_root().join("fixtures/vectors")
}

fn read_lines(name: &str) -> Vec<String> {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines().map(str::to_owned).collect()
}

#[test]
fn engine_reproduces_every_golden_vector() {
    let legacy = profile::by_name("legacy").unwrap();
    let lines = read_lines("legacy-golden.jsonl");
    assert!(lines.len() >= 150, "only {} golden vectors", lines.len());
    let mut failures = Vec::new();
    let mut refused = 0;
    for (i, line) in lines.iter().enumerate() {
        let where_ = format!("legacy-golden.jsonl line {}", i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{where_}: not JSON: {e}"));
        let case: Case = serde_json::from_value(v["input"].clone())
            .unwrap_or_else(|e| panic!("{where_}: field \"input\": {e}"));
        let expected = conformance::parse_oracle_output(&v["output"].to_string())
            .unwrap_or_else(|e| panic!("{where_}: field \"output\": {e}"));
        refused += usize::from(matches!(expected, Outcome::Refused(_)));
        let ours = conformance::engine_outcome(&legacy, &case);
        if let Err(mismatch) = conformance::compare(&ours, &expected) {
            failures.push(format!(
                "{where_}:\n  input {}\n{mismatch}",
                case.input_line()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden vectors differ:\n\n{}",
        failures.len(),
        lines.len(),
        failures.join("\n")
    );
    assert!(
        refused >= 20,
        "only {refused} vectors where Go refuses the payload"
    );
    assert!(lines.len() - refused >= 100);
}

#[test]
fn golden_file_covers_the_committed_inputs_in_order() {
    let inputs = read_lines("legacy-inputs.jsonl");
    let golden = read_lines("legacy-golden.jsonl");
    assert_eq!(
        inputs.len(),
        golden.len(),
        "legacy-inputs.jsonl and legacy-golden.jsonl differ in length; run scripts/gen-legacy-vectors.sh"
    );
    for (i, (input, line)) in inputs.iter().zip(&golden).enumerate() {
        let want: Case = serde_json::from_str(input)
            .unwrap_or_else(|e| panic!("legacy-inputs.jsonl line {}: {e}", i + 1));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let got: Case = serde_json::from_value(v["input"].clone()).unwrap();
        assert_eq!(
            got,
            want,
            "legacy-golden.jsonl line {} is stale; run scripts/gen-legacy-vectors.sh",
            i + 1
        );
    }
}

/// Rewrites `fixtures/vectors/legacy-inputs.jsonl`: the hand-picked edge cases,
/// then `GENERATED` cases from the conformance generator with seed `SEED`.
/// Run by `scripts/gen-legacy-vectors.sh --regen-inputs`.
#[test]
#[ignore = "writes fixtures; run by scripts/gen-legacy-vectors.sh --regen-inputs"]
fn write_legacy_inputs() {
    assert_eq!(
        std::env::var("HOOKSHIFT_WRITE_LEGACY_INPUTS").as_deref(),
        Ok("1"),
        "set HOOKSHIFT_WRITE_LEGACY_INPUTS=1 to rewrite fixtures/vectors/legacy-inputs.jsonl"
    );
    let mut cases = conformance::edge_cases();
    cases.extend(conformance::sample_cases(SEED, GENERATED));
    let mut text = String::new();
    for case in &cases {
        text.push_str(&case.input_line());
        text.push('\n');
    }
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("legacy-inputs.jsonl");
    std::fs::write(&path, text).unwrap();
    println!("wrote {} cases to {}", cases.len(), path.display());
}
