//! The busiest IPs of a window in fixed memory, however many distinct IPs send.
//!
//! A hostile client can spoof millions of distinct X-Forwarded-For values in one window, so an
//! exact count per IP is not affordable. [`SpaceSaving`] is the Space-Saving summary of
//! Metwally, Agrawal and El Abbadi (2005) with the filter of Homem and Carvalho's Filtered
//! Space-Saving (2010): `capacity` counters; an IP already counted is incremented; an uncounted
//! IP raises a filter cell chosen by its hash while that cell stays at most the smallest count,
//! and otherwise takes over the smallest counter and inherits its value as its *error*. An
//! evicted IP's cell is raised to the count it had. So every cell bounds from above the
//! requests of each uncounted IP hashed to it, and a newcomer's inherited count bounds what it
//! sent before it was counted. Its guarantees, for a window of `N` observations:
//!
//! - every reported count overestimates the true count by at most its entry's `error`, and
//!   every `error` is at most `N / capacity` (requests absorbed by the filter are in no
//!   counter, so the counts add up to at most `N` and the smallest is at most the mean);
//! - so `count - error` is a lower bound and `count` an upper bound of the true count;
//! - any IP whose true count exceeds `N / capacity` is in the summary: no heavy hitter is
//!   missed (an uncounted IP's count is at most its cell, at most the smallest count);
//! - while fewer than `capacity` distinct IPs have been seen, every count is exact.
//!
//! The filter is what makes a flood of one-off addresses cheap: plain Space-Saving evicts a
//! counter (a heap sift and two index updates) for every request of an uncounted IP, while
//! with [`FILTER_CELLS_PER_COUNTER`] cells per counter about one such request in nine does;
//! the others only add to a cell. An uncounted IP's estimate is its cell, with nothing certain
//! (`error` equal to `count`).
//!
//! The counters sit in a 4-ary min-heap (by count) addressed through a hash index, so one
//! observation costs one hash, one index probe and `O(log capacity)` moves, and nothing is
//! allocated after construction: the heap, the slots, the index and the filter are sized for
//! `capacity` up front and only ever cleared. The index and the filter hash with foldhash
//! under a per-summary random seed, so a client cannot craft addresses that collide without
//! guessing it.
//!
//! [`SpaceSaving::observe_weighted`] counts several requests of one IP at once, which is how
//! the detector applies a batch: the summary is the same as after that many single
//! observations in a row, and the guarantees hold with `N` the total weight.
//!
//! [`WindowedTopK`] runs one summary over tumbling windows and keeps the top entries of the
//! last completed window for display while the current one fills.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::HashTable;

use serde::{Deserialize, Serialize};

use crate::model::Provenance;

/// How many counters a summary keeps per entry it is asked to report, by default.
///
/// With 50 counters per reported entry the error bound `N / capacity` is 2 % of the window's
/// requests divided by the number of entries shown, small against the counts of the IPs that
/// make the top list under any realistic skew.
pub const DEFAULT_COUNTERS_PER_ENTRY: usize = 50;

/// One counted IP as reported: its estimated requests and how much of that may be inherited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopEntry {
    pub ip: IpAddr,
    /// Upper bound of the IP's requests in the window.
    pub requests: u64,
    /// How many of `requests` may belong to other IPs: the true count lies in
    /// `requests - error ..= requests`.
    pub error: u64,
    /// How far `ip` can be believed: `connection` for connection sources; for original IPs,
    /// that of the latest request counted (`trusted` or `connection` in `top_original`,
    /// `claimed` in `top_claimed`). Absent only in documents of collectors older than the
    /// field; readers take the list's field's [`super::events::Field::assumed_provenance`] then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

impl TopEntry {
    /// Requests the IP certainly made in the window.
    pub fn guaranteed_requests(&self) -> u64 {
        self.requests.saturating_sub(self.error)
    }
}

/// The estimate for one IP right after an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Upper bound of the true count.
    pub count: u64,
    /// The overestimate bound: the true count is at least `count - error`.
    pub error: u64,
}

impl Estimate {
    /// The true count is at least this.
    pub fn lower_bound(&self) -> u64 {
        self.count.saturating_sub(self.error)
    }
}

