//! Spotting suspicious original IPs as requests go by: unusual volume and untrusted sources.
//!
//! The collector sees every request before anything else does, so it is where a single IP
//! sending unusual amounts of traffic, or traffic from a known-bad network, is noticed live.
//! This module is the pure core of that: the collector's I/O shell reads files and the clock
//! and calls [`Detector::observe`] once per request with monotonic milliseconds and the wall
//! clock; everything here is deterministic given those inputs (and, for which bucket or
//! cool-down makes room for a new address, a seed — see [`Detector::with_seed`]).
//!
//! - [`heavy_hitters`]: the top N original IPs and the top N connection sources per window;
//! - [`rules`]: threshold and leaky-bucket rules, cool-downs, the per-budget event rate limit;
//! - [`threat_lists`]: parsing list files and one longest-prefix lookup over all of them;
//! - [`events`]: the JSON-lines event schema and the ring of recent events.
//!
//! # Memory
//!
//! Everything but the threat lists is allocated up front and never grows, whatever the
//! number of distinct addresses: [`TraceConfig::memory_bound_bytes`] adds up the heavy-hitter
//! summaries, each rule's counters or buckets, the cool-down map and the event buffers
//! (events counted at [`EVENT_BYTES_ESTIMATE`] each), for the three streams of addresses
//! ([`Stream`]). With the defaults that is about 10 MiB: 4 MiB of tables and 5 MiB for full
//! event buffers.
//! The threat lists cost what their entries cost — about 50 bytes per IPv4 CIDR — and are
//! reported by [`Detector::memory_bytes`], which measures the actual allocations.

mod batch;
pub mod events;
pub mod heavy_hitters;
pub mod rules;
pub mod threat_lists;

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{Attributed, Connection, Provenance};
use batch::Batch;
pub use batch::BATCH_ADDRESSES;
use events::{
    rfc3339_utc, Event, EventConnection, EventDetails, EventKind, Field, RecentEvents,
    EVENT_SCHEMA_VERSION,
};
use heavy_hitters::{
    AddressHasher, TopEntry, WindowAdvance, WindowedTopK, DEFAULT_COUNTERS_PER_ENTRY,
};
use rules::{
    Cooldowns, EventRateLimiter, EventSource, Firings, LeakyBucket, LeakyBuckets, Rule, Threshold,
    ThresholdCounter, DEFAULT_BUCKETS, DEFAULT_THRESHOLD_COUNTERS,
};
use threat_lists::ThreatLists;

/// The version of the [`Suspicious`] JSON schema.
pub const SUSPICIOUS_SCHEMA_VERSION: u32 = 1;

/// Most top entries per kind: each becomes a Prometheus gauge series, so this caps the series
/// count at twice this number.
pub const MAX_TOP_N: usize = 200;

/// Most rules, and most lists: each is a label value of the event and hit counters.
pub const MAX_RULES: usize = 64;
pub const MAX_LISTS: usize = 64;

/// Most events per second per budget (kind and stream); each budget keeps the times of its
/// last second's events, 8 bytes each.
pub const MAX_EVENTS_PER_SECOND: u64 = 10_000;

/// Most events per recent-events ring; there is one ring per kind and stream.
pub const MAX_RECENT_EVENTS: usize = 1_000;

/// Upper bound of limits that size fixed allocations, against a typo allocating gigabytes.
pub const MAX_TABLE_ENTRIES: usize = 1_000_000;

/// The memory one buffered event is assumed to cost in the bound: the struct, its strings
/// (rule name, protocol, timestamp, CIDR and note) at typical lengths, with allocator slack.
pub const EVENT_BYTES_ESTIMATE: usize = 512;

/// A threat list to load: the shell reads `path` and hands the text to
/// [`threat_lists::parse_list`] under `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSource {
    pub name: String,
    pub path: PathBuf,
}

/// The trace settings, as read from the YAML file. Every key is optional; see
/// [`TraceConfig::default`] for the defaults and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Length of a heavy-hitter window.
    pub window_seconds: u64,
    /// Entries shown per top list.
    pub top_n: usize,
    /// Counters per heavy-hitter summary; the per-entry error is at most `requests in the
    /// window / top_counters`.
    pub top_counters: usize,
    /// Volume rules. Omitting the key gives [`default_rules`]; `rules: []` turns rules off.
    pub rules: Vec<Rule>,
    /// After a rule's event for an IP, further events of that rule for that IP are suppressed
    /// this long (CrowdSec's `blackhole`).
    pub cooldown_seconds: u64,
    /// (rule or list, IP) pairs whose cool-down is remembered.
    pub cooldown_entries: usize,
    /// At most one event per (list, IP) per this many seconds; every hit is still counted.
    pub threat_event_interval_seconds: u64,
    /// Events per second per budget: each kind of event (threshold, bucket, list) about each
    /// stream of addresses (sources, verified original IPs, claimed ones) has its own, so a
    /// flood of one cannot starve another. Events beyond are counted, not raised.
    pub max_events_per_second: u64,
    /// Events kept for `GET /suspicious`, per kind and stream.
    pub recent_events: usize,
    /// Events raised but not yet taken by [`Detector::take_events`]; beyond, the newest are
    /// dropped and counted.
    pub pending_events: usize,
    /// Threat lists, by name.
    pub lists: Vec<ListSource>,
}

