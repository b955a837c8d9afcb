//! The egress recorder/replayer against in-process receivers on loopback.
//! Senders are played by a raw HTTP/1.1 client configured the way a sender
//! with a forward proxy writes (absolute-form request-target).

mod support;

use proxy::capture::SenderName;
use proxy::config::ProxyConfig;
use proxy::metrics::Metrics;
use proxy::testing::TestProxy;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::{receiver, send, webhook, Got, Reply};

const LONG: Duration = Duration::from_secs(10);

fn config() -> ProxyConfig {
    let mut cfg = TestProxy::config("http://127.0.0.1:1", "http://127.0.0.1:2");
    cfg.egress.pairing_wait = "5s".into();
    cfg.egress.upstream_timeout = "5s".into();
    cfg
}

/// Rows of the capture store, polled until `n` are there.
async fn rows(proxy: &TestProxy, n: usize) -> Vec<Value> {
    for _ in 0..500 {
        let rows = proxy.store.egress_rows().await.unwrap();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "fewer than {n} egress rows: {:?}",
        proxy.store.egress_rows().await.unwrap()
    );
}

fn find<'a>(rows: &'a [Value], sender: &str, attempt: i64) -> &'a Value {
    rows.iter()
        .find(|r| r["sender"] == sender && r["attempt"] == attempt)
        .unwrap_or_else(|| panic!("no row for {sender} attempt {attempt}: {rows:?}"))
}

#[tokio::test]
async fn a_500_then_200_reaches_the_receiver_twice_and_the_shadow_sees_both() {
    let rx = receiver(vec![Reply::Status(500, "oops"), Reply::Status(200, "ok")]).await;
    let proxy = TestProxy::start(config()).await;
    let url = format!("{}/hook", rx.base);
    let (legacy, engine) = (proxy.addrs.egress_legacy, proxy.addrs.egress_engine);

    for attempt in 1..=2 {
        // The shadow (the engine, at 0%) asks first and has to wait.
        let shadow_req = webhook(&url, "webhook-id", "evt_1", "{\"n\":1}");
        let shadow = tokio::spawn(async move { send(engine, &shadow_req, LONG).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let primary = send(
            legacy,
            &webhook(&url, "X-Event-Id", "evt_1", "{\"n\":1}"),
            LONG,
        )
        .await;
        let shadow = shadow.await.unwrap();
        let want = if attempt == 1 {
            (500, "oops")
        } else {
            (200, "ok")
        };
        assert_eq!(
            primary.status(),
            Some(want.0),
            "primary attempt {attempt}: {primary:?}"
        );
        assert_eq!(
            shadow.status(),
            Some(want.0),
            "shadow attempt {attempt}: {shadow:?}"
        );
        assert_eq!(shadow.body(), want.1.as_bytes());
        if let (Got::Response(p, _), Got::Response(s, _)) = (&primary, &shadow) {
            assert_eq!(
                p.raw, s.raw,
                "the shadow gets the primary's head byte for byte"
            );
        }
    }

    let hits = rx.hits();
    assert_eq!(hits.len(), 2, "the receiver is contacted exactly twice");
    assert!(hits
        .iter()
        .all(|h| h.header("X-Event-Id").as_deref() == Some("evt_1")));
    assert!(
        hits.iter().all(|h| h.header("webhook-id").is_none()),
        "only the primary reaches the receiver"
    );

    let rows = rows(&proxy, 4).await;
    assert_eq!(rows.len(), 4);
    for (attempt, status) in [(1, 500), (2, 200)] {
        let p = find(&rows, "legacy", attempt);
        let s = find(&rows, "engine", attempt);
        assert_eq!(
            (p["role"].as_str(), p["source"].as_str()),
            (Some("primary"), Some("receiver"))
        );
        assert_eq!(
            (s["role"].as_str(), s["source"].as_str()),
            (Some("shadow"), Some("replayed"))
        );
        assert_eq!(p["response_status"], status);
        assert_eq!(s["response_status"], status);
        assert_eq!(p["event_id"], "evt_1");
        assert_eq!(s["event_id"], "evt_1");
        assert_eq!(p["endpoint_url"], url.as_str());
        assert_eq!(s["response_body"], p["response_body"]);
        assert!(
            s["latency_us"].as_i64().unwrap() >= p["latency_us"].as_i64().unwrap() / 2,
            "the shadow is answered no sooner than the primary's latency: {s} vs {p}"
        );
    }
    assert_eq!(Metrics::get(&proxy.metrics.pairing_waits), 2);
    assert_eq!(proxy.metrics.egress_count("engine", "shadow", "none"), 2);
}

#[tokio::test]
async fn header_case_order_and_body_are_recorded_and_forwarded_exactly() {
    let rx = receiver(vec![Reply::Status(204, "")]).await;
    let proxy = TestProxy::start(config()).await;
    let url = format!("{}/hooks/a?b=1", rx.base);
    let host = rx.base.trim_start_matches("http://");
    let request = format!(
        "POST {url} HTTP/1.1\r\nhost: {host}\r\nX-Event-Id: evt_c\r\nx-SIGNATURE: v1=abc\r\nProxy-Connection: keep-alive\r\nUser-Agent: Go-http-client/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\n3\r\n1}}\n\r\n0\r\n\r\n"
    );
    let got = send(proxy.addrs.egress_legacy, request.as_bytes(), LONG).await;
    assert_eq!(got.status(), Some(204), "{got:?}");

    let hit = &rx.hits()[0];
    assert_eq!(hit.head.target, "/hooks/a?b=1", "origin-form upstream");
    let names: Vec<&str> = hit.head.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "host",
            "X-Event-Id",
            "x-SIGNATURE",
            "User-Agent",
            "Transfer-Encoding"
        ]
    );
    assert_eq!(hit.body, b"{\"a\":1}\n");

    let row = &rows(&proxy, 1).await[0];
    assert_eq!(row["target"], url.as_str());
    assert_eq!(row["http_version"], "HTTP/1.1");
    let recorded: Vec<(String, String)> =
        serde_json::from_value(row["request_headers"].clone()).unwrap();
    assert_eq!(
        recorded,
        [
            ("host", host),
            ("X-Event-Id", "evt_c"),
            ("x-SIGNATURE", "v1=abc"),
            ("Proxy-Connection", "keep-alive"),
            ("User-Agent", "Go-http-client/1.1"),
            ("Transfer-Encoding", "chunked"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()))
    );
    assert_eq!(row["request_body_text"], "{\"a\":1}\n");
    assert_eq!(row["response_status"], 204);
    assert_eq!(row["response_headers"][0][0], "X-Receiver");
}

