//! Counting distinct original IPs per connection in bounded memory.
//!
//! A client can put millions of distinct spoofed X-Forwarded-For values on one connection in one
//! interval, so an exact set per connection is not affordable in general. Each
//! [`DistinctCounter`] starts exact — a hash set, which also answers "is this IP new?" for the
//! http_data entries — and is promoted to a HyperLogLog++ sketch seeded with its set when it
//! outgrows its bound. Promotion is one-way for the interval.
//!
//! Accuracy: the sketch uses precision [`SKETCH_PRECISION`] = 14 (16,384 registers), a standard
//! error of 1.04/√16384 ≈ 0.81 %, so estimates are within 2 % about 98 % of the time and within
//! 3 % practically always; below about 11,500 distinct IPs it counts by linear counting, which
//! is closer still. Exact counters are exact.
//!
//! Memory: an exact entry costs about [`EXACT_ENTRY_BYTES`] bytes and a sketch at most
//! [`SKETCH_BYTES`] (13 KB of registers once dense; its sparse form switches to dense before it
//! grows past that, plus transient merge buffers). A [`CardinalityBudget`] shared by all the
//! counters of an interval caps both the exact entries and the sketches; a counter that can get
//! neither keeps the count it has and reports it as a lower bound ([`Accuracy::LowerBound`]).
//!
//! The sketch hashes with SipHash keyed by a per-process random salt, so a client cannot
//! precompute addresses that inflate or deflate the estimate.

use std::collections::HashSet;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::Serialize;

/// HyperLogLog++ precision: 2^14 registers, ≈ 0.81 % standard error.
pub const SKETCH_PRECISION: u8 = 14;

/// Upper bound of one sketch's memory, used by the budget and the memory estimate.
pub const SKETCH_BYTES: usize = 64 * 1024;

/// Upper bound of the memory of one exact entry: an 18-byte `IpAddr` slot with its control
/// byte, times the worst load-factor slack of a power-of-two table (16/7).
pub const EXACT_ENTRY_BYTES: usize = 48;

/// Upper bound of the fixed memory of one counter's (small or empty) exact set: the minimum
/// table of four slots plus a group of control bytes.
pub const COUNTER_OVERHEAD_BYTES: usize = 96;

/// How far a reported count can be trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Accuracy {
    /// Every distinct IP was stored.
    #[default]
    Exact,
    /// Counted by the sketch; see the module docs for the error.
    Estimated,
    /// The memory budget ran out: the true count is at least the reported one.
    LowerBound,
}

/// The hash builder of the sketches: SipHash with a secret salt mixed in first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SketchHasher {
    salt: u64,
}

impl SketchHasher {
    /// A salt no client can know.
    pub fn random() -> SketchHasher {
        SketchHasher {
            salt: RandomState::new().hash_one(0_u64),
        }
    }

    /// A fixed salt, for reproducible estimates in tests and benchmarks.
    pub fn with_salt(salt: u64) -> SketchHasher {
        SketchHasher { salt }
    }
}

impl BuildHasher for SketchHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        let mut hasher = DefaultHasher::new();
        hasher.write_u64(self.salt);
        hasher
    }
}

/// An IP address hashed with a single write: SipHash pays per `write` call, and the derived
/// `Hash` of `IpAddr` makes three of them, which shows in the collector's profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IpKey(IpAddr);

impl Hash for IpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&ip_key_bytes(self.0));
    }
}

/// An address as 17 bytes: the family, then the octets (IPv4 zero-padded). Distinct addresses
/// give distinct keys, so equal keys mean equal addresses.
pub fn ip_key_bytes(ip: IpAddr) -> [u8; 17] {
    let mut key = [0u8; 17];
    match ip {
        IpAddr::V4(v4) => {
            key[0] = 4;
            for (slot, octet) in key.iter_mut().skip(1).zip(v4.octets()) {
                *slot = octet;
            }
        }
        IpAddr::V6(v6) => {
            key[0] = 6;
            for (slot, octet) in key.iter_mut().skip(1).zip(v6.octets()) {
                *slot = octet;
            }
        }
    }
    key
}

type Sketch = HyperLogLogPlus<IpKey, SketchHasher>;

/// What is left for the counters of one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardinalityBudget {
    exact_entries_left: usize,
    sketches_left: usize,
}

