//! Comparator benchmark (a bench binary, not a test; prints figures):
//!
//! ```sh
//! cargo bench -p comparator --bench compare
//! HOOKSHIFT_BENCH_ATTEMPTS=200000 cargo bench -p comparator --bench compare   # a smaller store run
//! ```
//!
//! 1. Attempt pairs compared per second, in memory: synthetic legacy and
//!    engine exchanges (signed, realistic headers, 1% with a key-order
//!    difference) through `comparator::compare`. Target: ≥ 50,000 pairs/s.
//! 2. A report over N attempts (default 1,000,000: N/2 per sender) read from
//!    SQLite stores built here (a capture store with the proxy's migration,
//!    an engine database with its migrations, a legacy database with its
//!    DDL): `comparator::run` + `write_reports`, wall time and peak RSS
//!    (VmHWM from /proc/self/status). Targets: < 60 s, < 1 GiB.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use comparator::model::{Dataset, Exchange, History, Outcome, Recorded, Role};
use comparator::{CompareInput, Rules};
use engine::signing::{self, Scheme, SignInput};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::QueryBuilder;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const T0: i64 = 1_700_000_000_000;
const ENDPOINTS: u64 = 100;

fn url(i: u64) -> String {
    format!("https://receiver-{}.example/hooks/orders", i % ENDPOINTS)
}

fn body(i: u64, engine: bool) -> String {
    if engine && i % 100 == 7 {
        // One pair in a hundred: the same JSON with its keys in another order.
        format!(
            r#"{{"order":{i},"customer":"cus_{i}","note":"\u003cb\u003e","amount":12.5,"items":[1,2,3]}}"#
        )
    } else {
        format!(
            r#"{{"customer":"cus_{i}","order":{i},"note":"\u003cb\u003e","amount":12.5,"items":[1,2,3]}}"#
        )
    }
}

/// Request headers as the legacy profile puts them on the wire.
fn headers(i: u64, engine: bool, ts: i64, body: &str) -> Vec<(String, String)> {
    let delivery = if engine {
        format!("dlv_e{i}")
    } else {
        format!("dlv_l{i}")
    };
    let mut h = vec![
        (
            "Host".to_owned(),
            format!("receiver-{}.example", i % ENDPOINTS),
        ),
        ("User-Agent".to_owned(), "Go-http-client/1.1".to_owned()),
        ("Content-Length".to_owned(), body.len().to_string()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Delivery-Id".to_owned(), delivery),
    ];
    h.extend(
        signing::sign(
            Scheme::Legacy,
            &[SECRET],
            SignInput {
                id: &format!("evt_{i}"),
                timestamp: ts / 1000,
                body: body.as_bytes(),
            },
        )
        .expect("sign"),
    );
    h.push(("Accept-Encoding".to_owned(), "gzip".to_owned()));
    h
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn in_memory(n: u64) {
    let mut data = Dataset::default();
    for side in [&mut data.legacy, &mut data.engine] {
        for e in 0..ENDPOINTS {
            side.secrets.insert(url(e), vec![SECRET.into()]);
        }
    }
    let rules = Rules::parse("[engine]\nprofile = \"legacy\"\n", "bench").expect("rules");
    for i in 0..n {
        for engine in [false, true] {
            let at = T0 + i as i64 * 10 + if engine { 1000 } else { 0 };
            let b = body(i, engine);
            let ex = Exchange {
                seq: i as i64,
                role: Some(Role::Passthrough),
                http_version: "HTTP/1.1".into(),
                request_headers: headers(i, engine, at, &b),
                request_body: b.into_bytes(),
                response_status: Some(200),
                response_headers: vec![],
                response_body_len: Some(2),
                fault: None,
                latency_us: 20_000,
                started_at: at,
                note: None,
            };
            let mut h = History::default();
            let a = h.attempts.entry(1).or_default();
            a.exchange = Some(Box::new(ex));
            a.recorded = Some(Box::new(Recorded {
                raw_outcome: if engine {
                    "delivered".into()
                } else {
                    "ok".into()
                },
                outcome: Outcome::Delivered,
                status: Some(200),
                started_at: at,
            }));
            h.states = vec!["pending".into(), "in_flight".into(), "succeeded".into()];
            let side = if engine {
                &mut data.engine
            } else {
                &mut data.legacy
            };
            side.histories.insert((format!("evt_{i}"), url(i)), h);
        }
    }
    let started = Instant::now();
    let report = comparator::compare(&data, &rules, "bench", BTreeMap::new(), None);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.samples.attempt_pairs, n);
    println!(
        "in memory: {n} attempt pairs compared in {secs:.2} s = {:.0} pairs/s (target ≥ 50,000); {} divergences, {} suppressed",
        n as f64 / secs,
        report.divergences.len(),
        report.suppressed_total
    );
}

async fn sqlite(path: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .expect("url")
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Off)
        .synchronous(SqliteSynchronous::Off);
    sqlx::pool::PoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .expect("open")
}

fn legacy_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).expect("time");
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

const BATCH: u64 = 500;