#[tokio::test]
async fn keep_alive_connections_carry_several_attempts() {
    let rx = receiver(vec![Reply::Status(500, "a"), Reply::Status(200, "b")]).await;
    let proxy = TestProxy::start(config()).await;
    let url = format!("{}/hook", rx.base);
    let mut s = tokio::net::TcpStream::connect(proxy.addrs.egress_legacy)
        .await
        .unwrap();
    let (rd, mut wr) = s.split();
    let mut r = proxy::egress::wire::Reader::new(rd);
    for want in [500, 200] {
        tokio::io::AsyncWriteExt::write_all(&mut wr, &webhook(&url, "X-Event-Id", "evt_k", "{}"))
            .await
            .unwrap();
        let head = r.response_head().await.unwrap();
        r.body(proxy::egress::wire::response_framing("POST", &head).unwrap())
            .await
            .unwrap();
        assert_eq!(head.status, want);
    }
    let rows = rows(&proxy, 2).await;
    assert_eq!(find(&rows, "legacy", 2)["response_status"], 200);
}

#[tokio::test]
async fn a_reset_is_replayed_as_an_abrupt_close() {
    let rx = receiver(vec![Reply::Reset]).await;
    let proxy = TestProxy::start(config()).await;
    let url = format!("{}/hook", rx.base);
    let primary = send(
        proxy.addrs.egress_legacy,
        &webhook(&url, "X-Event-Id", "evt_r", "{}"),
        LONG,
    )
    .await;
    let shadow = send(
        proxy.addrs.egress_engine,
        &webhook(&url, "X-Event-Id", "evt_r", "{}"),
        LONG,
    )
    .await;
    assert!(matches!(primary, Got::Closed(_)), "{primary:?}");
    assert!(matches!(shadow, Got::Closed(_)), "{shadow:?}");
    assert_eq!(rx.hits().len(), 1);
    let rows = rows(&proxy, 2).await;
    assert_eq!(find(&rows, "legacy", 1)["fault"], "reset");
    assert_eq!(find(&rows, "engine", 1)["fault"], "reset");
    assert_eq!(find(&rows, "engine", 1)["role"], "shadow");
    assert_eq!(find(&rows, "engine", 1)["response_status"], Value::Null);
}

#[tokio::test]
async fn a_refused_connection_is_replayed_as_a_close_without_answer() {
    // A port nothing listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = TestProxy::start(config()).await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let primary = send(
        proxy.addrs.egress_legacy,
        &webhook(&url, "X-Event-Id", "evt_x", "{}"),
        LONG,
    )
    .await;
    let shadow = send(
        proxy.addrs.egress_engine,
        &webhook(&url, "X-Event-Id", "evt_x", "{}"),
        LONG,
    )
    .await;
    assert!(matches!(primary, Got::Closed(_)), "{primary:?}");
    assert!(matches!(shadow, Got::Closed(_)), "{shadow:?}");
    let rows = rows(&proxy, 2).await;
    assert_eq!(find(&rows, "legacy", 1)["fault"], "refused");
    assert_eq!(find(&rows, "engine", 1)["fault"], "refused");
}

