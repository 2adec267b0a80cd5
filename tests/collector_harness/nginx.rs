//! Real nginx for the collector tests: the spec's log template verbatim, with nginx's default
//! escaping, one foreground process whose files all live in a test directory.

use super::nginx_process;
use super::{free_port, stop_child, wait_for, DEADLINE};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The log format of the ingress-log spec, verbatim, with nginx's default escaping.
pub const INGRESS_TEMPLATE: &str = r#"tigera_secure_ee_ingress: {"source_port": $realip_remote_port, "destination_ip": "$server_addr", "destination_port": $server_port, "source_ip": "$realip_remote_addr", "x-forwarded-for": "$http_x_forwarded_for", "x-real-ip": "$http_x_real_ip"}"#;

/// nginx as the current user, everything it writes inside `dir`, one process in the
/// foreground; killed when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    pub async fn start(dir: &Path, access_log: &Path) -> Nginx {
        Nginx::start_with(dir, access_log, "").await
    }

    /// As [`Nginx::start`], with `extra` added to the `http` block.
    pub async fn start_with(dir: &Path, access_log: &Path, extra: &str) -> Nginx {
        let port = free_port();
        let http_directives = format!(
            r#"    {extra}
    log_format ingress '{INGRESS_TEMPLATE}';
    access_log {log} ingress;
    keepalive_requests 1000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            return 200 "ok\n";
        }}
    }}"#,
            log = access_log.display(),
        );
        let child = nginx_process::spawn(dir, &nginx_process::config(dir, &http_directives));
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

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn diagnostics(&self) -> String {
        nginx_process::diagnostics(&self.dir, &["ingress.log"])
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// One client keep-alive connection to nginx.
pub struct Client {
    stream: TcpStream,
    pub local_port: u16,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to nginx");
        let local_port = stream.local_addr().unwrap().port();
        Client { stream, local_port }
    }

    /// A connection from another loopback address (`127.0.0.2`, say), so that nginx logs a
    /// second, distinct peer.
    #[allow(dead_code)]
    pub async fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::new(local, 0))
            .expect("bind a loopback address");
        let stream = socket.connect(addr).await.expect("connect to nginx");
        let local_port = stream.local_addr().unwrap().port();
        Client { stream, local_port }
    }

    /// Sends a GET with `headers` written byte for byte (so odd values reach nginx as they are)
    /// and reads the whole response, keeping the connection open.
    pub async fn get(&mut self, headers: &[(&str, &str)]) {
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
