//! `ingress-tap webhook`: where it listens, its certificate, and the limits every client is held to.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `ingress-tap webhook` options.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookOptions {
    /// Address of the HTTPS admission port. Default: 0.0.0.0:8443 with --tls-cert, else
    /// 127.0.0.1:8443 (the generated certificate is for localhost only).
    #[arg(long, env = "INGRESS_TAP_LISTEN", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Address of the plain-HTTP health and metrics port (/healthz, /readyz, /metrics).
    /// Default: 0.0.0.0:8080 with --tls-cert, else 127.0.0.1:8080. An IPv6 address may be
    /// written without brackets (`fd00::1:8080`), as `$(POD_IP):8080` expands to.
    #[arg(long, env = "INGRESS_TAP_HEALTH_LISTEN", value_parser = parse_listen)]
    pub health_listen: Option<SocketAddr>,
    /// PEM certificate chain to serve (tls.crt of a Secret). Reloaded when it changes.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (tls.key of a Secret). Reloaded when it changes.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle (ca.crt of a Secret): a certificate is taken, at start and on reload,
    /// only if it chains to one of these. Without it the chain is not checked; validity dates
    /// and the key always are.
    #[arg(long, requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Injection config file (YAML). Reloaded when it changes; built-in defaults without it.
    #[arg(long, env = "INGRESS_TAP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Without --tls-cert: where the generated CA and a sample review are written.
    /// Default: a new directory under the system temp dir.
    #[arg(long)]
    pub dev_dir: Option<PathBuf>,
    /// Largest accepted AdmissionReview body, in bytes (413 above).
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Connections open at once on the admission port; more are closed at accept.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections open at once from one address on the admission port (never more than half
    /// of --max-connections).
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_peer: usize,
    /// Seconds a client has for its TLS handshake, and for a whole request (head and body
    /// together): a slow client is answered 408 or disconnected after this.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub client_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request in flight.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_seconds: u64,
    /// Seconds after which a connection is closed (gracefully), however busy.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub max_connection_age_seconds: u64,
    /// Bytes of request bodies held at once, by all requests together; bodies past it get 503
    /// with Retry-After. Default: a quarter of the container's memory limit (cgroup), or
    /// 32 MiB without one; never less than --max-body-bytes.
    #[arg(long)]
    pub max_inflight_body_bytes: Option<usize>,
}

/// Parses a listen address: `IP:port`, `[IPv6]:port`, or a bare IPv6 address and port.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (ip, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not an address and port"))?;
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("{text:?} is not an address and port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
    Ok(SocketAddr::new(ip, port))
}
