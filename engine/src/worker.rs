//! The delivery worker: claims due deliveries and runs each attempt as a
//! pipeline of named stages.
//!
//! For one attempt: reserve (the claim's lease) → prepare (load the event,
//! endpoint and secrets; render and sign the exact body bytes) → send with a
//! deadline and read the body to its end or the cap ([`Sender::send`]) →
//! decide (success, retry at a time, or fail) → persist the attempt, the
//! transition and the next schedule in one transaction → metrics.
//!
//! The types carry the rules: a [`Reserved`] attempt is consumed by
//! [`Reserved::finish`] into a [`Completed`] one; only a `Completed` attempt
//! becomes an [`AttemptRecord`] (through [`Completed::decide`]), and only
//! `decide` can schedule a retry, which it does only for retryable outcomes.
//!
//! Backpressure: a global semaphore caps attempts in flight and a
//! per-endpoint count keeps one slow endpoint from taking every slot;
//! claiming skips saturated endpoints and stops when no slot is free, so
//! nothing queues in memory. Leases outlive the deadline, so a live attempt
//! is never rescued; a crashed worker's leases expire and the rescuer
//! reschedules them (at-least-once).
//!
//! Endpoint limits: an endpoint with `rate_limit_per_s` gets a token bucket
//! here (burst of one second's worth, refilled by the injected clock); its
//! deliveries are claimed only up to the tokens it has, so nothing is claimed
//! that must wait. The limit holds per worker process. An endpoint whose
//! circuit breaker is open (kept in the database, see [`crate::breaker`]) is
//! skipped by the claim except for one probe per probe interval.

use crate::breaker::{BreakerPolicy, Change};
use crate::clock::SharedClock;
use crate::delivery::http::{Exchange, OutboundRequest, Outcome, Sender};
use crate::metrics::Metrics;
use crate::profile::{self, HeaderCase, Message, Profile};
use crate::state::{DeliveryState, OutcomeClass};
use crate::store::{AttemptRecord, ClaimSpec, Claimed, EndpointRow, EventRow, Store, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinSet;

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Attempts in flight at once, across endpoints.
    pub max_in_flight: usize,
    /// Attempts in flight at once for one endpoint.
    pub per_endpoint: usize,
    /// How long a claim is leased; must exceed every profile's deadline.
    pub lease: Duration,
    /// How often to look for due deliveries when not woken by ingest.
    pub poll_interval: Duration,
    /// Signing profile for endpoints that name none.
    pub default_profile: String,
    /// Overrides every profile's retry schedule (e.g. "1s,2s,4s").
    pub retry_schedule: Option<String>,
    /// Overrides every profile's deadline.
    pub deadline: Option<Duration>,
    /// How long a graceful shutdown waits for attempts in flight.
    pub drain_timeout: Duration,
    /// The endpoint circuit breaker.
    pub breaker: BreakerPolicy,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            max_in_flight: 256,
            per_endpoint: 16,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(200),
            default_profile: "standard-webhooks".into(),
            retry_schedule: None,
            deadline: None,
            drain_timeout: Duration::from_secs(20),
            breaker: BreakerPolicy::default(),
        }
    }
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A profile name or retry schedule is wrong.
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    /// The lease must outlast the longest deadline, or a live attempt could
    /// be rescued and sent twice.
    #[error(
        "the lease ({lease:?}) must be longer than the longest delivery deadline ({deadline:?})"
    )]
    LeaseTooShort { lease: Duration, deadline: Duration },
}

/// An attempt this worker holds the lease for and has not sent yet.
#[derive(Debug)]
pub struct Reserved {
    claim: Claimed,
    started_at: i64,
    /// What the attempt needs, loaded for the whole claim at once.
    prefetched: Option<Prefetched>,
}

/// An attempt's endpoint (None: deleted), event and signing secrets.
#[derive(Debug, Clone)]
struct Prefetched {
    endpoint: Option<Arc<EndpointRow>>,
    event: Option<Arc<EventRow>>,
    secrets: Arc<Vec<String>>,
}

impl Reserved {
    /// The claim behind this attempt.
    pub fn claim(&self) -> &Claimed {
        &self.claim
    }

    /// Consumes the reservation with what the exchange produced.
    pub fn finish(self, sent: Sent, exchange: Exchange, finished_at: i64) -> Completed {
        Completed {
            claim: self.claim,
            started_at: self.started_at,
            finished_at,
            sent,
            exchange,
        }
    }
}

