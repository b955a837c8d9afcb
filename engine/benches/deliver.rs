//! End-to-end delivery benchmark: events posted to an engine on 127.0.0.1:0,
//! delivered to an instant local receiver (a minimal keep-alive HTTP server
//! in this process), attempts persisted. 30 endpoints in 10 groups of 3;
//! each event matches one group, so every event makes 3 deliveries. On
//! SQLite and (when a URL is configured) PostgreSQL. Prints figures; asserts
//! nothing.
//!
//!     cargo bench -p engine --bench deliver
//!
//! Runs, per backend:
//! - max: events posted as fast as 64 concurrent clients can, all endpoints
//!   healthy; throughput is deliveries persisted per second from the first
//!   post to the last persisted attempt;
//! - half: events posted open-loop at half the max run's delivery rate, for
//!   the ingest-to-receipt latency (post sent → request at the receiver);
//! - hang: like max, but 3 of the 30 endpoints (10%) never answer, so their
//!   attempts run to the deadline; the healthy endpoints' throughput is
//!   printed against the max run's.
//!
//! Also idle RSS (VmRSS of this process with an idle engine started, before
//! any load: an upper bound for the engine alone) and peak RSS (VmHWM).
//!
//! The load generator and the receivers run on a runtime of their own, on
//! threads named `bench-load`, so that each run can print the CPU time per
//! delivery that the engine's threads used (its runtime's workers and the
//! database driver's threads) apart from the load's: the engine's CPU per
//! delivery bounds what two cores can deliver, whatever the scheduling.
//!
//! Environment: BENCH_EVENTS (default 10000), BENCH_CONCURRENCY (64),
//! BENCH_HALF_RATE (deliveries/s offered in the half run instead of half
//! the max run's rate: for comparing two builds at the same load),
//! BENCH_DEADLINE (the hanging endpoints' deadline, default "2s"),
//! BENCH_BACKENDS (e.g. "postgres": only these of sqlite and postgres),
//! HOOKSHIFT_BENCH_POSTGRES_URL or HOOKSHIFT_TEST_POSTGRES_URL. The load
//! generator and receiver share the 2 cores with the engine, so the figures
//! are a lower bound for the engine alone.

use engine::clock::SystemClock;
use engine::config::{EngineConfig, WorkerSection};
use engine::state::DeliveryState;
use engine::store::Store;
use engine::testing::{metric, TestEngine};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

const GROUPS: usize = 10;
const PER_GROUP: usize = 3;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A value from /proc/self/status, in KiB.
fn proc_status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) used so far by this process's threads, in
/// microseconds, summed by thread name (`/proc/self/task/*/stat`). Threads
/// that ended before the call are not counted; the engine's and the load's
/// threads live as long as their runtimes.
fn cpu_by_thread_name() -> std::collections::BTreeMap<String, u64> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so split at the
        // last ')'; utime and stime are the 12th and 13th fields after it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum();
        *by_name.entry(name).or_insert(0) += ticks * 1_000_000 / ticks_per_s;
    }
    by_name
}

/// CPU microseconds per delivery between two [`cpu_by_thread_name`]
/// readings: (engine, of which database threads; load generator and
/// receivers).
fn cpu_per_delivery(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    deliveries: usize,
) -> CpuFigures {
    let mut engine = 0;
    let mut database = 0;
    let mut load = 0;
    for (name, &us) in after {
        let used = us.saturating_sub(before.get(name).copied().unwrap_or(0));
        if name == LOAD_THREADS {
            load += used;
        } else {
            engine += used;
            if name.starts_with("sqlx") {
                database += used;
            }
        }
    }
    let per = |us: u64| us as f64 / deliveries.max(1) as f64;
    CpuFigures {
        engine_us: per(engine),
        database_us: per(database),
        load_us: per(load),
    }
}

/// The load generator's and receivers' thread name.
const LOAD_THREADS: &str = "bench-load";

#[derive(Clone, Copy, Default)]
struct CpuFigures {
    /// Every thread but the load's: the engine's runtime, the database
    /// driver's threads (SQLite's connections), the rest.
    engine_us: f64,
    database_us: f64,
    load_us: f64,
}

