//! Real nginx writing the spec's template with its default escaping, real HTTP requests over
//! real TCP connections, the collector binary following the log, and a recording Felix: the
//! reports must name the actual connection and carry the original IPs Felix can read.
//!
//! nginx is required, never skipped: scripts/test.sh installs it.

#[path = "collector_harness/mod.rs"]
mod harness;

use harness::{
    felix_reads, free_port, observe, stop_child, wait_for, Collector, CollectorSettings, FakeFelix,
    Flow, Observed, DEADLINE,
};
use ingress_tap::collect::felix_recorder::Recorder;
use ingress_tap::felix_proto::DataplaneStats;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The log format of the ingress-log spec, verbatim, with nginx's default escaping.
const INGRESS_TEMPLATE: &str = r#"tigera_secure_ee_ingress: {"source_port": $realip_remote_port, "destination_ip": "$server_addr", "destination_port": $server_port, "source_ip": "$realip_remote_addr", "x-forwarded-for": "$http_x_forwarded_for", "x-real-ip": "$http_x_real_ip"}"#;

fn nginx_binary() -> PathBuf {
    let installed = Path::new("/usr/sbin/nginx");
    if installed.is_file() {
        return installed.to_owned();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("nginx not found: run scripts/test.sh, which installs Debian's nginx-light")
        })
}

/// nginx as the current user, everything it writes inside `dir`, one process in the
/// foreground; killed when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    async fn start(dir: &Path, access_log: &Path) -> Nginx {
        let port = free_port();
        let d = dir.display();
        let config = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 64;
}}
http {{
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    log_format ingress '{INGRESS_TEMPLATE}';
    access_log {log} ingress;
    keepalive_requests 1000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            return 200 "ok\n";
        }}
    }}
}}
"#,
            log = access_log.display(),
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        let output = std::fs::File::create(dir.join("nginx.out")).unwrap();
        let errors = output.try_clone().unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(errors))
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            child,
            port,
            dir: dir.to_owned(),
        };
        let answering = wait_for(DEADLINE, || async {
            TcpStream::connect(nginx.addr()).await.is_ok()
        })
        .await;
        assert!(answering, "nginx did not answer:\n{}", nginx.diagnostics());
        nginx
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn diagnostics(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "nginx output:\n{}\nerror.log:\n{}\ningress.log:\n{}",
            read("nginx.out"),
            read("error.log"),
            read("ingress.log")
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// One client keep-alive connection to nginx.
struct Client {
    stream: TcpStream,
    local_port: u16,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to nginx");
        let local_port = stream.local_addr().unwrap().port();
        Client { stream, local_port }
    }

    /// Sends a GET with `headers` written byte for byte (so odd values reach nginx as they are)
    /// and reads the whole response, keeping the connection open.
    async fn get(&mut self, headers: &[(&str, &str)]) {
        let mut request = String::from("GET / HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).await.unwrap();

        let mut response = Vec::new();
        let mut buffer = [0u8; 1024];
        let complete = loop {
            if let Some(length) = complete_response_length(&response) {
                break length;
            }
            let read = self.stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "nginx closed the connection mid-response");
            response.extend_from_slice(&buffer[..read]);
        };
        let text = String::from_utf8_lossy(&response[..complete]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
    }
}

/// The length of the first complete response in `bytes` (headers plus Content-Length body).
fn complete_response_length(bytes: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, _) = text.split_once("\r\n\r\n")?;
    let length: usize = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            value.trim().parse().ok()
        } else {
            None
        }
    })?;
    let total = head.len() + 4 + length;
    (bytes.len() >= total).then_some(total)
}

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
