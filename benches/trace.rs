//! Trace detectors: threat lists at 1,000,000 CIDRs, and the per-request cost of the detector.
//!
//! Targets (one core): load 1,000,000 CIDRs (parse + build) in < 2 s, hold them in < 64 MiB,
//! look up ≥ 10,000,000 addresses/s; and a flood of millions of distinct spoofed addresses in
//! one window leaves the detector's memory where it started.
//!
//! Memory is read two ways and both are printed: the structure's own accounting
//! (`ThreatLists::memory_bytes`, from the trie's allocation sizes and the side tables'
//! capacities) and the growth of the process's resident set (`VmRSS` in /proc/self/status)
//! across the build, which also catches allocator overhead.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ingress_tap_core::detect::heavy_hitters::SpaceSaving;
use ingress_tap_core::detect::threat_lists::{parse_list, ThreatLists};
use ingress_tap_core::detect::{Detector, TraceConfig};
use ingress_tap_core::model::Attributed;
use ingress_tap_core::model::Connection;
use ingress_tap_core::model::Protocol;
use ingress_tap_core::model::Provenance;

const CIDRS: usize = 1_000_000;
const IPV6_SHARE: usize = 20; // one entry in twenty is IPv6
const LOOKUP_BATCH: usize = 4096;
const FLOOD: u64 = 5_000_000;

/// SplitMix64: reproducible inputs without a data file.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A verified original IP (walked past trusted proxies), as the detector takes it.
fn trusted(ip: IpAddr) -> Option<Attributed> {
    Some(Attributed::new(ip, Provenance::Trusted))
}

/// A list text of `CIDRS` random entries: IPv4 /16 to /32, and IPv6 /32 to /64 under 2000::/4.
fn list_text(random: &mut Random) -> String {
    let mut text = String::with_capacity(CIDRS * 20);
    text.push_str("# synthetic list\n");
    for n in 0..CIDRS {
        let bits = random.next();
        if n % IPV6_SHARE == 0 {
            let address = Ipv6Addr::from((0x2_u128 << 124) | (u128::from(random.next()) << 60));
            let prefix = 32 + bits % 33;
            text.push_str(&format!("{address}/{prefix}\n"));
        } else {
            let address = Ipv4Addr::from((bits >> 32) as u32);
            let prefix = 16 + bits % 17;
            text.push_str(&format!("{address}/{prefix}\n"));
        }
    }
    text
}

fn load(text: &str) -> ThreatLists {
    let (list, _host_bits_reports) = parse_list("synthetic", text);
    ThreatLists::build(vec![list]).expect("one list cannot clash")
}

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Random addresses: IPv4 anywhere (hits and misses as the random prefixes fall), and one in
/// twenty IPv6 under 2000::/4 (mostly misses).
fn lookup_addresses(random: &mut Random) -> Vec<IpAddr> {
    (0..LOOKUP_BATCH)
        .map(|n| {
            if n % IPV6_SHARE == 0 {
                IpAddr::V6(Ipv6Addr::from(
                    (0x2_u128 << 124) | (u128::from(random.next()) << 60),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from(random.next() as u32))
            }
        })
        .collect()
}

fn threat_lists(c: &mut Criterion) {
    let mut random = Random(0x7ace);
    let text = list_text(&mut random);

    let resident_before = resident_bytes();
    let started = Instant::now();
    let lists = load(&text);
    let load_time = started.elapsed();
    let resident_growth = resident_bytes().saturating_sub(resident_before);
    eprintln!(
        "threat lists: {} CIDRs ({} distinct) loaded in {:.0} ms (target < 2000 ms); \
         structure {:.1} MiB, resident growth {:.1} MiB (target < 64 MiB)",
        CIDRS,
        lists.len(),
        load_time.as_secs_f64() * 1000.0,
        lists.memory_bytes() as f64 / 1_048_576.0,
        resident_growth as f64 / 1_048_576.0,
    );

    let addresses = lookup_addresses(&mut random);
    let hits = addresses
        .iter()
        .filter(|&&address| lists.lookup(address).is_some())
        .count();
    eprintln!(
        "lookup mix: {hits} hits of {LOOKUP_BATCH} addresses ({:.0} %)",
        hits as f64 * 100.0 / LOOKUP_BATCH as f64
    );

    let mut group = c.benchmark_group("threat_lists");
    group.throughput(Throughput::Elements(LOOKUP_BATCH as u64));
    group.bench_function("lookup_1m_cidrs", |b| {
        b.iter(|| {
            let mut found = 0_usize;
            for &address in &addresses {
                found += usize::from(lists.lookup(black_box(address)).is_some());
            }
            found
        })
    });
    group.bench_function("matches_1m_cidrs", |b| {
        b.iter(|| {
            let mut found = 0_usize;
            for &address in &addresses {
                found += lists.matches(black_box(address)).len();
            }
            found
        })
    });
    group.finish();

    let mut group = c.benchmark_group("threat_lists_load");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(CIDRS as u64));
    group.bench_function("parse_and_build_1m_cidrs", |b| {
        b.iter(|| load(black_box(&text)).len())
    });
    group.finish();
}

