//! The proxy's counters and the added-latency histogram, rendered in the
//! Prometheus text format on the admin listener's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (microseconds) of the added-latency histogram's buckets.
const LATENCY_BOUNDS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000,
];

/// Every counter the proxy keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Ingress requests whose mirror leg got a response from the shadow.
    pub mirrored: AtomicU64,
    /// Ingress requests not mirrored because the queue was full.
    pub mirror_dropped: AtomicU64,
    /// Mirror legs that failed (unreachable shadow, timeout).
    pub shadow_errors: AtomicU64,
    /// Ingress requests forwarded to the primary.
    pub ingress_requests: AtomicU64,
    /// Ingress rows lost because the capture writer's queue was full.
    pub capture_dropped: AtomicU64,
    /// Shadow egress attempts that had to wait for the primary's exchange.
    pub pairing_waits: AtomicU64,
    /// Shadow egress attempts whose primary exchange never came in time.
    pub pairing_timeouts: AtomicU64,
    added_latency: Histogram,
    egress: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Metrics {
    /// Counts one unit of `c`.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Records the latency the ingress added on top of the primary's own.
    pub fn observe_added_latency(&self, us: u64) {
        let h = &self.added_latency;
        if let Some(i) = LATENCY_BOUNDS_US.iter().position(|b| us <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Counts one recorded egress exchange (after it is durable).
    pub fn egress_exchange(
        &self,
        sender: &'static str,
        role: &'static str,
        fault: Option<&'static str>,
    ) {
        let mut m = self.egress.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((sender, role, fault.unwrap_or("none")))
            .or_default() += 1;
    }

    /// Recorded egress exchanges for one (sender, role, fault).
    pub fn egress_count(&self, sender: &str, role: &str, fault: &str) -> u64 {
        let m = self.egress.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .filter(|((s, r, f), _)| *s == sender && *r == role && *f == fault)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 7] = [
            (
                "hookshift_proxy_ingress_requests_total",
                "Ingress requests forwarded to the API primary.",
                &self.ingress_requests,
            ),
            (
                "hookshift_proxy_mirrored_total",
                "Ingress requests the shadow answered.",
                &self.mirrored,
            ),
            (
                "hookshift_proxy_mirror_dropped_total",
                "Ingress requests not mirrored: queue full.",
                &self.mirror_dropped,
            ),
            (
                "hookshift_proxy_shadow_errors_total",
                "Mirror legs that failed.",
                &self.shadow_errors,
            ),
            (
                "hookshift_proxy_capture_dropped_total",
                "Ingress rows lost: capture queue full.",
                &self.capture_dropped,
            ),
            (
                "hookshift_proxy_pairing_waits_total",
                "Shadow egress attempts that waited for the primary.",
                &self.pairing_waits,
            ),
            (
                "hookshift_proxy_pairing_timeouts_total",
                "Shadow egress attempts answered with the default.",
                &self.pairing_timeouts,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                Self::get(c)
            );
        }
        let name = "hookshift_proxy_added_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency the ingress added to the primary's.\n# TYPE {name} histogram"
        );
        let h = &self.added_latency;
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        let name = "hookshift_proxy_egress_exchanges_total";
        let _ = writeln!(
            out,
            "# HELP {name} Recorded egress exchanges.\n# TYPE {name} counter"
        );
        let m = self.egress.lock().unwrap_or_else(|p| p.into_inner());
        for ((sender, role, fault), n) in m.iter() {
            let _ = writeln!(
                out,
                "{name}{{sender=\"{sender}\",role=\"{role}\",fault=\"{fault}\"}} {n}"
            );
        }
        out
    }
}
