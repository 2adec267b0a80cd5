//! The collector binary against a recording Felix over real gRPC on a Unix socket: the eight
//! reference cases of the ingress-log spec (limit 5, connection 10.1.10.1:1 -> 10.1.1.10:2),
//! the documented deliberate difference, and the edges users rely on (no header, no cap,
//! Felix refusing).
//!
//! Each case's lines go into the log with one write, so they fall into one interval; the test
//! waits for that interval's reports, compares them exactly and clears the record.

use crate::collector_harness as harness;

use harness::{
    append, create_empty, joined, observe_all, reference_line, wait_reports, Collector,
    CollectorSettings, FakeFelix, Flow, Observed,
};
use ingress_tap_core::collect::parse::MARKER;
use ingress_tap_test_support::felix_recorder::Recorder;
use std::path::PathBuf;

/// A collector following an empty log in a fresh directory, reporting to a recording Felix.
struct Bench {
    log: PathBuf,
    felix: FakeFelix,
    collector: Collector,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn start(requests_per_interval: i64) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let settings = CollectorSettings::in_dir(dir.path(), requests_per_interval);
        // The log exists before the collector starts, so it is followed from its (empty) end
        // and every line written afterwards is new.
        create_empty(&settings.log_path);
        let socket = settings.felix_socket.clone().unwrap();
        let felix = FakeFelix::start(&socket, Recorder::default()).await;
        let collector = Collector::start(&settings).await;
        Bench {
            log: settings.log_path,
            felix,
            collector,
            _dir: dir,
        }
    }

    /// Writes `lines` in one write and checks that exactly `expected` arrives for them.
    async fn case(&self, name: &str, lines: &[String], expected: &[Observed]) {
        append(&self.log, &joined(lines));
        wait_reports(&self.felix.recorder, expected.len(), name).await;
        let taken = self.felix.recorder.take();
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(
            observe_all(&taken),
            expected,
            "{name}\ncollector output:\n{}",
            self.collector.output()
        );
    }

    /// Lets two more intervals close and checks that nothing else was reported.
    async fn assert_quiet(&self) {
        self.collector.wait_intervals(2).await;
        let late = self.felix.recorder.take();
        assert!(late.is_empty(), "unexpected reports: {late:#?}");
    }
}

fn main_line(xff: &str, xri: &str) -> String {
    reference_line(1, 2, xff, xri)
}

fn other_line(xff: &str, xri: &str) -> String {
    reference_line(10, 20, xff, xri)
}

fn main_flow() -> Flow {
    Flow::reference(1, 2)
}

fn other_flow() -> Flow {
    Flow::reference(10, 20)
}

fn dotted(n: u8) -> String {
    format!("{n}.{n}.{n}.{n}")
}

/// XFF 1.1.1.1 with X-Real-IPs 2.2.2.2, 3.3.3.3, 4.4.4.4.
fn case_3_lines() -> Vec<String> {
    (2..=4).map(|n| main_line("1.1.1.1", &dotted(n))).collect()
}

/// Six distinct X-Real-IPs (2.2.2.2 … 7.7.7.7) and a repeat of the first.
fn case_6_lines() -> Vec<String> {
    let mut lines: Vec<String> = (2..=7).map(|n| main_line("1.1.1.1", &dotted(n))).collect();
    lines.push(main_line("1.1.1.1", &dotted(2)));
    lines
}

/// (1.1.1.1, n.n.n.n) for each n.
fn entries(range: std::ops::RangeInclusive<u8>) -> Vec<(String, String)> {
    range.map(|n| ("1.1.1.1".to_owned(), dotted(n))).collect()
}

