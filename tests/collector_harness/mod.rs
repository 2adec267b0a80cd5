//! Shared pieces of the collector's end-to-end tests: the `ingress-tap collect` binary as a real
//! child process (so signals, exits and restarts are real), a recording Felix on a Unix socket,
//! log lines in the spec's template, and reports reduced to what the contract says about them.
//!
//! Every wait here is on a condition with a deadline; nothing sleeps and hopes.
#![allow(dead_code)]

pub mod nginx;
#[path = "../nginx_process/mod.rs"]
pub mod nginx_process;
pub mod traced;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ingress_tap_felix_proto::{protocol, DataplaneStats, HttpData};
use ingress_tap_test_support::felix_recorder::{serve, Recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for anything that waits on the collector, Felix or nginx; a healthy run
/// needs a small fraction of it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How often conditions on other processes are checked.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Files and ports

/// A port nobody listens on right now. The kernel picks it; the small window before the child
/// binds it is accepted, since the alternative (parsing the child's output) is no safer.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("ephemeral port").port()
}

/// Appends `bytes` with one write on a fresh descriptor, as nginx writes one line: a reader
/// sees all of it or none of it.
pub fn append(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    file.write_all(bytes)
        .unwrap_or_else(|err| panic!("append to {}: {err}", path.display()));
}

/// Joins lines into one buffer, each newline-terminated, for a single [`append`].
pub fn joined(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

/// `<path>.<n>`, logrotate's name for the n-th older generation.
pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------------------
// Log lines

/// One line exactly as the spec's template renders it; `xff` and `xri` are inserted as nginx
/// would print them (`-` for an absent header).
pub fn template_line(
    source: (&str, u16),
    destination: (&str, u16),
    xff: &str,
    xri: &str,
) -> String {
    let (source_ip, source_port) = source;
    let (destination_ip, destination_port) = destination;
    format!(
        r#"tigera_secure_ee_ingress: {{"source_port": {source_port}, "destination_ip": "{destination_ip}", "destination_port": {destination_port}, "source_ip": "{source_ip}", "x-forwarded-for": "{xff}", "x-real-ip": "{xri}"}}"#
    )
}

/// A line on the spec's reference connection 10.1.10.1:`source_port` -> 10.1.1.10:`destination_port`.
pub fn reference_line(source_port: u16, destination_port: u16, xff: &str, xri: &str) -> String {
    template_line(
        ("10.1.10.1", source_port),
        ("10.1.1.10", destination_port),
        xff,
        xri,
    )
}

/// The n-th address of a numbered sequence inside 10.0.0.0/8 (n < 2^24), so every record of a
/// stream can carry an original IP of its own.
pub fn numbered_ip(n: u32) -> String {
    let [_, b, c, d] = n.to_be_bytes();
    format!("10.{b}.{c}.{d}")
}

// ---------------------------------------------------------------------------------------------
// Reports as the contract describes them

/// A connection 5-tuple as Felix receives it (the protocol is checked to be "tcp" separately).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub src_ip: String,
    pub src_port: i32,
    pub dst_ip: String,
    pub dst_port: i32,
}

impl Flow {
    pub fn new(src: (&str, u16), dst: (&str, u16)) -> Flow {
        Flow {
            src_ip: src.0.to_owned(),
            src_port: i32::from(src.1),
            dst_ip: dst.0.to_owned(),
            dst_port: i32::from(dst.1),
        }
    }

    /// The spec's reference connection with the given ports.
    pub fn reference(source_port: u16, destination_port: u16) -> Flow {
        Flow::new(("10.1.10.1", source_port), ("10.1.1.10", destination_port))
    }
}

/// What one report says: its flow, its INGRESS_DATA value and its (x_forwarded_for,
/// x_real_ip) pairs, sorted because the spec lets them come in any order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Observed {
    pub flow: Flow,
    pub value: i64,
    pub http_data: Vec<(String, String)>,
}

