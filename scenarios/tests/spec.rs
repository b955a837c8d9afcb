//! The scenario file format: good files load, bad files are refused with
//! the file, line, column and key, and every catalog file is valid in both
//! its full and its short form.

use scenarios::spec::{Behaviour, Budget, Category, Limit, Scenario, SenderSpec, SpecError};
use std::path::Path;

const GOOD: &str = r#"
name = "demo"
description = "a test"
seed = 3

[endpoints]
count = 10
mix = [
  { behaviour = "ok", weight = 3, latency = { min = "5ms", max = "20ms", slow_fraction = 0.1, slow = "1s" } },
  { behaviour = "flaky", probability = 0.25, status = 502 },
  { behaviour = "rate_limited", retry_after_s = 3, recover_after = 2 },
  { behaviour = "client_error", status = 410 },
  { behaviour = "hang" },
  { behaviour = "process_then_timeout" },
  { behaviour = "reset" },
  { behaviour = "redirect", status = 301 },
  { behaviour = "stalled_body", bytes = 100, sent_bytes = 5 },
  { behaviour = "huge_body", bytes = 1048576 },
]

[traffic]
rate_per_s = 12.5
count = 100
fan_out = 2

[senders]
timeout = "1s"
retry_schedule = ["100ms", "2s"]

[senders.legacy]
early_success = false

[senders.engine]
profile = "standard-webhooks"
lease = "5s"

[ramp]
stages = [0, 5, 100]

[[faults]]
at = "2s"
sender = "legacy"
action = "kill9-restart"

[expectations]
expose = ["payload"]
budget = { retry_decision = "0.5%", state_transition = 2 }

[short]
endpoints = { count = 4 }
traffic = { count = 5, rate_per_s = 50 }
senders = { settle_timeout = "10s" }
faults = []
"#;

fn parse(text: &str, short: bool) -> Result<Scenario, SpecError> {
    Scenario::parse(text, Path::new("test.toml"), short)
}

/// Expects `text` to be refused at `line` with `key` named and `words` in
/// the message.
#[track_caller]
fn check_bad(text: &str, line: usize, key: &str, words: &str) {
    check_bad_form(text, false, line, key, words)
}

#[track_caller]
fn check_bad_form(text: &str, short: bool, line: usize, key: &str, words: &str) {
    match parse(text, short) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            let shown = e.to_string();
            let SpecError::Invalid {
                file,
                line: l,
                key: k,
                message,
                ..
            } = e
            else {
                panic!("not an Invalid error: {shown}")
            };
            assert_eq!(file, "test.toml", "{shown}");
            assert_eq!((l, k.as_str()), (line, key), "{shown}");
            assert!(message.contains(words), "{shown} lacks `{words}`");
            assert!(shown.starts_with(&format!("test.toml:{line}:")), "{shown}");
        }
    }
}

/// GOOD with one line replaced.
fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn a_good_file_loads_with_every_behaviour() {
    let s = parse(GOOD, false).unwrap();
    assert_eq!(s.name, "demo");
    assert_eq!(s.endpoints.count, 10);
    assert_eq!(s.endpoints.mix.len(), 10);
    assert_eq!(s.endpoints.mix[0].weight, 3);
    assert_eq!(
        s.endpoints.mix[1].behaviour,
        Behaviour::Flaky {
            probability: 0.25,
            status: 502
        }
    );
    assert_eq!(s.endpoints.mix[2].recover_after, Some(2));
    assert_eq!(
        s.endpoints.mix[8].behaviour,
        Behaviour::StalledBody {
            declared_bytes: 100,
            sent_bytes: 5
        }
    );
    assert_eq!(s.traffic.limit, Limit::Count(100));
    assert_eq!(s.senders.retry_schedule.len(), 2);
    assert!(matches!(
        s.senders.legacy,
        SenderSpec::Legacy {
            early_success: false,
            ..
        }
    ));
    assert!(
        matches!(&s.senders.engine, SenderSpec::Engine { profile, .. } if profile == "standard-webhooks")
    );
    assert_eq!(s.faults.len(), 1);
    assert_eq!(s.expectations.expose, vec![Category::Payload]);
    assert_eq!(
        s.expectations.budget_for(Category::RetryDecision),
        Some(Budget::Percent(0.5))
    );
    // Exposed and not budgeted: unlimited. Neither: zero.
    assert_eq!(s.expectations.budget_for(Category::Payload), None);
    assert_eq!(
        s.expectations.budget_for(Category::Signature),
        Some(Budget::Count(0))
    );
    assert!(!s.short);
}

