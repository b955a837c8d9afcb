//! Loaders: read the capture store, the engine's database, the legacy's
//! database (through the state-transitions SQL file) and a secrets file into
//! the [`model`](crate::model). Each is plain SQL over sqlx against the
//! schemas in proxy/migrations, engine/migrations and the legacy's
//! internal/store; nothing here depends on the proxy crate. The same queries
//! run on SQLite and PostgreSQL (`sqlite:` or `postgres://` URLs). Rows are
//! streamed, not collected, so only the model is held in memory.
//!
//! Errors name the store (with the URL's password masked) and the row;
//! secrets never appear in them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::Row;
use tokio::sync::mpsc;

use crate::model::{Exchange, Ingress, Outcome, Recorded, Role, Sender, SideData};

/// The legacy fixture's state-transitions query, used when no file is given.
pub const DEFAULT_LEGACY_QUERY: &str =
    include_str!("../../fixtures/legacy-queries/state-transitions.sql");

/// Why an input could not be read. Never contains a secret or a password.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The database could not be opened or queried.
    #[error("{what} ({url}): {source}")]
    Db {
        /// Which input.
        what: &'static str,
        /// Its URL, password masked.
        url: String,
        /// The database error.
        source: sqlx::Error,
    },
    /// A SQLite store could not be opened or read.
    #[error("{what} ({url}): {message}")]
    Sqlite {
        /// Which input.
        what: &'static str,
        /// Its URL.
        url: String,
        /// SQLite's message.
        message: String,
    },
    /// A URL that is neither sqlite: nor postgres://.
    #[error("{what}: unsupported database URL {url:?} (use sqlite://PATH or postgres://…)")]
    Url {
        /// Which input.
        what: &'static str,
        /// The URL, password masked.
        url: String,
    },
    /// A row that does not fit the schema.
    #[error("{what}: {message}")]
    Row {
        /// Which input.
        what: &'static str,
        /// What is wrong, naming table, row and column.
        message: String,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A URL with any password replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// An opened input. SQLite stores are read with rusqlite on a thread of
/// their own (see [`sqlite_rows`]); PostgreSQL through an sqlx pool.
enum Db {
    Sqlite(PathBuf),
    Pg(sqlx::PgPool),
}

/// The file a `sqlite:` URL names (`sqlite://PATH`, `sqlite:PATH`, with any
/// `?options` dropped).
fn sqlite_path(url: &str) -> PathBuf {
    let rest = url.trim_start_matches("sqlite:");
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let rest = rest.split('?').next().unwrap_or(rest);
    PathBuf::from(rest)
}

fn open_sqlite(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    // Never created: a missing store is an error. Opened read-write (as a
    // writer would) so a WAL store's shared-memory file can be made; the
    // comparator only runs SELECTs on it.
    rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

async fn open(what: &'static str, url: &str) -> Result<Db, LoadError> {
    if url.starts_with("sqlite:") {
        let path = sqlite_path(url);
        // Open once here so a missing or unreadable file is reported now.
        open_sqlite(&path).map_err(|e| LoadError::Sqlite {
            what,
            url: mask_url(url),
            message: e.to_string(),
        })?;
        Ok(Db::Sqlite(path))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .map_err(|source| LoadError::Db {
                what,
                url: mask_url(url),
                source,
            })?;
        Ok(Db::Pg(pool))
    } else {
        Err(LoadError::Url {
            what,
            url: mask_url(url),
        })
    }
}

/// One column's value as read from SQLite, owned.
#[derive(Debug, Default)]
enum Val {
    #[default]
    Null,
    Int(i64),
    Real,
    Text(String),
    Blob(Vec<u8>),
}

/// A row read from SQLite. Each column is meant to be read once: reading
/// moves the value out.
struct SqliteRow(Vec<std::cell::Cell<Val>>);

/// Rows per message from the SQLite reader thread.
const SQLITE_BATCH: usize = 1024;

/// Runs `sql` on the SQLite file at `path` on a thread of its own and
/// yields its rows in batches. sqlx's SQLite driver hands rows over one at
/// a time through a channel, copying every value; for the million-row
/// reads of a report that handoff was most of the time spent, so the
/// comparator reads SQLite with rusqlite here and keeps sqlx for
/// PostgreSQL.
fn sqlite_rows(path: PathBuf, sql: String) -> mpsc::Receiver<Result<Vec<SqliteRow>, String>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let run = || -> rusqlite::Result<()> {
            let conn = open_sqlite(&path)?;
            let mut stmt = conn.prepare(&sql)?;
            let columns = stmt.column_count();
            let mut rows = stmt.query([])?;
            let mut batch = Vec::with_capacity(SQLITE_BATCH);
            while let Some(r) = rows.next()? {
                let mut vals = Vec::with_capacity(columns);
                for i in 0..columns {
                    use rusqlite::types::ValueRef;
                    vals.push(std::cell::Cell::new(match r.get_ref(i)? {
                        ValueRef::Null => Val::Null,
                        ValueRef::Integer(v) => Val::Int(v),
                        ValueRef::Real(_) => Val::Real,
                        ValueRef::Text(t) => match std::str::from_utf8(t) {
                            Ok(t) => Val::Text(t.to_owned()),
                            Err(_) => Val::Blob(t.to_vec()),
                        },
                        ValueRef::Blob(b) => Val::Blob(b.to_vec()),
                    }));
                }
                batch.push(SqliteRow(vals));
                if batch.len() == SQLITE_BATCH
                    && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err()
                {
                    return Ok(()); // the reader went away
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(Ok(batch));
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e.to_string()));
        }
    });
    rx
}

