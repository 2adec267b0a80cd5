//! The detector: every summary, rule and list over one stream of requests, fed a batch of
//! requests at a time.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime};

use super::batch::{Batch, BATCH_ADDRESSES};
use super::emitter::{budget_index, Emitter, Firing, KINDS};
use super::events::{rfc3339_utc, Event, EventDetails, EventKind, Field};
use super::heavy_hitters::{AddressHasher, TopEntry, WindowAdvance, WindowedTopK};
use super::rules::{EventRateLimiter, EventSource, Firings, LeakyBuckets, Rule, ThresholdCounter};
use super::threat_lists::ThreatLists;
use super::{
    BudgetCount, CompletedWindowView, NamedCount, Stream, Suspicious, TraceConfig,
    TraceConfigError, TraceCounters, EVENT_BYTES_ESTIMATE, SUSPICIOUS_SCHEMA_VERSION,
};
use crate::model::{Attributed, Connection, Provenance};

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