#[test]
fn the_short_block_overrides_only_what_it_names() {
    let s = parse(GOOD, true).unwrap();
    assert!(s.short);
    assert_eq!(s.endpoints.count, 4);
    assert_eq!(s.traffic.limit, Limit::Count(5));
    assert_eq!(s.traffic.rate_per_s, 50.0);
    assert_eq!(s.senders.settle_timeout.as_secs(), 10);
    assert!(s.faults.is_empty());
    assert_eq!(s.senders.timeout.as_millis(), 1000, "not overridden");
}

#[test]
fn syntax_errors_name_the_line() {
    let text = with("seed = 3", "seed = = 3");
    let e = parse(&text, false).unwrap_err().to_string();
    assert!(e.starts_with("test.toml:4:"), "{e}");
}

#[test]
fn unknown_keys_are_refused_where_they_are() {
    let text = with("seed = 3", "seed = 3\ncolour = \"red\"");
    check_bad(&text, 5, "colour", "unknown field `colour`");
    let text = with(
        "{ behaviour = \"reset\" }",
        "{ behaviour = \"reset\", sped = 1 }",
    );
    check_bad(
        &text,
        line_of(&text, "sped"),
        "endpoints.mix[6].sped",
        "unknown field `sped`",
    );
    let text = with("fan_out = 2", "fan_out = 2\nburst = true");
    check_bad(
        &text,
        line_of(&text, "burst"),
        "traffic.burst",
        "unknown field",
    );
}

#[test]
fn wrong_types_name_the_key() {
    let text = with("rate_per_s = 12.5", "rate_per_s = \"fast\"");
    check_bad(
        &text,
        line_of(&text, "fast"),
        "traffic.rate_per_s",
        "invalid type",
    );
}

