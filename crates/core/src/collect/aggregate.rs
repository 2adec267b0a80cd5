//! Records → one report per connection per interval.
//!
//! A connection is the 5-tuple as the ingress pod sees it (direct peer, ingress address,
//! protocol). For each connection seen in an interval the report carries the number of distinct
//! original IPs it carried (Felix's INGRESS_DATA value) and, for the first
//! `requests_per_interval` distinct IPs of the whole interval, their `HTTPData` entries. This is
//! the reference collector's behaviour with one deliberate difference: distinctness is per
//! connection, so an IP arriving over two pooled load-balancer connections counts on both.
//! A connection whose requests carried no usable header is still reported, with value 0.
//!
//! Output order is deterministic: connections in first-seen order, http_data in arrival order.
//!
//! # Bounds
//!
//! Whatever the input, one interval holds at most (see [`AggregatorLimits`]):
//! - `max_connections` connections — records of further connections are counted in
//!   [`IntervalReport::dropped_records`] and otherwise ignored;
//! - `max_exact_ips` exactly stored IPs over all connections, and at most
//!   `exact_distinct_per_connection` on one connection. A connection outgrowing its bound, or
//!   needing room when the shared pool is empty, is switched to a HyperLogLog sketch (≈ 0.81 %
//!   standard error, see [`super::cardinality`]); when the pool is empty the largest exact
//!   connection is switched first, since that frees the most room per sketch;
//! - `max_sketches` sketches — past that, a connection keeps the count it has and reports it as
//!   [`Accuracy::LowerBound`];
//! - `min(requests_per_interval, max_http_data)` http_data entries (a negative
//!   `requests_per_interval` removes the configured cap, not the memory bound). An entry is only
//!   kept for an IP known to be new on its connection, so once a connection is estimated it adds
//!   no entries. A new IP past the configured cap is counted in
//!   [`IntervalReport::http_data_over_cap`], one past `max_http_data` in
//!   [`IntervalReport::http_data_over_memory`]; both still count in their connection's value.
//!   The entries' vectors grow only within `max_http_data` in all, capacity included; once
//!   an entry finds no room, no further entry is kept in the interval (first come, first
//!   kept). Vectors grow by an eighth, so at that point the entries kept are at least eight
//!   ninths of `max_http_data`, less one per connection.
//!
//! [`AggregatorLimits::within`] derives the bounds from a number of bytes,
//! [`AggregatorLimits::memory_bound_bytes`] turns them back into bytes, and
//! [`Aggregator::memory_estimate_bytes`] measures the live state against it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use serde::Serialize;

use super::cardinality::{
    hash_ip, Accuracy, CardinalityBudget, DistinctCounter, Insertion, SketchHasher,
    COUNTER_OVERHEAD_BYTES, EXACT_ENTRY_BYTES, SKETCH_BYTES,
};
use super::origin::{CarriedOrigin, HttpEntry, Origin};
use super::parse::Record;
use crate::model::Connection;

/// Default exact distinct IPs per connection before it is estimated.
pub const DEFAULT_EXACT_DISTINCT_PER_CONNECTION: usize = 4096;

/// The bounds of one interval's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggregatorLimits {
    /// `INGRESS_LOG_REQUESTS_PER_INTERVAL`: http_data entries per interval over all
    /// connections, first come first kept; negative = no configured cap.
    pub requests_per_interval: i64,
    /// Exact distinct IPs one connection may hold before it is estimated.
    pub exact_distinct_per_connection: usize,
    /// Connections tracked per interval.
    pub max_connections: usize,
    /// Exactly stored IPs per interval over all connections.
    pub max_exact_ips: usize,
    /// Sketches per interval over all connections.
    pub max_sketches: usize,
    /// http_data entries per interval over all connections, whatever `requests_per_interval`
    /// says: the memory bound of the carried IPs.
    pub max_http_data: usize,
}

