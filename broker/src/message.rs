//! An application message as the broker holds it: shared by every session it is queued for.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use protocol::{Properties, Publish, QoS, TopicName};

/// A published message, once, however many sessions it goes to.
#[derive(Debug)]
pub(crate) struct Message {
    /// Its identity, given by the engine: unique within the process, and above every id the
    /// store held at start, so it never names another message that is still stored. The
    /// store keeps one copy of a message however many sessions it is queued for, by this id.
    pub(crate) id: u64,
    /// Its topic.
    pub(crate) topic: TopicName,
    /// Its payload (shared, never copied per subscriber).
    pub(crate) payload: Bytes,
    /// The QoS it was published with (a subscriber may get it lower).
    pub(crate) qos: QoS,
    /// The RETAIN flag it was published with.
    pub(crate) retain: bool,
    /// The properties passed through to subscribers (5.0): payload format, content type,
    /// response topic, correlation data, user properties. Never a Topic Alias or a
    /// Subscription Identifier, which belong to one connection or one subscription.
    pub(crate) properties: Properties,
    /// When it expires (5.0 Message Expiry Interval), if ever.
    pub(crate) expires_at: Option<Instant>,
    /// When the broker received it.
    pub(crate) received_at: Instant,
    /// The client id of the publisher (for No Local and for the dashboard); `None` for a
    /// will of an ended session or a message made by the broker.
    pub(crate) publisher: Option<Arc<str>>,
}

impl Message {
    /// The message carried by an incoming PUBLISH, with the id the engine gave it.
    pub(crate) fn from_publish(
        p: Publish,
        id: u64,
        publisher: Option<Arc<str>>,
        now: Instant,
    ) -> Message {
        let mut properties = p.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .map(|s| now + std::time::Duration::from_secs(u64::from(s)));
        Message {
            id,
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at,
            received_at: now,
            publisher,
        }
    }

    /// Has it expired?
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The PUBLISH that delivers it: QoS and RETAIN as given, the Message Expiry Interval
    /// lowered by the time it waited [MQTT-3.3.2-6], the subscription identifiers of the
    /// matching subscriptions [MQTT-3.3.4-3].
    pub(crate) fn to_publish(
        &self,
        qos: QoS,
        retain: bool,
        sub_ids: &[u32],
        now: Instant,
    ) -> Publish {
        let mut properties = self.properties.clone();
        if let Some(at) = self.expires_at {
            let left = at.saturating_duration_since(now).as_secs();
            properties.message_expiry_interval = Some(u32::try_from(left).unwrap_or(u32::MAX));
        }
        properties
            .subscription_identifiers
            .extend_from_slice(sub_ids);
        Publish {
            dup: false,
            qos,
            retain,
            topic: self.topic.clone(),
            packet_id: None,
            payload: self.payload.clone(),
            properties,
        }
    }
}

/// A shared message.
pub(crate) type Msg = Arc<Message>;
