//! Durable state: endpoints, events, deliveries, their transitions and
//! attempts, on SQLite or PostgreSQL.
//!
//! One [`Store`] wraps either backend's native sqlx pool. Each method's body
//! is written once and expanded for both pools by the `with_pool!` macro, so
//! the SQL is shared; only the claim statement differs (PostgreSQL claims with
//! `FOR UPDATE SKIP LOCKED`, SQLite with one atomic `UPDATE … RETURNING`, its
//! single writer making that safe). Times are unix milliseconds passed in by
//! the caller, so tests control the clock.
//!
//! Architecture invariant: every change of `deliveries.state` happens in the
//! same transaction as the `delivery_transitions` row that records it, and
//! only this module writes either table.

mod rows;

pub use rows::*;

use crate::breaker::{self, Breaker, BreakerPolicy};
use crate::state::{DeliveryState, OutcomeClass, TransitionReason};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, QueryBuilder, Row, SqlitePool};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most rows one multi-row INSERT carries; keeps well under both backends'
/// bound-parameter limits.
const ROWS_PER_INSERT: usize = 500;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 1024;

/// A storage failure. `is_retryable` says whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (connection lost, lock timeout, constraint).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed at start-up.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL is not one this store understands.
    #[error("unsupported database URL (expected sqlite://PATH, sqlite::memory: or postgres://…)")]
    UnsupportedUrl,
    /// A stored value failed to decode (a bug or a hand-edited row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether a retry of the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                ) || e
                    .as_database_error()
                    .map(|d| {
                        let code = d.code().unwrap_or_default();
                        // SQLite busy/locked, PostgreSQL serialization/deadlock.
                        matches!(code.as_ref(), "5" | "6" | "517" | "40001" | "40P01")
                    })
                    .unwrap_or(false)
            }
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone)]
enum Backend {
    /// `pool` reads; `writer` (one connection) runs every write transaction,
    /// so that writers queue in the process, in order, instead of meeting
    /// SQLite's lock and its busy handler, which sleeps 1, 2, 5, 10, 15, 20,
    /// 25… ms between tries and made most of the delivery latency. An
    /// in-memory database has one connection, which is both.
    ///
    /// `relaxed` says whether the writer connection is at
    /// `synchronous = NORMAL` (see [`Commit`]); it errs towards "relaxed",
    /// which only costs a needless `PRAGMA`.
    Sqlite {
        pool: SqlitePool,
        writer: SqlitePool,
        relaxed: Arc<AtomicBool>,
    },
    Postgres(PgPool),
}

/// How durable a write transaction's commit must be before it returns.
///
/// `Durable`: on disk (SQLite `synchronous = FULL`, an fsync of the WAL per
/// commit; PostgreSQL's default `synchronous_commit`). For what the API
/// acknowledges: ingest, endpoints, secrets, replays.
///
/// `Relaxed`: in the database's log but not yet fsynced (SQLite
/// `synchronous = NORMAL` in WAL mode; PostgreSQL `synchronous_commit =
/// off` for the transaction). For the worker's claims, attempt records,
/// releases and rescues. A crash of the engine process loses none of them;
/// a power loss or operating-system crash (or a PostgreSQL crash) may lose
/// the last few, as a suffix of the commit order: the next durable commit
/// (or checkpoint) writes every earlier one down too. What a lost claim or
/// record costs is one more attempt of a delivery, which at-least-once
/// allows; no event the API accepted is lost. An fsync costs about 0.5 ms on
/// this project's benchmark machine, and the worker commits hundreds of
/// times a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    Durable,
    Relaxed,
}

/// Sets the SQLite writer connection's `synchronous` for a transaction
/// with `commit`, if it is not already so.
async fn sqlite_commit_mode(
    conn: &mut sqlx::SqliteConnection,
    commit: Commit,
    relaxed: &AtomicBool,
) -> Result<()> {
    let want_relaxed = commit == Commit::Relaxed;
    if relaxed.load(Ordering::Acquire) == want_relaxed {
        return Ok(());
    }
    if want_relaxed {
        // Marked before the PRAGMA: should it fail or be cancelled, the
        // next durable transaction still sets FULL.
        relaxed.store(true, Ordering::Release);
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(conn)
            .await?;
    } else {
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(conn)
            .await?;
        relaxed.store(false, Ordering::Release);
    }
    Ok(())
}

/// Expands `$body` once per backend with `$tx` a write transaction begun
/// with the durability `$commit` (on SQLite, on the writer connection).
macro_rules! with_write_tx {
    ($store:expr, $commit:expr, $tx:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite {
                writer, relaxed, ..
            } => {
                let mut conn = writer.acquire().await?;
                sqlite_commit_mode(&mut conn, $commit, relaxed).await?;
                #[allow(unused_mut)]
                let mut $tx = sqlx::Acquire::begin(&mut conn).await?;
                $body
            }
            Backend::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                if $commit == Commit::Relaxed {
                    sqlx::query("SET LOCAL synchronous_commit = off")
                        .execute(&mut *$tx)
                        .await?;
                }
                $body
            }
        }
    };
}

/// Expands `$body` once per backend with `$pool` bound to that backend's
/// pool for reads.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { pool: $pool, .. } => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Like `with_pool!`, for a method that writes: on SQLite `$pool` is the
/// single writer connection.
macro_rules! with_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { writer: $pool, .. } => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// The engine's database.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Embedded, one file.
    Sqlite,
    /// Shared by several engine processes.
    Postgres,
}