/// Where the heap keeps a counter: its count inline, so that a sift compares counts read from
/// one contiguous run of memory instead of chasing each slot.
#[derive(Clone, Copy, Debug)]
struct HeapEntry {
    count: u64,
    slot: u32,
}

#[derive(Clone, Copy, Debug)]
struct Counter {
    ip: IpAddr,
    /// The provenance of the latest request counted, when the caller told it (it fits in the
    /// padding after `ip`).
    provenance: Option<Provenance>,
    error: u64,
    /// Where this counter sits in the heap, kept in step by every move so that moving a
    /// counter never needs a hash lookup.
    heap_position: u32,
}

/// Children per heap node: four 16-byte entries fill one cache line, and the heap is half as
/// deep as a binary one, which matters because a newcomer inheriting the smallest count
/// usually sinks to the bottom past counters tied at that count.
const ARITY: usize = 4;

/// Filter cells per counter (rounded up to a power of two). Under a uniform flood of
/// unmonitored addresses about one request in `1 + FILTER_CELLS_PER_COUNTER` replaces a
/// counter, the rest only raise a cell; eight cells of four bytes cost 32 bytes per counter
/// against the counter's ~160.
pub const FILTER_CELLS_PER_COUNTER: usize = 8;

/// The one hash of an address that every per-address table of the detector uses: the batch
/// computes it once per request and hands it to each summary, rule and list, instead of each
/// hashing the address again. foldhash of the address's bits as one integer (the derived
/// `Hash` of `IpAddr` would feed the hasher three times), keyed by a random seed so that a
/// client flooding crafted addresses would have to guess it to make them collide in an index,
/// a filter cell or a bucket set.
#[derive(Clone, Copy, Debug)]
pub struct AddressHasher(foldhash::fast::FixedState);

impl AddressHasher {
    pub fn with_seed(seed: u64) -> AddressHasher {
        AddressHasher(foldhash::fast::FixedState::with_seed(seed))
    }

    pub fn random() -> AddressHasher {
        AddressHasher::with_seed(rand::random())
    }

    /// An IPv4 address and its IPv4-mapped IPv6 form hash differently only by chance; tables
    /// compare whole addresses, so that costs nothing but a rare probe.
    pub fn hash(&self, ip: &IpAddr) -> u64 {
        match ip {
            IpAddr::V4(v4) => self.0.hash_one(u32::from(*v4)),
            IpAddr::V6(v6) => self.0.hash_one(u128::from(*v6)),
        }
    }
}

/// Space-Saving top-k over IP addresses with a fixed number of counters.
#[derive(Debug)]
pub struct SpaceSaving {
    capacity: usize,
    /// Counters by slot number; a slot keeps its number for as long as its IP is counted.
    slots: Vec<Counter>,
    /// Slot numbers with their counts, arranged as a 4-ary min-heap by count.
    heap: Vec<HeapEntry>,
    /// The slot of each counted IP, found by the hash computed once per observation (the
    /// filter needs the same hash). Only slot numbers are stored, the addresses being in
    /// `slots`: a probe for an uncounted IP — nearly every probe of a flood — then reads only
    /// the table's tag bytes, a fifth of the memory that pairs of address and slot would take.
    index: HashTable<u32>,
    /// The index's capacity as allocated; see [`SpaceSaving::memory_bytes`].
    index_capacity: usize,
    hasher: AddressHasher,
    /// The filter of Filtered Space-Saving: each cell bounds from above the requests of every
    /// uncounted IP hashed to it, and never exceeds the smallest count.
    filter: Vec<u32>,
    /// Cleared when the smallest count outgrows a cell; the summary is plain Space-Saving
    /// until the next [`SpaceSaving::clear`].
    filter_on: bool,
    observations: u64,
    replacements: u64,
}

impl SpaceSaving {
    /// A summary of `capacity` counters (at least one, at most `u32::MAX`).
    pub fn new(capacity: usize) -> SpaceSaving {
        SpaceSaving::with_hasher(capacity, AddressHasher::random())
    }