impl AggregatorLimits {
    /// Bounds whose [`AggregatorLimits::memory_bound_bytes`] stays within `bytes`: a quarter
    /// for connections, three eighths for exactly stored IPs, an eighth for sketches and a
    /// quarter for http_data entries.
    pub fn within(bytes: usize, requests_per_interval: i64) -> AggregatorLimits {
        AggregatorLimits {
            requests_per_interval,
            exact_distinct_per_connection: DEFAULT_EXACT_DISTINCT_PER_CONNECTION,
            max_connections: bytes / 4 / (2 * connection_fixed_bytes()),
            max_exact_ips: bytes / 8 * 3 / EXACT_ENTRY_BYTES,
            max_sketches: bytes / 8 / SKETCH_BYTES,
            max_http_data: bytes / 4 / std::mem::size_of::<CarriedOrigin>(),
        }
    }

    /// The number of http_data entries one interval may keep.
    pub fn http_data_cap(&self) -> usize {
        self.configured_cap().min(self.max_http_data)
    }

    /// `requests_per_interval` as a count; no cap is `usize::MAX`.
    fn configured_cap(&self) -> usize {
        usize::try_from(self.requests_per_interval).unwrap_or(usize::MAX)
    }

    /// An upper bound of the heap memory one interval's state can reach under these limits.
    pub fn memory_bound_bytes(&self) -> usize {
        // The connection vector and index may hold up to twice their length while growing;
        // the http_data vectors never outgrow `max_http_data` in all.
        self.max_connections
            .saturating_mul(connection_fixed_bytes())
            .saturating_mul(2)
            .saturating_add(self.max_exact_ips.saturating_mul(EXACT_ENTRY_BYTES))
            .saturating_add(self.max_sketches.saturating_mul(SKETCH_BYTES))
            .saturating_add(
                self.max_http_data
                    .saturating_mul(std::mem::size_of::<CarriedOrigin>()),
            )
    }

    /// An upper bound of the memory one closed interval holds ([`IntervalReport::memory_bytes`]).
    pub fn closed_interval_bound_bytes(&self) -> usize {
        self.max_connections
            .saturating_mul(std::mem::size_of::<ConnectionReport>())
            .saturating_mul(2)
            .saturating_add(
                self.max_http_data
                    .saturating_mul(std::mem::size_of::<CarriedOrigin>()),
            )
    }
}

/// Bytes one connection costs before any IP: its state, its index entry, its empty counter.
fn connection_fixed_bytes() -> usize {
    let index_slot = std::mem::size_of::<(Connection, usize)>() + 1;
    std::mem::size_of::<ConnectionState>() + index_slot * 16 / 7 + COUNTER_OVERHEAD_BYTES
}

/// Hashed with three writes instead of the derived ten or so: the connection table is looked up
/// once per log line.
impl Hash for Connection {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ip(self.source_ip, state);
        hash_ip(self.destination_ip, state);
        state.write_u64(
            u64::from(self.source_port) << 32
                | u64::from(self.destination_port) << 16
                | self.protocol as u64,
        );
    }
}

impl Connection {
    pub fn of(record: &Record<'_>) -> Connection {
        Connection {
            source_ip: record.source_ip,
            source_port: record.source_port,
            destination_ip: record.destination_ip,
            destination_port: record.destination_port,
            protocol: record.protocol,
        }
    }
}

/// One connection's part of an interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionReport {
    pub connection: Connection,
    /// Records seen on the connection, with or without a usable header.
    pub requests: u64,
    /// Felix's INGRESS_DATA value.
    pub distinct_original_ips: u64,
    /// Whether `distinct_original_ips` is exact, estimated or a lower bound.
    pub accuracy: Accuracy,
    /// In arrival order.
    pub http_data: Vec<CarriedOrigin>,
}

impl ConnectionReport {
    /// The http_data entries as Felix receives them.
    pub fn http_entries(&self) -> Vec<HttpEntry> {
        self.http_data.iter().map(CarriedOrigin::render).collect()
    }
}