/// Reads column `idx` of a row as `T`, on either backend.
trait Column<T> {
    fn column(&self, idx: usize) -> Result<T, String>;
}

impl<T> Column<T> for sqlx::postgres::PgRow
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn column(&self, idx: usize) -> Result<T, String> {
        self.try_get(idx).map_err(|e| e.to_string())
    }
}

fn val_name(v: &Val) -> &'static str {
    match v {
        Val::Null => "NULL",
        Val::Int(_) => "an integer",
        Val::Real => "a real",
        Val::Text(_) => "text",
        Val::Blob(_) => "a blob",
    }
}

impl SqliteRow {
    fn take(&self, idx: usize) -> Result<Val, String> {
        self.0
            .get(idx)
            .map(std::cell::Cell::take)
            .ok_or_else(|| format!("no column {idx}"))
    }
}

impl Column<Option<String>> for SqliteRow {
    fn column(&self, idx: usize) -> Result<Option<String>, String> {
        match self.take(idx)? {
            Val::Null => Ok(None),
            Val::Text(t) => Ok(Some(t)),
            other => Err(format!("expected text, found {}", val_name(&other))),
        }
    }
}

impl Column<String> for SqliteRow {
    fn column(&self, idx: usize) -> Result<String, String> {
        <Self as Column<Option<String>>>::column(self, idx)?
            .ok_or_else(|| "expected text, found NULL".to_owned())
    }
}

impl Column<Option<i64>> for SqliteRow {
    fn column(&self, idx: usize) -> Result<Option<i64>, String> {
        match self.take(idx)? {
            Val::Null => Ok(None),
            Val::Int(v) => Ok(Some(v)),
            other => Err(format!("expected an integer, found {}", val_name(&other))),
        }
    }
}

impl Column<i64> for SqliteRow {
    fn column(&self, idx: usize) -> Result<i64, String> {
        <Self as Column<Option<i64>>>::column(self, idx)?
            .ok_or_else(|| "expected an integer, found NULL".to_owned())
    }
}

