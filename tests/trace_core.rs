//! The trace detectors' pure core: heavy hitters, rules, threat lists, events and the detector.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use ingress_tap_core::detect::events::{
    Event, EventConnection, EventDetails, EventKind, Field, EVENT_SCHEMA_VERSION,
};
use ingress_tap_core::detect::heavy_hitters::{SpaceSaving, WindowedTopK};
use ingress_tap_core::detect::rules::{LeakyBucket, LeakyBuckets, Pour, Rule, Threshold};
use ingress_tap_core::detect::threat_lists::{parse_list, ThreatLists, ThreatListsError};
use ingress_tap_core::detect::{Detector, Stream, Suspicious, TraceConfig, TraceConfigError};
use ingress_tap_core::model::Attributed;
use ingress_tap_core::model::Connection;
use ingress_tap_core::model::Protocol;
use ingress_tap_core::model::Provenance;
use proptest::prelude::*;

/// A verified original IP (walked past trusted proxies), as the detector takes it.
fn trusted(ip: IpAddr) -> Option<Attributed> {
    Some(Attributed::new(ip, Provenance::Trusted))
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn wall(now_ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + now_ms)
}

fn connection(source: IpAddr) -> Connection {
    Connection {
        source_ip: source,
        source_port: 40_000,
        destination_ip: ip("10.0.0.5"),
        destination_port: 443,
        protocol: Protocol::Tcp,
    }
}

/// A deterministic pseudo-random sequence, so streams are reproducible without a seed file.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn config_without_rules() -> TraceConfig {
    TraceConfig {
        rules: Vec::new(),
        ..TraceConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Heavy hitters

#[test]
fn top_k_is_exact_on_a_skewed_stream_despite_a_long_tail() {
    // 30 heavy IPs with counts 3000, 2900, ..., interleaved with 200,000 one-off addresses.
    let mut summary = SpaceSaving::new(1000);
    let mut truth: HashMap<IpAddr, u64> = HashMap::new();
    let mut random = SplitMix(7);
    let heavy: Vec<(IpAddr, u64)> = (0..30_u32)
        .map(|rank| (v4(0x0A00_0000 + rank), 3000 - 100 * u64::from(rank)))
        .collect();
    let mut remaining: Vec<u64> = heavy.iter().map(|(_, count)| *count).collect();
    let mut tail = 0_u32;
    while remaining.iter().any(|&left| left > 0) || tail < 200_000 {
        let pick = (random.next() % 31) as usize;
        match remaining.get_mut(pick) {
            Some(left) if *left > 0 => {
                *left -= 1;
                let address = heavy[pick].0;
                summary.observe(address);
                *truth.entry(address).or_default() += 1;
            }
            _ if tail < 200_000 => {
                let address = v4(0xC000_0000 + tail);
                tail += 1;
                summary.observe(address);
                *truth.entry(address).or_default() += 1;
            }
            _ => {}
        }
    }
    let top = summary.top(20);
    let expected: Vec<(IpAddr, u64)> = heavy[..20].to_vec();
    assert_eq!(
        top.iter().map(|entry| entry.ip).collect::<Vec<_>>(),
        expected
            .iter()
            .map(|(address, _)| *address)
            .collect::<Vec<_>>()
    );
    let n = summary.observations();
    for entry in &top {
        let true_count = truth[&entry.ip];
        assert!(entry.requests >= true_count);
        assert!(entry.guaranteed_requests() <= true_count);
        assert!(
            entry.error <= n / 1000,
            "error {} over N/capacity",
            entry.error
        );
    }
}

/// Cycles `rounds` times through `distinct` addresses and checks every guarantee of the
/// summary against the exact counts.
fn round_robin(capacity: usize, distinct: u32, rounds: u32) -> SpaceSaving {
    let mut summary = SpaceSaving::new(capacity);
    let mut truth: HashMap<IpAddr, u64> = HashMap::new();
    for _ in 0..rounds {
        for n in 0..distinct {
            let address = v4(n);
            let estimate = summary.observe(address);
            let true_count = truth.entry(address).or_default();
            *true_count += 1;
            assert!(estimate.count >= *true_count);
            assert!(estimate.lower_bound() <= *true_count);
        }
    }
    let n = summary.observations();
    let bound = n / capacity as u64;
    assert!(summary.error_bound() <= bound);
    let top = summary.top(capacity);
    assert_eq!(top.len(), capacity);
    for entry in &top {
        let true_count = truth[&entry.ip];
        assert!(entry.error <= bound);
        assert!(entry.requests >= true_count);
        assert!(entry.requests - entry.error <= true_count);
    }
    summary
}

#[test]
fn error_bound_holds_on_a_round_robin_adversary() {
    // Cycling through more distinct IPs than counters is plain Space-Saving's worst case:
    // every arrival evicts. One address more than the counters only ever fills its filter
    // cell, so the counted ones stay exact and nothing is replaced.
    let summary = round_robin(100, 101, 500);
    assert_eq!(summary.replacements(), 0);
    assert!(summary.top(100).iter().all(|entry| entry.error == 0));
    // Fifty times more addresses than counters share the filter's cells: some requests pass
    // a cell and replace a counter, the errors they inherit stay within the bound, and the
    // filter still spares most of the evictions plain Space-Saving would make.
    let summary = round_robin(100, 5_000, 40);
    assert!(summary.replacements() > 0);
    assert!(summary.top(100).iter().any(|entry| entry.error > 0));
    assert!(summary.replacements() < summary.observations() / 4);
}

proptest! {
    #[test]
    fn space_saving_guarantees_hold_on_random_streams(
        stream in proptest::collection::vec((0_u32..60, 1_u64..4), 1..2000),
        capacity in 1_usize..40,
        weighted in any::<bool>(),
    ) {
        let mut summary = SpaceSaving::new(capacity);
        let mut truth: HashMap<IpAddr, u64> = HashMap::new();
        for &(address, weight) in &stream {
            let weight = if weighted { weight } else { 1 };
            let estimate = summary.observe_weighted(v4(address), weight);
            let true_count = truth.entry(v4(address)).or_default();
            *true_count += weight;
            // Counted or filtered, the estimate brackets the true count.
            prop_assert!(estimate.count >= *true_count);
            prop_assert!(estimate.lower_bound() <= *true_count);
            prop_assert!(estimate.error <= summary.observations() / capacity as u64);
        }
        let n = summary.observations();
        let entries = summary.top(capacity);
        prop_assert!(entries.len() <= capacity);
        for entry in entries {
            let true_count = truth[&entry.ip];
            prop_assert!(entry.requests >= true_count);
            prop_assert!(entry.requests - entry.error <= true_count);
            prop_assert!(entry.error <= n / capacity as u64);
        }
        // No IP with more than N/capacity requests is missing.
        for (address, count) in truth {
            if count > n / capacity as u64 {
                prop_assert!(summary.estimate(&address).is_some());
            }
        }
    }
}

#[test]
fn windows_keep_the_last_completed_top_for_display() {
    let mut windows = WindowedTopK::new(60_000, 2, 100);
    for _ in 0..5 {
        windows.observe(1_000, v4(1));
    }
    windows.observe(2_000, v4(2));
    windows.observe(61_000, v4(3));
    let previous = windows.previous().unwrap();
    assert_eq!(previous.start_ms, 1_000);
    assert_eq!(previous.observations, 6);
    assert_eq!(previous.top.len(), 2);
    assert_eq!((previous.top[0].ip, previous.top[0].requests), (v4(1), 5));
    let current = windows.current_top();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].ip, v4(3));
}