/// Everything one interval produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IntervalReport {
    /// In first-seen order.
    pub connections: Vec<ConnectionReport>,
    /// Records observed, including dropped ones.
    pub records: u64,
    /// Records of connections beyond `max_connections`, left out of the reports.
    pub dropped_records: u64,
    /// IPs new on their connection that got no http_data entry because
    /// `requests_per_interval` entries were already kept.
    pub http_data_over_cap: u64,
    /// IPs new on their connection that got no http_data entry because `max_http_data`
    /// entries were already kept.
    pub http_data_over_memory: u64,
    /// Records whose original IP could not be counted: their connection's counter had no
    /// memory left (its value is reported as a lower bound).
    pub uncounted_origins: u64,
}

impl IntervalReport {
    /// The heap memory this report holds, from its vectors' capacities.
    pub fn memory_bytes(&self) -> usize {
        self.connections.capacity() * std::mem::size_of::<ConnectionReport>()
            + self
                .connections
                .iter()
                .map(|c| c.http_data.capacity() * std::mem::size_of::<CarriedOrigin>())
                .sum::<usize>()
    }
}

#[derive(Debug)]
struct ConnectionState {
    connection: Connection,
    requests: u64,
    counter: DistinctCounter,
    http_data: Vec<CarriedOrigin>,
}

/// Aggregates the records of one interval at a time.
#[derive(Debug)]
pub struct Aggregator {
    limits: AggregatorLimits,
    hasher: SketchHasher,
    /// Looked up once per line, so it hashes with foldhash rather than SipHash; the per-table
    /// random seed keeps the peer-chosen part of the key (its port) from steering collisions.
    index: HashMap<Connection, usize, foldhash::fast::RandomState>,
    connections: Vec<ConnectionState>,
    budget: CardinalityBudget,
    http_data_kept: usize,
    /// Sum of the http_data vectors' capacities, kept within `max_http_data`.
    http_data_capacity: usize,
    /// An entry found no room: no further entry is kept this interval, so the entries
    /// carried are the interval's first new IPs.
    http_data_full: bool,
    records: u64,
    dropped_records: u64,
    http_data_over_cap: u64,
    http_data_over_memory: u64,
    uncounted_origins: u64,
}

impl Aggregator {
    /// An aggregator whose sketches are salted with a random secret.
    pub fn new(limits: AggregatorLimits) -> Aggregator {
        Aggregator::with_sketch_hasher(limits, SketchHasher::random())
    }

    /// An aggregator with a chosen sketch hasher, for reproducible estimates.
    pub fn with_sketch_hasher(limits: AggregatorLimits, hasher: SketchHasher) -> Aggregator {
        Aggregator {
            limits,
            hasher,
            index: HashMap::default(),
            connections: Vec::new(),
            budget: CardinalityBudget::new(limits.max_exact_ips, limits.max_sketches),
            http_data_kept: 0,
            http_data_capacity: 0,
            http_data_full: false,
            records: 0,
            dropped_records: 0,
            http_data_over_cap: 0,
            http_data_over_memory: 0,
            uncounted_origins: 0,
        }
    }

    pub fn limits(&self) -> AggregatorLimits {
        self.limits
    }

    /// Accounts one record and its original source (`None`: no header carried a usable IP).
    pub fn observe(&mut self, record: &Record<'_>, origin: Option<&Origin>) {
        self.records += 1;
        let Some(slot) = self.connection_slot(Connection::of(record)) else {
            self.dropped_records += 1;
            return;
        };
        if let Some(state) = self.connections.get_mut(slot) {
            state.requests += 1;
        }
        let Some(origin) = origin else {
            return;
        };
        match self.count_origin(slot, origin.ip) {
            Insertion::New => self.keep_http_data(slot, origin.carried()),
            Insertion::Untracked => self.uncounted_origins += 1,
            _ => {}
        }
    }