#[tokio::test]
async fn a_timeout_is_replayed_by_hanging_until_the_sender_gives_up() {
    let rx = receiver(vec![Reply::Hang]).await;
    let mut cfg = config();
    cfg.egress.upstream_timeout = "200ms".into();
    let proxy = TestProxy::start(cfg).await;
    let url = format!("{}/hook", rx.base);
    // The primary's sender gives up after 400 ms; the proxy's own upstream
    // timeout (200 ms) passed first, and it kept the sender hanging anyway.
    let t = Instant::now();
    let primary = send(
        proxy.addrs.egress_legacy,
        &webhook(&url, "X-Event-Id", "evt_t", "{}"),
        Duration::from_millis(400),
    )
    .await;
    assert!(matches!(primary, Got::TimedOut), "{primary:?}");
    assert!(t.elapsed() >= Duration::from_millis(400));
    let shadow = send(
        proxy.addrs.egress_engine,
        &webhook(&url, "X-Event-Id", "evt_t", "{}"),
        Duration::from_millis(300),
    )
    .await;
    assert!(matches!(shadow, Got::TimedOut), "{shadow:?}");
    assert_eq!(rx.hits().len(), 1);
    let rows = rows(&proxy, 2).await;
    let (p, s) = (find(&rows, "legacy", 1), find(&rows, "engine", 1));
    assert_eq!(p["fault"], "timeout");
    assert_eq!(s["fault"], "timeout");
    assert_eq!(s["role"], "shadow");
    assert!(
        s["note"]
            .as_str()
            .unwrap()
            .contains("closed the connection"),
        "{s}"
    );
}

#[tokio::test]
async fn a_sender_that_gives_up_before_the_receiver_answers_is_a_timeout() {
    let rx = receiver(vec![Reply::Hang]).await;
    let proxy = TestProxy::start(config()).await; // upstream timeout 5 s
    let url = format!("{}/hook", rx.base);
    let got = send(
        proxy.addrs.egress_legacy,
        &webhook(&url, "X-Event-Id", "evt_g", "{}"),
        Duration::from_millis(200),
    )
    .await;
    assert!(matches!(got, Got::TimedOut));
    let rows = rows(&proxy, 1).await;
    assert_eq!(rows[0]["fault"], "timeout");
    assert!(
        rows[0]["latency_us"].as_i64().unwrap() < 4_000_000,
        "recorded when the sender gave up, not at the upstream timeout"
    );
}

#[tokio::test]
async fn an_attempt_the_primary_never_made_gets_the_default_answer() {
    let rx = receiver(vec![Reply::Status(200, "ok")]).await;
    let mut cfg = config();
    cfg.egress.pairing_wait = "150ms".into();
    cfg.egress.shadow_only_status = 503;
    cfg.egress.shadow_only_body = "no primary".into();
    let proxy = TestProxy::start(cfg).await;
    let url = format!("{}/hook", rx.base);
    let got = send(
        proxy.addrs.egress_engine,
        &webhook(&url, "webhook-id", "evt_only", "{}"),
        LONG,
    )
    .await;
    assert_eq!(got.status(), Some(503));
    assert_eq!(got.body(), b"no primary");
    assert!(
        rx.hits().is_empty(),
        "the shadow never reaches the receiver"
    );
    let rows = rows(&proxy, 1).await;
    assert_eq!(
        (rows[0]["role"].as_str(), rows[0]["source"].as_str()),
        (Some("shadow_only"), Some("default"))
    );
    assert_eq!(rows[0]["response_status"], 503);
    assert_eq!(Metrics::get(&proxy.metrics.pairing_timeouts), 1);
}

