//! Load harness for the collector (not a test): throughput against `wc -l`, peak memory under a
//! flood of distinct spoofed X-Forwarded-For values, and CPU while following a growing log.
//!
//! ```text
//! cargo bench --bench collector_load                 # all three, full size
//! cargo bench --bench collector_load -- throughput   # one of: throughput, memory, cpu
//! ```
//! Without `--bench` (as `cargo test --benches` runs it) it does a small smoke run of each.
//! `COLLECTOR_LOAD_DETECTION=off` (or `only`) runs the throughput pipeline without (or only
//! with) the trace detectors, for profiling one side.

#[path = "support/bench_args.rs"]
mod bench_args;
#[path = "support/collector_process.rs"]
mod collector_process;
#[path = "support/synthetic_log.rs"]
mod synthetic_log;

use bench_args::BenchArgs;
use collector_process::{cpu_seconds, free_port, metric, proc_status, wait_for, Collector};
use ingress_tap::collect::detector_thread::DetectorThread;
use ingress_tap::collect::metrics::CollectorMetrics;
use ingress_tap::collect::pipeline::Pipeline;
use ingress_tap_core::collect::aggregate::AggregatorLimits;
use ingress_tap_core::collect::origin::ClientIpPolicy;
use ingress_tap_core::detect::threat_lists::{parse_list, ThreatLists};
use ingress_tap_core::detect::{Detector, TraceConfig};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEED: u64 = 0x1e55_1e55;
/// How often a wait on the collector looks again.
const POLL: Duration = Duration::from_millis(50);

struct Sizes {
    throughput_lines: u64,
    flood_lines: u64,
    follow_rate: u64,
    follow_seconds: u64,
}

