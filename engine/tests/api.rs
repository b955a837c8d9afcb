//! Platform API tests over HTTP, against an engine on 127.0.0.1:0, on every
//! configured backend.

use engine::clock::{ManualClock, SharedClock, SystemClock};
use engine::config::EngineConfig;
use engine::store::Store;
use engine::testing::{TestDb, TestEngine};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(engine: &TestEngine) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: engine.base.clone(),
            token: None,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        if !status.is_success() {
            assert_eq!(
                ct.as_deref(),
                Some("application/problem+json"),
                "error body type for {status}: {text}"
            );
        }
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::PUT, path).json(&body))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.send(
            self.req(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }
}

/// The API alone: these tests use example.com endpoints, and no delivery may
/// leave the machine.
fn api_only() -> EngineConfig {
    EngineConfig {
        role: "api".into(),
        ..EngineConfig::default()
    }
}

async fn start(db: &TestDb) -> TestEngine {
    TestEngine::start(db.store.clone(), api_only(), Arc::new(SystemClock)).await
}

/// Everything a reader can see of the stored state, to check that a
/// rejected request changed nothing.
async fn snapshot(api: &Api) -> Value {
    let (_, endpoints) = api.get("/v1/endpoints").await;
    let (_, deliveries) = api.get("/v1/deliveries?limit=500").await;
    json!({"endpoints": endpoints, "deliveries": deliveries})
}

