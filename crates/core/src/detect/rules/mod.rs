//! Volume rules, each over a bounded amount of per-IP state.
//!
//! - [`Threshold`]: an IP's requests in a tumbling window reach a count. Counting uses its own
//!   [`SpaceSaving`] summary and fires on the summary's *lower bound* (`count - error`), so it
//!   never fires for an IP that has not really made `requests` requests. The price of bounded
//!   memory is lateness under pressure: it fires at the latest when the true count reaches
//!   `requests + N / counters` (`N` = requests in the window), and with no delay at all while
//!   fewer than `counters` distinct IPs were seen in the window.
//! - [`LeakyBucket`]: CrowdSec's leaky bucket. Each IP has a bucket holding up to `capacity`
//!   requests that drains at `leak_per_second`; a request that finds the bucket full overflows
//!   it (CrowdSec: "the bucket overflows when more than `capacity` events are in it"), which
//!   raises an event and empties the bucket, as CrowdSec discards an overflowed bucket. At most
//!   `buckets` buckets exist per rule (rounded down to whole sets of [`BUCKET_WAYS`]): a keyed
//!   hash of the address picks a set of 8 buckets, and a new IP whose set is full replaces the
//!   bucket of that set that empties first (the emptiest, to the second), so an attacker cycling
//!   millions of addresses cannot grow memory — but such churn can make the rule forget a slow
//!   IP's partly filled bucket, delaying (never inventing) its overflow. The key is random per
//!   detector, so an attacker cannot aim a flood at one victim's set.
//! - [`Cooldowns`]: CrowdSec's `blackhole`: after a (rule, IP) event, further events for that
//!   pair are suppressed for a while. Bounded the same way; under churn a forgotten cool-down
//!   lets an IP fire again early, which costs an extra event, never a missed one.
//! - [`EventRateLimiter`]: at most so many events in any one second, per kind of event and
//!   stream of addresses, the last line against an event flood from millions of addresses
//!   that each fire once.
//!
//! [`SpaceSaving`]: super::heavy_hitters::SpaceSaving

mod bounded_map;
mod cooldowns;
mod leaky_bucket;
mod rate_limit;
mod threshold;

use serde::{Deserialize, Serialize};

use super::events::Field;

pub use bounded_map::BoundedMap;
pub use cooldowns::{Cooldowns, EventSource};
pub use leaky_bucket::{LeakyBucket, LeakyBuckets, Pour, Poured, BUCKET_WAYS, DEFAULT_BUCKETS};
pub use rate_limit::EventRateLimiter;
pub use threshold::{Firings, Threshold, ThresholdCounter, DEFAULT_THRESHOLD_COUNTERS};

/// One rule of the configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rule {
    Threshold(Threshold),
    LeakyBucket(LeakyBucket),
}

impl Rule {
    pub fn name(&self) -> &str {
        match self {
            Rule::Threshold(rule) => &rule.name,
            Rule::LeakyBucket(rule) => &rule.name,
        }
    }

    pub fn field(&self) -> Field {
        match self {
            Rule::Threshold(rule) => rule.field,
            Rule::LeakyBucket(rule) => rule.field,
        }
    }
}
