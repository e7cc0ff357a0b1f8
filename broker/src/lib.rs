//! The broker engine: sessions, subscriptions, routing, retained messages, wills and the
//! storage trait with its embedded default.
//!
//! # Why a crate of its own
//! The engine knows no transport. Bytes arrive at a connection task in `bridge` (from TCP or
//! from a WebSocket, it does not matter), are decoded by [`protocol`], and reach this crate as
//! packets; what it sends back is encoded by the same `protocol` crate. Keeping sockets out
//! lets the whole engine be tested with plain channels and lets every transport share it.
//!
//! This crate is laid down by the foundation issue; the engine itself comes with the broker
//! issue.
