//! The endpoint circuit breaker, declared once as a pure function.
//!
//! A breaker belongs to an endpoint and lives in its database row (columns
//! `breaker_state`, `consecutive_failures`, `failing_since`,
//! `breaker_opened_at`, `breaker_probe_at`), so it survives restarts and is
//! shared by every engine process on one database. The store applies
//! [`next`] inside the transaction that records an attempt, under a lock on
//! the endpoint row; the claim reads the state to skip open endpoints except
//! for one probe per probe interval.
//!
//! ```text
//!   closed ── N consecutive failures ──▶ open ── a probe succeeds ──▶ closed
//!                                          │
//!                                          └── failing for `disable_after` ──▶ disabled
//! ```
//!
//! What counts: a retryable failure on the receiver's side (5xx, timeout,
//! connect error, reset, broken body) is a failure. A delivered attempt, or
//! any deliberate answer that a retry cannot change (4xx other than 408/429,
//! a 3xx not followed), shows the endpoint is up and closes the breaker. A
//! 429 is the receiver pushing back on purpose (Retry-After handles it), and
//! our own faults (internal, invalid URL, blocked destination) say nothing
//! about the receiver: both leave the breaker as it is.

use crate::state::OutcomeClass;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The stored state of an endpoint's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Deliveries flow normally.
    Closed,
    /// Deliveries wait; one probe attempt is let through per probe interval.
    Open,
}

impl BreakerState {
    /// The stored (and API) name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BreakerState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "closed" => Ok(BreakerState::Closed),
            "open" => Ok(BreakerState::Open),
            other => Err(format!(
                "unknown breaker state `{other}` (expected closed or open)"
            )),
        }
    }
}

/// When the breaker opens, probes and gives up. Configured under
/// `[worker.breaker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker; 0 turns the breaker off.
    pub failures: u32,
    /// How often an open breaker lets one probe attempt through.
    pub probe_interval: Duration,
    /// Continuous failure (from the first failure of the run) after which
    /// the endpoint is disabled; None never disables.
    pub disable_after: Option<Duration>,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures: 5,
            probe_interval: Duration::from_secs(30),
            disable_after: Some(Duration::from_secs(3600)),
        }
    }
}

impl BreakerPolicy {
    /// Whether the breaker is on at all.
    pub fn enabled(&self) -> bool {
        self.failures > 0
    }
}

/// What an outcome says about the receiver's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The receiver is up and answering deliberately.
    Healthy,
    /// The receiver failed in a way a retry may fix.
    Failure,
    /// Says nothing about the receiver.
    Neutral,
}

impl Signal {
    /// Classifies an attempt's outcome (see the module documentation).
    pub fn of(class: OutcomeClass) -> Signal {
        match class {
            OutcomeClass::Delivered | OutcomeClass::ClientError | OutcomeClass::Redirect => {
                Signal::Healthy
            }
            OutcomeClass::ServerError
            | OutcomeClass::Timeout
            | OutcomeClass::ConnectError
            | OutcomeClass::Reset
            | OutcomeClass::BodyRead => Signal::Failure,
            OutcomeClass::RateLimited
            | OutcomeClass::Internal
            | OutcomeClass::InvalidUrl
            | OutcomeClass::BlockedDestination => Signal::Neutral,
        }
    }
}

/// An endpoint's breaker as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub state: BreakerState,
    pub consecutive_failures: i64,
    /// When the current run of failures began (unix ms).
    pub failing_since: Option<i64>,
    /// When the breaker last opened (unix ms).
    pub opened_at: Option<i64>,
    /// When an open breaker next lets a probe through (unix ms).
    pub probe_at: Option<i64>,
}

impl Breaker {
    /// A closed breaker with no failures.
    pub const CLOSED: Breaker = Breaker {
        state: BreakerState::Closed,
        consecutive_failures: 0,
        failing_since: None,
        opened_at: None,
        probe_at: None,
    };
}

/// What a recorded outcome did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing worth recording.
    None,
    /// Closed → open.
    Opened,
    /// Open → closed.
    Closed,
    /// Failing for too long: the endpoint is to be disabled.
    Disable,
}

