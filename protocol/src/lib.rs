//! Sans-io MQTT 3.1.1 and 5.0: packets, the codec, topic names and filters, and the client
//! session state machine.
//!
//! # Why sans-io
//! The same bytes must mean the same thing in the broker (tokio, Linux) and in the browser
//! client (wasm, no threads, no `Instant::now`). So this crate does no I/O and reads no
//! clock: bytes and the current time come in as arguments, packets and deadlines go out.
//! The broker and the wasm client both drive it; neither has a codec of its own.
//!
//! # Layout, in the order bytes flow through it
//! - [`wire`]: variable byte integers, strings and binary data: the encoding under all else.
//! - [`decoder`]: the streaming [`Decoder`] fed with chunks of any size, bounded by a
//!   maximum packet size, resolving 5.0 topic aliases; it yields [`Packet`]s.
//! - [`packet`]: every control packet of both versions, one family per file, and the
//!   [`Packet`] enum with `decode` / `encode`.
//! - [`properties`]: the 5.0 properties and which packet may carry which.
//! - [`topic`]: validated [`TopicName`] and [`TopicFilter`], matching, shared subscriptions.
//! - [`reason`]: 5.0 reason codes and their 3.1.1 equivalents.
//! - [`error`]: [`DecodeError`] (each knows its reason code) and [`EncodeError`].
//! - [`flow`]: what both ends of a QoS 1/2 flow do alike: packet identifiers
//!   ([`PacketIds`]), the PUBREL / PUBCOMP answers and the outbound stage; used by the
//!   broker and the client.
//! - [`alias`]: topic aliases on the sending side, applied as packets go out.
//! - [`client`]: the client session state machine, which drives all of the above for the
//!   browser client.
//! - [`vecmap`]: [`VecMap`] and [`VecSet`], the sorted-vector collections of one client's
//!   state, here and in the broker's sessions.
//!
//! # std
//! The `std` feature (default) is what the broker uses. Without it the crate is `no_std`
//! with `alloc` (the wasm client builds it so, to keep std's panic machinery out of its
//! binary): the same code, except that [`OutboundAliases`] keeps its map in a
//! `BTreeMap` instead of a `HashMap`.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod alias;
pub mod client;
pub mod decoder;
pub mod error;
pub mod flow;
pub mod packet;
mod prelude;
pub mod properties;
pub mod reason;
pub mod topic;
pub mod vecmap;
pub mod wire;

pub use alias::OutboundAliases;
pub use decoder::Decoder;
pub use error::{DecodeError, EncodeError};
pub use flow::PacketIds;
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, FixedHeader, Packet, PacketId, PacketType, ProtocolVersion,
    PubResp, Publish, QoS, RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will,
};
pub use properties::Properties;
pub use reason::ReasonCode;
pub use topic::{TopicError, TopicFilter, TopicName};
pub use vecmap::{VecMap, VecSet};

/// The version of this crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