fn observed(flow: Flow, value: i64, http_data: Vec<(String, String)>) -> Observed {
    let pairs: Vec<(&str, &str)> = http_data
        .iter()
        .map(|(xff, xri)| (xff.as_str(), xri.as_str()))
        .collect();
    Observed::new(flow, value, &pairs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eight_reference_cases() {
    let bench = Bench::start(5).await;
    let other_report = observed(
        other_flow(),
        1,
        vec![("13.13.13.13".to_owned(), "10.10.10.10".to_owned())],
    );

    // 1. One line.
    let case_1 = main_line("1.1.1.1", "2.2.2.2");
    let case_1_report = observed(main_flow(), 1, entries(2..=2));
    bench
        .case(
            "case 1",
            std::slice::from_ref(&case_1),
            std::slice::from_ref(&case_1_report),
        )
        .await;

    // 2. The same line three times: duplicates within an interval collapse.
    bench
        .case(
            "case 2",
            &[case_1.clone(), case_1.clone(), case_1],
            &[case_1_report],
        )
        .await;

    // 3. Three distinct X-Real-IPs.
    let case_3_report = observed(main_flow(), 3, entries(2..=4));
    bench
        .case(
            "case 3",
            &case_3_lines(),
            std::slice::from_ref(&case_3_report),
        )
        .await;

    // 4. Case 3 plus a repeat of its first line.
    let mut case_4 = case_3_lines();
    case_4.push(case_4[0].clone());
    bench
        .case("case 4", &case_4, std::slice::from_ref(&case_3_report))
        .await;

    // 5. Case 4 plus a line on another connection: one report per connection.
    let mut case_5 = case_4.clone();
    case_5.push(other_line("13.13.13.13", "10.10.10.10"));
    bench
        .case(
            "case 5",
            &case_5,
            &[case_3_report.clone(), other_report.clone()],
        )
        .await;

    // 6. Six distinct X-Real-IPs and a repeat: the first five are carried, the value is 6.
    bench
        .case(
            "case 6",
            &case_6_lines(),
            &[observed(main_flow(), 6, entries(2..=6))],
        )
        .await;

    // 7. Case 6 plus the other connection's line: the limit is per interval, so the other
    //    connection's entry is over it, while its value still counts its IP.
    let mut case_7 = case_6_lines();
    case_7.push(other_line("13.13.13.13", "10.10.10.10"));
    bench
        .case(
            "case 7",
            &case_7,
            &[
                observed(main_flow(), 6, entries(2..=6)),
                observed(other_flow(), 1, Vec::new()),
            ],
        )
        .await;

    // 8. A misspelt marker among good lines is ignored.
    let mut case_8 = case_3_lines();
    let misspelt = main_line("9.9.9.9", "9.9.9.9").replace(MARKER, "tigera_secure_ee_ingres:");
    assert_ne!(misspelt, main_line("9.9.9.9", "9.9.9.9"));
    case_8.insert(1, misspelt);
    bench.case("case 8", &case_8, &[case_3_report]).await;

    bench.assert_quiet().await;
    let other_lines = bench
        .collector
        .metric("ingress_tap_collector_lines_other_total")
        .await;
    assert_eq!(other_lines, 1.0, "only the misspelt line lacks the marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_original_ip_over_two_connections_is_reported_on_both() {
    // The reference collector reports it on the first connection only; here each connection
    // reports every original IP it carried.
    let bench = Bench::start(5).await;
    let lines = [
        reference_line(1, 2, "1.1.1.1", "2.2.2.2"),
        reference_line(3, 2, "1.1.1.1", "2.2.2.2"),
    ];
    let entry = vec![("1.1.1.1".to_owned(), "2.2.2.2".to_owned())];
    bench
        .case(
            "same IP on two connections",
            &lines,
            &[
                observed(Flow::reference(1, 2), 1, entry.clone()),
                observed(Flow::reference(3, 2), 1, entry),
            ],
        )
        .await;
    bench.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_headers_is_reported_with_zero() {
    let bench = Bench::start(5).await;
    let lines = [
        // What nginx prints for absent headers, then empty ones.
        main_line("-", "-"),
        main_line("", ""),
        other_line("13.13.13.13", "10.10.10.10"),
    ];
    bench
        .case(
            "no headers",
            &lines,
            &[
                observed(main_flow(), 0, Vec::new()),
                observed(
                    other_flow(),
                    1,
                    vec![("13.13.13.13".to_owned(), "10.10.10.10".to_owned())],
                ),
            ],
        )
        .await;
    bench.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_limit_carries_every_distinct_ip() {
    let bench = Bench::start(-1).await;
    let ips: Vec<String> = (1..=20).map(|n| format!("20.0.0.{n}")).collect();
    let lines: Vec<String> = ips.iter().map(|ip| main_line(ip, "-")).collect();
    let expected: Vec<(String, String)> =
        ips.iter().map(|ip| (ip.clone(), String::new())).collect();
    bench
        .case("no cap", &lines, &[observed(main_flow(), 20, expected)])
        .await;
    bench.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_report_is_counted_and_not_retried() {
    let bench = Bench::start(5).await;
    let collector = &bench.collector;
    bench.felix.recorder.set_refusing(true);
    append(&bench.log, &joined(&[main_line("1.1.1.1", "-")]));
    let (rejected, counted) = collector
        .wait_metric("ingress_tap_collector_reports_rejected_total", |v| v >= 1.0)
        .await;
    assert!(
        counted,
        "a refused report was not counted (rejected = {rejected}):\n{}",
        collector.output()
    );

    // Felix takes reports again. Were the refused one retried, it would arrive before this.
    bench.felix.recorder.set_refusing(false);
    bench
        .case(
            "after refusal",
            &[main_line("3.3.3.3", "-")],
            &[observed(
                main_flow(),
                1,
                vec![("3.3.3.3".to_owned(), String::new())],
            )],
        )
        .await;
    bench.assert_quiet().await;
    let rejected = collector
        .metric("ingress_tap_collector_reports_rejected_total")
        .await;
    let failed = collector
        .metric("ingress_tap_collector_reports_failed_total")
        .await;
    let (sent, _) = collector
        .wait_metric("ingress_tap_collector_reports_sent_total", |v| v >= 1.0)
        .await;
    assert_eq!(
        (rejected, failed, sent),
        (1.0, 0.0, 1.0),
        "(rejected, failed, sent)"
    );
}