/// The breaker after an attempt that began at `started_at` finished at `now`
/// with `signal`, and what changed. The one declaration of the breaker's
/// rules.
pub fn next(
    b: Breaker,
    policy: &BreakerPolicy,
    signal: Signal,
    started_at: i64,
    now: i64,
) -> (Breaker, Change) {
    if !policy.enabled() {
        return (b, Change::None);
    }
    match signal {
        Signal::Neutral => (b, Change::None),
        Signal::Healthy => {
            let change = if b.state == BreakerState::Open {
                Change::Closed
            } else {
                Change::None
            };
            (Breaker::CLOSED, change)
        }
        Signal::Failure => {
            let failures = b.consecutive_failures + 1;
            let failing_since = b.failing_since.unwrap_or(started_at).min(started_at);
            let probe_ms = policy.probe_interval.as_millis() as i64;
            let mut out = Breaker {
                consecutive_failures: failures,
                failing_since: Some(failing_since),
                ..b
            };
            let mut change = Change::None;
            if failures >= i64::from(policy.failures) {
                if b.state == BreakerState::Closed {
                    out.state = BreakerState::Open;
                    out.opened_at = Some(now);
                    change = Change::Opened;
                }
                // Any failure while open pushes the next probe out, so an
                // endpoint sees at most one attempt per probe interval.
                out.probe_at = Some(now + probe_ms);
                if let Some(span) = policy.disable_after {
                    if now - failing_since >= span.as_millis() as i64 {
                        change = Change::Disable;
                    }
                }
            }
            (out, change)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            probe_interval: Duration::from_secs(10),
            disable_after: Some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn opens_after_n_failures_and_a_success_closes_it() {
        let p = policy();
        let mut b = Breaker::CLOSED;
        let mut changes = Vec::new();
        for t in [0, 1_000, 2_000] {
            let (nb, c) = next(b, &p, Signal::Failure, t, t + 10);
            b = nb;
            changes.push(c);
        }
        assert_eq!(changes, [Change::None, Change::None, Change::Opened]);
        assert_eq!(b.state, BreakerState::Open);
        assert_eq!(b.failing_since, Some(0));
        assert_eq!(b.opened_at, Some(2_010));
        assert_eq!(b.probe_at, Some(12_010));
        let (b, c) = next(b, &p, Signal::Neutral, 3_000, 3_000);
        assert_eq!((b.state, c), (BreakerState::Open, Change::None));
        let (b, c) = next(b, &p, Signal::Healthy, 12_010, 12_020);
        assert_eq!((b, c), (Breaker::CLOSED, Change::Closed));
    }

    #[test]
    fn a_success_resets_the_count_before_it_opens() {
        let p = policy();
        let (b, _) = next(Breaker::CLOSED, &p, Signal::Failure, 0, 1);
        let (b, _) = next(b, &p, Signal::Failure, 1, 2);
        let (b, c) = next(b, &p, Signal::Healthy, 2, 3);
        assert_eq!((b, c), (Breaker::CLOSED, Change::None));
        let (b, c) = next(b, &p, Signal::Failure, 3, 4);
        assert_eq!((b.consecutive_failures, c), (1, Change::None));
    }

    #[test]
    fn continuous_failure_past_the_span_disables() {
        let p = policy();
        let mut b = Breaker::CLOSED;
        for t in [0, 1, 2, 30_000] {
            let (nb, c) = next(b, &p, Signal::Failure, t, t);
            assert_ne!(c, Change::Disable, "at {t}");
            b = nb;
        }
        let (_, c) = next(b, &p, Signal::Failure, 60_000, 60_000);
        assert_eq!(c, Change::Disable);
    }

    #[test]
    fn off_when_failures_is_zero() {
        let p = BreakerPolicy {
            failures: 0,
            ..policy()
        };
        let (b, c) = next(Breaker::CLOSED, &p, Signal::Failure, 0, 0);
        assert_eq!((b, c), (Breaker::CLOSED, Change::None));
    }

    #[test]
    fn outcome_signals() {
        assert_eq!(Signal::of(OutcomeClass::Delivered), Signal::Healthy);
        assert_eq!(Signal::of(OutcomeClass::ClientError), Signal::Healthy);
        assert_eq!(Signal::of(OutcomeClass::Timeout), Signal::Failure);
        assert_eq!(Signal::of(OutcomeClass::RateLimited), Signal::Neutral);
        assert_eq!(Signal::of(OutcomeClass::Internal), Signal::Neutral);
    }
}