    /// A summary hashing with the detector's `hasher`, so that it can be handed the hash.
    pub fn with_hasher(capacity: usize, hasher: AddressHasher) -> SpaceSaving {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        // Twice the entries: a full table with tombstones from replacements is then rehashed
        // in place instead of grown, so the index never allocates after construction.
        let index = HashTable::with_capacity(capacity * 2);
        SpaceSaving {
            capacity,
            slots: Vec::with_capacity(capacity),
            heap: Vec::with_capacity(capacity),
            index_capacity: index.capacity(),
            index,
            hasher,
            filter: vec![0; filter_cells(capacity)],
            filter_on: true,
            observations: 0,
            replacements: 0,
        }
    }

    /// Counts one request from `ip` and returns the IP's estimate afterwards.
    pub fn observe(&mut self, ip: IpAddr) -> Estimate {
        self.observe_weighted(ip, 1)
    }

    /// Counts `weight` requests from `ip` at once — the same summary as `weight` calls of
    /// [`SpaceSaving::observe`] in a row (weighted Space-Saving keeps every guarantee, with
    /// `N` the total weight). Returns the IP's estimate afterwards.
    pub fn observe_weighted(&mut self, ip: IpAddr, weight: u64) -> Estimate {
        self.observe_hashed(ip, self.hasher.hash(&ip), weight, None)
    }

    /// [`SpaceSaving::observe_weighted`] with `ip`'s hash by this summary's hasher, and the
    /// provenance its counter then reports, if any.
    pub fn observe_hashed(
        &mut self,
        ip: IpAddr,
        hash: u64,
        weight: u64,
        provenance: Option<Provenance>,
    ) -> Estimate {
        if weight == 0 {
            return self
                .estimate(&ip)
                .unwrap_or(Estimate { count: 0, error: 0 });
        }
        self.observations = self.observations.saturating_add(weight);
        let slots = &self.slots;
        let counts = |slot: &u32| slots.get(*slot as usize).is_some_and(|c| c.ip == ip);
        if let Some(&slot) = self.index.find(hash, counts) {
            if let (Some(counter), Some(_)) = (self.slots.get_mut(slot as usize), provenance) {
                counter.provenance = provenance;
            }
            return self.increment(slot, weight);
        }
        if self.slots.len() < self.capacity {
            return self.add_counter(ip, hash, weight, provenance);
        }
        let Some(smallest) = self.heap.first().map(|root| root.count) else {
            return Estimate { count: 0, error: 0 };
        };
        if self.filter_on && smallest > u64::from(u32::MAX) {
            self.filter_on = false;
        }
        let mut weight = weight;
        if self.filter_on {
            let cell = filter_cell(hash, self.filter.len());
            if let Some(alpha) = self.filter.get_mut(cell) {
                let held = u64::from(*alpha);
                let raised = held.saturating_add(weight);
                if raised <= smallest {
                    // Fits under the smallest count: the IP stays uncounted, its requests
                    // bounded by the cell. Nothing certain is known of it.
                    *alpha = raised as u32;
                    return Estimate {
                        count: raised,
                        error: raised,
                    };
                }
                // As single requests would: the cell fills up to the smallest count, and the
                // request that would pass it takes over the smallest counter.
                weight = raised - smallest;
                *alpha = smallest as u32;
            }
        }
        self.replace_smallest(ip, hash, weight, provenance)
    }

    /// The current estimate for `ip`, if it is counted.
    pub fn estimate(&self, ip: &IpAddr) -> Option<Estimate> {
        let hash = self.hasher.hash(ip);
        let slots = &self.slots;
        let &slot = self.index.find(hash, |slot| {
            slots.get(*slot as usize).is_some_and(|c| c.ip == *ip)
        })?;
        let counter = self.slots.get(slot as usize)?;
        let entry = self.heap.get(counter.heap_position as usize)?;
        Some(Estimate {
            count: entry.count,
            error: counter.error,
        })
    }