/// The rules used when the configuration names none.
///
/// - `high-volume`: 1,000 requests from one original IP in 60 s (about 17 per second for a
///   whole minute) is far beyond a person browsing — even a heavy page of ~100 assets is
///   loaded a few times a minute at most — yet a small office behind one NAT address stays
///   under it.
/// - `burst`: a leaky bucket of capacity 100 draining 20 per second. A browser loading one
///   page issues its burst of requests within the capacity; a client sustaining more than 20
///   requests per second, or bursting several hundred at once, overflows it within seconds —
///   sooner than the one-minute threshold can.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule::Threshold(Threshold {
            name: "high-volume".to_owned(),
            requests: 1000,
            window_seconds: 60,
            field: Field::Original,
            counters: DEFAULT_THRESHOLD_COUNTERS,
        }),
        Rule::LeakyBucket(LeakyBucket {
            name: "burst".to_owned(),
            capacity: 100,
            leak_per_second: 20.0,
            field: Field::Original,
            buckets: DEFAULT_BUCKETS,
        }),
    ]
}

impl Default for TraceConfig {
    /// A one-minute window and the top 20, as the issue asks; 1,000 counters (50 per shown
    /// entry); a five-minute cool-down, long enough that a sustained source raises a handful
    /// of events per hour rather than one per window; one threat event per (list, IP) per
    /// minute; at most 50 events per second, far more than anyone reads but small enough that
    /// a spoofed flood cannot turn the event log into the flood.
    fn default() -> TraceConfig {
        TraceConfig {
            window_seconds: 60,
            top_n: 20,
            top_counters: 20 * DEFAULT_COUNTERS_PER_ENTRY,
            rules: default_rules(),
            cooldown_seconds: 300,
            cooldown_entries: 10_000,
            threat_event_interval_seconds: 60,
            max_events_per_second: 50,
            recent_events: 100,
            pending_events: 10_000,
            lists: Vec::new(),
        }
    }
}

/// Why a trace configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum TraceConfigError {
    #[error("trace configuration is not valid YAML for its schema: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("{key} = {value} is out of range; expected {expected}")]
    OutOfRange {
        key: String,
        value: String,
        expected: String,
    },
    #[error("{what} has an empty name")]
    EmptyName { what: &'static str },
    #[error("{what} name {name:?} is used twice; names must be unique")]
    DuplicateName { what: &'static str, name: String },
    #[error("{count} {what} configured; at most {max} are allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    key: impl Into<String>,
    value: T,
    low: T,
    high: T,
) -> Result<(), TraceConfigError> {
    if value < low || value > high {
        return Err(TraceConfigError::OutOfRange {
            key: key.into(),
            value: value.to_string(),
            expected: format!("{low} to {high}"),
        });
    }
    Ok(())
}

fn check_names<'a>(
    what: &'static str,
    names: impl Iterator<Item = &'a str>,
    max: usize,
) -> Result<(), TraceConfigError> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if name.trim().is_empty() {
            return Err(TraceConfigError::EmptyName { what });
        }
        if seen.contains(&name) {
            return Err(TraceConfigError::DuplicateName {
                what,
                name: name.to_owned(),
            });
        }
        seen.push(name);
    }
    if seen.len() > max {
        return Err(TraceConfigError::TooMany {
            what,
            count: seen.len(),
            max,
        });
    }
    Ok(())
}

