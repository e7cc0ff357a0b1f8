//! The subscription index: which sessions want a topic.
//!
//! A trie on topic levels, with `+` and `#` children, so matching a topic costs a walk of
//! its levels rather than a test of every filter. Shared subscriptions (`$share/g/f`) are
//! kept apart, per group, and one member of each matching group gets the message.

use std::collections::HashMap;
use std::sync::Arc;

use protocol::{SubscriptionOptions, TopicFilter};

use crate::session::SessionId;

/// One subscription's options and identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    /// The options it was made with (QoS is the granted QoS).
    pub options: SubscriptionOptions,
    /// Its 5.0 Subscription Identifier.
    pub id: Option<u32>,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    subs: HashMap<SessionId, SubEntry>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.subs.is_empty()
            && self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
    }
}

/// A shared subscription group: its members take turns.
#[derive(Debug, Default)]
pub struct Group {
    /// Members in subscription order.
    pub members: Vec<(SessionId, SubEntry)>,
    /// Whose turn is next.
    pub next: usize,
}

/// The index of every subscription.
#[derive(Debug, Default)]
pub struct Subscriptions {
    root: Node,
    /// Shared groups by (group name, filter).
    shared: HashMap<(Arc<str>, TopicFilter), Group>,
    count: usize,
}

impl Subscriptions {
    /// How many subscriptions (shared ones included).
    pub fn len(&self) -> usize {
        self.count
    }

    /// No subscriptions.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces `session`'s subscription to `filter`. Returns true if it existed.
    pub fn insert(&mut self, session: SessionId, filter: &TopicFilter, entry: SubEntry) -> bool {
        let existed = if let Ok(Some(shared)) = filter.shared() {
            let group = self
                .shared
                .entry((shared.group, shared.filter))
                .or_default();
            match group.members.iter_mut().find(|(s, _)| *s == session) {
                Some(m) => {
                    m.1 = entry;
                    true
                }
                None => {
                    group.members.push((session, entry));
                    false
                }
            }
        } else {
            let mut node = &mut self.root;
            for level in filter.as_str().split('/') {
                node = match level {
                    "+" => node.plus.get_or_insert_with(Box::default),
                    "#" => node.hash.get_or_insert_with(Box::default),
                    _ => node.children.entry(level.into()).or_default(),
                };
            }
            node.subs.insert(session, entry).is_some()
        };
        if !existed {
            self.count += 1;
        }
        existed
    }

    /// Removes `session`'s subscription to `filter`. Returns true if it existed.
    pub fn remove(&mut self, session: SessionId, filter: &TopicFilter) -> bool {
        let removed = if let Ok(Some(shared)) = filter.shared() {
            let key = (shared.group, shared.filter);
            let Some(group) = self.shared.get_mut(&key) else {
                return false;
            };
            let before = group.members.len();
            group.members.retain(|(s, _)| *s != session);
            let removed = group.members.len() != before;
            if group.members.is_empty() {
                self.shared.remove(&key);
            }
            removed
        } else {
            let levels: Vec<&str> = filter.as_str().split('/').collect();
            remove_in(&mut self.root, &levels, session)
        };
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Calls `f` for every non-shared subscription matching `topic`, with the `$` rule
    /// [MQTT-4.7.2-1].
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(SessionId, &SubEntry)) {
        let system = topic.starts_with('$');
        walk(&self.root, topic.split('/'), true, system, &mut f);
    }

    /// The shared groups whose filter matches `topic`.
    pub fn matching_groups<'a>(
        &'a mut self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a mut Group> + 'a {
        self.shared
            .iter_mut()
            .filter(move |((_, filter), _)| protocol::topic::matches(filter.as_str(), topic))
            .map(|(_, g)| g)
    }
}

