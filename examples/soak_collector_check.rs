//! The verdict of `scripts/soak-collector.sh`: compares what nginx logged with what reached
//! the recording Felix, and the collector's memory over the run.
//!
//! ```text
//! soak_collector_check --logs DIR --truth FILE --reports FILE --rss FILE \
//!     --steady-from SECONDS --rate REQUESTS_PER_SECOND --seconds SECONDS
//! ```
//!
//! - *Logged*: every (connection, original IP) pair in the rotated log files, `DIR/ingress.log`
//!   and all its numbered generations. The soak client sends a different X-Forwarded-For on
//!   every request, so each pair is one request. The lines are read with a JSON reader, not the
//!   collector's parser, so a parser bug cannot hide itself.
//! - *Delivered*: every pair in the reports Felix accepted, read as Felix reads an `HTTPData`
//!   (X-Real-IP when non-empty, else X-Forwarded-For).
//! - *Truth*: a second access log nginx writes and nobody rotates. Pairs delivered but in no
//!   rotated file must be there: they were written between copytruncate's copy and its
//!   truncate, read by the collector before the truncate, and are in no file afterwards.
//! - *Memory*: `elapsed_seconds pid rss_kib` samples from `--steady-from` (after the last
//!   collector restart and its warm-up) to the end: flat when the second half's peak is within
//!   10 % of the first half's. The fitted trend is printed too.
//!
//! Prints one verdict line and exits 0 only when nothing was lost, doubled or invented, every
//! report's count is exact, and memory is flat.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::Value;

const MARKER: &str = "tigera_secure_ee_ingress:";

/// Memory counts as flat when the peak of the second half of the steady part of the run is
/// at most this much above the peak of its first half. Peaks, not a fitted line: the
/// allocator's footprint moves in steps as intervals fill and empty, and the steps right
/// after a restart would read as a trend on a one-minute run.
const FLAT_PEAK_GROWTH: f64 = 0.10;

/// Connection as Felix keys it, and the original IP carried on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Pair {
    source_ip: IpAddr,
    source_port: u16,
    destination_ip: IpAddr,
    destination_port: u16,
    original_ip: IpAddr,
}

struct Arguments {
    logs: PathBuf,
    truth: PathBuf,
    reports: PathBuf,
    rss: PathBuf,
    steady_from: f64,
    rate: f64,
    seconds: f64,
}

fn arguments() -> anyhow::Result<Arguments> {
    let mut values: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        values.insert(flag, value);
    }
    let mut take = |name: &str| {
        values
            .remove(name)
            .with_context(|| format!("missing {name}"))
    };
    let number = |text: String, name: &str| {
        text.parse::<f64>()
            .with_context(|| format!("{name} must be a number, not {text:?}"))
    };
    Ok(Arguments {
        logs: take("--logs")?.into(),
        truth: take("--truth")?.into(),
        reports: take("--reports")?.into(),
        rss: take("--rss")?.into(),
        steady_from: number(take("--steady-from")?, "--steady-from")?,
        rate: number(take("--rate")?, "--rate")?,
        seconds: number(take("--seconds")?, "--seconds")?,
    })
}

#[derive(Default)]
struct LogFigures {
    lines: u64,
    without_header: u64,
    repeated: u64,
}

fn field<'a>(object: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    object
        .get(name)
        .with_context(|| format!("no field {name} in {object}"))
}

fn ip_field(object: &Value, name: &str) -> anyhow::Result<IpAddr> {
    let text = field(object, name)?
        .as_str()
        .with_context(|| format!("{name} is not a string in {object}"))?;
    text.parse()
        .with_context(|| format!("{name} is not an IP in {object}"))
}

fn port_field(object: &Value, name: &str) -> anyhow::Result<u16> {
    let value = field(object, name)?;
    value
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .with_context(|| format!("{name} is not a port in {object}"))
}

