//! The broker's settings: limits, queue policy and what it announces to clients.
//!
//! Every field has a default that suits a small server; the bridge reads overrides from its
//! TOML configuration file (the `[broker]` table), so field names are the TOML keys.

use serde::Deserialize;

/// What happens when a session's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Drop the oldest queued message to make room for the new one.
    #[default]
    DropOldest,
    /// Drop the new message.
    DropNewest,
}

/// When stored state reaches the disk (with a data directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityPolicy {
    /// Synced before PUBACK / PUBREC / SUBACK / CONNACK go out; concurrent clients share one
    /// sync (group commit).
    #[default]
    Always,
    /// Written before the acknowledgements (safe against a crash of the broker), synced to
    /// disk every `sync_interval_ms` (a power loss may lose that much).
    Interval,
    /// Written before the acknowledgements, synced when the OS decides.
    None,
}

/// The default [`BrokerConfig::max_session_expiry`]: 7 days. A device away over a long
/// weekend finds its session; a client that never returns stops costing memory and disk.
pub const DEFAULT_MAX_SESSION_EXPIRY: u32 = 7 * 24 * 3600;

/// Broker settings. See the README's configuration section for each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// The largest packet accepted from a client (bytes, fixed header included); announced
    /// as Maximum Packet Size in 5.0 CONNACK.
    pub max_packet_size: u32,
    /// How many QoS 1/2 PUBLISHes a client may have unacknowledged towards the broker
    /// (announced as Receive Maximum in 5.0, where more is a protocol error: 0x93). A 3.1.1
    /// client is never told it: past it, its messages are acknowledged at once instead of
    /// waiting for a congested subscriber (see the engine's `backpressure` module).
    pub receive_maximum: u16,
    /// How many QoS 1/2 messages the broker has in flight to one client at most (the
    /// client's own Receive Maximum lowers it).
    pub max_inflight: u16,
    /// Messages queued per session (offline, or waiting for the in-flight window).
    pub max_queued_messages: usize,
    /// Bytes of payload queued per session.
    pub max_queued_bytes: usize,
    /// Which message goes when an offline session's queue is full.
    pub overflow_policy: OverflowPolicy,
    /// Milliseconds a subscriber may keep publishers paused. While an online session's
    /// queue is over a quarter of its limits, the connections publishing QoS 0 messages to
    /// it stop being read (backpressure, nothing dropped) until it is down to an eighth; a
    /// session still over a quarter after this long stops pausing them, and the QoS 0
    /// messages that would take it over are dropped and counted on it, so that one stuck
    /// subscriber does not stall the others. 0: never pause, drop at once.
    pub max_publisher_pause_ms: u64,
    /// Queue QoS 0 messages for offline sessions too (off: they are not queued, as the
    /// spec allows).
    pub queue_qos0: bool,
    /// Highest QoS the broker accepts and grants (0, 1 or 2).
    pub maximum_qos: u8,
    /// Retained messages supported.
    pub retain_available: bool,
    /// Topic aliases a client may use towards the broker (5.0 Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Longest session expiry interval granted, in seconds (also the lifetime of a 3.1.1
    /// clean-session = 0 session once its client is gone). 5.0 clients asking for more are
    /// told the granted value in CONNACK. `None` (only by explicit configuration, TOML
    /// cannot say it: set `u32::MAX`, "never") grants what the client asks.
    pub max_session_expiry: Option<u32>,
    /// Longest keep-alive accepted, in seconds; a longer or zero request is answered with
    /// this value as Server Keep Alive (5.0). `None`: whatever the client asks.
    pub max_keep_alive: Option<u16>,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Seconds a packet may take to arrive once its first byte has: a connection holding a
    /// partial packet longer than this is closed, whatever its keep-alive (keep-alive 0
    /// does not mean "forever while half a packet is held").
    pub packet_timeout_secs: u64,
    /// Most simultaneous client connections, counted from the moment a socket is accepted
    /// (before CONNECT); more are closed at once, or after CONNECT refused with Server busy
    /// (5.0) / Server unavailable (3.1.1).
    pub max_connections: usize,
    /// Most simultaneous connections from one source address (IPv4 address, or IPv6 /64
    /// prefix); more are closed at accept.
    pub max_connections_per_address: usize,
    /// Most sessions held at once, online and offline. At the limit a CONNECT that would
    /// create a new session is refused with Quota exceeded (5.0) / Server unavailable
    /// (3.1.1); resuming an existing session still works. Nothing is evicted.
    pub max_sessions: usize,
    /// Most subscriptions one session may hold; a SUBSCRIBE beyond it gets Quota exceeded
    /// (5.0) / Failure (3.1.1) for the filters over the limit.
    pub max_subscriptions_per_session: usize,
    /// Longest topic name or filter, in bytes (shared-subscription prefix included). Longer:
    /// 5.0 Topic Filter invalid in SUBACK / Topic Name invalid DISCONNECT; 3.1.1 SUBACK
    /// Failure / close.
    pub max_topic_length: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter; more is refused as for
    /// `max_topic_length`. Every walk over levels is iterative; this bounds the work and
    /// memory of one filter.
    pub max_topic_levels: usize,
    /// Retained messages kept at most; a new topic beyond it is not retained.
    pub max_retained_messages: usize,
    /// Payload bytes of all retained messages together; a new or larger retained message
    /// beyond it is not retained (routed normally).
    pub max_retained_bytes: usize,
    /// Commands queued from all connections to the engine (backpressure on readers).
    pub engine_queue: usize,
    /// When stored state reaches the disk.
    pub durability: DurabilityPolicy,
    /// For `durability = "interval"`: milliseconds between syncs.
    pub sync_interval_ms: u64,
    /// Seconds between two updates of the `$SYS/broker/...` topics (retained, mosquitto's
    /// names; only the values that changed are published); 0: no `$SYS` topics at all.
    pub sys_interval: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1024 * 1024,
            receive_maximum: 256,
            max_inflight: 256,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            overflow_policy: OverflowPolicy::DropOldest,
            max_publisher_pause_ms: 2000,
            queue_qos0: false,
            maximum_qos: 2,
            retain_available: true,
            topic_alias_maximum: 64,
            max_session_expiry: Some(DEFAULT_MAX_SESSION_EXPIRY),
            max_keep_alive: None,
            connect_timeout_secs: 10,
            packet_timeout_secs: 30,
            max_connections: 100_000,
            max_connections_per_address: 1_000,
            max_sessions: 100_000,
            max_subscriptions_per_session: 1_000,
            max_topic_length: 4096,
            max_topic_levels: 128,
            max_retained_messages: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
            engine_queue: 4096,
            durability: DurabilityPolicy::Always,
            sync_interval_ms: 100,
            sys_interval: 10,
        }
    }
}