#[test]
fn a_five_million_address_flood_keeps_every_structure_at_its_size() {
    let config = TraceConfig::default();
    let bound = config.memory_bound_bytes();
    let mut detector = Detector::with_seed(config, 42).unwrap();
    let balancer = ip("10.1.0.1");
    let heavy = ip("198.51.100.7");
    let conn = connection(balancer);
    detector.observe(0, wall(0), &conn, trusted(v4(0x0100_0000)));
    let memory_at_start = detector.memory_bytes();
    assert!(memory_at_start <= bound);
    // 5,000,000 distinct spoofed addresses plus one real client making every 100th request,
    // all within one 60-second window.
    let total: u64 = 5_000_000;
    for n in 0..total {
        let now_ms = n * 50_000 / total;
        let original = if n % 100 == 0 {
            heavy
        } else {
            v4(0x0200_0000 + n as u32)
        };
        detector.observe(now_ms, wall(now_ms), &conn, trusted(original));
    }
    let events = detector.take_events();
    // Only the buffered events differ; every table kept its allocation.
    assert_eq!(
        detector.memory_bytes(),
        memory_at_start + events.len() * ingress_tap_core::detect::EVENT_BYTES_ESTIMATE
    );
    assert!(detector.memory_bytes() <= bound);
    let snapshot = detector.snapshot();
    assert_eq!(snapshot.top_original.len(), 20);
    assert_eq!(snapshot.top_original[0].ip, heavy);
    assert!(snapshot.top_original[0].guaranteed_requests() >= 40_000);
    assert_eq!(snapshot.top_sources[0].ip, balancer);
    assert_eq!(snapshot.top_sources[0].requests, total + 1);
    assert_eq!(
        events
            .iter()
            .map(|event| (event.kind, event.ip))
            .collect::<Vec<_>>(),
        vec![
            (EventKind::LeakyBucket, heavy),
            (EventKind::VolumeThreshold, heavy)
        ],
        "only the real heavy client fires, once per rule"
    );
}

// ---------------------------------------------------------------------------------------------
// Rules

fn threshold_config(requests: u64) -> TraceConfig {
    TraceConfig {
        rules: vec![Rule::Threshold(Threshold {
            name: "volume".to_owned(),
            requests,
            window_seconds: 60,
            field: Field::Original,
            counters: 64,
        })],
        cooldown_seconds: 300,
        ..TraceConfig::default()
    }
}

