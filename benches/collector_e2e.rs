//! End-to-end load harness for the collector (not a test): the release binary as its own
//! process, following a log file written in large appends and reporting over gRPC on a Unix
//! socket to a Felix server in this process that answers every report (or answers slowly).
//! For each scenario it prints the collector's CPU seconds (utime + stime of the whole process,
//! every thread) from ready to done, its peak RSS (VmHWM), and what Felix received.
//!
//! ```text
//! cargo bench --bench collector_e2e                       # every scenario, full size
//! cargo bench --bench collector_e2e -- default nocap      # some of: default nocap slow slow-default flood
//! ```
//! Without `--bench` (as `cargo test --benches` runs it) it does a small smoke run of the
//! first two. `COLLECTOR_E2E_LIMIT=<bytes>` passes `INGRESS_TAP_MEMORY_LIMIT` to the collector;
//! `COLLECTOR_E2E_BIN=<path>` runs another build of the binary (an older one, for a baseline).
//!
//! Traffic: 2,000 connections (200 load-balancer peers × 10 source ports) carrying requests
//! from 50,000 client addresses (one in twenty IPv6), 1 s intervals, tracing on (the default).
//! The flood puts a new address on every line.

#[path = "support/bench_args.rs"]
mod bench_args;
#[path = "support/collector_process.rs"]
mod collector_process;
#[path = "support/synthetic_log.rs"]
mod synthetic_log;

use bench_args::BenchArgs;
use collector_process::{
    cpu_seconds, free_port, metric, metrics_text, proc_status, wait_for, Collector,
};
use ingress_tap_test_support::felix_recorder::{serve, Recorder, ReportTotals};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use synthetic_log::splitmix::SplitMix64;

const PEERS: u64 = 200;
const PORTS_PER_PEER: u64 = 10;
const CLIENTS: u64 = 50_000;
/// How often a wait on the collector looks again.
const POLL: Duration = Duration::from_millis(20);
/// Bytes per append: the writer hands the log over in large blocks, as a busy nginx's
/// buffered access log does.
const APPEND_BYTES: usize = 4 << 20;
/// How long a slow Felix holds each answer.
const SLOW_FELIX: Duration = Duration::from_millis(5);

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    requests_per_interval: i64,
    lines: u64,
    flood: bool,
    felix_delay: Duration,
}

