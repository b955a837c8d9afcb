//! Delivering one attempt over HTTP, and the guard that keeps deliveries
//! away from internal addresses.
//!
//! [`http::Sender`] owns the pooled clients and turns an [`http::OutboundRequest`]
//! into an [`http::Exchange`] whose [`http::Outcome`] the worker persists.
//! [`ssrf`] decides which destination addresses are refused.

pub mod http;
pub mod ssrf;