/// What went out on the wire (kept for the attempt row).
#[derive(Debug, Clone)]
pub struct Sent {
    /// Headers as sent, in order.
    pub headers: Vec<(String, String)>,
    /// SHA-256 of the body bytes, hex.
    pub body_sha256: String,
}

/// An attempt whose outcome is known; only this can be persisted.
#[derive(Debug)]
pub struct Completed {
    claim: Claimed,
    started_at: i64,
    finished_at: i64,
    sent: Sent,
    exchange: Exchange,
}

impl Completed {
    /// The exchange's outcome.
    pub fn outcome(&self) -> &Outcome {
        &self.exchange.outcome
    }

    /// Decides what happens next and builds the record to persist. A retry
    /// is scheduled only for a retryable outcome with attempts left, never
    /// sooner than the policy's delay, and for a 429 never sooner than its
    /// Retry-After (clamped) when the profile honours it.
    pub fn decide(
        self,
        owner: &str,
        retry: &profile::RetryPolicy,
        rng: &mut impl rand::Rng,
    ) -> AttemptRecord {
        let outcome = &self.exchange.outcome;
        let class = outcome.class();
        let next_attempt = (self.claim.attempt + 1) as u32;
        let (to, next_at) = if class == OutcomeClass::Delivered {
            (DeliveryState::Succeeded, None)
        } else if class.is_retryable() {
            match retry.delay(next_attempt, rng) {
                None => (DeliveryState::Failed, None),
                Some(mut delay) => {
                    if let Outcome::RateLimited {
                        retry_after: Some(ra),
                    } = outcome
                    {
                        if retry.honor_retry_after {
                            delay = delay.max((*ra).min(retry.retry_after_cap));
                        }
                    }
                    (
                        DeliveryState::RetryScheduled,
                        Some(self.finished_at + delay.as_millis() as i64),
                    )
                }
            }
        } else {
            (DeliveryState::Failed, None)
        };
        let disable_endpoint = (*outcome == Outcome::ClientError { status: 410 })
            .then(|| self.claim.endpoint_id.clone());
        AttemptRecord {
            delivery_id: self.claim.id,
            endpoint_id: self.claim.endpoint_id.clone(),
            owner: owner.to_string(),
            attempt: self.claim.attempt,
            to,
            next_attempt_at: next_at,
            outcome: class,
            request_headers: serde_json::to_string(&self.sent.headers).expect("headers serialize"),
            body_sha256: self.sent.body_sha256,
            response_status: self.exchange.status.map(i64::from),
            response_headers: self.exchange.status.map(|_| {
                serde_json::to_string(&self.exchange.response_headers).expect("headers serialize")
            }),
            response_body: self.exchange.status.map(|_| self.exchange.response_body),
            response_truncated: self.exchange.truncated,
            duration_ms: self.exchange.duration.as_millis() as i64,
            error: self.exchange.error,
            started_at: self.started_at,
            finished_at: self.finished_at,
            disable_endpoint,
        }
    }
}

/// Why an attempt could not be prepared.
enum Prepare {
    /// Ready to send.
    Ready(OutboundRequest, Sent, Profile),
    /// The endpoint was deleted or disabled after the claim.
    EndpointGone,
    /// The message cannot be rendered (a payload the profile cannot encode,
    /// a secret it cannot use): retrying will not help.
    Unrenderable(String, Profile),
}

/// The worker's shared parts.
struct Inner {
    store: Store,
    sender: Sender,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    cfg: WorkerConfig,
    owner: String,
    slots: Arc<Semaphore>,
    per_endpoint: Mutex<HashMap<String, usize>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    profiles: HashMap<String, Profile>,
    /// Finished attempts on their way to the recorders.
    records: mpsc::Sender<RecordJob>,
    /// Set when ingest left a delivery pending for want of room or a claim
    /// took all it asked for; cleared when a claim finds less. While set,
    /// ingest hands nothing over, so new deliveries do not overtake waiting
    /// ones.
    backlog: std::sync::atomic::AtomicBool,
}

/// One finished attempt waiting to be persisted, and who waits for it.
type RecordJob = (
    AttemptRecord,
    oneshot::Sender<Result<crate::store::Recorded, StoreError>>,
);

/// Most deliveries leased by one claim.
const CLAIM_MAX: usize = 256;

