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

use crate::model::Connection;

use super::heavy_hitters::AddressHasher;
use crate::model::Attributed;
use crate::model::Provenance;

/// Distinct addresses per table before a batch is applied early: a 64 KiB read holds about
/// 340 lines, so this is rarely reached; when a reader hands over more at one instant, the
/// batch is applied in parts and nothing grows.
pub const BATCH_ADDRESSES: usize = 1024;

/// One address's requests in the batch.
#[derive(Clone, Copy, Debug)]
pub struct Tally {
    pub ip: IpAddr,
    /// The address's hash by the detector's hasher, computed here once for every table.
    pub hash: u64,
    pub requests: u64,
    /// Requests for which this address is looked up in the threat lists: all of them for an
    /// original IP; for a connection source, those whose original IP differs from it.
    pub listed_requests: u64,
    /// The connection of the address's first request in the batch, named by its events.
    pub connection: Connection,
    /// The strongest claim any of its requests made: `trusted` once one was walked past a
    /// trusted proxy, else `connection`; `claimed` in the claimed tallies.
    pub provenance: Provenance,
}

/// Slots of a tally index: a power of two at least twice [`BATCH_ADDRESSES`], so linear
/// probing runs at most half full.
const INDEX_SLOTS: usize = (2 * BATCH_ADDRESSES).next_power_of_two();

/// A tally index slot: the batch it was written in and the tally's position. A slot of an
/// earlier batch is empty, so starting a batch clears nothing.
#[derive(Clone, Copy, Debug, Default)]
struct IndexSlot {
    batch: u32,
    position: u32,
}

/// Tallies in first-seen order, so that a batch's events come out in the order their
/// addresses first appeared.
#[derive(Debug)]
pub struct Tallies {
    tallies: Vec<Tally>,
    /// An open-addressing index (linear probing) into `tallies`, probed once per request with
    /// the hash every other table needs anyway: nearly every request of a flood is a new
    /// address, and a general hash table's insertion cost more than the whole probe here.
    index: Vec<IndexSlot>,
    /// The current batch's number in `index`; never 0, which marks a slot never written.
    batch: u32,
    hasher: AddressHasher,
}

impl Tallies {
    pub fn new(hasher: AddressHasher) -> Tallies {
        Tallies {
            tallies: Vec::with_capacity(BATCH_ADDRESSES),
            index: vec![IndexSlot::default(); INDEX_SLOTS],
            batch: 1,
            hasher,
        }
    }