/// What the receiver saw: ingest-to-receipt latencies in microseconds.
struct Seen {
    latency: Mutex<Histogram<u64>>,
    count: AtomicUsize,
}

/// A keep-alive HTTP/1.1 receiver on 127.0.0.1:0. Each request's payload
/// carries `"t"`, microseconds since `epoch` when its event was posted.
/// With `hang`, requests are read and never answered.
async fn receiver(load: &Handle, epoch: Instant, seen: Arc<Seen>, hang: bool) -> String {
    let (bound, addr) = tokio::sync::oneshot::channel();
    load.spawn(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _ = bound.send(listener.local_addr().unwrap());
        while let Ok((sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let _ = serve(sock, epoch, &seen, hang).await;
            });
        }
    });
    format!("http://{}/hook", addr.await.unwrap())
}

async fn serve(
    mut sock: TcpStream,
    epoch: Instant,
    seen: &Seen,
    hang: bool,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&buf[..head_end]).unwrap_or("");
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        if hang {
            // Never answer: the engine's deadline ends the attempt.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        let now = epoch.elapsed().as_micros() as u64;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf[head_end..head_end + len]) {
            if let Some(t) = v["t"].as_u64() {
                let _ = seen
                    .latency
                    .lock()
                    .unwrap()
                    .record(now.saturating_sub(t).max(1));
            }
        }
        seen.count.fetch_add(1, Ordering::Relaxed);
        buf.drain(..head_end + len);
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Closed loop, as fast as the clients go.
    Max,
    /// Open loop at this many deliveries per second.
    Paced(f64),
}

