//! Data-driven comparator cases: two small captures (and, where it matters,
//! what each sender recorded) in, the expected divergences and suppressions
//! out, all through one `check` helper so the API can change without
//! touching every case.
//!
//! A line of the expected output is `category/severity #attempt rule` for a
//! divergence (`-` instead of `#n` for a history-level one) and
//! `suppressed rule category field xCOUNT` for a suppression.

use std::collections::BTreeMap;

use comparator::model::{Dataset, Exchange, History, Outcome, Recorded, Role, SideData};
use comparator::Rules;
use engine::signing::{self, Scheme, SignInput};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EVENT: &str = "evt_1";
const URL: &str = "https://receiver.example/hook";
/// 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000_000;

/// A request as the legacy sends it, signed over `body` at `ts_ms`.
fn request(body: &str, ts_ms: i64, delivery: &str) -> Exchange {
    let ts = ts_ms / 1000;
    let sig = signing::sign(
        Scheme::Legacy,
        &[SECRET],
        SignInput {
            id: EVENT,
            timestamp: ts,
            body: body.as_bytes(),
        },
    )
    .unwrap();
    let mut headers = vec![
        ("Host".to_owned(), "receiver.example".to_owned()),
        ("User-Agent".to_owned(), "Go-http-client/1.1".to_owned()),
        ("Content-Length".to_owned(), body.len().to_string()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Delivery-Id".to_owned(), delivery.to_owned()),
    ];
    headers.extend(sig);
    headers.push(("Accept-Encoding".to_owned(), "gzip".to_owned()));
    Exchange {
        seq: 0,
        role: Some(Role::Passthrough),
        http_version: "HTTP/1.1".into(),
        request_headers: headers,
        request_body: body.as_bytes().to_vec(),
        response_status: Some(200),
        response_headers: vec![],
        response_body_len: Some(2),
        fault: None,
        latency_us: 50_000,
        started_at: ts_ms,
        note: None,
    }
}

/// Builds one (event, endpoint) for each side.
#[derive(Default, Clone)]
struct Side {
    history: History,
}

impl Side {
    fn new() -> Side {
        Side::default()
    }

    /// Attempt `n` as captured by the egress.
    fn ex(mut self, n: u32, ex: Exchange) -> Side {
        self.history.attempts.entry(n).or_default().exchange = Some(Box::new(ex));
        self
    }

    /// The default request at attempt `n`, changed by `f`.
    fn attempt(self, n: u32, at_ms: i64, f: impl FnOnce(&mut Exchange)) -> Side {
        let mut ex = request(r#"{"order":42}"#, at_ms, "dlv_1");
        f(&mut ex);
        self.ex(n, ex)
    }

    /// What the sender recorded for attempt `n`.
    fn recorded(mut self, n: u32, raw: &str, outcome: Outcome, status: Option<u16>) -> Side {
        let started_at = self
            .history
            .attempts
            .get(&n)
            .and_then(|a| a.exchange.as_ref())
            .map_or(T0, |e| e.started_at);
        self.history.attempts.entry(n).or_default().recorded = Some(Box::new(Recorded {
            raw_outcome: raw.into(),
            outcome,
            status,
            started_at,
        }));
        self.history.in_db = true;
        self
    }

    fn states(mut self, states: &str) -> Side {
        self.history.states = states.split(' ').map(String::from).collect();
        self.history.in_db = true;
        self
    }

    fn data(self) -> SideData {
        let mut d = SideData::default();
        d.secrets.insert(URL.into(), vec![SECRET.into()]);
        d.histories.insert((EVENT.into(), URL.into()), self.history);
        d
    }
}

struct Case {
    legacy: Side,
    engine: Side,
    secondary: Option<Side>,
    rules: Rules,
}

fn case(legacy: Side, engine: Side) -> Case {
    Case {
        legacy,
        engine,
        secondary: None,
        rules: Rules::default(),
    }
}

impl Case {
    fn rules(mut self, toml: &str) -> Case {
        self.rules = Rules::parse(toml, "case").unwrap();
        self
    }
    fn secondary(mut self, s: Side) -> Case {
        self.secondary = Some(s);
        self
    }
    fn engine_secret(self, secret: &str) -> (Case, String) {
        (self, secret.to_owned())
    }
}

fn run(case: Case, engine_secret: Option<String>) -> comparator::Report {
    let mut data = Dataset {
        legacy: case.legacy.data(),
        engine: case.engine.data(),
        secondary: case.secondary.map(Side::data),
        ..Dataset::default()
    };
    if let Some(s) = engine_secret {
        data.engine.secrets.insert(URL.into(), vec![s]);
    }
    comparator::compare(&data, &case.rules, "case", BTreeMap::new(), None)
}

fn lines(report: &comparator::Report) -> Vec<String> {
    let mut out: Vec<String> = report
        .divergences
        .iter()
        .map(|d| {
            format!(
                "{}/{} {} {}",
                d.category.as_str(),
                serde_json::to_value(d.severity).unwrap().as_str().unwrap(),
                d.key.attempt.map_or("-".to_owned(), |a| format!("#{a}")),
                d.rule
            )
        })
        .collect();
    out.extend(report.suppressed.iter().map(|s| {
        format!(
            "suppressed {} {} {} x{}",
            s.rule,
            s.category.as_str(),
            s.field,
            s.count
        )
    }));
    out.sort();
    out
}

#[track_caller]
fn check(case: Case, expected: &[&str]) {
    check_with(case, None, expected)
}

#[track_caller]
fn check_with(case: Case, engine_secret: Option<String>, expected: &[&str]) {
    let report = run(case, engine_secret);
    let actual = lines(&report);
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    if actual != want {
        let detail: Vec<String> = report
            .divergences
            .iter()
            .map(|d| format!("  {} {}: {}", d.category.as_str(), d.rule, d.summary))
            .collect();
        panic!(
            "divergences differ\nexpected:\n  {}\nactual:\n  {}\nsummaries:\n{}",
            want.join("\n  "),
            actual.join("\n  "),
            detail.join("\n")
        );
    }
    // Whatever the case, no report may carry the secret.
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains(SECRET), "the report contains the secret");
    assert!(!comparator::report::html(&report).contains(SECRET));
    assert!(!comparator::report::markdown(&report).contains(SECRET));
}

fn same(body: &str) -> Side {
    Side::new().ex(1, request(body, T0, "dlv_1"))
}

#[test]
fn identical_attempts_have_no_divergence() {
    check(case(same(r#"{"order":42}"#), same(r#"{"order":42}"#)), &[]);
}

#[test]
fn key_order() {
    check(
        case(same(r#"{"a":1,"b":2}"#), same(r#"{"b":2,"a":1}"#)),
        &[
            "payload/major #1 payload.rfc8785.key_order",
            "suppressed signature header header:x-signature x1",
        ],
    );
}

#[test]
fn html_escaping() {
    check(
        case(
            same(r#"{"note":"\u003cb\u003e\u0026"}"#),
            same(r#"{"note":"<b>&"}"#),
        ),
        &[
            "payload/major #1 payload.rfc8785.escaping",
            "suppressed content_length_follows_payload header header:content-length x1",
            "suppressed signature header header:x-signature x1",
        ],
    );
}

#[test]
fn float_format() {
    check(
        case(same(r#"{"n":1,"x":1e+21}"#), same(r#"{"n":1.0,"x":1e21}"#)),
        &[
            "payload/major #1 payload.rfc8785.number_format",
            "suppressed content_length_follows_payload header header:content-length x1",
            "suppressed signature header header:x-signature x1",
        ],
    );
}

#[test]
fn whitespace_only_is_minor() {
    check(
        case(same(r#"{"a":1}"#), same("{\"a\": 1}\n")),
        &[
            "payload/minor #1 payload.rfc8785.whitespace",
            "suppressed content_length_follows_payload header header:content-length x1",
            "suppressed signature header header:x-signature x1",
        ],
    );
}

#[test]
fn a_difference_in_meaning_is_critical_with_a_diff() {
    let report = run(
        case(same(r#"{"a":1,"b":[1,2]}"#), same(r#"{"a":1,"b":[1,3]}"#)),
        None,
    );
    let lines = lines(&report);
    assert_eq!(
        lines,
        [
            "payload/critical #1 payload.rfc8785.meaning",
            "suppressed signature header header:x-signature x1"
        ]
    );
    let diff = report.divergences[0].diff.as_deref().unwrap();
    assert!(diff.contains("-    2") && diff.contains("+    3"), "{diff}");
}

#[test]
fn a_missing_header() {
    let engine = Side::new().attempt(1, T0, |e| {
        e.request_headers.retain(|(n, _)| n != "User-Agent")
    });
    check(
        case(same(r#"{"order":42}"#), engine),
        &["header/major #1 headers.presence"],
    );
}

#[test]
fn header_name_case_on_http1() {
    let lower = |e: &mut Exchange| {
        for (n, _) in &mut e.request_headers {
            if n == "X-Event-Id" {
                *n = "x-event-id".into();
            }
        }
    };
    check(
        case(same(r#"{"order":42}"#), Side::new().attempt(1, T0, lower)),
        &["header/minor #1 headers.case_http1"],
    );
    // HTTP/2 has no header case.
    let h2 = |e: &mut Exchange| {
        lower(e);
        e.http_version = "HTTP/2".into();
    };
    check(
        case(
            Side::new().attempt(1, T0, |e| e.http_version = "HTTP/2".into()),
            Side::new().attempt(1, T0, h2),
        ),
        &[],
    );
}

fn status(s: u16) -> impl FnOnce(&mut Exchange) {
    move |e| e.response_status = Some(s)
}

#[test]
fn a_retry_stopped_early() {
    let legacy = Side::new()
        .attempt(1, T0, status(500))
        .recorded(1, "http_error", Outcome::HttpRetryable, Some(500))
        .attempt(2, T0 + 10_000, status(200))
        .recorded(2, "ok", Outcome::Delivered, Some(200))
        .states("pending in_flight retry_scheduled in_flight succeeded");
    let engine = Side::new()
        .attempt(1, T0, status(500))
        .recorded(1, "server_error", Outcome::HttpRetryable, Some(500))
        .states("pending in_flight failed");
    check(
        case(legacy, engine),
        &[
            "retry_decision/major #1 retry.decision",
            "missing/major #2 pairing.attempt",
            "state_transition/critical - states.canonical_sequence",
        ],
    );
}

const SHORT_SCHEDULES: &str = r#"
[legacy.retry]
schedule = ["1s"]
jitter = "none"
honor_retry_after = false
[engine.retry]
schedule = ["1s"]
jitter = "none"
honor_retry_after = true
"#;

fn rate_limited(e: &mut Exchange) {
    e.response_status = Some(429);
    e.response_headers = vec![("Retry-After".into(), "30".into())];
}

#[test]
fn a_retry_after_ignored() {
    // The engine declares that it honours Retry-After but retried after its schedule's 1 s.
    let side = || {
        Side::new()
            .attempt(1, T0, rate_limited)
            .attempt(2, T0 + 1_050, |_| {})
    };
    check(
        case(side(), side()).rules(SHORT_SCHEDULES),
        &["retry_decision/major #2 retry.retry_after_ignored"],
    );
}

#[test]
fn retry_after_honoured_by_one_side_only() {
    let legacy = Side::new()
        .attempt(1, T0, rate_limited)
        .attempt(2, T0 + 1_050, |_| {});
    let engine = Side::new()
        .attempt(1, T0, rate_limited)
        .attempt(2, T0 + 30_050, |_| {});
    check(
        case(legacy, engine).rules(SHORT_SCHEDULES),
        &[
            "retry_decision/minor #2 retry.retry_after_policy_differs",
            "suppressed signature header header:x-signature x1",
            "suppressed timestamp header header:x-timestamp x1",
        ],
    );
}

#[test]
fn a_delay_off_the_declared_schedule() {
    let legacy = Side::new()
        .attempt(1, T0, status(503))
        .attempt(2, T0 + 1_050, |_| {});
    let engine = Side::new()
        .attempt(1, T0, status(503))
        .attempt(2, T0 + 9_050, |_| {});
    check(
        case(legacy, engine).rules(SHORT_SCHEDULES),
        &[
            "retry_decision/major #2 retry.schedule",
            "suppressed signature header header:x-signature x1",
            "suppressed timestamp header header:x-timestamp x1",
        ],
    );
}

fn timed_out(e: &mut Exchange) {
    e.response_status = None;
    e.response_body_len = None;
    e.fault = Some("timeout".into());
    e.latency_us = 10_000_000;
}

#[test]
fn a_timeout_recorded_as_success() {
    let legacy = Side::new()
        .attempt(1, T0, timed_out)
        .recorded(1, "ok", Outcome::Delivered, None);
    let engine =
        Side::new()
            .attempt(1, T0, timed_out)
            .recorded(1, "timeout", Outcome::Timeout, None);
    check(
        case(legacy, engine),
        &["timeout_classification/critical #1 outcome.fault_as_success"],
    );
}

#[test]
fn success_recorded_before_the_body_was_read() {
    // The receiver answered 200 and stalled its body; the legacy (early
    // success) recorded success, the engine read the body, failed and retried.
    let stalled = |e: &mut Exchange| {
        e.response_status = Some(200);
        e.response_body_len = Some(0);
        e.fault = Some("timeout".into());
        e.note = Some("partial body: 0 of 512 bytes".into());
        e.latency_us = 10_000_000;
    };
    let legacy = Side::new()
        .attempt(1, T0, stalled)
        .recorded(1, "ok", Outcome::Delivered, Some(200))
        .states("pending in_flight succeeded");
    let engine = Side::new()
        .attempt(1, T0, stalled)
        .recorded(1, "body_read", Outcome::Body, Some(200))
        .attempt(2, T0 + 20_000, |_| {})
        .recorded(2, "delivered", Outcome::Delivered, Some(200))
        .states("pending in_flight retry_scheduled in_flight succeeded");
    let report = run(case(legacy.clone(), engine.clone()), None);
    let d = report
        .divergences
        .iter()
        .find(|d| d.rule == "outcome.success_before_body")
        .expect("the early success is reported");
    assert_eq!(d.legacy["recorded_outcome"], "ok");
    assert_eq!(d.engine["recorded_outcome"], "body_read");
    assert_eq!(d.legacy["exchange"]["fault"], "timeout");
    check(
        case(legacy, engine),
        &[
            "timeout_classification/critical #1 outcome.success_before_body",
            "retry_decision/major #1 retry.decision",
            "extra/major #2 pairing.attempt",
            "state_transition/major - states.canonical_sequence",
        ],
    );
}

#[test]
fn timeout_and_body_failure_are_equivalent_by_default() {
    let legacy =
        Side::new()
            .attempt(1, T0, timed_out)
            .recorded(1, "timeout", Outcome::Timeout, None);
    let engine =
        Side::new()
            .attempt(1, T0, timed_out)
            .recorded(1, "body_read", Outcome::Body, Some(200));
    check(
        case(legacy.clone(), engine.clone()),
        &["suppressed outcomes.equivalent timeout_classification outcome x1"],
    );
    check(
        case(legacy, engine).rules("[outcomes]\nequivalent = []\n"),
        &["timeout_classification/major #1 outcome.class"],
    );
}

#[test]
fn a_shadow_only_attempt() {
    let legacy = Side::new().attempt(1, T0, |e| {
        e.role = Some(Role::Primary);
        e.response_status = Some(500);
    });
    let engine = Side::new()
        .attempt(1, T0, |e| {
            e.role = Some(Role::Shadow);
            e.response_status = Some(500);
        })
        .attempt(2, T0 + 10_000, |e| e.role = Some(Role::ShadowOnly));
    check(
        case(legacy, engine),
        &[
            "retry_decision/major #1 retry.decision",
            "extra/major #2 pairing.shadow_only",
        ],
    );
}

/// The engine's own delivery id and a timestamp a few seconds later: what every real pair looks like.
fn engine_ids(e: &mut Exchange) {
    *e = request(r#"{"order":42}"#, T0 + 3_000, "dlv_engine_7");
}

#[test]
fn noise_suppressed_by_a_rule() {
    check(
        case(
            same(r#"{"order":42}"#),
            Side::new().attempt(1, T0, engine_ids),
        ),
        &[
            "suppressed delivery-id header header:x-delivery-id x1",
            "suppressed signature header header:x-signature x1",
            "suppressed timestamp header header:x-timestamp x1",
        ],
    );
}

#[test]
fn a_timestamp_beyond_the_allowed_skew_is_reported() {
    let skewed = |e: &mut Exchange| {
        *e = request(r#"{"order":42}"#, T0 + 3_000, "dlv_engine_7");
        // Signed 20 minutes before the egress saw it.
        *e = Exchange {
            started_at: T0 + 1_203_000,
            ..e.clone()
        };
    };
    check(
        case(same(r#"{"order":42}"#), Side::new().attempt(1, T0, skewed)),
        &[
            "header/major #1 noise.timestamp",
            "suppressed delivery-id header header:x-delivery-id x1",
            "suppressed signature header header:x-signature x1",
        ],
    );
}

fn nonce(v: &'static str) -> impl FnOnce(&mut Exchange) {
    move |e| e.request_headers.push(("X-Nonce".into(), v.into()))
}

#[test]
fn noise_learned_from_a_secondary_legacy_run() {
    let legacy = || Side::new().attempt(1, T0, nonce("a1"));
    let engine = || Side::new().attempt(1, T0, nonce("b2"));
    // Without a second legacy run the nonce is a divergence...
    check(case(legacy(), engine()), &["header/major #1 headers.value"]);
    // ...with one where the legacy's own nonce changes too, it is noise.
    check(
        case(legacy(), engine()).secondary(Side::new().attempt(1, T0, nonce("c3"))),
        &["suppressed learned header header:x-nonce x1"],
    );
    // A field the legacy runs agree on stays a divergence.
    check(
        case(legacy(), engine()).secondary(Side::new().attempt(1, T0, nonce("a1"))),
        &["header/major #1 headers.value"],
    );
}

#[test]
fn a_different_secret_fails_the_recomputed_signature() {
    let (c, secret) =
        case(same(r#"{"order":42}"#), same(r#"{"order":42}"#)).engine_secret("whsec_other");
    // The engine's request was signed with the legacy's secret here, so its
    // own signature does not verify against the engine's (different) secret either.
    check_with(
        c,
        Some(secret),
        &[
            "signature/critical #1 signature.verify_own",
            "signature/critical #1 signature.secret_differs",
        ],
    );
}

#[test]
fn an_engine_on_another_scheme() {
    let report = run(
        case(same(r#"{"order":42}"#), same(r#"{"order":42}"#))
            .rules("[engine]\nprofile = \"standard-webhooks\"\n"),
        None,
    );
    let rules: Vec<&str> = report.divergences.iter().map(|d| d.rule.as_str()).collect();
    assert!(rules.contains(&"signature.scheme"), "{rules:?}");
    assert!(rules.contains(&"signature.verify_own"), "{rules:?}");
}

#[test]
fn a_history_only_one_side_has() {
    let mut data = Dataset {
        legacy: same(r#"{"a":1}"#).data(),
        ..Dataset::default()
    };
    data.engine.secrets.insert(URL.into(), vec![SECRET.into()]);
    let r = comparator::compare(&data, &Rules::default(), "x", BTreeMap::new(), None);
    assert_eq!(lines(&r), ["missing/critical - pairing.history"]);
    assert_eq!(r.counts["missing"], 1);
    assert_eq!(r.verdict, comparator::Verdict::Fail);
}
