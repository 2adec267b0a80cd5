//! Leaky-bucket rules: CrowdSec's bucket per IP, kept in a set-associative table of fixed size.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::detect::events::Field;
use crate::detect::heavy_hitters::AddressHasher;

/// Buckets a leaky-bucket rule keeps unless told otherwise (about 0.5 MiB).
pub const DEFAULT_BUCKETS: usize = 10_000;

fn default_buckets() -> usize {
    DEFAULT_BUCKETS
}

/// CrowdSec's leaky bucket, per IP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakyBucket {
    pub name: String,
    /// Requests the bucket holds; one more overflows it.
    pub capacity: u64,
    /// Requests drained per second (CrowdSec's `leakspeed: 100ms` is 10 per second).
    pub leak_per_second: f64,
    #[serde(default)]
    pub field: Field,
    /// Buckets kept at most; see the module docs for what eviction forgets.
    #[serde(default = "default_buckets")]
    pub buckets: usize,
}

/// Buckets per set of a [`LeakyBuckets`] table: a new IP can only take the place of one of
/// the eight buckets of its set, so finding its bucket, or the one to replace, reads the set's
/// head (one cache line) and then one bucket, and never allocates.
pub const BUCKET_WAYS: usize = 8;

#[derive(Clone, Copy, Debug)]
struct HeldBucket {
    ip: IpAddr,
    bucket: Bucket,
}

const EMPTY_WAY: HeldBucket = HeldBucket {
    ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    bucket: Bucket {
        level: 0,
        last_ms: 0,
    },
};

/// What a set's ways hold, in one cache line: a lookup or a replacement decides from here
/// which single bucket to read or write, instead of reading the eight buckets.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct SetHead {
    /// A non-zero fingerprint of each way's address (0: the way is empty). Equal fingerprints
    /// are confirmed against the address held, so a collision costs a read, never a mix-up.
    tags: [u32; BUCKET_WAYS],
    /// The second (of the monotonic clock) at which each way's bucket is empty, or was, if
    /// nothing more is poured: the ordering by level that replacement needs.
    empty_at_s: [u32; BUCKET_WAYS],
}

/// A set-associative table of buckets: a keyed hash of the address picks a set of
/// [`BUCKET_WAYS`] consecutive slots, and the address's bucket can only be in that set.
#[derive(Debug)]
struct BucketTable {
    heads: Vec<SetHead>,
    slots: Vec<HeldBucket>,
    ways: usize,
    sets: usize,
    /// Keyed by the detector's seed, random in production, so a client cannot aim a flood of
    /// addresses at one set to push a victim's bucket out.
    hasher: AddressHasher,
    len: usize,
}

/// The fingerprint of a hash in its set's head: its low half (the set comes from the high
/// bits), never 0.
fn tag_of(hash: u64) -> u32 {
    (hash as u32) | 1
}

impl BucketTable {
    /// At most `buckets` buckets: as many whole sets as fit (a table smaller than a set is one
    /// set of that many).
    fn new(buckets: usize, hasher: AddressHasher) -> BucketTable {
        let buckets = buckets.max(1);
        let ways = BUCKET_WAYS.min(buckets);
        let sets = buckets / ways;
        BucketTable {
            heads: vec![SetHead::default(); sets],
            slots: vec![EMPTY_WAY; sets * ways],
            ways,
            sets,
            hasher,
            len: 0,
        }
    }

    #[cfg(test)]
    fn set_of(&self, ip: &IpAddr) -> usize {
        self.set_of_hash(self.hasher.hash(ip))
    }

    fn set_of_hash(&self, hash: u64) -> usize {
        // The high half of hash × sets: a uniform set number without a division.
        ((u128::from(hash) * self.sets as u128) >> 64) as usize
    }

    /// The slot holding `ip`'s bucket.
    fn find(&self, ip: &IpAddr, hash: u64) -> Option<usize> {
        let set = self.set_of_hash(hash);
        let head = self.heads.get(set)?;
        let tag = tag_of(hash);
        (0..self.ways)
            .filter(|&way| head.tags.get(way) == Some(&tag))
            .map(|way| set * self.ways + way)
            .find(|&slot| self.slots.get(slot).is_some_and(|held| held.ip == *ip))
    }

    fn get(&self, ip: &IpAddr) -> Option<&Bucket> {
        let slot = self.find(ip, self.hasher.hash(ip))?;
        self.slots.get(slot).map(|held| &held.bucket)
    }

    fn get_mut(&mut self, ip: &IpAddr) -> Option<&mut Bucket> {
        let slot = self.find(ip, self.hasher.hash(ip))?;
        self.slots.get_mut(slot).map(|held| &mut held.bucket)
    }