#[test]
fn threshold_fires_once_per_cool_down() {
    let mut detector = Detector::with_seed(threshold_config(10), 1).unwrap();
    let client = ip("203.0.113.9");
    let conn = connection(ip("10.1.0.1"));
    // One request per second for 15 minutes: over the threshold in every window.
    let mut fired_at = Vec::new();
    for second in 0..900_u64 {
        let now_ms = second * 1000;
        detector.observe(now_ms, wall(now_ms), &conn, trusted(client));
        for event in detector.take_events() {
            assert_eq!(event.kind, EventKind::VolumeThreshold);
            assert_eq!(event.details.count, Some(10));
            assert_eq!(event.details.threshold, Some(10));
            assert_eq!(event.details.window_seconds, Some(60));
            fired_at.push(second);
        }
    }
    // The 10th request of the first window, then the first over-threshold request once each
    // five-minute cool-down has run out.
    assert_eq!(fired_at, vec![9, 309, 609]);
    let counters = detector.counters();
    assert_eq!(counters.events_of("volume"), 3);
    assert!(counters.rule_cooled_down[0].count > 0);
}

#[test]
fn threshold_never_fires_on_an_inherited_count() {
    // Few counters, one IP at 1 request then a stream of new IPs: each newcomer inherits a
    // count, but its certain count stays 1, under the threshold of 3. The rule counts in its
    // own summary (a window other than the top list's) or in the top list's summary (the same
    // window), which then has the top list's fewest counters.
    for window_seconds in [30, 60] {
        let mut config = threshold_config(3);
        config.top_n = 1;
        config.top_counters = 50;
        if let Some(Rule::Threshold(rule)) = config.rules.first_mut() {
            rule.counters = 2;
            rule.window_seconds = window_seconds;
        }
        let mut detector = Detector::with_seed(config, 1).unwrap();
        let conn = connection(ip("10.1.0.1"));
        for n in 0..5000_u32 {
            detector.observe(u64::from(n), wall(0), &conn, trusted(v4(n)));
        }
        let snapshot = detector.snapshot();
        assert!(
            snapshot.top_original[0].error > 0,
            "newcomers inherited counts"
        );
        assert!(
            detector.take_events().is_empty(),
            "window {window_seconds} s"
        );
    }
}

#[test]
fn a_threshold_on_the_top_window_fires_as_one_with_its_own_window() {
    // The same stream through a rule sharing the top summary (window 60 s, as the top list)
    // and through one with its own (60 s, the top list at 120 s): the same firings.
    let run = |top_window_seconds: u64| {
        let mut config = threshold_config(25);
        config.window_seconds = top_window_seconds;
        config.cooldown_seconds = 1;
        let mut detector = Detector::with_seed(config, 3).unwrap();
        let conn = connection(ip("10.1.0.1"));
        let mut events = Vec::new();
        for n in 0..20_000_u64 {
            let now_ms = n * 10;
            let client = v4(1 + (n * n) as u32 % 97);
            detector.observe(now_ms, wall(now_ms), &conn, trusted(client));
            if n % 7 == 0 {
                events.extend(
                    detector
                        .take_events()
                        .into_iter()
                        .map(|event| (event.ip, event.details.count)),
                );
            }
        }
        events.extend(
            detector
                .take_events()
                .into_iter()
                .map(|event| (event.ip, event.details.count)),
        );
        events
    };
    let shared = run(60);
    assert!(shared.len() > 10, "the stream crosses the threshold often");
    assert_eq!(shared, run(120));
}

fn leaky_rule(capacity: u64, leak_per_second: f64, buckets: usize) -> LeakyBucket {
    LeakyBucket {
        name: "burst".to_owned(),
        capacity,
        leak_per_second,
        field: Field::Original,
        buckets,
    }
}

#[test]
fn leaky_bucket_matches_a_hand_computed_crowdsec_example() {
    // capacity: 5, leakspeed: 1s (one request leaks per second).
    let mut buckets = LeakyBuckets::new(&leaky_rule(5, 1.0, 16), 3);
    let client = ip("203.0.113.50");
    // t = 0 s: four requests, level 4.
    for expected in 1..=4 {
        assert_eq!(buckets.pour(0, client), Pour::Held(f64::from(expected)));
    }
    // t = 1.5 s: 1.5 leaked, level 2.5; two requests bring it to 4.5.
    assert_eq!(buckets.pour(1_500, client), Pour::Held(3.5));
    assert_eq!(buckets.pour(1_500, client), Pour::Held(4.5));
    // t = 2 s: 0.5 leaked, level 4; one request fills it to exactly 5 (still fits) ...
    assert_eq!(buckets.pour(2_000, client), Pour::Held(5.0));
    // ... and the next one is the sixth in a bucket of five: overflow, bucket emptied.
    assert_eq!(buckets.pour(2_000, client), Pour::Overflow);
    assert_eq!(buckets.level(2_000, &client), Some(0.0));
    assert_eq!(buckets.pour(2_000, client), Pour::Held(1.0));
    // A long pause drains it completely, never below empty.
    assert_eq!(buckets.level(60_000, &client), Some(0.0));
}

