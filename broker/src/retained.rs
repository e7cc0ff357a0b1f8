//! The retained message index: a trie of topic names, so a SUBSCRIBE finds the retained
//! messages its filter matches by walking the levels the filter can reach instead of
//! testing every retained message.
//!
//! A literal filter follows one path; `+` enumerates the children of its level; `#`
//! enumerates the subtree below it. A filter that matches nothing costs the few nodes on its
//! way to a dead end, however many messages are retained elsewhere (issue 10: 100 000
//! retained messages × 1 000 filters used to freeze the engine for 37 s).
//!
//! As in [`crate::subscriptions`], nodes live flat in a `Vec`, linked by index, and every
//! operation is a loop: topic depth is chosen by clients, and recursion over it overflowed
//! the engine thread's stack.

use std::collections::HashMap;

use protocol::TopicName;

/// The index of the root node, which exists always, holds no value and is never freed.
const ROOT: usize = 0;

/// `Frame::Match::pos` once the filter has no level left.
const END: usize = usize::MAX;

#[derive(Debug)]
struct Node<V> {
    /// The node this one hangs from (the root's is itself). Removal climbs these to prune.
    parent: usize,
    /// Children by level (empty levels are real levels).
    children: HashMap<Box<str>, usize>,
    /// The value retained on the topic this node ends, with that topic's name.
    value: Option<(TopicName, V)>,
}

impl<V> Node<V> {
    fn new(parent: usize) -> Self {
        Self {
            parent,
            children: HashMap::new(),
            value: None,
        }
    }
}

/// A map from topic names to `V` that answers "which topics does this filter match" by a
/// walk of the trie.
///
/// Invariant: every node but the root that is reachable from the root holds a value or has
/// a child (empty nodes are pruned at once); freed nodes are empty and listed in `free`;
/// `len` is the number of nodes holding a value.
#[derive(Debug)]
pub(crate) struct RetainedIndex<V> {
    /// The arena; index 0 is the root.
    nodes: Vec<Node<V>>,
    /// Freed node indices, reused before the arena grows.
    free: Vec<usize>,
    /// How many topics hold a value.
    len: usize,
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// A pending step of [`RetainedIndex::for_each_match`].
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// `node` is reached; the filter's next level starts at byte `pos` (or [`END`]).
    Match { node: usize, pos: usize },
    /// `node` and everything below it match (a `#` was reached).
    Subtree { node: usize },
}

impl<V> RetainedIndex<V> {
    /// An empty index.
    pub(crate) fn new() -> Self {
        Self {
            nodes: vec![Node::new(ROOT)],
            free: Vec::new(),
            len: 0,
        }
    }

    /// How many topics hold a value.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    /// No topic holds a value.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    /// How many trie nodes are in use, the root included (1 when empty).
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Sets the value of `topic`, returning the one it replaces.
    pub(crate) fn insert(&mut self, topic: &TopicName, value: V) -> Option<V> {
        let mut node = ROOT;
        for level in topic.levels() {
            node = match self.nodes[node].children.get(level) {
                Some(&child) => child,
                None => {
                    let child = self.alloc(node);
                    self.nodes[node].children.insert(level.into(), child);
                    child
                }
            };
        }
        let old = self.nodes[node].value.replace((topic.clone(), value));
        if old.is_none() {
            self.len += 1;
        }
        old.map(|(_, v)| v)
    }

    /// Removes the value of `topic` (a `&TopicName` coerces), pruning the nodes left empty.
    pub(crate) fn remove(&mut self, topic: &str) -> Option<V> {
        let mut node = self.find(topic)?;
        let (_, value) = self.nodes[node].value.take()?;
        self.len -= 1;
        for level in topic.rsplit('/') {
            let n = &self.nodes[node];
            if node == ROOT || n.value.is_some() || !n.children.is_empty() {
                break;
            }
            let parent = n.parent;
            self.nodes[parent].children.remove(level);
            self.release(node);
            node = parent;
        }
        Some(value)
    }

