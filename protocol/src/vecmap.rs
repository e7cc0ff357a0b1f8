//! A map kept as a `Vec` sorted by key, and a set on top of it: the collections of one
//! client (in-flight messages, pending requests, subscriptions, QoS 2 packet ids) are
//! small, and a sorted `Vec` iterates in key order like a `BTreeMap` while compiling to far
//! less code (the wasm client's size budget) and costing exactly its entries, where a hash
//! table costs 48 bytes empty and a table of 4 buckets for one entry (the broker keeps one
//! per idle session, so it counts there too).
//!
//! # Memory
//! The first few entries grow the vector one at a time (a `Vec` would reserve 4 at the
//! first insert: three unused entries in every map that holds one), then it grows as a
//! `Vec` does; a removal that leaves it at most a quarter full halves its capacity, so a
//! burst of entries that left does not keep its memory.

/// Up to this many entries the vector grows by exactly one.
const EXACT_UP_TO: usize = 4;

use crate::prelude::*;

/// A map ordered by key, stored as a sorted `Vec` of pairs.
///
/// Invariant: `entries` is sorted by key with no duplicate keys.
#[derive(Debug, Clone)]
pub struct VecMap<K, V> {
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
    pub fn new() -> Self {
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
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(core::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                reserve(&mut self.entries);
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, mutable.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` is in the map.
    pub fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key).ok()?;
        let (_, value) = self.entries.remove(i);
        shrink(&mut self.entries);
        Some(value)
    }
}

impl<K, V> VecMap<K, V> {
    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry, keeping the memory.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The values in key order, mutable.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// The values in key order, by value.
    pub fn into_values(self) -> impl DoubleEndedIterator<Item = V> {
        self.entries.into_iter().map(|(_, v)| v)
    }
}

/// A set ordered by value: a [`VecMap`] without values.
#[derive(Debug, Clone)]
pub struct VecSet<T> {
    map: VecMap<T, ()>,
}

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet {
            map: VecMap::default(),
        }
    }
}

impl<T: Ord> VecSet<T> {
    /// Whether `value` is in the set.
    pub fn contains(&self, value: &T) -> bool {
        self.map.contains_key(value)
    }

    /// Adds `value`; `false` if it was there already.
    pub fn insert(&mut self, value: T) -> bool {
        self.map.insert(value, ()).is_none()
    }

    /// Removes `value`; `false` if it was not there.
    pub fn remove(&mut self, value: &T) -> bool {
        self.map.remove(value).is_some()
    }
}

impl<T> VecSet<T> {
    /// How many values.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No values.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The values in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.map.keys()
    }
}

impl<T: Ord> Extend<T> for VecSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, values: I) {
        for value in values {
            self.insert(value);
        }
    }
}

/// Makes room for one more entry: exactly one while the vector is small.
fn reserve<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() && v.len() < EXACT_UP_TO {
        v.reserve_exact(1);
    }
}

/// Halves a vector's capacity once it is at most a quarter full (a quarter, not a half: an
/// entry added and removed at the boundary must not reallocate every time).
fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > EXACT_UP_TO && v.len() <= v.capacity() / 4 {
        v.shrink_to(v.capacity() / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    #[test]
    fn a_map_of_one_entry_holds_one_entry_of_memory() {
        let mut m = VecMap::new();
        m.insert(1u64, 2u64);
        assert_eq!(m.entries.capacity(), 1);
        for k in 2..=EXACT_UP_TO as u64 {
            m.insert(k, k);
        }
        assert_eq!(m.entries.capacity(), EXACT_UP_TO);
    }

    #[test]
    fn emptied_collections_give_their_memory_back() {
        let mut s = VecSet::default();
        s.extend(1..=1000u16);
        assert_eq!(s.len(), 1000);
        for v in 1..=1000u16 {
            assert!(s.remove(&v));
        }
        assert!(s.is_empty());
        assert!(
            s.map.entries.capacity() <= 8,
            "{}",
            s.map.entries.capacity()
        );
    }

    #[test]
    fn a_vec_set_holds_each_value_once_in_order() {
        let mut s = VecSet::default();
        assert!(s.insert(5u16));
        assert!(!s.insert(5));
        s.extend([9, 3, 9]);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [3, 5, 9]);
        assert!(s.contains(&3) && !s.contains(&4));
        assert!(s.remove(&3));
        assert!(!s.remove(&3));
        assert_eq!(s.len(), 2);
    }

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
