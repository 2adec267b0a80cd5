//! Real nginx writing the spec's template with its default escaping, real HTTP requests over
//! real TCP connections, the collector binary following the log, and a recording Felix: the
//! reports must name the actual connection and carry the original IPs Felix can read.
//!
//! nginx is required, never skipped: scripts/test.sh installs it.

use crate::collector_harness as harness;

use harness::nginx::{Client, Nginx};
use harness::{
    felix_reads, observe, Collector, CollectorSettings, FakeFelix, Flow, Observed, DEADLINE,
};
use ingress_tap_felix_proto::DataplaneStats;
use ingress_tap_test_support::felix_recorder::Recorder;
use std::net::IpAddr;

/// nginx, the collector following nginx's log, and a recording Felix, in a fresh directory.
struct Stack {
    nginx: Nginx,
    felix: FakeFelix,
    collector: Collector,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        // No cap: every scenario's IPs are carried, whatever interval they share.
        let settings = CollectorSettings::in_dir(dir.path(), -1);
        let socket = settings.felix_socket.clone().unwrap();
        let felix = FakeFelix::start(&socket, Recorder::default()).await;
        // nginx creates the log at start, before the collector, which therefore follows it
        // from its end: ready before any request is sent.
        let nginx = Nginx::start(dir.path(), &settings.log_path).await;
        assert!(settings.log_path.exists(), "{}", nginx.diagnostics());
        let collector = Collector::start(&settings).await;
        Stack {
            nginx,
            felix,
            collector,
            _dir: dir,
        }
    }

    /// This connection's flow as the ingress pod sees it.
    fn flow_of(&self, client: &Client) -> Flow {
        Flow::new(
            ("127.0.0.1", client.local_port),
            ("127.0.0.1", self.nginx.port),
        )
    }

    /// Waits until the reports merged per flow (see [`merged`]) equal `expected`, or the
    /// deadline passes; returns every report received.
    async fn reports_matching(&self, expected: &[Observed]) -> Vec<DataplaneStats> {
        self.felix
            .recorder
            .wait_until(DEADLINE, |reports| {
                expected
                    .iter()
                    .all(|want| merged(reports, &want.flow) == *want)
            })
            .await;
        self.felix.recorder.reports()
    }
}

/// One scenario: the headers of each request sent on one connection, and the report expected
/// for that connection.
struct Scenario {
    name: &'static str,
    requests: Vec<Vec<(&'static str, &'static str)>>,
    value: i64,
    http_data: Vec<(&'static str, &'static str)>,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "both headers: Felix reads X-Real-IP",
            requests: vec![vec![
                ("X-Forwarded-For", "1.1.1.1"),
                ("X-Real-IP", "2.2.2.2"),
            ]],
            value: 1,
            http_data: vec![("1.1.1.1", "2.2.2.2")],
        },
        Scenario {
            name: "X-Forwarded-For only",
            requests: vec![vec![("X-Forwarded-For", "1.1.1.1")]],
            value: 1,
            http_data: vec![("1.1.1.1", "")],
        },
        Scenario {
            name: "a list is cut to its leftmost entry",
            requests: vec![vec![("X-Forwarded-For", "203.0.113.7, 10.0.0.1")]],
            value: 1,
            http_data: vec![("203.0.113.7", "")],
        },
        Scenario {
            name: "IPv6, bare and bracketed with a port, on one connection",
            requests: vec![
                vec![("X-Forwarded-For", "2001:db8::1")],
                vec![("X-Forwarded-For", "[2001:db8::2]:443")],
            ],
            value: 2,
            http_data: vec![("2001:db8::1", ""), ("2001:db8::2", "")],
        },
        Scenario {
            name: "no headers: reported with value 0",
            requests: vec![vec![], vec![("User-Agent", "probe/1.0")]],
            value: 0,
            http_data: vec![],
        },
        Scenario {
            name: "a quote in X-Real-IP (logged as \\x22) falls back to X-Forwarded-For",
            requests: vec![vec![
                ("X-Forwarded-For", "198.51.100.1"),
                ("X-Real-IP", "a\"b"),
            ]],
            value: 1,
            http_data: vec![("198.51.100.1", "")],
        },
        Scenario {
            name: "X-Real-IP `unknown` does not hide X-Forwarded-For",
            requests: vec![vec![
                ("X-Forwarded-For", "192.0.2.55"),
                ("X-Real-IP", "unknown"),
            ]],
            value: 1,
            http_data: vec![("192.0.2.55", "")],
        },
    ]
}

