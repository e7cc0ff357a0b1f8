//! The subscription index: which sessions want a topic.
//!
//! A trie on topic levels, with `+` and `#` edges, so matching a topic costs a walk of its
//! levels rather than a test of every filter. Shared subscriptions (`$share/g/f`) live in the
//! same trie: the node of `f` holds its groups by name, so the walk that finds the ordinary
//! subscribers of a topic finds its groups too, whatever the number of groups elsewhere.
//!
//! # Why an arena and no recursion
//! A filter's depth is chosen by the client. A recursive walk, or a tree of boxed nodes whose
//! `Drop` recurses, puts one stack frame per level on the engine thread: a SUBSCRIBE of a few
//! thousand levels overflowed its stack and aborted the process (issue 10). Here the nodes
//! are kept flat in a `Vec` and linked by index; insertion, removal (pruning through parent
//! links) and matching (an explicit stack of frames) are loops, and the arena drops as a flat
//! `Vec`. Freed nodes go to a free list and are reused.
//!
//! # Memory
//! Most nodes hold no subscription (the inner levels of a filter), and many filters are
//! one client's own (`home/<client>/cmd`), so every node pays for what a node needs: its
//! edges, and a pointer to its subscriptions, made only for a node where a filter ends
//! ([`Subscriptions::payload`]). Inline, the two hash tables of a payload were 96 bytes in
//! every node. A payload's own subscriptions are a sorted vector while few ([`Subscribers`]):
//! a hash table of one entry costs a 128-byte allocation, a vector 32, and most filters have
//! one subscriber (a client's own topic); its shared groups, rarer still, are boxed.

use std::collections::HashMap;
use std::sync::Arc;

use protocol::{SubscriptionOptions, TopicFilter, VecMap};

use crate::ids::SessionId;

/// One subscription's options and identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    /// The options it was made with (QoS is the granted QoS).
    pub options: SubscriptionOptions,
    /// Its 5.0 Subscription Identifier.
    pub id: Option<u32>,
}

/// A shared subscription group: its members take turns.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// Members in subscription order.
    pub(crate) members: Vec<(SessionId, SubEntry)>,
    /// Whose turn is next.
    pub(crate) next: usize,
}

/// The index of the root node, which exists always and is never freed.
const ROOT: usize = 0;

/// A node's edges: the shape of the trie.
#[derive(Debug, Default)]
struct Links {
    /// The node this one hangs from (the root's is itself). Removal climbs these to prune.
    parent: usize,
    /// Children by literal level (empty levels are real levels).
    children: HashMap<Box<str>, usize>,
    /// The `+` child.
    plus: Option<usize>,
    /// The `#` child, always a leaf since `#` is only ever the last level.
    hash: Option<usize>,
}

/// What a node holds: the subscriptions whose filter ends at it.
#[derive(Debug, Default)]
struct Payload {
    /// Ordinary subscriptions.
    subs: Subscribers,
    /// Shared subscription groups by group name; none is ever left without members, and
    /// `None` when there is none. Boxed on purpose: 8 bytes in every payload, not 48.
    #[allow(clippy::box_collection)]
    groups: Option<Box<HashMap<Arc<str>, Group>>>,
}

impl Payload {
    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.groups.is_none()
    }

    /// The groups, made if there were none.
    fn groups_mut(&mut self) -> &mut HashMap<Arc<str>, Group> {
        self.groups.get_or_insert_with(Box::default)
    }
}

/// Up to this many subscribers a node keeps them in a sorted vector; past it, in a hash
/// table (where a vector's inserts and removals would shift thousands of entries).
const FEW: usize = 16;

/// The ordinary subscriptions of one node, by session.
#[derive(Debug)]
enum Subscribers {
    /// At most [`FEW`]: exactly its entries of memory.
    Few(VecMap<SessionId, SubEntry>),
    /// More than [`FEW / 2`](FEW) (it goes back to a vector at half, so a count that
    /// hovers at the boundary does not convert back and forth).
    Many(HashMap<SessionId, SubEntry>),
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers::Few(VecMap::new())
    }
}

