//! The loaders against real SQLite files: a capture store made with the
//! proxy's migration, an engine database written through `engine::store`,
//! and a legacy database with the DDL of fixtures/legacy-go/internal/store,
//! read through the fixture's state-transitions query. Then the whole
//! `comparator::run` → `write_reports` path.

use std::path::Path;
use std::str::FromStr;

use comparator::{CompareInput, Rules, Verdict};
use engine::profile::{self, Message};
use engine::state::{DeliveryState, OutcomeClass};
use engine::store::{AttemptRecord, EndpointSpec, IngestOutcome, NewEvent, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const URL: &str = "https://receiver.example/hook";
const T0: i64 = 1_700_000_000_000;
const PAYLOAD: &str = r#"{"order":42,"note":"<b>"}"#;

/// The legacy's tables, copied from fixtures/legacy-go/internal/store/store.go.
const LEGACY_DDL: &str = r#"
CREATE TABLE endpoints (id TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL,
    event_types TEXT NOT NULL DEFAULT '[]', description TEXT NOT NULL DEFAULT '',
    disabled INTEGER NOT NULL DEFAULT 0, deleted_at TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE events (id TEXT PRIMARY KEY, type TEXT NOT NULL, tenant TEXT, payload TEXT NOT NULL,
    payload_hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE deliveries (id TEXT PRIMARY KEY, event_id TEXT NOT NULL REFERENCES events(id),
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id), status TEXT NOT NULL,
    attempt_count INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT, last_error TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE attempts (id TEXT PRIMARY KEY, delivery_id TEXT NOT NULL REFERENCES deliveries(id),
    attempt_no INTEGER NOT NULL, status_code INTEGER, outcome TEXT NOT NULL, error TEXT,
    duration_ms BIGINT NOT NULL, request_headers TEXT NOT NULL, delivery_status TEXT NOT NULL,
    started_at TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE (delivery_id, attempt_no));
"#;

async fn sqlite(path: &Path, ddl: &str) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    sqlx::raw_sql(ddl).execute(&pool).await.unwrap();
    pool
}

fn legacy_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// The request the legacy profile puts on the wire, as the egress records it.
fn wire(delivery: &str, ts_ms: i64) -> (String, Vec<u8>) {
    let p = profile::by_name("legacy").unwrap();
    let r = p
        .render(
            &[SECRET],
            &Message {
                event_id: "evt_1",
                delivery_id: Some(delivery),
                event_type: "order.created",
                timestamp: ts_ms / 1000,
                payload: PAYLOAD.as_bytes(),
            },
        )
        .unwrap();
    let mut headers = vec![("Host".to_owned(), "receiver.example".to_owned())];
    headers.extend(p.wire_headers(&r));
    (serde_json::to_string(&headers).unwrap(), r.body)
}

/// One egress exchange: (sender, attempt, started_at, status, fault, note, delivery id).
type Row<'a> = (
    &'a str,
    i64,
    i64,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
);

async fn captures(path: &Path, rows: &[Row<'_>]) {
    let pool = sqlite(
        path,
        include_str!("../../proxy/migrations/sqlite/0001_captures.sql"),
    )
    .await;
    sqlx::query("INSERT INTO capture_meta (key, value) VALUES ('schema_version', '1')")
        .execute(&pool)
        .await
        .unwrap();
    for (sender, attempt, at, status, fault, note, delivery) in rows {
        let (headers, body) = wire(delivery, *at);
        sqlx::query(
            "INSERT INTO egress_exchanges (sender, role, source, event_id, endpoint_url, attempt, ramp_bp, method, target, \
             http_version, request_headers, request_body, response_status, response_headers, response_body, fault, latency_us, started_at, note) \
             VALUES (?, 'passthrough', 'receiver', 'evt_1', ?, ?, 0, 'POST', ?, 'HTTP/1.1', ?, ?, ?, ?, ?, ?, 40000, ?, ?)",
        )
        .bind(sender)
        .bind(URL)
        .bind(attempt)
        .bind(URL)
        .bind(headers)
        .bind(body)
        .bind(status)
        .bind(status.map(|_| "[[\"Content-Length\",\"2\"]]"))
        .bind(status.map(|_| b"ok".to_vec()))
        .bind(fault)
        .bind(at)
        .bind(note)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
}

/// (attempt, status, outcome, delivery_status, started_at)
async fn legacy_db(path: &Path, attempts: &[(i64, Option<i64>, &str, &str, i64)]) {
    let pool = sqlite(path, LEGACY_DDL).await;
    let t = legacy_time(T0 - 1000);
    sqlx::query("INSERT INTO endpoints (id, url, secret, created_at, updated_at) VALUES ('ep_1', ?, ?, ?, ?)")
        .bind(URL)
        .bind(SECRET)
        .bind(&t)
        .bind(&t)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO events (id, type, payload, payload_hash, created_at) VALUES ('evt_1', 'order.created', ?, 'h', ?)")
        .bind(PAYLOAD)
        .bind(&t)
        .execute(&pool)
        .await
        .unwrap();
    let last = attempts.last().map(|a| a.3).unwrap_or("pending");
    sqlx::query("INSERT INTO deliveries (id, event_id, endpoint_id, status, attempt_count, created_at, updated_at) VALUES ('dlv_legacy', 'evt_1', 'ep_1', ?, ?, ?, ?)")
        .bind(last)
        .bind(attempts.len() as i64)
        .bind(&t)
        .bind(&t)
        .execute(&pool)
        .await
        .unwrap();
    for (n, status, outcome, dstatus, at) in attempts {
        sqlx::query(
            "INSERT INTO attempts VALUES (?, 'dlv_legacy', ?, ?, ?, NULL, 40, '[]', ?, ?, ?)",
        )
        .bind(format!("att_{n}"))
        .bind(n)
        .bind(status)
        .bind(outcome)
        .bind(dstatus)
        .bind(legacy_time(*at))
        .bind(legacy_time(at + 40))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
}

/// (outcome, to, status, started_at)
async fn engine_db(path: &Path, attempts: &[(OutcomeClass, DeliveryState, Option<i64>, i64)]) {
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url).await.unwrap();
    let spec = EndpointSpec {
        url: URL.into(),
        profile: Some("legacy".into()),
        ..EndpointSpec::default()
    };
    store
        .upsert_endpoint("ep_1", &spec, Some(SECRET), T0 - 1000)
        .await
        .unwrap();
    let ev = NewEvent {
        id: "evt_1".into(),
        event_type: "order.created".into(),
        tenant: None,
        payload_raw: PAYLOAD.as_bytes().to_vec(),
        payload_parsed: PAYLOAD.into(),
        request_hash: "h".into(),
        idempotency_key: None,
    };
    let out = store.ingest(&[ev], T0 - 500).await.unwrap();
    assert!(matches!(out[0], IngestOutcome::Inserted(_)));
    for (outcome, to, status, at) in attempts {
        let claimed = store.claim("w1", *at, at + 60_000, 1, &[]).await.unwrap();
        let c = &claimed[0];
        let rec = AttemptRecord {
            delivery_id: c.id.clone(),
            endpoint_id: c.endpoint_id.clone(),
            owner: "w1".into(),
            attempt: c.attempt,
            to: *to,
            next_attempt_at: (*to == DeliveryState::RetryScheduled).then_some(at + 100),
            outcome: *outcome,
            request_headers: "[]".into(),
            body_sha256: "x".into(),
            response_status: *status,
            response_headers: None,
            response_body: None,
            response_truncated: false,
            duration_ms: 40,
            error: None,
            started_at: *at,
            finished_at: at + 40,
            disable_endpoint: None,
        };
        let recorded = store
            .record_attempt(&rec, &engine::breaker::BreakerPolicy::default())
            .await
            .unwrap();
        assert!(recorded.moved);
    }
    store.close().await;
}

fn url(p: &Path) -> String {
    format!("sqlite://{}", p.display())
}

fn input(dir: &Path) -> CompareInput {
    CompareInput {
        name: "test".into(),
        captures: Some(url(&dir.join("captures.db"))),
        engine_db: Some(url(&dir.join("engine.db"))),
        legacy_db: Some(url(&dir.join("legacy.db"))),
        rules: Rules::parse("[legacy.retry]\nschedule = [\"10s\"]\njitter = \"none\"\n[engine.retry]\nschedule = [\"10s\"]\njitter = \"none\"\n", "rules").unwrap(),
        ..CompareInput::default()
    }
}

#[tokio::test]
async fn identical_senders_through_real_stores_have_no_divergence() {
    let dir = tempfile::tempdir().unwrap();
    captures(
        &dir.path().join("captures.db"),
        &[
            ("legacy", 1, T0, Some(200), None, None, "dlv_legacy"),
            ("engine", 1, T0 + 2_000, Some(200), None, None, "dlv_engine"),
        ],
    )
    .await;
    legacy_db(
        &dir.path().join("legacy.db"),
        &[(1, Some(200), "ok", "success", T0)],
    )
    .await;
    engine_db(
        &dir.path().join("engine.db"),
        &[(
            OutcomeClass::Delivered,
            DeliveryState::Succeeded,
            Some(200),
            T0 + 2_000,
        )],
    )
    .await;

    let mut stages = Vec::new();
    let report = comparator::run(&input(dir.path()), |stage, _| stages.push(stage.to_owned()))
        .await
        .unwrap();
    assert!(stages.contains(&"comparing".to_owned()), "{stages:?}");
    let lines: Vec<String> = report
        .divergences
        .iter()
        .map(|d| format!("{}: {}", d.rule, d.summary))
        .collect();
    assert_eq!(report.verdict, Verdict::Pass, "{lines:#?}");
    assert_eq!(report.samples.attempt_pairs, 1);
    assert_eq!(report.samples.histories, 1);
    let rules: Vec<&str> = report.suppressed.iter().map(|s| s.rule.as_str()).collect();
    assert_eq!(rules, ["delivery-id", "signature", "timestamp"]);

    // The reports, with no secret anywhere.
    let out = dir.path().join("reports/test");
    let paths = comparator::write_reports(&report, &out).unwrap();
    for p in [&paths.json, &paths.markdown, &paths.html] {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(
            !text.contains(SECRET),
            "{} contains the secret",
            p.display()
        );
    }
    let back: comparator::Report =
        serde_json::from_slice(&std::fs::read(&paths.json).unwrap()).unwrap();
    assert_eq!(back, report);
    let md = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(md.contains("PASS"), "{md}");
}

#[tokio::test]
async fn early_success_is_reported_with_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let note = Some("partial body: 0 of 512 bytes");
    captures(
        &dir.path().join("captures.db"),
        &[
            (
                "legacy",
                1,
                T0,
                Some(200),
                Some("timeout"),
                note,
                "dlv_legacy",
            ),
            (
                "engine",
                1,
                T0 + 1_000,
                Some(200),
                Some("timeout"),
                note,
                "dlv_engine",
            ),
            (
                "engine",
                2,
                T0 + 11_100,
                Some(200),
                None,
                None,
                "dlv_engine",
            ),
        ],
    )
    .await;
    legacy_db(
        &dir.path().join("legacy.db"),
        &[(1, Some(200), "ok", "success", T0)],
    )
    .await;
    engine_db(
        &dir.path().join("engine.db"),
        &[
            (
                OutcomeClass::BodyRead,
                DeliveryState::RetryScheduled,
                Some(200),
                T0 + 1_000,
            ),
            (
                OutcomeClass::Delivered,
                DeliveryState::Succeeded,
                Some(200),
                T0 + 11_100,
            ),
        ],
    )
    .await;
    let report = comparator::run(&input(dir.path()), |_, _| {})
        .await
        .unwrap();
    let mut rules: Vec<&str> = report.divergences.iter().map(|d| d.rule.as_str()).collect();
    rules.sort();
    assert_eq!(
        rules,
        [
            "outcome.success_before_body",
            "pairing.attempt",
            "retry.decision",
            "states.canonical_sequence"
        ]
    );
    let states = report
        .divergences
        .iter()
        .find(|d| d.rule == "states.canonical_sequence")
        .unwrap();
    assert_eq!(states.legacy["states"], "pending → in_flight → succeeded");
    assert_eq!(
        states.engine["states"],
        "pending → in_flight → retry_scheduled → in_flight → succeeded"
    );
    assert_eq!(report.verdict, Verdict::Fail);
    assert_eq!(report.counts["timeout_classification"], 1);
}

#[tokio::test]
async fn errors_name_the_store_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let missing = CompareInput {
        captures: Some(url(&dir.path().join("nope.db"))),
        ..CompareInput::default()
    };
    let err = comparator::run(&missing, |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("capture store ("), "{err}");
    let bad = CompareInput {
        captures: Some("mysql://u:hunter2@db/x".into()),
        ..CompareInput::default()
    };
    let err = comparator::run(&bad, |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unsupported database URL") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn secrets_file_errors_show_the_line_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secrets.toml");
    std::fs::write(
        &p,
        "\"https://a.example/\" = \"whsec_TOPSECRET\"\n\"https://b.example/\" = whsec_BROKEN\n",
    )
    .unwrap();
    let err = comparator::load::load_secrets(&p).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(
        !err.contains("TOPSECRET") && !err.contains("BROKEN"),
        "{err}"
    );
    std::fs::write(&p, "\"https://a.example/\" = [\"one\", \"two\"]\n").unwrap();
    let s = comparator::load::load_secrets(&p).unwrap();
    assert_eq!(s["https://a.example/"], ["one", "two"]);
    let j = dir.path().join("secrets.json");
    std::fs::write(&j, r#"{"https://a.example/": "one"}"#).unwrap();
    assert_eq!(
        comparator::load::load_secrets(&j).unwrap()["https://a.example/"],
        ["one"]
    );
}