/// How long a freed slot may wait for others before the worker claims.
const CLAIM_LINGER: Duration = Duration::from_millis(2);

/// Most attempts persisted in one transaction.
const RECORD_BATCH: usize = 256;

/// How long a small batch of finished attempts waits for more.
const RECORD_LINGER: Duration = Duration::from_millis(5);

/// A token bucket for one rate-limited endpoint, on the injected clock.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    /// A full bucket: an endpoint may take one second's worth at once.
    fn full(rate: i64, now: i64) -> Bucket {
        let rate = rate.max(1) as f64;
        Bucket {
            rate,
            tokens: rate,
            at_ms: now,
        }
    }

    /// Adds the tokens earned since the last refill (capped at one second's
    /// worth) under the endpoint's current limit.
    fn refill(&mut self, rate: i64, now: i64) {
        self.rate = rate.max(1) as f64;
        if now > self.at_ms {
            let earned = (now - self.at_ms) as f64 * self.rate / 1000.0;
            self.tokens = (self.tokens + earned).min(self.rate);
            self.at_ms = now;
        }
        self.tokens = self.tokens.min(self.rate);
    }
}

/// Claims and delivers until shut down.
pub struct Worker {
    inner: Arc<Inner>,
    wake: Arc<Notify>,
    records: mpsc::Receiver<RecordJob>,
    handoff: Handoff,
    handed: mpsc::UnboundedReceiver<Vec<Handed>>,
}

/// A delivery claimed at ingest, with the room reserved for it.
type Handed = (Claimed, Slot);

/// Lets ingest in the same process give new deliveries straight to this
/// worker: ingest claims them in its own transaction
/// ([`Store::ingest_claiming`]) and hands them over in memory, so a fresh
/// delivery needs no claim transaction and does not wait for the worker to
/// be woken. Only what the worker has room for is taken (a global slot and
/// one of the endpoint's, reserved before the claim), so nothing queues in
/// memory. Endpoints with an open breaker or a rate limit are left to the
/// claim loop.
#[derive(Clone)]
pub struct Handoff {
    inner: Arc<Inner>,
    tx: mpsc::UnboundedSender<Vec<Handed>>,
}

/// Room the worker reserved for one delivery: given back when dropped,
/// unless handed over with its delivery.
pub struct Slot {
    inner: Arc<Inner>,
    endpoint: String,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Slot {
    fn into_permit(mut self) -> tokio::sync::OwnedSemaphorePermit {
        self.permit
            .take()
            .expect("a slot holds its permit until used")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.inner.done_with(&self.endpoint);
        }
    }
}

impl Handoff {
    /// The lease owner deliveries are claimed for.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// When a lease taken at `now` expires.
    pub fn lease_until(&self, now: i64) -> i64 {
        now + self.inner.cfg.lease.as_millis() as i64
    }

    /// Reserves room for one delivery to `endpoint`: a free slot, and the
    /// endpoint under its cap. None when the worker is full or stopped.
    pub fn reserve(&self, endpoint: &str) -> Option<Slot> {
        if self.tx.is_closed() || self.inner.backlog.load(Ordering::Acquire) {
            return None;
        }
        let slot = self.inner.reserve(endpoint);
        if slot.is_none() {
            self.inner.backlog.store(true, Ordering::Release);
        }
        slot
    }

    /// Gives claimed deliveries, each with the slot reserved for it, to the
    /// worker. When the worker has stopped meanwhile, releases them instead
    /// (in a task of its own), so they need not wait for their leases.
    pub fn deliver(&self, handed: Vec<(Claimed, Slot)>) {
        if handed.is_empty() {
            return;
        }
        if let Err(back) = self.tx.send(handed) {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.give_back(back.0).await });
        }
    }
}

