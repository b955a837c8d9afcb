//! The normalised model the diff engine works on, independent of where the
//! data came from (capture store, the senders' databases, or a test's
//! builder): per side, the exchanges the egress recorded, the attempts the
//! sender recorded in its own database, and each delivery's canonical state
//! history, all keyed by (event id, endpoint URL) and attempt number.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// Which sender a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    /// The legacy sender (the reference).
    Legacy,
    /// The new engine (the candidate).
    Engine,
}

/// The egress's role for an exchange (see proxy/migrations/*/0001_captures.sql).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Forwarded to the real receiver.
    Primary,
    /// Answered with the primary's exchange for the same key.
    Shadow,
    /// Answered with a default: the primary never made this attempt.
    ShadowOnly,
    /// Recorder-only mode: forwarded for both senders.
    Passthrough,
}

impl Role {
    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "primary" => Role::Primary,
            "shadow" => Role::Shadow,
            "shadow_only" => Role::ShadowOnly,
            "passthrough" => Role::Passthrough,
            _ => return None,
        })
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Shadow => "shadow",
            Role::ShadowOnly => "shadow_only",
            Role::Passthrough => "passthrough",
        }
    }
}

/// One outbound attempt as the egress recorded it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exchange {
    /// The egress's row number.
    pub seq: i64,
    /// Primary, shadow, shadow-only or passthrough (`None` = unknown, treated as passthrough).
    pub role: Option<Role>,
    /// `HTTP/1.1` or `HTTP/1.0`; header-name case only matters there.
    pub http_version: String,
    /// Request headers in wire case and order.
    pub request_headers: Vec<(String, String)>,
    /// The exact request body.
    pub request_body: Vec<u8>,
    /// Response status, `None` on a fault.
    pub response_status: Option<u16>,
    /// Response headers (`Retry-After` is read from here).
    pub response_headers: Vec<(String, String)>,
    /// Response body length, when a response was recorded.
    pub response_body_len: Option<usize>,
    /// refused, reset, timeout, tunnel or error.
    pub fault: Option<String>,
    /// Request head → response complete (or fault), microseconds.
    pub latency_us: i64,
    /// Unix ms when the request head arrived.
    pub started_at: i64,
    /// The egress's note.
    pub note: Option<String>,
}

impl Exchange {
    /// Unix ms when the exchange ended.
    pub fn finished_at(&self) -> i64 {
        self.started_at + self.latency_us / 1000
    }

    /// First request header with this name, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The outcome the receiver's behaviour implies, for exchanges with no recorded outcome.
    pub fn implied_outcome(&self) -> Option<Outcome> {
        match (self.fault.as_deref(), self.response_status) {
            (Some("timeout"), _) => Some(Outcome::Timeout),
            (Some("refused" | "reset" | "error"), _) => Some(Outcome::Network),
            (Some(_), _) => None,
            (None, Some(s)) => Some(Outcome::from_status(s)),
            (None, None) => None,
        }
    }
}

/// Outcome classes both senders' vocabularies map onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx (and, for a sender that reads bodies, the body read).
    Delivered,
    /// 408, 429 or 5xx.
    HttpRetryable,
    /// Any other non-2xx status.
    HttpPermanent,
    /// No complete response within the deadline.
    Timeout,
    /// Connection refused, reset or another network error.
    Network,
    /// The head arrived and the body broke off.
    Body,
    /// The URL could not be used (invalid, blocked).
    Invalid,
    /// The sender's own fault.
    Internal,
}

impl Outcome {
    /// The snake_case name, as in reports and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::HttpRetryable => "http_retryable",
            Outcome::HttpPermanent => "http_permanent",
            Outcome::Timeout => "timeout",
            Outcome::Network => "network",
            Outcome::Body => "body",
            Outcome::Invalid => "invalid",
            Outcome::Internal => "internal",
        }
    }

    /// Parses a name as written by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "delivered" => Outcome::Delivered,
            "http_retryable" => Outcome::HttpRetryable,
            "http_permanent" => Outcome::HttpPermanent,
            "timeout" => Outcome::Timeout,
            "network" => Outcome::Network,
            "body" => Outcome::Body,
            "invalid" => Outcome::Invalid,
            "internal" => Outcome::Internal,
            _ => return None,
        })
    }

    /// The class of a response status.
    pub fn from_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Delivered,
            408 | 429 | 500..=599 => Outcome::HttpRetryable,
            _ => Outcome::HttpPermanent,
        }
    }

    /// The engine's `attempts.outcome` vocabulary (engine::state::OutcomeClass).
    pub fn from_engine(raw: &str) -> Option<Outcome> {
        Some(match raw {
            "delivered" => Outcome::Delivered,
            "server_error" | "rate_limited" => Outcome::HttpRetryable,
            "client_error" | "redirect" => Outcome::HttpPermanent,
            "timeout" => Outcome::Timeout,
            "connect_error" | "reset" => Outcome::Network,
            "body_read" => Outcome::Body,
            "invalid_url" | "blocked_destination" => Outcome::Invalid,
            "internal" => Outcome::Internal,
            _ => return None,
        })
    }

    /// The legacy's `attempts.outcome` vocabulary (ok, http_error, timeout, network_error, body_error).
    pub fn from_legacy(raw: &str, status: Option<u16>) -> Option<Outcome> {
        Some(match raw {
            "ok" => Outcome::Delivered,
            "http_error" => match status {
                Some(s) => Outcome::from_status(s),
                None => Outcome::HttpPermanent,
            },
            "timeout" => Outcome::Timeout,
            "network_error" => Outcome::Network,
            "body_error" => Outcome::Body,
            _ => return None,
        })
    }
}