impl Column<Option<Vec<u8>>> for SqliteRow {
    fn column(&self, idx: usize) -> Result<Option<Vec<u8>>, String> {
        match self.take(idx)? {
            Val::Null => Ok(None),
            Val::Blob(b) => Ok(Some(b)),
            // SQLite keeps no column types: a body stored as text is bytes too.
            Val::Text(t) => Ok(Some(t.into_bytes())),
            other => Err(format!("expected a blob, found {}", val_name(&other))),
        }
    }
}

impl Column<Vec<u8>> for SqliteRow {
    fn column(&self, idx: usize) -> Result<Vec<u8>, String> {
        <Self as Column<Option<Vec<u8>>>>::column(self, idx)?
            .ok_or_else(|| "expected a blob, found NULL".to_owned())
    }
}

/// Runs `$sql` on either backend and calls `$body` with each row (`$row`).
macro_rules! each_row {
    ($db:expr, $what:expr, $url:expr, $sql:expr, |$row:ident| $body:block) => {{
        match $db {
            Db::Sqlite(path) => {
                let mut batches = sqlite_rows(path.clone(), String::from($sql));
                while let Some(batch) = batches.recv().await {
                    let batch = batch.map_err(|message| LoadError::Sqlite {
                        what: $what,
                        url: mask_url($url),
                        message,
                    })?;
                    for $row in batch {
                        $body
                    }
                }
            }
            Db::Pg(pool) => {
                let mut rows = sqlx::query($sql).fetch(pool);
                while let Some($row) = rows.try_next().await.map_err(|source| LoadError::Db {
                    what: $what,
                    url: mask_url($url),
                    source,
                })? {
                    $body
                }
            }
        }
    }};
}

fn headers_json(
    what: &'static str,
    table: &str,
    seq: i64,
    col: &str,
    text: Option<&str>,
) -> Result<Vec<(String, String)>, LoadError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    serde_json::from_str::<Vec<(String, String)>>(text).map_err(|e| LoadError::Row {
        what,
        message: format!("{table} row {seq}: {col} is not a JSON list of [name, value] pairs: {e}"),
    })
}

fn get<T, R: Column<T>>(row: &R, what: &'static str, idx: usize) -> Result<T, LoadError> {
    row.column(idx).map_err(|e| LoadError::Row {
        what,
        message: format!("column {idx}: {e}"),
    })
}

const CAPTURES: &str = "capture store";

/// Which egress rows to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFilter {
    /// Both senders' rows.
    Both,
    /// Only the legacy's rows (a second legacy run).
    LegacyOnly,
}

/// The egress rows of one (event id, endpoint URL), both senders.
pub type Group = Vec<(Sender, u32, Exchange)>;

async fn check_capture_version(db: &Db, url: &str) -> Result<(), LoadError> {
    let mut version: Option<String> = None;
    each_row!(
        db,
        CAPTURES,
        url,
        "SELECT value FROM capture_meta WHERE key = 'schema_version'",
        |row| {
            version = Some(get(&row, CAPTURES, 0)?);
        }
    );
    match version {
        Some(v) if v != "1" => Err(LoadError::Row {
            what: CAPTURES,
            message: format!("capture_meta schema_version is {v}; this comparator reads version 1"),
        }),
        _ => Ok(()),
    }
}

