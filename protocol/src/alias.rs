//! Topic aliases for the sending side (MQTT 5.0, spec 3.3.2.3.4).
//!
//! The receiving side lives in [`crate::Decoder`]. Here the sender gives the first `max`
//! distinct topics an alias each (the receiver's Topic Alias Maximum); a later message to
//! one of them goes out with the alias and an empty topic, saving the topic's bytes.

// A hash map with std (the broker); an ordered map without it (the wasm client, where
// HashMap is not available and the map holds a handful of topics).
#[cfg(not(feature = "std"))]
use alloc::collections::BTreeMap as Map;
#[cfg(feature = "std")]
use std::collections::HashMap as Map;

use crate::packet::Publish;
use crate::topic::TopicName;

/// Assigns and applies outgoing topic aliases for one network connection (aliases do not
/// outlive it [MQTT-3.3.2-7]).
#[derive(Debug, Default)]
pub struct OutboundAliases {
    max: u16,
    map: Map<TopicName, u16>,
}

impl OutboundAliases {
    /// Aliases 1 to `max` (the receiver's Topic Alias Maximum; 0 = none [MQTT-3.3.2-8]).
    pub fn new(max: u16) -> Self {
        OutboundAliases {
            max,
            map: Map::new(),
        }
    }

    /// Rewrites `p` to use an alias when it can: a known topic becomes its alias and an
    /// empty topic; a new topic gets the next free alias and keeps its name, so the
    /// receiver learns the mapping. Only for MQTT 5.0 connections.
    ///
    /// Returns true when it registered a new alias: if the packet is then not sent (too
    /// large for the receiver, say), call [`OutboundAliases::forget`] with its topic, or the
    /// receiver would later get an alias it never learnt.
    pub fn apply(&mut self, p: &mut Publish) -> bool {
        if self.max == 0 || p.topic.is_empty() {
            return false;
        }
        if let Some(&alias) = self.map.get(&p.topic) {
            p.properties.topic_alias = Some(alias);
            p.topic = TopicName::alias_placeholder();
            false
        } else if self.map.len() < usize::from(self.max) {
            let alias = u16::try_from(self.map.len() + 1).unwrap_or(u16::MAX);
            self.map.insert(p.topic.clone(), alias);
            p.properties.topic_alias = Some(alias);
            true
        } else {
            false
        }
    }

    /// Takes back the alias of `topic` registered by the last [`OutboundAliases::apply`],
    /// whose packet was not sent. Aliases are handed out in order, so only the newest can be
    /// taken back; it is then handed out again.
    pub fn forget(&mut self, topic: &TopicName) {
        if self.map.get(topic).copied() == u16::try_from(self.map.len()).ok() {
            self.map.remove(topic);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Decoder, Packet, ProtocolVersion};
    use bytes::Bytes;

    #[test]
    fn aliased_publishes_decode_back_to_their_topics_mqtt_3_3_2_3_4() {
        let mut aliases = OutboundAliases::new(1);
        let mut decoder = Decoder::with_version(ProtocolVersion::V5, 1024);
        decoder.set_topic_alias_maximum(1);
        let mut wire = Vec::new();
        for topic in ["a/b", "a/b", "c", "a/b"] {
            let mut p = Publish::new(TopicName::new(topic).unwrap(), Bytes::from_static(b"x"));
            aliases.apply(&mut p);
            Packet::Publish(p)
                .encode(ProtocolVersion::V5, &mut wire)
                .unwrap();
        }
        // The second "a/b" went out without its name; "c" had no alias left.
        let mut input = &wire[..];
        let mut topics = Vec::new();
        while let Some(Packet::Publish(p)) = decoder.decode(&mut input).unwrap() {
            assert_eq!(p.properties.topic_alias, None);
            topics.push(p.topic.to_string());
        }
        assert_eq!(topics, ["a/b", "a/b", "c", "a/b"]);
        assert!(wire.len() < 4 * 10);
    }

    #[test]
    fn a_forgotten_alias_is_announced_again_with_its_topic() {
        let mut aliases = OutboundAliases::new(4);
        let mut p = Publish::new(TopicName::new("a").unwrap(), Bytes::new());
        assert!(aliases.apply(&mut p));
        aliases.forget(&p.topic);
        let mut again = Publish::new(TopicName::new("a").unwrap(), Bytes::new());
        assert!(aliases.apply(&mut again));
        assert_eq!(again.topic.as_str(), "a");
        assert_eq!(again.properties.topic_alias, Some(1));
    }
}