/// An attempt as the sender recorded it in its own database.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The outcome as stored, in the sender's own vocabulary.
    pub raw_outcome: String,
    /// Its class.
    pub outcome: Outcome,
    /// The response status it stored.
    pub status: Option<u16>,
    /// Unix ms the attempt started.
    pub started_at: i64,
}

/// One attempt of one side: what the egress saw and what the sender recorded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attempt {
    /// The egress's record, if the attempt went through it (boxed: most
    /// attempts in memory at once are the databases' records without one).
    pub exchange: Option<Box<Exchange>>,
    /// The sender's record, if its database was read (boxed, as the
    /// exchange: a history's attempt map then stays a few hundred bytes).
    pub recorded: Option<Box<Recorded>>,
}

impl Attempt {
    /// The recorded outcome, else the one the exchange implies.
    pub fn outcome(&self) -> Option<Outcome> {
        self.recorded
            .as_ref()
            .map(|r| r.outcome)
            .or_else(|| self.exchange.as_deref().and_then(Exchange::implied_outcome))
    }
}

/// Everything one side did for one (event, endpoint).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// The side's delivery id, when its database was read.
    pub delivery_id: Option<String>,
    /// Attempts by number (from 1).
    pub attempts: BTreeMap<u32, Attempt>,
    /// Canonical states in the order entered (pending, in_flight, ...).
    pub states: Vec<String>,
    /// Whether the sender's database holds this delivery.
    pub in_db: bool,
}

/// The key of a history.
pub type Key = (String, String);

/// Everything read about one side.
#[derive(Debug, Clone, Default)]
pub struct SideData {
    /// Histories by (event id, endpoint URL).
    pub histories: BTreeMap<Key, History>,
    /// Signing secrets by endpoint URL, current first.
    pub secrets: HashMap<String, Vec<String>>,
    /// Profile name by endpoint URL, where the sender stores one.
    pub profiles: HashMap<String, String>,
}

impl SideData {
    /// The history for a key, created empty on first use.
    pub fn history(&mut self, event_id: &str, url: &str) -> &mut History {
        self.histories
            .entry((event_id.to_owned(), url.to_owned()))
            .or_default()
    }

    /// Adds an egress exchange as attempt `n`.
    pub fn add_exchange(&mut self, event_id: &str, url: &str, n: u32, ex: Exchange) {
        self.history(event_id, url)
            .attempts
            .entry(n)
            .or_default()
            .exchange = Some(Box::new(ex));
    }

    /// Adds a recorded attempt `n`.
    pub fn add_recorded(&mut self, event_id: &str, url: &str, n: u32, rec: Recorded) {
        let h = self.history(event_id, url);
        h.in_db = true;
        h.attempts.entry(n).or_default().recorded = Some(Box::new(rec));
    }
}

/// One producer API call the ingress tee saw, with both senders' answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ingress {
    /// The capture row number.
    pub seq: i64,
    /// `POST`, `PUT`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The event id, for event posts.
    pub event_id: Option<String>,
    /// Which sender answered the producer.
    pub primary_sender: Option<Sender>,
    /// The primary's status (`None`: unreachable).
    pub primary_status: Option<u16>,
    /// The primary's body.
    pub primary_body: Option<Vec<u8>>,
    /// The shadow's status (`None`: dropped or failed).
    pub shadow_status: Option<u16>,
    /// The shadow's body.
    pub shadow_body: Option<Vec<u8>>,
    /// Why the shadow has no answer.
    pub shadow_error: Option<String>,
    /// Unix ms.
    pub at: i64,
}

/// Everything the comparator compares: the reference (legacy), the candidate
/// (engine), optionally a second reference run for learned noise, and the
/// ingress exchanges.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// The legacy side.
    pub legacy: SideData,
    /// The engine side.
    pub engine: SideData,
    /// A second legacy run (its exchanges and database), for learned noise.
    pub secondary: Option<SideData>,
    /// Ingress exchanges.
    pub ingress: Vec<Ingress>,
    /// Exchanges without an event id (no pairing key); counted only.
    pub unkeyed_exchanges: u64,
}
