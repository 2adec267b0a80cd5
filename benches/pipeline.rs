//! Collector throughput: parse + original IP + aggregate over a realistic 1,000,000-line log,
//! next to a newline count over the same bytes (what `wc -l` does, minus the file I/O), so the
//! cost ratio is read from one run.
//!
//! Targets: ≥ 1,000,000 lines/s on one core, and no more than 10× the time of `wc -l`.
//!
//! `parse_only` isolates the line scanner, so a change in the whole path can be attributed to
//! parsing or to the origin and aggregation steps behind it. Its lines are the template
//! verbatim, as nearly all production lines are, so it measures the scanner's fast path;
//! `parse_only_off_template` is the same log with one space added before each closing brace,
//! which the fast path notices only at its last step: the worst case of falling back to the
//! general scanner.
//!
//! `hostile_*` are lines whose X-Forwarded-For is 8 KB of raw header, the most nginx accepts by
//! default, made of a client address and padding: `"` bytes as nginx's default escaping writes
//! them (`\x22`, 32 KB in the line), the same as `escape=json` writes them (`\"`, 16 KB), and a
//! plain list of addresses. Per line they are held to within 3× of `parse_origin_aggregate`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ingress_tap_core::collect::aggregate::{Aggregator, AggregatorLimits, IntervalReport};
use ingress_tap_core::collect::origin::original_ip;
use ingress_tap_core::collect::parse::parse_line;

#[path = "support/synthetic_log.rs"]
mod synthetic_log;

const LINES: u64 = 1_000_000;
/// Shared with the `gen_log` example.
const SEED: u64 = 0x1e55_1e55;

/// The collector's per-interval work over a buffer of complete lines.
fn collect(log: &[u8], aggregator: &mut Aggregator) -> IntervalReport {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', log) {
        let line = &log[start..end];
        start = end + 1;
        if let Ok(Some(record)) = parse_line(line) {
            let origin = original_ip(&record);
            aggregator.observe(&record, origin.as_ref());
        }
    }
    aggregator.close_interval()
}

fn generate_log() -> Vec<u8> {
    let mut log = Vec::new();
    synthetic_log::write_log(&mut log, LINES, SEED).expect("writing to memory cannot fail");
    log
}

/// The scanner alone: how many lines parse into records.
fn parse_only(log: &[u8]) -> usize {
    let mut start = 0;
    let mut records = 0;
    for end in memchr::memchr_iter(b'\n', log) {
        let line = &log[start..end];
        start = end + 1;
        records += usize::from(matches!(parse_line(line), Ok(Some(_))));
    }
    records
}

/// The log with `" }` where the template has `"}`: every line still parses, but only the
/// general scanner accepts it.
fn off_template(log: &[u8]) -> Vec<u8> {
    let mut shifted = Vec::with_capacity(log.len() + LINES as usize);
    let mut start = 0;
    for quote in memchr::memmem::find_iter(log, b"\"}\n") {
        shifted.extend_from_slice(&log[start..=quote]);
        shifted.extend_from_slice(b" }\n");
        start = quote + 3;
    }
    shifted.extend_from_slice(&log[start..]);
    shifted
}

/// Lines per hostile log: enough for a stable figure, few enough to stay out of the cache.
const HOSTILE_LINES: u64 = 2_000;
/// nginx's default `large_client_header_buffers` size, the longest header it accepts.
const HEADER_BYTES: usize = 8 * 1024;

/// A log of lines whose X-Forwarded-For is `client, <padding>`: `padding(n)` is the log text of
/// `n` raw header bytes, so the header is `HEADER_BYTES` as the client sent it.
fn hostile_log(padding: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut log = Vec::new();
    for n in 0..HOSTILE_LINES {
        let client = format!("203.0.{}.{}", n / 256 % 256, n % 256);
        let raw_padding = HEADER_BYTES - client.len() - 2;
        log.extend_from_slice(
            format!(
                r#"tigera_secure_ee_ingress: {{"source_port": {}, "destination_ip": "10.244.1.17", "destination_port": 443, "source_ip": "10.0.3.13", "x-forwarded-for": "{client}, "#,
                40000 + n % 1000
            )
            .as_bytes(),
        );
        log.extend_from_slice(&padding(raw_padding));
        log.extend_from_slice(b"\", \"x-real-ip\": \"-\"}\n");
    }
    log
}

fn count_lines(log: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', log).count()
}

fn pipeline(c: &mut Criterion) {
    let log = generate_log();
    let mut aggregator = Aggregator::new(AggregatorLimits::with_requests_per_interval(-1));

    // Sanity: the workload is what it claims to be.
    let report = collect(&log, &mut aggregator);
    assert_eq!(count_lines(&log) as u64, LINES);
    assert_eq!(report.records, LINES);
    assert_eq!(parse_only(&log) as u64, LINES);
    let off_template_log = off_template(&log);
    assert_eq!(count_lines(&off_template_log) as u64, LINES);
    assert_eq!(parse_only(&off_template_log) as u64, LINES);
    eprintln!(
        "workload: {LINES} lines, {:.1} MB, {} connections, {} distinct IPs summed over connections",
        log.len() as f64 / 1e6,
        report.connections.len(),
        report.connections.iter().map(|c| c.distinct_original_ips).sum::<u64>()
    );

    for (name, throughput) in [
        ("lines", Throughput::Elements(LINES)),
        ("bytes", Throughput::Bytes(log.len() as u64)),
    ] {
        let mut group = c.benchmark_group(format!("pipeline_{name}"));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
        group.throughput(throughput);
        group.bench_function("parse_origin_aggregate", |b| {
            b.iter(|| collect(black_box(&log), &mut aggregator))
        });
        group.bench_function("parse_only", |b| b.iter(|| parse_only(black_box(&log))));
        if name == "lines" {
            group.bench_function("parse_only_off_template", |b| {
                b.iter(|| parse_only(black_box(&off_template_log)))
            });
        }
        group.bench_function("newline_count_baseline", |b| {
            b.iter(|| count_lines(black_box(&log)))
        });
        group.finish();
    }

    let hostile = [
        ("hostile_quotes_nginx", hostile_log(|n| br"\x22".repeat(n))),
        ("hostile_quotes_json", hostile_log(|n| br#"\""#.repeat(n))),
        (
            "hostile_padded_list",
            hostile_log(|n| {
                let mut list = "10.1.2.3, ".repeat(n / 10 + 1).into_bytes();
                list.truncate(n);
                list
            }),
        ),
    ];
    let mut group = c.benchmark_group("pipeline_hostile_lines");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    // The same-run baseline, per line.
    group.throughput(Throughput::Elements(LINES));
    group.bench_function("parse_origin_aggregate", |b| {
        b.iter(|| collect(black_box(&log), &mut aggregator))
    });
    group.throughput(Throughput::Elements(HOSTILE_LINES));
    for (name, hostile_log) in &hostile {
        // Every hostile line is a record, and its client is the one before the padding.
        let report = collect(hostile_log, &mut aggregator);
        assert_eq!(report.records, HOSTILE_LINES, "{name}");
        let clients: u64 = report
            .connections
            .iter()
            .map(|c| c.distinct_original_ips)
            .sum();
        assert_eq!(clients, HOSTILE_LINES, "{name}");
        assert_eq!(parse_only(hostile_log) as u64, HOSTILE_LINES, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| collect(black_box(hostile_log), &mut aggregator))
        });
        group.bench_function(format!("{name}_newline_count"), |b| {
            b.iter(|| count_lines(black_box(hostile_log)))
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
