//! The database work of a delivery, without HTTP: what SQLite's one writer
//! spends per delivery on the happy path (ingest claims it, the attempt is
//! recorded as delivered), measured two ways on a fresh SQLite file:
//!
//! - `store`: through `Store::ingest_claiming` and `Store::record_attempts`,
//!   the engine's own code (sqlx), on a single-threaded runtime;
//! - `floor`: the same rows, indexes and durability written with rusqlite
//!   directly, each row through a cached single-row statement in one
//!   transaction per batch: SQLite's own cost for this schema, the least
//!   any code on it pays.
//!
//! Each round is one ingest transaction (`synchronous = FULL`: the API
//! acknowledges it) of `BENCH_INGEST_BATCH` events, 3 deliveries each, all
//! claimed at ingest, then one record transaction (`synchronous = NORMAL`)
//! per `BENCH_RECORD_BATCH` of their outcomes. The writer does these in
//! turn, so CPU time per delivery (all of the process's threads) bounds the
//! deliveries/s one writer can persist. Prints figures; asserts nothing.
//!
//!     cargo bench -p engine --bench store_writer
//!
//! Environment: BENCH_DELIVERIES (default 30000), BENCH_INGEST_BATCH
//! (events per ingest commit, default 16), BENCH_RECORD_BATCH (outcomes per
//! record commit, default 48).

use engine::breaker::BreakerPolicy;
use engine::state::{DeliveryState, OutcomeClass};
use engine::store::{AttemptRecord, ClaimAtIngest, EndpointSpec, NewEvent, Store};
use std::time::{Duration, Instant};

const ENDPOINTS: usize = 30;
const PER_EVENT: usize = 3;
const OWNER: &str = "bench-worker";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of every thread of this process so far.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The payload of the deliver bench's events (about the same size).
fn event(run: &str, i: usize) -> NewEvent {
    let payload = format!(
        r#"{{"t":{i},"order":{{"id":{i},"total":99.95,"currency":"EUR"}},"customer":{{"id":"cus_123","tags":["vip","eu"]}}}}"#
    );
    NewEvent {
        id: format!("evt_{run}_{i}"),
        event_type: format!("g{}", i % (ENDPOINTS / PER_EVENT)),
        tenant: None,
        payload_raw: payload.clone().into_bytes(),
        payload_parsed: payload,
        request_hash: format!("{:064x}", i),
        idempotency_key: None,
    }
}

/// What the default profile sends, as the worker records it.
const REQUEST_HEADERS: &str = r#"[["Host","127.0.0.1:40000"],["User-Agent","hookshift/0.1"],["Content-Length","118"],["Content-Type","application/json"],["Webhook-Id","evt_0123456789abcdef"],["Webhook-Signature","v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="],["Webhook-Timestamp","1700000000"],["Accept-Encoding","gzip"]]"#;

fn record(delivery_id: &str, endpoint_id: &str, at: i64) -> AttemptRecord {
    AttemptRecord {
        delivery_id: delivery_id.to_string(),
        endpoint_id: endpoint_id.to_string(),
        owner: OWNER.to_string(),
        attempt: 1,
        to: DeliveryState::Succeeded,
        next_attempt_at: None,
        outcome: OutcomeClass::Delivered,
        request_headers: REQUEST_HEADERS.to_string(),
        body_sha256: format!("{:064x}", at),
        response_status: Some(200),
        response_headers: Some(r#"[["content-length","0"]]"#.to_string()),
        response_body: Some(Vec::new()),
        response_truncated: false,
        duration_ms: 1,
        error: None,
        started_at: at,
        finished_at: at,
        disable_endpoint: None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Figures {
    deliveries: usize,
    wall: Duration,
    cpu: Duration,
}

impl Figures {
    fn per_s(&self) -> f64 {
        self.deliveries as f64 / self.wall.as_secs_f64()
    }

    fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.deliveries as f64
    }

    fn print(&self, label: &str) {
        println!(
            "| {label:<6} | {:>10} | {:>12.0} | {:>15.1} |",
            self.deliveries,
            self.per_s(),
            self.cpu_us(),
        );
    }
}

/// One way of writing the rows: the database file, deliveries, events per
/// ingest commit, outcomes per record commit.
type Writer = fn(&std::path::Path, usize, usize, usize) -> Figures;

fn endpoint_id(k: usize) -> String {
    format!("ep_{k:02}")
}

/// Through the engine's `Store`.
fn through_store(path: &std::path::Path, deliveries: usize, ingest: usize, rec: usize) -> Figures {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let now = now_ms();
        for k in 0..ENDPOINTS {
            let spec = EndpointSpec {
                url: format!("http://127.0.0.1:9/{k}"),
                description: None,
                event_types: vec![format!("g{}", k / PER_EVENT)],
                disabled: false,
                rate_limit_per_s: None,
                profile: None,
            };
            store
                .upsert_endpoint(&endpoint_id(k), &spec, Some("whsec_c2VjcmV0"), now)
                .await
                .unwrap();
        }
        let breaker = BreakerPolicy::default();
        let events = deliveries / PER_EVENT;
        let (cpu0, t0) = (process_cpu(), Instant::now());
        let mut done = 0;
        let mut i = 0;
        while i < events {
            let batch: Vec<NewEvent> = (i..(i + ingest).min(events))
                .map(|i| event("store", i))
                .collect();
            i += batch.len();
            let now = now_ms();
            let mut admit = |_: &str| true;
            let claim = ClaimAtIngest {
                owner: OWNER,
                lease_until: now + 60_000,
                admit: &mut admit,
            };
            let (_, claimed) = store
                .ingest_claiming(&batch, now, Some(claim))
                .await
                .unwrap();
            let recs: Vec<AttemptRecord> = claimed
                .iter()
                .map(|c| record(&c.id, &c.endpoint_id, now))
                .collect();
            for chunk in recs.chunks(rec) {
                store.record_attempts(chunk, &breaker).await.unwrap();
            }
            done += recs.len();
        }
        let figures = Figures {
            deliveries: done,
            wall: t0.elapsed(),
            cpu: process_cpu() - cpu0,
        };
        store.close().await;
        figures
    })
}

