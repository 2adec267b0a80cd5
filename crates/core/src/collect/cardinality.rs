//! Counting distinct original IPs per connection in bounded memory.
//!
//! A client can put millions of distinct spoofed X-Forwarded-For values on one connection in one
//! interval, so an exact set per connection is not affordable in general. Each
//! [`DistinctCounter`] starts exact — a hash set, which also answers "is this IP new?" for the
//! http_data entries — and is promoted to a [`Sketch`] seeded with its set when it outgrows its
//! bound. Promotion is one-way for the interval.
//!
//! A sketch first keeps the distinct 64-bit hashes of its IPs (exact unless two of at most a few
//! thousand 64-bit hashes collide, a one-in-a-trillion event) and switches to a HyperLogLog of [`SKETCH_PRECISION`] = 14
//! (16,384 one-byte registers) before that set would outgrow the registers' memory several times
//! over. Both forms insert in O(1): the per-line cost of a sketch must not depend on how many
//! IPs it has seen, since one connection may see millions. The registers are read with Ertl's
//! improved estimator ("New cardinality estimation algorithms for HyperLogLog sketches", 2017),
//! which needs no empirical bias tables and stays within the HyperLogLog standard error of
//! 1.04/√16384 ≈ 0.81 % over the whole range (closer still at small counts, where it behaves
//! like linear counting): estimates are within 2 % about 98 % of the time and within 3 %
//! practically always. Exact counters are exact.
//!
//! Memory: an exact entry costs about [`EXACT_ENTRY_BYTES`] bytes and a sketch at most
//! [`SKETCH_BYTES`] (a hash set of at most [`SKETCH_EXACT_HASHES`] entries, about 37 KB, or
//! 16 KB of registers, plus both for the moment of the switch). A [`CardinalityBudget`] shared
//! by all the counters of an interval caps both the exact entries and the sketches; a counter
//! that can get neither keeps the count it has and reports it as a lower bound
//! ([`Accuracy::LowerBound`]).
//!
//! The sketch hashes with SipHash keyed by a per-process random salt, so a client cannot
//! precompute addresses that inflate or deflate the estimate. The exact sets, only probed, use
//! foldhash with a per-table random seed: a hash-flooding client would have to guess it.

use std::collections::HashSet;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;

use serde::Serialize;

/// The hash builder of the exact sets: fast and seeded at random per table.
type SetHasher = foldhash::fast::RandomState;

/// HyperLogLog precision: 2^14 registers, ≈ 0.81 % standard error.
pub const SKETCH_PRECISION: u8 = 14;

/// Registers of a sketch.
const SKETCH_REGISTERS: usize = 1 << SKETCH_PRECISION;

/// Hash bits left after the register index; a register holds 1 + the leading zeros of those
/// bits, so its value is at most `RANK_BITS + 1`.
const RANK_BITS: usize = 64 - SKETCH_PRECISION as usize;

/// Distinct hashes a sketch keeps before it switches to registers: the most a 4,096-bucket
/// table holds at its 7/8 load factor. One more would double the table to about 74 KB, past
/// [`SKETCH_BYTES`].
pub const SKETCH_EXACT_HASHES: usize = 3584;

/// Upper bound of one sketch's memory, used by the budget and the memory estimate: the largest
/// hash set (4,096 buckets of 8 bytes plus control bytes) and the registers it turns into.
pub const SKETCH_BYTES: usize = 64 * 1024;

/// Upper bound of the memory of one exact entry: a 16-byte IPv6 slot with its control byte,
/// times the worst load-factor slack of a power-of-two table (16/7). An IPv4 entry, the common
/// case, takes 4 bytes and its control byte.
pub const EXACT_ENTRY_BYTES: usize = 48;

/// Upper bound of the fixed memory of one counter's (small or empty) exact sets: the minimum
/// tables of four slots of each family plus a group of control bytes each.
pub const COUNTER_OVERHEAD_BYTES: usize = 128;

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

/// An IP address hashed with a single write (see [`hash_ip`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IpKey(IpAddr);

impl Hash for IpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ip(self.0, state);
    }
}

