//! The detector's counters for metrics: hits and events per list and rule, and events lost to
//! the rate limit or left unread.

use serde::{Deserialize, Serialize};

use super::events::EventKind;
use super::Stream;
use crate::model::Provenance;

/// A count with the name it is labelled with, and the provenance of the addresses counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCount {
    pub name: String,
    pub provenance: Provenance,
    pub count: u64,
}

/// Events not raised because a budget was used up, per budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCount {
    pub kind: EventKind,
    pub stream: Stream,
    pub count: u64,
}

/// Monotonic counters for metrics. Per-name counts survive list reloads for lists that keep
/// their name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceCounters {
    /// Requests whose original IP or connection source fell in each list (every request, not
    /// only those that raised an event), per list and provenance.
    pub list_hits: Vec<NamedCount>,
    /// Events raised per list and provenance.
    pub list_events: Vec<NamedCount>,
    /// Events raised per rule and provenance.
    pub rule_events: Vec<NamedCount>,
    /// Rule firings swallowed by the cool-down, per rule (every provenance).
    pub rule_cooled_down: Vec<NamedCount>,
    /// Events not raised because their budget ([`TraceConfig::max_events_per_second`] per
    /// kind and stream) was used up, over all budgets.
    ///
    /// [`TraceConfig::max_events_per_second`]: super::TraceConfig::max_events_per_second
    pub events_rate_limited: u64,
    /// The same, per budget.
    pub events_rate_limited_by_budget: Vec<BudgetCount>,
    /// Events raised but dropped because nobody took them ([`TraceConfig::pending_events`]).
    ///
    /// [`TraceConfig::pending_events`]: super::TraceConfig::pending_events
    pub events_dropped_unread: u64,
    /// Leaky buckets replaced to make room for new IPs, over all rules.
    pub bucket_evictions: u64,
}

impl TraceCounters {
    /// Events raised by the rule or list `name`, every provenance together.
    pub fn events_of(&self, name: &str) -> u64 {
        self.rule_events
            .iter()
            .chain(&self.list_events)
            .filter(|count| count.name == name)
            .map(|count| count.count)
            .sum()
    }

    /// Requests that hit the list `name`, every provenance together.
    pub fn hits_of(&self, name: &str) -> u64 {
        self.list_hits
            .iter()
            .filter(|count| count.name == name)
            .map(|count| count.count)
            .sum()
    }
}