fn main() {
    let args = BenchArgs::from_env();
    let full = args.full;
    let lines = if full { 1_000_000 } else { 20_000 };
    let scenarios = [
        Scenario {
            name: "default",
            requests_per_interval: 10,
            lines,
            flood: false,
            felix_delay: Duration::ZERO,
        },
        Scenario {
            name: "nocap",
            requests_per_interval: -1,
            lines,
            flood: false,
            felix_delay: Duration::ZERO,
        },
        Scenario {
            name: "slow",
            requests_per_interval: -1,
            lines,
            flood: false,
            felix_delay: SLOW_FELIX,
        },
        Scenario {
            name: "slow-default",
            requests_per_interval: 10,
            lines,
            flood: false,
            felix_delay: SLOW_FELIX,
        },
        Scenario {
            name: "flood",
            requests_per_interval: -1,
            lines: if full { 5_000_000 } else { 20_000 },
            flood: true,
            felix_delay: Duration::ZERO,
        },
    ];
    println!(
        "collector end-to-end harness ({} run, {} cores)",
        if full { "full" } else { "smoke" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the Felix server");
    for scenario in scenarios {
        let wanted = if args.only.is_empty() {
            full || matches!(scenario.name, "default" | "nocap")
        } else {
            args.names(scenario.name)
        };
        if wanted {
            run(&runtime, scenario);
        }
    }
}

fn run(runtime: &tokio::runtime::Runtime, scenario: Scenario) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = dir.path().join("ingress.log");
    let socket = dir.path().join("felix.sock");
    std::fs::File::create(&log).unwrap();

    let recorder = Recorder::counting();
    recorder.set_delay(scenario.felix_delay);
    let (stop_felix, felix_stopped) = tokio::sync::oneshot::channel::<()>();
    let served = (socket.clone(), recorder.clone());
    let server = runtime.spawn(async move {
        let (socket, recorder) = served;
        serve(&socket, recorder, async {
            let _ = felix_stopped.await;
        })
        .await
    });
    wait_for(Duration::from_secs(10), POLL, || socket.exists());

    let collector = start_collector(&log, &socket, scenario.requests_per_interval);
    let pid = collector.child.id();
    let port = collector.metrics_port;
    let idle_kib = proc_status(pid, "VmRSS:").unwrap_or(0);
    let cpu_ready = cpu_seconds(pid);
    let started = Instant::now();

    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut block = Vec::with_capacity(APPEND_BYTES + 512);
    let mut rng = SplitMix64(0x1e55_e2e0);
    for n in 0..scenario.lines {
        write_line(&mut block, n, scenario.flood, &mut rng);
        if block.len() >= APPEND_BYTES {
            file.write_all(&block).unwrap();
            block.clear();
        }
    }
    file.write_all(&block).unwrap();
    drop(file);
    let written = started.elapsed();

    wait_for(Duration::from_secs(900), POLL, || {
        metric(port, "ingress_tap_collector_records_parsed_total")
            .is_some_and(|n| n as u64 >= scenario.lines)
    });
    let parsed = started.elapsed();
    // Done when two more intervals have closed and Felix has taken everything queued.
    let intervals = metric(port, "ingress_tap_collector_intervals_total").unwrap_or(0.0);
    wait_for(Duration::from_secs(900), POLL, || {
        metric(port, "ingress_tap_collector_intervals_total").is_some_and(|n| n >= intervals + 2.0)
            && metric(port, "ingress_tap_collector_queue_depth") == Some(0.0)
    });
    let done = started.elapsed();
    let cpu = cpu_seconds(pid) - cpu_ready;
    let peak_kib = proc_status(pid, "VmHWM:").unwrap_or(0);
    let dropped: Vec<(String, f64)> = [
        "ingress_tap_collector_reports_dropped_total",
        "ingress_tap_collector_records_over_connection_cap_total",
        "ingress_tap_collector_http_data_dropped_total",
    ]
    .iter()
    .flat_map(|name| metric_family(port, name))
    .collect();
    drop(collector);
    let _ = stop_felix.send(());
    let _ = runtime.block_on(server);

    let totals: ReportTotals = recorder.totals();
    println!(
        "{}: INGRESS_LOG_REQUESTS_PER_INTERVAL={}, {} lines{}, Felix {} | CPU {:.2} s = {:.0} lines per CPU-second | peak RSS {:.1} MiB (idle {:.1} MiB) | written in {:.2} s, parsed in {:.2} s, done in {:.2} s",
        scenario.name,
        scenario.requests_per_interval,
        scenario.lines,
        if scenario.flood { " each from a new address" } else { "" },
        if scenario.felix_delay.is_zero() {
            "answering at once".to_owned()
        } else {
            format!("holding each answer {} ms", scenario.felix_delay.as_millis())
        },
        cpu,
        scenario.lines as f64 / cpu.max(0.01),
        peak_kib as f64 / 1024.0,
        idle_kib as f64 / 1024.0,
        written.as_secs_f64(),
        parsed.as_secs_f64(),
        done.as_secs_f64(),
    );
    let drops: Vec<String> = dropped
        .iter()
        .map(|(series, value)| format!("{series} {value}"))
        .collect();
    println!(
        "  Felix received {} messages, {} http_data entries (at most {} in one message, largest message {} bytes), INGRESS_DATA sum {} | {}",
        totals.messages,
        totals.http_data,
        totals.largest_http_data,
        totals.largest_encoded_bytes,
        totals.ingress_data,
        if drops.is_empty() { "nothing dropped".to_owned() } else { drops.join(", ") }
    );
}

fn write_line(out: &mut Vec<u8>, n: u64, flood: bool, rng: &mut SplitMix64) {
    let peer = rng.below(PEERS);
    let port = 40_000 + rng.below(PORTS_PER_PEER);
    let client = if flood {
        // 5,000,000 distinct addresses fit in 10.0.0.0/8 twice over.
        let ip = 0x0a00_0000_u32.wrapping_add(n as u32);
        std::net::Ipv4Addr::from(ip).to_string()
    } else {
        synthetic_log::client_address(rng.below(CLIENTS) as u32)
    };
    let (xff, xri) = match rng.below(10) {
        0..=6 => (client, "-".to_owned()),
        7 => (
            format!("{client}, 10.96.0.{}", 1 + rng.below(250)),
            "-".to_owned(),
        ),
        8 => ("10.96.1.1".to_owned(), client),
        _ => ("-".to_owned(), "-".to_owned()),
    };
    let _ = writeln!(
        out,
        r#"tigera_secure_ee_ingress: {{"source_port": {port}, "destination_ip": "10.244.1.17", "destination_port": 443, "source_ip": "10.0.{}.{}", "x-forwarded-for": "{xff}", "x-real-ip": "{xri}"}}"#,
        peer / 100,
        10 + peer % 100
    );
}

fn start_collector(log: &Path, socket: &Path, requests_per_interval: i64) -> Collector {
    let metrics_port = free_port();
    let binary = std::env::var_os("COLLECTOR_E2E_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ingress-tap").into());
    let mut command = Command::new(binary);
    command
        .arg("collect")
        .env("INGRESS_LOG_PATH", log)
        .env("INGRESS_LOG_INTERVAL_SECONDS", "1")
        .env(
            "INGRESS_LOG_REQUESTS_PER_INTERVAL",
            requests_per_interval.to_string(),
        )
        .env("FELIX_DIAL_TARGET", socket)
        .env(
            "INGRESS_TAP_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("LOG_LEVEL", "Error")
        .env_remove("INGRESS_TAP_TRACE")
        .env_remove("INGRESS_TAP_MEMORY_LIMIT")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Ok(limit) = std::env::var("COLLECTOR_E2E_LIMIT") {
        command.env("INGRESS_TAP_MEMORY_LIMIT", limit);
    }
    let child = command.spawn().expect("the collector starts");
    let collector = Collector {
        child,
        metrics_port,
    };
    wait_for(Duration::from_secs(30), POLL, || {
        metric(metrics_port, "ingress_tap_collector_lines_read_total").is_some()
    });
    collector
}

/// Every non-zero series of a family, labels included.
fn metric_family(port: u16, name: &str) -> Vec<(String, f64)> {
    let Some(text) = metrics_text(port) else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| {
            line.starts_with(name) && matches!(line.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            (value > 0.0).then(|| (series.to_owned(), value))
        })
        .collect()
}