impl Worker {
    /// A worker over `store`, sending with `sender`. `wake` is notified by
    /// ingest when new deliveries exist.
    pub fn new(
        store: Store,
        sender: Sender,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        cfg: WorkerConfig,
        wake: Arc<Notify>,
    ) -> Result<Worker, WorkerError> {
        let mut profiles = HashMap::new();
        let mut longest = Duration::ZERO;
        for name in profile::NAMES {
            let mut p = profile::by_name(name)?;
            if let Some(s) = &cfg.retry_schedule {
                p.retry = p.retry.with_override(s)?;
            }
            if let Some(d) = cfg.deadline {
                p.timeout = d;
            }
            longest = longest.max(p.timeout);
            profiles.insert(name.to_string(), p);
        }
        profile::by_name(&cfg.default_profile)?;
        if cfg.lease <= longest {
            return Err(WorkerError::LeaseTooShort {
                lease: cfg.lease,
                deadline: longest,
            });
        }
        let owner = format!("worker-{}", uuid::Uuid::now_v7().simple());
        let (records_tx, records) = mpsc::channel(cfg.max_in_flight.max(1) * 2);
        // Unbounded in type only: each delivery in it holds a slot.
        let (handoff_tx, handed) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            store,
            sender,
            clock,
            metrics,
            slots: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            per_endpoint: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            records: records_tx,
            backlog: std::sync::atomic::AtomicBool::new(false),
            owner,
            profiles,
            cfg,
        });
        Ok(Worker {
            records,
            handoff: Handoff {
                inner: inner.clone(),
                tx: handoff_tx,
            },
            handed,
            inner,
            wake,
        })
    }

    /// The handle ingest uses to give this worker new deliveries.
    pub fn handoff(&self) -> Handoff {
        self.handoff.clone()
    }

    /// This worker's lease owner name.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Runs until `shutdown` resolves, then stops claiming, waits up to the
    /// drain timeout for attempts in flight, and leaves any still running to
    /// their leases (they are retried after the lease expires).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let inner = self.inner;
        let mut handed = self.handed;
        // Only the receiver closes the channel: drop the worker's own sender.
        drop(self.handoff);
        let mut tasks: JoinSet<()> = JoinSet::new();
        // Group commit of outcomes: one writer is all SQLite can use; a few
        // overlap PostgreSQL's round trips.
        let recorders = match inner.store.kind() {
            crate::store::BackendKind::Sqlite => 1,
            crate::store::BackendKind::Postgres => 4,
        };
        let records = Arc::new(tokio::sync::Mutex::new(self.records));
        let recorders: Vec<_> = (0..recorders)
            .map(|_| tokio::spawn(record_loop(inner.clone(), records.clone())))
            .collect();
        let rescuer = tokio::spawn(rescue_loop(inner.clone()));
        let gauges = tokio::spawn(gauge_loop(inner.clone()));
        tokio::pin!(shutdown);
        // Whether a claim may find something: after a start, a wake, a poll,
        // or a claim that took all it asked for, or skipped endpoints; not
        // after a claim found too little, until ingest leaves deliveries
        // pending or the poll comes round (retries coming due).
        let mut look = true;
        let mut poll = tokio::time::interval(inner.cfg.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Reap finished attempts so the set does not grow.
            while tasks.try_join_next().is_some() {}
            let free = inner.slots.available_permits();
            let mut claimed = Vec::new();
            if free > 0 && look {
                (claimed, look) = claim_batch(&inner, free).await;
            }
            // A full claim suggests more is due: claim again at once if
            // enough slots are free to make the transaction worth it.
            let full = !claimed.is_empty() && claimed.len() >= free.min(CLAIM_MAX);
            for (reserved, permit) in claimed {
                spawn_attempt(&inner, &mut tasks, reserved, permit);
            }
            let batch = (inner.cfg.max_in_flight / 16).max(1);
            if full && inner.slots.available_permits() >= batch {
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                Some(batch) = handed.recv() => {
                    run_handed(&inner, &mut tasks, batch);
                    continue;
                }
                _ = self.wake.notified() => look = true,
                _ = poll.tick() => look = true,
                // A slot freed up: look again for work, after letting a few
                // more attempts finish (briefly), so that one claim
                // transaction serves many slots instead of one each.
                _ = tasks.join_next(), if !tasks.is_empty() => {
                    let linger = tokio::time::sleep(CLAIM_LINGER);
                    tokio::pin!(linger);
                    while inner.slots.available_permits() < batch && !tasks.is_empty() {
                        tokio::select! {
                            _ = &mut linger => break,
                            _ = tasks.join_next() => {}
                        }
                    }
                    look |= inner.backlog.load(Ordering::Acquire);
                }
            }
        }
        // No more handoffs: ingest sees the channel closed and leaves new
        // deliveries pending. Any handed over already are released.
        handed.close();
        while let Ok(batch) = handed.try_recv() {
            inner.give_back(batch).await;
        }
        rescuer.abort();
        gauges.abort();
        let drain = tokio::time::timeout(inner.cfg.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        });
        if drain.await.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "drain timeout: attempts still in flight are left to their leases"
            );
            tasks.abort_all();
        }
        // Every attempt that finished has its answer: nothing waits on the
        // recorders any more.
        for r in recorders {
            r.abort();
        }
    }
}