/// Adds the pairs of one nginx log file to `pairs`.
fn read_log(
    path: &Path,
    pairs: &mut HashMap<Pair, u32>,
    figures: &mut LogFigures,
) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let Some(start) = line.find(MARKER) else {
            continue;
        };
        figures.lines += 1;
        let object: Value = serde_json::from_str(line[start + MARKER.len()..].trim())
            .with_context(|| format!("{}:{}: not JSON", path.display(), number + 1))?;
        let forwarded = field(&object, "x-forwarded-for")?.as_str().unwrap_or("-");
        let Ok(original_ip) = forwarded.parse::<IpAddr>() else {
            figures.without_header += 1;
            continue;
        };
        let pair = Pair {
            source_ip: ip_field(&object, "source_ip")?,
            source_port: port_field(&object, "source_port")?,
            destination_ip: ip_field(&object, "destination_ip")?,
            destination_port: port_field(&object, "destination_port")?,
            original_ip,
        };
        let count = pairs.entry(pair).or_default();
        *count += 1;
        if *count > 1 {
            figures.repeated += 1;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Delivered {
    pairs: HashMap<Pair, u32>,
    reports: u64,
    entries: u64,
    inexact_reports: u64,
}

/// Felix's reading of an `HTTPData`: X-Real-IP when non-empty, else X-Forwarded-For.
fn felix_reads(entry: &Value) -> anyhow::Result<IpAddr> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or("");
    let chosen = match text("x_real_ip") {
        "" => text("x_forwarded_for"),
        real => real,
    };
    chosen
        .parse()
        .with_context(|| format!("Felix cannot read an IP from {entry}"))
}

fn read_reports(path: &Path) -> anyhow::Result<Delivered> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut delivered = Delivered::default();
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let report: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: not JSON: {line}", path.display()))?;
        delivered.reports += 1;
        let entries = field(&report, "http_data")?
            .as_array()
            .with_context(|| format!("http_data is not a list in {report}"))?;
        let value = report
            .pointer("/stats/0/value")
            .and_then(Value::as_u64)
            .with_context(|| format!("no INGRESS_DATA value in {report}"))?;
        if usize::try_from(value).ok() != Some(entries.len()) {
            delivered.inexact_reports += 1;
        }
        let source_ip = ip_field(&report, "src_ip")?;
        let source_port = port_field(&report, "src_port")?;
        let destination_ip = ip_field(&report, "dst_ip")?;
        let destination_port = port_field(&report, "dst_port")?;
        for entry in entries {
            delivered.entries += 1;
            let pair = Pair {
                source_ip,
                source_port,
                destination_ip,
                destination_port,
                original_ip: felix_reads(entry)?,
            };
            *delivered.pairs.entry(pair).or_default() += 1;
        }
    }
    Ok(delivered)
}

struct Memory {
    min_kib: u64,
    max_kib: u64,
    last_kib: u64,
    samples: usize,
    slope_kib_per_minute: f64,
    /// Peak of the steady part's second half over the peak of its first half, minus one.
    peak_growth: f64,
}

fn read_memory(path: &Path, steady_from: f64) -> anyhow::Result<Memory> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut samples = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [elapsed, _pid, kib] = fields.as_slice() else {
            continue;
        };
        let (Ok(elapsed), Ok(kib)) = (elapsed.parse::<f64>(), kib.parse::<u64>()) else {
            continue;
        };
        samples.push((elapsed, kib));
    }
    let (Some(min_kib), Some(max_kib), Some(&(_, last_kib))) = (
        samples.iter().map(|(_, kib)| *kib).min(),
        samples.iter().map(|(_, kib)| *kib).max(),
        samples.last(),
    ) else {
        bail!("no memory samples in {}", path.display());
    };
    let steady: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(elapsed, _)| *elapsed >= steady_from)
        .map(|&(elapsed, kib)| (elapsed, kib as f64))
        .collect();
    if steady.len() < 10 {
        bail!(
            "only {} memory samples after {steady_from} s; the trend needs at least 10",
            steady.len()
        );
    }
    let n = steady.len() as f64;
    let mean_t = steady.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mean_kib = steady.iter().map(|(_, kib)| kib).sum::<f64>() / n;
    let covariance: f64 = steady
        .iter()
        .map(|(t, kib)| (t - mean_t) * (kib - mean_kib))
        .sum();
    let variance: f64 = steady.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    let slope_per_second = if variance > 0.0 {
        covariance / variance
    } else {
        0.0
    };
    let (first, last) = (
        steady.first().map_or(0.0, |(t, _)| *t),
        steady.last().map_or(0.0, |(t, _)| *t),
    );
    let middle = (first + last) / 2.0;
    let peak = |in_half: &dyn Fn(f64) -> bool| {
        steady
            .iter()
            .filter(|(t, _)| in_half(*t))
            .map(|(_, kib)| *kib)
            .fold(0.0, f64::max)
    };
    let first_peak = peak(&|t| t < middle);
    let second_peak = peak(&|t| t >= middle);
    Ok(Memory {
        min_kib,
        max_kib,
        last_kib,
        samples: samples.len(),
        slope_kib_per_minute: slope_per_second * 60.0,
        peak_growth: if first_peak > 0.0 {
            second_peak / first_peak - 1.0
        } else {
            0.0
        },
    })
}

