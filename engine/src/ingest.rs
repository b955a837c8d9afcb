//! Group commit for event ingest.
//!
//! Each `POST /v1/events` hands its prepared event to an [`Ingestor`] and
//! waits. Writer tasks take whatever has queued up (up to `max_batch`), store
//! it in one transaction, and answer every waiter only after the commit. One
//! fsync then covers many events, which is how ingest reaches thousands of
//! events per second while still answering 202 only once the event is
//! durable. The queue is bounded, so a slow database pushes back on the HTTP
//! handlers instead of growing memory.

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::store::{ClaimAtIngest, Claimed, IngestOutcome, NewEvent, Store, StoreError};
use crate::worker::{Handoff, Slot};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<IngestOutcome, Arc<StoreError>>>,
}

/// Why an ingest did not complete.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store failed; the event was not stored.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The engine is shutting down.
    #[error("ingest is shutting down")]
    Closed,
}

/// Handle to the ingest writers; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Starts `writers` writer tasks on `store`. They stop when every
    /// `Ingestor` clone is dropped and the queue has drained.
    pub fn start(
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        writers: usize,
        max_batch: usize,
        wake: Arc<tokio::sync::Notify>,
        handoff: Option<Handoff>,
    ) -> Ingestor {
        let (tx, rx) = mpsc::channel::<Job>(max_batch * writers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            let rx = rx.clone();
            let store = store.clone();
            let clock = clock.clone();
            let metrics = metrics.clone();
            let wake = wake.clone();
            let handoff = handoff.clone();
            tokio::spawn(async move {
                let mut jobs = Vec::with_capacity(max_batch);
                loop {
                    {
                        let mut rx = rx.lock().await;
                        if rx.recv_many(&mut jobs, max_batch).await == 0 {
                            return;
                        }
                    }
                    let left_pending = write_batch(
                        &store,
                        clock.now_ms(),
                        &metrics,
                        handoff.as_ref(),
                        &mut jobs,
                    )
                    .await;
                    // New deliveries are due now: wake the worker for those
                    // it was not handed.
                    if left_pending {
                        wake.notify_one();
                    }
                }
            });
        }
        Ingestor { tx }
    }

    /// Stores one event (and its deliveries) durably.
    pub async fn ingest(&self, event: NewEvent) -> Result<IngestOutcome, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { event, reply })
            .await
            .map_err(|_| IngestError::Closed)?;
        match rx.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(IngestError::Store(e)),
            Err(_) => Err(IngestError::Closed),
        }
    }
}

async fn write_batch(
    store: &Store,
    now: i64,
    metrics: &Metrics,
    handoff: Option<&Handoff>,
    jobs: &mut Vec<Job>,
) -> bool {
    let events: Vec<NewEvent> = jobs.iter().map(|j| j.event.clone()).collect();
    let started = std::time::Instant::now();
    let mut slots = Vec::new();
    let mut result = store_batch(store, &events, now, handoff, &mut slots).await;
    // One retry for a transient failure (a lock timeout, a dropped
    // connection): the transaction rolled back, so nothing is doubled.
    if matches!(&result, Err(e) if e.is_retryable()) {
        slots.clear();
        result = store_batch(store, &events, now, handoff, &mut slots).await;
    }
    // Whether the batch made deliveries the worker was not handed (or
    // failed, when the worker may as well look).
    let mut left_pending = true;
    let result = result.map(|(outcomes, claimed)| {
        let created: usize = outcomes
            .iter()
            .map(|o| match o {
                IngestOutcome::Inserted(d) => d.len(),
                IngestOutcome::Exists => 0,
            })
            .sum();
        left_pending = created > claimed.len();
        if let Some(handoff) = handoff {
            // `admit` reserved one slot per claimed delivery, in order.
            debug_assert_eq!(claimed.len(), slots.len());
            handoff.deliver(claimed.into_iter().zip(slots.drain(..)).collect());
        }
        outcomes
    });
    metrics.ingest_batch(events.len(), started.elapsed());
    match result {
        Ok(outcomes) => {
            for (job, outcome) in jobs.drain(..).zip(outcomes) {
                if let IngestOutcome::Inserted(d) = &outcome {
                    metrics.event_ingested(d.len());
                }
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, events = events.len(), "ingest batch failed");
            let e = Arc::new(e);
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
    left_pending
}

/// Stores `events`; with a worker in this process, claims for it the new
/// deliveries it has room for, pushing the room reserved onto `slots`.
async fn store_batch(
    store: &Store,
    events: &[NewEvent],
    now: i64,
    handoff: Option<&Handoff>,
    slots: &mut Vec<Slot>,
) -> Result<(Vec<IngestOutcome>, Vec<Claimed>), StoreError> {
    let Some(handoff) = handoff else {
        return store.ingest_claiming(events, now, None).await;
    };
    let mut admit = |endpoint: &str| match handoff.reserve(endpoint) {
        Some(slot) => {
            slots.push(slot);
            true
        }
        None => false,
    };
    let claim = ClaimAtIngest {
        owner: handoff.owner(),
        lease_until: handoff.lease_until(now),
        admit: &mut admit,
    };
    store.ingest_claiming(events, now, Some(claim)).await
}