/// Starts one attempt as a task of `tasks`.
fn spawn_attempt(
    inner: &Arc<Inner>,
    tasks: &mut JoinSet<()>,
    reserved: Reserved,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    inner.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    tasks.spawn(run_attempt(inner.clone(), reserved, permit));
}

/// Runs one attempt, counted in flight by the caller; its slot is given
/// back when it ends.
async fn run_attempt(
    inner: Arc<Inner>,
    reserved: Reserved,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let endpoint = reserved.claim.endpoint_id.clone();
    attempt(&inner, reserved).await;
    inner.done_with(&endpoint);
    inner.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// Starts the attempts of deliveries claimed at ingest: one task per
/// batch loads what they need (off the claim loop, which must not wait on
/// those reads) and then runs them side by side.
fn run_handed(inner: &Arc<Inner>, tasks: &mut JoinSet<()>, batch: Vec<Handed>) {
    let now = inner.clock.now_ms();
    let mut out: Vec<(Reserved, tokio::sync::OwnedSemaphorePermit)> = batch
        .into_iter()
        .map(|(claim, slot)| {
            let reserved = Reserved {
                claim,
                started_at: now,
                prefetched: None,
            };
            (reserved, slot.into_permit())
        })
        .collect();
    inner
        .metrics
        .in_flight
        .fetch_add(out.len() as i64, Ordering::Relaxed);
    inner
        .metrics
        .claimed_at_ingest
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    let inner = inner.clone();
    tasks.spawn(async move {
        prefetch(&inner, &mut out, now).await;
        let attempts = out
            .into_iter()
            .map(|(reserved, permit)| run_attempt(inner.clone(), reserved, permit));
        futures::future::join_all(attempts).await;
    });
}

impl Inner {
    /// Reserves room for one attempt to `endpoint`: a free slot, and the
    /// endpoint under its cap. None (and nothing taken) when either is full.
    fn reserve(self: &Arc<Self>, endpoint: &str) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let mut map = self.per_endpoint.lock().expect("per-endpoint map");
        let n = map.entry(endpoint.to_string()).or_default();
        if *n >= self.cfg.per_endpoint {
            return None;
        }
        *n += 1;
        Some(Slot {
            inner: self.clone(),
            endpoint: endpoint.to_string(),
            permit: Some(permit),
        })
    }

    /// Releases claims this worker holds but will not attempt (their room is
    /// given back as the slots drop), so they need not wait for the lease.
    async fn give_back(&self, claims: Vec<(Claimed, Slot)>) {
        for (claim, slot) in claims {
            drop(slot);
            self.release(&claim).await;
        }
    }

    /// Releases one claim; on failure its lease expires instead.
    async fn release(&self, claim: &Claimed) {
        if let Err(e) = self
            .store
            .release(claim, &self.owner, self.clock.now_ms())
            .await
        {
            tracing::warn!(error = %e, delivery = %claim.id, "release failed; the lease will expire");
        }
    }

    fn done_with(&self, endpoint: &str) {
        let mut map = self.per_endpoint.lock().expect("per-endpoint map");
        if let Some(n) = map.get_mut(endpoint) {
            *n -= 1;
            if *n == 0 {
                map.remove(endpoint);
            }
        }
    }
}

