//! Helpers shared by the integration tests: an HTTPS client that verifies the webhook the way
//! the API server does (against a caBundle), and waiting on conditions with a deadline.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TLS client trusting only `ca_pem`, as the API server trusts only the caBundle.
pub fn connector(ca_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Opens a verified TLS connection to `addr`, checking the certificate for `server_name`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    connector(ca_pem, alpn).connect(name, tcp).await
}

/// An HTTP/1.1 keep-alive connection over verified TLS.
pub async fn http1_client(
    addr: SocketAddr,
    ca_pem: &str,
) -> std::io::Result<http1::SendRequest<Full<Bytes>>> {
    let tls = tls_connect(addr, ca_pem, "localhost", &[b"http/1.1"]).await?;
    let (sender, connection) = http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// An HTTP/2 connection over verified TLS, negotiated by ALPN as the API server does.
pub async fn http2_client(
    addr: SocketAddr,
    ca_pem: &str,
) -> std::io::Result<http2::SendRequest<Full<Bytes>>> {
    let tls = tls_connect(addr, ca_pem, "localhost", &[b"h2"]).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A POST of `body` to `path`.
pub fn post(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .header("host", "localhost")
        .body(Full::new(body.into()))
        .unwrap()
}

/// Reads a whole response body.
pub async fn body_of(response: Response<hyper::body::Incoming>) -> (u16, Vec<u8>) {
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

/// Polls `condition` until it holds or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// A plain-HTTP GET on the health port.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = body_of(sender.send_request(request).await.unwrap()).await;
    (status, String::from_utf8(body).unwrap())
}

/// A TCP connection to `addr` from the loopback address `source` (any of 127.0.0.0/8): to the
/// server, a client other than 127.0.0.1.
pub async fn tcp_from(source: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

/// [`tls_connect`] from the loopback address `source`.
pub async fn tls_connect_from(
    source: [u8; 4],
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(source, addr).await?;
    let name = ServerName::try_from("localhost".to_owned()).unwrap();
    connector(ca_pem, alpn).connect(name, tcp).await
}

/// An HTTP/2 connection from `source`, and the task driving it: it ends when the connection
/// does.
pub async fn http2_client_from(
    source: [u8; 4],
    addr: SocketAddr,
    ca_pem: &str,
) -> std::io::Result<(http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>)> {
    let tls = tls_connect_from(source, addr, ca_pem, &[b"h2"]).await?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, task))
}

/// The value of the series `series` (name and labels as exposed) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

/// This process's resident memory, in bytes.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Runs `command` with `stdin` written to its standard input and its output captured.
pub fn output_with_stdin(command: &mut std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
