//! The hookshift delivery engine.
//!
//! Layout:
//! - [`config`]: the typed configuration, its TOML file, environment
//!   overrides and validation.
//! - [`state`]: the delivery state machine and outcome classes, declared once.
//! - [`breaker`]: the endpoint circuit breaker's rules, declared once.
//! - [`store`]: SQLite/PostgreSQL persistence: endpoints, events, deliveries,
//!   transitions, attempts, and the claim/rescue API the worker uses.
//! - [`ingest`]: group commit for `POST /v1/events`.
//! - [`api`]: the axum platform API; [`api::Problem`] is its only error type.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`signing`]: the signature schemes (Standard Webhooks, legacy, GitHub,
//!   Stripe, Slack) as pure functions over exact bytes.
//! - [`gojson`]: a byte-exact re-implementation of what the legacy Go sender
//!   does to a payload (`encoding/json` through `interface{}`).
//! - [`profile`]: compatibility profiles (what goes on the wire, retry
//!   policy); [`conformance`]: the byte-exact property check against a
//!   legacy oracle.
//! - [`delivery`]: one HTTP attempt ([`delivery::http::Sender`]) and the
//!   SSRF guard.
//! - [`clock`], [`ids`]: injected time, identifiers and secrets.
//! - [`worker`]: claims due deliveries and runs each attempt (typed
//!   `Reserved` → `Completed` → persisted), with backpressure and a rescuer.
//! - [`server`]: wires the parts together; `run(config, listener, shutdown)`.
//! - [`testing`]: helpers that start an engine on 127.0.0.1:0 for tests.

pub mod api;
pub mod breaker;
pub mod clock;
pub mod config;
pub mod conformance;
pub mod delivery;
pub mod gojson;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod profile;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
pub mod testing;
pub mod worker;