impl TraceConfig {
    /// Reads and validates a YAML document; an empty document is the defaults.
    pub fn from_yaml(text: &str) -> Result<TraceConfig, TraceConfigError> {
        let config: TraceConfig = if text.trim().is_empty() {
            TraceConfig::default()
        } else {
            serde_norway::from_str(text)?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every limit, so a detector built from a valid configuration has bounded memory
    /// and sensible behaviour.
    pub fn validate(&self) -> Result<(), TraceConfigError> {
        check_range("window_seconds", self.window_seconds, 1, 3600)?;
        check_range("top_n", self.top_n, 1, MAX_TOP_N)?;
        check_range(
            "top_counters",
            self.top_counters,
            self.top_n,
            MAX_TABLE_ENTRIES,
        )?;
        check_range("cooldown_seconds", self.cooldown_seconds, 0, 7 * 86_400)?;
        check_range(
            "cooldown_entries",
            self.cooldown_entries,
            1,
            MAX_TABLE_ENTRIES,
        )?;
        check_range(
            "threat_event_interval_seconds",
            self.threat_event_interval_seconds,
            0,
            7 * 86_400,
        )?;
        check_range(
            "max_events_per_second",
            self.max_events_per_second,
            1,
            MAX_EVENTS_PER_SECOND,
        )?;
        check_range("recent_events", self.recent_events, 0, MAX_RECENT_EVENTS)?;
        check_range("pending_events", self.pending_events, 1, 100_000)?;
        check_names("rule", self.rules.iter().map(Rule::name), MAX_RULES)?;
        check_names(
            "threat list",
            self.lists.iter().map(|list| list.name.as_str()),
            MAX_LISTS,
        )?;
        for rule in &self.rules {
            match rule {
                Rule::Threshold(threshold) => {
                    let key = |field: &str| format!("rules[{}].{field}", threshold.name);
                    check_range(key("requests"), threshold.requests, 1, u64::MAX)?;
                    check_range(key("window_seconds"), threshold.window_seconds, 1, 86_400)?;
                    check_range(key("counters"), threshold.counters, 1, MAX_TABLE_ENTRIES)?;
                }
                Rule::LeakyBucket(bucket) => {
                    let key = |field: &str| format!("rules[{}].{field}", bucket.name);
                    check_range(key("capacity"), bucket.capacity, 1, 1_000_000_000)?;
                    if !(bucket.leak_per_second >= 0.001 && bucket.leak_per_second <= 1e9) {
                        return Err(TraceConfigError::OutOfRange {
                            key: key("leak_per_second"),
                            value: bucket.leak_per_second.to_string(),
                            expected: "0.001 to 1000000000".to_owned(),
                        });
                    }
                    check_range(key("buckets"), bucket.buckets, 1, MAX_TABLE_ENTRIES)?;
                }
            }
        }
        Ok(())
    }

    /// Whether `threshold` counts in the original IPs' top summary rather than its own: it
    /// counts original IPs over the top list's window, so its counts are the top list's.
    fn shares_top_original(&self, threshold: &Threshold) -> bool {
        threshold.field == Field::Original && threshold.window_seconds == self.window_seconds
    }

    /// Counters of the original IPs' top summary: `top_counters`, or more when a rule sharing
    /// it asks for more (more counters only tighten every error bound).
    fn top_original_counters(&self) -> usize {
        self.rules
            .iter()
            .filter_map(|rule| match rule {
                Rule::Threshold(threshold) if self.shares_top_original(threshold) => {
                    Some(threshold.counters)
                }
                _ => None,
            })
            .fold(self.top_counters, usize::max)
    }

    /// The most memory a detector with this configuration holds, threat lists aside (they
    /// cost what their entries cost; see [`Detector::memory_bytes`]).
    pub fn memory_bound_bytes(&self) -> usize {
        // Original and claimed IPs each have a summary of the same size.
        let top = 2 * WindowedTopK::memory_bound_bytes(self.top_n, self.top_original_counters())
            + WindowedTopK::memory_bound_bytes(self.top_n, self.top_counters);
        let rules: usize = self
            .rules
            .iter()
            .map(|rule| {
                let state = match rule {
                    Rule::Threshold(threshold) if self.shares_top_original(threshold) => 0,
                    Rule::Threshold(threshold) => ThresholdCounter::memory_bound_bytes(threshold),
                    Rule::LeakyBucket(bucket) => LeakyBuckets::memory_bound_bytes(bucket),
                };
                // A rule on original IPs keeps a second state for claimed ones.
                match rule.field() {
                    Field::Original => 2 * state,
                    Field::Source => state,
                }
            })
            .sum();
        let events = (BUDGETS * self.recent_events + self.pending_events) * EVENT_BYTES_ESTIMATE;
        std::mem::size_of::<Detector>()
            + top
            + rules
            + Cooldowns::memory_bound_bytes(self.cooldown_entries)
            + BUDGETS * EventRateLimiter::memory_bound_bytes(self.max_events_per_second)
            + Batch::memory_bound_bytes()
            + BATCH_ADDRESSES * std::mem::size_of::<u64>()
            + events
    }
}

/// A rule's live state.
#[derive(Debug)]
enum RuleCheck {
    Threshold {
        counts: ThresholdCounts,
        requests: u64,
        window_seconds: u64,
    },
    LeakyBucket {
        buckets: LeakyBuckets,
        capacity: u64,
        leak_per_second: f64,
    },
}

/// Where a threshold rule counts.
#[derive(Debug)]
enum ThresholdCounts {
    /// Its own summary, window and field.
    Own(ThresholdCounter),
    /// The top summary of the stream it counts (original or claimed IPs), whose window is the
    /// rule's: one summary update per address serves the top list and every such rule.
    Top,
}

#[derive(Debug)]
struct RuleState {
    name: String,
    field: Field,
    /// The state over connection sources or verified original IPs.
    check: RuleCheck,
    /// For a rule on original IPs, the same rule over claimed ones, counted apart: a claimed
    /// address must not add to a verified one's count, nor use up its bucket.
    claimed: Option<RuleCheck>,
}

/// The streams a request's addresses are split into. Each has its own top summary, rule
/// state, cool-downs, event budgets and recent events, so that none can crowd out another:
/// addresses anyone can write into a header cannot use up what verified ones need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Connection sources: the direct peers.
    Source,
    /// Verified original IPs: the peer itself, or walked past trusted proxies or hops.
    Original,
    /// Claimed original IPs: read from a header nothing vouches for.
    Claimed,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Source, Stream::Original, Stream::Claimed];

    /// The stream an address of `field` with `provenance` belongs to.
    pub fn of(field: Field, provenance: Provenance) -> Stream {
        match (field, provenance) {
            (Field::Source, _) => Stream::Source,
            (Field::Original, Provenance::Claimed) => Stream::Claimed,
            (Field::Original, _) => Stream::Original,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Source => "source",
            Stream::Original => "original",
            Stream::Claimed => "claimed",
        }
    }