/// Sums the reports of `flow` (a connection's requests may straddle an interval boundary):
/// the value adds up and the entries join, since every scenario's IPs are distinct.
fn merged(reports: &[DataplaneStats], flow: &Flow) -> Observed {
    let mine: Vec<Observed> = reports
        .iter()
        .map(observe)
        .filter(|observed| observed.flow == *flow)
        .collect();
    let mut http_data: Vec<(String, String)> = mine
        .iter()
        .flat_map(|observed| observed.http_data.clone())
        .collect();
    http_data.sort();
    Observed {
        flow: flow.clone(),
        value: mine.iter().map(|observed| observed.value).sum(),
        http_data,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lines_reach_felix_as_the_real_connection() {
    let stack = Stack::start().await;
    let scenarios = scenarios();
    let mut flows = Vec::new();
    // One keep-alive connection per scenario, kept open until the reports are checked so no
    // two scenarios can share a client port.
    let mut clients = Vec::new();
    for scenario in &scenarios {
        let mut client = Client::connect(stack.nginx.addr()).await;
        for headers in &scenario.requests {
            client.get(headers).await;
        }
        flows.push(stack.flow_of(&client));
        clients.push(client);
    }
    let expected: Vec<Observed> = scenarios
        .iter()
        .zip(&flows)
        .map(|(scenario, flow)| Observed::new(flow.clone(), scenario.value, &scenario.http_data))
        .collect();
    let reports = stack.reports_matching(&expected).await;

    // Every request was logged in the spec's format: the quote came out as nginx's \x22.
    let log = std::fs::read_to_string(stack.nginx.dir.join("ingress.log")).unwrap();
    assert!(log.contains(r#""x-real-ip": "a\x22b""#), "{log}");
    let requests: usize = scenarios.iter().map(|s| s.requests.len()).sum();
    assert_eq!(log.lines().count(), requests, "{log}");

    for ((scenario, want), client) in scenarios.iter().zip(&expected).zip(&clients) {
        assert_eq!(want.flow.src_port, i32::from(client.local_port));
        assert_eq!(
            merged(&reports, &want.flow),
            *want,
            "{}\nall reports: {reports:#?}\n{}\ncollector:\n{}",
            scenario.name,
            stack.nginx.diagnostics(),
            stack.collector.output()
        );
    }
    // Nothing but the scenarios' connections was reported.
    for report in &reports {
        let flow = observe(report).flow;
        assert!(flows.contains(&flow), "unexpected report {report:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_check_felix_sees_the_real_ip() {
    // The setup guide's check: a curl-like request with both headers, then the flow's
    // original source IP as Felix reads it.
    let stack = Stack::start().await;
    let mut client = Client::connect(stack.nginx.addr()).await;
    client
        .get(&[
            ("User-Agent", "curl/8.5.0"),
            ("Accept", "*/*"),
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Real-IP", "2.2.2.2"),
        ])
        .await;
    let flow = stack.flow_of(&client);
    let expected = Observed::new(flow.clone(), 1, &[("1.1.1.1", "2.2.2.2")]);
    let reports = stack
        .reports_matching(std::slice::from_ref(&expected))
        .await;
    let seen: Vec<Option<IpAddr>> = reports
        .iter()
        .filter(|report| observe(report).flow == flow)
        .flat_map(|report| report.http_data.iter().map(felix_reads))
        .collect();
    assert_eq!(seen, [Some("2.2.2.2".parse().unwrap())], "{reports:#?}");
}
