//! The comparator over the real senders: the legacy Go binary
//! (fixtures/legacy-go) and the engine with the `legacy` profile deliver the
//! same event to one receiver on 127.0.0.1:0, each into its own SQLite
//! database; the comparator then reads both databases (the legacy's through
//! the fixture's state-transitions query) and a capture store.
//!
//! Until the tee proxy exists, this test plays the egress recorder in
//! passthrough mode: the receiver records each request exactly as it arrived
//! (head and body bytes, arrival time, how long until the sender hung up)
//! and the test writes those rows into a capture store made with the
//! proxy's migration. The comparator reads it with its own loader.
//!
//! Needs Go; skips with a notice without it, except under CI=true.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use comparator::{CompareInput, Rules, Verdict};
use engine::clock::SystemClock;
use engine::config::{EngineConfig, WorkerSection};
use engine::testing::{TestDb, TestEngine};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "legacy-shared-secret";

fn legacy_binary() -> Option<PathBuf> {
    engine::testing::legacy_sender_binary("the comparator's real-sender tests")
}

struct Legacy {
    child: Child,
    base: String,
    db: PathBuf,
}

impl Legacy {
    fn start(bin: &Path, dir: &Path, early_success: bool) -> Legacy {
        let db = dir.join("legacy.db");
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--retry-schedule",
                "50ms,50ms",
                "--timeout",
                "500ms",
            ])
            .arg(format!("--early-success={early_success}"))
            .arg("--database-url")
            .arg(format!("sqlite://{}", db.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start legacy-sender");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("legacy-sender listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Legacy { child, base, db }
    }
}

impl Drop for Legacy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as it arrived, and what the receiver did.
#[derive(Clone, Debug)]
struct Hit {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at_ms: i64,
    latency_us: i64,
    status: i64,
    fault: Option<&'static str>,
    note: Option<String>,
}

#[derive(Clone, Copy)]
enum Behaviour {
    Ok,
    /// 200 with Content-Length 100, 10 bytes, then silence until the sender hangs up.
    StallBody,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn receiver(behaviour: Behaviour) -> (String, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let _ = serve(sock, &h, behaviour).await;
            });
        }
    });
    (url, hits)
}

async fn serve(
    mut sock: TcpStream,
    hits: &Mutex<Vec<Hit>>,
    behaviour: Behaviour,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let at_ms = now_ms();
    let started = Instant::now();
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..].to_vec();
    let (fault, note) = match behaviour {
        Behaviour::Ok => {
            sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await?;
            (None, None)
        }
        Behaviour::StallBody => {
            sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await?;
            // Wait for the sender to give up (its deadline) and hang up.
            let _ = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await;
            (
                Some("timeout"),
                Some("partial body: 10 of 100 bytes".to_owned()),
            )
        }
    };
    hits.lock().unwrap().push(Hit {
        headers,
        body,
        at_ms,
        latency_us: started.elapsed().as_micros() as i64,
        status: 200,
        fault,
        note,
    });
    Ok(())
}

