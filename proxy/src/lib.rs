//! The tee proxy (not built yet; see the tee proxy issue).
//!
//! This crate will hold the ingress tee, which forwards producers' API calls
//! to the primary sender and mirrors them to the shadow through a bounded
//! queue; the egress recorder/replayer, a forward proxy per sender that
//! records the primary's outbound exchanges and answers the shadow with them;
//! the capture store; and the endpoint-sticky ramp with its audited stage
//! changes. See `DESIGN.md`, sections "Egress recorder / replayer" and "Ramp".