async fn build_stores(dir: &Path, histories: u64) {
    // Capture store: one attempt per sender per history.
    let cap = sqlite(&dir.join("captures.db")).await;
    sqlx::raw_sql(include_str!(
        "../../proxy/migrations/sqlite/0001_captures.sql"
    ))
    .execute(&cap)
    .await
    .expect("capture schema");
    let mut i = 0;
    while i < histories {
        let end = (i + BATCH / 2).min(histories);
        let mut qb = QueryBuilder::new(
            "INSERT INTO egress_exchanges (sender, role, source, event_id, endpoint_url, attempt, ramp_bp, method, target, \
             http_version, request_headers, request_body, response_status, response_headers, response_body, latency_us, started_at) ",
        );
        let rows: Vec<(u64, bool)> = (i..end).flat_map(|k| [(k, false), (k, true)]).collect();
        qb.push_values(rows, |mut b, (k, engine)| {
            let at = T0 + k as i64 * 10 + if engine { 1000 } else { 0 };
            let body = body(k, engine);
            b.push_bind(if engine { "engine" } else { "legacy" })
                .push_bind("passthrough")
                .push_bind("receiver")
                .push_bind(format!("evt_{k}"))
                .push_bind(url(k))
                .push_bind(1i64)
                .push_bind(0i64)
                .push_bind("POST")
                .push_bind(url(k))
                .push_bind("HTTP/1.1")
                .push_bind(serde_json::to_string(&headers(k, engine, at, &body)).expect("json"))
                .push_bind(body.into_bytes())
                .push_bind(200i64)
                .push_bind("[[\"Content-Length\",\"2\"]]")
                .push_bind(b"ok".to_vec())
                .push_bind(20_000i64)
                .push_bind(at);
        });
        qb.build().execute(&cap).await.expect("insert captures");
        i = end;
    }
    cap.close().await;

    // Engine database, with its own migrations.
    let engine_url = format!("sqlite://{}", dir.join("engine.db").display());
    engine::store::Store::connect(&engine_url)
        .await
        .expect("engine migrations")
        .close()
        .await;
    let eng = sqlite(&dir.join("engine.db")).await;
    let mut qb =
        QueryBuilder::new("INSERT INTO endpoints (id, url, profile, created_at, updated_at) ");
    qb.push_values(0..ENDPOINTS, |mut b, e| {
        b.push_bind(format!("ep_{e}"))
            .push_bind(url(e))
            .push_bind("legacy")
            .push_bind(T0)
            .push_bind(T0);
    });
    qb.build().execute(&eng).await.expect("endpoints");
    let mut qb =
        QueryBuilder::new("INSERT INTO endpoint_secrets (endpoint_id, secret, created_at) ");
    qb.push_values(0..ENDPOINTS, |mut b, e| {
        b.push_bind(format!("ep_{e}"))
            .push_bind(SECRET)
            .push_bind(T0);
    });
    qb.build().execute(&eng).await.expect("secrets");
    let mut i = 0;
    while i < histories {
        let end = (i + BATCH).min(histories);
        let mut qb = QueryBuilder::new(
            "INSERT INTO events (id, type, payload_raw, payload, request_hash, created_at) ",
        );
        qb.push_values(i..end, |mut b, k| {
            b.push_bind(format!("evt_{k}"))
                .push_bind("order.created")
                .push_bind(b"{}".to_vec())
                .push_bind("{}")
                .push_bind("h")
                .push_bind(T0);
        });
        qb.build().execute(&eng).await.expect("events");
        let mut qb = QueryBuilder::new("INSERT INTO deliveries (id, event_id, endpoint_id, state, attempt_count, created_at, updated_at) ");
        qb.push_values(i..end, |mut b, k| {
            b.push_bind(format!("dlv_e{k}"))
                .push_bind(format!("evt_{k}"))
                .push_bind(format!("ep_{}", k % ENDPOINTS))
                .push_bind("succeeded")
                .push_bind(1i64)
                .push_bind(T0)
                .push_bind(T0);
        });
        qb.build().execute(&eng).await.expect("deliveries");
        let mut qb = QueryBuilder::new("INSERT INTO delivery_transitions (delivery_id, from_state, to_state, attempt, outcome, reason, at) ");
        let tr: Vec<(u64, Option<&str>, &str)> = (i..end)
            .flat_map(|k| {
                [
                    (k, None, "pending"),
                    (k, Some("pending"), "in_flight"),
                    (k, Some("in_flight"), "succeeded"),
                ]
            })
            .collect();
        qb.push_values(tr, |mut b, (k, from, to)| {
            b.push_bind(format!("dlv_e{k}"))
                .push_bind(from)
                .push_bind(to)
                .push_bind(1i64)
                .push_bind(None::<String>)
                .push_bind("created")
                .push_bind(T0);
        });
        qb.build().execute(&eng).await.expect("transitions");
        let mut qb = QueryBuilder::new("INSERT INTO attempts (id, delivery_id, attempt, request_headers, body_sha256, response_status, duration_ms, outcome, started_at, finished_at) ");
        qb.push_values(i..end, |mut b, k| {
            let at = T0 + k as i64 * 10 + 1000;
            b.push_bind(format!("att_e{k}"))
                .push_bind(format!("dlv_e{k}"))
                .push_bind(1i64)
                .push_bind("[]")
                .push_bind("x")
                .push_bind(200i64)
                .push_bind(20i64)
                .push_bind("delivered")
                .push_bind(at)
                .push_bind(at + 20);
        });
        qb.build().execute(&eng).await.expect("attempts");
        i = end;
    }
    eng.close().await;

    // Legacy database, with its DDL.
    let leg = sqlite(&dir.join("legacy.db")).await;
    sqlx::raw_sql(LEGACY_DDL)
        .execute(&leg)
        .await
        .expect("legacy schema");
    let t = legacy_time(T0);
    let mut qb =
        QueryBuilder::new("INSERT INTO endpoints (id, url, secret, created_at, updated_at) ");
    qb.push_values(0..ENDPOINTS, |mut b, e| {
        b.push_bind(format!("ep_{e}"))
            .push_bind(url(e))
            .push_bind(SECRET)
            .push_bind(t.clone())
            .push_bind(t.clone());
    });
    qb.build().execute(&leg).await.expect("endpoints");
    let mut i = 0;
    while i < histories {
        let end = (i + BATCH).min(histories);
        let mut qb =
            QueryBuilder::new("INSERT INTO events (id, type, payload, payload_hash, created_at) ");
        qb.push_values(i..end, |mut b, k| {
            b.push_bind(format!("evt_{k}"))
                .push_bind("order.created")
                .push_bind("{}")
                .push_bind("h")
                .push_bind(t.clone());
        });
        qb.build().execute(&leg).await.expect("events");
        let mut qb = QueryBuilder::new("INSERT INTO deliveries (id, event_id, endpoint_id, status, attempt_count, created_at, updated_at) ");
        qb.push_values(i..end, |mut b, k| {
            b.push_bind(format!("dlv_l{k}"))
                .push_bind(format!("evt_{k}"))
                .push_bind(format!("ep_{}", k % ENDPOINTS))
                .push_bind("success")
                .push_bind(1i64)
                .push_bind(t.clone())
                .push_bind(t.clone());
        });
        qb.build().execute(&leg).await.expect("deliveries");
        let mut qb = QueryBuilder::new("INSERT INTO attempts ");
        qb.push_values(i..end, |mut b, k| {
            let at = legacy_time(T0 + k as i64 * 10);
            b.push_bind(format!("att_l{k}"))
                .push_bind(format!("dlv_l{k}"))
                .push_bind(1i64)
                .push_bind(200i64)
                .push_bind("ok")
                .push_bind(None::<String>)
                .push_bind(20i64)
                .push_bind("[]")
                .push_bind("success")
                .push_bind(at.clone())
                .push_bind(at);
        });
        qb.build().execute(&leg).await.expect("attempts");
        i = end;
    }
    leg.close().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    in_memory(100_000);
    println!("peak RSS after the in-memory run: {}", vm_hwm());

    let attempts: u64 = std::env::var("HOOKSHIFT_BENCH_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let histories = attempts / 2;
    // HOOKSHIFT_BENCH_STORES=DIR keeps the stores in DIR and reuses them
    // on the next run (for profiling the report alone, e.g. with
    // `hookshift compare --captures sqlite://DIR/captures.db ...`).
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = match std::env::var_os("HOOKSHIFT_BENCH_STORES") {
        Some(d) => std::path::PathBuf::from(d),
        None => tmp.path().to_path_buf(),
    };
    let marker = dir.join(format!("complete-{histories}"));
    if marker.exists() {
        println!("stores: reusing {} ({attempts} attempts)", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("stores directory");
        let started = Instant::now();
        rt.block_on(build_stores(&dir, histories));
        std::fs::write(&marker, b"").expect("marker");
        println!(
            "stores: {attempts} attempts ({histories} per sender) written in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let input = CompareInput {
        name: "bench".into(),
        captures: Some(format!("sqlite://{}", dir.join("captures.db").display())),
        engine_db: Some(format!("sqlite://{}", dir.join("engine.db").display())),
        legacy_db: Some(format!("sqlite://{}", dir.join("legacy.db").display())),
        rules: Rules::default(),
        ..CompareInput::default()
    };
    let started = Instant::now();
    // Each stage's start, to see where the time goes.
    let mut last = String::new();
    let report = rt
        .block_on(comparator::run(&input, |stage, _| {
            if stage != last {
                println!("  {:>6.1} s  {stage}", started.elapsed().as_secs_f64());
                last = stage.to_owned();
            }
        }))
        .expect("compare");
    let compared = started.elapsed().as_secs_f64();
    comparator::write_reports(&report, &dir.join("report")).expect("write reports");
    let total = started.elapsed().as_secs_f64();
    assert_eq!(report.samples.attempt_pairs, histories);
    println!(
        "report over {attempts} attempts: compared in {compared:.1} s, with reports written {total:.1} s (target < 60 s); \
         {} attempt pairs/s; {} divergences, {} suppressed; peak RSS {} (target < 1 GiB)",
        (histories as f64 / compared) as u64,
        report.divergences.len(),
        report.suppressed_total,
        vm_hwm()
    );
}