    fn field(self) -> Field {
        match self {
            Stream::Source => Field::Source,
            Stream::Original | Stream::Claimed => Field::Original,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The kinds of event, in budget order.
const KINDS: [EventKind; 3] = [
    EventKind::VolumeThreshold,
    EventKind::LeakyBucket,
    EventKind::ThreatList,
];

/// Event budgets and recent-event rings: one per (kind, stream).
const BUDGETS: usize = KINDS.len() * Stream::ALL.len();

fn budget_index(kind: EventKind, stream: Stream) -> usize {
    let kind = match kind {
        EventKind::VolumeThreshold => 0,
        EventKind::LeakyBucket => 1,
        EventKind::ThreatList => 2,
    };
    kind * Stream::ALL.len() + stream.index()
}

/// The three provenances, in counter order.
const PROVENANCES: [Provenance; 3] = [
    Provenance::Connection,
    Provenance::Trusted,
    Provenance::Claimed,
];

fn provenance_index(provenance: Provenance) -> usize {
    match provenance {
        Provenance::Connection => 0,
        Provenance::Trusted => 1,
        Provenance::Claimed => 2,
    }
}

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
    pub events_rate_limited: u64,
    /// The same, per budget.
    pub events_rate_limited_by_budget: Vec<BudgetCount>,
    /// Events raised but dropped because nobody took them ([`TraceConfig::pending_events`]).
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

/// The top lists of the last completed window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedWindowView {
    /// RFC 3339 UTC start of the window.
    pub started: String,
    /// Requests with a verified original IP (the peer itself, or walked past trusted proxies),
    /// in the window.
    pub requests_original: u64,
    /// Requests in the window.
    pub requests_sources: u64,
    pub top_original: Vec<TopEntry>,
    pub top_sources: Vec<TopEntry>,
    /// Requests whose original IP was claimed, in the window.
    #[serde(default)]
    pub requests_claimed: u64,
    #[serde(default)]
    pub top_claimed: Vec<TopEntry>,
}

/// What `GET /suspicious` serves and `ingress-tap block` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suspicious {
    pub schema_version: u32,
    pub window_seconds: u64,
    /// RFC 3339 UTC start of the current window; `null` before the first request.
    pub window_started: Option<String>,
    /// The current window's busiest original IPs so far, busiest first.
    pub top_original: Vec<TopEntry>,
    /// The current window's busiest connection sources so far, busiest first.
    pub top_sources: Vec<TopEntry>,
    /// The last completed window; `null` until one has completed.
    pub previous_window: Option<CompletedWindowView>,
    /// The most recent events, oldest first.
    pub recent_events: Vec<Event>,
    /// The current window's busiest *claimed* original IPs: addresses read from headers that
    /// nothing vouches for. Shown so an operator sees what the headers say; `block` takes
    /// none of them unless told to.
    #[serde(default)]
    pub top_claimed: Vec<TopEntry>,
    /// The most recent events about claimed addresses, oldest first, kept apart so that a
    /// flood of them can neither push verified events out of `recent_events` nor be mistaken
    /// for them.
    #[serde(default)]
    pub claimed_events: Vec<Event>,
}

/// Where raised events go, apart from the rule state so that rules can raise events while
/// they are being iterated.
#[derive(Debug)]
struct Emitter {
    cooldowns: Cooldowns,
    /// One budget per (kind, stream): a flood of one kind of event about one stream of
    /// addresses uses up its own budget only.
    limiters: Vec<EventRateLimiter>,
    pending: VecDeque<Event>,
    pending_capacity: usize,
    /// One ring per (kind, stream), each event numbered so the rings merge in order.
    recent: Vec<RecentEvents>,
    /// The number of the next event.
    sequence: u64,
    rate_limited: [u64; BUDGETS],
    events_dropped_unread: u64,
}

/// One firing, before the cool-down and the rate limit decide whether it becomes an event.
#[derive(Clone, Copy)]
struct Firing<'a> {
    source: EventSource,
    cooldown_ms: u64,
    kind: EventKind,
    name: &'a str,
    ip: IpAddr,
    field: Field,
    provenance: Provenance,
}

impl Firing<'_> {
    fn budget(&self) -> usize {
        budget_index(self.kind, Stream::of(self.field, self.provenance))
    }
}

impl Emitter {
    fn new(config: &TraceConfig, seed: u64) -> Emitter {
        Emitter {
            cooldowns: Cooldowns::new(config.cooldown_entries, seed.rotate_left(17)),
            limiters: (0..BUDGETS)
                .map(|_| EventRateLimiter::new(config.max_events_per_second))
                .collect(),
            pending: VecDeque::with_capacity(config.pending_events.min(1024)),
            pending_capacity: config.pending_events,
            recent: (0..BUDGETS)
                .map(|_| RecentEvents::new(config.recent_events))
                .collect(),
            sequence: 0,
            rate_limited: [0; BUDGETS],
            events_dropped_unread: 0,
        }
    }

    fn count_rate_limited(&mut self, budget: usize, amount: u64) {
        if let Some(count) = self.rate_limited.get_mut(budget) {
            *count = count.saturating_add(amount);
        }
    }

    /// Raises the event unless cooling down or rate-limited; returns whether it was raised.
    /// Nothing is allocated for a firing that does not become an event.
    fn fire(
        &mut self,
        now_ms: u64,
        wall: SystemTime,
        connection: &Connection,
        firing: Firing<'_>,
        details: impl FnOnce() -> EventDetails,
    ) -> FireOutcome {
        if self
            .cooldowns
            .is_cooling_down(now_ms, firing.source, firing.ip)
        {
            return FireOutcome::CooledDown;
        }
        // A firing lost to its budget does not start a cool-down, so the IP is reported on
        // its next firing once the flood allows.
        let budget = firing.budget();
        let allowed = self
            .limiters
            .get_mut(budget)
            .is_some_and(|limiter| limiter.try_acquire(now_ms));
        if !allowed {
            self.count_rate_limited(budget, 1);
            return FireOutcome::RateLimited;
        }
        self.cooldowns
            .start(now_ms, firing.source, firing.ip, firing.cooldown_ms);
        let event = Event {
            schema_version: EVENT_SCHEMA_VERSION,
            time: rfc3339_utc(wall),
            kind: firing.kind,
            name: firing.name.to_owned(),
            ip: firing.ip,
            field: firing.field,
            provenance: Some(firing.provenance),
            connection: EventConnection::from(connection),
            details: details(),
        };
        if let Some(ring) = self.recent.get_mut(budget) {
            ring.push(self.sequence, event.clone());
        }
        self.sequence = self.sequence.wrapping_add(1);
        if self.pending.len() >= self.pending_capacity {
            self.events_dropped_unread = self.events_dropped_unread.saturating_add(1);
        } else {
            self.pending.push_back(event);
        }
        FireOutcome::Raised
    }