/// Claims up to `free` deliveries, skipping saturated endpoints, taking
/// rate-limited ones only up to their tokens, and probing open breakers;
/// hands back any that would push an endpoint over its cap. Also says
/// whether more may be due now: the claim took all it asked for, or left
/// endpoints out.
async fn claim_batch(
    inner: &Arc<Inner>,
    free: usize,
) -> (Vec<(Reserved, tokio::sync::OwnedSemaphorePermit)>, bool) {
    // Read every claim so a limit set a moment ago already holds.
    let limits = match inner.store.rate_limits().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "reading rate limits failed");
            return (Vec::new(), true);
        }
    };
    let now = inner.clock.now_ms();
    let (skip, quotas) = {
        let map = inner.per_endpoint.lock().expect("per-endpoint map");
        let mut buckets = inner.buckets.lock().expect("buckets");
        buckets.retain(|e, _| limits.iter().any(|(l, _)| l == e));
        let mut skip: Vec<String> = map
            .iter()
            .filter(|(_, n)| **n >= inner.cfg.per_endpoint)
            .map(|(e, _)| e.clone())
            .collect();
        let mut quotas = Vec::new();
        for (endpoint, rate) in &limits {
            let bucket = buckets
                .entry(endpoint.clone())
                .or_insert_with(|| Bucket::full(*rate, now));
            bucket.refill(*rate, now);
            let busy = map.get(endpoint).copied().unwrap_or(0);
            let room = inner.cfg.per_endpoint.saturating_sub(busy);
            let n = (bucket.tokens.floor().max(0.0) as usize).min(room);
            if !skip.contains(endpoint) {
                skip.push(endpoint.clone());
            }
            if n > 0 {
                quotas.push((endpoint.clone(), n as i64));
            }
        }
        (skip, quotas)
    };
    let lease_until = now + inner.cfg.lease.as_millis() as i64;
    let limit = free.min(CLAIM_MAX) as i64;
    let spec = ClaimSpec {
        owner: &inner.owner,
        now,
        lease_until,
        limit,
        skip_endpoints: &skip,
        quotas: &quotas,
        rate_limits_by_quota: true,
        probe_interval_ms: inner
            .cfg
            .breaker
            .enabled()
            .then(|| inner.cfg.breaker.probe_interval.as_millis() as i64),
    };
    let claims = match inner.store.claim_with(&spec).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "claim failed");
            return (Vec::new(), true);
        }
    };
    let full = claims.len() as i64 >= limit;
    let more = full || !skip.is_empty();
    // A full claim may have left due deliveries behind (after a restart,
    // say): ingest hands nothing over until a claim finds less than it
    // asked for, so that new deliveries do not overtake them.
    inner.backlog.store(full, Ordering::Release);
    if !limits.is_empty() {
        let mut buckets = inner.buckets.lock().expect("buckets");
        for claim in &claims {
            if let Some(b) = buckets.get_mut(&claim.endpoint_id) {
                b.tokens -= 1.0;
            }
        }
    }
    let mut out = Vec::with_capacity(claims.len());
    for claim in claims {
        match inner.reserve(&claim.endpoint_id) {
            Some(slot) => out.push((
                Reserved {
                    claim,
                    started_at: now,
                    prefetched: None,
                },
                slot.into_permit(),
            )),
            None => inner.release(&claim).await,
        }
    }
    inner
        .metrics
        .claimed_by_worker
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    prefetch(inner, &mut out, now).await;
    (out, more)
}

/// Loads the endpoints, events and secrets of a whole claim in three
/// queries instead of three per attempt. On failure each attempt loads its
/// own.
async fn prefetch(
    inner: &Inner,
    out: &mut [(Reserved, tokio::sync::OwnedSemaphorePermit)],
    now: i64,
) {
    if out.is_empty() {
        return;
    }
    let mut endpoint_ids: Vec<String> = out
        .iter()
        .map(|(r, _)| r.claim.endpoint_id.clone())
        .collect();
    endpoint_ids.sort();
    endpoint_ids.dedup();
    let mut event_ids: Vec<String> = out.iter().map(|(r, _)| r.claim.event_id.clone()).collect();
    event_ids.sort();
    event_ids.dedup();
    let loaded = async {
        let endpoints = inner.store.endpoints_by_ids(&endpoint_ids).await?;
        let events = inner.store.events_by_ids(&event_ids).await?;
        let secrets = inner.store.signing_secrets_for(&endpoint_ids, now).await?;
        Ok::<_, StoreError>((endpoints, events, secrets))
    };
    let (endpoints, events, secrets) = match loaded.await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "prefetch failed; attempts load their own");
            return;
        }
    };
    let endpoints: HashMap<String, Arc<EndpointRow>> = endpoints
        .into_iter()
        .map(|e| (e.id.clone(), Arc::new(e)))
        .collect();
    let events: HashMap<String, Arc<EventRow>> = events
        .into_iter()
        .map(|e| (e.id.clone(), Arc::new(e)))
        .collect();
    let mut by_endpoint: HashMap<String, Vec<String>> = HashMap::new();
    for (endpoint, secret) in secrets {
        by_endpoint.entry(endpoint).or_default().push(secret);
    }
    let by_endpoint: HashMap<String, Arc<Vec<String>>> = by_endpoint
        .into_iter()
        .map(|(k, v)| (k, Arc::new(v)))
        .collect();
    for (reserved, _) in out.iter_mut() {
        let c = &reserved.claim;
        reserved.prefetched = Some(Prefetched {
            endpoint: endpoints.get(&c.endpoint_id).cloned(),
            event: events.get(&c.event_id).cloned(),
            secrets: by_endpoint.get(&c.endpoint_id).cloned().unwrap_or_default(),
        });
    }
}

