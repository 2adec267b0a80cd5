//! CrowdSec's `blackhole`: after an event, further events of the same source about the same
//! IP are suppressed for a while.

use std::net::IpAddr;

use super::BoundedMap;

/// Who raised an event, for the cool-down key: a rule by position, or a list by position.
/// Claimed addresses cool down apart, so that claiming an address cannot silence the events
/// its verified requests would raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventSource {
    Rule(u16),
    List(u16),
    ClaimedRule(u16),
    ClaimedList(u16),
}

/// One event per (source, IP) per cool-down.
#[derive(Debug)]
pub struct Cooldowns {
    until_ms: BoundedMap<(EventSource, IpAddr), u64>,
}

impl Cooldowns {
    pub fn new(capacity: usize, seed: u64) -> Cooldowns {
        Cooldowns {
            until_ms: BoundedMap::new(capacity, seed),
        }
    }

    /// Whether (source, ip) is still quiet at `now_ms` after an earlier event.
    pub fn is_cooling_down(&self, now_ms: u64, source: EventSource, ip: IpAddr) -> bool {
        self.until_ms
            .get(&(source, ip))
            .is_some_and(|&until| until > now_ms)
    }

    /// Starts (source, ip)'s cool-down of `duration_ms` at `now_ms`.
    pub fn start(&mut self, now_ms: u64, source: EventSource, ip: IpAddr, duration_ms: u64) {
        let key = (source, ip);
        let until = now_ms.saturating_add(duration_ms);
        if let Some(current) = self.until_ms.get_mut(&key) {
            *current = until;
            return;
        }
        // The entry ending soonest is the cheapest to forget (an ended one costs nothing).
        self.until_ms.insert_evicting(key, until, |&until| until);
    }

    pub fn len(&self) -> usize {
        self.until_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until_ms.is_empty()
    }

    pub fn memory_bytes(&self) -> usize {
        self.until_ms.memory_bytes()
    }

    pub fn memory_bound_bytes(capacity: usize) -> usize {
        BoundedMap::<(EventSource, IpAddr), u64>::memory_bound_bytes(capacity)
    }
}
