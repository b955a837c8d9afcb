//! The capture store: what the proxy saw, for the comparator.
//!
//! One [`CaptureStore`] over SQLite (`sqlite://PATH`, created if missing, WAL)
//! or PostgreSQL (`postgres://…`), with the schema in
//! `proxy/migrations/{sqlite,postgres}/0001_captures.sql` (its comments are
//! the contract the comparator reads). The store is append-only.
//!
//! Exchanges are written by one background writer task that batches whatever
//! is queued into one transaction, so the proxy's hot path never waits on
//! disk more than one commit: [`CaptureStore::insert_egress`] resolves once
//! the row is committed (callers answer their client first, then await it,
//! then count it in metrics), [`CaptureStore::queue_ingress`] waits only for
//! room in the writer's bounded queue, and [`CaptureStore::offer_ingress`]
//! never waits at all (a full queue drops the row and says so; the caller
//! counts it). Rows the writer could not commit are counted too
//! ([`CaptureStats`]), so no row is lost without a trace in `/metrics`.
//! Ramp changes are written directly: they are rare and the caller must
//! know they are durable.
//!
//! [`export_jsonl`] writes every row as one JSON object per line.

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The schema version written to `capture_meta`.
pub const SCHEMA_VERSION: &str = "1";

/// Most rows one writer transaction carries.
const MAX_BATCH: usize = 512;

/// Longest the writer waits to fill a batch of rows nobody awaits.
const LINGER: Duration = Duration::from_millis(5);

/// Rows queued for the writer before [`CaptureStore::offer_ingress`] drops.
const WRITER_QUEUE: usize = 16 * 1024;

/// A capture store failure.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The database said no.
    #[error("capture store: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("capture store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL is neither SQLite nor PostgreSQL.
    #[error("unsupported capture store URL (expected sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
    /// The capture file's own writer connection failed to open.
    #[error("capture store: {0}")]
    File(#[from] rusqlite::Error),
    /// The background writer has stopped (the store was closed).
    #[error("capture writer stopped")]
    WriterGone,
    /// Writing an export failed.
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, CaptureError>;

/// Which sender spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderName {
    /// The legacy sender.
    Legacy,
    /// The new engine.
    Engine,
}

impl SenderName {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SenderName::Legacy => "legacy",
            SenderName::Engine => "engine",
        }
    }

    /// The other sender.
    pub fn other(self) -> SenderName {
        match self {
            SenderName::Legacy => SenderName::Engine,
            SenderName::Engine => SenderName::Legacy,
        }
    }

    /// Parses `legacy` or `engine`.
    pub fn parse(s: &str) -> Option<SenderName> {
        match s {
            "legacy" => Some(SenderName::Legacy),
            "engine" => Some(SenderName::Engine),
            _ => None,
        }
    }
}

/// One outbound attempt seen by an egress listener (see the schema comment
/// on `egress_exchanges` for each column's meaning).
#[derive(Debug, Clone, Default)]
pub struct EgressRecord {
    pub sender: &'static str,
    pub role: &'static str,
    pub source: &'static str,
    pub event_id: Option<String>,
    pub endpoint_url: String,
    pub attempt: i64,
    pub ramp_bp: i64,
    pub method: String,
    pub target: String,
    pub http_version: String,
    /// `[name, value]` pairs as received.
    pub request_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_status: Option<i64>,
    pub response_headers: Option<Vec<(String, String)>>,
    pub response_body: Option<Vec<u8>>,
    pub fault: Option<&'static str>,
    pub latency_us: i64,
    pub started_at: i64,
    pub note: Option<String>,
}

/// One producer API call seen by the ingress tee.
#[derive(Debug, Clone, Default)]
pub struct IngressRecord {
    pub method: String,
    pub path: String,
    pub request_headers: Vec<(String, String)>,
    /// The body as forwarded (shared with the requests that sent it).
    pub request_body: Bytes,
    pub event_id: Option<String>,
    pub injected_id: bool,
    pub primary_sender: &'static str,
    pub primary_status: Option<i64>,
    pub primary_headers: Option<Vec<(String, String)>>,
    pub primary_body: Option<Bytes>,
    pub primary_latency_us: i64,
    pub primary_error: Option<String>,
    pub shadow_status: Option<i64>,
    pub shadow_headers: Option<Vec<(String, String)>>,
    pub shadow_body: Option<Bytes>,
    pub shadow_latency_us: Option<i64>,
    pub shadow_error: Option<String>,
    pub at: i64,
}