impl Observed {
    pub fn new(flow: Flow, value: i64, http_data: &[(&str, &str)]) -> Observed {
        let mut http_data: Vec<(String, String)> = http_data
            .iter()
            .map(|(xff, xri)| ((*xff).to_owned(), (*xri).to_owned()))
            .collect();
        http_data.sort();
        Observed {
            flow,
            value,
            http_data,
        }
    }
}

/// Checks the parts of a report the spec fixes for every ingress report, then reduces it to
/// an [`Observed`]. The enum values are compared as wire numbers from the spec, not through
/// the generated types, so a renumbered `.proto` fails here.
pub fn observe(report: &DataplaneStats) -> Observed {
    let protocol_name = match report
        .protocol
        .as_ref()
        .and_then(|p| p.number_or_name.as_ref())
    {
        Some(protocol::NumberOrName::Name(name)) => name.as_str(),
        other => panic!("protocol must be sent by name, got {other:?} in {report:?}"),
    };
    assert_eq!(protocol_name, "tcp", "{report:?}");
    assert_eq!(
        report.action, 0,
        "report action must be ALLOWED: {report:?}"
    );
    assert!(report.rules.is_empty(), "rules must stay empty: {report:?}");
    assert_eq!(
        report.stats.len(),
        1,
        "exactly one statistic per report: {report:?}"
    );
    let statistic = &report.stats[0];
    assert_eq!(statistic.direction, 0, "direction IN: {report:?}");
    assert_eq!(statistic.relativity, 1, "relativity DELTA: {report:?}");
    assert_eq!(statistic.kind, 4, "kind INGRESS_DATA: {report:?}");
    assert_eq!(statistic.action, 0, "statistic action ALLOWED: {report:?}");
    let mut http_data = Vec::with_capacity(report.http_data.len());
    for entry in &report.http_data {
        let only_origin = HttpData {
            x_forwarded_for: entry.x_forwarded_for.clone(),
            x_real_ip: entry.x_real_ip.clone(),
            ..HttpData::default()
        };
        assert_eq!(
            entry, &only_origin,
            "HTTPData must carry only the two headers (type empty): {report:?}"
        );
        assert!(
            felix_reads(entry).is_some(),
            "Felix could not read an original IP from {entry:?}"
        );
        http_data.push((entry.x_forwarded_for.clone(), entry.x_real_ip.clone()));
    }
    http_data.sort();
    Observed {
        flow: Flow {
            src_ip: report.src_ip.clone(),
            src_port: report.src_port,
            dst_ip: report.dst_ip.clone(),
            dst_port: report.dst_port,
        },
        value: statistic.value,
        http_data,
    }
}

/// Every report observed, sorted so comparisons ignore the order of connections.
pub fn observe_all(reports: &[DataplaneStats]) -> Vec<Observed> {
    let mut observed: Vec<Observed> = reports.iter().map(observe).collect();
    observed.sort();
    observed
}

/// The original IP Felix takes from an entry: X-Real-IP when non-empty, else X-Forwarded-For,
/// parsed as one bare address (no list, no port); `None` is what Felix drops with a warning.
pub fn felix_reads(entry: &HttpData) -> Option<IpAddr> {
    let chosen = if entry.x_real_ip.is_empty() {
        &entry.x_forwarded_for
    } else {
        &entry.x_real_ip
    };
    chosen.parse().ok()
}

/// Waits until Felix has read `wanted` in some report; whether it did.
pub async fn felix_heard(recorder: &Recorder, wanted: IpAddr) -> bool {
    recorder
        .wait_until(DEADLINE, |reports| {
            reports
                .iter()
                .flat_map(|r| r.http_data.iter())
                .any(|entry| felix_reads(entry) == Some(wanted))
        })
        .await
}