impl Subscribers {
    fn is_empty(&self) -> bool {
        match self {
            Subscribers::Few(m) => m.is_empty(),
            Subscribers::Many(m) => m.is_empty(),
        }
    }

    /// Adds or replaces `session`'s entry; returns the one it replaces.
    fn insert(&mut self, session: SessionId, entry: SubEntry) -> Option<SubEntry> {
        match self {
            Subscribers::Few(m) if m.len() < FEW || m.contains_key(&session) => {
                m.insert(session, entry)
            }
            Subscribers::Few(m) => {
                let mut many: HashMap<_, _> =
                    std::mem::take(m).iter().map(|(s, e)| (*s, *e)).collect();
                many.insert(session, entry);
                *self = Subscribers::Many(many);
                None
            }
            Subscribers::Many(m) => m.insert(session, entry),
        }
    }

    /// Removes `session`'s entry; returns it.
    fn remove(&mut self, session: SessionId) -> Option<SubEntry> {
        match self {
            Subscribers::Few(m) => m.remove(&session),
            Subscribers::Many(m) => {
                let removed = m.remove(&session);
                if m.len() <= FEW / 2 {
                    let mut few = VecMap::new();
                    for (s, e) in m.drain() {
                        few.insert(s, e);
                    }
                    *self = Subscribers::Few(few);
                }
                removed
            }
        }
    }

    /// Calls `f` with every entry.
    fn for_each(&self, mut f: impl FnMut(SessionId, &SubEntry)) {
        match self {
            Subscribers::Few(m) => m.iter().for_each(|(s, e)| f(*s, e)),
            Subscribers::Many(m) => m.iter().for_each(|(s, e)| f(*s, e)),
        }
    }
}

/// The index of every subscription.
///
/// Invariant: `links` and `payload` have the same length and index `i` of both is node `i`;
/// every node but the root that is reachable from the root holds a subscription or has a
/// child (empty nodes are pruned at once); freed nodes are empty and listed in `free`.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    /// The edges of every node, kept apart from the payload so that a walk over the edges
    /// can hand out `&mut Group`s.
    links: Vec<Links>,
    /// The subscriptions of every node: `None` where none ends (most nodes), so that such
    /// a node costs a pointer rather than two empty hash tables.
    payload: Vec<Option<Box<Payload>>>,
    /// Freed node indices, reused before the arena grows.
    free: Vec<usize>,
    /// Subscriptions, shared members included.
    count: usize,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self {
            links: vec![Links::default()],
            payload: vec![None],
            free: Vec::new(),
            count: 0,
        }
    }
}

impl Subscriptions {
    #[cfg(test)]
    /// How many subscriptions (shared ones included).
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    #[cfg(test)]
    /// No subscriptions.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    #[cfg(test)]
    /// How many trie nodes are in use, the root included (1 when empty).
    pub(crate) fn node_count(&self) -> usize {
        self.links.len() - self.free.len()
    }

    /// Adds or replaces `session`'s subscription to `filter`. Returns true if it existed.
    pub(crate) fn insert(
        &mut self,
        session: SessionId,
        filter: &TopicFilter,
        entry: SubEntry,
    ) -> bool {
        let existed = if let Ok(Some(shared)) = filter.shared() {
            let node = self.node_for(shared.filter.as_str());
            let group = self
                .payload_mut(node)
                .groups_mut()
                .entry(shared.group)
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
            let node = self.node_for(filter.as_str());
            self.payload_mut(node).subs.insert(session, entry).is_some()
        };
        if !existed {
            self.count += 1;
        }
        existed
    }

