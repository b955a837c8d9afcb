//! Scenarios (not built yet; see the scenarios issue).
//!
//! This crate will hold the deterministic receiver fleet simulator, the
//! traffic driver, the scenario file format and runner, and `hookshift demo`.
