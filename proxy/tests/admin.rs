//! The admin listener: the ramp API, health and metrics.

use proxy::testing::TestProxy;
use serde_json::{json, Value};

async fn post(base: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/admin/ramp"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn the_ramp_api_validates_audits_and_reports() {
    let proxy = TestProxy::start(TestProxy::config(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
    ))
    .await;
    let base = format!("http://{}", proxy.addrs.admin);

    let v: Value = reqwest::get(format!("{base}/admin/ramp"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["bp"], 0);
    assert_eq!(v["history"], json!([]));

    for (body, field) in [
        (json!({"reason": "x"}), Some("percent")),
        (json!({"percent": 101, "reason": "x"}), Some("percent")),
        (json!({"percent": "5", "reason": "x"}), Some("percent")),
        (json!({"percent": 5}), Some("reason")),
        (json!({"percent": 5, "reason": "  "}), Some("reason")),
        (
            json!({"percent": 5, "reason": "x", "actor": 3}),
            Some("actor"),
        ),
        (json!([5]), None),
    ] {
        let (status, p) = post(&base, body.clone()).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(p["status"], 422);
        assert_eq!(p["field"].as_str(), field, "{body}: {p}");
    }
    assert_eq!(proxy.ramp.bp(), 0, "nothing changed on bad input");

    let (status, v) = post(
        &base,
        json!({"percent": 5, "reason": "first stage", "actor": "gate"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (v["percent"].as_f64(), v["bp"].as_u64()),
        (Some(5.0), Some(500))
    );
    assert_eq!(v["reason"], "first stage");
    assert!(v["changed_at"].as_i64().unwrap() > 0);
    assert_eq!(v["history"][0]["from_bp"], 0);
    assert_eq!(v["history"][0]["to_bp"], 500);
    assert!(v["history"][0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("gate (127.0.0.1:"));
    assert_eq!(proxy.ramp.bp(), 500);
    let latest = proxy.store.latest_ramp().await.unwrap().unwrap();
    assert_eq!((latest.from_bp, latest.to_bp), (0, 500));

    let client = proxy::admin::Client::new(&base);
    let err = client.set(50.0, "", "cli").await.unwrap_err().to_string();
    assert!(err.contains("422") && err.contains("reason"), "{err}");
    assert_eq!(client.status().await.unwrap().bp, 500);

    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "hookshift_proxy_mirrored_total",
        "hookshift_proxy_mirror_dropped_total",
        "hookshift_proxy_shadow_errors_total",
        "hookshift_proxy_pairing_waits_total",
        "hookshift_proxy_pairing_timeouts_total",
        "hookshift_proxy_added_latency_seconds_bucket",
        "hookshift_proxy_ramp_bp 500",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}