/// The same rows through rusqlite, one cached statement per row kind.
fn floor(path: &std::path::Path, deliveries: usize, ingest: usize, rec: usize) -> Figures {
    let mut db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        db.execute_batch(&std::fs::read_to_string(&f).unwrap())
            .unwrap();
    }
    let now = now_ms();
    for k in 0..ENDPOINTS {
        db.execute(
            "INSERT INTO endpoints (id, url, event_types, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            rusqlite::params![
                endpoint_id(k),
                format!("http://127.0.0.1:9/{k}"),
                format!(r#"["g{}"]"#, k / PER_EVENT),
                now
            ],
        )
        .unwrap();
    }
    let events = deliveries / PER_EVENT;
    let (cpu0, t0) = (process_cpu(), Instant::now());
    let mut done = 0;
    let mut i = 0;
    let mut seq = 0u64;
    while i < events {
        let batch: Vec<NewEvent> = (i..(i + ingest).min(events))
            .map(|i| event("floor", i))
            .collect();
        i += batch.len();
        let now = now_ms();
        let mut claimed: Vec<(String, String)> = Vec::new();
        db.execute_batch("PRAGMA synchronous = FULL").unwrap();
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut ins_event = tx
                .prepare_cached(
                    "INSERT INTO events (id, type, tenant, payload_raw, payload, request_hash, \
                     idempotency_key, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .unwrap();
            let mut endpoints = tx
                .prepare_cached(
                    "SELECT id, event_types, breaker_state = 'closed' AND rate_limit_per_s IS NULL \
                     FROM endpoints WHERE deleted_at IS NULL AND NOT disabled ORDER BY id",
                )
                .unwrap();
            let mut ins_delivery = tx
                .prepare_cached(
                    "INSERT INTO deliveries (id, event_id, endpoint_id, state, attempt_count, \
                     next_attempt_at, lease_owner, lease_expires_at, claimed_from, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, 'in_flight', 1, NULL, ?4, ?5, 'pending', ?6, ?6)",
                )
                .unwrap();
            let mut ins_transition = tx
                .prepare_cached(
                    "INSERT INTO delivery_transitions (delivery_id, from_state, to_state, attempt, reason, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .unwrap();
            let mut inserted = Vec::new();
            for e in &batch {
                let id: Option<String> = ins_event
                    .query_row(
                        rusqlite::params![
                            e.id,
                            e.event_type,
                            e.tenant,
                            e.payload_raw,
                            e.payload_parsed,
                            e.request_hash,
                            e.idempotency_key,
                            now
                        ],
                        |r| r.get(0),
                    )
                    .ok();
                inserted.push(id.is_some());
            }
            let eps: Vec<(String, String, bool)> = endpoints
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            for (e, _) in batch.iter().zip(&inserted).filter(|(_, ins)| **ins) {
                let quoted = format!("\"{}\"", e.event_type);
                for (ep, _, _) in eps.iter().filter(|(_, t, _)| t.contains(&quoted)) {
                    seq += 1;
                    let id = format!("dlv_{seq:026}");
                    ins_delivery
                        .execute(rusqlite::params![id, e.id, ep, OWNER, now + 60_000, now])
                        .unwrap();
                    claimed.push((id, ep.clone()));
                }
            }
            for (id, _) in &claimed {
                ins_transition
                    .execute(rusqlite::params![
                        id,
                        None::<&str>,
                        "pending",
                        0,
                        "created",
                        now
                    ])
                    .unwrap();
            }
            for (id, _) in &claimed {
                ins_transition
                    .execute(rusqlite::params![
                        id,
                        "pending",
                        "in_flight",
                        1,
                        "claimed",
                        now
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        db.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
        for chunk in claimed.chunks(rec) {
            let tx = db
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE deliveries SET claimed_from = state, state = 'succeeded', \
                         next_attempt_at = NULL, last_outcome = 'delivered', lease_owner = NULL, \
                         lease_expires_at = NULL, updated_at = ?3 \
                         WHERE id = ?1 AND +state = 'in_flight' AND lease_owner = ?2 AND attempt_count = 1 \
                         RETURNING id, attempt_count",
                    )
                    .unwrap();
                let mut ins_attempt = tx
                    .prepare_cached(
                        "INSERT INTO attempts (id, delivery_id, attempt, request_headers, body_sha256, \
                         response_status, response_headers, response_body, response_truncated, duration_ms, \
                         outcome, error, started_at, finished_at) \
                         VALUES (?1, ?2, 1, ?3, ?4, 200, ?5, ?6, 0, 1, 'delivered', NULL, ?7, ?7) \
                         ON CONFLICT (delivery_id, attempt) DO NOTHING RETURNING delivery_id, attempt",
                    )
                    .unwrap();
                let mut ins_transition = tx
                    .prepare_cached(
                        "INSERT INTO delivery_transitions \
                         (delivery_id, from_state, to_state, attempt, outcome, reason, at) \
                         VALUES (?1, 'in_flight', 'succeeded', 1, 'delivered', 'attempted', ?2)",
                    )
                    .unwrap();
                let mut quiet = tx
                    .prepare_cached(
                        "SELECT id FROM endpoints WHERE breaker_state = 'closed' \
                         AND consecutive_failures = 0 AND id = ?1",
                    )
                    .unwrap();
                let mut eps: Vec<&str> = chunk.iter().map(|(_, ep)| ep.as_str()).collect();
                eps.sort_unstable();
                eps.dedup();
                for ep in eps {
                    let _: Option<String> = quiet.query_row([ep], |r| r.get(0)).ok();
                }
                for (id, _) in chunk {
                    seq += 1;
                    let outcome = record(id, "", now);
                    let _: (String, i64) = update
                        .query_row(rusqlite::params![id, OWNER, now], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .unwrap();
                    let _: (String, i64) = ins_attempt
                        .query_row(
                            rusqlite::params![
                                format!("att_{seq:026}"),
                                id,
                                outcome.request_headers,
                                outcome.body_sha256,
                                outcome.response_headers,
                                outcome.response_body,
                                now
                            ],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .unwrap();
                    ins_transition.execute(rusqlite::params![id, now]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        done += claimed.len();
    }
    Figures {
        deliveries: done,
        wall: t0.elapsed(),
        cpu: process_cpu() - cpu0,
    }
}

fn main() {
    let deliveries = env_usize("BENCH_DELIVERIES", 30_000);
    let ingest = env_usize("BENCH_INGEST_BATCH", 16).max(1);
    let rec = env_usize("BENCH_RECORD_BATCH", 48).max(1);
    println!(
        "store writer bench: {deliveries} deliveries, {ingest} events ({} deliveries) per ingest commit, \
         {rec} outcomes per record commit, SQLite file",
        ingest * PER_EVENT
    );
    let dir = tempfile::tempdir().unwrap();
    println!();
    println!("| path   | deliveries | deliveries/s | CPU µs/delivery |");
    println!("|--------|-----------:|-------------:|----------------:|");
    // Twice each, interleaved; the figures compared are the second
    // round's, when the page cache is warm.
    let writers: [(&str, Writer); 2] = [("floor", floor), ("store", through_store)];
    let mut last = Vec::new();
    for round in 0..2 {
        last.clear();
        for (name, run) in writers {
            let figures = run(
                &dir.path().join(format!("{name}{round}.db")),
                deliveries,
                ingest,
                rec,
            );
            figures.print(name);
            last.push(figures);
        }
    }
    let (f, s) = (&last[0], &last[1]);
    println!();
    println!(
        "the store's database work costs {:.1}× SQLite's own for the same rows ({:.0} against {:.0} µs/delivery)",
        s.cpu_us() / f.cpu_us(),
        s.cpu_us(),
        f.cpu_us()
    );
    println!(
        "SQLite's one writer, with nothing else to do, persists at most {:.0} deliveries/s at this batch size \
         (CPU alone would allow {:.0}/s; the rest is waiting for fsync)",
        f.per_s(),
        1e6 / f.cpu_us()
    );
}