    /// The `n` largest counts, largest first; ties go to the smaller error, then the lower
    /// address, so the order is stable between calls.
    pub fn top(&self, n: usize) -> Vec<TopEntry> {
        let mut entries: Vec<TopEntry> = self
            .heap
            .iter()
            .filter_map(|entry| {
                let counter = self.slots.get(entry.slot as usize)?;
                Some(TopEntry {
                    ip: counter.ip,
                    requests: entry.count,
                    error: counter.error,
                    provenance: counter.provenance,
                })
            })
            .collect();
        entries.sort_unstable_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then(a.error.cmp(&b.error))
                .then(a.ip.cmp(&b.ip))
        });
        entries.truncate(n);
        entries
    }

    /// Observations since the summary was created or cleared (`N` of the error bound).
    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Counters taken over by a newcomer since the summary was created or cleared.
    pub fn replacements(&self) -> u64 {
        self.replacements
    }

    /// The largest overestimate any entry can carry right now: the smallest counter once every
    /// counter is in use, zero before (all counts are exact then). Never above
    /// `observations / capacity`.
    pub fn error_bound(&self) -> u64 {
        if self.slots.len() < self.capacity {
            return 0;
        }
        self.heap.first().map_or(0, |entry| entry.count)
    }

    /// IPs currently counted.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The fixed number of counters.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `ip`'s hash by this summary's hasher.
    pub fn hash(&self, ip: &IpAddr) -> u64 {
        self.hasher.hash(ip)
    }

    /// Forgets every count but keeps the memory, for the next window.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.heap.clear();
        self.index.clear();
        self.filter.fill(0);
        self.filter_on = true;
        self.observations = 0;
        self.replacements = 0;
    }

    /// Bytes held by the summary, from the allocations' capacities; constant after
    /// construction. The index is measured by its capacity at construction, or its current one
    /// if larger: a hash table's reported capacity dips while removals leave tombstones, but
    /// its allocation does not.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.slots.capacity() * std::mem::size_of::<Counter>()
            + self.heap.capacity() * std::mem::size_of::<HeapEntry>()
            + self.filter.capacity() * std::mem::size_of::<u32>()
            + hash_table_bytes::<u32>(self.index_capacity.max(self.index.capacity()))
    }

    /// The memory a summary of `capacity` counters holds, without building one.
    pub fn memory_bound_bytes(capacity: usize) -> usize {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        std::mem::size_of::<Self>()
            + capacity * (std::mem::size_of::<Counter>() + std::mem::size_of::<HeapEntry>())
            + filter_cells(capacity) * std::mem::size_of::<u32>()
            + hash_table_bytes::<u32>(capacity * 2)
    }

    fn add_counter(
        &mut self,
        ip: IpAddr,
        hash: u64,
        weight: u64,
        provenance: Option<Provenance>,
    ) -> Estimate {
        let slot = self.slots.len() as u32;
        let heap_position = self.heap.len();
        self.slots.push(Counter {
            ip,
            provenance,
            error: 0,
            heap_position: heap_position as u32,
        });
        self.index_slot(hash, slot);
        self.heap.push(HeapEntry {
            count: weight,
            slot,
        });
        self.sift_up(heap_position);
        Estimate {
            count: weight,
            error: 0,
        }
    }

    fn increment(&mut self, slot: u32, weight: u64) -> Estimate {
        let Some(counter) = self.slots.get(slot as usize) else {
            return Estimate { count: 0, error: 0 };
        };
        let (position, error) = (counter.heap_position as usize, counter.error);
        let Some(entry) = self.heap.get_mut(position) else {
            return Estimate { count: 0, error: 0 };
        };
        entry.count = entry.count.saturating_add(weight);
        let estimate = Estimate {
            count: entry.count,
            error,
        };
        self.sift_down(position);
        estimate
    }

    /// The Space-Saving replacement: the newcomer takes the smallest counter, inheriting its
    /// count as error, because it may have been among the requests that counter absorbed.
    /// The evicted IP's filter cell is raised to the count it had, so the cell keeps bounding
    /// its requests while it is uncounted.
    fn replace_smallest(
        &mut self,
        ip: IpAddr,
        hash: u64,
        weight: u64,
        provenance: Option<Provenance>,
    ) -> Estimate {
        let Some(root) = self.heap.first_mut() else {
            return Estimate { count: 0, error: 0 };
        };
        let inherited = root.count;
        root.count = inherited.saturating_add(weight);
        let estimate = Estimate {
            count: root.count,
            error: inherited,
        };
        let slot = root.slot;
        let Some(counter) = self.slots.get_mut(slot as usize) else {
            return Estimate { count: 0, error: 0 };
        };
        let evicted = counter.ip;
        counter.ip = ip;
        counter.provenance = provenance;
        counter.error = inherited;
        let evicted_hash = self.hasher.hash(&evicted);
        if let Ok(entry) = self.index.find_entry(evicted_hash, |&held| held == slot) {
            entry.remove();
        }
        self.index_slot(hash, slot);
        if self.filter_on {
            let cell = filter_cell(evicted_hash, self.filter.len());
            if let Some(alpha) = self.filter.get_mut(cell) {
                // `inherited` is the smallest count, at most `u32::MAX` while the filter is on.
                *alpha = (*alpha).max(inherited as u32);
            }
        }
        self.replacements = self.replacements.saturating_add(1);
        self.sift_down(0);
        estimate
    }

    /// Indexes `slot`, which already holds the address that `hash` is the hash of.
    fn index_slot(&mut self, hash: u64, slot: u32) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, slot, |held| {
            slots
                .get(*held as usize)
                .map_or(0, |counter| hasher.hash(&counter.ip))
        });
    }

    /// Writes `entry` at `position` and tells its slot where it now is.
    fn place(&mut self, position: usize, entry: HeapEntry) {
        if let Some(target) = self.heap.get_mut(position) {
            *target = entry;
        }
        if let Some(counter) = self.slots.get_mut(entry.slot as usize) {
            counter.heap_position = position as u32;
        }
    }

    fn sift_up(&mut self, mut position: usize) {
        let Some(&moving) = self.heap.get(position) else {
            return;
        };
        while position > 0 {
            let parent = (position - 1) / ARITY;
            let Some(&above) = self.heap.get(parent) else {
                break;
            };
            if above.count <= moving.count {
                break;
            }
            self.place(position, above);
            position = parent;
        }
        self.place(position, moving);
    }

    /// Moves the entry at `position` down past every smaller child, shifting those up into
    /// the hole it leaves rather than swapping at every level.
    fn sift_down(&mut self, mut position: usize) {
        let Some(&moving) = self.heap.get(position) else {
            return;
        };
        loop {
            let first_child = position * ARITY + 1;
            let Some(children) = self
                .heap
                .get(first_child..(first_child + ARITY).min(self.heap.len()))
            else {
                break;
            };
            let Some((offset, smallest)) = children
                .iter()
                .enumerate()
                .min_by_key(|(_, entry)| entry.count)
            else {
                break;
            };
            if moving.count <= smallest.count {
                break;
            }
            let (child, smallest) = (first_child + offset, *smallest);
            self.place(position, smallest);
            position = child;
        }
        self.place(position, moving);
    }
}