/// Streams the capture store's egress exchanges in key order and calls
/// `on_group` once per (event id, endpoint URL) with all its rows, so a
/// caller can diff and drop each history before the next is read. Returns
/// the number of rows without an event id (or opaque tunnels).
pub async fn stream_captures(
    url: &str,
    filter: CaptureFilter,
    mut on_group: impl FnMut(String, String, Group),
    mut progress: impl FnMut(u64),
) -> Result<u64, LoadError> {
    let db = open(CAPTURES, url).await?;
    check_capture_version(&db, url).await?;
    // The key index (event_id, endpoint_url, attempt, sender) serves this order.
    let sql = "SELECT seq, sender, role, event_id, endpoint_url, attempt, http_version, \
               request_headers, request_body, response_status, response_headers, \
               CAST(LENGTH(response_body) AS BIGINT), fault, latency_us, started_at, note \
               FROM egress_exchanges ORDER BY event_id, endpoint_url, attempt, sender";
    let mut unkeyed = 0u64;
    let mut n = 0u64;
    let mut current: Option<(String, String)> = None;
    let mut group: Group = Vec::new();
    each_row!(&db, CAPTURES, url, sql, |row| {
        n += 1;
        if n % 50_000 == 0 {
            progress(n);
        }
        let seq: i64 = get(&row, CAPTURES, 0)?;
        let sender: String = get(&row, CAPTURES, 1)?;
        let sender = match (sender.as_str(), filter) {
            ("legacy", _) => Sender::Legacy,
            ("engine", CaptureFilter::Both) => Sender::Engine,
            ("engine", CaptureFilter::LegacyOnly) => continue,
            (other, _) => {
                return Err(LoadError::Row {
                    what: CAPTURES,
                    message: format!("egress_exchanges row {seq}: unknown sender {other:?}"),
                })
            }
        };
        let event_id: Option<String> = get(&row, CAPTURES, 3)?;
        let Some(event_id) = event_id else {
            unkeyed += 1;
            continue;
        };
        let fault: Option<String> = get(&row, CAPTURES, 12)?;
        if fault.as_deref() == Some("tunnel") {
            // A CONNECT tunnel is opaque bytes: nothing to compare.
            unkeyed += 1;
            continue;
        }
        let endpoint_url: String = get(&row, CAPTURES, 4)?;
        let attempt: i64 = get(&row, CAPTURES, 5)?;
        let attempt = u32::try_from(attempt).map_err(|_| LoadError::Row {
            what: CAPTURES,
            message: format!("egress_exchanges row {seq}: attempt {attempt} out of range"),
        })?;
        let role: String = get(&row, CAPTURES, 2)?;
        let req_h: String = get(&row, CAPTURES, 7)?;
        let resp_h: Option<String> = get(&row, CAPTURES, 10)?;
        let status: Option<i64> = get(&row, CAPTURES, 9)?;
        let body_len: Option<i64> = get(&row, CAPTURES, 11)?;
        let ex = Exchange {
            seq,
            role: Role::parse(&role),
            http_version: get(&row, CAPTURES, 6)?,
            request_headers: headers_json(
                CAPTURES,
                "egress_exchanges",
                seq,
                "request_headers",
                Some(&req_h),
            )?,
            request_body: get(&row, CAPTURES, 8)?,
            response_status: status.and_then(|s| u16::try_from(s).ok()),
            response_headers: headers_json(
                CAPTURES,
                "egress_exchanges",
                seq,
                "response_headers",
                resp_h.as_deref(),
            )?,
            response_body_len: body_len.map(|l| l as usize),
            fault,
            latency_us: get(&row, CAPTURES, 13)?,
            started_at: get(&row, CAPTURES, 14)?,
            note: get(&row, CAPTURES, 15)?,
        };
        let same = current
            .as_ref()
            .is_some_and(|(e, u)| *e == event_id && *u == endpoint_url);
        if !same {
            if let Some((e, u)) = current.take() {
                on_group(e, u, std::mem::take(&mut group));
            }
            current = Some((event_id, endpoint_url));
        }
        group.push((sender, attempt, ex));
    });
    if let Some((e, u)) = current.take() {
        on_group(e, u, group);
    }
    close(db).await;
    Ok(unkeyed)
}

/// Reads the capture store's egress exchanges into the two sides. Returns
/// the number of exchanges without an event id.
pub async fn load_captures(
    url: &str,
    filter: CaptureFilter,
    legacy: &mut SideData,
    engine: &mut SideData,
    progress: impl FnMut(u64),
) -> Result<u64, LoadError> {
    stream_captures(
        url,
        filter,
        |event_id, endpoint_url, group| {
            for (sender, attempt, ex) in group {
                let side = match sender {
                    Sender::Legacy => &mut *legacy,
                    Sender::Engine => &mut *engine,
                };
                side.add_exchange(&event_id, &endpoint_url, attempt, ex);
            }
        },
        progress,
    )
    .await
}

