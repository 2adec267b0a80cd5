//! Threshold rules: an IP's requests in a tumbling window, counted in a Space-Saving summary,
//! reach a count.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::detect::events::Field;
use crate::detect::heavy_hitters::{AddressHasher, SpaceSaving};

/// Counters a threshold rule keeps unless told otherwise: 4,096 counters (about 350 KiB) hold
/// the error bound below 1 % of the threshold up to about 400,000 requests per window at the
/// default threshold.
pub const DEFAULT_THRESHOLD_COUNTERS: usize = 4096;

fn default_window_seconds() -> u64 {
    60
}

fn default_threshold_counters() -> usize {
    DEFAULT_THRESHOLD_COUNTERS
}

/// Fires when an IP's requests in one window reach `requests`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub name: String,
    /// Requests in one window that raise an event.
    pub requests: u64,
    /// The tumbling window's length.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    /// Which address is counted.
    #[serde(default)]
    pub field: Field,
    /// Counters of the rule's Space-Saving summary; see the module docs for the lateness bound.
    #[serde(default = "default_threshold_counters")]
    pub counters: usize,
}

/// The requests of one batch that reached a threshold: `count` of them, the first seeing a
/// certain count of `first_count` and each later one a count one higher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Firings {
    pub first_count: u64,
    pub count: u64,
}

impl Firings {
    /// Which of `requests` requests, just counted, reached `threshold`, given the IP's certain
    /// count (its Space-Saving lower bound) afterwards.
    ///
    /// Taken one at a time, the k-th of these requests would see a certain count of
    /// `before + k`: a counted IP's lower bound grows by one per request, and a newcomer's
    /// starts from zero whatever count it inherits.
    pub fn of(threshold: u64, requests: u64, certain_after: u64) -> Option<Firings> {
        if requests == 0 || certain_after < threshold {
            return None;
        }
        let before = certain_after.saturating_sub(requests);
        let first_count = threshold.max(before.saturating_add(1));
        Some(Firings {
            first_count,
            count: certain_after - first_count + 1,
        })
    }
}

/// A threshold rule's windowed counts.
#[derive(Debug)]
pub struct ThresholdCounter {
    requests: u64,
    window_ms: u64,
    window_start_ms: Option<u64>,
    counts: SpaceSaving,
}

impl ThresholdCounter {
    pub fn new(rule: &Threshold) -> ThresholdCounter {
        ThresholdCounter::with_hasher(rule, AddressHasher::random())
    }

    /// A counter hashing with the detector's `hasher`.
    pub fn with_hasher(rule: &Threshold, hasher: AddressHasher) -> ThresholdCounter {
        ThresholdCounter {
            requests: rule.requests.max(1),
            window_ms: rule.window_seconds.max(1).saturating_mul(1000),
            window_start_ms: None,
            counts: SpaceSaving::with_hasher(rule.counters, hasher),
        }
    }

    /// Counts one request; returns the IP's certain count when it has reached the threshold.
    /// Every request over the threshold returns it: suppressing repeats is the cool-down's job.
    pub fn observe(&mut self, now_ms: u64, ip: IpAddr) -> Option<u64> {
        self.observe_many(now_ms, ip, 1)
            .map(|firings| firings.first_count)
    }

    /// Counts `requests` requests of `ip` at `now_ms` at once; returns which of them reached
    /// the threshold, exactly as that many calls of [`ThresholdCounter::observe`] would.
    pub fn observe_many(&mut self, now_ms: u64, ip: IpAddr, requests: u64) -> Option<Firings> {
        let hash = self.counts.hash(&ip);
        self.observe_hashed(now_ms, ip, hash, requests)
    }

    /// [`ThresholdCounter::observe_many`] with `ip`'s hash by the counter's hasher.
    pub fn observe_hashed(
        &mut self,
        now_ms: u64,
        ip: IpAddr,
        hash: u64,
        requests: u64,
    ) -> Option<Firings> {
        match self.window_start_ms {
            Some(start) if now_ms.saturating_sub(start) < self.window_ms => {}
            Some(start) => {
                let windows = now_ms.saturating_sub(start) / self.window_ms;
                self.window_start_ms =
                    Some(start.saturating_add(windows.saturating_mul(self.window_ms)));
                self.counts.clear();
            }
            None => self.window_start_ms = Some(now_ms),
        }
        if requests == 0 {
            return None;
        }
        let after = self
            .counts
            .observe_hashed(ip, hash, requests, None)
            .lower_bound();
        Firings::of(self.requests, requests, after)
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.counts.memory_bytes()
            - std::mem::size_of::<SpaceSaving>()
    }

    pub fn memory_bound_bytes(rule: &Threshold) -> usize {
        std::mem::size_of::<Self>() + SpaceSaving::memory_bound_bytes(rule.counters)
            - std::mem::size_of::<SpaceSaving>()
    }
}
