//! The delivery state machine and the outcome classes, declared once.
//!
//! Every state a delivery can be in and every move between states is listed
//! here. The database enforces the same lists with CHECK constraints (see
//! `migrations/*/0001_init.sql`), and a test (`tests/store.rs`,
//! `transition_table_matches_database`) checks that the two agree, so the
//! state machine is documented once and enforced twice.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a delivery stands. Stored as the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Created by ingest (or put back by a replay); waiting for its first
    /// attempt. Moved out by a worker's claim, or by cancellation.
    Pending,
    /// Leased by one worker, which is making an attempt. Moved out only by
    /// that worker persisting the outcome, or by the rescuer when the lease
    /// expired (the worker crashed or stalled), or by a graceful release of
    /// an attempt that never started.
    InFlight,
    /// A receiver answered 2xx and its body was read to the end or the cap.
    /// Terminal; only a replay moves it back to pending.
    Succeeded,
    /// The last attempt failed in a way a retry can help; due again at
    /// `next_attempt_at`. Moved out by a worker's claim, or by cancellation.
    RetryScheduled,
    /// Attempts are exhausted or the outcome was permanent. Terminal; only a
    /// replay moves it back to pending.
    Failed,
    /// Stopped without a final outcome (endpoint deleted or disabled).
    /// Terminal; only a replay moves it back to pending.
    Cancelled,
}