/// Reads the capture store's ingress exchanges.
pub async fn load_ingress(url: &str) -> Result<Vec<Ingress>, LoadError> {
    let db = open(CAPTURES, url).await?;
    check_capture_version(&db, url).await?;
    let mut ingress = Vec::new();
    let sql = "SELECT seq, method, path, event_id, primary_sender, primary_status, primary_body, \
               shadow_status, shadow_body, shadow_error, at FROM ingress_exchanges ORDER BY seq";
    each_row!(&db, CAPTURES, url, sql, |row| {
        let primary: String = get(&row, CAPTURES, 4)?;
        let ps: Option<i64> = get(&row, CAPTURES, 5)?;
        let ss: Option<i64> = get(&row, CAPTURES, 7)?;
        ingress.push(Ingress {
            seq: get(&row, CAPTURES, 0)?,
            method: get(&row, CAPTURES, 1)?,
            path: get(&row, CAPTURES, 2)?,
            event_id: get(&row, CAPTURES, 3)?,
            primary_sender: match primary.as_str() {
                "legacy" => Some(Sender::Legacy),
                "engine" => Some(Sender::Engine),
                _ => None,
            },
            primary_status: ps.and_then(|s| u16::try_from(s).ok()),
            primary_body: get(&row, CAPTURES, 6)?,
            shadow_status: ss.and_then(|s| u16::try_from(s).ok()),
            shadow_body: get(&row, CAPTURES, 8)?,
            shadow_error: get(&row, CAPTURES, 9)?,
            at: get(&row, CAPTURES, 10)?,
        });
    });
    close(db).await;
    Ok(ingress)
}

async fn close(db: Db) {
    match db {
        Db::Sqlite(_) => {}
        Db::Pg(p) => p.close().await,
    }
}

const ENGINE_DB: &str = "engine database";

/// Reads the engine's database: secrets, profiles, attempts and transitions.
pub async fn load_engine_db(url: &str, side: &mut SideData) -> Result<(), LoadError> {
    let db = open(ENGINE_DB, url).await?;
    let sql =
        "SELECT e.url, s.secret FROM endpoint_secrets s JOIN endpoints e ON e.id = s.endpoint_id \
               ORDER BY e.url, CASE WHEN s.expires_at IS NULL THEN 0 ELSE 1 END, s.seq DESC";
    each_row!(&db, ENGINE_DB, url, sql, |row| {
        let url: String = get(&row, ENGINE_DB, 0)?;
        let secret: String = get(&row, ENGINE_DB, 1)?;
        side.secrets.entry(url).or_default().push(secret);
    });
    each_row!(
        &db,
        ENGINE_DB,
        url,
        "SELECT url, profile FROM endpoints WHERE profile IS NOT NULL",
        |row| {
            side.profiles
                .insert(get(&row, ENGINE_DB, 0)?, get(&row, ENGINE_DB, 1)?);
        }
    );
    let sql = "SELECT d.event_id, e.url, d.id, a.attempt, a.outcome, a.response_status, a.started_at \
               FROM attempts a JOIN deliveries d ON d.id = a.delivery_id JOIN endpoints e ON e.id = d.endpoint_id";
    each_row!(&db, ENGINE_DB, url, sql, |row| {
        let event_id: String = get(&row, ENGINE_DB, 0)?;
        let ep: String = get(&row, ENGINE_DB, 1)?;
        let delivery: String = get(&row, ENGINE_DB, 2)?;
        let attempt: i64 = get(&row, ENGINE_DB, 3)?;
        let raw: String = get(&row, ENGINE_DB, 4)?;
        let status: Option<i64> = get(&row, ENGINE_DB, 5)?;
        let outcome = Outcome::from_engine(&raw).ok_or_else(|| LoadError::Row {
            what: ENGINE_DB,
            message: format!("attempts of delivery {delivery}: unknown outcome {raw:?}"),
        })?;
        side.add_recorded(
            &event_id,
            &ep,
            u32::try_from(attempt).unwrap_or(0),
            Recorded {
                raw_outcome: raw,
                outcome,
                status: status.and_then(|s| u16::try_from(s).ok()),
                started_at: get(&row, ENGINE_DB, 6)?,
            },
        );
        side.history(&event_id, &ep).delivery_id = Some(delivery);
    });
    let sql = "SELECT d.event_id, e.url, d.id, t.to_state FROM delivery_transitions t \
               JOIN deliveries d ON d.id = t.delivery_id JOIN endpoints e ON e.id = d.endpoint_id \
               ORDER BY t.delivery_id, t.seq";
    each_row!(&db, ENGINE_DB, url, sql, |row| {
        let event_id: String = get(&row, ENGINE_DB, 0)?;
        let ep: String = get(&row, ENGINE_DB, 1)?;
        let h = side.history(&event_id, &ep);
        h.in_db = true;
        h.delivery_id = Some(get(&row, ENGINE_DB, 2)?);
        push_engine_state(&mut h.states, get(&row, ENGINE_DB, 3)?);
    });
    close(db).await;
    Ok(())
}