/// One row of the ramp's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RampChange {
    pub seq: i64,
    pub at: i64,
    pub from_bp: u32,
    pub to_bp: u32,
    pub reason: String,
    pub actor: String,
}

enum Write {
    Egress(Box<EgressRecord>),
    Ingress(Box<IngressRecord>),
}

struct Job {
    write: Write,
    done: Option<oneshot::Sender<std::result::Result<(), String>>>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Where the writer commits rows.
enum Sink {
    /// A SQLite file, through rusqlite on a blocking thread: one prepared
    /// single-row `INSERT` per table, executed for each row of a batch in
    /// one transaction. sqlx's multi-row statements cost about three times
    /// the CPU per row (every bound value copied for its worker thread, and
    /// the statement's text built per batch): at 5,000 ingress requests/s,
    /// 27 µs of the ingress's 150 µs per request, against about 10 µs this
    /// way (`scripts/bench-proxy.sh`, A/B on this machine).
    File(Arc<std::sync::Mutex<rusqlite::Connection>>),
    /// PostgreSQL, or an in-memory SQLite database (which lives in the
    /// pool's one connection): the sqlx path, several rows per statement.
    Pool(Backend),
}

/// Opens the writer's own connection to a capture file that the sqlx pool
/// has created and migrated (so it is in WAL mode already).
fn open_file(path: &std::path::Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // As the pool's connections: NORMAL under WAL survives a process crash.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Expands `$body` once per backend with `$pool` bound to that backend's pool.
macro_rules! with_pool {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// What the writer has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Rows committed.
    pub written: AtomicU64,
    /// Rows the writer failed to commit (after one retry); logged too.
    pub failed: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
}

/// The capture store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct CaptureStore {
    backend: Backend,
    tx: mpsc::Sender<Job>,
    stats: Arc<CaptureStats>,
}

impl std::fmt::Debug for CaptureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureStore").finish_non_exhaustive()
    }
}

impl CaptureStore {
    /// Opens (creating a SQLite file if missing) and migrates the store, and
    /// starts its writer task.
    pub async fn open(url: &str) -> Result<CaptureStore> {
        Self::open_with(url, None).await
    }

    /// Like [`CaptureStore::open`], with PostgreSQL's `search_path` set to
    /// `schema` (tests isolate themselves in a fresh schema).
    pub async fn open_with(url: &str, pg_schema: Option<&str>) -> Result<CaptureStore> {
        let mut file = None;
        let backend = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // NORMAL under WAL survives a process crash; batches keep
                // the commit rate low anyway.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            let memory = url.contains(":memory:");
            file = (!memory).then(|| opts.get_filename().to_path_buf());
            // One connection opens a new file (and switches it to WAL)
            // alone, and stays open while the pool connects: two first
            // connections at once make one fail with "database is locked"
            // (seen in scenario runs), the busy timeout notwithstanding.
            let setup = if memory {
                None
            } else {
                Some(<sqlx::SqliteConnection as sqlx::Connection>::connect_with(&opts).await?)
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(if memory { 1 } else { 4 })
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            if let Some(setup) = setup {
                sqlx::Connection::close(setup).await?;
            }
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut opts = PgConnectOptions::from_str(url)?;
            if let Some(schema) = pg_schema {
                opts = opts.options([("search_path", schema)]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Backend::Postgres(pool)
        } else {
            return Err(CaptureError::UnsupportedUrl);
        };
        let now = now_ms().to_string();
        with_pool!(&backend, pool => {
            for (k, v) in [("schema_version", SCHEMA_VERSION), ("created_at", now.as_str())] {
                sqlx::query("INSERT INTO capture_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(k)
                    .bind(v)
                    .execute(pool)
                    .await?;
            }
        });
        let sink = match file {
            Some(path) => Sink::File(Arc::new(std::sync::Mutex::new(open_file(&path)?))),
            None => Sink::Pool(backend.clone()),
        };
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let stats = Arc::new(CaptureStats::default());
        tokio::spawn(writer(sink, rx, stats.clone()));
        Ok(CaptureStore { backend, tx, stats })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &CaptureStats {
        &self.stats
    }

    /// Rows waiting for the writer now.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Records an egress exchange; resolves once it is committed.
    pub async fn insert_egress(&self, rec: EgressRecord) -> Result<()> {
        self.submit(Write::Egress(Box::new(rec))).await
    }

    /// Records an ingress exchange; resolves once it is committed.
    pub async fn insert_ingress(&self, rec: IngressRecord) -> Result<()> {
        self.submit(Write::Ingress(Box::new(rec))).await
    }

    /// Queues an ingress exchange for the writer, waiting only while its
    /// queue is full, not for the commit.
    pub async fn queue_ingress(&self, rec: IngressRecord) -> Result<()> {
        self.tx
            .send(Job {
                write: Write::Ingress(Box::new(rec)),
                done: None,
            })
            .await
            .map_err(|_| CaptureError::WriterGone)
    }

    /// Queues an ingress exchange without waiting. Returns false (the row is
    /// lost; the caller counts it) when the writer's queue is full.
    pub fn offer_ingress(&self, rec: IngressRecord) -> bool {
        self.tx
            .try_send(Job {
                write: Write::Ingress(Box::new(rec)),
                done: None,
            })
            .is_ok()
    }

    async fn submit(&self, write: Write) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job {
                write,
                done: Some(done),
            })
            .await
            .map_err(|_| CaptureError::WriterGone)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CaptureError::Database(sqlx::Error::Protocol(e))),
            Err(_) => Err(CaptureError::WriterGone),
        }
    }

