//! The `ingress-nginx` output enforced by a real nginx, configured the way ingress-nginx
//! configures it: `block-cidrs` rendered as `deny` lines in the `http` block, and the realip
//! module trusting a proxy (`set_real_ip_from`, `real_ip_header X-Forwarded-For`,
//! `real_ip_recursive on`).
//!
//! The test runs in a private network namespace (it re-executes itself under
//! `unshare --net`), where the loopback interface also carries 203.0.113.7: so a client can
//! connect *as* a blocked address, as the trusted proxy (127.0.0.1), or as an untrusted peer
//! (127.0.0.2), and nginx sees exactly that peer. The host's network is never touched. nginx
//! and root (for the namespace) are required, never skipped: scripts/test.sh installs nginx.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::nginx_process;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const IN_NAMESPACE: &str = "INGRESS_TAP_BLOCK_NGINX_NETNS";
/// The test's name as the harness knows it (module path within the test binary, then name).
const TEST_NAME: &str = "block_nginx::blocked_addresses_get_403_after_the_real_ip_step";
/// In the private namespace every port is free.
const PORT: u16 = 8080;
const DEADLINE: Duration = Duration::from_secs(20);

const TRUSTED_PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const UNTRUSTED_PEER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BLOCKED_CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// nginx in the foreground with everything under `dir`; killed when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, trusted: &str, deny_lines: &str) -> Nginx {
        let d = dir.display();
        let http_directives = format!(
            r#"    access_log {d}/access.log;
    # As ingress-nginx renders use-forwarded-headers with proxy-real-ip-cidr.
    set_real_ip_from {trusted};
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;
    # As ingress-nginx renders block-cidrs.
{deny_lines}
    server {{
        listen 0.0.0.0:{PORT};
        # Served in the content phase, after the access phase where deny acts (a `return`
        # would answer in the rewrite phase, before any deny is checked, unlike the
        # proxy_pass of an ingress-nginx location).
        location / {{
            root {d}/www;
        }}
    }}"#
        );
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/index.html"), "ok\n").unwrap();
        let child = nginx_process::spawn(dir, &nginx_process::config(dir, &http_directives));
        Nginx {
            child,
            dir: dir.to_owned(),
        }
    }

    fn diagnostics(&self) -> String {
        nginx_process::diagnostics(&self.dir, &["nginx.conf"])
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", PORT))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not answer:\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET / from source address `peer` with `X-Forwarded-For: forwarded`; the status code.
async fn status_from(peer: Ipv4Addr, forwarded: Option<&str>) -> u16 {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(peer), 0))
        .unwrap_or_else(|error| panic!("bind {peer}: {error}"));
    // Connecting to the peer's own address keeps the traffic on the loopback interface.
    let target = if peer == BLOCKED_CLIENT {
        SocketAddr::new(IpAddr::V4(BLOCKED_CLIENT), PORT)
    } else {
        SocketAddr::new(IpAddr::V4(TRUSTED_PROXY), PORT)
    };
    let mut stream = socket.connect(target).await.unwrap();
    let header = forwarded
        .map(|value| format!("X-Forwarded-For: {value}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET / HTTP/1.1\r\nHost: shop.example\r\n{header}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// `ingress-tap block --target ingress-nginx --now 2026-01-01T10:00:00Z ARGS`: what it prints.
fn ingress_nginx_block(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
        .args([
            "block",
            "--target",
            "ingress-nginx",
            "--now",
            "2026-01-01T10:00:00Z",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `block-cidrs` as `ingress-tap block --target ingress-nginx` writes it.
fn block_cidrs() -> String {
    let yaml = ingress_nginx_block(&[
        "--trusted-proxy",
        "127.0.0.1",
        "203.0.113.7",
        "198.51.100.0/24",
    ]);
    let configmap: serde_json::Value = serde_norway::Deserializer::from_str(&yaml)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .find(|value: &serde_json::Value| value["kind"] == "ConfigMap")
        .expect("a ConfigMap in the output");
    configmap["data"]["block-cidrs"]
        .as_str()
        .expect("block-cidrs is a string")
        .to_owned()
}

fn run_ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn blocked_addresses_get_403_after_the_real_ip_step() {
    if std::env::var_os(IN_NAMESPACE).is_none() {
        let output = Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(IN_NAMESPACE, "1")
            .output()
            .expect("run unshare (util-linux)");
        assert!(
            output.status.success(),
            "the test failed inside its network namespace (unshare --net needs root):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The inner run must really have run the test, not filtered it away.
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("1 passed"), "inner run: {said}");
        return;
    }
    run_ip(&["link", "set", "lo", "up"]);
    run_ip(&["addr", "add", "203.0.113.7/32", "dev", "lo"]);

    let cidrs = block_cidrs();
    assert_eq!(cidrs, "198.51.100.0/24,203.0.113.7/32");
    let deny_lines = ingress_tap_core::block::targets::ingress_nginx::nginx_deny_lines(&cidrs);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The safe setting: only the proxy is trusted.
        let dir = tempfile::tempdir().unwrap();
        let nginx = Nginx::start(dir.path(), "127.0.0.1", &deny_lines);
        nginx.wait_ready().await;
        let cases: [(&str, Ipv4Addr, Option<&str>, u16); 6] = [
            (
                "blocked client via the proxy",
                TRUSTED_PROXY,
                Some("203.0.113.7"),
                403,
            ),
            (
                "blocked range via the proxy",
                TRUSTED_PROXY,
                Some("198.51.100.20"),
                403,
            ),
            (
                "other client via the proxy",
                TRUSTED_PROXY,
                Some("192.0.2.33"),
                200,
            ),
            // The client forged its own X-Forwarded-For; the proxy appended the real address,
            // and nginx walks back only through trusted hops.
            (
                "forged first hop via the proxy",
                TRUSTED_PROXY,
                Some("192.0.2.33, 198.51.100.20"),
                403,
            ),
            // A blocked client connecting directly cannot talk its way out with a header.
            (
                "blocked peer forging a header",
                BLOCKED_CLIENT,
                Some("192.0.2.33"),
                403,
            ),
            // Nor can an untrusted peer get someone else blocked: it is judged by itself.
            (
                "untrusted peer naming a blocked address",
                UNTRUSTED_PEER,
                Some("203.0.113.7"),
                200,
            ),
        ];
        for (case, peer, forwarded, expected) in cases {
            let status = status_from(peer, forwarded).await;
            assert_eq!(status, expected, "{case}:\n{}", nginx.diagnostics());
        }
        drop(nginx);

        // ingress-nginx's default with use-forwarded-headers trusts every peer: then the
        // forged header does unblock, which is what the target's warning says.
        let dir = tempfile::tempdir().unwrap();
        let nginx = Nginx::start(dir.path(), "0.0.0.0/0", &deny_lines);
        nginx.wait_ready().await;
        let status = status_from(BLOCKED_CLIENT, Some("192.0.2.33")).await;
        assert_eq!(
            status,
            200,
            "with 0.0.0.0/0 trusted a forged header escapes the block:\n{}",
            nginx.diagnostics()
        );
        drop(nginx);

        // Unblocking the last client of an Ingress: the page answers again (an empty
        // denylist-source-range would make ingress-nginx answer 503 on every path).
        let work = tempfile::tempdir().unwrap();
        let blocked = ingress_run(&["203.0.113.7"]);
        let deny = location_directives(&blocked);
        assert_eq!(deny, "deny 203.0.113.7/32;\n");
        let previous = work.path().join("ingress.yaml");
        std::fs::write(&previous, &blocked).unwrap();
        let emptied = ingress_run(&[
            "--existing",
            previous.to_str().unwrap(),
            "--remove",
            "203.0.113.7",
        ]);
        for (directives, expected) in [(deny, 403), (location_directives(&emptied), 200)] {
            let dir = tempfile::tempdir().unwrap();
            let nginx = Nginx::start(dir.path(), "127.0.0.1", &directives);
            nginx.wait_ready().await;
            let status = status_from(BLOCKED_CLIENT, None).await;
            assert_eq!(status, expected, "{directives:?}:\n{}", nginx.diagnostics());
        }
    });
}

/// `ingress-tap block --target ingress-nginx --ingress web/shop ARGS`: the Ingress as YAML.
fn ingress_run(args: &[&str]) -> String {
    ingress_nginx_block(&[&["--ingress", "web/shop"][..], args].concat())
}

/// What ingress-nginx renders into the Ingress's locations from its denylist annotation:
/// `deny` lines, nothing without the annotation, and `return 503` for a value it refuses (an
/// empty one among them), as it does for any annotation that fails validation.
fn location_directives(yaml: &str) -> String {
    let ingress: serde_json::Value = serde_norway::Deserializer::from_str(yaml)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .find(|value: &serde_json::Value| value["kind"] == "Ingress")
        .expect("an Ingress in the output");
    match ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/denylist-source-range"]
        .as_str()
    {
        None => String::new(),
        Some(value) if value.trim().is_empty() => "return 503;\n".to_owned(),
        Some(value) => ingress_tap_core::block::targets::ingress_nginx::nginx_deny_lines(value),
    }
}