struct Figures {
    deliveries: usize,
    /// Deliveries persisted as succeeded per second (healthy endpoints).
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    cpu: CpuFigures,
    /// Events per ingest transaction (group commit), from the engine's
    /// metrics: `cargo bench --bench store_writer` gives what SQLite's
    /// writer alone persists at such a batch size.
    events_per_commit: f64,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    load: &Handle,
    label: &str,
    store: Store,
    events: usize,
    concurrency: usize,
    mode: Mode,
    hanging: usize,
    deadline: &str,
) -> Figures {
    let config = EngineConfig {
        worker: WorkerSection {
            allow_cidrs: vec!["127.0.0.0/8".into()],
            deadline: Some(deadline.into()),
            // A hanging endpoint's deliveries do not come back during a run.
            retry_schedule: Some("1h".into()),
            ..WorkerSection::default()
        },
        ..EngineConfig::default()
    };
    let engine = TestEngine::start(store.clone(), config, Arc::new(SystemClock)).await;
    let epoch = Instant::now();
    let seen = Arc::new(Seen {
        latency: Mutex::new(Histogram::<u64>::new(3).unwrap()),
        count: AtomicUsize::new(0),
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    // Posts go through a client of their own, whose connections the load
    // runtime drives (the admin client's are the engine runtime's).
    let admin = http.clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let mut n = 0;
    for g in 0..GROUPS {
        for k in 0..PER_GROUP {
            // The first endpoint of the first `hanging` groups never answers.
            let hang = k == 0 && g < hanging;
            let url = receiver(load, epoch, seen.clone(), hang).await;
            let r = admin
                .put(format!(
                    "{}/v1/endpoints/bench_{label}_{g}_{k}",
                    engine.base
                ))
                .json(&serde_json::json!({"url": url, "event_types": [format!("g{g}")]}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "endpoint upsert failed");
            n += 1;
        }
    }
    assert_eq!(n, GROUPS * PER_GROUP);
    // Healthy deliveries of the events ingest accepted (a failed post
    // creates none).
    let expected = Arc::new(AtomicUsize::new(0));
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let events_url = format!("{}/v1/events", engine.base);
    let post = {
        let http = http.clone();
        let expected = expected.clone();
        move |i: usize| {
            let http = http.clone();
            let url = events_url.clone();
            let run_id = run_id.clone();
            let expected = expected.clone();
            async move {
                let t = epoch.elapsed().as_micros() as u64;
                let body = serde_json::json!({
                    "id": format!("evt_{run_id}_{i}"),
                    "type": format!("g{}", i % GROUPS),
                    "payload": {"t": t, "order": {"id": i, "total": 99.95, "currency": "EUR"},
                                "customer": {"id": "cus_123", "tags": ["vip", "eu"]}}
                });
                let ok = match http.post(url).json(&body).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => true,
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        eprintln!("  post {i}: {status} {text}");
                        false
                    }
                    Err(e) => {
                        eprintln!("  post {i}: {e}");
                        false
                    }
                };
                if ok {
                    let healthy = PER_GROUP - usize::from(i % GROUPS < hanging);
                    expected.fetch_add(healthy, Ordering::Relaxed);
                }
                ok
            }
        }
    };
    let errors = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_by_thread_name();
    let started = Instant::now();
    let progress = {
        let seen = seen.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let n = seen.count.load(Ordering::Relaxed);
                eprintln!(
                    "  [{label}] {n} received, {:.0}/s",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut tasks = Vec::new();
    match mode {
        Mode::Max => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..concurrency {
                let next = next.clone();
                let post = post.clone();
                let errors = errors.clone();
                tasks.push(load.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= events {
                            break;
                        }
                        if !post(i).await {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
        Mode::Paced(deliveries_per_s) => {
            let events_per_s = deliveries_per_s / PER_GROUP as f64;
            let limit = Arc::new(tokio::sync::Semaphore::new(concurrency * 4));
            for i in 0..events {
                let at = started + Duration::from_secs_f64(i as f64 / events_per_s);
                tokio::time::sleep_until(at.into()).await;
                let permit = limit.clone().acquire_owned().await.unwrap();
                let post = post.clone();
                let errors = errors.clone();
                tasks.push(load.spawn(async move {
                    if !post(i).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(permit);
                }));
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let healthy_total = expected.load(Ordering::Relaxed);
    // Wait until every healthy delivery is persisted as succeeded. The
    // store is asked only once the receivers have seen them all: counting
    // is a scan the engine's database threads would otherwise run 50 times
    // a second, in the CPU time charged to the engine.
    let done_at = loop {
        if seen.count.load(Ordering::Relaxed) < healthy_total {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "[{label}] only {} of {healthy_total} received after 600 s",
                seen.count.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let by_state = store.count_by_state().await.unwrap();
        let ok = by_state
            .get(&DeliveryState::Succeeded)
            .copied()
            .unwrap_or(0) as usize;
        if ok >= healthy_total {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "[{label}] only {ok}/{healthy_total} delivered after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = cpu_per_delivery(&cpu_before, &cpu_by_thread_name(), healthy_total);
    progress.abort();
    let metrics = admin
        .get(format!("{}/metrics", engine.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events_per_commit = metric(&metrics, "hookshift_ingest_batch_events_total")
        / metric(&metrics, "hookshift_ingest_batches_total").max(1.0);
    engine.shutdown().await;
    let hist = seen.latency.lock().unwrap().clone();
    Figures {
        deliveries: healthy_total,
        per_s: healthy_total as f64 / done_at.as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        errors: errors.load(Ordering::Relaxed),
        cpu,
        events_per_commit,
    }
}

/// A fresh store per run, so runs do not see each other's rows.
async fn fresh_store(backend: &str, dir: &std::path::Path, n: usize, pg: Option<&str>) -> Store {
    match (backend, pg) {
        ("postgres", Some(url)) => {
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            Store::connect_with(url, Some(&schema)).await.unwrap()
        }
        _ => {
            let url = format!("sqlite://{}", dir.join(format!("bench{n}.db")).display());
            Store::connect(&url).await.unwrap()
        }
    }
}

fn main() {
    let events = env_usize("BENCH_EVENTS", 10_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let deadline = std::env::var("BENCH_DEADLINE").unwrap_or_else(|_| "2s".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(LOAD_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let load = load_rt.handle().clone();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pg = std::env::var("HOOKSHIFT_BENCH_POSTGRES_URL")
            .or_else(|_| std::env::var("HOOKSHIFT_TEST_POSTGRES_URL"))
            .ok()
            .filter(|u| !u.is_empty());
        let idle_rss_kib = {
            let store = fresh_store("sqlite", dir.path(), 0, None).await;
            let engine = TestEngine::start(store, EngineConfig::default(), Arc::new(SystemClock)).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss = proc_status_kib("VmRSS:");
            engine.shutdown().await;
            rss
        };
        eprintln!(
            "deliver bench: {events} events x 3 endpoints, concurrency {concurrency}, \
             {GROUPS} groups of {PER_GROUP} endpoints"
        );
        let mut backends = vec!["sqlite"];
        match &pg {
            Some(_) => backends.push("postgres"),
            None => eprintln!("notice: no HOOKSHIFT_BENCH_POSTGRES_URL; PostgreSQL skipped (eval \"$(scripts/postgres.sh)\" sets it)"),
        }
        if let Ok(only) = std::env::var("BENCH_BACKENDS") {
            backends.retain(|b| only.split(',').any(|o| o.trim() == *b));
        }
        let mut rows = Vec::new();
        let mut n = 1;
        for backend in backends {
            let mut store = || {
                n += 1;
                fresh_store(backend, dir.path(), n, pg.as_deref())
            };
            let max = run(&load, &format!("{backend}-max"), store().await, events, concurrency, Mode::Max, 0, &deadline).await;
            let half_rate = std::env::var("BENCH_HALF_RATE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(max.per_s / 2.0);
            let half = run(&load, &format!("{backend}-half"), store().await, events, concurrency, Mode::Paced(half_rate), 0, &deadline).await;
            let hang = run(&load, &format!("{backend}-hang"), store().await, events, concurrency, Mode::Max, 3, &deadline).await;
            eprintln!(
                "  [{backend}] max {:.0}/s (engine CPU {:.0} µs/delivery, load {:.0}); half rate p50 {:.2} ms, p99 {:.2} ms; hanging {:.0}/s healthy ({:.0}%); errors {}/{}/{}",
                max.per_s, max.cpu.engine_us, max.cpu.load_us, half.p50_ms, half.p99_ms, hang.per_s, 100.0 * hang.per_s / max.per_s,
                max.errors, half.errors, hang.errors
            );
            rows.push((backend, max, half, half_rate, hang));
        }
        let peak_rss_kib = proc_status_kib("VmHWM:");
        println!();
        println!("| backend  | run                         | deliveries | deliveries/s | p50 ms | p99 ms | errors | engine CPU µs/delivery (database) | load CPU µs/delivery |");
        println!("|----------|-----------------------------|-----------:|-------------:|-------:|-------:|-------:|----------------------------------:|---------------------:|");
        for (backend, max, half, half_rate, hang) in &rows {
            let line = |name: String, f: &Figures| {
                println!(
                    "| {backend:<8} | {name:<27} | {:>10} | {:>12.0} | {:>6.2} | {:>6.2} | {:>6} | {:>23.0} ({:>6.0}) | {:>20.0} |",
                    f.deliveries, f.per_s, f.p50_ms, f.p99_ms, f.errors,
                    f.cpu.engine_us, f.cpu.database_us, f.cpu.load_us
                );
            };
            line("max, all healthy".into(), max);
            line(format!("half rate ({half_rate:.0}/s offered)"), half);
            line("max, 10% hanging (healthy)".into(), hang);
            println!(
                "| {backend:<8} | healthy throughput with 10% hanging: {:.0}% of all-healthy |",
                100.0 * hang.per_s / max.per_s
            );
            // What the cores allow the engine at the max run's CPU cost per
            // delivery, were it alone on the machine and every core busy.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            // PostgreSQL's server runs in processes of its own, on the same
            // cores, and is not in these figures.
            let server = if *backend == "postgres" {
                " (the PostgreSQL server's CPU not counted)"
            } else {
                ""
            };
            println!(
                "| {backend:<8} | engine CPU at max: {:.0} µs/delivery, so at most {:.0} deliveries/s on {cores} cores with no load generator{server} |",
                max.cpu.engine_us,
                cores as f64 * 1e6 / max.cpu.engine_us.max(1.0)
            );
            println!(
                "| {backend:<8} | events per ingest commit: {:.1} at max, {:.1} at half rate |",
                max.events_per_commit, half.events_per_commit
            );
        }
        println!();
        println!(
            "idle RSS (bench process, idle engine): {:.1} MiB; peak RSS (VmHWM): {:.1} MiB",
            idle_rss_kib as f64 / 1024.0,
            peak_rss_kib as f64 / 1024.0
        );
    });
}