    /// The same firing `times` times at one instant, as `times` requests of one address in a
    /// batch would fire one after another; `details` gets the firing's position. Once the
    /// outcome can no longer change within the instant — cooling down, or out of budget — the
    /// rest are counted without being tried.
    fn fire_repeatedly(
        &mut self,
        now_ms: u64,
        wall: SystemTime,
        connection: &Connection,
        firing: Firing<'_>,
        times: u64,
        details: impl Fn(u64) -> EventDetails,
    ) -> Outcomes {
        let mut outcomes = Outcomes::default();
        for repeat in 0..times {
            let rest = times - repeat - 1;
            match self.fire(now_ms, wall, connection, firing, || details(repeat)) {
                FireOutcome::Raised => {
                    outcomes.raised += 1;
                    // A cool-down started now covers the rest of the instant.
                    if firing.cooldown_ms > 0 {
                        outcomes.cooled_down = outcomes.cooled_down.saturating_add(rest);
                        break;
                    }
                }
                FireOutcome::CooledDown => {
                    outcomes.cooled_down = outcomes.cooled_down.saturating_add(1 + rest);
                    break;
                }
                FireOutcome::RateLimited => {
                    // The budget's last second stays full within the same millisecond.
                    self.count_rate_limited(firing.budget(), rest);
                    break;
                }
            }
        }
        outcomes
    }

    /// The recent events of the given streams, oldest first.
    fn recent_of(&self, streams: &[Stream]) -> Vec<Event> {
        let mut events: Vec<(u64, &Event)> = KINDS
            .iter()
            .flat_map(|&kind| {
                streams
                    .iter()
                    .map(move |&stream| budget_index(kind, stream))
            })
            .filter_map(|budget| self.recent.get(budget))
            .flat_map(RecentEvents::iter)
            .map(|(sequence, event)| (*sequence, event))
            .collect();
        events.sort_unstable_by_key(|(sequence, _)| *sequence);
        events.into_iter().map(|(_, event)| event.clone()).collect()
    }

    fn buffered_events(&self) -> usize {
        self.pending.len() + self.recent.iter().map(RecentEvents::len).sum::<usize>()
    }
}

/// What the firings of one address in one batch came to.
#[derive(Clone, Copy, Debug, Default)]
struct Outcomes {
    raised: u64,
    cooled_down: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FireOutcome {
    Raised,
    CooledDown,
    RateLimited,
}

/// Per-name counters, by provenance.
type ByProvenance = [u64; PROVENANCES.len()];

/// The trace detectors over one stream of requests.
#[derive(Debug)]
pub struct Detector {
    config: TraceConfig,
    top_original: WindowedTopK,
    top_claimed: WindowedTopK,
    top_sources: WindowedTopK,
    window_started: Option<SystemTime>,
    previous_window_started: Option<SystemTime>,
    rules: Vec<RuleState>,
    lists: ThreatLists,
    emitter: Emitter,
    rule_events: Vec<ByProvenance>,
    rule_cooled_down: Vec<u64>,
    list_hits: Vec<ByProvenance>,
    list_events: Vec<ByProvenance>,
    /// Requests observed but not yet applied; see [`Detector::observe`].
    batch: Batch,
    /// Each address's certain count in its stream's top summary after the batch being
    /// applied, by position in the batch, for the rules that share that summary.
    certain_counts: Vec<u64>,
}

impl Detector {
    /// A detector for a validated configuration, with no threat lists until
    /// [`Detector::replace_lists`]. Bucket sets and cool-down eviction are seeded at random,
    /// so an attacker cannot predict which buckets survive.
    pub fn new(config: TraceConfig) -> Result<Detector, TraceConfigError> {
        Detector::with_seed(config, RandomState::new().hash_one("trace-detector"))
    }

