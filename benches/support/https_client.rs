//! The HTTPS client the webhook load harness and the webhook soak share: keep-alive HTTP/1.1
//! over TLS verified against a caBundle, posting AdmissionReviews as the API server does, and
//! the helpers both use to run the release binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use ingress_tap::tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The name the serving certificate is issued for and the client checks.
pub const SERVER_NAME: &str = "localhost";

/// One keep-alive connection's request side.
pub type Sender = http1::SendRequest<Full<Bytes>>;

/// Why one request did not get the expected answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connection failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[source] hyper::http::Error),
    #[error("status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer: {0}")]
    Answer(String),
}

impl CallError {
    /// Whether the connection is unusable afterwards.
    pub fn breaks_connection(&self) -> bool {
        matches!(self, CallError::Connect(_) | CallError::Http(_))
    }
}

/// A TLS client trusting only `ca_pems` (as a caBundle during a rotation may hold two),
/// offering HTTP/1.1 only. Without `resumption` every handshake is a full one, as the API
/// server's client makes them: a resumed session keeps the certificate of the session it
/// resumes.
pub fn connector(ca_pems: &[&str], resumption: bool) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.context("invalid CA PEM")?)?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A new keep-alive HTTP/1.1 connection over verified TLS, and the certificate the server
/// presented.
pub async fn connect(
    addr: SocketAddr,
    tls: &TlsConnector,
) -> Result<(Sender, Option<CertificateDer<'static>>), CallError> {
    let tcp = TcpStream::connect(addr).await.map_err(CallError::Connect)?;
    tcp.set_nodelay(true).map_err(CallError::Connect)?;
    let name = ServerName::try_from(SERVER_NAME)
        .map_err(|err| CallError::Connect(std::io::Error::other(err)))?;
    let stream = tls.connect(name, tcp).await.map_err(CallError::Connect)?;
    let served = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|certificate| certificate.clone().into_owned());
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(CallError::Http)?;
    tokio::spawn(connection);
    Ok((sender, served))
}

/// Posts `review` to `/mutate` and returns the answer's body; anything but 200 is an error.
pub async fn post_review(sender: &mut Sender, review: Bytes) -> Result<Bytes, CallError> {
    sender.ready().await.map_err(CallError::Http)?;
    let request = Request::post("/mutate")
        .header(HOST, SERVER_NAME)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(review))
        .map_err(CallError::Request)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(CallError::Http)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(CallError::Http)?
        .to_bytes();
    if status != 200 {
        return Err(CallError::Status {
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
    }
    Ok(body)
}

/// The release binary beside this executable: `target/release/deps/webhook_load-…` or
/// `target/release/examples/soak_webhook` → `target/release/ingress-tap`.
pub fn webhook_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("unexpected executable path {}", exe.display()))?;
    let binary = profile_dir.join(format!("ingress-tap{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        binary.is_file(),
        "{} is missing: run cargo build --release first",
        binary.display()
    );
    Ok(binary)
}

/// A loopback port nobody listens on right now, for a child process to bind.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind loopback")?;
    Ok(listener.local_addr()?)
}