impl Store {
    /// Connects, creating a SQLite file if missing, and applies migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, None).await
    }

    /// Like [`Store::connect`], with PostgreSQL's `search_path` set to
    /// `schema` (tests isolate themselves in a fresh schema this way).
    pub async fn connect_with(url: &str, pg_schema: Option<&str>) -> Result<Store> {
        let backend = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit is on disk before ingest answers 202.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // Group-committed inserts have one statement text per batch
                // size: keep them all prepared (the default of 100 thrashed).
                .statement_cache_capacity(STATEMENT_CACHE);
            let memory = url.contains(":memory:");
            // The first connection to a new file switches it to WAL. Two
            // connections doing that at once (the pool opens its first
            // ones concurrently) make one fail with "database is locked",
            // the busy timeout notwithstanding: CI saw engines exit so at
            // start. So one connection opens the file alone and stays open
            // while the pools connect to a database already in WAL mode.
            let setup = if memory {
                None
            } else {
                Some(<sqlx::SqliteConnection as sqlx::Connection>::connect_with(&opts).await?)
            };
            let pool = SqlitePoolOptions::new()
                // An in-memory database lives in one connection.
                .max_connections(if memory { 1 } else { 8 })
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts.clone())
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            let writer = if memory {
                pool.clone()
            } else {
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    // Writers wait here, in the process, for their turn.
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await?
            };
            if let Some(setup) = setup {
                sqlx::Connection::close(setup).await?;
            }
            Backend::Sqlite {
                pool,
                writer,
                relaxed: Arc::new(AtomicBool::new(false)),
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut opts =
                PgConnectOptions::from_str(url)?.statement_cache_capacity(STATEMENT_CACHE);
            if let Some(schema) = pg_schema {
                opts = opts.options([("search_path", schema)]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        Ok(Store { backend })
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite { .. } => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { pool, writer, .. } => {
                writer.close().await;
                pool.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    // ----- endpoints -------------------------------------------------------

    /// Creates or updates an endpoint. On creation `secret` (given or
    /// generated by the caller) becomes its current secret; on update a
    /// given secret replaces the current one at once.
    pub async fn upsert_endpoint(
        &self,
        id: &str,
        spec: &EndpointSpec,
        secret: Option<&str>,
        now: i64,
    ) -> Result<UpsertedEndpoint> {
        let event_types = serde_json::to_string(&spec.event_types).expect("strings serialize");
        with_write_tx!(self, Commit::Durable, tx => {
            // Write first: SQLite then takes its write lock at once, under
            // the busy timeout, instead of failing a read-to-write upgrade.
            // Re-enabling an endpoint closes its breaker and forgets its
            // failures (SET expressions read the row as it was).
            let updated = sqlx::query(
                "UPDATE endpoints SET url = $2, description = $3, event_types = $4, disabled = $5, \
                 rate_limit_per_s = $6, profile = $7, deleted_at = NULL, updated_at = $8, \
                 disabled_reason = CASE WHEN NOT $5 THEN NULL WHEN disabled THEN disabled_reason ELSE 'operator' END, \
                 breaker_state = CASE WHEN disabled AND NOT $5 THEN 'closed' ELSE breaker_state END, \
                 consecutive_failures = CASE WHEN disabled AND NOT $5 THEN 0 ELSE consecutive_failures END, \
                 failing_since = CASE WHEN disabled AND NOT $5 THEN NULL ELSE failing_since END, \
                 breaker_opened_at = CASE WHEN disabled AND NOT $5 THEN NULL ELSE breaker_opened_at END, \
                 breaker_probe_at = CASE WHEN disabled AND NOT $5 THEN NULL ELSE breaker_probe_at END \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&spec.url)
            .bind(&spec.description)
            .bind(&event_types)
            .bind(spec.disabled)
            .bind(spec.rate_limit_per_s)
            .bind(&spec.profile)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let created = updated == 0;
            if created {
                sqlx::query(
                    "INSERT INTO endpoints (id, url, description, event_types, disabled, \
                     rate_limit_per_s, profile, created_at, updated_at, disabled_reason) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, CASE WHEN $5 THEN 'operator' END)",
                )
                .bind(id)
                .bind(&spec.url)
                .bind(&spec.description)
                .bind(&event_types)
                .bind(spec.disabled)
                .bind(spec.rate_limit_per_s)
                .bind(&spec.profile)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(secret) = secret {
                // A replaced secret stops signing at once; rotation (with a
                // grace period) is rotate_secret's job.
                sqlx::query(
                    "UPDATE endpoint_secrets SET expires_at = $2 \
                     WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO endpoint_secrets (endpoint_id, secret, created_at) VALUES ($1, $2, $3)",
                )
                .bind(id)
                .bind(secret)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            if spec.disabled {
                cancel_waiting(&mut tx, id, now).await?;
            }
            let row: EndpointRow = sqlx::query_as(ENDPOINT_SELECT_BY_ID)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(UpsertedEndpoint { endpoint: row, created })
        })
    }

    /// One endpoint, unless it was deleted.
    pub async fn get_endpoint(&self, id: &str) -> Result<Option<EndpointRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(ENDPOINT_SELECT_BY_ID).bind(id).fetch_optional(pool).await?
                .filter(|e: &EndpointRow| e.deleted_at.is_none()))
        })
    }

    /// All endpoints not deleted, by id.
    pub async fn list_endpoints(&self) -> Result<Vec<EndpointRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, url, description, event_types, disabled, rate_limit_per_s, profile, \
                 deleted_at, created_at, updated_at, breaker_state, consecutive_failures, failing_since, \
                 breaker_opened_at, breaker_probe_at, disabled_reason \
                 FROM endpoints WHERE deleted_at IS NULL ORDER BY id",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Soft-deletes an endpoint: no new deliveries, waiting ones cancelled,
    /// history kept. Returns false if there was no such endpoint.
    pub async fn delete_endpoint(&self, id: &str, now: i64) -> Result<bool> {
        with_write_tx!(self, Commit::Durable, tx => {
            let n = sqlx::query(
                "UPDATE endpoints SET deleted_at = $2, updated_at = $2 WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                cancel_waiting(&mut tx, id, now).await?;
            }
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    /// The secrets that sign for an endpoint now: the current one first,
    /// then any still in their grace period, newest first.
    pub async fn signing_secrets(&self, endpoint_id: &str, now: i64) -> Result<Vec<String>> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT secret FROM endpoint_secrets WHERE endpoint_id = $1 \
                 AND (expires_at IS NULL OR expires_at > $2) \
                 ORDER BY (CASE WHEN expires_at IS NULL THEN 0 ELSE 1 END), seq DESC",
            )
            .bind(endpoint_id)
            .bind(now)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| r.try_get::<String, _>(0).map_err(StoreError::from)).collect()
        })
    }

    /// Makes `new_secret` current; the old one keeps signing until
    /// `now + grace_ms`. Returns false if the endpoint does not exist.
    pub async fn rotate_secret(
        &self,
        endpoint_id: &str,
        new_secret: &str,
        now: i64,
        grace_ms: i64,
    ) -> Result<bool> {
        with_write_tx!(self, Commit::Durable, tx => {
            let n = sqlx::query(
                "UPDATE endpoint_secrets SET expires_at = $2 WHERE endpoint_id = $1 AND expires_at IS NULL \
                 AND EXISTS (SELECT 1 FROM endpoints WHERE id = $1 AND deleted_at IS NULL)",
            )
            .bind(endpoint_id)
            .bind(now + grace_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO endpoint_secrets (endpoint_id, secret, created_at) VALUES ($1, $2, $3)",
            )
            .bind(endpoint_id)
            .bind(new_secret)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    // ----- events ----------------------------------------------------------

    /// An event by id.
    pub async fn get_event(&self, id: &str) -> Result<Option<EventRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, type, tenant, payload_raw, request_hash, idempotency_key, created_at \
                 FROM events WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// An event by its Idempotency-Key.
    pub async fn get_event_by_idempotency_key(&self, key: &str) -> Result<Option<EventRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, type, tenant, payload_raw, request_hash, idempotency_key, created_at \
                 FROM events WHERE idempotency_key = $1",
            )
            .bind(key)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Stores a batch of events and their deliveries in one transaction, one
    /// delivery per enabled endpoint whose `event_types` match (none = all).
    /// An event whose id or idempotency key already exists (in the store or
    /// earlier in the batch) is left alone and reported as
    /// [`IngestOutcome::Exists`]. Returns one outcome per input, in order,
    /// only after the commit.
    pub async fn ingest(&self, batch: &[NewEvent], now: i64) -> Result<Vec<IngestOutcome>> {
        Ok(self.ingest_claiming(batch, now, None).await?.0)
    }

    /// Like [`Store::ingest`], and in the same transaction claims some of
    /// the new deliveries for a worker in this process, so that they need
    /// no claim transaction of their own. `claim.admit` is asked, in order,
    /// about each new delivery whose endpoint may be claimed now (breaker
    /// closed, no rate limit); a delivery it admits is stored in flight
    /// under `claim.owner`'s lease, with its `created` and `claimed`
    /// transitions, and returned as a [`Claimed`], in the order admitted.
    /// The others are stored pending, as by [`Store::ingest`].
    pub async fn ingest_claiming(
        &self,
        batch: &[NewEvent],
        now: i64,
        mut claim: Option<ClaimAtIngest<'_>>,
    ) -> Result<(Vec<IngestOutcome>, Vec<Claimed>)> {
        // Duplicates inside the batch are settled here, before the database.
        let mut seen_ids = HashSet::new();
        let mut seen_keys = HashSet::new();
        let fresh: Vec<bool> = batch
            .iter()
            .map(|e| {
                let new_id = seen_ids.insert(e.id.as_str());
                let new_key = e
                    .idempotency_key
                    .as_deref()
                    .is_none_or(|k| seen_keys.insert(k));
                new_id && new_key
            })
            .collect();
        let candidates: Vec<&NewEvent> = batch
            .iter()
            .zip(&fresh)
            .filter(|(_, f)| **f)
            .map(|(e, _)| e)
            .collect();

        let (inserted, deliveries) = with_write_tx!(self, Commit::Durable, tx => {
            let mut inserted: HashSet<String> = HashSet::new();
            for chunk in candidates.chunks(ROWS_PER_INSERT) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO events (id, type, tenant, payload_raw, payload, request_hash, \
                     idempotency_key, created_at) ",
                );
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(&e.id)
                        .push_bind(&e.event_type)
                        .push_bind(&e.tenant)
                        .push_bind(&e.payload_raw)
                        .push_bind(&e.payload_parsed)
                        .push_bind(&e.request_hash)
                        .push_bind(&e.idempotency_key)
                        .push_bind(now);
                });
                qb.push(" ON CONFLICT DO NOTHING RETURNING id");
                for row in qb.build().fetch_all(&mut *tx).await? {
                    inserted.insert(row.try_get::<String, _>(0)?);
                }
            }
            let endpoints: Vec<(String, String, bool)> = sqlx::query_as(
                "SELECT id, event_types, breaker_state = 'closed' AND rate_limit_per_s IS NULL \
                 FROM endpoints WHERE deleted_at IS NULL AND NOT disabled ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let endpoints = parse_endpoint_filters(endpoints)?;
            let mut deliveries: Vec<NewDelivery> = Vec::new();
            for (i, e) in batch.iter().enumerate() {
                if !fresh[i] || !inserted.contains(&e.id) {
                    continue;
                }
                for (endpoint_id, types, claimable) in &endpoints {
                    if types.is_empty() || types.iter().any(|t| t == &e.event_type) {
                        let claimed = *claimable
                            && claim.as_mut().is_some_and(|c| (c.admit)(endpoint_id));
                        deliveries.push(NewDelivery {
                            event: i,
                            id: crate::ids::delivery_id(),
                            endpoint_id: endpoint_id.clone(),
                            claimed,
                        });
                    }
                }
            }
            let (owner, lease_until) = match &claim {
                Some(c) => (Some(c.owner), Some(c.lease_until)),
                None => (None, None),
            };
            for chunk in deliveries.chunks(ROWS_PER_INSERT) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO deliveries (id, event_id, endpoint_id, state, attempt_count, \
                     next_attempt_at, lease_owner, lease_expires_at, claimed_from, created_at, updated_at) ",
                );
                qb.push_values(chunk, |mut b, d| {
                    b.push_bind(&d.id)
                        .push_bind(&batch[d.event].id)
                        .push_bind(&d.endpoint_id);
                    if d.claimed {
                        b.push_bind(DeliveryState::InFlight.as_str())
                            .push_bind(1i64)
                            .push_bind(None::<i64>)
                            .push_bind(owner)
                            .push_bind(lease_until)
                            .push_bind(Some(DeliveryState::Pending.as_str()));
                    } else {
                        b.push_bind(DeliveryState::Pending.as_str())
                            .push_bind(0i64)
                            .push_bind(Some(now))
                            .push_bind(None::<&str>)
                            .push_bind(None::<i64>)
                            .push_bind(None::<&str>);
                    }
                    b.push_bind(now).push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
                // Every delivery's `created`, then the `claimed` of those
                // claimed here: rows take their sequence numbers in order.
                let claimed_here = chunk.iter().filter(|d| d.claimed);
                let rows = chunk.iter().map(|d| (d, false)).chain(claimed_here.map(|d| (d, true)));
                let mut qb = QueryBuilder::new(
                    "INSERT INTO delivery_transitions (delivery_id, from_state, to_state, attempt, reason, at) ",
                );
                qb.push_values(rows, |mut b, (d, claimed)| {
                    b.push_bind(&d.id);
                    if claimed {
                        b.push_bind(Some(DeliveryState::Pending.as_str()))
                            .push_bind(DeliveryState::InFlight.as_str())
                            .push_bind(1i64)
                            .push_bind(TransitionReason::Claimed.as_str());
                    } else {
                        b.push_bind(None::<&str>)
                            .push_bind(DeliveryState::Pending.as_str())
                            .push_bind(0i64)
                            .push_bind(TransitionReason::Created.as_str());
                    }
                    b.push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            (inserted, deliveries)
        });

        let mut per_event: HashMap<usize, Vec<DeliveryRef>> = HashMap::new();
        let mut claimed = Vec::new();
        for d in deliveries {
            if d.claimed {
                claimed.push(Claimed {
                    id: d.id.clone(),
                    event_id: batch[d.event].id.clone(),
                    endpoint_id: d.endpoint_id.clone(),
                    attempt: 1,
                    from: DeliveryState::Pending,
                });
            }
            per_event.entry(d.event).or_default().push(DeliveryRef {
                id: d.id,
                endpoint_id: d.endpoint_id,
            });
        }
        let outcomes = batch
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if fresh[i] && inserted.contains(&e.id) {
                    IngestOutcome::Inserted(per_event.remove(&i).unwrap_or_default())
                } else {
                    IngestOutcome::Exists
                }
            })
            .collect();
        Ok((outcomes, claimed))
    }

    // ----- deliveries ------------------------------------------------------

    /// The deliveries an event created, ordered by endpoint id (the order
    /// ingest answered with).
    pub async fn event_deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(&format!(
                "{DELIVERY_SELECT} WHERE event_id = $1 ORDER BY endpoint_id, id"
            ))
            .bind(event_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// One delivery.
    pub async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRow>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(&format!("{DELIVERY_SELECT} WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// A page of deliveries ordered by id, after `filter.cursor`.
    pub async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRow>> {
        with_pool!(self, pool => {
            let mut qb = QueryBuilder::new(DELIVERY_SELECT);
            qb.push(" WHERE 1 = 1");
            if let Some(state) = filter.state {
                qb.push(" AND state = ").push_bind(state.as_str());
            }
            if let Some(endpoint) = &filter.endpoint_id {
                qb.push(" AND endpoint_id = ").push_bind(endpoint);
            }
            if let Some(cursor) = &filter.cursor {
                qb.push(" AND id > ").push_bind(cursor);
            }
            qb.push(" ORDER BY id LIMIT ").push_bind(filter.limit);
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }

    /// Attempts of the given deliveries, in attempt order.
    pub async fn attempts_for(&self, delivery_ids: &[String]) -> Result<Vec<AttemptRow>> {
        if delivery_ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT id, delivery_id, attempt, request_headers, body_sha256, response_status, \
                 response_headers, response_body, response_truncated, duration_ms, outcome, error, \
                 started_at, finished_at FROM attempts WHERE delivery_id IN (",
            );
            let mut sep = qb.separated(", ");
            for id in delivery_ids {
                sep.push_bind(id);
            }
            qb.push(") ORDER BY delivery_id, attempt");
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }

    /// State transitions of the given deliveries, in the order they happened.
    pub async fn transitions_for(&self, delivery_ids: &[String]) -> Result<Vec<TransitionRow>> {
        if delivery_ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT seq, delivery_id, from_state, to_state, attempt, outcome, reason, at \
                 FROM delivery_transitions WHERE delivery_id IN (",
            );
            let mut sep = qb.separated(", ");
            for id in delivery_ids {
                sep.push_bind(id);
            }
            qb.push(") ORDER BY seq");
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }

    /// Puts a delivery in a terminal state back to pending, due now, keeping
    /// its event and delivery ids. Audited as a `replay` transition.
    pub async fn replay(&self, id: &str, now: i64) -> Result<ReplayResult> {
        with_write_tx!(self, Commit::Durable, tx => {
            let row = sqlx::query(
                "UPDATE deliveries SET claimed_from = state, state = 'pending', next_attempt_at = $2, \
                 updated_at = $2 WHERE id = $1 AND state IN ('succeeded', 'failed', 'cancelled') \
                 RETURNING attempt_count, claimed_from",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                let state: Option<String> = sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Ok(match state {
                    None => ReplayResult::NotFound,
                    Some(s) => ReplayResult::NotTerminal(parse_state(&s)?),
                });
            };
            let attempt: i64 = row.try_get(0)?;
            let from: String = row.try_get(1)?;
            sqlx::query(
                "INSERT INTO delivery_transitions (delivery_id, from_state, to_state, attempt, reason, at) \
                 VALUES ($1, $2, 'pending', $3, $4, $5)",
            )
            .bind(id)
            .bind(&from)
            .bind(attempt)
            .bind(TransitionReason::Replay.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(ReplayResult::Replayed)
        })
    }

    /// Leases up to `limit` due deliveries to `owner` until `lease_until`,
    /// moving them to in_flight and counting the attempt, in one statement.
    /// Deliveries of endpoints in `skip_endpoints` (the caller's saturated
    /// ones) and of endpoints whose breaker is open are left for later. Two
    /// claimers never receive the same delivery while its lease holds.
    pub async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
        skip_endpoints: &[String],
    ) -> Result<Vec<Claimed>> {
        self.claim_with(&ClaimSpec {
            owner,
            now,
            lease_until,
            limit,
            skip_endpoints,
            quotas: &[],
            rate_limits_by_quota: false,
            probe_interval_ms: None,
        })
        .await
    }

    /// The worker's claim, in one transaction: first one probe for each
    /// open breaker whose probe is due (moving its next probe out, so one
    /// process wins it), then each quota endpoint up to its quota, then any
    /// other due delivery, skipping `skip_endpoints` and open breakers.
    pub async fn claim_with(&self, spec: &ClaimSpec<'_>) -> Result<Vec<Claimed>> {
        let kind = self.kind();
        let now = spec.now;
        let rows: Vec<ClaimedRaw> = with_write_tx!(self, Commit::Relaxed, tx => {
            // (only this endpoint, skip open breakers, at most this many)
            let mut parts: Vec<(Option<String>, bool, i64)> = Vec::new();
            if let Some(every) = spec.probe_interval_ms {
                let mut qb = QueryBuilder::new("UPDATE endpoints SET breaker_probe_at = ");
                qb.push_bind(now + every);
                // PostgreSQL: the rows are locked first, in id order, as the
                // recorders lock endpoints (see `record_attempts`); a plain
                // UPDATE would lock them in the order it finds them.
                if kind == BackendKind::Postgres {
                    qb.push(" WHERE id IN (SELECT id FROM endpoints");
                }
                qb.push(
                    " WHERE breaker_state = 'open' AND NOT disabled AND deleted_at IS NULL \
                     AND COALESCE(breaker_probe_at, 0) <= ",
                )
                .push_bind(now);
                // A rate-limited endpoint with a quota may be probed; one
                // without (no token, or saturated) may not.
                let probe_skip: Vec<String> = spec
                    .skip_endpoints
                    .iter()
                    .filter(|e| !spec.quotas.iter().any(|(q, _)| q == *e))
                    .cloned()
                    .collect();
                if !probe_skip.is_empty() {
                    qb.push(" AND id NOT IN (");
                    let mut sep = qb.separated(", ");
                    for e in probe_skip {
                        sep.push_bind(e);
                    }
                    qb.push(")");
                }
                if kind == BackendKind::Postgres {
                    qb.push(" ORDER BY id FOR NO KEY UPDATE)");
                }
                qb.push(" RETURNING id");
                let probes: Vec<(String,)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                parts.extend(probes.into_iter().map(|(id,)| (Some(id), false, 1)));
            }
            parts.extend(
                spec.quotas
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(e, n)| (Some(e.clone()), true, *n)),
            );
            parts.push((None, true, spec.limit));
            let mut rows: Vec<ClaimedRaw> = Vec::new();
            for (only, skip_open, part_limit) in parts {
                let part_limit = part_limit.min(spec.limit - rows.len() as i64);
                if part_limit <= 0 {
                    continue;
                }
                let mut qb = QueryBuilder::new("");
                let (alias, returning) = match kind {
                    BackendKind::Postgres => ("d.", " RETURNING d.id, d.event_id, d.endpoint_id, d.attempt_count, d.claimed_from"),
                    BackendKind::Sqlite => ("", " RETURNING id, event_id, endpoint_id, attempt_count, claimed_from"),
                };
                let push_due = |qb: &mut QueryBuilder<'_, _>| {
                    qb.push("SELECT id FROM deliveries WHERE state IN ('pending', 'retry_scheduled') AND next_attempt_at <= ")
                        .push_bind(now);
                    match &only {
                        Some(e) => {
                            qb.push(" AND endpoint_id = ").push_bind(e.clone());
                        }
                        None if !spec.skip_endpoints.is_empty() => {
                            qb.push(" AND endpoint_id NOT IN (");
                            let mut sep = qb.separated(", ");
                            for e in spec.skip_endpoints {
                                sep.push_bind(e.clone());
                            }
                            qb.push(")");
                        }
                        None => {}
                    }
                    if skip_open && only.is_none() && spec.rate_limits_by_quota {
                        // Read here, in the claim's own transaction: a limit
                        // set after the caller computed its quotas still
                        // keeps the endpoint out of the unlimited part.
                        qb.push(" AND endpoint_id NOT IN (SELECT id FROM endpoints \
                                 WHERE breaker_state = 'open' OR rate_limit_per_s IS NOT NULL)");
                    } else if skip_open {
                        qb.push(" AND endpoint_id NOT IN (SELECT id FROM endpoints WHERE breaker_state = 'open')");
                    }
                    qb.push(" ORDER BY next_attempt_at LIMIT ").push_bind(part_limit);
                };
                if kind == BackendKind::Postgres {
                    qb.push("WITH due AS (");
                    push_due(&mut qb);
                    qb.push(" FOR UPDATE SKIP LOCKED) UPDATE deliveries d SET ");
                } else {
                    qb.push("UPDATE deliveries SET ");
                }
                qb.push(format!(
                    "claimed_from = {alias}state, state = 'in_flight', attempt_count = {alias}attempt_count + 1, lease_owner = "
                ))
                .push_bind(spec.owner)
                .push(", lease_expires_at = ")
                .push_bind(spec.lease_until)
                .push(", next_attempt_at = NULL, updated_at = ")
                .push_bind(now);
                if kind == BackendKind::Postgres {
                    qb.push(" FROM due WHERE d.id = due.id");
                } else {
                    qb.push(" WHERE id IN (");
                    push_due(&mut qb);
                    qb.push(")");
                }
                qb.push(returning);
                let got: Vec<ClaimedRaw> = qb.build_query_as().fetch_all(&mut *tx).await?;
                rows.extend(got);
            }
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO delivery_transitions (delivery_id, from_state, to_state, attempt, reason, at) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(&r.id)
                        .push_bind(&r.claimed_from)
                        .push_bind(DeliveryState::InFlight.as_str())
                        .push_bind(r.attempt_count)
                        .push_bind(TransitionReason::Claimed.as_str())
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            rows
        });
        rows.into_iter()
            .map(|r| {
                Ok(Claimed {
                    from: parse_state(&r.claimed_from)?,
                    id: r.id,
                    event_id: r.event_id,
                    endpoint_id: r.endpoint_id,
                    attempt: r.attempt_count,
                })
            })
            .collect()
    }

    /// Events by id (the worker loads a claim's events at once).
    pub async fn events_by_ids(&self, ids: &[String]) -> Result<Vec<EventRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT id, type, tenant, payload_raw, request_hash, idempotency_key, created_at \
                 FROM events WHERE id IN (",
            );
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(id.clone());
            }
            qb.push(")");
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }

    /// Endpoints by id, leaving out deleted ones.
    pub async fn endpoints_by_ids(&self, ids: &[String]) -> Result<Vec<EndpointRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, pool => {
            let mut qb = QueryBuilder::new(ENDPOINT_SELECT_BY_ID.trim_end_matches("id = $1"));
            qb.push("deleted_at IS NULL AND id IN (");
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(id.clone());
            }
            qb.push(")");
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }

    /// [`Store::signing_secrets`] for several endpoints at once, as
    /// (endpoint id, secret) pairs, each endpoint's in signing order.
    pub async fn signing_secrets_for(
        &self,
        ids: &[String],
        now: i64,
    ) -> Result<Vec<(String, String)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, pool => {
            let mut qb = QueryBuilder::new(
                "SELECT endpoint_id, secret FROM endpoint_secrets WHERE (expires_at IS NULL OR expires_at > ",
            );
            qb.push_bind(now).push(") AND endpoint_id IN (");
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(id.clone());
            }
            qb.push(") ORDER BY endpoint_id, (CASE WHEN expires_at IS NULL THEN 0 ELSE 1 END), seq DESC");
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }

    /// Endpoints with a rate limit, and the limit (requests per second).
    pub async fn rate_limits(&self) -> Result<Vec<(String, i64)>> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, rate_limit_per_s FROM endpoints \
                 WHERE rate_limit_per_s IS NOT NULL AND deleted_at IS NULL",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Endpoints (not deleted) by breaker state, for metrics.
    pub async fn breaker_counts(&self) -> Result<BreakerCounts> {
        let rows: Vec<(String, bool, Option<String>, i64)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT breaker_state, disabled, disabled_reason, COUNT(*) FROM endpoints \
                 WHERE deleted_at IS NULL GROUP BY breaker_state, disabled, disabled_reason",
            )
            .fetch_all(pool)
            .await?
        });
        let mut out = BreakerCounts::default();
        for (state, disabled, reason, n) in rows {
            match (disabled, reason.as_deref(), state.as_str()) {
                (true, Some("breaker"), _) => out.disabled_by_breaker += n,
                (true, _, _) => {}
                (false, _, "open") => out.open += n,
                (false, _, _) => out.closed += n,
            }
        }
        Ok(out)
    }

    /// Hands back a claim whose attempt never started: the delivery returns
    /// to the state it was claimed from and the attempt is not counted.
    /// Returns false if `owner` no longer held the lease.
    pub async fn release(&self, claim: &Claimed, owner: &str, now: i64) -> Result<bool> {
        self.unclaim(claim, owner, now, false).await
    }

    /// A claimed delivery whose endpoint was deleted or disabled meanwhile:
    /// released, then cancelled, both recorded.
    pub async fn cancel_claimed(&self, claim: &Claimed, owner: &str, now: i64) -> Result<bool> {
        self.unclaim(claim, owner, now, true).await
    }

    /// Undoes a claim `owner` still holds, uncounting the attempt; with
    /// `cancel`, the delivery then goes on to cancelled.
    async fn unclaim(&self, claim: &Claimed, owner: &str, now: i64, cancel: bool) -> Result<bool> {
        with_write_tx!(self, Commit::Relaxed, tx => {
            let n = sqlx::query(
                "UPDATE deliveries SET claimed_from = state, \
                 state = CASE WHEN $4 THEN 'cancelled' ELSE claimed_from END, \
                 next_attempt_at = CASE WHEN $4 THEN NULL ELSE $3 END, \
                 attempt_count = attempt_count - 1, lease_owner = NULL, lease_expires_at = NULL, \
                 updated_at = $3 WHERE id = $1 AND state = 'in_flight' AND lease_owner = $2",
            )
            .bind(&claim.id)
            .bind(owner)
            .bind(now)
            .bind(cancel)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                insert_transition(&mut tx, &claim.id, Some(DeliveryState::InFlight), claim.from,
                    claim.attempt - 1, None, TransitionReason::Released, now).await?;
                if cancel {
                    insert_transition(&mut tx, &claim.id, Some(claim.from), DeliveryState::Cancelled,
                        claim.attempt - 1, None, TransitionReason::EndpointGone, now).await?;
                }
            }
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    /// Persists a finished attempt: the attempt row, the delivery's new state
    /// and next due time, and the transition, in one transaction; with
    /// `disable_endpoint`, the endpoint is disabled and its waiting
    /// deliveries cancelled in the same transaction. The attempt row is
    /// written even if the lease was lost meanwhile (the request did go
    /// out); the state is moved only while `owner` still holds the lease.
    ///
    /// In the same transaction the endpoint's breaker takes the outcome
    /// (see [`crate::breaker::next`]): it may open, close, or, after
    /// continuous failure past `breaker.disable_after`, disable the endpoint
    /// and give up its waiting deliveries (retry_scheduled → failed,
    /// pending → cancelled, reason `breaker_disabled`).
    pub async fn record_attempt(
        &self,
        rec: &AttemptRecord,
        breaker: &BreakerPolicy,
    ) -> Result<Recorded> {
        let mut out = self
            .record_attempts(std::slice::from_ref(rec), breaker)
            .await?;
        Ok(out.remove(0))
    }

    /// [`Store::record_attempt`] for several attempts in one transaction
    /// (group commit: one fsync for many outcomes). Each attempt's outcome,
    /// transition and next schedule are still written together; the batch
    /// commits or rolls back as a whole. Returns one result per record, in
    /// order.
    pub async fn record_attempts(
        &self,
        recs: &[AttemptRecord],
        breaker: &BreakerPolicy,
    ) -> Result<Vec<Recorded>> {
        let kind = self.kind();
        let mut results = Vec::with_capacity(recs.len());
        with_write_tx!(self, Commit::Relaxed, tx => {
            // Three statements per chunk, whatever its size: each statement
            // is a round trip to the connection's thread, and the writer is
            // shared with ingest and claims. An outcome applies only to the
            // attempt it belongs to, under the lease that attempt held.
            // Per record, in order: did its delivery move, was its attempt
            // stored (not already there)?
            let mut moved: Vec<bool> = Vec::with_capacity(recs.len());
            let mut inserted: Vec<bool> = Vec::with_capacity(recs.len());
            let flags = |set: &HashSet<(String, i64)>, chunk: &[AttemptRecord]| {
                chunk
                    .iter()
                    .map(|r| set.contains(&(r.delivery_id.clone(), r.attempt)))
                    .collect::<Vec<bool>>()
            };
            for chunk in recs.chunks(ROWS_PER_INSERT) {
                let mut qb = QueryBuilder::new(
                    "WITH v (id, owner, attempt, state, next_at, outcome, at) AS (",
                );
                qb.push_values(chunk, |mut b, r| {
                    debug_assert!(DeliveryState::can_transition(Some(DeliveryState::InFlight), r.to));
                    b.push_bind(&r.delivery_id)
                        .push_bind(&r.owner)
                        .push_bind(r.attempt)
                        .push_bind(r.to.as_str())
                        .push_bind(r.next_attempt_at)
                        .push_bind(r.outcome.as_str())
                        .push_bind(r.finished_at);
                });
                qb.push(
                    ") UPDATE deliveries SET claimed_from = deliveries.state, state = v.state, \
                     next_attempt_at = v.next_at, last_outcome = v.outcome, lease_owner = NULL, \
                     lease_expires_at = NULL, updated_at = v.at FROM v \
                     WHERE deliveries.id = v.id AND ",
                );
                // SQLite otherwise finds the rows through `deliveries_state
                // (state, id)`, an index this statement changes, which makes
                // it collect them first and update in a second pass; unary
                // `+` keeps that index out and the primary key in.
                if kind == BackendKind::Sqlite {
                    qb.push("+");
                }
                qb.push(
                    "deliveries.state = 'in_flight' \
                     AND deliveries.lease_owner = v.owner AND deliveries.attempt_count = v.attempt \
                     RETURNING deliveries.id, deliveries.attempt_count",
                );
                let mut rows: HashSet<(String, i64)> = HashSet::new();
                for row in qb.build().fetch_all(&mut *tx).await? {
                    rows.insert((row.try_get(0)?, row.try_get(1)?));
                }
                let chunk_moved = flags(&rows, chunk);
                let mut qb = QueryBuilder::new(
                    "INSERT INTO attempts (id, delivery_id, attempt, request_headers, body_sha256, \
                     response_status, response_headers, response_body, response_truncated, duration_ms, \
                     outcome, error, started_at, finished_at) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(crate::ids::attempt_id())
                        .push_bind(&r.delivery_id)
                        .push_bind(r.attempt)
                        .push_bind(&r.request_headers)
                        .push_bind(&r.body_sha256)
                        .push_bind(r.response_status)
                        .push_bind(&r.response_headers)
                        .push_bind(&r.response_body)
                        .push_bind(r.response_truncated)
                        .push_bind(r.duration_ms)
                        .push_bind(r.outcome.as_str())
                        .push_bind(&r.error)
                        .push_bind(r.started_at)
                        .push_bind(r.finished_at);
                });
                qb.push(" ON CONFLICT (delivery_id, attempt) DO NOTHING RETURNING delivery_id, attempt");
                let mut rows: HashSet<(String, i64)> = HashSet::new();
                for row in qb.build().fetch_all(&mut *tx).await? {
                    rows.insert((row.try_get(0)?, row.try_get(1)?));
                }
                inserted.extend(flags(&rows, chunk));
                let applied: Vec<&AttemptRecord> = chunk
                    .iter()
                    .zip(&chunk_moved)
                    .filter(|(_, m)| **m)
                    .map(|(r, _)| r)
                    .collect();
                moved.extend(chunk_moved);
                if !applied.is_empty() {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO delivery_transitions \
                         (delivery_id, from_state, to_state, attempt, outcome, reason, at) ",
                    );
                    qb.push_values(applied, |mut b, r| {
                        b.push_bind(&r.delivery_id)
                            .push_bind(DeliveryState::InFlight.as_str())
                            .push_bind(r.to.as_str())
                            .push_bind(r.attempt)
                            .push_bind(r.outcome.as_str())
                            .push_bind(TransitionReason::Attempted.as_str())
                            .push_bind(r.finished_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
            }
            // The breaker takes every exchange that happened once, even one
            // whose lease was lost meanwhile: it says how the receiver is.
            let counted: Vec<bool> = recs
                .iter()
                .zip(&inserted)
                .map(|(rec, inserted)| {
                    *inserted
                        && rec.disable_endpoint.is_none()
                        && breaker.enabled()
                        && breaker::Signal::of(rec.outcome) != breaker::Signal::Neutral
                })
                .collect();
            let counted_recs = || recs.iter().zip(&counted).filter(|(_, c)| **c).map(|(r, _)| r);
            // Endpoints whose breaker this batch cannot change: closed with
            // no failures, and only healthy outcomes in the batch (most
            // attempts, against healthy endpoints). Read in one query, so
            // that those attempts never touch the endpoint row.
            let mut quiet: HashSet<String> = HashSet::new();
            let watched: Vec<&str> = {
                let mut v: Vec<&str> = counted_recs().map(|r| r.endpoint_id.as_str()).collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            for chunk in watched.chunks(ROWS_PER_INSERT) {
                let mut qb = QueryBuilder::new(
                    "SELECT id FROM endpoints WHERE breaker_state = 'closed' AND consecutive_failures = 0 AND id IN (",
                );
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                for row in qb.build().fetch_all(&mut *tx).await? {
                    quiet.insert(row.try_get(0)?);
                }
            }
            for rec in counted_recs() {
                if breaker::Signal::of(rec.outcome) != breaker::Signal::Healthy {
                    quiet.remove(&rec.endpoint_id);
                }
            }
            // PostgreSQL: lock every endpoint row this batch may change (a
            // breaker, or a 410's disabling), at once and in id order,
            // before the records are gone through in their own order.
            // Several recorders commit side by side, and two that locked
            // the same failing endpoints in different orders deadlocked
            // (seen with 10% of endpoints hanging). NO KEY UPDATE, not
            // UPDATE: the breaker's columns are not the key, and FOR UPDATE
            // also blocks the foreign-key checks (FOR KEY SHARE) of ingest's
            // inserts into deliveries, which deadlocked with the recorders.
            if kind == BackendKind::Postgres {
                let mut loud: Vec<&str> = watched.iter().copied().filter(|e| !quiet.contains(*e)).collect();
                loud.extend(
                    recs.iter()
                        .zip(&moved)
                        .filter(|(_, moved)| **moved)
                        .filter_map(|(r, _)| r.disable_endpoint.as_deref()),
                );
                loud.sort_unstable();
                loud.dedup();
                for chunk in loud.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new("SELECT id FROM endpoints WHERE id IN (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(") ORDER BY id FOR NO KEY UPDATE");
                    qb.build().fetch_all(&mut *tx).await?;
                }
            }
            for (i, rec) in recs.iter().enumerate() {
            let signal = breaker::Signal::of(rec.outcome);
            let mut change = breaker::Change::None;
            if moved[i] {
                if let Some(endpoint) = &rec.disable_endpoint {
                    sqlx::query("UPDATE endpoints SET disabled = $2, disabled_reason = 'gone', updated_at = $3 WHERE id = $1")
                        .bind(endpoint.as_str())
                        .bind(true)
                        .bind(rec.finished_at)
                        .execute(&mut *tx)
                        .await?;
                    cancel_waiting(&mut tx, endpoint, rec.finished_at).await?;
                }
            }
            if counted[i] && !quiet.contains(&rec.endpoint_id) {
                {
                    let select = "SELECT breaker_state, consecutive_failures, failing_since, breaker_opened_at, \
                         breaker_probe_at, disabled, disabled_reason FROM endpoints WHERE id = $1";
                    type BreakerRow = (String, i64, Option<i64>, Option<i64>, Option<i64>, bool, Option<String>);
                    // On PostgreSQL this transaction already holds the row's
                    // lock (taken above, in id order), so what it reads here
                    // is the row as it stands. A healthy outcome against a
                    // closed breaker with no failures changes nothing.
                    let peek: Option<BreakerRow> = sqlx::query_as(select)
                        .bind(&rec.endpoint_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let idle = matches!(&peek, Some((state, 0, ..)) if state == "closed")
                        && signal == breaker::Signal::Healthy;
                    let row = if idle { None } else { peek };
                    if let Some((state, failures, failing_since, opened_at, probe_at, disabled, reason)) = row {
                        let before = Breaker {
                            state: state.parse().map_err(StoreError::Corrupt)?,
                            consecutive_failures: failures,
                            failing_since,
                            opened_at,
                            probe_at,
                        };
                        let (after, c) = breaker::next(before, breaker, signal, rec.started_at, rec.finished_at);
                        change = c;
                        if after != before {
                            sqlx::query(
                                "UPDATE endpoints SET breaker_state = $2, consecutive_failures = $3, \
                                 failing_since = $4, breaker_opened_at = $5, breaker_probe_at = $6 WHERE id = $1",
                            )
                            .bind(&rec.endpoint_id)
                            .bind(after.state.as_str())
                            .bind(after.consecutive_failures)
                            .bind(after.failing_since)
                            .bind(after.opened_at)
                            .bind(after.probe_at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        let by_breaker = disabled && reason.as_deref() == Some("breaker");
                        let log = match c {
                            breaker::Change::Opened => Some((before.state.as_str(), "open")),
                            breaker::Change::Closed => Some((before.state.as_str(), "closed")),
                            breaker::Change::Disable if !disabled => Some((before.state.as_str(), "disabled")),
                            _ => None,
                        };
                        if let Some((from, to)) = log {
                            sqlx::query(
                                "INSERT INTO endpoint_breaker_transitions \
                                 (endpoint_id, from_state, to_state, consecutive_failures, at) \
                                 VALUES ($1, $2, $3, $4, $5)",
                            )
                            .bind(&rec.endpoint_id)
                            .bind(from)
                            .bind(to)
                            .bind(after.consecutive_failures)
                            .bind(rec.finished_at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        if c == breaker::Change::Disable && !disabled {
                            sqlx::query(
                                "UPDATE endpoints SET disabled = $2, disabled_reason = 'breaker', updated_at = $3 WHERE id = $1",
                            )
                            .bind(&rec.endpoint_id)
                            .bind(true)
                            .bind(rec.finished_at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        // Give up what waits, including this delivery if it
                        // was just rescheduled; an attempt that finishes
                        // after the endpoint was disabled by the breaker is
                        // given up the same way.
                        if (c == breaker::Change::Disable && !disabled) || by_breaker {
                            give_up_waiting(&mut tx, &rec.endpoint_id, rec.finished_at).await?;
                        }
                    }
                }
            }
            results.push(Recorded { moved: moved[i], breaker: change });
            }
            tx.commit().await?;
            Ok(results)
        })
    }

    /// How many deliveries are due now and waiting for a worker.
    pub async fn due_count(&self, now: i64) -> Result<i64> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'retry_scheduled') AND next_attempt_at <= $1",
            )
            .bind(now)
            .fetch_one(pool)
            .await?)
        })
    }

    /// Moves deliveries whose lease expired before `now` to retry_scheduled,
    /// due at once (the worker holding them crashed or stalled). Returns how
    /// many were rescued.
    pub async fn rescue_expired(&self, now: i64) -> Result<u64> {
        with_write_tx!(self, Commit::Relaxed, tx => {
            let rows = sqlx::query(
                "UPDATE deliveries SET claimed_from = state, state = 'retry_scheduled', \
                 next_attempt_at = $1, lease_owner = NULL, lease_expires_at = NULL, \
                 last_outcome = NULL, updated_at = $1 \
                 WHERE state = 'in_flight' AND lease_expires_at < $1 RETURNING id, attempt_count",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO delivery_transitions (delivery_id, from_state, to_state, attempt, reason, at) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.get::<String, _>(0))
                        .push_bind(DeliveryState::InFlight.as_str())
                        .push_bind(DeliveryState::RetryScheduled.as_str())
                        .push_bind(r.get::<i64, _>(1))
                        .push_bind(TransitionReason::LeaseExpired.as_str())
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        })
    }

    /// Counts deliveries per state (for metrics and tests).
    pub async fn count_by_state(&self) -> Result<HashMap<DeliveryState, i64>> {
        with_pool!(self, pool => {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
                    .fetch_all(pool)
                    .await?;
            rows.into_iter().map(|(s, n)| Ok((parse_state(&s)?, n))).collect()
        })
    }

    /// Inserts a transition row as given, bypassing the state machine. Only
    /// for the test that checks the database's CHECK constraint agrees with
    /// [`DeliveryState::can_transition`].
    #[doc(hidden)]
    pub async fn raw_insert_transition(
        &self,
        delivery_id: &str,
        from: Option<&str>,
        to: &str,
        outcome: Option<OutcomeClass>,
    ) -> Result<()> {
        with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO delivery_transitions (delivery_id, from_state, to_state, attempt, outcome, reason, at) \
                 VALUES ($1, $2, $3, 0, $4, 'test', 0)",
            )
            .bind(delivery_id)
            .bind(from)
            .bind(to)
            .bind(outcome.map(|o| o.as_str()))
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}

const ENDPOINT_SELECT_BY_ID: &str =
    "SELECT id, url, description, event_types, disabled, rate_limit_per_s, profile, \
     deleted_at, created_at, updated_at, breaker_state, consecutive_failures, failing_since, \
     breaker_opened_at, breaker_probe_at, disabled_reason FROM endpoints WHERE id = $1";

const DELIVERY_SELECT: &str =
    "SELECT id, event_id, endpoint_id, state, attempt_count, next_attempt_at, lease_expires_at, \
     last_outcome, created_at, updated_at FROM deliveries";

/// The breaker disabled the endpoint: its deliveries waiting for a retry
/// fail, those never attempted are cancelled, each transition recorded with
/// the reason `breaker_disabled`. In-flight ones finish their attempt.
async fn give_up_waiting<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    endpoint_id: &str,
    now: i64,
) -> Result<()>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    i64: for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let rows = sqlx::query(
        "UPDATE deliveries SET claimed_from = state, \
         state = CASE WHEN state = 'retry_scheduled' THEN 'failed' ELSE 'cancelled' END, \
         next_attempt_at = NULL, updated_at = $2 \
         WHERE endpoint_id = $1 AND state IN ('pending', 'retry_scheduled') \
         RETURNING id, attempt_count, claimed_from, state",
    )
    .bind(endpoint_id)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    let mut moved = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get(0)?;
        let attempt: i64 = r.try_get(1)?;
        let from = parse_state(&r.try_get::<String, _>(2)?)?;
        let to = parse_state(&r.try_get::<String, _>(3)?)?;
        debug_assert!(DeliveryState::can_transition(Some(from), to));
        moved.push((id, attempt, from, to));
    }
    // One row at a time: this runs once per endpoint the breaker disables.
    for (id, attempt, from, to) in moved {
        insert_transition(
            tx,
            &id,
            Some(from),
            to,
            attempt,
            None,
            TransitionReason::BreakerDisabled,
            now,
        )
        .await?;
    }
    Ok(())
}

/// Cancels an endpoint's deliveries that wait for an attempt, recording
/// each transition. In-flight ones finish their attempt.
async fn cancel_waiting<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    endpoint_id: &str,
    now: i64,
) -> Result<()>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    i64: for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let rows = sqlx::query(
        "UPDATE deliveries SET claimed_from = state, state = 'cancelled', next_attempt_at = NULL, \
         updated_at = $2 WHERE endpoint_id = $1 AND state IN ('pending', 'retry_scheduled') \
         RETURNING id, attempt_count, claimed_from",
    )
    .bind(endpoint_id)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let id: String = r.try_get(0)?;
        let attempt: i64 = r.try_get(1)?;
        let from = parse_state(&r.try_get::<String, _>(2)?)?;
        insert_transition(
            tx,
            &id,
            Some(from),
            DeliveryState::Cancelled,
            attempt,
            None,
            TransitionReason::EndpointGone,
            now,
        )
        .await?;
    }
    Ok(())
}