fn connection(source: IpAddr) -> Connection {
    Connection {
        source_ip: source,
        source_port: 40_000,
        destination_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
        destination_port: 443,
        protocol: Protocol::Tcp,
    }
}

fn flood(c: &mut Criterion) {
    // The detector with its default rules and a 100,000-entry list, fed a flood of distinct
    // spoofed addresses within one window.
    let mut random = Random(0xf100d);
    let list: String = (0..100_000)
        .map(|_| format!("{}/24\n", Ipv4Addr::from(random.next() as u32)))
        .collect();
    let mut detector = Detector::with_seed(TraceConfig::default(), 7).expect("defaults are valid");
    detector.replace_lists(load(&list));
    let conn = connection(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)));
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    detector.observe(
        0,
        wall,
        &conn,
        trusted(IpAddr::V4(Ipv4Addr::new(1, 0, 0, 0))),
    );
    let memory_before = detector.memory_bytes();
    let resident_before = resident_bytes();
    let started = Instant::now();
    for n in 0..FLOOD {
        let now_ms = n * 50_000 / FLOOD;
        let spoofed = IpAddr::V4(Ipv4Addr::from(0x0200_0000 + n as u32));
        detector.observe(now_ms, wall, &conn, trusted(spoofed));
    }
    let elapsed = started.elapsed();
    let events = detector.take_events().len();
    eprintln!(
        "flood: {FLOOD} distinct addresses in one window, {:.2} M requests/s; detector memory \
         {:.2} MiB before, {:.2} MiB after ({events} events taken); resident growth {:.1} MiB",
        FLOOD as f64 / elapsed.as_secs_f64() / 1e6,
        memory_before as f64 / 1_048_576.0,
        detector.memory_bytes() as f64 / 1_048_576.0,
        resident_bytes().saturating_sub(resident_before) as f64 / 1_048_576.0,
    );

    let mut group = c.benchmark_group("detector");
    group.throughput(Throughput::Elements(1));
    let mut now_ms = 0_u64;
    let mut n = 0_u32;
    group.bench_function("observe_distinct_addresses", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            now_ms += 1;
            detector.observe(
                now_ms / 100,
                wall,
                &conn,
                trusted(IpAddr::V4(Ipv4Addr::from(0x0300_0000 + n))),
            );
        })
    });
    let mut summary = SpaceSaving::new(1000);
    group.bench_function("space_saving_observe_distinct", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            summary.observe(black_box(IpAddr::V4(Ipv4Addr::from(n))))
        })
    });
    group.finish();
}

criterion_group!(benches, threat_lists, flood);
criterion_main!(benches);