#[tokio::test]
async fn endpoint_lifecycle() {
    for db in TestDb::all().await {
        let engine = start(&db).await;
        let api = Api::new(&engine);
        let (st, created) = api
            .put("/v1/endpoints/ep1", json!({"url": "https://example.com/hook", "event_types": ["a"], "description": "d"}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "[{}] {created}", db.label);
        let secret = created["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"));
        let (st, updated) = api
            .put(
                "/v1/endpoints/ep1",
                json!({"url": "https://example.com/v2"}),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            updated.get("secret").is_none(),
            "an update does not show the secret"
        );
        assert_eq!(updated["url"], "https://example.com/v2");
        assert_eq!(
            updated["event_types"],
            json!([]),
            "PUT replaces the whole endpoint"
        );
        let (_, list) = api.get("/v1/endpoints").await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        assert!(
            !list.to_string().contains(&secret),
            "listings never carry secrets"
        );
        let (_, one) = api.get("/v1/endpoints/ep1").await;
        assert!(!one.to_string().contains(&secret));
        let (_, s) = api.get("/v1/endpoints/ep1/secret").await;
        assert_eq!(
            s["secret"],
            secret.as_str(),
            "the secret survives an update"
        );

        let (st, rotated) = api.post("/v1/endpoints/ep1/secret/rotate", json!({})).await;
        assert_eq!(st, StatusCode::OK);
        let new_secret = rotated["secret"].as_str().unwrap();
        assert_ne!(new_secret, secret);
        let secrets = db.store.signing_secrets("ep1", now_ms()).await.unwrap();
        assert_eq!(
            secrets,
            vec![new_secret.to_string(), secret.clone()],
            "old secret signs during grace"
        );

        let resp = api
            .req(reqwest::Method::DELETE, "/v1/endpoints/ep1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(api.get("/v1/endpoints/ep1").await.0, StatusCode::NOT_FOUND);
        assert_eq!(api.get("/v1/endpoints").await.1["data"], json!([]));
        engine.shutdown().await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn events_are_idempotent_by_id_and_key() {
    for db in TestDb::all().await {
        let engine = start(&db).await;
        let api = Api::new(&engine);
        for i in 0..3 {
            api.put(
                &format!("/v1/endpoints/ep{i}"),
                json!({"url": "https://example.com/h"}),
            )
            .await;
        }
        let ev = json!({"id": "evt_1", "type": "order.created", "payload": {"b": 1, "a": "<&>"}});
        let (st, first) = api.post("/v1/events", ev.clone()).await;
        assert_eq!(st, StatusCode::ACCEPTED, "[{}] {first}", db.label);
        assert_eq!(first["deliveries"].as_array().unwrap().len(), 3);
        let (st, second) = api.post("/v1/events", ev).await;
        assert_eq!(
            (st, &second),
            (StatusCode::ACCEPTED, &first),
            "[{}] same id, same body",
            db.label
        );
        let (st, conflict) = api
            .post(
                "/v1/events",
                json!({"id": "evt_1", "type": "order.created", "payload": {"b": 2}}),
            )
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "[{}] {conflict}", db.label);
        assert!(conflict["detail"].as_str().unwrap().contains("evt_1"));

        let keyed = |body: Value| {
            api.req(reqwest::Method::POST, "/v1/events")
                .header("Idempotency-Key", "k-1")
                .json(&body)
        };
        let (st, k1) = api.send(keyed(json!({"type": "t", "payload": [1]}))).await;
        assert_eq!(st, StatusCode::ACCEPTED);
        assert!(
            k1["id"].as_str().unwrap().starts_with("evt_"),
            "generated id: {k1}"
        );
        let (_, k2) = api.send(keyed(json!({"type": "t", "payload": [1]}))).await;
        assert_eq!(k1, k2, "same key, same body: the original answer");
        assert_eq!(
            api.send(keyed(json!({"type": "t", "payload": [2]})))
                .await
                .0,
            StatusCode::CONFLICT
        );

        // A new id that reuses another event's key is a conflict on the key.
        let r = api
            .req(reqwest::Method::POST, "/v1/events")
            .header("Idempotency-Key", "k-1")
            .json(&json!({"id": "evt_other", "type": "t", "payload": [1]}));
        let (st, p) = api.send(r).await;
        assert_eq!(st, StatusCode::CONFLICT, "[{}] {p}", db.label);
        assert!(
            p["detail"].as_str().unwrap().contains("Idempotency-Key"),
            "{p}"
        );
        let (_, deliveries) = api.get("/v1/deliveries?limit=500").await;
        assert_eq!(
            deliveries["data"].as_array().unwrap().len(),
            6,
            "[{}] nothing duplicated",
            db.label
        );
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn events_keep_payload_bytes_exactly() {
    for db in TestDb::all().await {
        let engine = start(&db).await;
        let api = Api::new(&engine);
        let payload = r#"{ "z" : 1.0, "a":"\u003c\u2028", "big": 9007199254740993 }"#;
        let body = format!(r#"{{"id":"evt_raw","type":"t","payload":{payload}}}"#);
        assert_eq!(
            api.post_raw("/v1/events", &body).await.0,
            StatusCode::ACCEPTED
        );
        let text = api
            .req(reqwest::Method::GET, "/v1/events/evt_raw")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(payload),
            "[{}] raw payload echoed byte for byte: {text}",
            db.label
        );
        let stored = db.store.get_event("evt_raw").await.unwrap().unwrap();
        assert_eq!(stored.payload_raw, payload.as_bytes());
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn bad_input_is_named_and_changes_nothing() {
    for db in TestDb::all().await {
        let engine = start(&db).await;
        let api = Api::new(&engine);
        api.put("/v1/endpoints/ep1", json!({"url": "https://example.com/h"}))
            .await;
        api.post(
            "/v1/events",
            json!({"id": "evt_ok", "type": "t", "payload": {}}),
        )
        .await;
        let before = snapshot(&api).await;

        let cases: Vec<(&str, String, StatusCode, Option<&str>)> = vec![
            (
                "malformed JSON",
                r#"{"type": "t", "payload": "#.into(),
                StatusCode::BAD_REQUEST,
                None,
            ),
            (
                "wrong type",
                r#"{"type": 5, "payload": {}}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("type"),
            ),
            (
                "missing payload",
                r#"{"type": "t"}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("payload"),
            ),
            (
                "unknown field",
                r#"{"type": "t", "payload": 1, "paylod": 2}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("paylod"),
            ),
            (
                "bad id",
                r#"{"id": "has space", "type": "t", "payload": 1}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("id"),
            ),
            (
                "empty type",
                r#"{"type": "", "payload": 1}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("type"),
            ),
            (
                "oversize payload",
                format!(
                    r#"{{"type": "t", "payload": "{}"}}"#,
                    "x".repeat(256 * 1024)
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
            ),
            (
                "oversize body",
                format!(
                    r#"{{"type": "t", "payload": "{}"}}"#,
                    "x".repeat(400 * 1024)
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
            ),
            (
                "conflicting reuse",
                r#"{"id": "evt_ok", "type": "t", "payload": {"x": 1}}"#.into(),
                StatusCode::CONFLICT,
                None,
            ),
        ];
        for (name, body, status, field) in cases {
            let (st, problem) = api.post_raw("/v1/events", &body).await;
            assert_eq!(st, status, "[{}] {name}: {problem}", db.label);
            assert_eq!(problem["status"], status.as_u16(), "{name}");
            assert!(!problem["detail"].as_str().unwrap().is_empty(), "{name}");
            if let Some(f) = field {
                assert_eq!(problem["field"], f, "[{}] {name}: {problem}", db.label);
            }
        }
        let endpoint_cases = [
            (json!({"url": "ftp://example.com"}), "url"),
            (json!({"url": "/relative"}), "url"),
            (
                json!({"url": "https://example.com", "secret": "short"}),
                "secret",
            ),
            (
                json!({"url": "https://example.com", "secret": "whsec_notbase64!!"}),
                "secret",
            ),
            (
                json!({"url": "https://example.com", "profile": "svix"}),
                "profile",
            ),
            (
                json!({"url": "https://example.com", "rate_limit_per_s": 0}),
                "rate_limit_per_s",
            ),
            (
                json!({"url": "https://example.com", "disabled": "yes"}),
                "disabled",
            ),
            (json!({"description": "no url"}), "url"),
        ];
        for (body, field) in endpoint_cases {
            let (st, problem) = api.put("/v1/endpoints/ep1", body.clone()).await;
            assert_eq!(
                st,
                StatusCode::UNPROCESSABLE_ENTITY,
                "[{}] {body}: {problem}",
                db.label
            );
            assert_eq!(problem["field"], field, "[{}] {body}: {problem}", db.label);
        }
        let resp = api
            .req(reqwest::Method::POST, "/v1/events")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            api.get("/v1/deliveries?state=running").await.1["field"],
            "state"
        );
        assert_eq!(api.get("/v1/deliveries?limit=0").await.1["field"], "limit");
        assert_eq!(api.get("/v1/nope").await.0, StatusCode::NOT_FOUND);

        assert_eq!(
            snapshot(&api).await,
            before,
            "[{}] rejected requests changed stored state",
            db.label
        );
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn deliveries_carry_transitions_and_replay_is_audited() {
    for db in TestDb::all().await {
        let clock = ManualClock::at(1_700_000_000_000);
        let engine = TestEngine::start(
            db.store.clone(),
            api_only(),
            Arc::new(clock.clone()) as SharedClock,
        )
        .await;
        let api = Api::new(&engine);
        api.put("/v1/endpoints/ep1", json!({"url": "https://example.com/h"}))
            .await;
        let (_, ev) = api
            .post(
                "/v1/events",
                json!({"id": "evt_1", "type": "t", "payload": {}}),
            )
            .await;
        let id = ev["deliveries"][0]["id"].as_str().unwrap().to_string();
        let (st, d) = api.get(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(d["state"], "pending");
        assert_eq!(d["event_id"], "evt_1");
        assert_eq!(d["transitions"][0]["to"], "pending");
        assert_eq!(
            d["transitions"][0]["at"], "2023-11-14T22:13:20.000Z",
            "time comes from the injected clock"
        );
        assert_eq!(d["attempts"], json!([]));
        let (st, p) = api
            .post(&format!("/v1/deliveries/{id}/replay"), json!({}))
            .await;
        assert_eq!(
            st,
            StatusCode::CONFLICT,
            "a pending delivery cannot be replayed: {p}"
        );
        // Deleting the endpoint cancels it; a replay then revives it.
        api.req(reqwest::Method::DELETE, "/v1/endpoints/ep1")
            .send()
            .await
            .unwrap();
        clock.advance(1_000);
        let (st, replayed) = api
            .post(&format!("/v1/deliveries/{id}/replay"), json!({}))
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "[{}] {replayed}", db.label);
        assert_eq!(replayed["id"], id.as_str(), "replay keeps the delivery id");
        let reasons: Vec<&str> = replayed["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, ["created", "endpoint_gone", "replay"]);
        let (_, by_event) = api.get("/v1/events/evt_1/deliveries").await;
        assert_eq!(by_event["data"][0]["state"], "pending");
        assert_eq!(
            api.get("/v1/deliveries/dlv_missing").await.0,
            StatusCode::NOT_FOUND
        );
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn tokens_guard_the_api_but_not_health() {
    let db = TestDb::sqlite().await;
    let config = EngineConfig {
        api_tokens: vec!["tok_0123456789abcdef".into()],
        ..api_only()
    };
    let engine = TestEngine::start(db.store.clone(), config, Arc::new(SystemClock)).await;
    let mut api = Api::new(&engine);
    let (st, p) = api.get("/v1/endpoints").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{p}");
    api.token = Some("tok_wrong_wrong_wrong".into());
    assert_eq!(api.get("/v1/endpoints").await.0, StatusCode::UNAUTHORIZED);
    api.token = Some("tok_0123456789abcdef".into());
    assert_eq!(api.get("/v1/endpoints").await.0, StatusCode::OK);
    api.token = None;
    assert_eq!(api.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(api.get("/readyz").await.0, StatusCode::OK);
    let metrics = api
        .http
        .get(format!("{}/metrics", engine.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hookshift_http_responses_total{class=\"4xx\"} 2"),
        "{metrics}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn state_survives_an_engine_restart() {
    for db in TestDb::all().await {
        let engine = start(&db).await;
        let api = Api::new(&engine);
        api.put("/v1/endpoints/ep1", json!({"url": "https://example.com/h"}))
            .await;
        let (_, ev) = api
            .post(
                "/v1/events",
                json!({"id": "evt_keep", "type": "t", "payload": {"k": true}}),
            )
            .await;
        engine.shutdown().await;
        db.store.close().await;

        let store: Store = db.second_store().await;
        let engine = TestEngine::start(store, api_only(), Arc::new(SystemClock)).await;
        let api = Api::new(&engine);
        let (st, event) = api.get("/v1/events/evt_keep").await;
        assert_eq!(st, StatusCode::OK, "[{}]", db.label);
        assert_eq!(event["payload"], json!({"k": true}));
        let (_, d) = api.get("/v1/events/evt_keep/deliveries").await;
        assert_eq!(
            d["data"][0]["id"], ev["deliveries"][0]["id"],
            "[{}]",
            db.label
        );
        let (st, again) = api
            .post(
                "/v1/events",
                json!({"id": "evt_keep", "type": "t", "payload": {"k": true}}),
            )
            .await;
        assert_eq!(
            (st, again),
            (StatusCode::ACCEPTED, ev),
            "[{}] idempotent across restarts",
            db.label
        );
        engine.shutdown().await;
    }
}
