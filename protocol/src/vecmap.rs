//! A map kept as a `Vec` sorted by key: the client's collections (in-flight messages,
//! pending requests, subscriptions, QoS 2 packet ids) are small, and a sorted `Vec` iterates
//! in key order like a `BTreeMap` while compiling to far less code (the wasm client's size
//! budget).

use crate::prelude::*;

/// A map ordered by key, stored as a sorted `Vec` of pairs.
///
/// Invariant: `entries` is sorted by key with no duplicate keys.
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &K) -> Result<usize, usize> {
        // Keys are mostly appended in increasing order: check the end first.
        match self.entries.last() {
            Some((last, _)) if *last < *key => Err(self.entries.len()),
            _ => self.entries.binary_search_by(|(k, _)| k.cmp(key)),
        }
    }

    /// Inserts or replaces; returns the previous value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(core::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }
}

impl<K, V> VecMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The values in key order, mutable.
    pub(crate) fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// The values in key order, by value.
    pub(crate) fn into_values(self) -> impl DoubleEndedIterator<Item = V> {
        self.entries.into_iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of inserts and removes leaves a `VecMap` equal to a `BTreeMap`
        /// given the same operations, in the same key order.
        #[test]
        fn a_vecmap_behaves_like_a_btreemap(ops in proptest::collection::vec((any::<bool>(), 0u16..64, any::<u8>()), 0..200)) {
            let mut ours = VecMap::new();
            let mut reference = BTreeMap::new();
            for (insert, key, value) in ops {
                if insert {
                    prop_assert_eq!(ours.insert(key, value), reference.insert(key, value));
                } else {
                    prop_assert_eq!(ours.remove(&key), reference.remove(&key));
                }
                prop_assert_eq!(ours.len(), reference.len());
                prop_assert_eq!(ours.get(&key), reference.get(&key));
            }
            let ours: Vec<(u16, u8)> = ours.iter().map(|(k, v)| (*k, *v)).collect();
            let reference: Vec<(u16, u8)> = reference.into_iter().collect();
            prop_assert_eq!(ours, reference);
        }
    }
}
