//! End to end with the real senders: the legacy Go sender (built from
//! fixtures/legacy-go, `--egress-proxy`) and the engine (`worker.egress_proxy`)
//! both deliver through the proxy's egress listeners, and producers' calls
//! go through the ingress tee. A receiver answering 500 then 200 is
//! contacted exactly twice, by the primary only, and both senders end with
//! the same delivery state after two attempts, read through each API.
//!
//! Needs Go; skips with a notice without it, except under CI=true.

mod support;

use engine::clock::SystemClock;
use engine::config::{EngineConfig, WorkerSection};
use engine::testing::{TestDb, TestEngine};
use proxy::capture::SenderName;
use proxy::metrics::Metrics;
use proxy::testing::TestProxy;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::{receiver, Reply};

fn legacy_binary() -> Option<PathBuf> {
    engine::testing::legacy_sender_binary("the end-to-end proxy tests")
}

/// A running legacy sender; killed on drop.
struct Legacy {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Legacy {
    fn start(bin: &PathBuf, egress_proxy: &str) -> Legacy {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--retry-schedule",
                "50ms,50ms",
                "--timeout",
                "2s",
            ])
            .arg("--egress-proxy")
            .arg(egress_proxy)
            .arg("--database-url")
            .arg(format!(
                "sqlite://{}",
                dir.path().join("legacy.db").display()
            ))
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
        Legacy {
            child,
            base,
            _dir: dir,
        }
    }
}

impl Drop for Legacy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn engine(egress_proxy: String) -> (TestDb, TestEngine) {
    let db = TestDb::sqlite().await;
    let cfg = EngineConfig {
        default_profile: "legacy".into(),
        worker: WorkerSection {
            allow_cidrs: vec!["127.0.0.0/8".into()],
            retry_schedule: Some("50ms,50ms".into()),
            deadline: Some("2s".into()),
            lease: "10s".into(),
            egress_proxy: Some(egress_proxy),
            ..WorkerSection::default()
        },
        ..EngineConfig::default()
    };
    let engine = TestEngine::start(db.store.clone(), cfg, Arc::new(SystemClock)).await;
    (db, engine)
}

/// The delivery of `event` in one sender: (state, attempts, delivery id).
async fn delivery(
    http: &reqwest::Client,
    base: &str,
    event: &str,
) -> Option<(String, usize, String)> {
    let v: Value = http
        .get(format!("{base}/v1/events/{event}/deliveries"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let d = v["data"].get(0)?;
    let attempts = d["attempts"].as_array().map(Vec::len).unwrap_or(0);
    Some((
        d["state"].as_str()?.to_string(),
        attempts,
        d["id"].as_str()?.to_string(),
    ))
}

/// Waits until the delivery is terminal; the legacy's `success` is the
/// engine's `succeeded`.
async fn final_state(http: &reqwest::Client, base: &str, event: &str) -> ((String, usize), String) {
    for _ in 0..500 {
        if let Some((state, n, id)) = delivery(http, base, event).await {
            let canonical = if state == "success" {
                "succeeded".to_string()
            } else {
                state
            };
            if canonical == "succeeded" || canonical == "failed" {
                return ((canonical, n), id);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{base}: event {event} never finished: {:?}",
        delivery(http, base, event).await
    );
}

async fn run(ramp_percent: f64, real_sender: SenderName) {
    let Some(bin) = legacy_binary() else { return };
    let rx = receiver(vec![
        Reply::Status(500, "try again"),
        Reply::Status(200, "ok"),
    ])
    .await;
    // The senders need the egress addresses and the proxy needs the
    // senders' APIs: bind the listeners first, start the senders, then the
    // proxy on those listeners.
    let listeners = proxy::Listeners::loopback().await.unwrap();
    let addrs = listeners.addrs().unwrap();
    let legacy = Legacy::start(&bin, &format!("http://{}", addrs.egress_legacy));
    let (_db, engine) = engine(format!("http://{}", addrs.egress_engine)).await;
    let proxy =
        TestProxy::start_with(TestProxy::config(&legacy.base, &engine.base), listeners).await;
    let admin = proxy::admin::Client::new(&format!("http://{}", proxy.addrs.admin));
    admin.set(ramp_percent, "e2e stage", "test").await.unwrap();

    let http = reqwest::Client::new();
    let ingress = format!("http://{}", proxy.addrs.ingress);
    let r = http
        .put(format!("{ingress}/v1/endpoints/ep_orders"))
        .json(&json!({"url": format!("{}/hook", rx.base), "secret": "legacy-shared-secret"}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "upsert through the ingress: {}",
        r.status()
    );
    // The mirror is asynchronous: let the endpoint reach the shadow before
    // the event, as a producer's calls seconds apart would.
    for _ in 0..250 {
        if Metrics::get(&proxy.metrics.mirrored) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = http
        .post(format!("{ingress}/v1/events"))
        .json(&json!({"type": "order.created", "payload": {"order": 42}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "post through the ingress");
    let v: Value = r.json().await.unwrap();
    let event = v["id"].as_str().expect("an injected event id").to_string();
    assert!(event.starts_with("evt_"), "{event}");

    let (l, legacy_delivery) = final_state(&http, &legacy.base, &event).await;
    let (e, engine_delivery) = final_state(&http, &engine.base, &event).await;
    assert_eq!(l, ("succeeded".to_string(), 2), "legacy");
    assert_eq!(e, ("succeeded".to_string(), 2), "engine");

    let hits = rx.hits();
    assert_eq!(hits.len(), 2, "the receiver is contacted exactly twice");
    // The engine's legacy profile mimics the Go sender down to its
    // User-Agent; each sender's own delivery id tells them apart.
    let real_delivery = match real_sender {
        SenderName::Legacy => &legacy_delivery,
        SenderName::Engine => &engine_delivery,
    };
    for h in &hits {
        assert_eq!(h.header("X-Event-Id").as_deref(), Some(event.as_str()));
        assert_eq!(
            h.header("X-Delivery-Id").as_ref(),
            Some(real_delivery),
            "only the primary reaches the receiver"
        );
    }

    let rows = proxy.store.egress_rows().await.unwrap();
    let shadow = real_sender.other().as_str();
    assert_eq!(
        rows.iter()
            .filter(|r| r["sender"] == real_sender.as_str() && r["role"] == "primary")
            .count(),
        2
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["sender"] == shadow && r["role"] == "shadow")
            .count(),
        2
    );
    let ingress_rows = proxy.store.ingress_rows().await.unwrap();
    let posted = ingress_rows.iter().find(|r| r["path"] == "/v1/events");
    if let Some(posted) = posted {
        assert_eq!(posted["event_id"], event.as_str());
        assert_eq!(posted["injected_id"], 1);
    }
    proxy.shutdown().await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_primary_500_then_200_both_senders_succeed_after_two_attempts() {
    run(0.0, SenderName::Legacy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_primary_500_then_200_both_senders_succeed_after_two_attempts() {
    run(100.0, SenderName::Engine).await;
}