/// Appends an engine transition's state. A claim handed back unsent
/// (`in_flight → pending`: over an endpoint's concurrency cap, or a lease
/// rescued after a crash) is scheduling the receiver never sees, and the
/// legacy's history has no such step: the pair is dropped, so
/// `pending → in_flight → pending → in_flight → succeeded` reads as
/// `pending → in_flight → succeeded`.
fn push_engine_state(states: &mut Vec<String>, to: String) {
    if to == "pending" && states.last().is_some_and(|s| s == "in_flight") {
        states.pop();
        return;
    }
    states.push(to);
}

const LEGACY_DB: &str = "legacy database";

/// Parses the legacy's fixed-width UTC text time into unix ms.
pub fn legacy_time_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Reads the legacy's database: secrets and attempts from its tables, state
/// history through `query` (the state-transitions SQL; see its header).
pub async fn load_legacy_db(url: &str, query: &str, side: &mut SideData) -> Result<(), LoadError> {
    let db = open(LEGACY_DB, url).await?;
    each_row!(
        &db,
        LEGACY_DB,
        url,
        "SELECT url, secret FROM endpoints ORDER BY id",
        |row| {
            let url: String = get(&row, LEGACY_DB, 0)?;
            let secret: String = get(&row, LEGACY_DB, 1)?;
            side.secrets.entry(url).or_insert_with(|| vec![secret]);
        }
    );
    let sql = "SELECT d.event_id, e.url, d.id, CAST(a.attempt_no AS BIGINT), a.outcome, \
               CAST(a.status_code AS BIGINT), a.started_at FROM attempts a \
               JOIN deliveries d ON d.id = a.delivery_id JOIN endpoints e ON e.id = d.endpoint_id";
    each_row!(&db, LEGACY_DB, url, sql, |row| {
        let event_id: String = get(&row, LEGACY_DB, 0)?;
        let ep: String = get(&row, LEGACY_DB, 1)?;
        let delivery: String = get(&row, LEGACY_DB, 2)?;
        let attempt: i64 = get(&row, LEGACY_DB, 3)?;
        let raw: String = get(&row, LEGACY_DB, 4)?;
        let status: Option<i64> = get(&row, LEGACY_DB, 5)?;
        let started: String = get(&row, LEGACY_DB, 6)?;
        let status = status.and_then(|s| u16::try_from(s).ok());
        let outcome = Outcome::from_legacy(&raw, status).ok_or_else(|| LoadError::Row {
            what: LEGACY_DB,
            message: format!("attempts of delivery {delivery}: unknown outcome {raw:?}"),
        })?;
        let started_at = legacy_time_ms(&started).ok_or_else(|| LoadError::Row {
            what: LEGACY_DB,
            message: format!(
                "attempts of delivery {delivery}: started_at {started:?} is not a UTC time"
            ),
        })?;
        side.add_recorded(
            &event_id,
            &ep,
            u32::try_from(attempt).unwrap_or(0),
            Recorded {
                raw_outcome: raw,
                outcome,
                status,
                started_at,
            },
        );
        side.history(&event_id, &ep).delivery_id = Some(delivery);
    });
    // Wrapped so the columns are read by position with one type on both
    // backends (the legacy's INTEGER is 32-bit on PostgreSQL).
    let body = query.trim().trim_end_matches(';');
    let sql = format!(
        "SELECT q.delivery_id, q.event_id, q.endpoint_url, CAST(q.seq AS BIGINT), q.state \
         FROM (\n{body}\n) q ORDER BY q.delivery_id, CAST(q.seq AS BIGINT)"
    );
    let mut rows = 0u64;
    each_row!(&db, LEGACY_DB, url, sql.as_str(), |row| {
        let delivery: String = get(&row, LEGACY_DB, 0)?;
        let event_id: String = get(&row, LEGACY_DB, 1)?;
        let ep: String = get(&row, LEGACY_DB, 2)?;
        let state: String = get(&row, LEGACY_DB, 4)?;
        let h = side.history(&event_id, &ep);
        h.in_db = true;
        h.delivery_id = Some(delivery);
        h.states.push(state);
        rows += 1;
    });
    let _ = rows;
    close(db).await;
    Ok(())
}