    /// The value of `topic`.
    pub(crate) fn get(&self, topic: &str) -> Option<&V> {
        let node = self.find(topic)?;
        self.nodes[node].value.as_ref().map(|(_, v)| v)
    }

    /// The value of `topic`, to change in place.
    #[cfg(test)]
    pub(crate) fn get_mut(&mut self, topic: &str) -> Option<&mut V> {
        let node = self.find(topic)?;
        self.nodes[node].value.as_mut().map(|(_, v)| v)
    }

    /// Whether `topic` holds a value.
    pub(crate) fn contains_key(&self, topic: &str) -> bool {
        self.get(topic).is_some()
    }

    /// Every topic and its value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&TopicName, &V)> {
        self.nodes
            .iter()
            .filter_map(|n| n.value.as_ref().map(|(t, v)| (t, v)))
    }

    #[cfg(test)]
    /// Every value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Keeps only the topics for which `keep` returns true (e.g. to drop expired messages).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&TopicName, &mut V) -> bool) {
        let mut doomed = Vec::new();
        for n in &mut self.nodes {
            if let Some((t, v)) = &mut n.value {
                if !keep(t, v) {
                    doomed.push(t.clone());
                }
            }
        }
        for t in doomed {
            self.remove(t.as_str());
        }
    }

    /// Calls `f` for every topic that `filter` matches, with the `$` rule: a filter starting
    /// with `+` or `#` does not match a topic starting with `$` [MQTT-4.7.2-1]; `a/#` matches
    /// `a` [MQTT-4.7.1-2]. The cost is the nodes the filter can reach, not the size of the
    /// index. `filter` is a plain filter: shared subscriptions get no retained messages and
    /// their `$share/g/` prefix is not understood here.
    #[cfg(test)]
    pub(crate) fn for_each_match(&self, filter: &str, mut f: impl FnMut(&TopicName, &V)) {
        self.walk(filter, |t, v| {
            f(t, v);
            true
        });
    }

    /// [`Self::for_each_match`] until `f` returns false: the walk stops there, so a caller
    /// with a budget pays only for what it takes.
    pub(crate) fn for_each_match_while(&self, filter: &str, f: impl FnMut(&TopicName, &V) -> bool) {
        self.walk(filter, f);
    }

    /// [`Self::for_each_match_while`], returning how many nodes it visited (the work done).
    fn walk(&self, filter: &str, mut f: impl FnMut(&TopicName, &V) -> bool) -> usize {
        let mut stack = vec![Frame::Match { node: ROOT, pos: 0 }];
        let mut visited = 0;
        let go = std::cell::Cell::new(true);
        let mut emit = |node: &Node<V>| {
            if let (true, Some((t, v))) = (go.get(), &node.value) {
                go.set(f(t, v));
            }
        };
        while let Some(frame) = stack.pop() {
            if !go.get() {
                break;
            }
            visited += 1;
            match frame {
                Frame::Subtree { node } => {
                    let Some(n) = self.nodes.get(node) else {
                        continue;
                    };
                    emit(n);
                    stack.extend(n.children.values().map(|&c| Frame::Subtree { node: c }));
                }
                Frame::Match { node, pos } => {
                    let Some(n) = self.nodes.get(node) else {
                        continue;
                    };
                    if pos == END {
                        emit(n);
                        continue;
                    }
                    let (level, next) = level_at(filter, pos);
                    // Wildcards at the first level skip `$` topics [MQTT-4.7.2-1].
                    let wild = n
                        .children
                        .iter()
                        .filter(|(k, _)| node != ROOT || !k.starts_with('$'))
                        .map(|(_, &c)| c);
                    match level {
                        "#" => {
                            // The parent level too: `a/#` matches `a` [MQTT-4.7.1-2].
                            emit(n);
                            stack.extend(wild.map(|c| Frame::Subtree { node: c }));
                        }
                        "+" => {
                            stack.extend(wild.map(|c| Frame::Match { node: c, pos: next }));
                        }
                        _ => {
                            if let Some(&c) = n.children.get(level) {
                                stack.push(Frame::Match { node: c, pos: next });
                            }
                        }
                    }
                }
            }
        }
        visited
    }

    /// The node of `topic`, if it exists.
    fn find(&self, topic: &str) -> Option<usize> {
        let mut node = ROOT;
        for level in topic.split('/') {
            node = *self.nodes.get(node)?.children.get(level)?;
        }
        Some(node)
    }

    /// A fresh empty node under `parent`.
    fn alloc(&mut self, parent: usize) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Node::new(parent);
                i
            }
            None => {
                self.nodes.push(Node::new(parent));
                self.nodes.len() - 1
            }
        }
    }

    /// Returns an unlinked, empty node to the free list; once only the root is left, the
    /// arena gives its memory back.
    fn release(&mut self, node: usize) {
        self.nodes[node] = Node::new(ROOT);
        self.free.push(node);
        if self.free.len() + 1 == self.nodes.len() {
            self.nodes.truncate(1);
            self.nodes.shrink_to_fit();
            self.free = Vec::new();
        }
    }
}