    /// Removes `session`'s subscription to `filter`. Returns true if it existed.
    pub(crate) fn remove(&mut self, session: SessionId, filter: &TopicFilter) -> bool {
        let (node, path, removed) = if let Ok(Some(shared)) = filter.shared() {
            let Some(node) = self.find(shared.filter.as_str()) else {
                return false;
            };
            let Some(Some(payload)) = self.payload.get_mut(node) else {
                return false;
            };
            let Some(groups) = payload.groups.as_deref_mut() else {
                return false;
            };
            let Some(group) = groups.get_mut(&shared.group) else {
                return false;
            };
            let before = group.members.len();
            group.members.retain(|(s, _)| *s != session);
            let removed = group.members.len() != before;
            if group.members.is_empty() {
                groups.remove(&shared.group);
                if groups.is_empty() {
                    payload.groups = None;
                }
            }
            (node, shared.filter, removed)
        } else {
            let Some(node) = self.find(filter.as_str()) else {
                return false;
            };
            let removed = match self.payload.get_mut(node) {
                Some(Some(payload)) => payload.subs.remove(session).is_some(),
                _ => false,
            };
            (node, filter.clone(), removed)
        };
        if let Some(slot) = self.payload.get_mut(node) {
            if slot.as_ref().is_some_and(|p| p.is_empty()) {
                *slot = None;
            }
        }
        self.prune(node, path.as_str());
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Calls `f` for every non-shared subscription matching `topic`, with the `$` rule
    /// [MQTT-4.7.2-1]. Costs a walk of the trie along `topic`, not a test of every filter.
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(SessionId, &SubEntry)) {
        walk(&self.links, topic, |node| {
            if let Some(Some(p)) = self.payload.get(node) {
                p.subs.for_each(&mut f);
            }
        });
    }

    /// Calls `f` for every shared group whose filter matches `topic`, with the `$` rule
    /// [MQTT-4.7.2-1]. Found on the same kind of walk as [`Self::for_each_match`]: groups on
    /// other topics cost nothing.
    pub(crate) fn for_each_matching_group(
        &mut self,
        topic: &str,
        mut f: impl FnMut(&str, &mut Group),
    ) {
        let payload = &mut self.payload;
        walk(&self.links, topic, |node| {
            let groups = payload
                .get_mut(node)
                .and_then(|p| p.as_mut()?.groups.as_deref_mut());
            if let Some(groups) = groups {
                for (name, group) in groups.iter_mut() {
                    f(name, group);
                }
            }
        });
    }

    /// The subscriptions of `node`, made if it had none.
    fn payload_mut(&mut self, node: usize) -> &mut Payload {
        self.payload[node].get_or_insert_with(Box::default)
    }

    /// The node of `filter`, created (with its path) if missing.
    fn node_for(&mut self, filter: &str) -> usize {
        let mut node = ROOT;
        for level in filter.split('/') {
            let links = &self.links[node];
            let existing = match level {
                "+" => links.plus,
                "#" => links.hash,
                _ => links.children.get(level).copied(),
            };
            node = match existing {
                Some(child) => child,
                None => {
                    let child = self.alloc(node);
                    let links = &mut self.links[node];
                    match level {
                        "+" => links.plus = Some(child),
                        "#" => links.hash = Some(child),
                        _ => {
                            links.children.insert(level.into(), child);
                        }
                    }
                    child
                }
            };
        }
        node
    }

    /// The node of `filter`, if it exists.
    fn find(&self, filter: &str) -> Option<usize> {
        let mut node = ROOT;
        for level in filter.split('/') {
            let links = self.links.get(node)?;
            node = match level {
                "+" => links.plus?,
                "#" => links.hash?,
                _ => *links.children.get(level)?,
            };
        }
        Some(node)
    }

    /// Frees `node` and then its ancestors, bottom-up, for as long as they are empty.
    /// `filter` is the filter whose last level `node` is.
    fn prune(&mut self, mut node: usize, filter: &str) {
        for level in filter.rsplit('/') {
            if node == ROOT || !self.is_empty_node(node) {
                return;
            }
            let parent = self.links[node].parent;
            let links = &mut self.links[parent];
            match level {
                "+" => links.plus = None,
                "#" => links.hash = None,
                _ => {
                    links.children.remove(level);
                }
            }
            self.release(node);
            node = parent;
        }
    }