    /// The slot of `ip`'s bucket, `fresh` when it had none: in an empty way of its set, else
    /// in place of the set's bucket that empties first (among those already empty, the one
    /// that emptied first). Returns whether a bucket was replaced.
    fn get_or_insert(&mut self, ip: IpAddr, hash: u64, fresh: Bucket) -> Option<(usize, bool)> {
        if let Some(slot) = self.find(&ip, hash) {
            return Some((slot, false));
        }
        let set = self.set_of_hash(hash);
        let ways = self.ways;
        let head = self.heads.get_mut(set)?;
        let (way, evicted) = match head.tags.iter().take(ways).position(|&tag| tag == 0) {
            Some(way) => (way, false),
            None => {
                let way = (0..ways).min_by_key(|&way| head.empty_at_s.get(way))?;
                (way, true)
            }
        };
        *head.tags.get_mut(way)? = tag_of(hash);
        let slot = set * ways + way;
        *self.slots.get_mut(slot)? = HeldBucket { ip, bucket: fresh };
        if !evicted {
            self.len += 1;
        }
        Some((slot, evicted))
    }

    /// The bucket in `slot`.
    fn bucket_mut(&mut self, slot: usize) -> Option<&mut Bucket> {
        self.slots.get_mut(slot).map(|held| &mut held.bucket)
    }

    /// Records when the bucket in `slot` will be empty, after it changed.
    fn set_empty_at(&mut self, slot: usize, empty_at_ms: u64) {
        let (set, way) = (slot / self.ways.max(1), slot % self.ways.max(1));
        if let Some(at) = self
            .heads
            .get_mut(set)
            .and_then(|head| head.empty_at_s.get_mut(way))
        {
            *at = u32::try_from(empty_at_ms / 1000).unwrap_or(u32::MAX);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Buckets kept at most.
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.heads.capacity() * std::mem::size_of::<SetHead>()
            + self.slots.capacity() * std::mem::size_of::<HeldBucket>()
    }

    fn memory_bound_bytes(buckets: usize) -> usize {
        let buckets = buckets.max(1);
        let ways = BUCKET_WAYS.min(buckets);
        let sets = buckets / ways;
        std::mem::size_of::<Self>()
            + sets * std::mem::size_of::<SetHead>()
            + sets * ways * std::mem::size_of::<HeldBucket>()
    }
}

/// One request in a bucket's fixed-point level: integer arithmetic keeps overflow decisions
/// exact and reproducible (a leak rate is honoured to 0.001 requests per second).
const UNITS_PER_REQUEST: u64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    /// Requests held, in [`UNITS_PER_REQUEST`] units, as of `last_ms`.
    level: u64,
    last_ms: u64,
}

impl Bucket {
    /// When the bucket is empty if nothing more is poured (never, without a leak).
    fn empty_at_ms(&self, leak_units_per_ms: u64) -> u64 {
        if self.level == 0 {
            return self.last_ms;
        }
        match self.level.div_ceil(leak_units_per_ms.max(1)) {
            _ if leak_units_per_ms == 0 => u64::MAX,
            drain_ms => self.last_ms.saturating_add(drain_ms),
        }
    }

    fn level_at(&self, now_ms: u64, leak_units_per_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.level
            .saturating_sub(elapsed.saturating_mul(leak_units_per_ms))
    }
}

/// What a leaky bucket reported for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pour {
    /// The request fit; the bucket now holds this many requests (after leaking).
    Held(f64),
    /// The request found the bucket full; the bucket was emptied.
    Overflow,
}

/// What pouring several requests at one instant did to a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poured {
    /// Requests that found the bucket full (each emptied it).
    pub overflows: u64,
    /// The level afterwards, in millionths of a request.
    pub level_units: u64,
}

/// `requests` requests poured one after another into a bucket at `level` (all in
/// [`UNITS_PER_REQUEST`] units, `capacity` at least one request): each adds one request; one
/// that would pass `capacity` overflows instead and empties the bucket.
fn pour_at_one_instant(level: u64, capacity: u64, requests: u64) -> Poured {
    let fit_from_level = capacity.saturating_sub(level) / UNITS_PER_REQUEST;
    if requests <= fit_from_level {
        return Poured {
            overflows: 0,
            level_units: level.saturating_add(requests.saturating_mul(UNITS_PER_REQUEST)),
        };
    }
    // The first overflow, then cycles of an empty bucket filling to the brim and overflowing.
    let after_first = requests - fit_from_level - 1;
    let cycle = (capacity / UNITS_PER_REQUEST).saturating_add(1);
    Poured {
        overflows: 1 + after_first / cycle,
        level_units: (after_first % cycle).saturating_mul(UNITS_PER_REQUEST),
    }
}