fn main() {
    let args = BenchArgs::from_env();
    let full = args.full;
    let wants = |name: &str| args.wants(name);
    let sizes = if full {
        Sizes {
            throughput_lines: 1_000_000,
            flood_lines: 5_000_000,
            follow_rate: 10_000,
            follow_seconds: 20,
        }
    } else {
        Sizes {
            throughput_lines: 20_000,
            flood_lines: 20_000,
            follow_rate: 1_000,
            follow_seconds: 1,
        }
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    println!(
        "collector load harness ({} run, {} cores)",
        if full { "full" } else { "smoke" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wants("throughput") {
        throughput(dir.path(), sizes.throughput_lines, if full { 5 } else { 1 });
    }
    if wants("memory") {
        memory(dir.path(), sizes.flood_lines);
    }
    if wants("cpu") {
        cpu(dir.path(), sizes.follow_rate, sizes.follow_seconds);
    }
}

/// Parse + origin + aggregate over a generated log on one core, against `wc -l` on the same
/// file in the same run. Best of `rounds` for both.
fn throughput(dir: &Path, lines: u64, rounds: u32) {
    let path = dir.join("throughput.log");
    let mut out = BufWriter::new(std::fs::File::create(&path).unwrap());
    synthetic_log::write_log(&mut out, lines, SEED).unwrap();
    out.into_inner().unwrap().sync_all().unwrap();
    let bytes = std::fs::metadata(&path).unwrap().len();

    let mut wc_best = Duration::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        let output = Command::new("wc")
            .arg("-l")
            .arg(&path)
            .output()
            .expect("wc runs");
        wc_best = wc_best.min(started.elapsed());
        let counted: u64 = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert_eq!(counted, lines, "wc -l disagrees with the generator");
    }

    let data = std::fs::read(&path).unwrap();
    // Elapsed time and the process's CPU time (every thread's) for one pass over the log.
    let run = |detector: Option<Detector>| {
        let metrics = Arc::new(CollectorMetrics::default());
        let mut pipeline = Pipeline::new(
            ClientIpPolicy::Reference,
            AggregatorLimits::with_requests_per_interval(10),
            metrics.clone(),
        );
        if let Some(detector) = detector {
            let thread = DetectorThread::spawn(detector, None).expect("a detector thread");
            pipeline = pipeline.with_detector(thread);
        }
        let cpu_started = process_cpu_time();
        let started = Instant::now();
        // In batches as the tailer hands them out (a 64 KiB read is about 340 lines), with
        // one clock reading per batch.
        let mut line_start = 0;
        for (n, end) in memchr::memchr_iter(b'\n', &data).enumerate() {
            if n % 340 == 0 {
                pipeline.tick_clock();
            }
            pipeline.line(&data[line_start..end]);
            line_start = end + 1;
        }
        let report = pipeline.close_interval();
        // Done when the detector has applied every request too.
        let detected = pipeline.detector().map(|detector| {
            detector
                .call(|detector| detector.snapshot())
                .expect("the detector thread runs")
        });
        let elapsed = started.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu_started);
        assert_eq!(
            metrics.records_parsed.get(),
            lines,
            "every generated line parses"
        );
        assert!(!report.connections.is_empty());
        if let Some(suspicious) = detected {
            // Twenty load balancers, all in the sources' summary: their counts are exact.
            let sources: u64 = suspicious.top_sources.iter().map(|e| e.requests).sum();
            assert_eq!(sources, lines, "the detector saw every request");
        }
        Timing { elapsed, cpu }
    };
    let detector = || {
        let mut config = TraceConfig::default();
        config.lists.clear();
        let mut detector = Detector::new(config).unwrap();
        // A realistic threat list: 50,000 networks (the size of a large public blocklist).
        let text: String = (0..50_000u32)
            .map(|i| format!("{}/24\n", std::net::Ipv4Addr::from(0x2d00_0000 + (i << 8))))
            .collect();
        let (list, _) = parse_list("bench", &text);
        detector.replace_lists(ThreatLists::build(vec![list]).unwrap());
        detector
    };
    let mut pipeline_best = Timing::MAX;
    let mut traced_best = Timing::MAX;
    // For profiling one side alone: COLLECTOR_LOAD_DETECTION=off or =only.
    let detection = std::env::var("COLLECTOR_LOAD_DETECTION").unwrap_or_default();
    for _ in 0..rounds {
        if detection != "only" {
            pipeline_best = pipeline_best.best(run(None));
        }
        if detection != "off" {
            traced_best = traced_best.best(run(Some(detector())));
        }
    }
    let per_second = |d: Duration| lines as f64 / d.as_secs_f64();
    let mb_per_second = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let (pipeline_time, traced_time) = (pipeline_best.elapsed, traced_best.elapsed);
    println!(
        "throughput: {lines} lines, {:.1} MB | collector pipeline {:.0} lines/s, {:.0} MB/s ({:.3} s) | wc -l {:.0} lines/s ({:.3} s) | pipeline/wc time ratio {:.2}",
        bytes as f64 / 1e6,
        per_second(pipeline_time),
        mb_per_second(pipeline_time),
        pipeline_time.as_secs_f64(),
        per_second(wc_best),
        wc_best.as_secs_f64(),
        pipeline_time.as_secs_f64() / wc_best.as_secs_f64()
    );
    println!(
        "detection: with trace on (default rules, a 50,000-network threat list, detector on its own thread) {:.0} lines/s ({:.3} s) | cost {:.1}% of the pipeline's lines/s without it",
        per_second(traced_time),
        traced_time.as_secs_f64(),
        100.0 * (traced_time.as_secs_f64() / pipeline_time.as_secs_f64() - 1.0)
    );
    let cpu_ns_per_line = |t: Timing| t.cpu.as_nanos() as f64 / lines as f64;
    println!(
        "detection CPU: {:.0} ns per line with trace on, {:.0} without (all threads) | +{:.1}% CPU",
        cpu_ns_per_line(traced_best),
        cpu_ns_per_line(pipeline_best),
        100.0 * (cpu_ns_per_line(traced_best) / cpu_ns_per_line(pipeline_best) - 1.0)
    );
}

/// One pass: wall-clock time, and CPU time of all the process's threads.
#[derive(Clone, Copy, Debug)]
struct Timing {
    elapsed: Duration,
    cpu: Duration,
}

impl Timing {
    const MAX: Timing = Timing {
        elapsed: Duration::MAX,
        cpu: Duration::MAX,
    };

    /// The faster pass and, separately, the least CPU: both minima over the rounds.
    fn best(self, other: Timing) -> Timing {
        Timing {
            elapsed: self.elapsed.min(other.elapsed),
            cpu: self.cpu.min(other.cpu),
        }
    }
}

fn process_cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or(0),
        u32::try_from(time.tv_nsec).unwrap_or(0),
    )
}

