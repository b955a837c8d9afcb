//! Delivering one attempt over HTTP, and the guard that keeps deliveries
//! away from internal addresses.
//!
//! [`http::Sender`] turns an [`http::OutboundRequest`] into an
//! [`http::Exchange`] whose [`http::Outcome`] the worker persists: what goes
//! on the wire, redirects, the deadline, the body cap, classification.
//! [`client`] moves the bytes: the pooled HTTP/1.1 connections (hyper), TLS
//! and the egress proxy. [`ssrf`] decides which destination addresses are
//! refused.

pub mod client;
pub mod http;
pub mod ssrf;