/// Reads a secrets file: a TOML or JSON map from endpoint URL to a secret or
/// a list of secrets (current first). Parse errors give the line, never the text.
pub fn load_secrets(path: &Path) -> Result<HashMap<String, Vec<String>>, LoadError> {
    let file_err = |message: String| LoadError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let map: HashMap<String, OneOrMany> = if is_json {
        serde_json::from_str(&text).map_err(|e| {
            file_err(format!(
                "not a JSON object of URL → secret or [secrets] (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?
    } else {
        toml::from_str(&text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            file_err(format!(
                "not a TOML table of \"URL\" = secret or [secrets] (line {line})"
            ))
        })?
    };
    let mut out = HashMap::new();
    for (url, v) in map {
        let list = match v {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if list.is_empty() || list.iter().any(|s| s.is_empty()) {
            return Err(file_err(format!("the entry for {url} has an empty secret")));
        }
        out.insert(url, list);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(states: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for s in states {
            push_engine_state(&mut out, (*s).to_owned());
        }
        out
    }

    #[test]
    fn a_claim_handed_back_unsent_leaves_no_trace() {
        assert_eq!(
            fold(&["pending", "in_flight", "pending", "in_flight", "succeeded"]),
            ["pending", "in_flight", "succeeded"]
        );
        assert_eq!(
            fold(&[
                "pending",
                "in_flight",
                "retry_scheduled",
                "in_flight",
                "pending",
                "in_flight",
                "failed"
            ]),
            [
                "pending",
                "in_flight",
                "retry_scheduled",
                "in_flight",
                "failed"
            ]
        );
        // A replay of a terminal delivery is a real step and stays.
        assert_eq!(
            fold(&[
                "pending",
                "in_flight",
                "succeeded",
                "pending",
                "in_flight",
                "succeeded"
            ]),
            [
                "pending",
                "in_flight",
                "succeeded",
                "pending",
                "in_flight",
                "succeeded"
            ]
        );
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_path("sqlite://a/b.db"), PathBuf::from("a/b.db"));
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db?mode=ro"),
            PathBuf::from("/tmp/x.db")
        );
        assert_eq!(sqlite_path("sqlite:c.db"), PathBuf::from("c.db"));
    }
}