/// Runs one attempt from reservation to persisted outcome.
#[tracing::instrument(skip_all, fields(delivery = %reserved.claim.id, event = %reserved.claim.event_id, endpoint = %reserved.claim.endpoint_id, attempt = reserved.claim.attempt))]
async fn attempt(inner: &Inner, reserved: Reserved) {
    let (request, sent, profile) = match prepare(inner, &reserved).await {
        Ok(Prepare::Ready(req, sent, profile)) => (req, sent, profile),
        Ok(Prepare::EndpointGone) => {
            if let Err(e) = inner
                .store
                .cancel_claimed(&reserved.claim, &inner.owner, inner.clock.now_ms())
                .await
            {
                tracing::warn!(error = %e, "could not cancel; the lease will expire");
            }
            return;
        }
        Ok(Prepare::Unrenderable(why, profile)) => {
            let exchange = Exchange {
                outcome: Outcome::Internal,
                status: None,
                response_headers: Vec::new(),
                response_body: Vec::new(),
                truncated: false,
                duration: Duration::ZERO,
                error: Some(why),
            };
            let sent = Sent {
                headers: Vec::new(),
                body_sha256: String::new(),
            };
            let completed = reserved.finish(sent, exchange, inner.clock.now_ms());
            let mut record =
                completed.decide(&inner.owner, &profile.retry, &mut rand::thread_rng());
            // Rendering fails the same way every time: no retry.
            record.to = DeliveryState::Failed;
            record.next_attempt_at = None;
            persist(inner, record).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not prepare the attempt; the lease will expire");
            return;
        }
    };
    let exchange = inner.sender.send(request).await;
    let (class, took) = (exchange.outcome.class(), exchange.duration);
    let completed = reserved.finish(sent, exchange, inner.clock.now_ms());
    let record = completed.decide(&inner.owner, &profile.retry, &mut rand::thread_rng());
    persist(inner, record).await;
    // Metrics come after the outcome is durable.
    inner.metrics.attempt_finished(class, took);
}

/// Hands a finished attempt to the recorders and waits until it is durable
/// (or has failed to be: then the lease expires and it is retried).
async fn persist(inner: &Inner, record: AttemptRecord) {
    let endpoint = record.endpoint_id.clone();
    let (reply, answer) = oneshot::channel();
    if inner.records.send((record, reply)).await.is_err() {
        tracing::error!(
            "the recorders stopped; the lease will expire and the attempt will be retried"
        );
        return;
    }
    match answer.await {
        Ok(Ok(r)) => {
            if !r.moved {
                tracing::warn!(
                    "lease lost before the outcome was recorded; the delivery was rescued"
                );
            }
            match r.breaker {
                Change::None => {}
                Change::Opened => tracing::warn!(%endpoint, "circuit breaker opened"),
                Change::Closed => tracing::info!(%endpoint, "circuit breaker closed"),
                Change::Disable => tracing::warn!(
                    %endpoint,
                    "circuit breaker disabled the endpoint after continuous failure"
                ),
            }
            inner.metrics.breaker_change(r.breaker);
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not record the attempt; the lease will expire and it will be retried");
        }
        Err(_) => tracing::error!("the recorder dropped the attempt; the lease will expire"),
    }
}

