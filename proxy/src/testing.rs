//! Test support: a proxy on 127.0.0.1:0 with its handles, and PostgreSQL
//! helpers. Used by this crate's tests and by the scenario runner.

use crate::capture::CaptureStore;
use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::ramp::Ramp;
use crate::{Addrs, Listeners, Proxy};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A proxy serving on four loopback ports; stops when dropped.
pub struct TestProxy {
    pub addrs: Addrs,
    pub store: CaptureStore,
    pub ramp: Arc<Ramp>,
    pub metrics: Arc<Metrics>,
    pub ingress: Arc<crate::ingress::Ingress>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), crate::ProxyError>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestProxy {
    /// A configuration for two sender APIs, with a capture store in a fresh
    /// temporary SQLite file (set by [`TestProxy::start`] when
    /// `capture_store` is left empty).
    pub fn config(legacy_api: &str, engine_api: &str) -> ProxyConfig {
        let mut cfg = ProxyConfig {
            capture_store: String::new(),
            ..ProxyConfig::default()
        };
        cfg.senders.legacy.api = legacy_api.to_string();
        cfg.senders.engine.api = engine_api.to_string();
        for l in [
            &mut cfg.listen.ingress,
            &mut cfg.listen.egress_legacy,
            &mut cfg.listen.egress_engine,
            &mut cfg.listen.admin,
        ] {
            *l = "127.0.0.1:0".into();
        }
        cfg
    }

    /// Starts a proxy on fresh loopback listeners; panics on a bad
    /// configuration (tests).
    pub async fn start(cfg: ProxyConfig) -> TestProxy {
        let listeners = Listeners::loopback().await.expect("bind loopback");
        Self::start_with(cfg, listeners).await
    }

    /// Starts a proxy on listeners bound by the caller (so senders can be
    /// pointed at the egress addresses before the proxy starts).
    pub async fn start_with(mut cfg: ProxyConfig, listeners: Listeners) -> TestProxy {
        let dir = if cfg.capture_store.is_empty() {
            let dir = tempfile::tempdir().expect("tempdir");
            cfg.capture_store = format!("sqlite://{}", dir.path().join("captures.db").display());
            Some(dir)
        } else {
            None
        };
        let cfg = cfg.validate().expect("valid test proxy config");
        let addrs = listeners.addrs().expect("addrs");
        let proxy = Proxy::start(cfg).await.expect("proxy starts");
        let (store, ramp, metrics, ingress) = (
            proxy.store.clone(),
            proxy.ramp.clone(),
            proxy.metrics.clone(),
            proxy.ingress.clone(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy.serve(listeners, async {
            let _ = stopped.await;
        }));
        TestProxy {
            addrs,
            store,
            ramp,
            metrics,
            ingress,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// `http://ADDR` of a sender's egress listener, to give it as its proxy.
    pub fn egress_url(&self, sender: crate::capture::SenderName) -> String {
        format!("http://{}", self.addrs.egress(sender))
    }

    /// Stops the proxy and waits for its listeners to close.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `HOOKSHIFT_TEST_POSTGRES_URL`, or None with a notice (a panic under
/// `CI=true`, where the PostgreSQL cases must run).
pub fn postgres_url() -> Option<String> {
    match std::env::var("HOOKSHIFT_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but HOOKSHIFT_TEST_POSTGRES_URL is not set: the PostgreSQL tests must run in CI");
            }
            eprintln!("notice: HOOKSHIFT_TEST_POSTGRES_URL is not set; skipping PostgreSQL cases");
            None
        }
    }
}

/// Creates a fresh schema for one test and returns its name.
pub async fn fresh_pg_schema(url: &str) -> String {
    use sqlx::Connection as _;
    let name = format!("cap_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    name
}