/// Feeds `ip` to `state` as one integer write. Hashers pay per `write` call and per byte: the
/// derived `Hash` of `IpAddr` makes three calls, a cost paid on every line the collector reads,
/// and an IPv4 address needs only its four bytes. Equal addresses still hash equally, which is
/// all a table needs; an IPv4 and an IPv6 address may share a hash, and tables compare keys
/// anyway.
pub fn hash_ip<H: Hasher>(ip: IpAddr, state: &mut H) {
    match ip {
        IpAddr::V4(v4) => state.write_u32(u32::from(v4)),
        IpAddr::V6(v6) => state.write_u128(u128::from(v6)),
    }
}

/// The distinct IPs of one connection past its exact bound, in O(1) per insert.
#[derive(Debug)]
pub struct Sketch {
    hasher: SketchHasher,
    form: SketchForm,
}

#[derive(Debug)]
enum SketchForm {
    /// The distinct hashes seen so far, while they fit in [`SKETCH_EXACT_HASHES`].
    Hashes(HashSet<u64, SetHasher>),
    /// One register per index: the largest rank seen there.
    Registers(Box<[u8]>),
}

impl Sketch {
    /// An empty sketch hashing with `hasher`.
    pub fn new(hasher: SketchHasher) -> Sketch {
        Sketch {
            hasher,
            form: SketchForm::Hashes(HashSet::default()),
        }
    }

    /// A sketch holding `ips`. Past [`SKETCH_EXACT_HASHES`] it starts as registers, instead of
    /// filling a hash set only to convert it.
    pub fn from_ips(hasher: SketchHasher, ips: impl ExactSizeIterator<Item = IpAddr>) -> Sketch {
        if ips.len() <= SKETCH_EXACT_HASHES {
            let mut sketch = Sketch::new(hasher);
            for ip in ips {
                sketch.insert(ip);
            }
            return sketch;
        }
        let mut registers = vec![0u8; SKETCH_REGISTERS].into_boxed_slice();
        for ip in ips {
            record_hash(&mut registers, hasher.hash_one(IpKey(ip)));
        }
        Sketch {
            hasher,
            form: SketchForm::Registers(registers),
        }
    }

    /// Records `ip`; repeats change nothing.
    pub fn insert(&mut self, ip: IpAddr) {
        let hash = self.hasher.hash_one(IpKey(ip));
        match &mut self.form {
            SketchForm::Hashes(hashes) => {
                if hashes.len() < SKETCH_EXACT_HASHES || hashes.contains(&hash) {
                    hashes.insert(hash);
                    return;
                }
                let mut registers = vec![0u8; SKETCH_REGISTERS].into_boxed_slice();
                for &seen in hashes.iter() {
                    record_hash(&mut registers, seen);
                }
                record_hash(&mut registers, hash);
                self.form = SketchForm::Registers(registers);
            }
            SketchForm::Registers(registers) => record_hash(registers, hash),
        }
    }

    /// The number of distinct IPs inserted, exact while the hashes are kept, estimated after.
    pub fn count(&self) -> f64 {
        match &self.form {
            SketchForm::Hashes(hashes) => hashes.len() as f64,
            SketchForm::Registers(registers) => estimate_from_registers(registers),
        }
    }
}

/// Raises the register the hash's top bits select to the rank of its remaining bits.
fn record_hash(registers: &mut [u8], hash: u64) {
    let index = (hash >> RANK_BITS) as usize;
    // The marker bit caps the leading zeros at RANK_BITS when the remaining bits are all zero.
    let rank = ((hash << SKETCH_PRECISION) | (1 << (SKETCH_PRECISION - 1))).leading_zeros() + 1;
    if let Some(register) = registers.get_mut(index) {
        *register = (*register).max(rank as u8);
    }
}

/// Ertl's improved raw estimator over the histogram of register values.
fn estimate_from_registers(registers: &[u8]) -> f64 {
    const ALPHA_INFINITY: f64 = 0.721_347_520_444_481_7; // 1 / (2 ln 2)
    let mut histogram = [0u32; RANK_BITS + 2];
    for &value in registers {
        if let Some(bucket) = histogram.get_mut(usize::from(value)) {
            *bucket += 1;
        }
    }
    let registers_total = registers.len() as f64;
    let share =
        |value: usize| f64::from(histogram.get(value).copied().unwrap_or(0)) / registers_total;
    let mut denominator = registers_total * ertl_tau(1.0 - share(RANK_BITS + 1));
    for value in (1..=RANK_BITS).rev() {
        denominator = 0.5 * (denominator + share(value) * registers_total);
    }
    denominator += registers_total * ertl_sigma(share(0));
    ALPHA_INFINITY * registers_total * registers_total / denominator
}

