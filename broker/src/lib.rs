//! The broker engine: sessions, subscriptions, routing, retained messages and wills, for
//! MQTT 3.1.1 and 5.0 clients alike.
//!
//! # Why a crate of its own
//! The engine knows no transport. Bytes arrive at a connection task (from TCP or from a
//! WebSocket, it does not matter: [`Broker::serve`] takes any `Stream`/`Sink` of byte
//! chunks), are decoded by [`protocol`], and reach the [`engine`] as packets; what goes back
//! is encoded by the same `protocol` crate. The bridge binary only adapts its sockets.
//!
//! # Layout
//! - [`engine`]: the single owner of all session state, synchronous, time passed in.
//! - [`server`]: the [`Broker`] handle and the engine thread, shared by all connections.
//! - `connection`: one connection from its first byte to its close (the CONNECT deadline,
//!   keep-alive, the deadline for a packet once begun, buffers only while in use), reached
//!   through [`Broker::serve`].
//! - [`session`]: one client id's session: subscriptions, queue, in-flight messages.
//! - [`subscriptions`]: the topic trie and shared subscription groups.
//! - [`retained`]: the retained messages by topic, a trie a filter walks instead of a scan.
//! - [`message`]: a published message as held once for all its subscribers.
//! - [`store`]: the storage trait, an in-memory store and the embedded SQLite store;
//!   changes are written once per engine batch, before its acknowledgements go out.
//! - [`auth`]: the authentication / authorization hook on the connection path.
//! - [`config`]: limits and policies.
//! - `ratelog`: log lines for repeated refusals, rate-limited.
//! - [`view`]: serializable views of the state and the session events, for the HTTP API.
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
mod command;
pub mod config;
mod connection;
mod engine;
mod ids;
mod message;
mod ratelog;
mod retained;
pub mod server;
mod session;
pub mod store;
mod subscriptions;
pub mod view;

pub use auth::{AllowAll, Authenticator, ConnectionInfo, Transport};
pub use config::{BrokerConfig, DurabilityPolicy, OverflowPolicy};
pub use engine::RecoverStats;
pub use server::{Broker, ConnectionError, Stopped};
pub use store::{MemoryStore, SqliteStore, Store, StoreError};
pub use subscriptions::SubEntry;
pub use view::SessionEvent;
