//! A hash map with a hard capacity that forgets its least recently used key.
//!
//! Every per-key table in this crate is one of these, so an attacker who
//! sends a million addresses or user names costs at most `capacity` entries.
//! "Use" means an insert or a [`BoundedMap::touch`]; plain reads do not
//! reorder. Every operation is O(log n).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    entries: HashMap<K, (V, u64)>,
    /// Use order: sequence number of the last use → key. Oldest first.
    order: BTreeMap<u64, K>,
    next_seq: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// A map that holds at most `capacity` keys (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        BoundedMap {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// The value for `key`, marked as just used.
    pub(crate) fn touch(&mut self, key: &K) -> Option<&mut V> {
        let seq = self.bump();
        let (value, old_seq) = self.entries.get_mut(key)?;
        let old = std::mem::replace(old_seq, seq);
        if let Some(k) = self.order.remove(&old) {
            self.order.insert(seq, k);
        }
        Some(value)
    }

    /// The value for `key`, inserted with `make` when absent (forgetting the
    /// least recently used key when the map is full), marked as just used.
    pub(crate) fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        if !self.entries.contains_key(key) {
            while self.entries.len() >= self.capacity {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.entries.remove(&oldest);
            }
            let seq = self.bump();
            self.order.insert(seq, key.clone());
            self.entries.insert(key.clone(), (make(), seq));
            return &mut self.entries.get_mut(key).expect("just inserted").0;
        }
        self.touch(key).expect("present")
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let (value, seq) = self.entries.remove(key)?;
        self.order.remove(&seq);
        Some(value)
    }

    /// Removes up to `max` of the least recently used entries, oldest first,
    /// stopping at the first one `is_idle` says is still needed. Called on
    /// every operation with a small `max`, it keeps a quiet table small
    /// without a sweep over the whole map.
    pub(crate) fn prune_oldest(&mut self, max: usize, mut is_idle: impl FnMut(&V) -> bool) {
        for _ in 0..max {
            let Some((&seq, key)) = self.order.first_key_value() else {
                return;
            };
            let idle = self.entries.get(key).is_none_or(|(v, _)| is_idle(v));
            if !idle {
                return;
            }
            let key = self.order.remove(&seq).expect("first key exists");
            self.entries.remove(&key);
        }
    }

    fn bump(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_forgets_least_recently_used() {
        let mut m = BoundedMap::new(3);
        for k in 0..3 {
            *m.get_or_insert_with(&k, || 0) += k;
        }
        // Use 0 so that 1 becomes the oldest.
        assert!(m.touch(&0).is_some());
        m.get_or_insert_with(&3, || 30);
        assert_eq!(m.len(), 3);
        assert!(m.get(&1).is_none(), "least recently used key evicted");
        assert_eq!(m.get(&0), Some(&0));
        assert_eq!(m.get(&2), Some(&2));
        assert_eq!(m.get(&3), Some(&30));
    }

    #[test]
    fn huge_key_flood_stays_bounded() {
        let mut m = BoundedMap::new(100);
        for k in 0..100_000u32 {
            m.get_or_insert_with(&k, || k);
        }
        assert_eq!(m.len(), 100);
        assert_eq!(m.order.len(), 100);
        assert_eq!(m.get(&99_999), Some(&99_999));
        assert!(m.get(&0).is_none());
    }

    #[test]
    fn prune_stops_at_first_busy_entry() {
        let mut m = BoundedMap::new(10);
        for k in 0..5 {
            m.get_or_insert_with(&k, || k);
        }
        // Entries 0 and 1 are idle, 2 is busy: 3 and 4 must survive too.
        m.prune_oldest(10, |v| *v < 2);
        assert_eq!(m.len(), 3);
        m.prune_oldest(10, |_| true);
        assert_eq!(m.len(), 0);
        assert!(m.order.is_empty());
    }

    #[test]
    fn remove_keeps_order_consistent() {
        let mut m = BoundedMap::new(2);
        m.get_or_insert_with(&"a", || 1);
        m.get_or_insert_with(&"b", || 2);
        assert_eq!(m.remove(&"a"), Some(1));
        m.get_or_insert_with(&"c", || 3);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(&"b"), Some(&2));
        assert_eq!(m.get(&"c"), Some(&3));
        assert_eq!(m.order.len(), 2);
    }

    #[test]
    fn zero_capacity_means_one() {
        let mut m = BoundedMap::new(0);
        m.get_or_insert_with(&1, || 1);
        m.get_or_insert_with(&2, || 2);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(&2), Some(&2));
    }
}