fn start_collector(log: &Path, interval_seconds: u64, requests_per_interval: i64) -> Collector {
    let metrics_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
        .arg("collect")
        .env("INGRESS_LOG_PATH", log)
        .env("INGRESS_LOG_INTERVAL_SECONDS", interval_seconds.to_string())
        .env(
            "INGRESS_LOG_REQUESTS_PER_INTERVAL",
            requests_per_interval.to_string(),
        )
        .env(
            "INGRESS_TAP_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("LOG_LEVEL", "Error")
        .env_remove("FELIX_DIAL_TARGET")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the collector starts");
    let collector = Collector {
        child,
        metrics_port,
    };
    wait_for(Duration::from_secs(30), POLL, || {
        metric(
            collector.metrics_port,
            "ingress_tap_collector_lines_read_total",
        )
        .is_some()
    });
    collector
}

/// Peak RSS of the whole collector while `lines` distinct spoofed X-Forwarded-For values
/// arrive on one connection within one interval.
fn memory(dir: &Path, lines: u64) {
    for requests_per_interval in [10_i64, -1] {
        let log = dir.join(format!("flood{requests_per_interval}.log"));
        std::fs::File::create(&log).unwrap();
        let collector = start_collector(&log, 3600, requests_per_interval);
        let pid = collector.child.id();
        let baseline_kib = proc_status(pid, "VmRSS:").unwrap_or(0);
        let mut out = BufWriter::with_capacity(
            1 << 20,
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        );
        for i in 0..lines {
            // Distinct IPv4 addresses from a counter: 5,000,000 fit in 10.0.0.0/8 twice over.
            let ip = std::net::Ipv4Addr::from(0x0a00_0000_u32 + i as u32);
            writeln!(
                out,
                r#"tigera_secure_ee_ingress: {{"source_port": 40000, "destination_ip": "10.1.1.10", "destination_port": 443, "source_ip": "192.0.2.1", "x-forwarded-for": "{ip}", "x-real-ip": "-"}}"#
            )
            .unwrap();
        }
        out.flush().unwrap();
        drop(out);
        let started = Instant::now();
        wait_for(Duration::from_secs(600), POLL, || {
            metric(
                collector.metrics_port,
                "ingress_tap_collector_records_parsed_total",
            )
            .is_some_and(|n| n as u64 >= lines)
        });
        let elapsed = started.elapsed();
        let peak_kib = proc_status(pid, "VmHWM:").unwrap_or(0);
        println!(
            "memory: {lines} distinct X-Forwarded-For in one interval (INGRESS_LOG_REQUESTS_PER_INTERVAL={requests_per_interval}) | peak RSS {:.1} MiB (idle {:.1} MiB) | read in {:.2} s",
            peak_kib as f64 / 1024.0,
            baseline_kib as f64 / 1024.0,
            elapsed.as_secs_f64()
        );
    }
}

/// The collector's CPU use while the log grows by `rate` lines per second.
fn cpu(dir: &Path, rate: u64, seconds: u64) {
    let log = dir.join("follow.log");
    std::fs::File::create(&log).unwrap();
    let collector = start_collector(&log, 5, 10);
    let pid = collector.child.id();
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let batches_per_second = 100;
    let per_batch = rate / batches_per_second;
    let total = rate * seconds;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(256 * per_batch as usize);
    let mut tick = 0u64;
    while written < total {
        batch.clear();
        for _ in 0..per_batch {
            let ip = std::net::Ipv4Addr::from(0xcb00_7100_u32 + (written % 50_000) as u32);
            writeln!(
                batch,
                r#"tigera_secure_ee_ingress: {{"source_port": {}, "destination_ip": "10.1.1.10", "destination_port": 443, "source_ip": "192.0.2.{}", "x-forwarded-for": "{ip}", "x-real-ip": "-"}}"#,
                40000 + written % 10,
                1 + written % 20
            )
            .unwrap();
            written += 1;
        }
        file.write_all(&batch).unwrap();
        tick += 1;
        let due = Duration::from_millis(tick * 1000 / batches_per_second);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    wait_for(Duration::from_secs(60), POLL, || {
        metric(
            collector.metrics_port,
            "ingress_tap_collector_lines_read_total",
        )
        .is_some_and(|n| n as u64 >= total)
    });
    let wall = started.elapsed().as_secs_f64();
    let used = cpu_seconds(pid) - cpu_before;
    println!(
        "cpu: following {rate} lines/s for {seconds} s | collector CPU {:.3} s over {:.1} s wall = {:.2}% of one core",
        used,
        wall,
        100.0 * used / wall
    );
}
