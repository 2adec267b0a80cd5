//! Load harness for `ingress-tap block` (not a test): the binary as its own process, pinned to
//! one core, fed a large input on stdin, for every target. Reported per run: exit status, CPU
//! time (user + system), wall time and peak RSS (`ru_maxrss` of the child, from `wait4`); and,
//! in the same run, `wc -l` over the same file and a one-address run as baselines.
//!
//! ```text
//! cargo bench --bench block_scale                 # 1,000,000 lines, 3 rounds
//! cargo bench --bench block_scale -- events       # one of: events, list
//! ```
//! Without `--bench` (as `cargo test --benches` runs it) it does a small smoke run of each.
//!
//! Workloads:
//! - `events`: collector events (JSON lines) naming 5,000 distinct public addresses over and
//!   over; every target must write its objects.
//! - `list`: a threat list of distinct /32s. nftables takes it with `--force`; the other
//!   targets refuse it (over the entry cap), and what is measured is how much reading it costs
//!   before the refusal.

#[path = "support/bench_args.rs"]
mod bench_args;

use bench_args::BenchArgs;
use ingress_tap_core::detect::events::{
    Event, EventConnection, EventDetails, EventKind, Field, EVENT_SCHEMA_VERSION,
};
use ingress_tap_core::model::Provenance;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;
use wait4::Wait4;

const TARGETS: [&str; 4] = ["calico", "ingress-nginx", "nginx-inc", "nftables"];
const DISTINCT_EVENT_ADDRESSES: u32 = 5_000;

fn main() {
    let args = BenchArgs::from_env();
    let full = args.full;
    let wants = |name: &str| args.wants(name);
    let (lines, rounds) = if full { (1_000_000, 3) } else { (2_000, 1) };
    let dir = tempfile::tempdir().expect("a temp dir");
    println!(
        "block scale harness ({} run: {lines} lines, best of {rounds}; binary {})",
        if full { "full" } else { "smoke" },
        env!("CARGO_BIN_EXE_ingress-tap")
    );
    let baseline = run(
        &["--target", "nftables", "--now", NOW, "203.0.113.7"],
        None,
        rounds,
    );
    println!("baseline: one address, nftables | {baseline}");
    if wants("events") {
        let file = dir.path().join("events.jsonl");
        write_events(&file, lines);
        println!(
            "events: {lines} lines over {} addresses ({:.1} MiB) | wc -l {}",
            lines.min(u64::from(DISTINCT_EVENT_ADDRESSES)),
            mib(std::fs::metadata(&file).unwrap().len()),
            wc(&file, rounds)
        );
        for target in TARGETS {
            let measured = run(
                &["--target", target, "--now", NOW, "--from", "-"],
                Some(&file),
                rounds,
            );
            println!("events {target:>13} | {measured}");
            assert!(measured.success, "{target} failed on events");
        }
    }
    if wants("list") {
        let file = dir.path().join("list.txt");
        write_list(&file, lines);
        println!(
            "list: {lines} distinct /32s ({:.1} MiB) | wc -l {}",
            mib(std::fs::metadata(&file).unwrap().len()),
            wc(&file, rounds)
        );
        for target in TARGETS {
            let mut args = vec!["--target", target, "--now", NOW, "--from", "-"];
            if target == "nftables" {
                args.push("--force");
            }
            let measured = run(&args, Some(&file), rounds);
            println!("list   {target:>13} | {measured}");
            assert_eq!(
                measured.success,
                target == "nftables" || lines <= 10_000,
                "{target} on the list"
            );
        }
    }
}

const NOW: &str = "2026-01-01T10:00:00Z";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A public address per index, from 198.18.0.0/15 and 203.0.113.0/24's neighbours.
fn address(index: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(11, 0, 0, 0)) + index)
}