fn filter_cells(capacity: usize) -> usize {
    capacity
        .saturating_mul(FILTER_CELLS_PER_COUNTER)
        .next_power_of_two()
}

/// The filter cell of a hash: its upper half, as the index's buckets and tags come from
/// its lowest and highest bits.
fn filter_cell(hash: u64, cells: usize) -> usize {
    ((hash >> 32) as usize) & (cells - 1)
}

/// Bytes of a hashbrown table with room for `capacity` entries: buckets rounded up to a power
/// of two at 7/8 load, one control byte per bucket plus a group of 16.
pub fn hash_table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity.saturating_mul(8) / 7).max(4).next_power_of_two();
    buckets * (std::mem::size_of::<T>() + 1) + 16
}

/// The top entries of one completed window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedWindow {
    /// Monotonic milliseconds at which the window began.
    pub start_ms: u64,
    /// Observations in the window (`N` of the error bound).
    pub observations: u64,
    pub top: Vec<TopEntry>,
}

/// What moving to `now_ms` did to the windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowAdvance {
    /// `now_ms` is inside the current window.
    Same,
    /// A new window began at `start_ms`.
    Started { start_ms: u64 },
}

/// Tumbling windows over a [`SpaceSaving`] summary.
#[derive(Debug)]
pub struct WindowedTopK {
    window_ms: u64,
    top_n: usize,
    current: SpaceSaving,
    current_start_ms: Option<u64>,
    previous: Option<CompletedWindow>,
}