fn walk<'t>(
    node: &Node,
    mut levels: std::str::Split<'t, char>,
    first: bool,
    system: bool,
    f: &mut impl FnMut(SessionId, &SubEntry),
) {
    let wild_ok = !(first && system);
    let Some(level) = levels.next() else {
        for (s, e) in &node.subs {
            f(*s, e);
        }
        // "sport/#" also matches "sport" [MQTT-4.7.1-2].
        if let Some(h) = &node.hash {
            for (s, e) in &h.subs {
                f(*s, e);
            }
        }
        return;
    };
    if wild_ok {
        if let Some(h) = &node.hash {
            for (s, e) in &h.subs {
                f(*s, e);
            }
        }
        if let Some(p) = &node.plus {
            walk(p, levels.clone(), false, system, f);
        }
    }
    if let Some(c) = node.children.get(level) {
        walk(c, levels, false, system, f);
    }
}

fn remove_in(node: &mut Node, levels: &[&str], session: SessionId) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return node.subs.remove(&session).is_some();
    };
    let (removed, empty) = match *level {
        "+" | "#" => {
            let slot = if *level == "+" {
                &mut node.plus
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_mut() else {
                return false;
            };
            let removed = remove_in(child, rest, session);
            let empty = child.is_empty();
            if empty {
                *slot = None;
            }
            (removed, false)
        }
        _ => {
            let Some(child) = node.children.get_mut(*level) else {
                return false;
            };
            let removed = remove_in(child, rest, session);
            (removed, child.is_empty())
        }
    };
    if empty {
        node.children.remove(*level);
    }
    removed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use protocol::QoS;

    fn entry(qos: QoS) -> SubEntry {
        SubEntry {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            id: None,
        }
    }

    fn matches(subs: &Subscriptions, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        subs.for_each_match(topic, |s, _| out.push(s.0));
        out.sort_unstable();
        out
    }

    #[test]
    fn the_trie_matches_like_the_reference_matcher() {
        let filters = [
            "a/b", "a/+", "a/#", "#", "+/b", "+", "$SYS/#", "a/+/c", "/a", "+/+",
        ];
        let topics = ["a/b", "a", "a/b/c", "b", "$SYS/x", "/a", "a/x/c", "x/b", ""];
        let mut subs = Subscriptions::default();
        for (i, f) in filters.iter().enumerate() {
            subs.insert(
                SessionId(i as u64),
                &TopicFilter::new(f).unwrap(),
                entry(QoS::AtMostOnce),
            );
        }
        for topic in topics {
            if topic.is_empty() {
                continue;
            }
            let expected: Vec<u64> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| protocol::topic::matches(f, topic))
                .map(|(i, _)| i as u64)
                .collect();
            assert_eq!(matches(&subs, topic), expected, "topic {topic}");
        }
    }

    #[test]
    fn removing_prunes_and_counts() {
        let mut subs = Subscriptions::default();
        let f = TopicFilter::new("a/+/c").unwrap();
        assert!(!subs.insert(SessionId(1), &f, entry(QoS::AtMostOnce)));
        assert!(subs.insert(SessionId(1), &f, entry(QoS::AtLeastOnce)));
        assert_eq!(subs.len(), 1);
        assert!(subs.remove(SessionId(1), &f));
        assert!(!subs.remove(SessionId(1), &f));
        assert!(subs.root.is_empty());
        assert!(subs.is_empty());
    }

    #[test]
    fn shared_groups_are_kept_apart_from_the_trie() {
        let mut subs = Subscriptions::default();
        let f = TopicFilter::new("$share/g/a/#").unwrap();
        subs.insert(SessionId(1), &f, entry(QoS::AtMostOnce));
        subs.insert(SessionId(2), &f, entry(QoS::AtMostOnce));
        assert!(matches(&subs, "a/b").is_empty());
        let groups: Vec<usize> = subs
            .matching_groups("a/b")
            .map(|g| g.members.len())
            .collect();
        assert_eq!(groups, vec![2]);
        assert!(subs.remove(SessionId(1), &f));
        assert!(subs.remove(SessionId(2), &f));
        assert_eq!(subs.matching_groups("a/b").count(), 0);
    }
}