/// Upper bound of the terms the series below need: each converges to f64 precision in well
/// under a hundred steps for inputs in [0, 1]; the bound only guards against a NaN input.
const SERIES_STEPS: usize = 128;

/// σ(x) = x + Σ_{k≥1} x^(2^k)·2^(k−1): the correction for empty registers (x = their share);
/// infinite when every register is empty, which makes the estimate 0.
fn ertl_sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut weight = 1.0;
    let mut sum = x;
    for _ in 0..SERIES_STEPS {
        x *= x;
        let previous = sum;
        sum += x * weight;
        weight += weight;
        if sum == previous {
            break;
        }
    }
    sum
}

/// τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))²·2^−k) / 3: the correction for saturated registers
/// (1 − x = their share).
fn ertl_tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut weight = 1.0;
    let mut sum = 1.0 - x;
    for _ in 0..SERIES_STEPS {
        x = x.sqrt();
        let previous = sum;
        weight *= 0.5;
        sum -= (1.0 - x) * (1.0 - x) * weight;
        if sum == previous {
            break;
        }
    }
    sum / 3.0
}

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

/// Distinct addresses stored exactly, each family in its own table: an IPv4 entry is then 4
/// bytes instead of a 17-byte `IpAddr`, so the tables of a busy interval stay about four times
/// smaller, which is what keeps their probes in cache.
#[derive(Debug, Default)]
struct ExactSet {
    v4: HashSet<u32, SetHasher>,
    v6: HashSet<u128, SetHasher>,
}

impl ExactSet {
    /// True when `ip` was not in the set.
    fn insert(&mut self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.v4.insert(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.insert(u128::from(v6)),
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.v4.contains(&u32::from(v4)),
            IpAddr::V6(v6) => self.v6.contains(&u128::from(v6)),
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn iter(&self) -> impl ExactSizeIterator<Item = IpAddr> + '_ {
        let v4 = self
            .v4
            .iter()
            .map(|&bits| IpAddr::from(std::net::Ipv4Addr::from(bits)));
        let v6 = self
            .v6
            .iter()
            .map(|&bits| IpAddr::from(std::net::Ipv6Addr::from(bits)));
        Addresses {
            remaining: self.len(),
            inner: v4.chain(v6),
        }
    }
}

/// A chain of the two families that knows its length (`Chain` does not implement
/// `ExactSizeIterator`).
struct Addresses<I> {
    remaining: usize,
    inner: I,
}

impl<I: Iterator<Item = IpAddr>> Iterator for Addresses<I> {
    type Item = IpAddr;