    /// Keeps the entry of an IP new on its connection, if the cap and the memory bound allow.
    fn keep_http_data(&mut self, slot: usize, entry: CarriedOrigin) {
        if self.http_data_kept >= self.limits.configured_cap() {
            self.http_data_over_cap += 1;
            return;
        }
        if self.http_data_full {
            self.http_data_over_memory += 1;
            return;
        }
        let Some(state) = self.connections.get_mut(slot) else {
            return;
        };
        let vector = &mut state.http_data;
        if vector.len() == vector.capacity() {
            // Grow by an eighth, never past the bound: the capacities, not only the lengths,
            // stay within `max_http_data`, and spare slots stay under a ninth of a vector
            // (plus one), so little of the bound is lost to them. A large vector is an mmap
            // that realloc moves without copying; a small one is cheap to copy.
            let room = self
                .limits
                .max_http_data
                .saturating_sub(self.http_data_capacity);
            let grow = (vector.capacity() / 8).max(1).min(room);
            if grow == 0 {
                self.http_data_full = true;
                self.http_data_over_memory += 1;
                return;
            }
            let before = vector.capacity();
            vector.reserve_exact(grow);
            self.http_data_capacity += vector.capacity() - before;
        }
        vector.push(entry);
        self.http_data_kept += 1;
    }

    /// Ends the interval: returns its reports and starts the next one empty.
    pub fn close_interval(&mut self) -> IntervalReport {
        let connections = std::mem::take(&mut self.connections);
        self.index = HashMap::default();
        self.budget = CardinalityBudget::new(self.limits.max_exact_ips, self.limits.max_sketches);
        self.http_data_kept = 0;
        self.http_data_capacity = 0;
        self.http_data_full = false;
        let report = IntervalReport {
            connections: connections
                .into_iter()
                .map(|mut state| ConnectionReport {
                    connection: state.connection,
                    requests: state.requests,
                    distinct_original_ips: state.counter.count(),
                    accuracy: state.counter.accuracy(),
                    http_data: state.http_data,
                })
                .collect(),
            records: self.records,
            dropped_records: self.dropped_records,
            http_data_over_cap: std::mem::take(&mut self.http_data_over_cap),
            http_data_over_memory: std::mem::take(&mut self.http_data_over_memory),
            uncounted_origins: std::mem::take(&mut self.uncounted_origins),
        };
        self.records = 0;
        self.dropped_records = 0;
        report
    }

    /// Connections tracked in the current interval.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// The heap memory the current interval holds, estimated from the structures' capacities;
    /// stays below [`AggregatorLimits::memory_bound_bytes`].
    pub fn memory_estimate_bytes(&self) -> usize {
        let index_slot = std::mem::size_of::<(Connection, usize)>();
        let index_bytes = match self.index.capacity() {
            0 => 0,
            capacity => (capacity * 8 / 7).next_power_of_two() * (index_slot + 1) + 16,
        };
        let states_bytes = self.connections.capacity() * std::mem::size_of::<ConnectionState>();
        let contents: usize = self
            .connections
            .iter()
            .map(|state| {
                state.counter.memory_estimate_bytes()
                    + state.http_data.capacity() * std::mem::size_of::<CarriedOrigin>()
            })
            .sum();
        index_bytes + states_bytes + contents
    }

    /// The slot of `connection`, created on first sight; `None` when the interval is full.
    fn connection_slot(&mut self, connection: Connection) -> Option<usize> {
        if let Some(&slot) = self.index.get(&connection) {
            return Some(slot);
        }
        if self.connections.len() >= self.limits.max_connections {
            return None;
        }
        let slot = self.connections.len();
        self.index.insert(connection, slot);
        self.connections.push(ConnectionState {
            connection,
            requests: 0,
            counter: DistinctCounter::new(),
            http_data: Vec::new(),
        });
        Some(slot)
    }

