//! Nothing lost, nothing doubled: the collector binary under log rotation, restarts, Felix
//! outages and garbage input.
//!
//! Every record carries an original IP of its own (X-Forwarded-For from a counter) on one of a
//! few connections, and the cap on http_data is off, so each record must show up at Felix as
//! exactly one (connection, IP) pair. Since each IP is written once, the same pair in two
//! reports (of the same or of different intervals) is a record counted twice.

use crate::collector_harness as harness;

use harness::{
    append, create_empty, delivered_pairs, duplicates, numbered, numbered_ip, observe,
    template_line, wait_for, Collector, CollectorSettings, FakeFelix, DEADLINE,
};
use ingress_tap_test_support::felix_recorder::Recorder;
use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// (source port, original IP): one record as Felix sees it.
type Pair = (i32, String);

/// Connections the records are spread over.
const CONNECTIONS: u32 = 4;

/// Gap between two lines of the writer: a steady stream, a few hundred lines a second.
const WRITER_PACE: Duration = Duration::from_millis(2);

/// Record `n`: its pair and its line.
fn numbered_record(n: u32) -> (Pair, String) {
    let port = 1000 + (n % CONNECTIONS) as u16;
    let ip = numbered_ip(n);
    let line = template_line(("10.1.10.1", port), ("10.1.1.10", 80), &ip, "-");
    ((i32::from(port), ip), line)
}