    fn next(&mut self) -> Option<IpAddr> {
        let next = self.inner.next();
        if next.is_some() {
            self.remaining -= 1;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<I: Iterator<Item = IpAddr>> ExactSizeIterator for Addresses<I> {}

/// The distinct original IPs of one connection in one interval.
#[derive(Debug)]
pub struct DistinctCounter {
    state: CounterState,
    saturated: bool,
}

#[derive(Debug)]
enum CounterState {
    Exact(ExactSet),
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
            state: CounterState::Exact(ExactSet::default()),
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
                sketch.insert(ip);
                Insertion::Estimated
            }
            CounterState::Exact(set) => {
                let has_room =
                    !self.saturated && set.len() < exact_bound && budget.exact_entries_left > 0;
                if has_room {
                    // The common case probes the table once instead of twice.
                    return if set.insert(ip) {
                        budget.exact_entries_left -= 1;
                        Insertion::New
                    } else {
                        Insertion::AlreadySeen
                    };
                }
                if set.contains(ip) {
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
                Insertion::BudgetExhausted
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
        let sketch = Sketch::from_ips(hasher, set.iter());
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
    /// Takes `&mut self` so a sketch may finish pending work before estimating.
    pub fn count(&mut self) -> u64 {
        match &self.state {
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
            CounterState::Exact(set) => hash_set_bytes(&set.v4) + hash_set_bytes(&set.v6),
            CounterState::Estimated(_) => SKETCH_BYTES,
        }
    }
}

/// Heap bytes of a std hash set: a power-of-two bucket array of slots plus one control byte
/// each and a group of trailing control bytes.
fn hash_set_bytes<T, S>(set: &HashSet<T, S>) -> usize {
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

    fn relative_error(estimate: f64, truth: usize) -> f64 {
        (estimate - truth as f64).abs() / truth as f64
    }

    #[test]
    fn sketch_is_exact_while_it_keeps_hashes() {
        let mut sketch = Sketch::new(SALT);
        assert_eq!(sketch.count(), 0.0);
        for round in 0..2 {
            for n in 0..SKETCH_EXACT_HASHES as u32 {
                sketch.insert(ip(n));
            }
            assert_eq!(sketch.count(), SKETCH_EXACT_HASHES as f64, "round {round}");
        }
        assert!(matches!(sketch.form, SketchForm::Hashes(_)));
        sketch.insert(ip(u32::MAX));
        assert!(matches!(sketch.form, SketchForm::Registers(_)));
        assert!(relative_error(sketch.count(), SKETCH_EXACT_HASHES + 1) < 0.02);
    }

    #[test]
    fn a_seeded_sketch_equals_one_filled_ip_by_ip() {
        for size in [0, 10, SKETCH_EXACT_HASHES, SKETCH_EXACT_HASHES + 1, 20_000] {
            let ips: Vec<IpAddr> = (0..size as u32).map(ip).collect();
            let mut one_by_one = Sketch::new(SALT);
            for &address in &ips {
                one_by_one.insert(address);
            }
            let seeded = Sketch::from_ips(SALT, ips.iter().copied());
            assert_eq!(seeded.count(), one_by_one.count(), "{size} addresses");
            let registers = |sketch: &Sketch| match &sketch.form {
                SketchForm::Registers(registers) => Some(registers.clone()),
                SketchForm::Hashes(_) => None,
            };
            assert_eq!(
                registers(&seeded),
                registers(&one_by_one),
                "{size} addresses"
            );
        }
    }

    #[test]
    fn sketch_estimates_within_two_percent_across_the_range() {
        // Small counts (linear-counting range), the middle range where plain HyperLogLog is
        // biased, and large counts.
        for (salt, truth) in [
            (1, 5_000),
            (2, 12_000),
            (3, 40_000),
            (4, 80_000),
            (5, 1_000_000),
        ] {
            let mut sketch = Sketch::new(SketchHasher::with_salt(salt));
            for n in 0..truth as u32 {
                sketch.insert(ip(n));
                // Repeats must not move the estimate.
                sketch.insert(ip(n / 2));
            }
            let error = relative_error(sketch.count(), truth);
            assert!(error < 0.02, "{truth}: {} ({error})", sketch.count());
        }
    }

    #[test]
    fn estimator_series_handle_their_limits() {
        assert_eq!(ertl_sigma(1.0), f64::INFINITY);
        assert_eq!(ertl_sigma(0.0), 0.0);
        assert_eq!(ertl_tau(0.0), 0.0);
        assert_eq!(ertl_tau(1.0), 0.0);
        assert!(ertl_sigma(f64::NAN).is_nan());
        assert!(ertl_tau(0.5) > 0.0);
        let empty = vec![0u8; SKETCH_REGISTERS];
        assert_eq!(estimate_from_registers(&empty), 0.0);
        let full = vec![(RANK_BITS + 1) as u8; SKETCH_REGISTERS];
        assert!(!estimate_from_registers(&full).is_nan());
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
        // IPv4 entries: four bytes each at least.
        assert!(exact_bytes >= 1000 * std::mem::size_of::<u32>());
        for n in 0..100u128 {
            counter.insert(
                IpAddr::from(std::net::Ipv6Addr::from(n)),
                4096,
                &mut budget,
                SALT,
            );
        }
        let both_bytes = counter.memory_estimate_bytes();
        assert!(both_bytes >= exact_bytes + 100 * std::mem::size_of::<u128>());
        assert!(both_bytes <= 1100 * EXACT_ENTRY_BYTES + COUNTER_OVERHEAD_BYTES);
        assert_eq!(counter.count(), 1100);
        assert!(exact_bytes <= 1000 * EXACT_ENTRY_BYTES + COUNTER_OVERHEAD_BYTES);
        assert!(counter.promote(&mut budget, SALT));
        assert_eq!(counter.memory_estimate_bytes(), SKETCH_BYTES);
    }
}