fn generations(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let numbered = name
            .strip_prefix("ingress.log.")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if name == "ingress.log" || numbered {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn run(arguments: Arguments) -> anyhow::Result<bool> {
    let files = generations(&arguments.logs)?;
    let mut logged = HashMap::new();
    let mut figures = LogFigures::default();
    for file in &files {
        read_log(file, &mut logged, &mut figures)?;
    }
    let mut truth = HashMap::new();
    let mut truth_figures = LogFigures::default();
    read_log(&arguments.truth, &mut truth, &mut truth_figures)?;
    let delivered = read_reports(&arguments.reports)?;
    let memory = read_memory(&arguments.rss, arguments.steady_from)?;

    let lost: Vec<&Pair> = logged
        .keys()
        .filter(|pair| !delivered.pairs.contains_key(*pair))
        .collect();
    let doubled = delivered.pairs.values().filter(|count| **count > 1).count();
    let extra: Vec<&Pair> = delivered
        .pairs
        .keys()
        .filter(|pair| !logged.contains_key(*pair))
        .collect();
    let unexplained: Vec<&&Pair> = extra
        .iter()
        .filter(|pair| !truth.contains_key(**pair))
        .collect();
    let in_no_file = truth
        .keys()
        .filter(|pair| !logged.contains_key(*pair))
        .count();

    for pair in lost.iter().take(5) {
        eprintln!("lost: {pair:?}");
    }
    for pair in unexplained.iter().take(5) {
        eprintln!("delivered but never logged: {pair:?}");
    }
    let flat = memory.peak_growth <= FLAT_PEAK_GROWTH;
    let pass = lost.is_empty()
        && doubled == 0
        && unexplained.is_empty()
        && delivered.inexact_reports == 0
        && figures.repeated == 0
        && flat;
    println!(
        "soak-collector: {} rate={:.0} req/s for {:.0} s; logged={} (in {} files, {} without header) \
         delivered={} in {} reports; lost={} doubled={} invented={} inexact_reports={}; \
         copytruncate window: {} lines in no file, {} of them delivered; \
         collector RSS min/max/last={}/{}/{} KiB over {} samples; steady part: second-half peak {:+.1}% \
         over first-half peak, fitted trend {:+.0} KiB/min ({})",
        if pass { "PASS" } else { "FAIL" },
        arguments.rate,
        arguments.seconds,
        thousands(logged.len() as u64),
        files.len(),
        figures.without_header,
        thousands(delivered.entries),
        thousands(delivered.reports),
        lost.len(),
        doubled,
        unexplained.len(),
        delivered.inexact_reports,
        in_no_file,
        extra.len() - unexplained.len(),
        memory.min_kib,
        memory.max_kib,
        memory.last_kib,
        memory.samples,
        memory.peak_growth * 100.0,
        memory.slope_kib_per_minute,
        if flat { "flat" } else { "growing" },
    );
    if figures.repeated > 0 {
        eprintln!(
            "the log repeats {} pairs: the load script must send a new X-Forwarded-For per request",
            figures.repeated
        );
    }
    Ok(pass)
}

fn main() -> ExitCode {
    let arguments = match arguments() {
        Ok(arguments) => arguments,
        Err(err) => {
            eprintln!("{err:#}");
            return ExitCode::from(2);
        }
    };
    match run(arguments) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("soak-collector: FAIL: {err:#}");
            ExitCode::FAILURE
        }
    }
}