/// One leaky-bucket rule's buckets.
#[derive(Debug)]
pub struct LeakyBuckets {
    capacity_units: u64,
    leak_units_per_ms: u64,
    buckets: BucketTable,
    evictions: u64,
}

impl LeakyBuckets {
    /// Buckets whose sets are picked by a hash keyed with `seed`.
    pub fn new(rule: &LeakyBucket, seed: u64) -> LeakyBuckets {
        LeakyBuckets::with_hasher(rule, AddressHasher::with_seed(seed))
    }

    /// Buckets hashing with the detector's `hasher`.
    pub fn with_hasher(rule: &LeakyBucket, hasher: AddressHasher) -> LeakyBuckets {
        // requests/s × 10^6 units/request ÷ 1000 ms/s; NaN and negatives become no leak.
        let leak = (rule.leak_per_second * (UNITS_PER_REQUEST / 1000) as f64).round();
        let leak_units_per_ms = if leak.is_finite() && leak > 0.0 {
            leak as u64
        } else {
            0
        };
        LeakyBuckets {
            capacity_units: rule.capacity.saturating_mul(UNITS_PER_REQUEST),
            leak_units_per_ms,
            buckets: BucketTable::new(rule.buckets, hasher),
            evictions: 0,
        }
    }

    /// Pours one request from `ip` at `now_ms`.
    pub fn pour(&mut self, now_ms: u64, ip: IpAddr) -> Pour {
        let poured = self.pour_many(now_ms, ip, 1);
        if poured.overflows > 0 {
            Pour::Overflow
        } else {
            Pour::Held(poured.level_units as f64 / UNITS_PER_REQUEST as f64)
        }
    }

    /// Pours `requests` requests from `ip` at `now_ms` at once, with the outcome of that many
    /// [`LeakyBuckets::pour`] calls in a row: nothing leaks between requests of the same
    /// instant, so the overflows follow from the level in closed form.
    pub fn pour_many(&mut self, now_ms: u64, ip: IpAddr, requests: u64) -> Poured {
        let hash = self.buckets.hasher.hash(&ip);
        self.pour_hashed(now_ms, ip, hash, requests)
    }

    /// [`LeakyBuckets::pour_many`] with `ip`'s hash by the buckets' hasher.
    pub fn pour_hashed(&mut self, now_ms: u64, ip: IpAddr, hash: u64, requests: u64) -> Poured {
        let leak = self.leak_units_per_ms;
        let capacity = self.capacity_units;
        if requests == 0 {
            return Poured {
                overflows: 0,
                level_units: self
                    .buckets
                    .get(&ip)
                    .map_or(0, |b| b.level_at(now_ms, leak)),
            };
        }
        if capacity < UNITS_PER_REQUEST {
            // Not even one request fits: every request overflows and no bucket is kept.
            if let Some(bucket) = self.buckets.get_mut(&ip) {
                bucket.level = 0;
                bucket.last_ms = bucket.last_ms.max(now_ms);
            }
            return Poured {
                overflows: requests,
                level_units: 0,
            };
        }
        let fresh = Bucket {
            level: 0,
            last_ms: now_ms,
        };
        let Some((slot, evicted)) = self.buckets.get_or_insert(ip, hash, fresh) else {
            return Poured {
                overflows: 0,
                level_units: 0,
            };
        };
        let Some(bucket) = self.buckets.bucket_mut(slot) else {
            return Poured {
                overflows: 0,
                level_units: 0,
            };
        };
        let level = bucket.level_at(now_ms, leak);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        let poured = pour_at_one_instant(level, capacity, requests);
        bucket.level = poured.level_units;
        let empty_at_ms = bucket.empty_at_ms(leak);
        self.buckets.set_empty_at(slot, empty_at_ms);
        if evicted {
            self.evictions = self.evictions.saturating_add(1);
        }
        poured
    }

    /// The requests `ip`'s bucket holds at `now_ms`, if it has one.
    pub fn level(&self, now_ms: u64, ip: &IpAddr) -> Option<f64> {
        self.buckets.get(ip).map(|bucket| {
            bucket.level_at(now_ms, self.leak_units_per_ms) as f64 / UNITS_PER_REQUEST as f64
        })
    }

