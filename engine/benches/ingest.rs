//! Ingest benchmark: `POST /v1/events` against an engine on 127.0.0.1:0 with
//! 3 matching endpoints, on SQLite and (when a URL is configured) PostgreSQL.
//! Prints events/s and latency percentiles. Not a test: it asserts nothing.
//!
//!     cargo bench -p engine --bench ingest
//!
//! Environment: BENCH_EVENTS (default 30000), BENCH_CONCURRENCY (default 64),
//! HOOKSHIFT_BENCH_POSTGRES_URL or HOOKSHIFT_TEST_POSTGRES_URL for PostgreSQL.
//! The load generator (a minimal keep-alive HTTP/1.1 client, one connection
//! per concurrent request) shares the machine with the engine, so the figures
//! are a lower bound for the engine alone.

use engine::clock::SystemClock;
use engine::config::EngineConfig;
use engine::store::Store;
use engine::testing::TestEngine;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bytes of one `POST /v1/events`, with a unique event id per request.
struct RequestTemplate {
    host: String,
    payload: String,
    run_id: String,
}

impl RequestTemplate {
    fn render(&self, i: usize) -> Vec<u8> {
        let body = format!(
            r#"{{"id":"evt_{}_{i}","type":"order.created","payload":{}}}"#,
            self.run_id, self.payload
        );
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )
        .into_bytes()
    }
}

/// A keep-alive HTTP/1.1 client connection that writes prepared requests and
/// reads just enough of each response (status line, Content-Length, body) to
/// be ready for the next. It is much cheaper than a general HTTP client, so
/// more of this shared 2-core machine is left to the engine under test.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one request and returns the response status.
    async fn post(&mut self, request: &[u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(request).await.unwrap();
        self.buf.clear();
        loop {
            if let Some(head_end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..head_end]).unwrap();
                let status: u16 = head[9..12].parse().unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while self.buf.len() < head_end + 4 + length {
                    let mut chunk = [0u8; 4096];
                    let n = self.stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "engine closed the connection");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return status;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "engine closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Figures {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: usize,
}

async fn run(label: &str, store: Store, events: usize, concurrency: usize) -> Figures {
    // The API alone: the endpoints are example hosts and nothing may be
    // delivered off this machine.
    let config = EngineConfig {
        role: "api".into(),
        ..EngineConfig::default()
    };
    let engine = TestEngine::start(store, config, Arc::new(SystemClock)).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    for i in 0..3 {
        let r = http
            .put(format!("{}/v1/endpoints/bench_ep{i}", engine.base))
            .json(&serde_json::json!({"url": format!("https://receiver{i}.example/hook")}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "endpoint upsert failed");
    }
    let payload = serde_json::json!({
        "order": {"id": 12345, "total": 99.95, "currency": "EUR", "note": "<b>gift</b> & thanks"},
        "customer": {"id": "cus_123", "email": "a@example.com", "tags": ["vip", "eu"]},
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]
    });
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let request = Arc::new(RequestTemplate {
        host: engine.addr.to_string(),
        payload: payload.to_string(),
        run_id,
    });
    // Warm up connections and caches.
    {
        let mut conn = Conn::open(engine.addr).await;
        for i in 0..200 {
            conn.post(&request.render(events + i)).await;
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "  [{label}] {n}/{events} events, {:.0}/s",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let done = done.clone();
        let request = request.clone();
        let addr = engine.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    break;
                }
                let bytes = request.render(i);
                let t = Instant::now();
                if conn.post(&bytes).await != 202 {
                    errors += 1;
                }
                hist.record(t.elapsed().as_micros() as u64).unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.unwrap();
        hist.add(h).unwrap();
        errors += e;
    }
    let elapsed = started.elapsed();
    progress.abort();
    // How the group commit behaved: events per commit and time per commit.
    let metrics = http
        .get(format!("{}/metrics", engine.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str| engine::testing::metric(&metrics, name);
    let batches = metric("hookshift_ingest_batches_total").max(1.0);
    eprintln!(
        "  [{label}] group commit: {:.1} events per batch, {:.2} ms per batch",
        metric("hookshift_ingest_batch_events_total") / batches,
        metric("hookshift_ingest_batch_seconds_sum") * 1000.0 / batches
    );
    engine.shutdown().await;
    Figures {
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: hist.max() as f64 / 1000.0,
        errors,
    }
}

fn main() {
    let events = env_usize("BENCH_EVENTS", 30_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rows = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        eprintln!("ingest bench: {events} events, concurrency {concurrency}, 3 endpoints each");
        rows.push(("sqlite", run("sqlite", Store::connect(&url).await.unwrap(), events, concurrency).await));
        let pg = std::env::var("HOOKSHIFT_BENCH_POSTGRES_URL")
            .or_else(|_| std::env::var("HOOKSHIFT_TEST_POSTGRES_URL"))
            .ok()
            .filter(|u| !u.is_empty());
        match pg {
            Some(url) => {
                let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&pool).await.unwrap();
                let store = Store::connect_with(&url, Some(&schema)).await.unwrap();
                rows.push(("postgres", run("postgres", store, events, concurrency).await));
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await.unwrap();
            }
            None => eprintln!("notice: no HOOKSHIFT_BENCH_POSTGRES_URL; PostgreSQL skipped (eval \"$(scripts/postgres.sh)\" sets it)"),
        }
        println!();
        println!("| backend  | events/s | p50 ms | p99 ms | max ms | errors |");
        println!("|----------|---------:|-------:|-------:|-------:|-------:|");
        for (name, f) in rows {
            println!(
                "| {name:<8} | {:>8.0} | {:>6.2} | {:>6.2} | {:>6.1} | {:>6} |",
                f.events_per_s, f.p50_ms, f.p99_ms, f.max_ms, f.errors
            );
        }
    });
}