#[test]
fn values_that_make_no_sense_name_the_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "probability = 0.25",
            "probability = 2.0",
            "endpoints.mix[1].probability",
            "between 0 and 1",
        ),
        (
            "status = 502",
            "status = 404",
            "endpoints.mix[1].status",
            "5xx",
        ),
        (
            "status = 410",
            "status = 429",
            "endpoints.mix[3].status",
            "permanent 4xx",
        ),
        (
            "{ behaviour = \"hang\" }",
            "{ behaviour = \"hang\", status = 500 }",
            "endpoints.mix[4].status",
            "does not apply",
        ),
        (
            "{ behaviour = \"reset\" }",
            "{ behaviour = \"teleport\" }",
            "endpoints.mix[6].behaviour",
            "unknown behaviour",
        ),
        (
            "sent_bytes = 5",
            "sent_bytes = 500",
            "endpoints.mix[8].sent_bytes",
            "smaller than bytes",
        ),
        (
            "max = \"20ms\"",
            "max = \"2ms\"",
            "endpoints.mix[0].latency.max",
            "below `min`",
        ),
        (
            "min = \"5ms\"",
            "min = \"5 parsecs\"",
            "endpoints.mix[0].latency.min",
            "unknown unit",
        ),
        (
            "count = 100",
            "count = 100\nduration = \"5s\"",
            "traffic.duration",
            "not both",
        ),
        (
            "fan_out = 2",
            "fan_out = 11",
            "traffic.fan_out",
            "between 1 and endpoints.count",
        ),
        (
            "retry_schedule = [\"100ms\", \"2s\"]",
            "retry_schedule = [\"100ms\", \"soon\"]",
            "senders.retry_schedule[1]",
            "not a duration",
        ),
        (
            "lease = \"5s\"",
            "lease = \"500ms\"",
            "senders.engine.lease",
            "longer than senders.timeout",
        ),
        (
            "profile = \"standard-webhooks\"",
            "profile = \"fancy\"",
            "senders.engine.profile",
            "unknown profile",
        ),
        (
            "early_success = false",
            "early_success = false\nprofile = \"legacy\"",
            "senders.legacy.profile",
            "does not apply",
        ),
        (
            "stages = [0, 5, 100]",
            "stages = [0, 50, 5]",
            "ramp.stages[2]",
            "increasing",
        ),
        (
            "sender = \"legacy\"",
            "sender = \"both\"",
            "faults[0].sender",
            "unknown sender",
        ),
        (
            "action = \"kill9-restart\"",
            "action = \"pause\"",
            "faults[0].action",
            "unknown action",
        ),
        (
            "expose = [\"payload\"]",
            "expose = [\"payload\", \"vibes\"]",
            "expectations.expose[1]",
            "unknown divergence category",
        ),
        (
            "state_transition = 2",
            "state_transition = 2, colour = 1",
            "expectations.budget.colour",
            "unknown divergence category",
        ),
        (
            "\"0.5%\"",
            "\"lots\"",
            "expectations.budget.retry_decision",
            "percentage",
        ),
        (
            "name = \"demo\"",
            "name = \"a b\"",
            "name",
            "letters, digits",
        ),
    ];
    for (from, to, key, words) in cases {
        let text = with(from, to);
        let needle = to.lines().last().unwrap();
        check_bad(&text, line_of(&text, needle), key, words);
    }
}

#[test]
fn errors_in_the_short_block_point_at_it() {
    let text = with(
        "traffic = { count = 5, rate_per_s = 50 }",
        "traffic = { count = 0, rate_per_s = 50 }",
    );
    // Refused whichever form is asked for, pointing at [short].
    for short in [false, true] {
        check_bad_form(
            &text,
            short,
            line_of(&text, "count = 0"),
            "short.traffic.count",
            "at least 1",
        );
    }
    let text = with(
        "endpoints = { count = 4 }",
        "endpoints = { count = 4, mix = [] }",
    );
    check_bad(
        &text,
        line_of(&text, "mix = []"),
        "short.endpoints.mix",
        "unknown field",
    );
}

#[test]
fn short_form_of_a_file_without_one_is_refused() {
    let cut = GOOD.find("[short]").unwrap();
    let text = &GOOD[..cut];
    assert!(parse(text, false).is_ok());
    let e = parse(text, true).unwrap_err().to_string();
    assert!(e.contains("no [short] block"), "{e}");
}

#[test]
fn a_missing_file_names_it() {
    let e = Scenario::load(Path::new("/nonexistent/x.toml"), false)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/x.toml: cannot read"), "{e}");
}

#[test]
fn every_catalog_file_is_valid_in_both_forms() {
    let dir = scenarios::catalog_dir();
    let listed = scenarios::list_catalog(&dir).unwrap();
    let names: Vec<String> = listed
        .iter()
        .map(|(p, _)| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in [
        "baseline",
        "flaky-5xx",
        "slow-10-percent",
        "timeout-after-processing",
        "rate-limited-429",
        "permanent-4xx",
        "redirects",
        "body-stall",
        "payload-quirks",
        "crash-restart",
        "ramp",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "catalog lacks {required}"
        );
    }
    for (path, full) in listed {
        let full = full.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            full.name,
            path.file_stem().unwrap().to_string_lossy(),
            "name matches the file"
        );
        assert!(
            !full.description.is_empty(),
            "{}: no description",
            full.name
        );
        let short = Scenario::load(&path, true).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            short.traffic.event_count() <= 100,
            "{}: the short form sends {} events; keep CI fast",
            full.name,
            short.traffic.event_count()
        );
    }
}