#[test]
fn leaky_bucket_through_the_detector_reports_its_parameters() {
    let config = TraceConfig {
        rules: vec![Rule::LeakyBucket(leaky_rule(5, 1.0, 16))],
        ..TraceConfig::default()
    };
    let mut detector = Detector::with_seed(config, 1).unwrap();
    let client = ip("2001:db8::77");
    let conn = connection(ip("10.1.0.1"));
    for _ in 0..6 {
        detector.observe(0, wall(0), &conn, trusted(client));
    }
    let events = detector.take_events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.kind, EventKind::LeakyBucket);
    assert_eq!(event.name, "burst");
    assert_eq!(event.ip, client);
    assert_eq!(event.details.capacity, Some(5));
    assert_eq!(event.details.leak_per_second, Some(1.0));
}

#[test]
fn leaky_buckets_stay_bounded_under_address_churn() {
    let mut buckets = LeakyBuckets::new(&leaky_rule(100, 10.0, 1000), 5);
    let memory = buckets.memory_bytes();
    for n in 0..200_000_u32 {
        buckets.pour(u64::from(n), v4(n));
    }
    assert_eq!(buckets.len(), 1000);
    assert_eq!(buckets.memory_bytes(), memory);
    assert_eq!(buckets.evictions(), 199_000);
}

#[test]
fn a_source_rule_counts_the_connection_source() {
    let mut config = threshold_config(3);
    if let Some(Rule::Threshold(rule)) = config.rules.first_mut() {
        rule.field = Field::Source;
    }
    let mut detector = Detector::with_seed(config, 1).unwrap();
    let conn = connection(ip("192.0.2.200"));
    for n in 0..3_u32 {
        detector.observe(0, wall(0), &conn, trusted(v4(n)));
    }
    let events = detector.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].ip, events[0].field),
        (ip("192.0.2.200"), Field::Source)
    );
}

#[test]
fn the_global_rate_limit_caps_an_event_flood() {
    let config = TraceConfig {
        rules: vec![Rule::LeakyBucket(leaky_rule(1, 0.001, 10_000))],
        max_events_per_second: 5,
        ..TraceConfig::default()
    };
    let mut detector = Detector::with_seed(config, 1).unwrap();
    let conn = connection(ip("10.1.0.1"));
    // 1,000 addresses each overflowing once within the same second.
    for n in 0..1000_u32 {
        detector.observe(500, wall(500), &conn, trusted(v4(n)));
        detector.observe(500, wall(500), &conn, trusted(v4(n)));
    }
    assert_eq!(detector.take_events().len(), 5);
    assert_eq!(detector.counters().events_rate_limited, 995);
}

fn claimed(ip: IpAddr) -> Option<Attributed> {
    Some(Attributed::new(ip, Provenance::Claimed))
}

#[test]
fn claimed_addresses_are_counted_apart_from_verified_ones() {
    let mut detector = Detector::with_seed(threshold_config(10), 1).unwrap();
    let conn = connection(ip("10.1.0.1"));
    let victim = ip("198.51.100.20");
    // Nine verified requests of the victim, then a hundred claimed in its name.
    for _ in 0..9 {
        detector.observe(1_000, wall(1_000), &conn, trusted(victim));
    }
    for _ in 0..100 {
        detector.observe(2_000, wall(2_000), &conn, claimed(victim));
    }
    let events = detector.take_events();
    // The claimed ones cross the rule in their own count; the verified count stays at nine.
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].provenance(), Provenance::Claimed);
    assert_eq!(events[0].details.count, Some(10));
    let view = detector.snapshot();
    assert_eq!(view.top_original[0].ip, victim);
    assert_eq!(view.top_original[0].requests, 9);
    assert_eq!(view.top_original[0].provenance, Some(Provenance::Trusted));
    assert_eq!(view.top_claimed[0].requests, 100);
    assert_eq!(view.top_claimed[0].provenance, Some(Provenance::Claimed));
    assert!(view.recent_events.is_empty(), "{:?}", view.recent_events);
    assert_eq!(view.claimed_events.len(), 1);
    // A claimed cool-down does not silence the verified stream: its tenth request fires.
    detector.observe(3_000, wall(3_000), &conn, trusted(victim));
    let events = detector.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].provenance(), Provenance::Trusted);
    let counters = detector.counters();
    let by_provenance = |provenance| {
        counters
            .rule_events
            .iter()
            .find(|count| count.name == "volume" && count.provenance == provenance)
            .map(|count| count.count)
    };
    assert_eq!(by_provenance(Provenance::Claimed), Some(1));
    assert_eq!(by_provenance(Provenance::Trusted), Some(1));
}