    /// Counts `ip` on the connection in `slot`, making room in the shared budget if needed.
    fn count_origin(&mut self, slot: usize, ip: IpAddr) -> Insertion {
        let bound = self.limits.exact_distinct_per_connection;
        let hasher = self.hasher;
        let Some(state) = self.connections.get_mut(slot) else {
            return Insertion::Untracked;
        };
        let outcome = state.counter.insert(ip, bound, &mut self.budget, hasher);
        if outcome != Insertion::BudgetExhausted {
            return outcome;
        }
        let to_promote = self.largest_exact_counter().unwrap_or(slot);
        let promoted = self
            .connections
            .get_mut(to_promote)
            .is_some_and(|state| state.counter.promote(&mut self.budget, hasher));
        let Some(state) = self.connections.get_mut(slot) else {
            return Insertion::Untracked;
        };
        let retried = if promoted {
            state.counter.insert(ip, bound, &mut self.budget, hasher)
        } else {
            Insertion::BudgetExhausted
        };
        if retried == Insertion::BudgetExhausted {
            state.counter.mark_saturated();
            return Insertion::Untracked;
        }
        retried
    }

    /// The exact counter holding the most IPs, if any holds one. A linear scan, but it only
    /// runs when the shared budget is empty, at most once per sketch handed out (after the last
    /// sketch, counters saturate without scanning).
    fn largest_exact_counter(&self) -> Option<usize> {
        if self.budget.sketches_left() == 0 {
            return None;
        }
        self.connections
            .iter()
            .enumerate()
            .filter(|(_, state)| state.counter.exact_len() > 0)
            .max_by_key(|(slot, state)| (state.counter.exact_len(), std::cmp::Reverse(*slot)))
            .map(|(slot, _)| slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use std::net::Ipv4Addr;

    fn record(source_port: u16) -> Record<'static> {
        Record {
            source_ip: "10.1.10.1".parse().unwrap(),
            source_port,
            destination_ip: "10.1.1.10".parse().unwrap(),
            destination_port: 2,
            protocol: Protocol::Tcp,
            x_forwarded_for: None,
            x_real_ip: None,
        }
    }

    fn origin(n: u32) -> Origin {
        let ip = IpAddr::V4(Ipv4Addr::from(n));
        Origin {
            ip,
            x_forwarded_for: Some(ip),
            x_real_ip: None,
        }
    }

    fn limits() -> AggregatorLimits {
        AggregatorLimits {
            requests_per_interval: -1,
            exact_distinct_per_connection: 100,
            max_connections: 10,
            max_exact_ips: 150,
            max_sketches: 1,
            max_http_data: 150,
        }
    }

    #[test]
    fn an_empty_pool_promotes_the_largest_exact_connection() {
        let mut aggregator = Aggregator::with_sketch_hasher(limits(), SketchHasher::with_salt(1));
        for n in 0..90 {
            aggregator.observe(&record(1), Some(&origin(n)));
        }
        for n in 0..60 {
            aggregator.observe(&record(2), Some(&origin(1000 + n)));
        }
        // The pool (150) is empty; the next new IP on port 2 promotes port 1 (90 IPs).
        aggregator.observe(&record(2), Some(&origin(5000)));
        // Port 3 can still be exact: port 1's entries went back to the pool.
        aggregator.observe(&record(3), Some(&origin(6000)));
        let report = aggregator.close_interval();
        let accuracies: Vec<_> = report.connections.iter().map(|c| c.accuracy).collect();
        assert_eq!(
            accuracies,
            [Accuracy::Estimated, Accuracy::Exact, Accuracy::Exact]
        );
        let values: Vec<_> = report
            .connections
            .iter()
            .map(|c| c.distinct_original_ips)
            .collect();
        assert_eq!(values, [90, 61, 1]);
        // The entries' 150 slots ran out at port 2's 60th IP, port 1's vector having grown to
        // 91 slots: from then on no entry is kept (first come, first kept), and every IP left
        // without one is counted.
        assert_eq!(report.connections[0].http_data.len(), 90);
        assert_eq!(report.connections[1].http_data.len(), 59);
        assert!(report.connections[2].http_data.is_empty());
        assert_eq!(report.http_data_over_memory, 3);
    }

    #[test]
    fn without_sketches_an_empty_pool_saturates() {
        let limits = AggregatorLimits {
            max_sketches: 0,
            ..limits()
        };
        let mut aggregator = Aggregator::new(limits);
        for n in 0..200 {
            aggregator.observe(&record(1 + (n % 2) as u16), Some(&origin(n)));
        }
        let report = aggregator.close_interval();
        let total: u64 = report
            .connections
            .iter()
            .map(|c| c.distinct_original_ips)
            .sum();
        assert_eq!(total, 150);
        assert!(report
            .connections
            .iter()
            .all(|c| c.accuracy == Accuracy::LowerBound));
    }

    #[test]
    fn negative_cap_is_still_bounded_by_memory() {
        let limits = AggregatorLimits {
            max_http_data: 20,
            ..limits()
        };
        assert_eq!(limits.http_data_cap(), 20);
        assert_eq!(
            AggregatorLimits {
                requests_per_interval: 5,
                ..limits
            }
            .http_data_cap(),
            5
        );
    }

    #[test]
    fn state_is_reset_between_intervals() {
        let mut aggregator = Aggregator::new(limits());
        aggregator.observe(&record(1), Some(&origin(1)));
        let first = aggregator.close_interval();
        assert_eq!(first.records, 1);
        assert_eq!(aggregator.connection_count(), 0);
        assert_eq!(aggregator.memory_estimate_bytes(), 0);
        aggregator.observe(&record(1), Some(&origin(1)));
        let second = aggregator.close_interval();
        assert_eq!(first, second);
    }

    #[test]
    fn http_data_past_the_bounds_is_counted_and_capacity_stays_within() {
        let limits = AggregatorLimits {
            max_http_data: 37,
            max_exact_ips: 1000,
            exact_distinct_per_connection: 1000,
            ..limits()
        };
        let mut aggregator = Aggregator::new(limits);
        for n in 0..100 {
            aggregator.observe(&record(1 + (n % 3) as u16), Some(&origin(n)));
        }
        assert!(aggregator.http_data_capacity <= 37);
        let report = aggregator.close_interval();
        let kept: usize = report.connections.iter().map(|c| c.http_data.len()).sum();
        let capacity: usize = report
            .connections
            .iter()
            .map(|c| c.http_data.capacity())
            .sum();
        assert!(capacity <= 37, "{capacity}");
        assert_eq!(kept as u64 + report.http_data_over_memory, 100);
        assert_eq!(report.http_data_over_cap, 0);
        let values: u64 = report
            .connections
            .iter()
            .map(|c| c.distinct_original_ips)
            .sum();
        assert_eq!(values, 100, "IPs without an entry still count");
        assert!(report.memory_bytes() <= limits.closed_interval_bound_bytes());

        let capped = AggregatorLimits {
            requests_per_interval: 5,
            ..limits
        };
        let mut aggregator = Aggregator::new(capped);
        for n in 0..100 {
            aggregator.observe(&record(1), Some(&origin(n)));
        }
        let report = aggregator.close_interval();
        assert_eq!(report.connections[0].http_data.len(), 5);
        assert_eq!(report.http_data_over_cap, 95);
        assert_eq!(report.http_data_over_memory, 0);
    }

    #[test]
    fn derived_limits_fit_their_bytes() {
        for bytes in [1 << 20, 16 << 20, 1 << 30] {
            let limits = AggregatorLimits::within(bytes, -1);
            assert!(limits.memory_bound_bytes() <= bytes, "{limits:?}");
            assert!(limits.max_connections > 0 && limits.max_http_data > 0);
            // An entry is kept only for an IP stored exactly, so more would be wasted.
            assert!(limits.max_http_data <= limits.max_exact_ips);
        }
    }
}
