//! The broker engine: sessions, subscriptions, routing, retained messages and wills, for
//! MQTT 3.1.1 and 5.0 clients alike.
//!
//! # Why a crate of its own
//! The engine knows no transport. Bytes arrive at a connection task (from TCP or from a
//! WebSocket, it does not matter: [`Broker::serve`] takes any `Stream`/`Sink` of byte
//! chunks), are decoded by [`protocol`], and reach the engine as packets; what goes back
//! is encoded by the same `protocol` crate. The bridge binary only adapts its sockets.
//!
//! # Layout, in the order data flows through it
//! - [`server`]: the [`Broker`] handle: starts the engine on its own thread, takes each new
//!   transport ([`Broker::serve`]), and answers the HTTP API's typed queries
//!   ([`Broker::sessions`], [`Broker::kick`], ...) and its event stream ([`Broker::events`]).
//! - `connection`: one connection from its first byte to its close: CONNECT within its
//!   deadline, keep-alive counted in whole packets [MQTT-3.1.2-24], a deadline for a packet
//!   once begun, buffers only while in use. Packets go to the engine as commands.
//! - `command`: what flows between them: `Command`s in (packets, closes,
//!   requests with their reply channels), `Outgoing` packets back to each connection.
//! - `engine`: the single owner of all session state, synchronous, time passed in; one file
//!   per concern: `connect` (takeover, resume), `inbound` (PUBLISH in and the acks both
//!   ways), `subscribe` (and retained messages on subscribe), `routing` (matching, queues,
//!   the in-flight window), `lifecycle` (offline, expiry, wills, kick, discard),
//!   `persistence` (what each batch writes, recovery), `inspect` (views and requests).
//! - `session`: one client id's session: subscriptions, queue, in-flight messages.
//! - `subscriptions`: the topic trie with shared groups on it; `retained`: the retained
//!   messages by topic, a trie a filter walks. Neither recurses: depth is the client's to
//!   choose.
//! - `message`: a published message, held once for all its subscribers.
//! - [`store`]: the storage trait, an in-memory store and the embedded SQLite store; the
//!   engine writes each batch's changes in one transaction before its acknowledgements go
//!   out, and a message queued for many sessions is stored once.
//! - [`cluster`]: what a node of a cluster adds (the `cluster` crate implements it): the
//!   claim of a session before its CONNECT reaches the engine; with a store that routes,
//!   the engine's `cluster` file hands messages to the cluster and routes what comes back.
//! - [`view`]: the serializable answers and session events the bridge shows.
//! - Alongside: [`auth`] (the hook that proves who a connection is, on its own task, and
//!   decides on the engine thread what it may publish, subscribe to and receive; sessions
//!   belong to the user who made them), [`config`] (limits and
//!   policies), `ids` (session and connection numbers), [`ratelog`] (rate-limited log lines
//!   for refusals a client can repeat), [`metrics`] (the Prometheus counters and histograms
//!   each of the above adds to, one atomic add at a time, registered by the bridge's
//!   `/metrics`).
//!
//! # Flow control and the queue policy
//! Every queue is bounded. An offline session's queue holds at most
//! `max_queued_messages` / `max_queued_bytes`; beyond that the `overflow_policy` drops the
//! oldest or the newest message and counts it. An online session that cannot keep up is
//! never made to lose a QoS 1/2 message a publisher had acknowledged: the message is queued
//! past the limit and the publisher's PUBACK / PUBREC is held back until the slow session
//! drains, so the publisher's own in-flight window (our Receive Maximum) stops it. QoS 0
//! towards a slow reader is dropped once its connection's channel is full.

pub mod auth;
pub mod cluster;
mod command;
pub mod config;
mod connection;
mod engine;
mod ids;
mod message;
pub mod metrics;
pub mod ratelog;
mod retained;
pub mod server;
mod session;
pub mod store;
mod subscriptions;
#[cfg(test)]
mod testing;
pub mod view;

pub use auth::{
    Access, AllowAll, Authentication, Authenticator, ConnectionInfo, Grants, Identity, Transport,
};
pub use config::{BrokerConfig, DurabilityPolicy, OverflowPolicy};
pub use engine::RecoverStats;
pub use metrics::Metrics;
pub use ratelog::RateLimitedLog;
pub use server::{Broker, ConnectionError, Stopped};
pub use store::{
    MemoryStore, Op, Recovered, SqliteStore, Store, StoreError, StoredDelivery, StoredMessage,
};
pub use subscriptions::SubEntry;
pub use view::SessionEvent;