    fn add(&mut self, ip: IpAddr, connection: &Connection, listed: bool, provenance: Provenance) {
        let listed = u64::from(listed);
        let hash = self.hasher.hash(&ip);
        let mask = INDEX_SLOTS - 1;
        let mut slot = (hash as usize) & mask;
        // At most half the slots are in use, so an empty one ends every probe.
        for _ in 0..INDEX_SLOTS {
            let Some(entry) = self.index.get_mut(slot) else {
                return;
            };
            if entry.batch != self.batch {
                let position = self.tallies.len() as u32;
                *entry = IndexSlot {
                    batch: self.batch,
                    position,
                };
                self.tallies.push(Tally {
                    ip,
                    hash,
                    requests: 1,
                    listed_requests: listed,
                    connection: *connection,
                    provenance,
                });
                return;
            }
            if let Some(tally) = self.tallies.get_mut(entry.position as usize) {
                if tally.ip == ip {
                    tally.requests = tally.requests.saturating_add(1);
                    tally.listed_requests = tally.listed_requests.saturating_add(listed);
                    tally.provenance = tally.provenance.max(provenance);
                    return;
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    fn is_full(&self) -> bool {
        self.tallies.len() >= BATCH_ADDRESSES
    }

    pub fn as_slice(&self) -> &[Tally] {
        &self.tallies
    }

    fn clear(&mut self) {
        self.tallies.clear();
        self.batch = self.batch.wrapping_add(1);
        if self.batch == 0 {
            // Once every four billion batches: slots written 2^32 batches ago would look current.
            self.index.fill(IndexSlot::default());
            self.batch = 1;
        }
    }

    fn memory_bytes(&self) -> usize {
        self.tallies.capacity() * std::mem::size_of::<Tally>()
            + self.index.capacity() * std::mem::size_of::<IndexSlot>()
    }

    fn memory_bound_bytes() -> usize {
        BATCH_ADDRESSES * std::mem::size_of::<Tally>()
            + INDEX_SLOTS * std::mem::size_of::<IndexSlot>()
    }
}

/// The requests observed since the detectors were last brought up to date.
#[derive(Debug)]
pub struct Batch {
    /// The instant every request of the batch carries; `None` when empty.
    pub at: Option<(u64, SystemTime)>,
    /// Verified original IPs: the peer itself, or walked past trusted proxies.
    pub originals: Tallies,
    /// Original IPs read from headers nothing vouches for.
    pub claimed: Tallies,
    pub sources: Tallies,
}

impl Batch {
    /// A batch hashing addresses with the detector's `hasher`.
    pub fn new(hasher: AddressHasher) -> Batch {
        Batch {
            at: None,
            originals: Tallies::new(hasher),
            claimed: Tallies::new(hasher),
            sources: Tallies::new(hasher),
        }
    }

    /// Whether a request at (`now_ms`, `wall`) can join the batch: same instant, and room
    /// for one more address in each table.
    pub fn accepts(&self, now_ms: u64, wall: SystemTime) -> bool {
        self.at == Some((now_ms, wall))
            && !self.originals.is_full()
            && !self.claimed.is_full()
            && !self.sources.is_full()
    }

    /// Adds one request; the caller has made sure the batch [`Batch::accepts`] it.
    pub fn add(
        &mut self,
        now_ms: u64,
        wall: SystemTime,
        connection: &Connection,
        original: Option<Attributed>,
    ) {
        self.at = Some((now_ms, wall));
        let source_ip = crate::net::canonical_ip(connection.source_ip);
        let original_ip = original.map(|original| original.ip);
        // A request with no proxy in front has the same address in both fields: one list
        // hit, counted on the original IP.
        self.sources.add(
            source_ip,
            connection,
            original_ip != Some(source_ip),
            Provenance::Connection,
        );
        if let Some(original) = original {
            let tallies = match original.provenance {
                Provenance::Claimed => &mut self.claimed,
                Provenance::Connection | Provenance::Trusted => &mut self.originals,
            };
            tallies.add(original.ip, connection, true, original.provenance);
        }
    }

    pub fn clear(&mut self) {
        self.at = None;
        self.originals.clear();
        self.claimed.clear();
        self.sources.clear();
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.originals.memory_bytes()
            + self.claimed.memory_bytes()
            + self.sources.memory_bytes()
    }

    pub fn memory_bound_bytes() -> usize {
        std::mem::size_of::<Self>() + 3 * Tallies::memory_bound_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use std::net::Ipv4Addr;

    #[test]
    fn tallies_add_up_per_address_in_first_seen_order_batch_after_batch() {
        let connection = Connection {
            source_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            source_port: 40_000,
            destination_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            destination_port: 443,
            protocol: Protocol::Tcp,
        };
        let mut tallies = Tallies::new(AddressHasher::with_seed(9));
        for batch in 0..3_u32 {
            // Up to the batch limit, each address k seen k % 3 + 1 times, interleaved.
            let addresses = BATCH_ADDRESSES as u32 - 1;
            for round in 0..3 {
                for k in 0..addresses {
                    if round <= k % 3 {
                        let ip = IpAddr::V4(Ipv4Addr::from(batch * 100_000 + k));
                        tallies.add(ip, &connection, k % 2 == 0, Provenance::Connection);
                    }
                }
            }
            let seen: Vec<(IpAddr, u64, u64)> = tallies
                .as_slice()
                .iter()
                .map(|tally| (tally.ip, tally.requests, tally.listed_requests))
                .collect();
            let expected: Vec<(IpAddr, u64, u64)> = (0..addresses)
                .map(|k| {
                    let requests = u64::from(k % 3 + 1);
                    let listed = if k % 2 == 0 { requests } else { 0 };
                    (
                        IpAddr::V4(Ipv4Addr::from(batch * 100_000 + k)),
                        requests,
                        listed,
                    )
                })
                .collect();
            assert_eq!(seen, expected);
            tallies.clear();
        }
    }
}