/// Records `range`, joined for one write.
fn numbered_batch(range: std::ops::Range<u32>) -> (Vec<Pair>, Vec<u8>) {
    let mut pairs = Vec::new();
    let mut bytes = Vec::new();
    for n in range {
        let (pair, line) = numbered_record(n);
        pairs.push(pair);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    (pairs, bytes)
}

// ---------------------------------------------------------------------------------------------
// A writer that behaves like nginx: one open descriptor, one write per line, reopening the
// path only when told to (nginx on USR1), and able to hold still (logrotate's copytruncate
// window).

#[derive(Default)]
struct WriterState {
    pause: bool,
    parked: bool,
    reopen: bool,
    stop: bool,
    written: Vec<Pair>,
}

struct NumberedWriter {
    state: Arc<Mutex<WriterState>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(state: &Mutex<WriterState>) -> MutexGuard<'_, WriterState> {
    state.lock().unwrap()
}

impl NumberedWriter {
    /// Starts appending records `first`, `first + 1`, … to `path`.
    fn start(path: &Path, first: u32) -> NumberedWriter {
        let state = Arc::new(Mutex::new(WriterState::default()));
        let shared = state.clone();
        let path = path.to_owned();
        let thread = std::thread::spawn(move || {
            let open = |path: &Path| {
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .unwrap()
            };
            let mut file = open(&path);
            let mut next = first;
            loop {
                {
                    let mut state = lock(&shared);
                    if state.stop {
                        return;
                    }
                    state.parked = state.pause;
                    if !state.pause {
                        if state.reopen {
                            file = open(&path);
                            state.reopen = false;
                        }
                        let (pair, mut line) = numbered_record(next);
                        line.push('\n');
                        file.write_all(line.as_bytes()).unwrap();
                        state.written.push(pair);
                        next += 1;
                    }
                }
                std::thread::sleep(WRITER_PACE);
            }
        });
        NumberedWriter {
            state,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        lock(&self.state).written.len()
    }

    /// Waits until at least `count` records are written in total.
    async fn wait_written(&self, count: usize) {
        let reached = wait_for(DEADLINE, || async { self.count() >= count }).await;
        assert!(reached, "the writer is stuck at {} records", self.count());
    }

    /// Holds the writer between two lines; returns once it holds.
    async fn pause(&self) {
        lock(&self.state).pause = true;
        let parked = wait_for(DEADLINE, || async { lock(&self.state).parked }).await;
        assert!(parked, "the writer did not pause");
    }

    fn resume(&self) {
        let mut state = lock(&self.state);
        state.pause = false;
        state.parked = false;
    }

    /// Makes the writer reopen the path, as nginx does on USR1; returns once it has.
    async fn reopen(&self) {
        lock(&self.state).reopen = true;
        let done = wait_for(DEADLINE, || async { !lock(&self.state).reopen }).await;
        assert!(done, "the writer did not reopen the log");
    }

    /// Stops writing; returns every record written.
    fn stop(mut self) -> Vec<Pair> {
        lock(&self.state).stop = true;
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        std::mem::take(&mut lock(&self.state).written)
    }
}

impl Drop for NumberedWriter {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock() {
            state.stop = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and the check

struct Bench {
    settings: CollectorSettings,
    dir: tempfile::TempDir,
}

impl Bench {
    /// A fresh directory with an empty log; the collector will follow it from its start.
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let settings = CollectorSettings::in_dir(dir.path(), -1);
        create_empty(&settings.log_path);
        Bench { settings, dir }
    }

    fn log(&self) -> &Path {
        &self.settings.log_path
    }

    fn socket(&self) -> PathBuf {
        self.settings.felix_socket.clone().unwrap()
    }

    async fn felix(&self, recorder: &Recorder) -> FakeFelix {
        FakeFelix::start(&self.socket(), recorder.clone()).await
    }

    async fn collector(&self) -> Collector {
        Collector::start(&self.settings).await
    }

    fn file_listing(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| {
                        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                        format!("{} ({size} bytes)", entry.file_name().to_string_lossy())
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.join(", ")
    }
}

fn delivered_set(recorder: &Recorder) -> BTreeSet<Pair> {
    delivered_pairs(&recorder.reports()).into_iter().collect()
}

/// Waits until every written pair is at Felix, lets two more intervals close so that late
/// duplicates would arrive too, then checks: the pairs delivered are exactly the pairs
/// written, none twice, and each report's value counts its entries.
async fn assert_each_delivered_once(
    recorder: &Recorder,
    collector: Option<&Collector>,
    written: &[Pair],
    context: &str,
) {
    let wanted: BTreeSet<Pair> = written.iter().cloned().collect();
    assert_eq!(wanted.len(), written.len(), "records must be unique");
    let all_arrived = recorder
        .wait_until(DEADLINE, |reports| {
            let delivered: BTreeSet<Pair> = delivered_pairs(reports).into_iter().collect();
            wanted.is_subset(&delivered)
        })
        .await;
    if let Some(collector) = collector {
        collector.wait_intervals(2).await;
    }
    let reports = recorder.reports();
    let pairs = delivered_pairs(&reports);
    let delivered: BTreeSet<Pair> = pairs.iter().cloned().collect();
    let missing: Vec<&Pair> = wanted.difference(&delivered).collect();
    let unexpected: Vec<&Pair> = delivered.difference(&wanted).collect();
    let doubled = duplicates(&pairs);
    let output = collector.map(Collector::output).unwrap_or_default();
    assert!(
        all_arrived && missing.is_empty() && unexpected.is_empty() && doubled.is_empty(),
        "{context}: written {}, delivered {} distinct in {} entries\n\
         missing ({}): {:?}\nunexpected ({}): {:?}\ndoubled ({}): {:?}\ncollector:\n{output}",
        wanted.len(),
        delivered.len(),
        pairs.len(),
        missing.len(),
        missing.iter().take(20).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(20).collect::<Vec<_>>(),
        doubled.len(),
        doubled.iter().take(20).collect::<Vec<_>>(),
    );
    for report in &reports {
        let observed = observe(report);
        assert_eq!(
            observed.value,
            observed.http_data.len() as i64,
            "{context}: with unique IPs and no cap, the value counts the entries: {report:#?}"
        );
    }
}

/// Waits until Felix holds at least every pair in `written`.
async fn wait_delivered(recorder: &Recorder, written: &[Pair]) {
    let wanted: BTreeSet<Pair> = written.iter().cloned().collect();
    let arrived = wait_for(DEADLINE, || async {
        wanted.is_subset(&delivered_set(recorder))
    })
    .await;
    assert!(arrived, "records written earlier did not reach Felix");
}

fn written_so_far(writer: &NumberedWriter) -> Vec<Pair> {
    lock(&writer.state).written.clone()
}

// ---------------------------------------------------------------------------------------------
// The faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_while_writing() {
    let bench = Bench::new();
    let recorder = Recorder::default();
    let _felix = bench.felix(&recorder).await;
    let collector = bench.collector().await;
    let writer = NumberedWriter::start(bench.log(), 1);

    for rotation in 1..=3 {
        writer.wait_written(rotation * 150).await;
        // logrotate's `create`: shift the generations, move the log away, create a new one,
        // then tell the writer, which meanwhile keeps appending to the moved file.
        for n in (1..3).rev() {
            if numbered(bench.log(), n).exists() {
                std::fs::rename(numbered(bench.log(), n), numbered(bench.log(), n + 1)).unwrap();
            }
        }
        std::fs::rename(bench.log(), numbered(bench.log(), 1)).unwrap();
        create_empty(bench.log());
        writer.wait_written(rotation * 150 + 20).await;
        writer.reopen().await;
        // The next rotation only once the collector caught up with this one.
        wait_delivered(&recorder, &written_so_far(&writer)).await;
    }
    writer.wait_written(600).await;
    let written = writer.stop();
    assert_each_delivered_once(&recorder, Some(&collector), &written, "rename rotation").await;
    let rotations = collector
        .metric("ingress_tap_collector_rotations_total")
        .await;
    assert!(
        rotations >= 3.0,
        "rotations counted: {rotations}; files: {}",
        bench.file_listing()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_with_the_writer_held() {
    let bench = Bench::new();
    let recorder = Recorder::default();
    let _felix = bench.felix(&recorder).await;
    let collector = bench.collector().await;
    let writer = NumberedWriter::start(bench.log(), 1);

    for round in 1..=3 {
        writer.wait_written(round * 150).await;
        // Lines written between the copy and the truncate are in neither file: that race is
        // copytruncate's own, so the writer holds still across it, as the documentation says.
        writer.pause().await;
        if numbered(bench.log(), 1).exists() {
            std::fs::rename(numbered(bench.log(), 1), numbered(bench.log(), 2)).unwrap();
        }
        std::fs::copy(bench.log(), numbered(bench.log(), 1)).unwrap();
        OpenOptions::new()
            .write(true)
            .open(bench.log())
            .unwrap()
            .set_len(0)
            .unwrap();
        writer.resume();
        wait_delivered(&recorder, &written_so_far(&writer)).await;
    }
    writer.wait_written(600).await;
    let written = writer.stop();
    assert_each_delivered_once(&recorder, Some(&collector), &written, "copytruncate").await;
    let truncations = collector
        .metric("ingress_tap_collector_truncations_total")
        .await;
    assert!(
        truncations >= 3.0,
        "truncations counted: {truncations}; files: {}",
        bench.file_listing()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_where_it_stopped() {
    let bench = Bench::new();
    let recorder = Recorder::default();
    let _felix = bench.felix(&recorder).await;
    let mut first = bench.collector().await;
    let writer = NumberedWriter::start(bench.log(), 1);

    writer.wait_written(300).await;
    let status = first.terminate().await;
    assert!(
        status.success(),
        "SIGTERM must end the collector with 0, got {status}:\n{}",
        first.output()
    );
    // Written while no collector runs: picked up from the checkpoint on restart.
    let down_at = writer.count();
    writer.wait_written(down_at + 200).await;
    let second = bench.collector().await;
    writer.wait_written(writer.count() + 200).await;
    let written = writer.stop();
    assert_each_delivered_once(&recorder, Some(&second), &written, "restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_down_at_start_then_up() {
    let bench = Bench::new();
    let collector = bench.collector().await;
    // Three intervals of records with nobody listening. Empty intervals take queue slots too,
    // and the reconnect backoff grows while Felix is away, so the outage stays short enough
    // to remain well under the 12 intervals queued by default.
    let mut written = Vec::new();
    for batch in 0..3u32 {
        let (pairs, bytes) = numbered_batch(batch * 100 + 1..batch * 100 + 101);
        append(bench.log(), &bytes);
        written.extend(pairs);
        let parsed = f64::from((batch + 1) * 100);
        let (value, reached) = collector
            .wait_metric("ingress_tap_collector_records_parsed_total", |v| {
                v >= parsed
            })
            .await;
        assert!(reached, "parsed {value}:\n{}", collector.output());
        collector.wait_intervals(1).await;
    }
    let (failed, tried) = collector
        .wait_metric("ingress_tap_collector_reports_failed_total", |v| v >= 1.0)
        .await;
    assert!(tried, "no failed call while Felix was down ({failed})");

    let recorder = Recorder::default();
    let _felix = bench.felix(&recorder).await;
    assert_each_delivered_once(&recorder, Some(&collector), &written, "Felix down then up").await;
    let dropped = collector
        .metric("ingress_tap_collector_reports_dropped_total")
        .await;
    assert_eq!(dropped, 0.0, "nothing may be dropped under the queue bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn felix_restarts_mid_stream() {
    let bench = Bench::new();
    let recorder = Recorder::default();
    let mut felix = bench.felix(&recorder).await;
    let collector = bench.collector().await;
    let writer = NumberedWriter::start(bench.log(), 1);

    writer.wait_written(200).await;
    wait_delivered(&recorder, &written_so_far(&writer)).await;
    felix.stop().await;
    let (failed, noticed) = collector
        .wait_metric("ingress_tap_collector_reports_failed_total", |v| v >= 1.0)
        .await;
    assert!(
        noticed,
        "the collector never failed a call while Felix was down ({failed}):\n{}",
        collector.output()
    );
    let down_at = writer.count();
    writer.wait_written(down_at + 200).await;

    let _felix = bench.felix(&recorder).await;
    writer.wait_written(writer.count() + 200).await;
    let written = writer.stop();
    assert_each_delivered_once(&recorder, Some(&collector), &written, "Felix restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_lines_and_garbage_do_not_disturb_good_lines() {
    let bench = Bench::new();
    let recorder = Recorder::default();
    let _felix = bench.felix(&recorder).await;
    let collector = bench.collector().await;

    // A well-formed record at the end of a 70 KiB line: over the 64 KiB cap, so it must not be
    // reported, even partly.
    let hidden_ip = "10.255.255.254";
    let mut oversized = vec![b'x'; 70 * 1024];
    oversized.extend_from_slice(
        template_line(("10.1.10.1", 1000), ("10.1.1.10", 80), hidden_ip, "-").as_bytes(),
    );
    let without_marker: [&[u8]; 4] = [b"\xff\xfe\xfd not UTF-8 \xc3\x28", b"\0\0\0\0", b"-", b""];
    let malformed: [&[u8]; 4] = [
        b"tigera_secure_ee_ingress: \xff\x00\x01",
        br#"tigera_secure_ee_ingress: {"source_port": -, "destination_ip": "10.1.1.10", "destination_port": 80, "source_ip": "10.1.10.1", "x-forwarded-for": "10.9.9.9", "x-real-ip": "-"}"#,
        br#"tigera_secure_ee_ingress: {"source_port": 1000, "destination_ip": "10.1.1.10""#,
        b"tigera_secure_ee_ingress: {\"source_port\": 1000, \"source_ip\": \"10.1.\x0010.1\"}",
    ];

    let mut written = Vec::new();
    let mut next = 1;
    let mut write_good = |count: u32, log: &Path, written: &mut Vec<Pair>| {
        let (pairs, bytes) = numbered_batch(next..next + count);
        append(log, &bytes);
        written.extend(pairs);
        next += count;
    };
    write_good(50, bench.log(), &mut written);
    let mut bad = Vec::new();
    bad.extend_from_slice(&oversized);
    bad.push(b'\n');
    for line in without_marker.iter().chain(&malformed) {
        bad.extend_from_slice(line);
        bad.push(b'\n');
    }
    append(bench.log(), &bad);
    write_good(50, bench.log(), &mut written);
    // The oversized line again, this time split over two writes.
    let (head, tail) = oversized.split_at(40 * 1024);
    append(bench.log(), head);
    append(bench.log(), &[tail, b"\n"].concat());
    write_good(50, bench.log(), &mut written);

    assert_each_delivered_once(&recorder, Some(&collector), &written, "garbage").await;
    let metrics = collector.metrics().await.unwrap();
    let value = |name: &str| harness::metric_sum(&metrics, name);
    assert_eq!(
        value("ingress_tap_collector_oversized_lines_total"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        value("ingress_tap_collector_malformed_lines_total"),
        malformed.len() as f64,
        "{metrics}"
    );
    assert_eq!(
        value("ingress_tap_collector_lines_other_total"),
        without_marker.len() as f64,
        "{metrics}"
    );
    assert_eq!(
        value("ingress_tap_collector_records_parsed_total"),
        written.len() as f64,
        "{metrics}"
    );
    assert!(!delivered_set(&recorder)
        .iter()
        .any(|(_, ip)| ip == hidden_ip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_the_last_interval_before_exit() {
    let mut bench = Bench::new();
    // An interval far longer than the test: only the stop can close it.
    bench.settings.interval_seconds = 60;
    let recorder = Recorder::default();
    let _felix = bench.felix(&recorder).await;
    let mut collector = bench.collector().await;

    let (mut written, bytes) = numbered_batch(1..201);
    append(bench.log(), &bytes);
    let (parsed, reached) = collector
        .wait_metric("ingress_tap_collector_records_parsed_total", |v| v >= 200.0)
        .await;
    assert!(reached, "parsed {parsed}:\n{}", collector.output());
    // Written just before the signal, possibly not read yet: the stop reads it.
    let (late, bytes) = numbered_batch(201..251);
    append(bench.log(), &bytes);
    written.extend(late);
    assert!(
        recorder.reports().is_empty(),
        "nothing may be reported before the interval ends"
    );

    let status = collector.terminate().await;
    assert!(
        status.success(),
        "SIGTERM must end the collector with 0, got {status}:\n{}",
        collector.output()
    );
    // The process is gone: whatever was to arrive before exit has arrived.
    assert_each_delivered_once(&recorder, None, &written, "SIGTERM").await;
    let output = collector.output();
    assert!(output.contains("collector stopped"), "{output}");
    let checkpoint_written = std::fs::read_dir(bench.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|entry| entry.file_name().to_string_lossy().contains("checkpoint"));
    assert!(checkpoint_written, "files: {}", bench.file_listing());
}
