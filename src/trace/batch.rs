//! Requests of one instant, added up per address before they reach the detectors.
//!
//! The collector reads the clock once per batch of lines, so every request of a batch carries
//! the same time. Applied one by one, each would repeat the same hash lookups in every
//! summary, rule and list; added up first, each distinct address of the batch costs one
//! update per structure with its request count as the weight — and a batch's few connection
//! sources (load balancers) cost almost nothing. The detectors' weighted updates are exact
//! equivalents of that many single updates in a row, so only the interleaving of different
//! addresses within one instant changes.

use std::net::IpAddr;
use std::time::SystemTime;

use hashbrown::HashTable;

use crate::collect::aggregate::Connection;

use super::heavy_hitters::{hash_table_bytes, AddressHasher};

/// Distinct addresses per table before a batch is applied early: a 64 KiB read holds about
/// 340 lines, so this is rarely reached; when a reader hands over more at one instant, the
/// batch is applied in parts and nothing grows.
pub const BATCH_ADDRESSES: usize = 1024;

/// One address's requests in the batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tally {
    pub ip: IpAddr,
    /// The address's hash by the detector's hasher, computed here once for every table.
    pub hash: u64,
    pub requests: u64,
    /// Requests for which this address is looked up in the threat lists: all of them for an
    /// original IP; for a connection source, those whose original IP differs from it.
    pub listed_requests: u64,
    /// The connection of the address's first request in the batch, named by its events.
    pub connection: Connection,
}

/// Tallies in first-seen order, so that a batch's events come out in the order their
/// addresses first appeared.
#[derive(Debug)]
pub(crate) struct Tallies {
    tallies: Vec<Tally>,
    /// Each address with its position in `tallies`: probed once per request.
    index: HashTable<(IpAddr, u32)>,
    index_capacity: usize,
    hasher: AddressHasher,
}

impl Tallies {
    pub fn new(hasher: AddressHasher) -> Tallies {
        let index = HashTable::with_capacity(BATCH_ADDRESSES);
        Tallies {
            tallies: Vec::with_capacity(BATCH_ADDRESSES),
            index_capacity: index.capacity(),
            index,
            hasher,
        }
    }

    fn add(&mut self, ip: IpAddr, connection: &Connection, listed: bool) {
        let listed = u64::from(listed);
        let hash = self.hasher.hash(&ip);
        if let Some(&(_, position)) = self.index.find(hash, |(tallied, _)| *tallied == ip) {
            if let Some(tally) = self.tallies.get_mut(position as usize) {
                tally.requests = tally.requests.saturating_add(1);
                tally.listed_requests = tally.listed_requests.saturating_add(listed);
            }
            return;
        }
        let position = self.tallies.len() as u32;
        let hasher = &self.hasher;
        self.index
            .insert_unique(hash, (ip, position), |(tallied, _)| hasher.hash(tallied));
        self.tallies.push(Tally {
            ip,
            hash,
            requests: 1,
            listed_requests: listed,
            connection: *connection,
        });
    }

    fn is_full(&self) -> bool {
        self.tallies.len() >= BATCH_ADDRESSES
    }

    pub fn as_slice(&self) -> &[Tally] {
        &self.tallies
    }

    fn clear(&mut self) {
        self.tallies.clear();
        self.index.clear();
    }

    fn memory_bytes(&self) -> usize {
        self.tallies.capacity() * std::mem::size_of::<Tally>()
            + hash_table_bytes::<(IpAddr, u32)>(self.index_capacity.max(self.index.capacity()))
    }

    fn memory_bound_bytes() -> usize {
        BATCH_ADDRESSES * std::mem::size_of::<Tally>()
            + hash_table_bytes::<(IpAddr, u32)>(BATCH_ADDRESSES)
    }
}

/// The requests observed since the detectors were last brought up to date.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The instant every request of the batch carries; `None` when empty.
    pub at: Option<(u64, SystemTime)>,
    pub originals: Tallies,
    pub sources: Tallies,
}

impl Batch {
    /// A batch hashing addresses with the detector's `hasher`.
    pub fn new(hasher: AddressHasher) -> Batch {
        Batch {
            at: None,
            originals: Tallies::new(hasher),
            sources: Tallies::new(hasher),
        }
    }

    /// Whether a request at (`now_ms`, `wall`) can join the batch: same instant, and room
    /// for one more address in each table.
    pub fn accepts(&self, now_ms: u64, wall: SystemTime) -> bool {
        self.at == Some((now_ms, wall)) && !self.originals.is_full() && !self.sources.is_full()
    }

    /// Adds one request; the caller has made sure the batch [`Batch::accepts`] it.
    pub fn add(
        &mut self,
        now_ms: u64,
        wall: SystemTime,
        connection: &Connection,
        original: Option<IpAddr>,
    ) {
        self.at = Some((now_ms, wall));
        let source_ip = connection.source_ip;
        // A request with no proxy in front has the same address in both fields: one list
        // hit, counted on the original IP.
        self.sources
            .add(source_ip, connection, original != Some(source_ip));
        if let Some(original_ip) = original {
            self.originals.add(original_ip, connection, true);
        }
    }

    pub fn clear(&mut self) {
        self.at = None;
        self.originals.clear();
        self.sources.clear();
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.originals.memory_bytes() + self.sources.memory_bytes()
    }

    pub fn memory_bound_bytes() -> usize {
        std::mem::size_of::<Self>() + 2 * Tallies::memory_bound_bytes()
    }
}