    /// Appends a ramp change; the latest row is the current stage.
    pub async fn insert_ramp_change(
        &self,
        at: i64,
        from_bp: u32,
        to_bp: u32,
        reason: &str,
        actor: &str,
    ) -> Result<RampChange> {
        let seq: i64 = with_pool!(&self.backend, pool => {
            sqlx::query("INSERT INTO ramp_changes (at, from_bp, to_bp, reason, actor) VALUES ($1, $2, $3, $4, $5) RETURNING seq")
                .bind(at)
                .bind(from_bp as i64)
                .bind(to_bp as i64)
                .bind(reason)
                .bind(actor)
                .fetch_one(pool)
                .await?
                .try_get(0)?
        });
        Ok(RampChange {
            seq,
            at,
            from_bp,
            to_bp,
            reason: reason.to_string(),
            actor: actor.to_string(),
        })
    }

    /// The latest ramp change, if the stage was ever set.
    pub async fn latest_ramp(&self) -> Result<Option<RampChange>> {
        Ok(self.ramp_history(1).await?.into_iter().next())
    }

    /// The last `limit` ramp changes, newest first.
    pub async fn ramp_history(&self, limit: i64) -> Result<Vec<RampChange>> {
        with_pool!(&self.backend, pool => {
            let rows = sqlx::query(
                "SELECT seq, at, from_bp, to_bp, reason, actor FROM ramp_changes ORDER BY seq DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(RampChange {
                        seq: r.try_get("seq")?,
                        at: r.try_get("at")?,
                        from_bp: r.try_get::<i64, _>("from_bp")? as u32,
                        to_bp: r.try_get::<i64, _>("to_bp")? as u32,
                        reason: r.try_get("reason")?,
                        actor: r.try_get("actor")?,
                    })
                })
                .collect()
        })
    }

    /// A value from `capture_meta`.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        with_pool!(&self.backend, pool => {
            Ok(sqlx::query("SELECT value FROM capture_meta WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
                .map(|r| r.try_get::<String, _>(0))
                .transpose()?)
        })
    }

    /// Every egress row, oldest first, as export objects (tests and small
    /// tools; the export streams instead).
    pub async fn egress_rows(&self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        self.export_table(Table::Egress, &mut |v| {
            out.push(v);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Every ingress row, oldest first, as export objects.
    pub async fn ingress_rows(&self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        self.export_table(Table::Ingress, &mut |v| {
            out.push(v);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    async fn export_table(
        &self,
        table: Table,
        emit: &mut dyn FnMut(serde_json::Value) -> Result<()>,
    ) -> Result<()> {
        let sql = match table {
            Table::Egress => "SELECT * FROM egress_exchanges ORDER BY seq",
            Table::Ingress => "SELECT * FROM ingress_exchanges ORDER BY seq",
            Table::Ramp => "SELECT * FROM ramp_changes ORDER BY seq",
        };
        with_pool!(&self.backend, pool => {
            let mut rows = sqlx::query(sql).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                let mut obj = serde_json::Map::new();
                obj.insert("kind".into(), table.kind().into());
                for (name, ty) in table.columns() {
                    let v = match ty {
                        Col::Int => row.try_get::<Option<i64>, _>(*name)?.map(Into::into),
                        Col::Text => row.try_get::<Option<String>, _>(*name)?.map(Into::into),
                        Col::Headers => row
                            .try_get::<Option<String>, _>(*name)?
                            .map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))),
                        Col::Bytes => {
                            let b = row.try_get::<Option<Vec<u8>>, _>(*name)?;
                            if let Some(text) = b.as_deref().and_then(|b| std::str::from_utf8(b).ok()) {
                                obj.insert(format!("{name}_text"), text.into());
                            }
                            b.map(|b| base64::engine::general_purpose::STANDARD.encode(b).into())
                        }
                    };
                    obj.insert((*name).into(), v.unwrap_or(serde_json::Value::Null));
                }
                emit(serde_json::Value::Object(obj))?;
            }
            Ok(())
        })
    }

    /// Closes the pool. Rows still queued for the writer are committed first
    /// only if every clone of the store was dropped; callers that need them
    /// await their inserts.
    pub async fn close(&self) {
        with_pool!(&self.backend, pool => pool.close().await)
    }
}

/// Writes every row of the store as JSON lines: egress exchanges, then
/// ingress exchanges, then ramp changes, each with a `kind` field
/// (`egress`, `ingress`, `ramp`). Bodies are base64, with a `<column>_text`
/// field beside them when they are valid UTF-8; header lists are JSON arrays.
/// Returns the number of rows written.
pub async fn export_jsonl(store: &CaptureStore, out: &mut dyn std::io::Write) -> Result<u64> {
    let mut n = 0u64;
    for table in [Table::Egress, Table::Ingress, Table::Ramp] {
        store
            .export_table(table, &mut |v| {
                serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                n += 1;
                Ok(())
            })
            .await?;
    }
    out.flush()?;
    Ok(n)
}

#[derive(Clone, Copy)]
enum Table {
    Egress,
    Ingress,
    Ramp,
}

#[derive(Clone, Copy)]
enum Col {
    Int,
    Text,
    Headers,
    Bytes,
}

impl Table {
    fn kind(self) -> &'static str {
        match self {
            Table::Egress => "egress",
            Table::Ingress => "ingress",
            Table::Ramp => "ramp",
        }
    }

    fn columns(self) -> &'static [(&'static str, Col)] {
        use Col::*;
        match self {
            Table::Egress => &[
                ("seq", Int),
                ("sender", Text),
                ("role", Text),
                ("source", Text),
                ("event_id", Text),
                ("endpoint_url", Text),
                ("attempt", Int),
                ("ramp_bp", Int),
                ("method", Text),
                ("target", Text),
                ("http_version", Text),
                ("request_headers", Headers),
                ("request_body", Bytes),
                ("response_status", Int),
                ("response_headers", Headers),
                ("response_body", Bytes),
                ("fault", Text),
                ("latency_us", Int),
                ("started_at", Int),
                ("note", Text),
            ],
            Table::Ingress => &[
                ("seq", Int),
                ("method", Text),
                ("path", Text),
                ("request_headers", Headers),
                ("request_body", Bytes),
                ("event_id", Text),
                ("injected_id", Int),
                ("primary_sender", Text),
                ("primary_status", Int),
                ("primary_headers", Headers),
                ("primary_body", Bytes),
                ("primary_latency_us", Int),
                ("primary_error", Text),
                ("shadow_status", Int),
                ("shadow_headers", Headers),
                ("shadow_body", Bytes),
                ("shadow_latency_us", Int),
                ("shadow_error", Text),
                ("at", Int),
            ],
            Table::Ramp => &[
                ("seq", Int),
                ("at", Int),
                ("from_bp", Int),
                ("to_bp", Int),
                ("reason", Text),
                ("actor", Text),
            ],
        }
    }
}