    /// Buckets replaced to make room for new IPs.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.len() == 0
    }

    /// Buckets kept at most: `buckets` rounded down to whole sets of [`BUCKET_WAYS`].
    pub fn capacity(&self) -> usize {
        self.buckets.capacity()
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() - std::mem::size_of::<BucketTable>()
            + self.buckets.memory_bytes()
    }

    pub fn memory_bound_bytes(rule: &LeakyBucket) -> usize {
        std::mem::size_of::<Self>() - std::mem::size_of::<BucketTable>()
            + BucketTable::memory_bound_bytes(rule.buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    proptest! {
        /// Replacement orders buckets by when they empty; that must be the order of their
        /// levels at any later time (a lower level never empties later).
        #[test]
        fn emptying_time_orders_buckets_as_their_levels_do(
            levels in (0..10_000_000_000_u64, 0..10_000_000_000_u64),
            lasts in (0..100_000_u64, 0..100_000_u64),
            leak in 1..100_000_u64,
            later in 0..200_000_u64,
        ) {
            let a = Bucket { level: levels.0, last_ms: lasts.0 };
            let b = Bucket { level: levels.1, last_ms: lasts.1 };
            let now = lasts.0.max(lasts.1) + later;
            if a.level_at(now, leak) < b.level_at(now, leak) {
                prop_assert!(a.empty_at_ms(leak) <= b.empty_at_ms(leak));
            }
        }
    }

    #[test]
    fn a_new_ip_replaces_the_bucket_of_its_set_that_empties_first() {
        let mut table = BucketTable::new(64, AddressHasher::with_seed(3));
        assert_eq!((table.sets, table.ways, table.capacity()), (8, 8, 64));
        let address = |n: u32| IpAddr::V4(Ipv4Addr::from(n));
        let bucket = |level| Bucket { level, last_ms: 0 };
        // Each bucket empties `level` seconds from the start.
        let insert = |table: &mut BucketTable, ip: IpAddr, level| {
            let hash = table.hasher.hash(&ip);
            let (slot, evicted) = table.get_or_insert(ip, hash, bucket(level)).unwrap();
            assert_eq!(table.bucket_mut(slot).map(|b| b.level), Some(level));
            table.set_empty_at(slot, level * 1000);
            evicted
        };
        // Nine addresses of one set, each with its own level (the fifth the first to empty).
        let target = table.set_of(&address(0));
        let same_set: Vec<IpAddr> = (0..)
            .map(address)
            .filter(|ip| table.set_of(ip) == target)
            .take(9)
            .collect();
        for (n, ip) in same_set.iter().take(8).enumerate() {
            let level = if n == 4 { 1 } else { 10 + n as u64 };
            assert!(!insert(&mut table, *ip, level));
        }
        // An address of another set finds room there.
        let other = (0..)
            .map(address)
            .find(|ip| table.set_of(ip) != target)
            .unwrap();
        assert!(!insert(&mut table, other, 0));
        // The ninth of the set replaces the first of its eight to empty.
        assert!(insert(&mut table, same_set[8], 0));
        assert!(table.get(&same_set[4]).is_none());
        assert_eq!(
            same_set.iter().filter(|ip| table.get(ip).is_some()).count(),
            8
        );
        assert!(table.get(&other).is_some());
        assert_eq!(table.len(), 9);
    }

    #[test]
    fn a_zero_capacity_bucket_overflows_on_every_request() {
        let rule = LeakyBucket {
            name: "zero".to_owned(),
            capacity: 0,
            leak_per_second: 1.0,
            field: Field::Original,
            buckets: 4,
        };
        let mut buckets = LeakyBuckets::new(&rule, 1);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(buckets.pour(0, ip), Pour::Overflow);
        assert_eq!(buckets.pour(0, ip), Pour::Overflow);
    }

    #[test]
    fn pouring_many_at_once_equals_pouring_one_at_a_time() {
        for (capacity, requests) in [(1, 7), (3, 1), (3, 4), (3, 9), (5, 5), (5, 6), (5, 25)] {
            let rule = LeakyBucket {
                name: "b".to_owned(),
                capacity,
                leak_per_second: 1.0,
                field: Field::Original,
                buckets: 4,
            };
            let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
            let mut many = LeakyBuckets::new(&rule, 1);
            let mut single = LeakyBuckets::new(&rule, 1);
            // A part-filled, part-leaked bucket first, then a batch at one instant.
            many.pour_many(0, client, 2);
            single.pour(0, client);
            single.pour(0, client);
            let poured = many.pour_many(700, client, requests);
            let overflows = (0..requests)
                .filter(|_| single.pour(700, client) == Pour::Overflow)
                .count() as u64;
            assert_eq!(
                poured.overflows, overflows,
                "capacity {capacity}, {requests} requests"
            );
            assert_eq!(many.level(700, &client), single.level(700, &client));
        }
    }
}