#[test]
fn a_claimed_flood_cannot_starve_list_hits_or_source_events() {
    let (list, _) = parse_list("abusers", "203.0.113.0/24\n192.0.2.99/32\n");
    let config = TraceConfig {
        rules: vec![Rule::LeakyBucket(leaky_rule(1, 0.001, 10_000))],
        max_events_per_second: 5,
        ..TraceConfig::default()
    };
    let mut detector = Detector::with_seed(config, 1).unwrap();
    detector.replace_lists(ThreatLists::build(vec![list]).unwrap());
    let balancer = connection(ip("10.1.0.1"));
    // Within one instant: a thousand spoofed addresses overflow the bucket, then a listed
    // client and a listed direct peer come.
    for n in 0..1000_u32 {
        detector.observe(500, wall(500), &balancer, claimed(v4(0x0A00_0000 + n)));
        detector.observe(500, wall(500), &balancer, claimed(v4(0x0A00_0000 + n)));
    }
    detector.observe(500, wall(500), &balancer, trusted(ip("203.0.113.9")));
    detector.observe(500, wall(500), &connection(ip("192.0.2.99")), None);
    let events = detector.take_events();
    let lists: Vec<(IpAddr, Field)> = events
        .iter()
        .filter(|event| event.kind == EventKind::ThreatList)
        .map(|event| (event.ip, event.field))
        .collect();
    assert_eq!(
        lists,
        vec![
            (ip("192.0.2.99"), Field::Source),
            (ip("203.0.113.9"), Field::Original)
        ]
    );
    let claimed_events = events
        .iter()
        .filter(|event| event.provenance() == Provenance::Claimed)
        .count();
    assert_eq!(claimed_events, 5);
    let counters = detector.counters();
    let limited = |kind: EventKind, stream: Stream| {
        counters
            .events_rate_limited_by_budget
            .iter()
            .find(|budget| budget.kind == kind && budget.stream == stream)
            .map(|budget| budget.count)
    };
    assert_eq!(limited(EventKind::LeakyBucket, Stream::Claimed), Some(995));
    assert_eq!(limited(EventKind::ThreatList, Stream::Original), Some(0));
    let view = detector.snapshot();
    assert_eq!(view.recent_events.len(), 2, "{:?}", view.recent_events);
    assert_eq!(view.claimed_events.len(), 5);
}

#[test]
fn the_window_starts_with_the_first_request() {
    let mut detector = Detector::with_seed(TraceConfig::default(), 1).unwrap();
    detector.advance(0, wall(0));
    detector.advance(5_000, wall(5_000));
    assert_eq!(detector.snapshot().window_started, None);
    detector.observe(7_000, wall(7_000), &connection(ip("10.1.0.1")), None);
    assert_eq!(
        detector.snapshot().window_started.as_deref(),
        Some("2023-11-14T22:13:27.000Z")
    );
}

// ---------------------------------------------------------------------------------------------
// Threat lists

const FIREHOL: &str = "\
#
# firehol_level1
#
# ipv4 hash:net ipset
#
0.0.0.0/8
1.10.16.0/20
5.134.128.0/19
223.254.0.0/16
";

const SPAMHAUS_DROP: &str = "\
; Spamhaus DROP List 2024/05/01 - (c) 2024 The Spamhaus Project SLU
; https://www.spamhaus.org/drop/drop.txt
; Last-Modified: Wed, 01 May 2024 10:00:00 GMT
; Expires: Wed, 01 May 2024 11:00:00 GMT
1.10.16.0/20 ; SBL256894
2.56.192.0/22 ; SBL459831
2001:db8:dead::/48 ; SBL600001
";

const EMERGING_THREATS_WITH_MISTAKES: &str = "\
# Emerging Threats compromised IPs
103.10.20.30
  103.10.20.31  

not-an-ip
103.10.20.0-103.10.20.255
10.1.2.3/8
2001:db8::/129
192.0.2.1 192.0.2.2
0.0.0.0/0
2001:db8:beef::1
";

#[test]
fn firehol_and_spamhaus_texts_load_with_their_notes() {
    let (firehol, issues) = parse_list("firehol_level1", FIREHOL);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(firehol.entries().len(), 4);
    let (drop, issues) = parse_list("spamhaus_drop", SPAMHAUS_DROP);
    assert!(issues.is_empty(), "{issues:?}");
    let notes: Vec<(String, Option<&str>)> = drop
        .entries()
        .iter()
        .map(|entry| (entry.network.to_string(), entry.note.as_deref()))
        .collect();
    assert_eq!(
        notes,
        vec![
            ("1.10.16.0/20".to_owned(), Some("SBL256894")),
            ("2.56.192.0/22".to_owned(), Some("SBL459831")),
            ("2001:db8:dead::/48".to_owned(), Some("SBL600001")),
        ]
    );
}

#[test]
fn bad_lines_are_reported_with_line_numbers_and_the_rest_loads() {
    let (list, issues) = parse_list("et_compromised", EMERGING_THREATS_WITH_MISTAKES);
    let loaded: Vec<String> = list
        .entries()
        .iter()
        .map(|entry| entry.network.to_string())
        .collect();
    assert_eq!(
        loaded,
        vec![
            "103.10.20.30/32",
            "103.10.20.31/32",
            "10.0.0.0/8",
            "2001:db8:beef::1/128"
        ]
    );
    let reported: Vec<(usize, bool)> = issues
        .iter()
        .map(|issue| (issue.line, issue.loaded))
        .collect();
    assert_eq!(
        reported,
        vec![
            (5, false),
            (6, false),
            (7, true),
            (8, false),
            (9, false),
            (10, false)
        ]
    );
    assert!(issues[0].reason.contains("not an IP address"));
    assert!(issues[1].reason.contains("range"));
    assert!(issues[2].reason.contains("host bits"));
    assert!(issues[2].reason.contains("10.0.0.0/8"));
    assert!(issues[4].reason.contains("one address or CIDR per line"));
    assert!(issues[5].reason.contains("every address"));
    assert_eq!(issues[3].text, "2001:db8::/129");
    assert_eq!(list.skipped_lines(), 5);
    assert_eq!(list.normalised_lines(), 1);
}