fn headers_json(h: &[(String, String)]) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "[]".into())
}

/// The writer: takes one job, drains whatever else is queued (up to
/// [`MAX_BATCH`]), commits them in one transaction, then acknowledges each.
/// While no job in the batch has a waiter (ingress rows), it lingers up to
/// [`LINGER`] for more, so a steady trickle of rows costs a few commits a
/// second rather than one per handful of rows; a job that someone awaits
/// (an egress exchange, whose sender is answered after the commit) ends
/// the linger at once.
async fn writer(sink: Sink, mut rx: mpsc::Receiver<Job>, stats: Arc<CaptureStats>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let mut awaited = first.done.is_some();
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => {
                    awaited |= j.done.is_some();
                    batch.push(j);
                }
                Err(_) => break,
            }
        }
        if !awaited && batch.len() < MAX_BATCH {
            let until = tokio::time::Instant::now() + LINGER;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(j)) => {
                        let waiter = j.done.is_some();
                        batch.push(j);
                        if waiter {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        // Counted before the write: a writer thread that fails loses the batch.
        let rows = batch.len() as u64;
        let mut result;
        (batch, result) = write(&sink, batch).await;
        if result.is_err() {
            // One retry covers a transient lock; a second failure is logged
            // and reported to every waiter.
            tokio::time::sleep(Duration::from_millis(50)).await;
            (batch, result) = write(&sink, batch).await;
        }
        match &result {
            Ok(()) => {
                stats.written.fetch_add(rows, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                stats.failed.fetch_add(rows, Ordering::Relaxed);
            }
        }
        let outcome = result.inspect_err(|e| {
            tracing::error!(error = %e, rows, "capture write failed");
        });
        for job in batch.drain(..) {
            if let Some(done) = job.done {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

/// Rows per multi-row `INSERT`, largest first: a batch is cut into chunks
/// of these sizes, so each table has only a few distinct statements (all
/// of them stay in sqlx's statement cache) and a full batch takes a handful
/// of round trips to the database instead of one per row. 64 rows of 19
/// columns stay far below SQLite's and PostgreSQL's bind limits.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

const EGRESS_INSERT: &str = "INSERT INTO egress_exchanges (sender, role, source, event_id, endpoint_url, attempt, ramp_bp, \
     method, target, http_version, request_headers, request_body, response_status, response_headers, \
     response_body, fault, latency_us, started_at, note) ";

const INGRESS_INSERT: &str = "INSERT INTO ingress_exchanges (method, path, request_headers, request_body, event_id, injected_id, \
     primary_sender, primary_status, primary_headers, primary_body, primary_latency_us, primary_error, \
     shadow_status, shadow_headers, shadow_body, shadow_latency_us, shadow_error, at) ";

/// Splits `rows` into chunks of the [`CHUNKS`] sizes, in order.
fn chunks<T>(mut rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    for size in CHUNKS {
        while rows.len() >= size {
            let (head, tail) = rows.split_at(size);
            out.push(head);
            rows = tail;
        }
    }
    out
}

/// A query builder for `pool`'s database (names the backend for inference).
fn builder<'a, DB: sqlx::Database>(
    _pool: &sqlx::Pool<DB>,
    sql: &str,
) -> sqlx::QueryBuilder<'a, DB> {
    sqlx::QueryBuilder::new(sql)
}

/// Commits one batch in one transaction, and hands the batch back for the
/// acknowledgements.
async fn write(sink: &Sink, batch: Vec<Job>) -> (Vec<Job>, std::result::Result<(), String>) {
    match sink {
        Sink::Pool(backend) => {
            let result = write_batch(backend, &batch)
                .await
                .map_err(|e| e.to_string());
            (batch, result)
        }
        Sink::File(conn) => {
            let conn = conn.clone();
            let rows = batch.len();
            tokio::task::spawn_blocking(move || {
                let result = write_file(&conn, &batch).map_err(|e| e.to_string());
                (batch, result)
            })
            .await
            .unwrap_or_else(|e| {
                // The batch went down with the thread; its waiters see
                // their channels close.
                (
                    Vec::new(),
                    Err(format!("capture writer thread failed ({rows} rows): {e}")),
                )
            })
        }
    }
}

/// One value of a capture row, typed as its column stores it.
#[derive(Clone, Copy)]
enum Value<'a> {
    Text(Option<&'a str>),
    Blob(Option<&'a [u8]>),
    Int(Option<i64>),
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Text(v) => v.to_sql(),
            Value::Blob(v) => v.to_sql(),
            Value::Int(v) => v.to_sql(),
        }
    }
}

/// A row's header lists as JSON, serialised here, off the request path:
/// an egress row's request and response lists, an ingress row's request,
/// primary and shadow lists.
fn headers_of(write: &Write) -> [Option<String>; 3] {
    let json = |h: &Option<Vec<(String, String)>>| h.as_deref().map(headers_json);
    match write {
        Write::Egress(r) => [
            Some(headers_json(&r.request_headers)),
            json(&r.response_headers),
            None,
        ],
        Write::Ingress(r) => [
            Some(headers_json(&r.request_headers)),
            json(&r.primary_headers),
            json(&r.shadow_headers),
        ],
    }
}

/// A row's values in its table's column order ([`EGRESS_INSERT`],
/// [`INGRESS_INSERT`]): the one list both writers bind.
enum RowValues<'a> {
    Egress([Value<'a>; 19]),
    Ingress([Value<'a>; 18]),
}

fn values<'a>(write: &'a Write, headers: &'a [Option<String>; 3]) -> RowValues<'a> {
    use Value::{Blob, Int, Text};
    let h = |i: usize| Text(headers[i].as_deref());
    match write {
        Write::Egress(r) => RowValues::Egress([
            Text(Some(r.sender)),
            Text(Some(r.role)),
            Text(Some(r.source)),
            Text(r.event_id.as_deref()),
            Text(Some(&r.endpoint_url)),
            Int(Some(r.attempt)),
            Int(Some(r.ramp_bp)),
            Text(Some(&r.method)),
            Text(Some(&r.target)),
            Text(Some(&r.http_version)),
            h(0),
            Blob(Some(&r.request_body)),
            Int(r.response_status),
            h(1),
            Blob(r.response_body.as_deref()),
            Text(r.fault),
            Int(Some(r.latency_us)),
            Int(Some(r.started_at)),
            Text(r.note.as_deref()),
        ]),
        Write::Ingress(r) => RowValues::Ingress([
            Text(Some(&r.method)),
            Text(Some(&r.path)),
            h(0),
            Blob(Some(&r.request_body)),
            Text(r.event_id.as_deref()),
            Int(Some(r.injected_id as i64)),
            Text(Some(r.primary_sender)),
            Int(r.primary_status),
            h(1),
            Blob(r.primary_body.as_deref()),
            Int(Some(r.primary_latency_us)),
            Text(r.primary_error.as_deref()),
            Int(r.shadow_status),
            h(2),
            Blob(r.shadow_body.as_deref()),
            Int(r.shadow_latency_us),
            Text(r.shadow_error.as_deref()),
            Int(Some(r.at)),
        ]),
    }
}

/// `INSERT INTO table (columns) ` completed for one row, with one
/// parameter per column in the list.
fn single_row(insert: &str) -> String {
    let n = insert.matches(',').count() + 1;
    let params: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
    format!("{insert}VALUES ({})", params.join(", "))
}

static EGRESS_INSERT_ONE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| single_row(EGRESS_INSERT));
static INGRESS_INSERT_ONE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| single_row(INGRESS_INSERT));

/// The [`Sink::File`] transaction: each row in arrival order through its
/// table's cached single-row statement.
fn write_file(
    conn: &std::sync::Mutex<rusqlite::Connection>,
    batch: &[Job],
) -> rusqlite::Result<()> {
    // A panic mid-batch leaves no open transaction (rusqlite rolls back on
    // drop), so the connection is usable after a poisoned lock.
    let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut egress = tx.prepare_cached(&EGRESS_INSERT_ONE)?;
        let mut ingress = tx.prepare_cached(&INGRESS_INSERT_ONE)?;
        for job in batch {
            let headers = headers_of(&job.write);
            match values(&job.write, &headers) {
                RowValues::Egress(cols) => egress.execute(rusqlite::params_from_iter(cols))?,
                RowValues::Ingress(cols) => ingress.execute(rusqlite::params_from_iter(cols))?,
            };
        }
    }
    tx.commit()
}

/// Commits one batch in one transaction: each table's rows in arrival
/// order, several rows per statement.
async fn write_batch(backend: &Backend, batch: &[Job]) -> std::result::Result<(), sqlx::Error> {
    let headers: Vec<[Option<String>; 3]> = batch.iter().map(|j| headers_of(&j.write)).collect();
    let mut egress: Vec<[Value; 19]> = Vec::new();
    let mut ingress: Vec<[Value; 18]> = Vec::new();
    for (job, h) in batch.iter().zip(&headers) {
        match values(&job.write, h) {
            RowValues::Egress(cols) => egress.push(cols),
            RowValues::Ingress(cols) => ingress.push(cols),
        }
    }
    with_pool!(backend, pool => {
        let mut tx = pool.begin().await?;
        for (insert, rows) in [
            (EGRESS_INSERT, egress.iter().map(|c| &c[..]).collect::<Vec<_>>()),
            (INGRESS_INSERT, ingress.iter().map(|c| &c[..]).collect()),
        ] {
            for chunk in chunks(&rows) {
                let mut qb = builder(pool, insert);
                qb.push_values(chunk, |mut b, cols| {
                    for col in cols.iter() {
                        match *col {
                            Value::Text(v) => b.push_bind(v),
                            Value::Blob(v) => b.push_bind(v),
                            Value::Int(v) => b.push_bind(v),
                        };
                    }
                });
                qb.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await
    })
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn stores() -> Vec<(CaptureStore, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let mut out = vec![(CaptureStore::open(&url).await.unwrap(), Some(dir))];
        if let Some(pg) = crate::testing::postgres_url() {
            let schema = crate::testing::fresh_pg_schema(&pg).await;
            out.push((
                CaptureStore::open_with(&pg, Some(&schema)).await.unwrap(),
                None,
            ));
        }
        out
    }

    fn egress(body: &[u8]) -> EgressRecord {
        EgressRecord {
            sender: "legacy",
            role: "primary",
            source: "receiver",
            event_id: Some("evt_1".into()),
            endpoint_url: "http://127.0.0.1:1/hook".into(),
            attempt: 1,
            ramp_bp: 2500,
            method: "POST".into(),
            target: "http://127.0.0.1:1/hook".into(),
            http_version: "HTTP/1.1".into(),
            request_headers: vec![
                ("X-Event-Id".into(), "evt_1".into()),
                ("content-type".into(), "application/json".into()),
            ],
            request_body: body.to_vec(),
            response_status: Some(500),
            response_headers: Some(vec![("Content-Length".into(), "0".into())]),
            response_body: Some(Vec::new()),
            fault: None,
            latency_us: 1234,
            started_at: 1_700_000_000_000,
            note: None,
        }
    }

    #[test]
    fn batches_are_cut_into_the_chunk_sizes_in_order() {
        let rows: Vec<u32> = (0..150).collect();
        let sizes: Vec<usize> = chunks(&rows).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [64, 64, 16, 4, 1, 1]);
        assert_eq!(chunks(&rows).concat(), rows);
        assert!(chunks::<u32>(&[]).is_empty());
    }

    #[tokio::test]
    async fn a_batch_of_many_rows_keeps_every_row_and_its_order() {
        for (store, _dir) in stores().await {
            // Queued without waiting, then one awaited row behind them: the
            // writer commits in arrival order, so once it resolves every
            // row before it is in too.
            for i in 0..150 {
                let mut rec = IngressRecord {
                    method: "POST".into(),
                    path: format!("/v1/events/{i}"),
                    primary_sender: "legacy",
                    request_body: Bytes::from(format!("{{\"n\":{i}}}")),
                    primary_body: Some(Bytes::from_static(b"ok")),
                    primary_headers: Some(vec![("x-n".into(), i.to_string())]),
                    ..IngressRecord::default()
                };
                if i % 2 == 0 {
                    rec.shadow_error = Some("dropped: queue full".into());
                }
                store.queue_ingress(rec).await.unwrap();
            }
            store.insert_egress(egress(b"{}")).await.unwrap();
            let rows = store.ingress_rows().await.unwrap();
            assert_eq!(rows.len(), 150);
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row["path"], format!("/v1/events/{i}"));
                assert_eq!(row["request_body_text"], format!("{{\"n\":{i}}}"));
                assert_eq!(row["primary_headers"][0][1], i.to_string());
                assert_eq!(row["shadow_error"].is_null(), i % 2 == 1);
            }
            assert_eq!(store.stats().written.load(Ordering::Relaxed), 151);
            assert_eq!(store.stats().failed.load(Ordering::Relaxed), 0);
        }
    }

    /// Every column of every row in `table`, rendered by SQLite's `quote()`
    /// (which shows the type: `X'..'` for a blob, `'..'` for text).
    async fn quoted_rows(store: &CaptureStore, table: &str) -> Vec<Vec<String>> {
        let Backend::Sqlite(pool) = &store.backend else {
            unreachable!("a SQLite store")
        };
        let columns: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        let select: Vec<String> = columns.iter().map(|c| format!("quote({c})")).collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY seq", select.join(", "));
        sqlx::query(&sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| {
                (0..columns.len())
                    .map(|i| row.get::<String, _>(i))
                    .collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_file_writer_stores_what_the_pool_writer_stores() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        // A file's rows go through rusqlite (Sink::File); an in-memory
        // database's through sqlx (Sink::Pool), as PostgreSQL's do.
        let file = CaptureStore::open(&url).await.unwrap();
        let memory = CaptureStore::open("sqlite::memory:").await.unwrap();
        let ingress = IngressRecord {
            method: "POST".into(),
            path: "/v1/events?x=1".into(),
            request_headers: vec![("content-type".into(), "application/json".into())],
            request_body: Bytes::from_static(b"{\"id\":\"evt_1\"}"),
            event_id: Some("evt_1".into()),
            injected_id: true,
            primary_sender: "legacy",
            primary_status: Some(202),
            primary_headers: Some(vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())]),
            primary_body: Some(Bytes::from_static(&[0xff, 0x00, b'a'])),
            primary_latency_us: 321,
            primary_error: None,
            shadow_status: None,
            shadow_headers: None,
            shadow_body: None,
            shadow_latency_us: Some(7),
            shadow_error: Some("timeout".into()),
            at: 1_700_000_000_123,
        };
        for store in [&file, &memory] {
            store.insert_egress(egress(b"{\"a\":1}")).await.unwrap();
            let mut faulted = egress(&[0xfe]);
            faulted.response_status = None;
            faulted.response_headers = None;
            faulted.response_body = None;
            faulted.fault = Some("reset");
            faulted.note = Some("a note".into());
            store.insert_egress(faulted).await.unwrap();
            store.insert_ingress(ingress.clone()).await.unwrap();
            store
                .insert_ingress(IngressRecord {
                    primary_sender: "engine",
                    ..IngressRecord::default()
                })
                .await
                .unwrap();
        }
        for table in ["egress_exchanges", "ingress_exchanges"] {
            let (a, b) = (
                quoted_rows(&file, table).await,
                quoted_rows(&memory, table).await,
            );
            assert_eq!(a.len(), 2, "{table}");
            assert_eq!(a, b, "{table}: the two writers disagree");
        }
        // The types, not only the text: bodies are blobs, headers text.
        let rows = quoted_rows(&file, "ingress_exchanges").await;
        assert!(rows[0].iter().any(|v| v == "X'FF0061'"), "{:?}", rows[0]);
    }

    #[tokio::test]
    async fn rows_round_trip_through_the_export_on_both_backends() {
        for (store, _dir) in stores().await {
            assert_eq!(
                store.meta("schema_version").await.unwrap().as_deref(),
                Some("1")
            );
            store.insert_egress(egress(b"{\"a\":1}")).await.unwrap();
            store.insert_egress(egress(&[0xff, 0x00])).await.unwrap();
            store
                .insert_ingress(IngressRecord {
                    method: "POST".into(),
                    path: "/v1/events".into(),
                    primary_sender: "legacy",
                    request_body: Bytes::from_static(b"{}"),
                    shadow_error: Some("dropped: queue full".into()),
                    ..IngressRecord::default()
                })
                .await
                .unwrap();
            assert_eq!(store.latest_ramp().await.unwrap(), None);
            store
                .insert_ramp_change(1, 0, 2500, "start", "cli")
                .await
                .unwrap();
            store
                .insert_ramp_change(2, 2500, 0, "rollback", "cli")
                .await
                .unwrap();
            assert_eq!(store.latest_ramp().await.unwrap().unwrap().to_bp, 0);

            let mut out = Vec::new();
            let n = export_jsonl(&store, &mut out).await.unwrap();
            assert_eq!(n, 5);
            let lines: Vec<serde_json::Value> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
            assert_eq!(kinds, ["egress", "egress", "ingress", "ramp", "ramp"]);
            assert_eq!(lines[0]["request_body"], "eyJhIjoxfQ==");
            assert_eq!(lines[0]["request_body_text"], "{\"a\":1}");
            assert_eq!(lines[0]["request_headers"][0][0], "X-Event-Id");
            assert_eq!(lines[0]["response_status"], 500);
            assert_eq!(lines[1]["request_body"], "/wA=");
            assert!(lines[1].get("request_body_text").is_none(), "not UTF-8");
            assert_eq!(lines[2]["shadow_error"], "dropped: queue full");
            assert_eq!(lines[2]["shadow_status"], serde_json::Value::Null);
            assert_eq!(lines[4]["to_bp"], 0);
        }
    }
}