impl WindowedTopK {
    /// Windows of `window_ms` (at least 1), reporting `top_n` entries from `capacity` counters.
    pub fn new(window_ms: u64, top_n: usize, capacity: usize) -> WindowedTopK {
        WindowedTopK::with_hasher(window_ms, top_n, capacity, AddressHasher::random())
    }

    /// Windows whose summary hashes with the detector's `hasher`.
    pub fn with_hasher(
        window_ms: u64,
        top_n: usize,
        capacity: usize,
        hasher: AddressHasher,
    ) -> WindowedTopK {
        WindowedTopK {
            window_ms: window_ms.max(1),
            top_n,
            current: SpaceSaving::with_hasher(capacity.max(top_n), hasher),
            current_start_ms: None,
            previous: None,
        }
    }

    /// Closes the current window if `now_ms` is past it. Windows are aligned on the first
    /// observation; a gap longer than one window leaves an empty previous window, because
    /// that is what the last completed window saw.
    pub fn advance(&mut self, now_ms: u64) -> WindowAdvance {
        let Some(start_ms) = self.current_start_ms else {
            self.current_start_ms = Some(now_ms);
            return WindowAdvance::Started { start_ms: now_ms };
        };
        let elapsed = now_ms.saturating_sub(start_ms);
        if elapsed < self.window_ms {
            return WindowAdvance::Same;
        }
        let windows_passed = elapsed / self.window_ms;
        let new_start_ms = start_ms.saturating_add(windows_passed.saturating_mul(self.window_ms));
        self.previous = Some(if windows_passed == 1 {
            CompletedWindow {
                start_ms,
                observations: self.current.observations(),
                top: self.current.top(self.top_n),
            }
        } else {
            CompletedWindow {
                start_ms: new_start_ms.saturating_sub(self.window_ms),
                observations: 0,
                top: Vec::new(),
            }
        });
        self.current.clear();
        self.current_start_ms = Some(new_start_ms);
        WindowAdvance::Started {
            start_ms: new_start_ms,
        }
    }

    /// Counts one request from `ip` at `now_ms`.
    pub fn observe(&mut self, now_ms: u64, ip: IpAddr) -> Estimate {
        self.observe_weighted(now_ms, ip, 1)
    }

    /// Counts `weight` requests from `ip` at `now_ms`.
    pub fn observe_weighted(&mut self, now_ms: u64, ip: IpAddr, weight: u64) -> Estimate {
        self.advance(now_ms);
        self.current.observe_weighted(ip, weight)
    }

    /// [`WindowedTopK::observe_weighted`] with `ip`'s hash by the summary's hasher.
    pub fn observe_hashed(
        &mut self,
        now_ms: u64,
        ip: IpAddr,
        hash: u64,
        weight: u64,
        provenance: Provenance,
    ) -> Estimate {
        self.advance(now_ms);
        self.current
            .observe_hashed(ip, hash, weight, Some(provenance))
    }

    /// The current window's top entries, largest first.
    pub fn current_top(&self) -> Vec<TopEntry> {
        self.current.top(self.top_n)
    }

    /// The summary of the window being filled.
    pub fn current(&self) -> &SpaceSaving {
        &self.current
    }

    /// When the current window began, once anything was observed.
    pub fn current_start_ms(&self) -> Option<u64> {
        self.current_start_ms
    }

    /// The last completed window, once one has completed.
    pub fn previous(&self) -> Option<&CompletedWindow> {
        self.previous.as_ref()
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Bytes held, including the previous window's top entries.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.current.memory_bytes()
            + self.previous.as_ref().map_or(0, |window| {
                window.top.capacity() * std::mem::size_of::<TopEntry>()
            })
    }

    /// The memory a windowed summary with these settings holds at most.
    pub fn memory_bound_bytes(top_n: usize, capacity: usize) -> usize {
        std::mem::size_of::<Self>()
            + SpaceSaving::memory_bound_bytes(capacity.max(top_n))
            + top_n * std::mem::size_of::<TopEntry>()
    }
}

#[cfg(test)]
mod tests;