impl CardinalityBudget {
    pub fn new(exact_entries: usize, sketches: usize) -> CardinalityBudget {
        CardinalityBudget {
            exact_entries_left: exact_entries,
            sketches_left: sketches,
        }
    }

    pub fn exact_entries_left(&self) -> usize {
        self.exact_entries_left
    }

    pub fn sketches_left(&self) -> usize {
        self.sketches_left
    }
}

/// The outcome of [`DistinctCounter::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insertion {
    /// The IP is new to this counter and now stored exactly.
    New,
    /// The counter already held the IP.
    AlreadySeen,
    /// The IP went into the sketch; whether it was new cannot be told.
    Estimated,
    /// The shared budget has no exact entry left for this counter. The caller may free some
    /// (by promoting another counter) and retry, or give up with
    /// [`DistinctCounter::mark_saturated`].
    BudgetExhausted,
    /// The counter is saturated; the IP was not recorded.
    Untracked,
}

/// The distinct original IPs of one connection in one interval.
#[derive(Debug)]
pub struct DistinctCounter {
    state: CounterState,
    saturated: bool,
}

#[derive(Debug)]
enum CounterState {
    Exact(HashSet<IpKey>),
    Estimated(Box<Sketch>),
}

impl Default for DistinctCounter {
    fn default() -> Self {
        DistinctCounter::new()
    }
}

impl DistinctCounter {
    pub fn new() -> DistinctCounter {
        DistinctCounter {
            state: CounterState::Exact(HashSet::new()),
            saturated: false,
        }
    }

    /// Records `ip`. While exact, the counter holds at most `exact_bound` IPs; the next new one
    /// promotes it to a sketch (if the budget has one) or saturates it.
    pub fn insert(
        &mut self,
        ip: IpAddr,
        exact_bound: usize,
        budget: &mut CardinalityBudget,
        hasher: SketchHasher,
    ) -> Insertion {
        match &mut self.state {
            CounterState::Estimated(sketch) => {
                sketch.insert(&IpKey(ip));
                Insertion::Estimated
            }
            CounterState::Exact(set) => {
                if set.contains(&IpKey(ip)) {
                    return Insertion::AlreadySeen;
                }
                if self.saturated {
                    return Insertion::Untracked;
                }
                if set.len() >= exact_bound {
                    return if self.promote(budget, hasher) {
                        self.insert(ip, exact_bound, budget, hasher)
                    } else {
                        self.saturated = true;
                        Insertion::Untracked
                    };
                }
                if budget.exact_entries_left == 0 {
                    return Insertion::BudgetExhausted;
                }
                set.insert(IpKey(ip));
                budget.exact_entries_left -= 1;
                Insertion::New
            }
        }
    }

    /// Switches an exact counter to a sketch seeded with its set, returning its exact entries to
    /// the budget. False when the budget has no sketch left (or the counter is already one).
    pub fn promote(&mut self, budget: &mut CardinalityBudget, hasher: SketchHasher) -> bool {
        let CounterState::Exact(set) = &self.state else {
            return false;
        };
        if budget.sketches_left == 0 {
            return false;
        }
        let Ok(mut sketch) = Sketch::new(SKETCH_PRECISION, hasher) else {
            return false;
        };
        for ip in set {
            sketch.insert(ip);
        }
        budget.sketches_left -= 1;
        budget.exact_entries_left = budget.exact_entries_left.saturating_add(set.len());
        self.state = CounterState::Estimated(Box::new(sketch));
        true
    }

    /// Stops recording new IPs: the budget could not make room for them.
    pub fn mark_saturated(&mut self) {
        self.saturated = true;
    }

    /// The number of IPs stored exactly (0 once the counter is a sketch).
    pub fn exact_len(&self) -> usize {
        match &self.state {
            CounterState::Exact(set) => set.len(),
            CounterState::Estimated(_) => 0,
        }
    }

    pub fn accuracy(&self) -> Accuracy {
        match (&self.state, self.saturated) {
            (CounterState::Estimated(_), _) => Accuracy::Estimated,
            (CounterState::Exact(_), true) => Accuracy::LowerBound,
            (CounterState::Exact(_), false) => Accuracy::Exact,
        }
    }

