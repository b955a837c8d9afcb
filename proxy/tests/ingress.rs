//! The ingress tee against in-process sender APIs on loopback.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use proxy::metrics::Metrics;
use proxy::testing::TestProxy;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

type Seen = Arc<Mutex<Vec<(String, String, Bytes)>>>;

/// A sender API that records every call and answers 202 with `name`.
async fn api(name: &'static str) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(
            |State((name, seen)): State<(&'static str, Seen)>,
             method: Method,
             uri: Uri,
             _h: HeaderMap,
             body: Bytes| async move {
                seen.lock()
                    .unwrap()
                    .push((method.to_string(), uri.to_string(), body));
                (
                    axum::http::StatusCode::ACCEPTED,
                    [("x-sender", name)],
                    format!("{{\"from\":\"{name}\"}}"),
                )
                    .into_response()
            },
        )
        .with_state((name, seen.clone()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (base, seen)
}

/// A sender API that accepts connections and never answers; counts them.
async fn hanging_api() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (base, conns)
}

#[tokio::test]
async fn events_get_one_id_for_both_senders_and_the_primary_answers() {
    let (legacy, legacy_seen) = api("legacy").await;
    let (engine, engine_seen) = api("engine").await;
    let proxy = TestProxy::start(TestProxy::config(&legacy, &engine)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", proxy.addrs.ingress);

    let r = http
        .put(format!("{base}/v1/endpoints/ep_1"))
        .body("{\"url\":\"http://x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = http
        .post(format!("{base}/v1/events"))
        .header("content-type", "application/json")
        .body("{\"type\":\"a\", \"payload\": {\"n\": 1.50}}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-sender"], "legacy", "the API primary answers");
    assert_eq!(r.text().await.unwrap(), "{\"from\":\"legacy\"}");

    for _ in 0..300 {
        if engine_seen.lock().unwrap().len() == 2
            && proxy.store.ingress_rows().await.unwrap().len() == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (l, e) = (
        legacy_seen.lock().unwrap().clone(),
        engine_seen.lock().unwrap().clone(),
    );
    assert_eq!(l.len(), 2);
    assert_eq!(
        e.len(),
        2,
        "the endpoint upsert and the event reach the shadow too"
    );
    let legacy_event = l.iter().find(|c| c.1 == "/v1/events").unwrap();
    let engine_event = e.iter().find(|c| c.1 == "/v1/events").unwrap();
    assert_eq!(
        legacy_event.2, engine_event.2,
        "both senders get the same bytes"
    );
    let text = String::from_utf8(legacy_event.2.to_vec()).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("evt_"));
    assert!(
        text.ends_with("\"type\":\"a\", \"payload\": {\"n\": 1.50}}"),
        "the rest kept as sent: {text}"
    );

    let rows = proxy.store.ingress_rows().await.unwrap();
    let row = rows.iter().find(|r| r["path"] == "/v1/events").unwrap();
    assert_eq!(row["event_id"], id);
    assert_eq!(row["injected_id"], 1);
    assert_eq!(row["primary_sender"], "legacy");
    assert_eq!(
        (
            row["primary_status"].as_i64(),
            row["shadow_status"].as_i64()
        ),
        (Some(202), Some(202))
    );
    assert_eq!(row["shadow_body_text"], "{\"from\":\"engine\"}");
    assert!(row["shadow_latency_us"].as_i64().is_some());
    assert_eq!(Metrics::get(&proxy.metrics.mirrored), 2);
}

#[tokio::test]
async fn a_hanging_shadow_never_slows_the_primary_and_drops_are_counted() {
    let (legacy, _) = api("legacy").await;
    let (engine, conns) = hanging_api().await;
    let mut cfg = TestProxy::config(&legacy, &engine);
    cfg.ingress.queue_bound = 8;
    cfg.ingress.mirror_workers = 2;
    cfg.ingress.shadow_timeout = "60s".into();
    let proxy = TestProxy::start(cfg).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", proxy.addrs.ingress);
    let n = 200;
    for i in 0..n {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            http.post(format!("{base}/v1/events"))
                .body(format!("{{\"id\":\"evt_{i}\",\"type\":\"a\"}}"))
                .send(),
        )
        .await
        .expect("the primary's answer does not wait on the shadow")
        .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(r.text().await.unwrap(), "{\"from\":\"legacy\"}");
    }
    // Bounded: at most the queue plus the workers' jobs are held; the rest
    // were dropped and counted.
    let dropped = Metrics::get(&proxy.metrics.mirror_dropped);
    assert!(dropped >= (n - 8 - 2) as u64, "dropped {dropped}");
    assert!(proxy.ingress.queue_depth() <= 8);
    assert!(
        conns.load(Ordering::SeqCst) <= 2,
        "only the mirror workers reach the shadow"
    );
    let text = reqwest::get(format!("http://{}/metrics", proxy.addrs.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("hookshift_proxy_mirror_dropped_total {dropped}")),
        "{text}"
    );
    // Dropped mirrors are recorded as such.
    for _ in 0..300 {
        let rows = proxy.store.ingress_rows().await.unwrap();
        if rows.len() as u64 >= dropped {
            assert!(
                rows.iter()
                    .filter(|r| r["shadow_error"] == "dropped: queue full")
                    .count() as u64
                    >= dropped
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("dropped mirrors were not recorded");
}

#[tokio::test]
async fn an_unreachable_primary_is_a_502_problem() {
    let (engine, _) = api("engine").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = TestProxy::start(TestProxy::config(
        &format!("http://127.0.0.1:{port}"),
        &engine,
    ))
    .await;
    let r = reqwest::get(format!("http://{}/v1/endpoints", proxy.addrs.ingress))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}