#[test]
fn a_garbage_file_reports_a_bounded_number_of_issues() {
    let garbage: String = (0..10_000).map(|n| format!("<div>{n}</div>\n")).collect();
    let (list, issues) = parse_list("wrong_file", &garbage);
    assert!(list.entries().is_empty());
    assert_eq!(
        issues.len(),
        ingress_tap_core::detect::threat_lists::MAX_REPORTED_ISSUES
    );
    assert_eq!(list.skipped_lines(), 10_000);
}

#[test]
fn the_longest_prefix_wins_in_ipv4_and_ipv6() {
    let (wide, _) = parse_list("wide", "10.0.0.0/8 ; wide\n2001:db8::/32 ; wide6\n");
    let (narrow, _) = parse_list("narrow", "10.20.30.0/24 ; narrow\n2001:db8:1::/48\n");
    let lists = ThreatLists::build(vec![wide, narrow]).unwrap();

    let hit = lists.lookup(ip("10.20.30.40")).unwrap();
    assert_eq!(
        (hit.list, hit.cidr.to_string(), hit.note),
        ("narrow", "10.20.30.0/24".to_owned(), Some("narrow"))
    );
    let hit = lists.lookup(ip("10.20.31.1")).unwrap();
    assert_eq!(
        (hit.list, hit.cidr.to_string()),
        ("wide", "10.0.0.0/8".to_owned())
    );
    let hit = lists.lookup(ip("2001:db8:1::5")).unwrap();
    assert_eq!(
        (hit.list, hit.cidr.to_string(), hit.note),
        ("narrow", "2001:db8:1::/48".to_owned(), None)
    );
    let hit = lists.lookup(ip("2001:db8:2::5")).unwrap();
    assert_eq!(
        (hit.list, hit.cidr.to_string()),
        ("wide", "2001:db8::/32".to_owned())
    );
    assert!(lists.lookup(ip("11.0.0.1")).is_none());
    assert!(lists.lookup(ip("2001:db9::1")).is_none());

    // Every list containing the address, each with its own most specific entry.
    let all: Vec<(String, String)> = lists
        .matches(ip("10.20.30.40"))
        .iter()
        .map(|hit| (hit.list.to_owned(), hit.cidr.to_string()))
        .collect();
    assert_eq!(
        all,
        vec![
            ("wide".to_owned(), "10.0.0.0/8".to_owned()),
            ("narrow".to_owned(), "10.20.30.0/24".to_owned())
        ]
    );
}

#[test]
fn the_same_prefix_in_two_lists_matches_both() {
    let (firehol, _) = parse_list("firehol_level1", FIREHOL);
    let (drop, _) = parse_list("spamhaus_drop", SPAMHAUS_DROP);
    let lists = ThreatLists::build(vec![firehol, drop]).unwrap();
    let hits = lists.matches(ip("1.10.17.1"));
    assert_eq!(
        hits.iter()
            .map(|hit| (hit.list, hit.note))
            .collect::<Vec<_>>(),
        vec![
            ("firehol_level1", None),
            ("spamhaus_drop", Some("SBL256894"))
        ]
    );
    assert_eq!(
        lists.lookup(ip("1.10.17.1")).unwrap().list,
        "firehol_level1"
    );
}

#[test]
fn list_names_must_be_unique() {
    let (a, _) = parse_list("same", "192.0.2.0/24\n");
    let (b, _) = parse_list("same", "198.51.100.0/24\n");
    assert_eq!(
        ThreatLists::build(vec![a, b]).unwrap_err(),
        ThreatListsError::DuplicateName("same".to_owned())
    );
}