    /// As [`Detector::new`] with a fixed eviction seed, for reproducible runs.
    pub fn with_seed(config: TraceConfig, seed: u64) -> Result<Detector, TraceConfigError> {
        config.validate()?;
        let window_ms = config.window_seconds.saturating_mul(1000);
        // One hash per address and request, shared by every table that the address reaches.
        let hasher = AddressHasher::with_seed(seed.rotate_left(41) ^ 0x5EED_AD0E_55ED_0001);
        let check_of = |rule: &Rule| match rule {
            Rule::Threshold(threshold) => RuleCheck::Threshold {
                counts: if config.shares_top_original(threshold) {
                    ThresholdCounts::Top
                } else {
                    ThresholdCounts::Own(ThresholdCounter::with_hasher(threshold, hasher))
                },
                requests: threshold.requests,
                window_seconds: threshold.window_seconds,
            },
            Rule::LeakyBucket(bucket) => RuleCheck::LeakyBucket {
                buckets: LeakyBuckets::with_hasher(bucket, hasher),
                capacity: bucket.capacity,
                leak_per_second: bucket.leak_per_second,
            },
        };
        let rules: Vec<RuleState> = config
            .rules
            .iter()
            .map(|rule| RuleState {
                name: rule.name().to_owned(),
                field: rule.field(),
                check: check_of(rule),
                claimed: (rule.field() == Field::Original).then(|| check_of(rule)),
            })
            .collect();
        let rule_count = rules.len();
        let top_original = || {
            WindowedTopK::with_hasher(
                window_ms,
                config.top_n,
                config.top_original_counters(),
                hasher,
            )
        };
        Ok(Detector {
            top_original: top_original(),
            top_claimed: top_original(),
            top_sources: WindowedTopK::with_hasher(
                window_ms,
                config.top_n,
                config.top_counters,
                hasher,
            ),
            window_started: None,
            previous_window_started: None,
            rules,
            lists: ThreatLists::empty(),
            emitter: Emitter::new(&config, seed),
            rule_events: vec![ByProvenance::default(); rule_count],
            rule_cooled_down: vec![0; rule_count],
            list_hits: Vec::new(),
            list_events: Vec::new(),
            batch: Batch::new(hasher),
            certain_counts: Vec::with_capacity(BATCH_ADDRESSES),
            config,
        })
    }

    pub fn config(&self) -> &TraceConfig {
        &self.config
    }

    /// Moves the windows to `now_ms` without a request, so that an idle collector still
    /// closes its windows on time for `GET /suspicious`. Requests observed before are applied
    /// first, at their own time. Before the first request there is no window to move: the
    /// first one starts with it.
    pub fn advance(&mut self, now_ms: u64, wall: SystemTime) {
        self.flush();
        if self.window_started.is_some() {
            self.advance_windows(now_ms, wall);
        }
    }

    fn advance_windows(&mut self, now_ms: u64, wall: SystemTime) {
        self.top_original.advance(now_ms);
        self.top_claimed.advance(now_ms);
        if let WindowAdvance::Started { start_ms } = self.top_sources.advance(now_ms) {
            let started = wall
                .checked_sub(Duration::from_millis(now_ms.saturating_sub(start_ms)))
                .unwrap_or(wall);
            let window = Duration::from_millis(self.top_sources.window_ms());
            self.previous_window_started = self
                .window_started
                .and_then(|_| started.checked_sub(window));
            self.window_started = Some(started);
        }
    }

    /// Takes one request: its connection and the address it is attributed to, with that
    /// address's provenance (`None` when nothing is known of it beyond the connection). `now_ms`
    /// is monotonic milliseconds; `wall` stamps the events.
    ///
    /// Requests of one instant (the same `now_ms` and `wall`) are added up per address and
    /// applied together when a request of another instant arrives, or when the windows,
    /// events, view or counters are next read ([`Detector::flush`] does it explicitly). The
    /// outcome is that of applying them one by one, address after address in first-seen
    /// order: the same counts and firings, and each event names the connection of the first
    /// request of its address in the batch.
    pub fn observe(
        &mut self,
        now_ms: u64,
        wall: SystemTime,
        connection: &Connection,
        original: Option<Attributed>,
    ) {
        if !self.batch.accepts(now_ms, wall) {
            self.flush();
        }
        self.batch.add(now_ms, wall, connection, original);
    }

    /// Applies the requests observed so far to every summary, rule and list: the connection
    /// sources first, then the verified original IPs, then the claimed ones.
    pub fn flush(&mut self) {
        let Some((now_ms, wall)) = self.batch.at else {
            return;
        };
        self.advance_windows(now_ms, wall);
        for stream in Stream::ALL {
            self.apply(stream, now_ms, wall);
        }
        self.batch.clear();
    }