/// (source port, IP Felix reads) for every http_data entry of `reports`, in arrival order:
/// "presence at Felix" of numbered records.
pub fn delivered_pairs(reports: &[DataplaneStats]) -> Vec<(i32, String)> {
    reports
        .iter()
        .flat_map(|report| {
            report.http_data.iter().map(move |entry| {
                let ip = felix_reads(entry)
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| format!("unreadable {entry:?}"));
                (report.src_port, ip)
            })
        })
        .collect()
}

/// Pairs delivered more than once, with their counts.
pub fn duplicates(pairs: &[(i32, String)]) -> BTreeMap<(i32, String), usize> {
    let mut counts: BTreeMap<(i32, String), usize> = BTreeMap::new();
    for pair in pairs {
        *counts.entry(pair.clone()).or_default() += 1;
    }
    counts.retain(|_, count| *count > 1);
    counts
}

// ---------------------------------------------------------------------------------------------
// A recording Felix

/// The Felix side: a PolicySync server on a Unix socket that records every report. It can be
/// stopped and started again on the same path with the same record, like a restarting Felix.
pub struct FakeFelix {
    pub recorder: Recorder,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeFelix {
    /// Starts serving on `socket` and returns once the socket accepts connections.
    pub async fn start(socket: &Path, recorder: Recorder) -> FakeFelix {
        let (stop, stopped) = oneshot::channel::<()>();
        let path = socket.to_owned();
        let served = recorder.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(err) = serve(&path, served, shutdown).await {
                panic!("the recording Felix failed: {err}");
            }
        });
        let felix = FakeFelix {
            recorder,
            socket: socket.to_owned(),
            stop: Some(stop),
            task: Some(task),
        };
        // A stale socket file from an earlier run refuses connections, so connecting (not
        // the file's existence) tells that this server is up.
        let up = wait_for(DEADLINE, || async {
            tokio::net::UnixStream::connect(socket).await.is_ok()
        })
        .await;
        assert!(
            up,
            "the recording Felix did not start on {}",
            socket.display()
        );
        felix
    }

    /// Stops serving (in-flight calls are answered first) and waits until the server is gone.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(DEADLINE, task).await.is_err() {
                abort.abort();
            }
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for FakeFelix {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The collector as a child process

/// How to start `ingress-tap collect`.
#[derive(Clone, Debug)]
pub struct CollectorSettings {
    pub log_path: PathBuf,
    /// `None`: reports go to stdout.
    pub felix_socket: Option<PathBuf>,
    pub interval_seconds: u64,
    pub requests_per_interval: i64,
    /// Where the child's stdout and stderr go, for failure messages.
    pub output_path: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

impl CollectorSettings {
    /// The usual end-to-end layout in `dir`: `ingress.log`, `felix.sock`, 1 s intervals.
    pub fn in_dir(dir: &Path, requests_per_interval: i64) -> CollectorSettings {
        CollectorSettings {
            log_path: dir.join("ingress.log"),
            felix_socket: Some(dir.join("felix.sock")),
            interval_seconds: 1,
            requests_per_interval,
            output_path: dir.join("collector.out"),
            extra_env: Vec::new(),
        }
    }
}

/// A running `ingress-tap collect`; stopped with SIGTERM (then killed) when dropped.
pub struct Collector {
    child: Option<Child>,
    pub metrics_addr: SocketAddr,
    output_path: PathBuf,
}

impl Collector {
    /// Starts the binary and waits until its health endpoint answers.
    pub async fn start(settings: &CollectorSettings) -> Collector {
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.output_path)
            .expect("collector output file");
        let errors = output.try_clone().expect("collector output file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ingress-tap"));
        command
            .arg("collect")
            .env_clear()
            .env("INGRESS_LOG_PATH", &settings.log_path)
            .env(
                "INGRESS_LOG_INTERVAL_SECONDS",
                settings.interval_seconds.to_string(),
            )
            .env(
                "INGRESS_LOG_REQUESTS_PER_INTERVAL",
                settings.requests_per_interval.to_string(),
            )
            .env("LOG_LEVEL", "Debug")
            .env("INGRESS_TAP_METRICS_LISTEN", metrics_addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(errors));
        if let Some(socket) = &settings.felix_socket {
            command.env("FELIX_DIAL_TARGET", socket);
        }
        for (name, value) in &settings.extra_env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start ingress-tap collect");
        let collector = Collector {
            child: Some(child),
            metrics_addr,
            output_path: settings.output_path.clone(),
        };
        let healthy = wait_for(DEADLINE, || async {
            http_get(metrics_addr, "/healthz")
                .await
                .is_some_and(|(status, _)| status == 200)
        })
        .await;
        assert!(
            healthy,
            "the collector did not become healthy on {metrics_addr}:\n{}",
            collector.output()
        );
        collector
    }

    /// What the child printed so far.
    pub fn output(&self) -> String {
        std::fs::read(&self.output_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The `/metrics` text, or `None` when the listener does not answer.
    pub async fn metrics(&self) -> Option<String> {
        match http_get(self.metrics_addr, "/metrics").await {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// The sum of every sample of the metric `name` (all label sets), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .metrics()
            .await
            .unwrap_or_else(|| panic!("no /metrics from the collector:\n{}", self.output()));
        metric_sum(&text, name)
    }

    /// Waits until the metric `name` satisfies `done`; returns its last value and whether it
    /// did.
    pub async fn wait_metric(&self, name: &str, done: impl Fn(f64) -> bool) -> (f64, bool) {
        let started = Instant::now();
        loop {
            let value = self.metrics().await.map(|text| metric_sum(&text, name));
            if let Some(value) = value {
                if done(value) {
                    return (value, true);
                }
                if started.elapsed() >= DEADLINE {
                    return (value, false);
                }
            } else if started.elapsed() >= DEADLINE {
                return (f64::NAN, false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until at least `count` more intervals have closed than now: everything written
    /// before this call has then been read and handed to the sender.
    pub async fn wait_intervals(&self, count: u32) {
        let name = "ingress_tap_collector_intervals_total";
        let now = self.metric(name).await;
        let target = now + f64::from(count);
        let (value, reached) = self.wait_metric(name, |v| v >= target).await;
        assert!(
            reached,
            "intervals stuck at {value}, waiting for {target}:\n{}",
            self.output()
        );
    }

    /// Kills the child with SIGKILL, as the OOM killer does: no last interval, no last
    /// checkpoint.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("the collector was already stopped");
        };
        send_sigterm(child.id());
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if started.elapsed() < DEADLINE => tokio::time::sleep(POLL).await,
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the collector ignored SIGTERM for {DEADLINE:?}:\n{}",
                        self.output()
                    );
                }
                Err(err) => panic!("waiting for the collector: {err}"),
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop_child(child);
        }
    }
}

/// SIGTERM through the `kill` utility (the crate forbids `unsafe`, so no direct syscall).
pub fn send_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, a bounded wait, then SIGKILL: used by guards, where a test may be failing.
pub fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    send_sigterm(child.id());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sum of the samples of `name` in Prometheus/OpenMetrics text (any labels).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            if metric == name {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Small async helpers

/// Polls `condition` until it holds or `deadline` passes.
pub async fn wait_for<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return true;
        }
        if started.elapsed() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A plain HTTP/1.0 GET (so the body is never chunked): status and body, `None` when the
/// server does not answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Waits until `recorder` holds at least `count` reports; fails with what did arrive.
pub async fn wait_reports(recorder: &Recorder, count: usize, context: &str) -> Vec<DataplaneStats> {
    let arrived = recorder
        .wait_until(DEADLINE, |reports| reports.len() >= count)
        .await;
    let reports = recorder.reports();
    assert!(
        arrived,
        "{context}: expected {count} reports, got {}: {reports:#?}",
        reports.len()
    );
    reports
}

/// Creates `path` empty (truncating nothing that exists: it must not exist yet).
pub fn create_empty(path: &Path) {
    File::create_new(path).unwrap_or_else(|err| panic!("create {}: {err}", path.display()));
}