#[test]
fn threat_hits_raise_rate_limited_events_and_count_every_hit() {
    let mut detector = Detector::with_seed(config_without_rules(), 1).unwrap();
    let (drop, _) = parse_list("spamhaus_drop", SPAMHAUS_DROP);
    let (firehol, _) = parse_list("firehol_level1", FIREHOL);
    detector.replace_lists(ThreatLists::build(vec![drop, firehol]).unwrap());

    let balancer = ip("10.1.0.1");
    let listed_client = ip("2.56.193.4");
    let listed_source = ip("223.254.9.9");
    // Ten requests in one minute from a listed client through a clean balancer.
    for second in 0..10_u64 {
        let now_ms = second * 1000;
        detector.observe(
            now_ms,
            wall(now_ms),
            &connection(balancer),
            trusted(listed_client),
        );
    }
    // A listed direct peer with a clean original IP.
    detector.observe(
        11_000,
        wall(11_000),
        &connection(listed_source),
        trusted(ip("192.0.2.10")),
    );
    // After the per-IP interval the client raises a second event.
    detector.observe(
        61_000,
        wall(61_000),
        &connection(balancer),
        trusted(listed_client),
    );

    let events = detector.take_events();
    assert_eq!(events.len(), 3);
    let first = &events[0];
    assert_eq!(first.kind, EventKind::ThreatList);
    assert_eq!(first.name, "spamhaus_drop");
    assert_eq!(first.ip, listed_client);
    assert_eq!(first.field, Field::Original);
    assert_eq!(first.details.cidr.as_deref(), Some("2.56.192.0/22"));
    assert_eq!(first.details.note.as_deref(), Some("SBL459831"));
    assert_eq!(first.connection.src_ip, balancer);
    assert_eq!(first.time, "2023-11-14T22:13:20.000Z");
    let second = &events[1];
    assert_eq!(
        (second.name.as_str(), second.ip, second.field),
        ("firehol_level1", listed_source, Field::Source)
    );
    assert_eq!(events[2].time, "2023-11-14T22:14:21.000Z");

    let counters = detector.counters();
    let hits: Vec<(&str, Provenance, u64)> = counters
        .list_hits
        .iter()
        .filter(|count| count.count > 0)
        .map(|count| (count.name.as_str(), count.provenance, count.count))
        .collect();
    assert_eq!(
        hits,
        vec![
            ("spamhaus_drop", Provenance::Trusted, 11),
            ("firehol_level1", Provenance::Connection, 1)
        ]
    );

    // A reload keeps the counts of lists that keep their name.
    let (firehol, _) = parse_list("firehol_level1", FIREHOL);
    detector.replace_lists(ThreatLists::build(vec![firehol]).unwrap());
    let counters = detector.counters();
    assert!(counters
        .list_hits
        .iter()
        .all(|count| count.name == "firehol_level1"));
    assert_eq!(counters.hits_of("firehol_level1"), 1);
    assert_eq!(counters.events_of("firehol_level1"), 1);
}

#[test]
fn ipv4_mapped_original_ips_are_their_ipv4_address() {
    let mut detector = Detector::with_seed(config_without_rules(), 1).unwrap();
    let (list, _) = parse_list("x", "192.0.2.0/24\n");
    detector.replace_lists(ThreatLists::build(vec![list]).unwrap());
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 8).to_ipv6_mapped());
    detector.observe(0, wall(0), &connection(ip("10.1.0.1")), trusted(mapped));
    let events = detector.take_events();
    assert_eq!(events.len(), 1);
    // One client, one spelling: the event names the IPv4 address.
    assert_eq!(events[0].ip, ip("192.0.2.8"));
    assert_eq!(events[0].details.cidr.as_deref(), Some("192.0.2.0/24"));
}

// ---------------------------------------------------------------------------------------------
// Events and the /suspicious view

#[test]
fn the_event_json_schema_is_stable_and_round_trips() {
    let event = Event {
        schema_version: EVENT_SCHEMA_VERSION,
        time: "2024-05-01T12:00:00.250Z".to_owned(),
        kind: EventKind::ThreatList,
        name: "spamhaus_drop".to_owned(),
        ip: ip("2.56.193.4"),
        field: Field::Original,
        provenance: Some(Provenance::Trusted),
        connection: EventConnection {
            src_ip: ip("10.1.0.1"),
            src_port: 40_000,
            dst_ip: ip("10.0.0.5"),
            dst_port: 443,
            protocol: "tcp".to_owned(),
        },
        details: EventDetails {
            cidr: Some("2.56.192.0/22".to_owned()),
            note: Some("SBL459831".to_owned()),
            ..EventDetails::default()
        },
    };
    let line = event.to_json_line().unwrap();
    assert_eq!(
        line,
        concat!(
            r#"{"schema_version":1,"time":"2024-05-01T12:00:00.250Z","kind":"threat_list","#,
            r#""name":"spamhaus_drop","ip":"2.56.193.4","field":"original","provenance":"trusted","#,
            r#""connection":{"src_ip":"10.1.0.1","src_port":40000,"dst_ip":"10.0.0.5","dst_port":443,"protocol":"tcp"},"#,
            r#""details":{"cidr":"2.56.192.0/22","note":"SBL459831"}}"#,
            "\n"
        )
    );
    let back: Event = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(back, event);

    let volume = Event {
        kind: EventKind::VolumeThreshold,
        ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
        field: Field::Source,
        details: EventDetails {
            count: Some(1000),
            threshold: Some(1000),
            window_seconds: Some(60),
            ..EventDetails::default()
        },
        ..event
    };
    let value: serde_json::Value = serde_json::from_str(&volume.to_json_line().unwrap()).unwrap();
    assert_eq!(value["kind"], "volume_threshold");
    assert_eq!(value["field"], "source");
    assert_eq!(value["ip"], "::1");
    assert_eq!(
        value["details"],
        serde_json::json!({"count": 1000, "threshold": 1000, "window_seconds": 60})
    );
    let back: Event = serde_json::from_value(value).unwrap();
    assert_eq!(back, volume);
}