    /// Applies the batch's tallies of one stream.
    fn apply(&mut self, stream: Stream, now_ms: u64, wall: SystemTime) {
        let Detector {
            config,
            top_original,
            top_claimed,
            top_sources,
            rules,
            lists,
            emitter,
            rule_events,
            rule_cooled_down,
            list_hits,
            list_events,
            batch,
            certain_counts,
            ..
        } = self;
        let (tallies, top) = match stream {
            Stream::Source => (batch.sources.as_slice(), top_sources),
            Stream::Original => (batch.originals.as_slice(), top_original),
            Stream::Claimed => (batch.claimed.as_slice(), top_claimed),
        };
        if tallies.is_empty() {
            return;
        }
        certain_counts.clear();
        for tally in tallies {
            let estimate = top.observe_hashed(
                now_ms,
                tally.ip,
                tally.hash,
                tally.requests,
                tally.provenance,
            );
            certain_counts.push(estimate.lower_bound());
        }

        let field = stream.field();
        let cooldown_ms = config.cooldown_seconds.saturating_mul(1000);
        for (index, rule) in rules.iter_mut().enumerate() {
            if rule.field != field {
                continue;
            }
            let (check, source) = match stream {
                Stream::Claimed => match rule.claimed.as_mut() {
                    Some(check) => (check, EventSource::ClaimedRule(index as u16)),
                    None => continue,
                },
                Stream::Source | Stream::Original => {
                    (&mut rule.check, EventSource::Rule(index as u16))
                }
            };
            let mut cooled_down = 0_u64;
            for (position, tally) in tallies.iter().enumerate() {
                let firing = Firing {
                    source,
                    cooldown_ms,
                    kind: EventKind::VolumeThreshold,
                    name: &rule.name,
                    ip: tally.ip,
                    field,
                    provenance: tally.provenance,
                };
                let outcomes = match check {
                    RuleCheck::Threshold {
                        counts,
                        requests,
                        window_seconds,
                    } => {
                        let firings = match counts {
                            ThresholdCounts::Own(counter) => {
                                counter.observe_hashed(now_ms, tally.ip, tally.hash, tally.requests)
                            }
                            ThresholdCounts::Top => {
                                certain_counts.get(position).and_then(|&certain| {
                                    Firings::of(*requests, tally.requests, certain)
                                })
                            }
                        };
                        let Some(firings) = firings else {
                            continue;
                        };
                        let (threshold, window_seconds) = (*requests, *window_seconds);
                        emitter.fire_repeatedly(
                            now_ms,
                            wall,
                            &tally.connection,
                            firing,
                            firings.count,
                            |repeat| EventDetails {
                                count: Some(firings.first_count.saturating_add(repeat)),
                                threshold: Some(threshold),
                                window_seconds: Some(window_seconds),
                                ..EventDetails::default()
                            },
                        )
                    }
                    RuleCheck::LeakyBucket {
                        buckets,
                        capacity,
                        leak_per_second,
                    } => {
                        let overflows = buckets
                            .pour_hashed(now_ms, tally.ip, tally.hash, tally.requests)
                            .overflows;
                        if overflows == 0 {
                            continue;
                        }
                        let (capacity, leak_per_second) = (*capacity, *leak_per_second);
                        emitter.fire_repeatedly(
                            now_ms,
                            wall,
                            &tally.connection,
                            Firing {
                                kind: EventKind::LeakyBucket,
                                ..firing
                            },
                            overflows,
                            |_| EventDetails {
                                capacity: Some(capacity),
                                leak_per_second: Some(leak_per_second),
                                ..EventDetails::default()
                            },
                        )
                    }
                };
                add_by_provenance(rule_events, index, tally.provenance, outcomes.raised);
                cooled_down = cooled_down.saturating_add(outcomes.cooled_down);
            }
            add_to(rule_cooled_down, index, cooled_down);
        }

        if lists.is_empty() {
            return;
        }
        let interval_ms = config.threat_event_interval_seconds.saturating_mul(1000);
        for tally in tallies {
            if tally.listed_requests == 0 {
                continue;
            }
            for hit in lists.covering(tally.ip) {
                let list_index = hit.list_index as u16;
                add_by_provenance(
                    list_hits,
                    hit.list_index,
                    tally.provenance,
                    tally.listed_requests,
                );
                let outcomes = emitter.fire_repeatedly(
                    now_ms,
                    wall,
                    &tally.connection,
                    Firing {
                        source: if stream == Stream::Claimed {
                            EventSource::ClaimedList(list_index)
                        } else {
                            EventSource::List(list_index)
                        },
                        cooldown_ms: interval_ms,
                        kind: EventKind::ThreatList,
                        name: hit.list,
                        ip: tally.ip,
                        field,
                        provenance: tally.provenance,
                    },
                    tally.listed_requests,
                    |_| EventDetails {
                        cidr: Some(hit.cidr.to_string()),
                        note: hit.note.map(str::to_owned),
                        ..EventDetails::default()
                    },
                );
                add_by_provenance(
                    list_events,
                    hit.list_index,
                    tally.provenance,
                    outcomes.raised,
                );
            }
        }
    }

    /// The events raised since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.flush();
        self.emitter.pending.drain(..).collect()
    }

    /// The view served at `GET /suspicious`.
    pub fn snapshot(&mut self) -> Suspicious {
        self.flush();
        let with_provenance = |entries: &[TopEntry], assumed: Provenance| -> Vec<TopEntry> {
            entries
                .iter()
                .map(|entry| TopEntry {
                    provenance: Some(entry.provenance.unwrap_or(assumed)),
                    ..*entry
                })
                .collect()
        };
        let previous_window = match (self.top_original.previous(), self.top_sources.previous()) {
            (original, Some(sources)) => Some(CompletedWindowView {
                started: self
                    .previous_window_started
                    .map(rfc3339_utc)
                    .unwrap_or_default(),
                requests_original: original.map_or(0, |window| window.observations),
                requests_sources: sources.observations,
                top_original: original.map_or_else(Vec::new, |window| {
                    with_provenance(&window.top, Provenance::Connection)
                }),
                top_sources: with_provenance(&sources.top, Provenance::Connection),
                requests_claimed: self
                    .top_claimed
                    .previous()
                    .map_or(0, |window| window.observations),
                top_claimed: self.top_claimed.previous().map_or_else(Vec::new, |window| {
                    with_provenance(&window.top, Provenance::Claimed)
                }),
            }),
            (_, None) => None,
        };
        Suspicious {
            schema_version: SUSPICIOUS_SCHEMA_VERSION,
            window_seconds: self.config.window_seconds,
            window_started: self.window_started.map(rfc3339_utc),
            top_original: with_provenance(&self.top_original.current_top(), Provenance::Connection),
            top_sources: with_provenance(&self.top_sources.current_top(), Provenance::Connection),
            previous_window,
            recent_events: self.emitter.recent_of(&[Stream::Source, Stream::Original]),
            top_claimed: with_provenance(&self.top_claimed.current_top(), Provenance::Claimed),
            claimed_events: self.emitter.recent_of(&[Stream::Claimed]),
        }
    }

