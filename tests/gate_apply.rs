//! `hookshift gate evaluate --apply` against an in-process stand-in for the
//! proxy's admin API on 127.0.0.1:0: it reads the current stage with GET
//! /admin/ramp and moves it with POST /admin/ramp, recording the report.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Ramp {
    percent: f64,
    posts: Vec<Value>,
}

type Shared = Arc<Mutex<Ramp>>;

async fn start(percent: f64) -> (String, Shared, tokio::sync::oneshot::Sender<()>) {
    let state: Shared = Arc::new(Mutex::new(Ramp {
        percent,
        posts: Vec::new(),
    }));
    let app = Router::new()
        .route(
            "/admin/ramp",
            get(|State(s): State<Shared>| async move {
                let p = s.lock().unwrap().percent;
                Json(json!({"percent": p, "bp": (p * 100.0) as u32, "changed_at": 0}))
            })
            .post(
                |State(s): State<Shared>, Json(body): Json<Value>| async move {
                    let mut r = s.lock().unwrap();
                    r.percent = body["percent"].as_f64().unwrap_or(-1.0);
                    r.posts.push(body);
                    Json(json!({"percent": r.percent}))
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (format!("http://{addr}"), state, tx)
}

/// A report.json as `hookshift compare` writes it, with `signature` divergences.
fn write_report(dir: &std::path::Path, signature: u64) -> std::path::PathBuf {
    let counts: serde_json::Map<String, Value> = [
        "signature",
        "header",
        "payload",
        "retry_decision",
        "timeout_classification",
        "state_transition",
        "api_response",
        "missing",
        "extra",
    ]
    .iter()
    .map(|c| {
        (
            c.to_string(),
            json!(if *c == "signature" { signature } else { 0 }),
        )
    })
    .collect();
    let rates: serde_json::Map<String, Value> = counts
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.as_u64().unwrap() as f64 / 500.0)))
        .collect();
    let report = json!({
        "schema_version": 1, "name": "ramp-5", "generated_at_ms": null,
        "verdict": if signature > 0 { "fail" } else { "pass" }, "verdict_reason": "r",
        "inputs": {}, "window": {"start_ms": 0, "end_ms": 3_600_000, "duration_s": 3600.0},
        "samples": {"attempt_pairs": 500, "attempts": 1000, "histories": 500, "ingress_calls": 0, "unkeyed_exchanges": 0},
        "counts": counts, "rates": rates, "severities": {"critical": signature, "major": 0, "minor": 0},
        "health": {"shadow_dropped": 0, "shadow_drop_rate": 0.0, "unpaired_attempts": 0, "unpaired_rate": 0.0},
        "learned_noise": false, "suppressed": [], "suppressed_total": 0, "skipped": {}, "timeline": [], "divergences": []
    });
    let p = dir.join(format!("report-{signature}.json"));
    std::fs::write(&p, serde_json::to_vec(&report).unwrap()).unwrap();
    p
}

async fn gate(args: Vec<String>) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookshift"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn apply_advances_and_rolls_back_the_proxy_ramp() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("gate.toml");
    std::fs::write(
        &policy,
        "stages = [0, 1, 5, 25, 50, 100]\n[samples]\nmin_attempt_pairs = 100\nmin_histories = 100\nsoak = \"10m\"\n",
    )
    .unwrap();
    let (url, state, stop) = start(5.0).await;
    let args = |report: &std::path::Path| -> Vec<String> {
        vec![
            "gate".into(),
            "evaluate".into(),
            "--policy".into(),
            policy.display().to_string(),
            "--report".into(),
            report.display().to_string(),
            "--apply".into(),
            "--proxy".into(),
            url.clone(),
        ]
    };

    let clean = write_report(dir.path(), 0);
    let (code, out) = gate(args(&clean)).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("advance: 5% → 25%"), "{out}");
    {
        let r = state.lock().unwrap();
        assert_eq!(r.percent, 25.0);
        assert_eq!(r.posts[0]["actor"], "gate");
        let reason = r.posts[0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("advance") && reason.contains("report-0.json"),
            "{reason}"
        );
    }

    let bad = write_report(dir.path(), 3);
    let (code, out) = gate(args(&bad)).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("rollback: 25% → 0%"), "{out}");
    assert_eq!(state.lock().unwrap().percent, 0.0);
    assert_eq!(state.lock().unwrap().posts.len(), 2);

    // Without --apply nothing moves; hold exits 1 (not enough samples at this stage).
    let strict = dir.path().join("strict.toml");
    std::fs::write(
        &strict,
        "stages = [0, 1, 5]\n[samples]\nmin_attempt_pairs = 100000\n",
    )
    .unwrap();
    let (code, out) = gate(vec![
        "gate".into(),
        "evaluate".into(),
        "--policy".into(),
        strict.display().to_string(),
        "--report".into(),
        clean.display().to_string(),
        "--current".into(),
        "1".into(),
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("hold"), "{out}");
    assert_eq!(state.lock().unwrap().posts.len(), 2);
    let _ = stop.send(());
}