#[test]
fn the_suspicious_view_has_its_documented_shape() {
    let mut detector = Detector::with_seed(threshold_config(2), 1).unwrap();
    let conn = connection(ip("10.1.0.1"));
    for _ in 0..3 {
        detector.observe(1_000, wall(1_000), &conn, trusted(ip("203.0.113.1")));
    }
    detector.observe(2_000, wall(2_000), &conn, None);
    let empty = detector.snapshot();
    assert!(empty.previous_window.is_none());
    detector.advance(61_500, wall(61_500));

    let value = serde_json::to_value(detector.snapshot()).unwrap();
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "claimed_events",
            "previous_window",
            "recent_events",
            "schema_version",
            "top_claimed",
            "top_original",
            "top_sources",
            "window_seconds",
            "window_started"
        ]
    );
    assert_eq!(value["window_seconds"], 60);
    assert_eq!(value["window_started"], "2023-11-14T22:14:21.000Z");
    let previous = &value["previous_window"];
    assert_eq!(previous["started"], "2023-11-14T22:13:21.000Z");
    assert_eq!(previous["requests_original"], 3);
    assert_eq!(previous["requests_sources"], 4);
    assert_eq!(
        previous["top_original"],
        serde_json::json!([{"ip": "203.0.113.1", "requests": 3, "error": 0, "provenance": "trusted"}])
    );
    assert_eq!(value["top_original"], serde_json::json!([]));
    assert_eq!(value["recent_events"].as_array().unwrap().len(), 1);
    // `ingress-tap block` reads the same format back.
    let back: Suspicious = serde_json::from_value(value).unwrap();
    assert_eq!(back.recent_events[0].kind, EventKind::VolumeThreshold);
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn an_empty_file_is_the_documented_defaults() {
    let config = TraceConfig::from_yaml("").unwrap();
    assert_eq!(config, TraceConfig::default());
    assert_eq!(config.window_seconds, 60);
    assert_eq!(config.top_n, 20);
    assert_eq!(config.rules.len(), 2);
    // About 4 MiB of tables and 5 MiB of worst-case event buffers, as documented.
    assert!(config.memory_bound_bytes() < 10 * 1024 * 1024);
}

#[test]
fn a_full_file_parses_rules_and_lists() {
    let config = TraceConfig::from_yaml(
        r#"
window_seconds: 30
top_n: 10
top_counters: 500
cooldown_seconds: 600
rules:
  - type: threshold
    name: api-hammer
    requests: 300
    window_seconds: 10
    field: source
  - type: leaky_bucket
    name: crawl
    capacity: 40
    leak_per_second: 2
lists:
  - name: spamhaus_drop
    path: /etc/ingress-tap/lists/drop.txt
"#,
    )
    .unwrap();
    assert_eq!(config.window_seconds, 30);
    assert_eq!(
        config.rules[0],
        Rule::Threshold(Threshold {
            name: "api-hammer".to_owned(),
            requests: 300,
            window_seconds: 10,
            field: Field::Source,
            counters: ingress_tap_core::detect::rules::DEFAULT_THRESHOLD_COUNTERS,
        })
    );
    assert_eq!(
        config.rules[1],
        Rule::LeakyBucket(leaky_rule(40, 2.0, 10_000)).renamed("crawl")
    );
    assert_eq!(config.lists[0].name, "spamhaus_drop");
    assert_eq!(
        config.max_events_per_second,
        TraceConfig::default().max_events_per_second
    );
    assert!(TraceConfig::from_yaml("rules: []\n")
        .unwrap()
        .rules
        .is_empty());
}

trait Renamed {
    fn renamed(self, name: &str) -> Rule;
}

impl Renamed for Rule {
    fn renamed(self, name: &str) -> Rule {
        match self {
            Rule::Threshold(rule) => Rule::Threshold(Threshold {
                name: name.to_owned(),
                ..rule
            }),
            Rule::LeakyBucket(rule) => Rule::LeakyBucket(LeakyBucket {
                name: name.to_owned(),
                ..rule
            }),
        }
    }
}

#[test]
fn bad_files_are_refused_with_clear_messages() {
    let message = |yaml: &str| TraceConfig::from_yaml(yaml).unwrap_err().to_string();
    assert!(message("window_secs: 5\n").contains("unknown field `window_secs`"));
    assert!(message(
        "rules:\n  - type: threshold\n    name: a\n    requests: 5\n    colour: red\n"
    )
    .contains("unknown field `colour`"));
    assert!(
        message("rules:\n  - type: sliding\n    name: a\n").contains("unknown variant `sliding`")
    );
    assert_eq!(
        message("window_seconds: 0\n"),
        "window_seconds = 0 is out of range; expected 1 to 3600"
    );
    assert_eq!(
        message("top_n: 50\ntop_counters: 10\n"),
        "top_counters = 10 is out of range; expected 50 to 1000000"
    );
    assert_eq!(
        message("rules:\n  - {type: leaky_bucket, name: b, capacity: 5, leak_per_second: 0}\n"),
        "rules[b].leak_per_second = 0 is out of range; expected 0.001 to 1000000000"
    );
    assert_eq!(
        message("rules:\n  - {type: threshold, name: x, requests: 5}\n  - {type: threshold, name: x, requests: 6}\n"),
        "rule name \"x\" is used twice; names must be unique"
    );
    assert!(matches!(
        TraceConfig::from_yaml("lists:\n  - {name: '', path: /x}\n"),
        Err(TraceConfigError::EmptyName {
            what: "threat list"
        })
    ));
}