/// Appends one transition row inside `tx`.
#[allow(clippy::too_many_arguments)]
async fn insert_transition<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    delivery_id: &str,
    from: Option<DeliveryState>,
    to: DeliveryState,
    attempt: i64,
    outcome: Option<OutcomeClass>,
    reason: TransitionReason,
    at: i64,
) -> Result<()>
where
    DB: sqlx::Database,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO delivery_transitions (delivery_id, from_state, to_state, attempt, outcome, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(delivery_id)
    .bind(from.map(|s| s.as_str()))
    .bind(to.as_str())
    .bind(attempt)
    .bind(outcome.map(|o| o.as_str()))
    .bind(reason.as_str())
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn parse_state(s: &str) -> Result<DeliveryState> {
    s.parse()
        .map_err(|e: crate::state::UnknownState| StoreError::Corrupt(e.to_string()))
}

/// A delivery ingest creates: the index of its event in the batch, and
/// whether it is claimed in the same transaction.
struct NewDelivery {
    event: usize,
    id: String,
    endpoint_id: String,
    claimed: bool,
}

/// Parses each endpoint's `event_types`, keeping what follows it.
fn parse_endpoint_filters<T>(
    rows: Vec<(String, String, T)>,
) -> Result<Vec<(String, Vec<String>, T)>> {
    rows.into_iter()
        .map(|(id, types, rest)| {
            let types: Vec<String> = serde_json::from_str(&types).map_err(|e| {
                StoreError::Corrupt(format!(
                    "endpoint {id}: event_types is not a JSON list: {e}"
                ))
            })?;
            Ok((id, types, rest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    /// `PRAGMA synchronous` of the SQLite writer connection: 1 NORMAL, 2 FULL.
    async fn writer_synchronous(store: &Store) -> i64 {
        let Backend::Sqlite { writer, .. } = &store.backend else {
            unreachable!("a SQLite store")
        };
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(writer)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn what_the_api_acknowledges_commits_with_an_fsync_and_the_worker_does_not() {
        let db = TestDb::sqlite().await;
        let s = &db.store;
        assert_eq!(writer_synchronous(s).await, 2, "a new writer is FULL");
        s.upsert_endpoint(
            "ep",
            &EndpointSpec {
                url: "https://example.com/h".into(),
                ..EndpointSpec::default()
            },
            Some("whsec_x"),
            1,
        )
        .await
        .unwrap();
        assert_eq!(
            writer_synchronous(s).await,
            2,
            "an endpoint upsert is durable"
        );
        let event = |id: &str| NewEvent {
            id: id.into(),
            event_type: "t".into(),
            tenant: None,
            payload_raw: b"{}".to_vec(),
            payload_parsed: "{}".into(),
            request_hash: format!("h-{id}"),
            idempotency_key: None,
        };
        s.ingest(&[event("e1")], 1).await.unwrap();
        assert_eq!(writer_synchronous(s).await, 2, "ingest is durable");
        let claimed = s.claim("w", 10, 1_000, 10, &[]).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(writer_synchronous(s).await, 1, "a claim is relaxed");
        s.ingest(&[event("e2")], 20).await.unwrap();
        assert_eq!(
            writer_synchronous(s).await,
            2,
            "ingest after a claim is durable again"
        );
        assert_eq!(s.rescue_expired(2_000).await.unwrap(), 1);
        assert_eq!(writer_synchronous(s).await, 1, "a rescue is relaxed");
    }
}
