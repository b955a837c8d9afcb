//! End-to-end delivery tests: an engine with its worker delivers to scripted
//! receivers on 127.0.0.1:0, and the stored states, attempts and
//! transitions are checked.

use engine::clock::{ManualClock, SharedClock, SystemClock};
use engine::config::{EngineConfig, WorkerSection};
use engine::store::Store;
use engine::testing::{TestDb, TestEngine};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

mod support;
use support::{receiver, Reply};

fn config(allow_loopback: bool) -> EngineConfig {
    EngineConfig {
        worker: WorkerSection {
            allow_cidrs: if allow_loopback {
                vec!["127.0.0.0/8".into()]
            } else {
                vec![]
            },
            retry_schedule: Some("20ms,20ms,20ms".into()),
            deadline: Some("400ms".into()),
            lease: "5s".into(),
            ..WorkerSection::default()
        },
        ..EngineConfig::default()
    }
}

struct Setup {
    engine: TestEngine,
    http: reqwest::Client,
}

impl Setup {
    async fn new(store: Store, cfg: EngineConfig, clock: SharedClock) -> Setup {
        let engine = TestEngine::start(store.clone(), cfg, clock).await;
        Setup {
            engine,
            http: reqwest::Client::new(),
        }
    }

    async fn endpoint(&self, id: &str, body: Value) -> Value {
        let r = self
            .http
            .put(format!("{}/v1/endpoints/{id}", self.engine.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "upsert: {}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }

    /// Posts an event and returns its (single) delivery id.
    async fn event(&self, id: &str, payload: Value) -> String {
        let r = self
            .http
            .post(format!("{}/v1/events", self.engine.base))
            .json(&json!({"id": id, "type": "order.created", "payload": payload}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        v["deliveries"][0]["id"].as_str().unwrap().to_string()
    }

    async fn delivery(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/deliveries/{id}", self.engine.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The engine's Prometheus text.
    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.engine.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the delivery is in `state` (or panics with its history).
    async fn wait_for(&self, id: &str, states: &[&str]) -> Value {
        for _ in 0..600 {
            let d = self.delivery(id).await;
            if states.contains(&d["state"].as_str().unwrap()) {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "delivery never reached {states:?}: {:#}",
            self.delivery(id).await
        );
    }
}

fn outcomes(d: &Value) -> Vec<String> {
    d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn success_after_one_attempt_on_every_backend() {
    for db in TestDb::all().await {
        let rx = receiver(vec![Reply::Status(200)]).await;
        let s = Setup::new(db.store.clone(), config(true), Arc::new(SystemClock)).await;
        s.endpoint("ep", json!({"url": rx.url})).await;
        let id = s.event("evt_ok", json!({"a": 1})).await;
        let d = s.wait_for(&id, &["succeeded"]).await;
        assert_eq!(outcomes(&d), ["delivered"], "[{}]", db.label);
        assert_eq!(rx.hits().len(), 1);
        let to: Vec<&str> = d["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to"].as_str().unwrap())
            .collect();
        assert_eq!(to, ["pending", "in_flight", "succeeded"], "[{}]", db.label);
        assert_eq!(
            rx.hits()[0].body,
            br#"{"a":1}"#,
            "the exact bytes received at ingest"
        );
        s.engine.shutdown().await;
    }
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let db = TestDb::sqlite().await;
    let rx = receiver(vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Status(200),
    ])
    .await;
    let s = Setup::new(db.store.clone(), config(true), Arc::new(SystemClock)).await;
    s.endpoint("ep", json!({"url": rx.url})).await;
    let id = s.event("evt_retry", json!({})).await;
    let d = s.wait_for(&id, &["succeeded"]).await;
    assert_eq!(outcomes(&d), ["server_error", "server_error", "delivered"]);
    assert_eq!(rx.hits().len(), 3);
    // Stable ids across retries so receivers can deduplicate.
    let ids: Vec<String> = rx
        .hits()
        .iter()
        .map(|h| {
            h.head
                .lines()
                .find(|l| l.starts_with("webhook-id:"))
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(ids.iter().all(|i| i == "webhook-id: evt_retry"), "{ids:?}");
    s.engine.shutdown().await;
}

#[tokio::test]
async fn client_errors_fail_after_one_attempt_and_410_disables_the_endpoint() {
    let db = TestDb::sqlite().await;
    let rx401 = receiver(vec![Reply::Status(401)]).await;
    let rx410 = receiver(vec![Reply::Status(410)]).await;
    let s = Setup::new(db.store.clone(), config(true), Arc::new(SystemClock)).await;
    s.endpoint("ep", json!({"url": rx401.url})).await;
    let id = s.event("evt_401", json!({})).await;
    let d = s.wait_for(&id, &["failed"]).await;
    assert_eq!(outcomes(&d), ["client_error"]);
    assert_eq!(rx401.hits().len(), 1);

    s.endpoint("ep", json!({"url": rx410.url})).await;
    let id = s.event("evt_410", json!({})).await;
    s.wait_for(&id, &["failed"]).await;
    let ep: Value = s
        .http
        .get(format!("{}/v1/endpoints/ep", s.engine.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ep["disabled"], true, "410 Gone disables the endpoint: {ep}");
    s.engine.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let db = TestDb::sqlite().await;
    let clock = ManualClock::at(1_700_000_000_000);
    let rx = receiver(vec![
        Reply::WithHeaders(429, vec![("Retry-After", "2".into())]),
        Reply::Status(200),
    ])
    .await;
    let s = Setup::new(db.store.clone(), config(true), Arc::new(clock.clone())).await;
    s.endpoint("ep", json!({"url": rx.url})).await;
    let id = s.event("evt_429", json!({})).await;
    let d = s.wait_for(&id, &["retry_scheduled"]).await;
    let finished = d["attempts"][0]["finished_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        d["next_attempt_at"], "2023-11-14T22:13:22.000Z",
        "2 s after {finished}, not the 20 ms schedule"
    );
    // Not due yet: nothing is sent before the clock reaches it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hits().len(), 1);
    clock.advance(2_000);
    let d = s.wait_for(&id, &["succeeded"]).await;
    assert_eq!(outcomes(&d), ["rate_limited", "delivered"]);
    s.engine.shutdown().await;
}

#[tokio::test]
async fn a_stalled_body_is_never_success() {
    let db = TestDb::sqlite().await;
    let rx = receiver(vec![Reply::StallBody, Reply::StallBody, Reply::Status(200)]).await;
    let s = Setup::new(db.store.clone(), config(true), Arc::new(SystemClock)).await;
    s.endpoint("ep", json!({"url": rx.url})).await;
    let id = s.event("evt_stall", json!({})).await;
    let d = s.wait_for(&id, &["succeeded", "failed"]).await;
    assert_eq!(outcomes(&d), ["body_read", "body_read", "delivered"]);
    assert_eq!(
        d["attempts"][0]["response_status"], 200,
        "the status line did arrive"
    );
    s.engine.shutdown().await;
}

#[tokio::test]
async fn resets_are_retried_and_exhaustion_fails() {
    let db = TestDb::sqlite().await;
    let rx = receiver(vec![Reply::Reset]).await;
    let s = Setup::new(db.store.clone(), config(true), Arc::new(SystemClock)).await;
    s.endpoint("ep", json!({"url": rx.url})).await;
    let id = s.event("evt_reset", json!({})).await;
    let d = s.wait_for(&id, &["failed"]).await;
    assert_eq!(
        outcomes(&d),
        ["reset", "reset", "reset", "reset"],
        "1 + 3 scheduled retries"
    );
    s.engine.shutdown().await;
}

#[tokio::test]
async fn redirects_fail_by_default_and_are_followed_under_the_legacy_profile() {
    let db = TestDb::sqlite().await;
    let target = receiver(vec![Reply::Status(200)]).await;
    let rx = receiver(vec![Reply::WithHeaders(
        307,
        vec![("Location", target.url.clone())],
    )])
    .await;
    let s = Setup::new(db.store.clone(), config(true), Arc::new(SystemClock)).await;
    s.endpoint("ep", json!({"url": rx.url})).await;
    let id = s.event("evt_307", json!({})).await;
    let d = s.wait_for(&id, &["failed"]).await;
    assert_eq!(outcomes(&d), ["redirect"]);
    assert!(target.hits().is_empty());

    s.endpoint(
        "ep",
        json!({"url": rx.url, "profile": "legacy", "secret": "legacy-secret-1"}),
    )
    .await;
    let id = s.event("evt_307b", json!({"z": "<&>", "a": 1})).await;
    s.wait_for(&id, &["succeeded"]).await;
    let hit = &target.hits()[0];
    assert_eq!(
        hit.body, br#"{"a":1,"z":"\u003c\u0026\u003e"}"#,
        "Go's encoding"
    );
    assert!(
        hit.head.contains("X-Event-Id: evt_307b"),
        "Go's header case: {}",
        hit.head
    );
    assert!(
        hit.head.contains("User-Agent: Go-http-client/1.1"),
        "{}",
        hit.head
    );
    s.engine.shutdown().await;
}

#[tokio::test]
async fn private_destinations_are_blocked_without_a_connection() {
    let db = TestDb::sqlite().await;
    let rx = receiver(vec![Reply::Status(200)]).await;
    // Loopback is not allowed here, so the guard must refuse it.
    let s = Setup::new(db.store.clone(), config(false), Arc::new(SystemClock)).await;
    s.endpoint("ep", json!({"url": rx.url})).await;
    let id = s.event("evt_ssrf", json!({})).await;
    let d = s.wait_for(&id, &["failed"]).await;
    assert_eq!(outcomes(&d), ["blocked_destination"]);
    assert!(rx.hits().is_empty(), "no connection was made");
    s.engine.shutdown().await;
}

#[tokio::test]
async fn the_official_standard_webhooks_library_accepts_every_delivery() {
    let db = TestDb::sqlite().await;
    let rx = receiver(vec![Reply::Status(204)]).await;
    let s = Setup::new(db.store.clone(), config(true), Arc::new(SystemClock)).await;
    let ep = s.endpoint("ep", json!({"url": rx.url})).await;
    let secret = ep["secret"].as_str().unwrap().to_string();
    let payloads = [
        json!({"a": 1}),
        json!([1, 2.5, "x"]),
        json!("<script>&\u{2028}"),
        json!({"nested": {"deep": [null, true]}}),
    ];
    let mut ids = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        ids.push(s.event(&format!("evt_sw_{i}"), p.clone()).await);
    }
    for id in &ids {
        s.wait_for(id, &["succeeded"]).await;
    }
    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    assert_eq!(rx.hits().len(), payloads.len());
    for hit in rx.hits() {
        let mut headers = reqwest::header::HeaderMap::new();
        for line in hit.head.lines().skip(1).filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').unwrap();
            headers.append(
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                v.trim().parse().unwrap(),
            );
        }
        wh.verify(&hit.body, &headers)
            .unwrap_or_else(|e| panic!("rejected: {e:?}\n{}", hit.head));
    }
    s.engine.shutdown().await;
}

fn breaker_config(failures: u32, probe: &str, disable_after: &str) -> EngineConfig {
    let mut cfg = config(true);
    cfg.worker.retry_schedule = Some("1s,1s,1s,1s,1s,1s,1s,1s,1s,1s".into());
    cfg.worker.breaker = engine::config::BreakerSection {
        failures,
        probe_interval: probe.into(),
        disable_after: disable_after.into(),
    };
    cfg
}

impl Setup {
    async fn get_endpoint(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/endpoints/{id}", self.engine.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Waits until the receiver has seen `n` requests and no attempt is in
/// flight (so moving the injected clock cannot expire a live lease), then
/// a little longer to show no more requests arrive.
async fn expect_hits(rx: &support::Receiver, store: &Store, n: usize, label: &str) {
    for _ in 0..500 {
        let in_flight = store
            .count_by_state()
            .await
            .unwrap()
            .get(&engine::state::DeliveryState::InFlight)
            .copied()
            .unwrap_or(0);
        if rx.hits().len() >= n && in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Longer than the worker's poll interval: anything claimable is claimed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if rx.hits().len() != n {
        let all = store
            .list_deliveries(&engine::store::DeliveryFilter {
                state: None,
                endpoint_id: None,
                cursor: None,
                limit: 100,
            })
            .await
            .unwrap();
        let ids: Vec<String> = all.iter().map(|d| d.id.clone()).collect();
        for t in store.transitions_for(&ids).await.unwrap() {
            eprintln!(
                "{} {:?} -> {} attempt {} {:?} {} at {}",
                t.delivery_id, t.from_state, t.to_state, t.attempt, t.outcome, t.reason, t.at
            );
        }
    }
    assert_eq!(rx.hits().len(), n, "[{label}] requests received");
}

#[tokio::test]
async fn the_breaker_opens_probes_survives_a_restart_and_closes_on_success() {
    for db in TestDb::all().await {
        let l = db.label;
        let clock = ManualClock::at(1_700_000_000_000);
        // The first engine's shutdown closes its pool; watch through another.
        let watch = db.second_store().await;
        // Five failures open the breaker at three; the first probe fails
        // too; the second succeeds and everything flows again.
        let mut script = vec![Reply::Status(500); 6];
        script.push(Reply::Status(200));
        let rx = receiver(script).await;
        let cfg = breaker_config(3, "10s", "1h");
        // Ingest first with no worker, so one claim takes all five at once.
        let api_only = EngineConfig {
            role: "api".into(),
            ..cfg.clone()
        };
        let s = Setup::new(db.store.clone(), api_only, Arc::new(clock.clone())).await;
        s.endpoint("ep", json!({"url": rx.url})).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(s.event(&format!("evt_br_{i}"), json!({"i": i})).await);
        }
        s.engine.shutdown().await;
        let s = Setup::new(
            db.second_store().await,
            cfg.clone(),
            Arc::new(clock.clone()),
        )
        .await;
        for id in &ids {
            s.wait_for(id, &["retry_scheduled"]).await;
        }
        expect_hits(&rx, &watch, 5, l).await;
        let ep = s.get_endpoint("ep").await;
        assert_eq!(ep["breaker"]["state"], "open", "[{l}] {ep}");
        assert_eq!(ep["breaker"]["consecutive_failures"], 5, "[{l}] {ep}");
        assert_eq!(
            ep["breaker"]["opened_at"], "2023-11-14T22:13:20.000Z",
            "[{l}] {ep}"
        );
        assert_eq!(
            ep["breaker"]["next_probe_at"], "2023-11-14T22:13:30.000Z",
            "[{l}] {ep}"
        );
        assert_eq!(ep["disabled"], false);

        // Retries are due after 1 s, but the breaker holds them back.
        clock.advance(2_000);
        expect_hits(&rx, &watch, 5, l).await;

        // The breaker is in the database: a new engine process keeps it.
        s.engine.shutdown().await;
        let s = Setup::new(
            db.second_store().await,
            cfg.clone(),
            Arc::new(clock.clone()),
        )
        .await;
        clock.advance(2_000);
        expect_hits(&rx, &watch, 5, l).await;
        assert_eq!(s.get_endpoint("ep").await["breaker"]["state"], "open");

        // At the probe time exactly one delivery goes out; it fails.
        clock.advance(6_000);
        expect_hits(&rx, &watch, 6, l).await;
        let ep = s.get_endpoint("ep").await;
        assert_eq!(ep["breaker"]["state"], "open", "[{l}] {ep}");
        assert_eq!(ep["breaker"]["consecutive_failures"], 6, "[{l}] {ep}");

        // The next probe succeeds: the breaker closes and the rest flow.
        clock.advance(10_000);
        for id in &ids {
            s.wait_for(id, &["succeeded"]).await;
        }
        expect_hits(&rx, &watch, 11, l).await;
        let ep = s.get_endpoint("ep").await;
        assert_eq!(ep["breaker"]["state"], "closed", "[{l}] {ep}");
        assert_eq!(ep["breaker"]["consecutive_failures"], 0, "[{l}] {ep}");
        assert_eq!(ep["breaker"]["opened_at"], Value::Null, "[{l}] {ep}");
        s.engine.shutdown().await;
    }
}

#[tokio::test]
async fn continuous_failure_disables_the_endpoint_and_gives_up_its_deliveries() {
    for db in TestDb::all().await {
        let l = db.label;
        let clock = ManualClock::at(1_700_000_000_000);
        let rx = receiver(vec![Reply::Status(503)]).await;
        let s = Setup::new(
            db.store.clone(),
            breaker_config(2, "10s", "30s"),
            Arc::new(clock.clone()),
        )
        .await;
        s.endpoint("ep", json!({"url": rx.url})).await;
        let a = s.event("evt_dis_a", json!({})).await;
        s.wait_for(&a, &["retry_scheduled"]).await;
        let b = s.event("evt_dis_b", json!({})).await;
        s.wait_for(&b, &["retry_scheduled"]).await;
        assert_eq!(s.get_endpoint("ep").await["breaker"]["state"], "open");
        expect_hits(&rx, &db.store, 2, l).await;

        // Probes every 10 s fail (each takes the delivery due first);
        // 30 s after the first failure the breaker gives up.
        for (step, hits) in [(1, 3), (2, 4)] {
            clock.advance(10_000);
            expect_hits(&rx, &db.store, hits, &format!("{l} probe {step}")).await;
            assert_eq!(s.get_endpoint("ep").await["disabled"], false, "[{l}]");
        }
        // Posted while the breaker is open: they wait, never attempted
        // (the next probe takes an older retry).
        let c = s.event("evt_dis_c", json!({})).await;
        let d = s.event("evt_dis_d", json!({})).await;
        expect_hits(&rx, &db.store, 4, l).await;
        assert_eq!(s.delivery(&c).await["state"], "pending", "[{l}]");
        clock.advance(10_000);
        expect_hits(&rx, &db.store, 5, l).await;
        let ep = s.get_endpoint("ep").await;
        assert_eq!(ep["disabled"], true, "[{l}] {ep}");
        assert_eq!(ep["disabled_reason"], "breaker", "[{l}] {ep}");

        for (id, state) in [
            (&a, "failed"),
            (&b, "failed"),
            (&c, "cancelled"),
            (&d, "cancelled"),
        ] {
            let d = s.delivery(id).await;
            assert_eq!(d["state"], state, "[{l}] {d:#}");
            let last = d["transitions"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(last["reason"], "breaker_disabled", "[{l}] {d:#}");
        }
        // Nothing more goes out, however long we wait.
        clock.advance(3_600_000);
        expect_hits(&rx, &db.store, 5, l).await;

        // Re-enabling closes the breaker and forgets the failures.
        let ep = s
            .endpoint("ep", json!({"url": rx.url, "disabled": false}))
            .await;
        assert_eq!(ep["breaker"]["state"], "closed", "[{l}] {ep}");
        assert_eq!(ep["breaker"]["consecutive_failures"], 0, "[{l}] {ep}");
        assert_eq!(ep["disabled_reason"], Value::Null, "[{l}] {ep}");

        let metrics = s
            .http
            .get(format!("{}/metrics", s.engine.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("hookshift_breaker_changes_total{change=\"opened\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("hookshift_breaker_changes_total{change=\"disabled\"} 1"),
            "{metrics}"
        );
        s.engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_rate_limited_endpoint_is_not_sent_faster_than_its_limit() {
    for db in TestDb::all().await {
        let l = db.label;
        let clock = ManualClock::at(1_700_000_000_000);
        let rx = receiver(vec![Reply::Status(200)]).await;
        let s = Setup::new(db.store.clone(), config(true), Arc::new(clock.clone())).await;
        s.endpoint("ep", json!({"url": rx.url, "rate_limit_per_s": 2}))
            .await;
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(s.event(&format!("evt_rl_{i}"), json!({"i": i})).await);
        }
        // A full bucket: one second's worth goes at once, then nothing
        // until the clock moves, however long real time runs.
        expect_hits(&rx, &db.store, 2, l).await;
        // Each half second of injected time earns one more request.
        for step in 1..=8 {
            clock.advance(500);
            expect_hits(
                &rx,
                &db.store,
                2 + step,
                &format!("{l} after {} ms", step * 500),
            )
            .await;
        }
        for id in &ids {
            s.wait_for(id, &["succeeded"]).await;
        }
        // A long pause refills only a one-second burst.
        clock.advance(60_000);
        for i in 10..15 {
            s.event(&format!("evt_rl_{i}"), json!({"i": i})).await;
        }
        expect_hits(&rx, &db.store, 12, l).await;
        s.engine.shutdown().await;
    }
}

#[tokio::test]
async fn metrics_show_the_worker() {
    let db = TestDb::sqlite().await;
    let rx = receiver(vec![Reply::Status(200)]).await;
    let s = Setup::new(db.store.clone(), config(true), Arc::new(SystemClock)).await;
    s.endpoint("ep", json!({"url": rx.url})).await;
    let id = s.event("evt_metrics", json!({})).await;
    s.wait_for(&id, &["succeeded"]).await;
    // The gauges are sampled every second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let m = s.metrics().await;
    for line in [
        "hookshift_attempts_total{outcome=\"delivered\"} 1",
        "hookshift_attempts_in_flight 0",
        "hookshift_due_deliveries 0",
        "hookshift_endpoint_breakers{state=\"closed\"} 1",
        "hookshift_endpoint_breakers{state=\"open\"} 0",
        "hookshift_lease_rescues_total 0",
        "hookshift_attempt_seconds_count 1",
        // An idle worker takes a new delivery straight from ingest.
        "hookshift_deliveries_claimed_total{by=\"ingest\"} 1",
        "hookshift_deliveries_claimed_total{by=\"worker\"} 0",
    ] {
        assert!(m.contains(line), "missing `{line}` in\n{m}");
    }
    s.engine.shutdown().await;
}

/// With every slot taken, ingest hands nothing over: new deliveries wait,
/// pending, for the claim loop, which takes them as slots free up, in order.
#[tokio::test]
async fn a_full_worker_leaves_new_deliveries_to_its_claim_loop() {
    for db in TestDb::all().await {
        // The first request stalls its body until the 400 ms deadline.
        let rx = receiver(vec![Reply::StallBody, Reply::Status(200)]).await;
        let mut cfg = config(true);
        cfg.worker.max_in_flight = 1;
        cfg.worker.retry_schedule = Some("1h".into());
        let s = Setup::new(db.store.clone(), cfg, Arc::new(SystemClock)).await;
        s.endpoint("ep", json!({"url": rx.url})).await;
        let first = s.event("evt_full_1", json!({})).await;
        // The first is in flight (claimed at ingest) while the next arrive.
        s.wait_for(&first, &["in_flight"]).await;
        let second = s.event("evt_full_2", json!({})).await;
        let third = s.event("evt_full_3", json!({})).await;
        for id in [&second, &third] {
            let d = s.delivery(id).await;
            assert_eq!(d["state"], "pending", "[{}] {d:#}", db.label);
        }
        s.wait_for(&second, &["succeeded"]).await;
        s.wait_for(&third, &["succeeded"]).await;
        let d = s.delivery(&first).await;
        assert_eq!(d["state"], "retry_scheduled", "[{}] {d:#}", db.label);
        let m = s.metrics().await;
        for line in [
            "hookshift_deliveries_claimed_total{by=\"ingest\"} 1",
            "hookshift_deliveries_claimed_total{by=\"worker\"} 2",
        ] {
            assert!(m.contains(line), "[{}] missing `{line}` in\n{m}", db.label);
        }
        s.engine.shutdown().await;
    }
}