    /// The number of distinct IPs (exact, estimated or a lower bound, see [`Self::accuracy`]).
    /// Takes `&mut self` because the sketch merges its pending entries before estimating.
    pub fn count(&mut self) -> u64 {
        match &mut self.state {
            CounterState::Exact(set) => set.len() as u64,
            CounterState::Estimated(sketch) => {
                let estimate = sketch.count().round();
                if estimate.is_finite() && estimate > 0.0 {
                    estimate as u64
                } else {
                    0
                }
            }
        }
    }

    /// An upper estimate of the heap memory this counter holds.
    pub fn memory_estimate_bytes(&self) -> usize {
        match &self.state {
            CounterState::Exact(set) => hash_set_bytes(set),
            CounterState::Estimated(_) => SKETCH_BYTES,
        }
    }
}

/// Heap bytes of a std hash set: a power-of-two bucket array of slots plus one control byte
/// each and a group of trailing control bytes.
fn hash_set_bytes<T>(set: &HashSet<T>) -> usize {
    if set.capacity() == 0 {
        return 0;
    }
    let buckets = (set.capacity().saturating_mul(8) / 7).next_power_of_two();
    buckets.saturating_mul(std::mem::size_of::<T>() + 1) + 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    const SALT: SketchHasher = SketchHasher { salt: 7 };

    #[test]
    fn exact_until_the_bound_then_estimated() {
        let mut budget = CardinalityBudget::new(1000, 1);
        let mut counter = DistinctCounter::new();
        for n in 0..10 {
            assert_eq!(counter.insert(ip(n), 10, &mut budget, SALT), Insertion::New);
        }
        assert_eq!(
            counter.insert(ip(3), 10, &mut budget, SALT),
            Insertion::AlreadySeen
        );
        assert_eq!(budget.exact_entries_left(), 990);
        assert_eq!(
            counter.insert(ip(10), 10, &mut budget, SALT),
            Insertion::Estimated
        );
        assert_eq!(
            budget.exact_entries_left(),
            1000,
            "promotion returns exact entries"
        );
        assert_eq!(budget.sketches_left(), 0);
        assert_eq!(counter.accuracy(), Accuracy::Estimated);
        assert_eq!(counter.count(), 11);
    }

    #[test]
    fn saturates_without_a_sketch_and_reports_a_lower_bound() {
        let mut budget = CardinalityBudget::new(1000, 0);
        let mut counter = DistinctCounter::new();
        for n in 0..5 {
            counter.insert(ip(n), 5, &mut budget, SALT);
        }
        assert_eq!(
            counter.insert(ip(99), 5, &mut budget, SALT),
            Insertion::Untracked
        );
        assert_eq!(
            counter.insert(ip(2), 5, &mut budget, SALT),
            Insertion::AlreadySeen
        );
        assert_eq!(counter.accuracy(), Accuracy::LowerBound);
        assert_eq!(counter.count(), 5);
    }

    #[test]
    fn reports_an_exhausted_budget_to_the_caller() {
        let mut budget = CardinalityBudget::new(2, 0);
        let mut counter = DistinctCounter::new();
        counter.insert(ip(1), 10, &mut budget, SALT);
        counter.insert(ip(2), 10, &mut budget, SALT);
        assert_eq!(
            counter.insert(ip(3), 10, &mut budget, SALT),
            Insertion::BudgetExhausted
        );
        assert_eq!(counter.accuracy(), Accuracy::Exact);
        counter.mark_saturated();
        assert_eq!(
            counter.insert(ip(3), 10, &mut budget, SALT),
            Insertion::Untracked
        );
    }

    #[test]
    fn memory_estimate_follows_the_state() {
        let mut budget = CardinalityBudget::new(usize::MAX, 1);
        let mut counter = DistinctCounter::new();
        assert_eq!(counter.memory_estimate_bytes(), 0);
        for n in 0..1000 {
            counter.insert(ip(n), 4096, &mut budget, SALT);
        }
        let exact_bytes = counter.memory_estimate_bytes();
        assert!(exact_bytes >= 1000 * std::mem::size_of::<IpAddr>());
        assert!(exact_bytes <= 1000 * EXACT_ENTRY_BYTES + COUNTER_OVERHEAD_BYTES);
        assert!(counter.promote(&mut budget, SALT));
        assert_eq!(counter.memory_estimate_bytes(), SKETCH_BYTES);
    }
}
