//! The comparator (not built yet; see the comparator issue).
//!
//! This crate will pair the two senders' outbound attempts by (event id,
//! endpoint URL, attempt number), diff signatures, headers, payload bytes,
//! retry decisions, timeout classification and state transitions, apply the
//! noise rules, render the divergence reports (JSON, Markdown, HTML) and run
//! the ramp gate. It reads stores and files only and does no network I/O.