#[tokio::test]
async fn at_25_percent_every_endpoint_gets_one_real_request_per_attempt_from_its_primary() {
    let rx = receiver(vec![Reply::Status(200, "ok")]).await;
    let proxy = TestProxy::start(config()).await;
    proxy.ramp.set(2500, "test stage", "test").await.unwrap();
    let urls: Vec<String> = (0..120).map(|i| format!("{}/ep/{i}", rx.base)).collect();
    let mut tasks = Vec::new();
    for url in &urls {
        for (addr, header) in [
            (proxy.addrs.egress_legacy, "X-Event-Id"),
            (proxy.addrs.egress_engine, "webhook-id"),
        ] {
            let req = webhook(url, header, "evt_ramp", "{}");
            tasks.push(tokio::spawn(async move { send(addr, &req, LONG).await }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status(), Some(200));
    }
    let hits = rx.hits();
    assert_eq!(
        hits.len(),
        urls.len(),
        "exactly one real request per endpoint"
    );
    let mut engine_primary = 0;
    for (i, url) in urls.iter().enumerate() {
        let on_path: Vec<_> = hits
            .iter()
            .filter(|h| h.head.target == format!("/ep/{i}"))
            .collect();
        assert_eq!(on_path.len(), 1, "{url}");
        let from_engine = on_path[0].header("webhook-id").is_some();
        assert_eq!(from_engine, proxy::ramp::engine_primary(url, 2500), "{url}");
        engine_primary += from_engine as usize;
    }
    assert!(
        (12..=48).contains(&engine_primary),
        "{engine_primary} of 120 engine-primary at 25%"
    );
}

#[tokio::test]
async fn a_rollback_applies_to_the_next_attempt() {
    let rx = receiver(vec![Reply::Status(500, "a"), Reply::Status(200, "b")]).await;
    let proxy = TestProxy::start(config()).await;
    let url = format!("{}/hook", rx.base);
    proxy.ramp.set(10_000, "all engine", "test").await.unwrap();
    let e1 = send(
        proxy.addrs.egress_engine,
        &webhook(&url, "webhook-id", "evt_rb", "{}"),
        LONG,
    )
    .await;
    let l1 = send(
        proxy.addrs.egress_legacy,
        &webhook(&url, "X-Event-Id", "evt_rb", "{}"),
        LONG,
    )
    .await;
    assert_eq!((e1.status(), l1.status()), (Some(500), Some(500)));
    // Rollback through the admin API, as `hookshift ramp rollback` does.
    let admin = proxy::admin::Client::new(&format!("http://{}", proxy.addrs.admin));
    let view = admin
        .rollback("divergence in retries", "test")
        .await
        .unwrap();
    assert_eq!(view.bp, 0);
    let l2 = send(
        proxy.addrs.egress_legacy,
        &webhook(&url, "X-Event-Id", "evt_rb", "{}"),
        LONG,
    )
    .await;
    let e2 = send(
        proxy.addrs.egress_engine,
        &webhook(&url, "webhook-id", "evt_rb", "{}"),
        LONG,
    )
    .await;
    assert_eq!((l2.status(), e2.status()), (Some(200), Some(200)));
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    assert!(
        hits[0].header("webhook-id").is_some(),
        "attempt 1 was the engine's"
    );
    assert!(
        hits[1].header("X-Event-Id").is_some() && hits[1].header("webhook-id").is_none(),
        "attempt 2 the legacy's"
    );
    let rows = rows(&proxy, 4).await;
    assert_eq!(find(&rows, "legacy", 2)["ramp_bp"], 0);
    assert_eq!(find(&rows, "engine", 1)["ramp_bp"], 10_000);
}

#[tokio::test]
async fn passthrough_forwards_and_records_both_senders() {
    let rx = receiver(vec![Reply::Status(200, "ok")]).await;
    let mut cfg = config();
    cfg.egress.mode = "passthrough".into();
    let proxy = TestProxy::start(cfg).await;
    let url = format!("{}/hook", rx.base);
    for (addr, h) in [
        (proxy.addrs.egress_legacy, "X-Event-Id"),
        (proxy.addrs.egress(SenderName::Engine), "webhook-id"),
    ] {
        assert_eq!(
            send(addr, &webhook(&url, h, "evt_p", "{}"), LONG)
                .await
                .status(),
            Some(200)
        );
    }
    assert_eq!(rx.hits().len(), 2);
    let rows = rows(&proxy, 2).await;
    assert!(rows.iter().all(|r| r["role"] == "passthrough"));
}

#[tokio::test]
async fn connect_is_tunnelled_and_recorded_as_opaque() {
    let rx = receiver(vec![Reply::Status(200, "tunnelled")]).await;
    let proxy = TestProxy::start(config()).await;
    let authority = rx.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(proxy.addrs.egress_legacy)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 39];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200 Connection Established\r\n\r\n");
    s.write_all(b"GET /inside HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The receiver keeps the connection open: read until its answer is in.
    let mut rest = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&rest).ends_with("tunnelled") {
        let n = tokio::time::timeout(LONG, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "tunnel closed early: {}",
            String::from_utf8_lossy(&rest)
        );
        rest.extend_from_slice(&chunk[..n]);
    }
    drop(s);
    let rows = rows(&proxy, 1).await;
    assert_eq!(rows[0]["fault"], "tunnel");
    assert!(rows[0]["note"].as_str().unwrap().contains("opaque"));
}