impl BrokerConfig {
    /// The keep-alive in force for a client asking for `requested` seconds: in 5.0 capped by
    /// `max_keep_alive` (0, "no keep-alive", is capped too) and announced as Server Keep
    /// Alive; 3.1.1 cannot announce it, so a 3.1.1 client keeps what it asked for.
    pub fn effective_keep_alive(&self, requested: u16, version: protocol::ProtocolVersion) -> u16 {
        match (self.max_keep_alive, version) {
            (Some(max), protocol::ProtocolVersion::V5) if requested == 0 || requested > max => max,
            _ => requested,
        }
    }

    /// The store's durability for this configuration.
    pub fn durability(&self) -> crate::store::Durability {
        match self.durability {
            DurabilityPolicy::Always => crate::store::Durability::Always,
            DurabilityPolicy::Interval => crate::store::Durability::Interval(
                std::time::Duration::from_millis(self.sync_interval_ms.max(1)),
            ),
            DurabilityPolicy::None => crate::store::Durability::None,
        }
    }

    /// The highest QoS granted.
    pub fn max_qos(&self) -> protocol::QoS {
        match self.maximum_qos {
            0 => protocol::QoS::AtMostOnce,
            1 => protocol::QoS::AtLeastOnce,
            _ => protocol::QoS::ExactlyOnce,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ProtocolVersion::{V311, V5};

    #[test]
    fn the_keep_alive_cap_applies_to_5_0_clients_who_are_told_and_not_to_3_1_1_ones() {
        let config = BrokerConfig {
            max_keep_alive: Some(30),
            ..Default::default()
        };
        // [MQTT-3.2.2-21]: 5.0 clients are told the Server Keep Alive.
        assert_eq!(config.effective_keep_alive(60, V5), 30);
        assert_eq!(config.effective_keep_alive(0, V5), 30);
        assert_eq!(config.effective_keep_alive(10, V5), 10);
        // 3.1.1 has no way to tell the client, so holding it to the cap would drop it.
        assert_eq!(config.effective_keep_alive(60, V311), 60);
        assert_eq!(config.effective_keep_alive(0, V311), 0);
    }
}