impl DeliveryState {
    /// Every state, in the order the documentation lists them.
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Succeeded,
        DeliveryState::RetryScheduled,
        DeliveryState::Failed,
        DeliveryState::Cancelled,
    ];

    /// The stored (and API) name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::RetryScheduled => "retry_scheduled",
            DeliveryState::Failed => "failed",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    /// Terminal states end a delivery; only a replay leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeliveryState::Succeeded | DeliveryState::Failed | DeliveryState::Cancelled
        )
    }

    /// States a worker may claim from.
    pub fn is_claimable(self) -> bool {
        matches!(self, DeliveryState::Pending | DeliveryState::RetryScheduled)
    }

    /// Whether `from → to` is a move the state machine allows. `from` is
    /// `None` for the creating transition.
    pub fn can_transition(from: Option<DeliveryState>, to: DeliveryState) -> bool {
        use DeliveryState::*;
        match (from, to) {
            // Ingest creates deliveries as pending.
            (None, Pending) => true,
            // A worker claims a due delivery.
            (Some(Pending | RetryScheduled), InFlight) => true,
            // The worker persists its outcome; the rescuer reschedules an
            // expired lease; a graceful shutdown releases an unstarted one.
            (Some(InFlight), Succeeded | RetryScheduled | Failed | Pending) => true,
            // Endpoint deleted or disabled while the delivery waited.
            (Some(Pending | RetryScheduled), Cancelled) => true,
            // The circuit breaker gives up on a disabled endpoint.
            (Some(RetryScheduled), Failed) => true,
            // Replay puts a finished delivery back in line.
            (Some(Succeeded | Failed | Cancelled), Pending) => true,
            _ => false,
        }
    }

    /// Every allowed transition, creation first. The migrations list the same
    /// pairs in a CHECK constraint.
    pub fn all_transitions() -> Vec<(Option<DeliveryState>, DeliveryState)> {
        let mut out = Vec::new();
        for to in Self::ALL {
            if Self::can_transition(None, to) {
                out.push((None, to));
            }
        }
        for from in Self::ALL {
            for to in Self::ALL {
                if Self::can_transition(Some(from), to) {
                    out.push((Some(from), to));
                }
            }
        }
        out
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored state name that is not one of [`DeliveryState::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown delivery state `{0}` (expected one of pending, in_flight, succeeded, retry_scheduled, failed, cancelled)")]
pub struct UnknownState(pub String);

impl FromStr for DeliveryState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// The class of an attempt's outcome, as stored in `attempts.outcome` and
/// `delivery_transitions.outcome`. The worker's richer `Outcome` type maps
/// onto these once; the comparator reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    /// 2xx and the body read to the end or to the cap.
    Delivered,
    /// 5xx (and 408): retryable.
    ServerError,
    /// 429: retryable, honouring Retry-After.
    RateLimited,
    /// The deadline passed before the response was complete: ambiguous, the
    /// receiver may have processed it. Retryable.
    Timeout,
    /// The connection could not be made (refused, DNS). Retryable.
    ConnectError,
    /// The connection was reset or closed mid-exchange. Retryable.
    Reset,
    /// The status line arrived but the body broke off. Retryable.
    BodyRead,
    /// 4xx other than 408/429: permanent.
    ClientError,
    /// 3xx when redirects are not followed: permanent.
    Redirect,
    /// The endpoint URL cannot be used: permanent.
    InvalidUrl,
    /// The destination resolves to a blocked address range: permanent.
    BlockedDestination,
    /// Our own fault (signing, storage): retryable after a pause.
    Internal,
}

impl OutcomeClass {
    /// Every class, in declaration order.
    pub const ALL: [OutcomeClass; 12] = [
        OutcomeClass::Delivered,
        OutcomeClass::ServerError,
        OutcomeClass::RateLimited,
        OutcomeClass::Timeout,
        OutcomeClass::ConnectError,
        OutcomeClass::Reset,
        OutcomeClass::BodyRead,
        OutcomeClass::ClientError,
        OutcomeClass::Redirect,
        OutcomeClass::InvalidUrl,
        OutcomeClass::BlockedDestination,
        OutcomeClass::Internal,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Delivered => "delivered",
            OutcomeClass::ServerError => "server_error",
            OutcomeClass::RateLimited => "rate_limited",
            OutcomeClass::Timeout => "timeout",
            OutcomeClass::ConnectError => "connect_error",
            OutcomeClass::Reset => "reset",
            OutcomeClass::BodyRead => "body_read",
            OutcomeClass::ClientError => "client_error",
            OutcomeClass::Redirect => "redirect",
            OutcomeClass::InvalidUrl => "invalid_url",
            OutcomeClass::BlockedDestination => "blocked_destination",
            OutcomeClass::Internal => "internal",
        }
    }

    /// Whether another attempt can help.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            OutcomeClass::ServerError
                | OutcomeClass::RateLimited
                | OutcomeClass::Timeout
                | OutcomeClass::ConnectError
                | OutcomeClass::Reset
                | OutcomeClass::BodyRead
                | OutcomeClass::Internal
        )
    }
}

impl fmt::Display for OutcomeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutcomeClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown outcome class `{s}`"))
    }
}

/// Why a transition happened; stored in `delivery_transitions.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// Ingest created the delivery.
    Created,
    /// A worker claimed it with a lease.
    Claimed,
    /// A worker persisted an attempt's outcome.
    Attempted,
    /// The rescuer found the lease expired.
    LeaseExpired,
    /// A graceful shutdown handed back an attempt it had not started.
    Released,
    /// An operator replayed a finished delivery.
    Replay,
    /// The endpoint was deleted or disabled.
    EndpointGone,
    /// The circuit breaker disabled the endpoint after continuous failure:
    /// waiting retries fail, unattempted deliveries are cancelled.
    BreakerDisabled,
}

impl TransitionReason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionReason::Created => "created",
            TransitionReason::Claimed => "claimed",
            TransitionReason::Attempted => "attempted",
            TransitionReason::LeaseExpired => "lease_expired",
            TransitionReason::Released => "released",
            TransitionReason::Replay => "replay",
            TransitionReason::EndpointGone => "endpoint_gone",
            TransitionReason::BreakerDisabled => "breaker_disabled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in DeliveryState::ALL {
            assert_eq!(s.as_str().parse::<DeliveryState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for c in OutcomeClass::ALL {
            assert_eq!(c.as_str().parse::<OutcomeClass>().unwrap(), c);
        }
        assert!("running".parse::<DeliveryState>().is_err());
    }

    #[test]
    fn terminal_states_only_leave_by_replay() {
        for from in DeliveryState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in DeliveryState::ALL {
                let allowed = DeliveryState::can_transition(Some(from), to);
                assert_eq!(allowed, to == DeliveryState::Pending, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn only_in_flight_reaches_succeeded() {
        for from in DeliveryState::ALL {
            let allowed = DeliveryState::can_transition(Some(from), DeliveryState::Succeeded);
            assert_eq!(allowed, from == DeliveryState::InFlight, "{from}");
        }
        assert!(!DeliveryState::can_transition(
            None,
            DeliveryState::Succeeded
        ));
    }
}
