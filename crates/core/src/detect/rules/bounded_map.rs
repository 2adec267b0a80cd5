//! A map of bounded size that evicts a sampled entry when full, for the cool-downs.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::detect::heavy_hitters::hash_table_bytes;

/// Slots a bounded map samples when it must evict, as Redis samples for its approximate LRU:
/// eight samples find an entry among the emptiest eighth or so with probability 1 − (7/8)^8,
/// about two in three, at a fixed cost per insertion.
const EVICTION_SAMPLES: usize = 8;

/// A map of at most `capacity` entries that evicts, when full, the lowest-scored of a few
/// randomly sampled entries (the cool-downs, touched only when an event fires). Insertion and lookup are `O(1)`, and nothing is allocated after
/// construction.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    capacity: usize,
    entries: Vec<(K, V)>,
    /// foldhash under a per-map random seed, as the heavy-hitter index: probed for every
    /// distinct address of every batch.
    index: HashMap<K, usize, foldhash::fast::RandomState>,
    /// The index's capacity as allocated; see [`SpaceSaving::memory_bytes`].
    ///
    /// [`SpaceSaving::memory_bytes`]: crate::detect::heavy_hitters::SpaceSaving::memory_bytes
    index_capacity: usize,
    rng: SmallRng,
}

impl<K: Copy + Eq + Hash, V> BoundedMap<K, V> {
    /// `capacity` is at least one; `seed` drives the eviction sampling.
    pub fn new(capacity: usize, seed: u64) -> BoundedMap<K, V> {
        let capacity = capacity.max(1);
        // Twice the entries so removals' tombstones are cleaned by an in-place rehash rather
        // than a larger table.
        let index =
            HashMap::with_capacity_and_hasher(capacity * 2, foldhash::fast::RandomState::default());
        BoundedMap {
            capacity,
            entries: Vec::with_capacity(capacity),
            index_capacity: index.capacity(),
            index,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let position = *self.index.get(key)?;
        self.entries.get_mut(position).map(|(_, value)| value)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let position = *self.index.get(key)?;
        self.entries.get(position).map(|(_, value)| value)
    }

    /// Inserts `key` (which must be absent), evicting the sampled entry with the lowest
    /// `score` when full. Returns whether an entry was evicted.
    pub fn insert_evicting<S: PartialOrd>(
        &mut self,
        key: K,
        value: V,
        score: impl Fn(&V) -> S,
    ) -> bool {
        self.get_or_insert_evicting(key, || value, score).1
    }

    /// `key`'s value, inserting `value()` first when `key` is absent (evicting as
    /// [`BoundedMap::insert_evicting`] does). Probes the index once: this is the per-address
    /// path of every leaky-bucket rule. Returns whether an entry was evicted.
    pub fn get_or_insert_evicting<S: PartialOrd>(
        &mut self,
        key: K,
        value: impl FnOnce() -> V,
        score: impl Fn(&V) -> S,
    ) -> (Option<&mut V>, bool) {
        let BoundedMap {
            capacity,
            entries,
            index,
            rng,
            ..
        } = self;
        let vacant = match index.entry(key) {
            Entry::Occupied(present) => {
                let position = *present.get();
                return (entries.get_mut(position).map(|(_, value)| value), false);
            }
            Entry::Vacant(vacant) => vacant,
        };
        let mut victim: Option<(usize, S)> = None;
        if entries.len() >= *capacity {
            let len = entries.len();
            for _ in 0..EVICTION_SAMPLES.min(len) {
                let position = rng.random_range(0..len);
                if let Some((_, candidate)) = entries.get(position) {
                    let candidate_score = score(candidate);
                    if victim
                        .as_ref()
                        .is_none_or(|(_, best)| candidate_score < *best)
                    {
                        victim = Some((position, candidate_score));
                    }
                }
            }
        }
        // The newcomer takes the victim's place in `entries`, so no other entry moves.
        let (position, evicted_key) = match victim.and_then(|(position, _)| {
            let (evicted_key, _) = *entries.get(position)?;
            Some((position, evicted_key))
        }) {
            Some((position, evicted_key)) => {
                if let Some(entry) = entries.get_mut(position) {
                    *entry = (key, value());
                }
                (position, Some(evicted_key))
            }
            None => {
                entries.push((key, value()));
                (entries.len() - 1, None)
            }
        };
        vacant.insert(position);
        if let Some(evicted_key) = evicted_key {
            index.remove(&evicted_key);
        }
        (
            entries.get_mut(position).map(|(_, value)| value),
            evicted_key.is_some(),
        )
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let position = *self.index.get(key)?;
        self.remove_at(position)
    }

    fn remove_at(&mut self, position: usize) -> Option<V> {
        if position >= self.entries.len() {
            return None;
        }
        let (key, value) = self.entries.swap_remove(position);
        self.index.remove(&key);
        if let Some((moved, _)) = self.entries.get(position) {
            self.index.insert(*moved, position);
        }
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held, from the allocations' capacities (the index as in
    /// [`SpaceSaving::memory_bytes`]).
    ///
    /// [`SpaceSaving::memory_bytes`]: crate::detect::heavy_hitters::SpaceSaving::memory_bytes
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.entries.capacity() * std::mem::size_of::<(K, V)>()
            + hash_table_bytes::<(K, usize)>(self.index_capacity.max(self.index.capacity()))
    }

    /// Bytes a map of `capacity` entries holds.
    pub fn memory_bound_bytes(capacity: usize) -> usize {
        let capacity = capacity.max(1);
        std::mem::size_of::<Self>()
            + capacity * std::mem::size_of::<(K, V)>()
            + hash_table_bytes::<(K, usize)>(capacity * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_map_keeps_its_index_consistent_through_evictions() {
        let mut map: BoundedMap<u32, u32> = BoundedMap::new(8, 7);
        for key in 0..1000_u32 {
            map.insert_evicting(key, key % 13, |&v| v);
            if key % 5 == 0 {
                map.remove(&(key / 2));
            }
            assert!(map.len() <= 8);
            for (position, (k, _)) in map.entries.iter().enumerate() {
                assert_eq!(map.index.get(k), Some(&position));
            }
            assert_eq!(map.index.len(), map.entries.len());
        }
    }
}