/// Persists finished attempts in batches, one transaction each.
async fn record_loop(inner: Arc<Inner>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<RecordJob>>>) {
    let mut jobs: Vec<RecordJob> = Vec::with_capacity(RECORD_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, RECORD_BATCH).await == 0 {
                return;
            }
            // A small batch waits a moment for company: every record
            // transaction holds SQLite's one writer, which claims and
            // ingest need too, and its fixed cost (commit, fsync) is the
            // same for one record or a hundred.
            if jobs.len() < RECORD_BATCH / 4 {
                let room = RECORD_BATCH - jobs.len();
                // recv_many is cancel safe: a timeout loses nothing.
                let _ = tokio::time::timeout(RECORD_LINGER, rx.recv_many(&mut jobs, room)).await;
            }
        }
        let (records, replies): (Vec<AttemptRecord>, Vec<_>) = jobs.drain(..).unzip();
        match record_with_retries(&inner, &records).await {
            Ok(results) => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            // A batch that fails for good is retried one record at a time,
            // so one bad record cannot sink the others.
            Err(_) if records.len() > 1 => {
                for (rec, reply) in records.iter().zip(replies) {
                    let r = record_with_retries(&inner, std::slice::from_ref(rec))
                        .await
                        .map(|mut v| v.remove(0));
                    let _ = reply.send(r);
                }
            }
            // A batch of one: its waiter gets the error itself.
            Err(e) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

/// The exchanges happened; losing their records would hide them, so a
/// transient store failure is retried a few times.
async fn record_with_retries(
    inner: &Inner,
    records: &[AttemptRecord],
) -> Result<Vec<crate::store::Recorded>, StoreError> {
    let mut attempt = 0;
    loop {
        match inner
            .store
            .record_attempts(records, &inner.cfg.breaker)
            .await
        {
            Err(e) if e.is_retryable() && attempt < 4 => {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Loads what the attempt needs and renders the exact request.
async fn prepare(inner: &Inner, reserved: &Reserved) -> Result<Prepare, StoreError> {
    let claim = &reserved.claim;
    let loaded = match &reserved.prefetched {
        Some(p) => p.clone(),
        None => {
            let endpoint = inner.store.get_endpoint(&claim.endpoint_id).await?;
            let event = inner.store.get_event(&claim.event_id).await?;
            let secrets = inner
                .store
                .signing_secrets(&claim.endpoint_id, inner.clock.now_ms())
                .await?;
            Prefetched {
                endpoint: endpoint.map(Arc::new),
                event: event.map(Arc::new),
                secrets: Arc::new(secrets),
            }
        }
    };
    let Some(endpoint) = loaded.endpoint else {
        return Ok(Prepare::EndpointGone);
    };
    if endpoint.disabled {
        return Ok(Prepare::EndpointGone);
    }
    let Some(event) = loaded.event else {
        return Err(StoreError::Corrupt(format!(
            "delivery {} has no event {}",
            claim.id, claim.event_id
        )));
    };
    let secrets = loaded.secrets;
    let name = endpoint
        .profile
        .as_deref()
        .unwrap_or(&inner.cfg.default_profile);
    let profile = inner
        .profiles
        .get(name)
        .or_else(|| inner.profiles.get(&inner.cfg.default_profile))
        .cloned()
        .expect("default profile validated at start");
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let msg = Message {
        event_id: &event.id,
        delivery_id: Some(&claim.id),
        event_type: &event.event_type,
        timestamp: inner.clock.now_ms() / 1000,
        payload: &event.payload_raw,
    };
    let rendered = match profile.render(&secret_refs, &msg) {
        Ok(r) => r,
        Err(e) => return Ok(Prepare::Unrenderable(e.to_string(), profile)),
    };
    let headers = profile.wire_headers(&rendered);
    let sent = Sent {
        headers: headers.clone(),
        body_sha256: hex::encode(Sha256::digest(&rendered.body)),
    };
    let request = OutboundRequest {
        url: endpoint.url.clone(),
        headers,
        body: rendered.body.into(),
        deadline: profile.timeout,
        follow_redirects: profile.follow_redirects,
        title_case_headers: profile.header_case != HeaderCase::Lower,
    };
    Ok(Prepare::Ready(request, sent, profile))
}

/// Samples the gauges that live in the database: the due queue and the
/// endpoints by breaker state.
async fn gauge_loop(inner: Arc<Inner>) {
    loop {
        if let Ok(n) = inner.store.due_count(inner.clock.now_ms()).await {
            inner.metrics.due_queue.store(n, Ordering::Relaxed);
        }
        if let Ok(c) = inner.store.breaker_counts().await {
            inner.metrics.set_breakers(c);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reschedules deliveries whose lease expired (their worker died).
async fn rescue_loop(inner: Arc<Inner>) {
    let every = (inner.cfg.lease / 4).max(Duration::from_millis(100));
    loop {
        match inner.store.rescue_expired(inner.clock.now_ms()).await {
            Ok(n) if n > 0 => {
                inner
                    .metrics
                    .lease_rescues
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(rescued = n, "rescued deliveries with expired leases");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rescue failed"),
        }
        tokio::time::sleep(every).await;
    }
}