fn write_events(path: &Path, lines: u64) {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..lines {
        let event = Event {
            schema_version: EVENT_SCHEMA_VERSION,
            time: format!("2026-01-01T09:{:02}:{:02}.000Z", (i / 60) % 60, i % 60),
            kind: EventKind::VolumeThreshold,
            name: "burst".to_owned(),
            ip: IpAddr::V4(address((i % u64::from(DISTINCT_EVENT_ADDRESSES)) as u32)),
            field: Field::Source,
            provenance: Some(Provenance::Connection),
            connection: EventConnection {
                src_ip: "192.0.2.10".parse().unwrap(),
                src_port: 40_000,
                dst_ip: "192.0.2.20".parse().unwrap(),
                dst_port: 443,
                protocol: "tcp".to_owned(),
            },
            details: EventDetails::default(),
        };
        out.write_all(event.to_json_line().unwrap().as_bytes())
            .unwrap();
    }
    out.flush().unwrap();
}

fn write_list(path: &Path, lines: u64) {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "# generated").unwrap();
    for i in 0..lines {
        writeln!(out, "{}", address(i as u32)).unwrap();
    }
    out.flush().unwrap();
}

/// The best of several runs, and how far the others were from it.
struct Measured {
    success: bool,
    cpu: Vec<f64>,
    wall: Vec<f64>,
    peak_kib: Vec<i64>,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spread = |values: &[f64]| {
            let best = values.iter().copied().fold(f64::INFINITY, f64::min);
            let worst = values.iter().copied().fold(0.0, f64::max);
            (best, worst)
        };
        let (cpu, cpu_worst) = spread(&self.cpu);
        let (wall, wall_worst) = spread(&self.wall);
        let peak = self.peak_kib.iter().copied().min().unwrap_or(0);
        let peak_worst = self.peak_kib.iter().copied().max().unwrap_or(0);
        write!(
            f,
            "{} | cpu {cpu:.2} s (worst {cpu_worst:.2}) | wall {wall:.2} s (worst {wall_worst:.2}) | peak RSS {:.1} MiB (worst {:.1})",
            if self.success { "ok     " } else { "refused" },
            peak as f64 / 1024.0,
            peak_worst as f64 / 1024.0,
        )
    }
}

/// Runs the command `rounds` times with `stdin` (pinned to CPU 0 when `taskset` exists).
fn measure(command: &mut dyn FnMut() -> Command, rounds: u32) -> Measured {
    let mut measured = Measured {
        success: true,
        cpu: Vec::new(),
        wall: Vec::new(),
        peak_kib: Vec::new(),
    };
    for _ in 0..rounds {
        let started = Instant::now();
        let mut child = command().spawn().expect("start the measured process");
        // wait4 is the one call that gives a child's own peak RSS and CPU time.
        let used = child.wait4().expect("wait4 for the measured process");
        let wall = started.elapsed().as_secs_f64();
        measured
            .cpu
            .push((used.rusage.utime + used.rusage.stime).as_secs_f64());
        measured.wall.push(wall);
        measured
            .peak_kib
            .push(i64::try_from(used.rusage.maxrss / 1024).unwrap_or(i64::MAX));
        measured.success &= used.status.success();
    }
    measured
}

fn pinned(program: &str) -> Command {
    if Path::new("/usr/bin/taskset").exists() {
        let mut command = Command::new("/usr/bin/taskset");
        command.args(["-c", "0", program]);
        command
    } else {
        Command::new(program)
    }
}

fn run(args: &[&str], stdin: Option<&Path>, rounds: u32) -> Measured {
    measure(
        &mut || {
            let mut command = pinned(env!("CARGO_BIN_EXE_ingress-tap"));
            command
                .arg("block")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match stdin {
                Some(path) => command.stdin(std::fs::File::open(path).unwrap()),
                None => command.stdin(Stdio::null()),
            };
            command
        },
        rounds,
    )
}

fn wc(path: &Path, rounds: u32) -> Measured {
    measure(
        &mut || {
            let mut command = pinned("/usr/bin/wc");
            command
                .arg("-l")
                .stdin(std::fs::File::open(path).unwrap())
                .stdout(Stdio::null());
            command
        },
        rounds,
    )
}
