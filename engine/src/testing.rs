//! Helpers for tests and benchmarks: fresh databases on each backend, and an
//! engine started on 127.0.0.1:0.
//!
//! PostgreSQL runs when `HOOKSHIFT_TEST_POSTGRES_URL` is set. On a developer
//! machine without it, PostgreSQL cases are skipped with a printed notice;
//! under `CI=true` the variable is required and its absence fails the test.

use crate::clock::SharedClock;
use crate::config::EngineConfig;
use crate::server::Engine;
use crate::store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A fresh, empty database that lives as long as this value.
pub struct TestDb {
    /// The connected store (migrations applied).
    pub store: Store,
    /// Connection URL (for PostgreSQL, the schema travels separately).
    pub url: String,
    /// The PostgreSQL schema this database lives in.
    pub pg_schema: Option<String>,
    /// Human-readable backend name for assertion messages.
    pub label: &'static str,
    dir: Option<PathBuf>,
}

impl TestDb {
    /// A SQLite database in a new temporary file.
    pub async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("hookshift-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let url = format!("sqlite://{}", dir.join("engine.db").display());
        let store = Store::connect(&url).await.expect("open sqlite");
        TestDb {
            store,
            url,
            pg_schema: None,
            label: "sqlite",
            dir: Some(dir),
        }
    }

    /// A PostgreSQL database in a new schema, or None (with a notice) when
    /// `HOOKSHIFT_TEST_POSTGRES_URL` is unset outside CI.
    pub async fn postgres() -> Option<TestDb> {
        let url = postgres_url()?;
        let schema = format!("hs_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&url)
            .await
            .expect("connect to HOOKSHIFT_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .expect("create test schema");
        pool.close().await;
        let store = Store::connect_with(&url, Some(&schema))
            .await
            .expect("open postgres");
        Some(TestDb {
            store,
            url,
            pg_schema: Some(schema),
            label: "postgres",
            dir: None,
        })
    }

    /// Every backend available: SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite().await];
        dbs.extend(TestDb::postgres().await);
        dbs
    }

    /// Another connection pool on the same database, as a second engine
    /// process would have.
    pub async fn second_store(&self) -> Store {
        Store::connect_with(&self.url, self.pg_schema.as_deref())
            .await
            .expect("open second store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The PostgreSQL URL for tests, enforcing that CI provides one.
pub fn postgres_url() -> Option<String> {
    match std::env::var("HOOKSHIFT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but HOOKSHIFT_TEST_POSTGRES_URL is not set: the PostgreSQL tests must run in CI");
            }
            eprintln!("notice: HOOKSHIFT_TEST_POSTGRES_URL is not set; skipping PostgreSQL cases");
            None
        }
    }
}

/// An engine serving on 127.0.0.1:0; stops when dropped.
pub struct TestEngine {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestEngine {
    /// Starts an engine over `store` with `config` (its listen and database
    /// keys are ignored) and `clock`.
    pub async fn start(store: Store, config: EngineConfig, clock: SharedClock) -> TestEngine {
        let config = EngineConfig {
            listen: "127.0.0.1:0".into(),
            ..config
        }
        .validate()
        .expect("valid test config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let engine = Engine::with_store(config, store, clock).expect("engine starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(engine.serve(listener, async {
            let _ = stopped.await;
        }));
        TestEngine {
            addr,
            base: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the engine and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A sample's value in a Prometheus text exposition (`GET /metrics`), by its
/// full name with labels; 0 when absent. For benches and tests that read
/// the engine's own counters.
pub fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Builds the legacy Go sender (`fixtures/legacy-go`) once per test process
/// and returns its path. Without `go` on PATH it prints a notice naming what
/// is skipped and returns None, except under `CI=true`, where Go is required
/// and its absence fails the test.
pub fn legacy_sender_binary(skipping: &str) -> Option<PathBuf> {
    use std::process::Command;
    use std::sync::OnceLock;
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let go = Command::new("go").arg("version").output();
        if !go.is_ok_and(|o| o.status.success()) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("hookshift-legacy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let bin = dir.join("legacy-sender");
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/legacy-go");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg("./cmd/legacy-sender")
            .current_dir(&fixture)
            .output()
            .unwrap_or_else(|e| panic!("cannot run go build in {}: {e}", fixture.display()));
        assert!(
            out.status.success(),
            "go build ./cmd/legacy-sender in {} failed ({}):\n{}",
            fixture.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Some(bin)
    })
    .clone()
    .or_else(|| {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("Go is required in CI (CI=true) to build fixtures/legacy-go ({skipping})");
        }
        eprintln!("notice: go not found; skipping {skipping}");
        None
    })
}