/// The level of `filter` starting at byte `pos` and where the next one starts.
fn level_at(filter: &str, pos: usize) -> (&str, usize) {
    let rest = filter.get(pos..).unwrap_or_default();
    match rest.split_once('/') {
        Some((level, _)) => (level, pos + level.len() + 1),
        None => (rest, END),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::{Rng, FILTER_LEVELS, TOPIC_LEVELS};

    fn name(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    fn matched(index: &RetainedIndex<u32>, filter: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.for_each_match(filter, |t, v| {
            assert_eq!(index.get(t), Some(v), "the leaf's name is its topic");
            out.push(*v);
        });
        out.sort_unstable();
        out
    }

    #[test]
    fn the_index_matches_exactly_like_the_reference_matcher_on_random_topics_and_filters() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _round in 0..50 {
            let mut index = RetainedIndex::new();
            let mut reference: HashMap<String, u32> = HashMap::new();
            for i in 0..60 {
                let t = rng.levels(TOPIC_LEVELS, TOPIC_LEVELS);
                let Ok(topic) = TopicName::new(&t) else {
                    continue;
                };
                if rng.below(4) == 0 {
                    assert_eq!(index.remove(&topic), reference.remove(&t));
                } else {
                    assert_eq!(index.insert(&topic, i), reference.insert(t, i));
                }
                assert_eq!(index.len(), reference.len());
            }
            for _ in 0..60 {
                let f = rng.levels(FILTER_LEVELS, &["#"]);
                if protocol::TopicFilter::new(&f).is_err() {
                    continue;
                }
                let mut expected: Vec<u32> = reference
                    .iter()
                    .filter(|(t, _)| protocol::topic::matches(&f, t))
                    .map(|(_, v)| *v)
                    .collect();
                expected.sort_unstable();
                assert_eq!(matched(&index, &f), expected, "filter {f:?}");
            }
            let mut all: Vec<u32> = index.values().copied().collect();
            all.sort_unstable();
            let mut expected: Vec<u32> = reference.values().copied().collect();
            expected.sort_unstable();
            assert_eq!(all, expected);
            for t in reference.keys() {
                assert!(index.remove(t).is_some());
            }
            assert!(index.is_empty());
            assert_eq!(index.node_count(), 1, "removal prunes back to the root");
        }
    }

    #[test]
    fn wildcards_at_the_first_level_skip_dollar_topics_and_hash_matches_its_parent() {
        let mut index = RetainedIndex::new();
        for (i, t) in ["$SYS/a", "$SYS", "sport", "sport/x", "a/$b"]
            .iter()
            .enumerate()
        {
            index.insert(&name(t), i as u32);
        }
        assert_eq!(matched(&index, "#"), vec![2, 3, 4]);
        assert_eq!(matched(&index, "+"), vec![2]);
        assert_eq!(
            matched(&index, "+/+"),
            vec![3, 4],
            "only the first level is guarded"
        );
        assert_eq!(matched(&index, "$SYS/#"), vec![0, 1]);
        assert_eq!(matched(&index, "sport/#"), vec![2, 3]);
        assert_eq!(matched(&index, "sport/+"), vec![3]);
        assert_eq!(matched(&index, "sport/x/#"), vec![3]);
        assert_eq!(matched(&index, "a/$b"), vec![4]);
    }

    #[test]
    fn get_replace_retain_and_remove_keep_the_count_and_prune() {
        let mut index = RetainedIndex::new();
        assert_eq!(index.insert(&name("a/b"), 1), None);
        assert_eq!(index.insert(&name("a/b"), 2), Some(1));
        assert_eq!(index.insert(&name("a"), 3), None);
        assert_eq!(index.insert(&name("a/c/d"), 4), None);
        assert_eq!((index.len(), index.node_count()), (3, 5));
        *index.get_mut("a").unwrap() += 10;
        assert_eq!(index.get("a"), Some(&13));
        assert_eq!(index.get("a/c"), None);
        assert!(!index.contains_key("a/c"));
        assert_eq!(index.remove("a/c"), None);
        index.retain(|t, _| t.as_str() != "a/c/d");
        assert_eq!((index.len(), index.node_count()), (2, 3));
        let mut names: Vec<&str> = index.iter().map(|(t, _)| t.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["a", "a/b"]);
        assert_eq!(index.remove("a"), Some(13));
        assert_eq!(index.node_count(), 3, "a stays as the way to a/b");
        assert_eq!(index.remove("a/b"), Some(2));
        assert_eq!((index.len(), index.node_count()), (0, 1));
        assert_eq!(index.nodes.len(), 1, "the arena gave its nodes back");
    }

    #[test]
    fn a_filter_matching_nothing_among_a_hundred_thousand_retained_topics_visits_a_few_nodes() {
        let mut index = RetainedIndex::new();
        for i in 0..100_000u32 {
            index.insert(&name(&format!("devices/{i}/state")), i);
        }
        for filter in [
            "other/#",
            "devices/100001/state",
            "+/nothing/#",
            "devices/7/+/x",
        ] {
            let visited = index.walk(filter, |t, _| panic!("{filter} matched {t}"));
            assert!(visited <= 4, "{filter} visited {visited} nodes");
        }
        let mut seen = Vec::new();
        let visited = index.walk("+/77/#", |_, v| {
            seen.push(*v);
            true
        });
        assert_eq!((seen, visited), (vec![77], 4));
    }

    #[test]
    fn a_topic_of_sixty_five_thousand_levels_is_inserted_matched_removed_and_dropped_on_a_64_kib_stack(
    ) {
        // The longest valid name is 65 535 bytes: 65 536 empty levels, or 32 768 "a".
        let empty = "/".repeat(65_535);
        let a = format!("{}a", "a/".repeat(32_767));
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut index = RetainedIndex::new();
                index.insert(&name(&empty), 0);
                index.insert(&name(&a), 1);
                index.insert(&name(&a[..a.len() - 2]), 2);
                assert!(index.node_count() > 98_000);
                assert_eq!(matched(&index, "#"), vec![0, 1, 2]);
                assert_eq!(matched(&index, &empty), vec![0]);
                let plus = format!("{}+", "+/".repeat(32_767));
                assert_eq!(matched(&index, &plus), vec![1]);
                assert_eq!(
                    matched(&index, &format!("{}/#", &a[..a.len() - 2])),
                    vec![1, 2]
                );
                assert_eq!(index.remove(&empty), Some(0));
                assert_eq!(index.remove(&a), Some(1));
                // One deep topic is left in place for Drop to free.
                drop(index);
                let mut index = RetainedIndex::new();
                index.insert(&name(&a), 1);
                index.retain(|_, _| false);
                assert_eq!(index.node_count(), 1);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
