//! Prometheus metrics, rendered in the text exposition format on /metrics.
//!
//! A handful of counters and histograms kept in atomics: the engine needs no
//! registry machinery, and a scrape costs one pass over a few numbers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The engine's metrics.
#[derive(Default)]
pub struct Metrics {
    events_ingested: AtomicU64,
    deliveries_created: AtomicU64,
    ingest_batches: AtomicU64,
    ingest_batch_events: AtomicU64,
    ingest_batch_seconds: Histogram,
    http_responses: [AtomicU64; 5],
    http_seconds: Histogram,
    /// Deliveries moved back by the lease rescuer.
    pub lease_rescues: AtomicU64,
    /// Deliveries this process's worker took: claimed by ingest and handed
    /// over in memory, or claimed by the worker's own claim loop.
    pub claimed_at_ingest: AtomicU64,
    pub claimed_by_worker: AtomicU64,
    attempts_by_outcome: [AtomicU64; crate::state::OutcomeClass::ALL.len()],
    attempt_seconds: Histogram,
    /// Attempts this process has in flight now.
    pub in_flight: AtomicI64,
    /// Deliveries due and waiting for a worker (sampled every second).
    pub due_queue: AtomicI64,
    /// Endpoints by breaker state: closed, open, disabled by the breaker
    /// (sampled every second).
    breakers: [AtomicI64; 3],
    /// Breaker changes this process recorded: opened, closed, disabled.
    breaker_changes: [AtomicU64; 3],
}

impl Metrics {
    /// One ingested event that created `deliveries` deliveries.
    pub fn event_ingested(&self, deliveries: usize) {
        self.events_ingested.fetch_add(1, Ordering::Relaxed);
        self.deliveries_created
            .fetch_add(deliveries as u64, Ordering::Relaxed);
    }

    /// One ingest transaction of `events` events.
    pub fn ingest_batch(&self, events: usize, took: Duration) {
        self.ingest_batches.fetch_add(1, Ordering::Relaxed);
        self.ingest_batch_events
            .fetch_add(events as u64, Ordering::Relaxed);
        self.ingest_batch_seconds.observe(took);
    }

    /// One delivery attempt finished with `class` after `took`.
    pub fn attempt_finished(&self, class: crate::state::OutcomeClass, took: Duration) {
        let i = crate::state::OutcomeClass::ALL
            .iter()
            .position(|c| *c == class)
            .expect("every class is listed");
        self.attempts_by_outcome[i].fetch_add(1, Ordering::Relaxed);
        self.attempt_seconds.observe(took);
    }

    /// Sets the sampled breaker gauges.
    pub fn set_breakers(&self, c: crate::store::BreakerCounts) {
        self.breakers[0].store(c.closed, Ordering::Relaxed);
        self.breakers[1].store(c.open, Ordering::Relaxed);
        self.breakers[2].store(c.disabled_by_breaker, Ordering::Relaxed);
    }

    /// Counts a breaker change this process recorded.
    pub fn breaker_change(&self, c: crate::breaker::Change) {
        let i = match c {
            crate::breaker::Change::None => return,
            crate::breaker::Change::Opened => 0,
            crate::breaker::Change::Closed => 1,
            crate::breaker::Change::Disable => 2,
        };
        self.breaker_changes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One API response with `status`, taking `took`.
    pub fn http_response(&self, status: u16, took: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.http_responses[class].fetch_add(1, Ordering::Relaxed);
        self.http_seconds.observe(took);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "hookshift_events_ingested_total",
            "Events stored by POST /v1/events.",
            load(&self.events_ingested),
        );
        counter(
            &mut out,
            "hookshift_deliveries_created_total",
            "Deliveries created by ingest.",
            load(&self.deliveries_created),
        );
        counter(
            &mut out,
            "hookshift_ingest_batches_total",
            "Ingest transactions committed or failed.",
            load(&self.ingest_batches),
        );
        counter(
            &mut out,
            "hookshift_ingest_batch_events_total",
            "Events carried by ingest transactions.",
            load(&self.ingest_batch_events),
        );
        counter(
            &mut out,
            "hookshift_lease_rescues_total",
            "In-flight deliveries whose lease expired and were rescheduled.",
            load(&self.lease_rescues),
        );
        self.ingest_batch_seconds.render(
            &mut out,
            "hookshift_ingest_batch_seconds",
            "Time to commit one ingest transaction.",
        );
        let _ = writeln!(
            out,
            "# HELP hookshift_http_responses_total API responses by status class.\n\
             # TYPE hookshift_http_responses_total counter"
        );
        for (i, c) in self.http_responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "hookshift_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                load(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hookshift_attempts_total Delivery attempts by outcome class.\n\
             # TYPE hookshift_attempts_total counter"
        );
        for (i, c) in crate::state::OutcomeClass::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "hookshift_attempts_total{{outcome=\"{c}\"}} {}",
                load(&self.attempts_by_outcome[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP hookshift_deliveries_claimed_total Deliveries this process's worker took, by who claimed them: \
             ingest (in its own transaction, handed over in memory) or the worker's claim loop.\n\
             # TYPE hookshift_deliveries_claimed_total counter\n\
             hookshift_deliveries_claimed_total{{by=\"ingest\"}} {}\n\
             hookshift_deliveries_claimed_total{{by=\"worker\"}} {}",
            load(&self.claimed_at_ingest),
            load(&self.claimed_by_worker)
        );
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "hookshift_attempts_in_flight",
            "Delivery attempts this process has in flight.",
            self.in_flight.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "hookshift_due_deliveries",
            "Deliveries due and waiting for a worker (sampled every second).",
            self.due_queue.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP hookshift_endpoint_breakers Endpoints by circuit breaker state (sampled every second).\n\
             # TYPE hookshift_endpoint_breakers gauge"
        );
        for (i, state) in ["closed", "open", "disabled"].iter().enumerate() {
            let _ = writeln!(
                out,
                "hookshift_endpoint_breakers{{state=\"{state}\"}} {}",
                self.breakers[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hookshift_breaker_changes_total Circuit breaker changes recorded by this process.\n\
             # TYPE hookshift_breaker_changes_total counter"
        );
        for (i, change) in ["opened", "closed", "disabled"].iter().enumerate() {
            let _ = writeln!(
                out,
                "hookshift_breaker_changes_total{{change=\"{change}\"}} {}",
                load(&self.breaker_changes[i])
            );
        }
        self.attempt_seconds.render(
            &mut out,
            "hookshift_attempt_seconds",
            "Time from sending a delivery to its classified outcome.",
        );
        self.http_seconds.render(
            &mut out,
            "hookshift_http_request_seconds",
            "API request latency.",
        );
        out
    }
}
