//! The gate's pure evaluation: budgets (counts and rates), rollback
//! categories, minimum samples, soak, health, the last stage, and policy
//! errors that name the key.

use std::collections::BTreeMap;

use comparator::diff::{Category, DiffResult, DivKey, Divergence, Severity};
use comparator::gate::{evaluate, Action, Policy};
use comparator::report;
use serde_json::Value;

const POLICY: &str = r#"
stages = [0, 1, 5, 25, 50, 100]
[budgets]
signature = 0
retry_decision = "1%"
[samples]
min_attempt_pairs = 100
min_histories = 100
soak = "10m"
[[stage]]
percent = 50
min_attempt_pairs = 1000
"#;

/// A report over `pairs` attempt pairs (one history each) spread over `secs`, with divergences of these categories.
fn report(pairs: u64, secs: i64, divs: &[(Category, Severity)]) -> comparator::Report {
    let mut r = DiffResult {
        attempt_pairs: pairs,
        attempts: pairs * 2,
        histories: pairs,
        ..DiffResult::default()
    };
    for i in 0..pairs {
        r.pair_times.push((
            1_700_000_000_000 + (i as i64 * secs * 1000) / pairs.max(1) as i64,
            false,
        ));
    }
    r.pair_times.push((1_700_000_000_000 + secs * 1000, false));
    for (i, (c, s)) in divs.iter().enumerate() {
        r.divergences.push(Divergence {
            category: *c,
            severity: *s,
            key: DivKey {
                event_id: format!("evt_{i}"),
                endpoint_url: "https://r.example/".into(),
                attempt: Some(1),
            },
            field: "f".into(),
            summary: "s".into(),
            rule: "r".into(),
            legacy: Value::Null,
            engine: Value::Null,
            diff: None,
            at: None,
        });
    }
    report::build("t", r, 0, &[], false, BTreeMap::new(), None)
}

fn policy() -> Policy {
    Policy::parse(POLICY, "gate.toml").unwrap()
}

#[test]
fn advances_when_every_budget_is_met() {
    let d = evaluate(&policy(), &report(500, 900, &[]), 5.0, None).unwrap();
    assert_eq!(d.action, Action::Advance, "{:?}", d.reasons);
    assert_eq!(d.target, 25.0);
    assert_eq!(d.action.exit_code(), 0);
}

#[test]
fn a_rate_budget_holds_and_a_signature_rolls_back() {
    // 2 retry decisions in 100 histories = 2% > 1%: hold.
    let two = [(Category::RetryDecision, Severity::Major); 2];
    let d = evaluate(&policy(), &report(100, 900, &two), 5.0, None).unwrap();
    assert_eq!(d.action, Action::Hold, "{:?}", d.reasons);
    assert!(
        d.reasons[0].starts_with("retry_decision: 2 divergences"),
        "{:?}",
        d.reasons
    );
    // 1 in 500 = 0.2%: within budget.
    let one = [(Category::RetryDecision, Severity::Major)];
    assert_eq!(
        evaluate(&policy(), &report(500, 900, &one), 5.0, None)
            .unwrap()
            .action,
        Action::Advance
    );
    // Any signature divergence: rollback to 0.
    let sig = [(Category::Signature, Severity::Critical)];
    let d = evaluate(&policy(), &report(500, 900, &sig), 25.0, None).unwrap();
    assert_eq!(
        (d.action, d.target, d.action.exit_code()),
        (Action::Rollback, 0.0, 2)
    );
    assert!(d.reasons[0].contains("some critical"), "{:?}", d.reasons);
    // Unlisted categories have budget 0; header holds (not in rollback_on).
    let hdr = [(Category::Header, Severity::Minor)];
    assert_eq!(
        evaluate(&policy(), &report(500, 900, &hdr), 5.0, None)
            .unwrap()
            .action,
        Action::Hold
    );
}

#[test]
fn samples_and_soak_are_required_per_stage() {
    let d = evaluate(&policy(), &report(50, 900, &[]), 5.0, None).unwrap();
    assert_eq!(d.action, Action::Hold);
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("50 attempt pairs, 100 required")),
        "{:?}",
        d.reasons
    );
    let d = evaluate(&policy(), &report(500, 900, &[]), 50.0, None).unwrap();
    assert!(
        d.reasons.iter().any(|r| r.contains("1000 required at 50%")),
        "{:?}",
        d.reasons
    );
    let d = evaluate(&policy(), &report(500, 120, &[]), 5.0, None).unwrap();
    assert!(
        d.reasons.iter().any(|r| r.starts_with("soak: 120s")),
        "{:?}",
        d.reasons
    );
    // Only traffic since the stage began counts.
    let r = report(500, 900, &[]);
    let since = r.window.start_ms.unwrap() + 800_000;
    let d = evaluate(&policy(), &r, 5.0, Some(since)).unwrap();
    assert_eq!(d.action, Action::Hold, "{:?}", d.reasons);
}

#[test]
fn the_last_stage_holds() {
    let d = evaluate(&policy(), &report(5000, 900, &[]), 100.0, None).unwrap();
    assert_eq!(d.action, Action::Hold);
    assert!(d.reasons.iter().any(|r| r.contains("last stage")));
}

#[test]
fn policy_errors_name_the_key() {
    let e = Policy::parse("stages = [0, 5, 1]", "g.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("g.toml: key `stages`"), "{e}");
    let e = Policy::parse("stages = [0, 1]\n[budgets]\nsignatur = 0\n", "g.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("budgets.signatur") && e.contains("unknown category"),
        "{e}"
    );
    let e = Policy::parse("stages = [0, 1]\n[budgets]\npayload = \"lots\"\n", "g.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("budgets.payload"), "{e}");
    let e = Policy::parse("stages = [0, 1]\n[samples]\nsoak = \"ten\"\n", "g.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("samples.soak"), "{e}");
    let e = Policy::parse("stages = [0, 1]\n[[stage]]\npercent = 7\n", "g.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("stage[0].percent"), "{e}");
}