async fn session(http: &reqwest::Client, base: &str, url: &str, event: &Value) -> String {
    let r = http
        .put(format!("{base}/v1/endpoints/ep_orders"))
        .json(&json!({"url": url, "secret": SECRET}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{base}: upsert {}",
        r.text().await.unwrap()
    );
    let r = http
        .post(format!("{base}/v1/events"))
        .json(event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{base}: post event");
    let v: Value = r.json().await.unwrap();
    v["deliveries"][0]["id"].as_str().unwrap().to_string()
}

async fn wait_terminal(http: &reqwest::Client, base: &str, delivery: &str) -> String {
    for _ in 0..400 {
        let v: Value = http
            .get(format!("{base}/v1/deliveries/{delivery}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let s = v["state"].as_str().unwrap_or_default().to_owned();
        if ["success", "succeeded", "failed"].contains(&s.as_str()) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{base}: delivery {delivery} never finished");
}

/// Writes the hits into a capture store (passthrough: both senders reached the receiver).
async fn capture_store(path: &Path, hits: &[Hit], legacy_delivery: &str, url: &str) {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    sqlx::raw_sql(include_str!(
        "../../proxy/migrations/sqlite/0001_captures.sql"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let mut counts = std::collections::HashMap::new();
    for h in hits {
        let header = |n: &str| {
            h.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let sender = if header("X-Delivery-Id").as_deref() == Some(legacy_delivery) {
            "legacy"
        } else {
            "engine"
        };
        let n = counts.entry(sender).or_insert(0i64);
        *n += 1;
        sqlx::query(
            "INSERT INTO egress_exchanges (sender, role, source, event_id, endpoint_url, attempt, ramp_bp, method, target, \
             http_version, request_headers, request_body, response_status, response_headers, response_body, fault, latency_us, started_at, note) \
             VALUES (?, 'passthrough', 'receiver', ?, ?, ?, 0, 'POST', ?, 'HTTP/1.1', ?, ?, ?, '[]', ?, ?, ?, ?, ?)",
        )
        .bind(sender)
        .bind(header("X-Event-Id"))
        .bind(url)
        .bind(*n)
        .bind(url)
        .bind(serde_json::to_string(&h.headers).unwrap())
        .bind(&h.body)
        .bind(h.status)
        .bind(if h.fault.is_some() { b"0123456789".to_vec() } else { b"ok".to_vec() })
        .bind(h.fault)
        .bind(h.latency_us)
        .bind(h.at_ms)
        .bind(&h.note)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
}

const RULES: &str = r#"
[engine]
profile = "legacy"
[legacy.retry]
schedule = ["50ms", "50ms"]
[engine.retry]
schedule = ["50ms", "50ms"]
"#;

/// Runs both senders against one receiver and compares; returns the report.
async fn scenario(
    early_success: bool,
    behaviour: Behaviour,
    event_id: &str,
) -> Option<comparator::Report> {
    let bin = legacy_binary()?;
    let dir = tempfile::tempdir().unwrap();
    let legacy = Legacy::start(&bin, dir.path(), early_success);
    let db = TestDb::sqlite().await;
    let cfg = EngineConfig {
        default_profile: "legacy".into(),
        worker: WorkerSection {
            allow_cidrs: vec!["127.0.0.0/8".into()],
            retry_schedule: Some("50ms,50ms".into()),
            deadline: Some("500ms".into()),
            lease: "5s".into(),
            ..WorkerSection::default()
        },
        ..EngineConfig::default()
    };
    let engine = TestEngine::start(db.store.clone(), cfg, Arc::new(SystemClock)).await;
    let (url, hits) = receiver(behaviour).await;
    let http = reqwest::Client::new();
    let event = json!({"id": event_id, "type": "order.created",
        "payload": {"note": "<b>&</b>", "n": 1.0, "big": 1e21, "list": [3, 1, 2]}});
    let d_legacy = session(&http, &legacy.base, &url, &event).await;
    let d_engine = session(&http, &engine.base, &url, &event).await;
    wait_terminal(&http, &legacy.base, &d_legacy).await;
    wait_terminal(&http, &engine.base, &d_engine).await;
    engine.shutdown().await;
    let hits = hits.lock().unwrap().clone();
    let captures = dir.path().join("captures.db");
    capture_store(&captures, &hits, &d_legacy, &url).await;
    let input = CompareInput {
        name: event_id.into(),
        captures: Some(format!("sqlite://{}", captures.display())),
        engine_db: Some(db.url.clone()),
        legacy_db: Some(format!("sqlite://{}", legacy.db.display())),
        rules: Rules::parse(RULES, "rules").unwrap(),
        ..CompareInput::default()
    };
    let report = comparator::run(&input, |_, _| {}).await.unwrap();
    drop(legacy);
    Some(report)
}

fn explain(r: &comparator::Report) -> String {
    r.divergences
        .iter()
        .map(|d| {
            format!(
                "{} {} {:?}: {}",
                d.category.as_str(),
                d.rule,
                d.key.attempt,
                d.summary
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn legacy_and_engine_agree_without_the_early_success_bug() {
    let Some(r) = scenario(false, Behaviour::Ok, "evt_same").await else {
        return;
    };
    assert!(r.divergences.is_empty(), "{}", explain(&r));
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.samples.attempt_pairs, 1);
    assert_eq!(r.samples.histories, 1);
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let rules: Vec<&str> = r.suppressed.iter().map(|s| s.rule.as_str()).collect();
    assert!(rules.contains(&"delivery-id"), "{rules:?}");

    // A receiver that stalls its body: both fail after three attempts.
    let Some(r) = scenario(false, Behaviour::StallBody, "evt_stall_agree").await else {
        return;
    };
    assert!(r.divergences.is_empty(), "{}", explain(&r));
    assert_eq!(r.samples.attempt_pairs, 3);
    assert_eq!(r.verdict, Verdict::Pass);
}

#[tokio::test]
async fn early_success_is_reported_with_evidence() {
    let Some(r) = scenario(true, Behaviour::StallBody, "evt_stall").await else {
        return;
    };
    let mut rules: Vec<(&str, Option<u32>)> = r
        .divergences
        .iter()
        .map(|d| (d.rule.as_str(), d.key.attempt))
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        [
            ("outcome.success_before_body", Some(1)),
            ("pairing.attempt", Some(2)),
            ("pairing.attempt", Some(3)),
            ("retry.decision", Some(1)),
            ("states.canonical_sequence", None),
        ],
        "{}",
        explain(&r)
    );
    let d = r
        .divergences
        .iter()
        .find(|d| d.rule == "outcome.success_before_body")
        .unwrap();
    assert_eq!(d.legacy["recorded_outcome"], "ok");
    assert_eq!(d.engine["recorded_outcome"], "body_read");
    assert_eq!(
        d.legacy["exchange"]["note"],
        "partial body: 10 of 100 bytes"
    );
    let s = r
        .divergences
        .iter()
        .find(|d| d.rule == "states.canonical_sequence")
        .unwrap();
    assert_eq!(
        s.severity,
        comparator::Severity::Critical,
        "success vs failed"
    );
}