    /// Counters for metrics.
    pub fn counters(&mut self) -> TraceCounters {
        self.flush();
        let by_provenance = |names: &mut dyn Iterator<Item = (&str, Field)>,
                             counts: &[ByProvenance]| {
            names
                .zip(counts.iter())
                .flat_map(|((name, field), counts)| {
                    PROVENANCES
                        .iter()
                        .zip(counts.iter())
                        // A source is always the connection's peer: no other series exists.
                        .filter(move |(&provenance, _)| {
                            field == Field::Original || provenance == Provenance::Connection
                        })
                        .map(move |(&provenance, &count)| NamedCount {
                            name: name.to_owned(),
                            provenance,
                            count,
                        })
                })
                .collect::<Vec<_>>()
        };
        let list_names = || {
            self.lists
                .names()
                .iter()
                .map(|name| (name.as_str(), Field::Original))
        };
        let rule_names = || {
            self.rules
                .iter()
                .map(|rule| (rule.name.as_str(), rule.field))
        };
        TraceCounters {
            list_hits: by_provenance(&mut list_names(), &self.list_hits),
            list_events: by_provenance(&mut list_names(), &self.list_events),
            rule_events: by_provenance(&mut rule_names(), &self.rule_events),
            rule_cooled_down: self
                .rules
                .iter()
                .zip(&self.rule_cooled_down)
                .map(|(rule, &count)| NamedCount {
                    name: rule.name.clone(),
                    provenance: Provenance::Connection,
                    count,
                })
                .collect(),
            events_rate_limited: self.emitter.rate_limited.iter().sum(),
            events_rate_limited_by_budget: KINDS
                .iter()
                .flat_map(|&kind| Stream::ALL.iter().map(move |&stream| (kind, stream)))
                .map(|(kind, stream)| BudgetCount {
                    kind,
                    stream,
                    count: self
                        .emitter
                        .rate_limited
                        .get(budget_index(kind, stream))
                        .copied()
                        .unwrap_or(0),
                })
                .collect(),
            events_dropped_unread: self.emitter.events_dropped_unread,
            bucket_evictions: self
                .rules
                .iter()
                .flat_map(|rule| std::iter::once(&rule.check).chain(rule.claimed.as_ref()))
                .map(|check| match check {
                    RuleCheck::LeakyBucket { buckets, .. } => buckets.evictions(),
                    RuleCheck::Threshold { .. } => 0,
                })
                .sum(),
        }
    }

    /// Swaps in freshly loaded lists. Hit and event counts of lists that keep their name carry
    /// over, so Prometheus counters stay monotonic across reloads.
    pub fn replace_lists(&mut self, lists: ThreatLists) {
        // Requests already observed are checked against the lists in force when they came.
        self.flush();
        let carried = |old_counts: &[ByProvenance]| -> Vec<ByProvenance> {
            lists
                .names()
                .iter()
                .map(|name| {
                    self.lists
                        .names()
                        .iter()
                        .position(|old| old == name)
                        .and_then(|position| old_counts.get(position).copied())
                        .unwrap_or_default()
                })
                .collect()
        };
        let list_hits = carried(&self.list_hits);
        let list_events = carried(&self.list_events);
        self.list_hits = list_hits;
        self.list_events = list_events;
        self.lists = lists;
    }

    /// The threat lists in use.
    pub fn lists(&self) -> &ThreatLists {
        &self.lists
    }

    /// Bytes held right now, measured from the allocations (events by
    /// [`EVENT_BYTES_ESTIMATE`]).
    pub fn memory_bytes(&self) -> usize {
        let rules: usize = self
            .rules
            .iter()
            .flat_map(|rule| std::iter::once(&rule.check).chain(rule.claimed.as_ref()))
            .map(|check| match check {
                RuleCheck::Threshold {
                    counts: ThresholdCounts::Own(counter),
                    ..
                } => counter.memory_bytes(),
                RuleCheck::Threshold { .. } => 0,
                RuleCheck::LeakyBucket { buckets, .. } => buckets.memory_bytes(),
            })
            .sum();
        let limiters: usize = self
            .emitter
            .limiters
            .iter()
            .map(EventRateLimiter::memory_bytes)
            .sum();
        std::mem::size_of::<Self>()
            + self.top_original.memory_bytes()
            + self.top_claimed.memory_bytes()
            + self.top_sources.memory_bytes()
            + rules
            + self.emitter.cooldowns.memory_bytes()
            + limiters
            + self.emitter.buffered_events() * EVENT_BYTES_ESTIMATE
            + self.lists.memory_bytes()
            + self.batch.memory_bytes()
            + self.certain_counts.capacity() * std::mem::size_of::<u64>()
    }
}

fn add_to(counts: &mut [u64], index: usize, amount: u64) {
    if let Some(count) = counts.get_mut(index) {
        *count = count.saturating_add(amount);
    }
}

fn add_by_provenance(
    counts: &mut [ByProvenance],
    index: usize,
    provenance: Provenance,
    amount: u64,
) {
    if let Some(count) = counts
        .get_mut(index)
        .and_then(|counts| counts.get_mut(provenance_index(provenance)))
    {
        *count = count.saturating_add(amount);
    }
}