    fn is_empty_node(&self, node: usize) -> bool {
        let (l, p) = (&self.links[node], &self.payload[node]);
        l.children.is_empty()
            && l.plus.is_none()
            && l.hash.is_none()
            && p.as_ref().is_none_or(|p| p.is_empty())
    }

    /// A fresh empty node under `parent`.
    fn alloc(&mut self, parent: usize) -> usize {
        let links = Links {
            parent,
            ..Links::default()
        };
        match self.free.pop() {
            Some(i) => {
                self.links[i] = links;
                i
            }
            None => {
                self.links.push(links);
                self.payload.push(None);
                self.links.len() - 1
            }
        }
    }

    /// Returns an unlinked, empty node to the free list; once only the root is left, the
    /// arena gives its memory back.
    fn release(&mut self, node: usize) {
        // Replacing drops the (empty) maps' allocations now rather than on reuse.
        self.links[node] = Links::default();
        self.payload[node] = None;
        self.free.push(node);
        if self.free.len() + 1 == self.links.len() {
            self.links.truncate(1);
            self.payload.truncate(1);
            self.links.shrink_to_fit();
            self.payload.shrink_to_fit();
            self.free = Vec::new();
        }
    }
}

/// A pending step of a walk: `node` is reached, `pos` is where the topic's next level
/// starts (or [`END`] when every level is consumed).
#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    node: usize,
    pos: usize,
}

/// `Frame::pos` once the topic has no level left.
const END: usize = usize::MAX;

/// Frames kept on the call stack: a walk needs one more frame only at a level where both a
/// `+` and a literal child match, so real topics never spill to the heap.
const INLINE_FRAMES: usize = 32;

/// The walk's stack of frames: inline first, then a heap `Vec` for deep, branchy walks.
#[derive(Debug)]
struct Frames {
    inline: [Frame; INLINE_FRAMES],
    len: usize,
    spill: Vec<Frame>,
}

impl Frames {
    fn new() -> Self {
        Self {
            inline: [Frame::default(); INLINE_FRAMES],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, frame: Frame) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = frame;
                self.len += 1;
            }
            None => self.spill.push(frame),
        }
    }

    fn pop(&mut self) -> Option<Frame> {
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline.get(self.len).copied()
    }
}

/// The level of `topic` starting at byte `pos` and where the next one starts.
fn level_at(topic: &str, pos: usize) -> (&str, usize) {
    let rest = topic.get(pos..).unwrap_or_default();
    match rest.split_once('/') {
        Some((level, _)) => (level, pos + level.len() + 1),
        None => (rest, END),
    }
}

/// Calls `hit` with every node whose filter matches `topic`, iteratively. Returns how many
/// nodes it touched (the work done, for tests).
fn walk(links: &[Links], topic: &str, mut hit: impl FnMut(usize)) -> usize {
    let system = topic.starts_with('$');
    let mut stack = Frames::new();
    stack.push(Frame { node: ROOT, pos: 0 });
    let mut touched = 0;
    while let Some(Frame { node, pos }) = stack.pop() {
        let Some(n) = links.get(node) else {
            continue;
        };
        touched += 1;
        if pos == END {
            hit(node);
            // "sport/#" also matches "sport" [MQTT-4.7.1-2].
            if let Some(h) = n.hash {
                touched += 1;
                hit(h);
            }
            continue;
        }
        let (level, next) = level_at(topic, pos);
        // A filter starting with a wildcard does not match a `$` topic [MQTT-4.7.2-1].
        if !(system && node == ROOT) {
            if let Some(h) = n.hash {
                touched += 1;
                hit(h);
            }
            if let Some(p) = n.plus {
                stack.push(Frame { node: p, pos: next });
            }
        }
        if let Some(&c) = n.children.get(level) {
            stack.push(Frame { node: c, pos: next });
        }
    }
    touched
}

#[cfg(test)]
mod tests;
