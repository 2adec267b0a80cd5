//! HTTP connections under limits, for every port the project serves (the admission port over
//! TLS, the health and metrics ports in plain HTTP).
//!
//! What one client can hold is bounded, so that it cannot keep the API server (or the kubelet)
//! from being served:
//!
//! - **slots**: at most [`ConnLimits::max_connections`] connections at once, and at most
//!   [`ConnLimits::max_connections_per_peer`] from one address. A connection past either is
//!   closed at accept, counted in `connections_refused_total{reason}` and logged at most once
//!   per [`REFUSAL_LOG_INTERVAL`] with the count, never once per connection;
//! - **time**: a TLS handshake must finish in [`ConnLimits::handshake_timeout`]; a request,
//!   head and body together, must arrive within [`ConnLimits::request_timeout`] (the deadline
//!   is in the request's extensions as [`RequestDeadline`]; the body reader enforces it); a
//!   connection with no request in flight for [`ConnLimits::idle_timeout`] is shut down, and so
//!   is every connection older than [`ConnLimits::max_age`], however busy. Shutting down is
//!   graceful (HTTP/2 GOAWAY, HTTP/1.1 `connection: close`) and bounded: whatever is left after
//!   one more `request_timeout` is dropped;
//! - **HTTP/2**: few concurrent streams, small flow-control windows (what a client can make the
//!   server buffer before a body is read), bounded header lists and reset-stream counts, and
//!   keep-alive pings that close a connection whose peer stopped answering.
//!
//! On shutdown the listener closes first, requests in flight finish, then connections close
//! (bounded by [`ConnLimits::shutdown_grace`]).

use axum::Router;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ingress_tap_core::net::canonical_ip;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How often at most a refused connection is logged; the metric counts every one.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Limits of one listening port.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Connections open at once (including those still in their TLS handshake).
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_connections_per_peer: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a whole request, head and body. HTTP/1.1: from when the connection
    /// is ready for the request (opened, or the previous response sent); HTTP/2: from when the
    /// stream's head arrived (a head whose frames trickle in holds no request, so the idle
    /// timeout bounds it).
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is shut down.
    pub idle_timeout: Duration,
    /// A connection is shut down at this age, busy or not.
    pub max_age: Duration,
    /// Largest request head: HTTP/1.1 read buffer, HTTP/2 header list.
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// How long shutdown waits for open connections to finish.
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_peer: 64,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_age: Duration::from_secs(300),
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 32,
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

impl ConnLimits {
    /// Limits for a plain-HTTP health and metrics port: few connections (probes and scrapes),
    /// small heads, the same timeouts.
    pub fn health() -> Self {
        Self {
            max_connections: 64,
            max_connections_per_peer: 16,
            max_header_bytes: 16 * 1024,
            max_concurrent_streams: 8,
            shutdown_grace: Duration::from_secs(5),
            ..Self::default()
        }
    }

    /// The per-address cap in force: the configured one, but never more than half of all
    /// slots (at least one), so that one address always leaves room for others.
    pub fn effective_per_peer(&self) -> usize {
        self.max_connections_per_peer
            .min((self.max_connections / 2).max(1))
            .max(1)
    }
}

/// When the request must be complete, head and body; set on every request served here.
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline(pub Instant);

/// The address a request came from (IPv4-mapped IPv6 written as IPv4).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// Labels of a refused or closed connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Connection metrics of one port.
#[derive(Clone, Default)]
pub struct ConnMetrics {
    /// Connections open (past the TLS handshake).
    pub open: Gauge,
    /// Connections closed at accept, by reason (`limit`, `peer_limit`).
    pub refused: Family<ReasonLabels, Counter>,
    /// Connections shut down by the server, by reason (`idle`, `max_age`).
    pub closed: Family<ReasonLabels, Counter>,
}

impl ConnMetrics {
    /// Registers the families in `registry` (the caller chooses the prefix).
    pub fn register(registry: &mut Registry, port: &str) -> Self {
        let metrics = Self::default();
        registry.register(
            "open_connections",
            format!("Connections open on the {port} port"),
            metrics.open.clone(),
        );
        registry.register(
            "connections_refused",
            format!(
                "Connections closed at accept on the {port} port, by reason (limit, peer_limit)"
            ),
            metrics.refused.clone(),
        );
        registry.register(
            "connections_closed",
            format!(
                "Connections shut down by the server on the {port} port, by reason (idle, max_age)"
            ),
            metrics.closed.clone(),
        );
        metrics
    }
}

/// How accepted connections become byte streams.
#[derive(Clone)]
pub enum Handshake {
    /// TLS with this acceptor.
    Tls(TlsAcceptor),
    /// Plain TCP.
    Plain,
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    handshake: Handshake,
    app: Router,
    limits: ConnLimits,
    metrics: ConnMetrics,
    port: &'static str,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_connections));
    let peers = Arc::new(Peers::new(limits.effective_per_peer()));
    let refusals = RefusalLog::new(port);
    let builder = Arc::new(builder(&limits));
    let limits = Arc::new(limits);
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);

    loop {
        let (tcp, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%err, port, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let ip = canonical_ip(address.ip());
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics
                .refused
                .get_or_create(&ReasonLabels { reason: "limit" })
                .inc();
            refusals.note("limit", ip, limits.max_connections);
            continue;
        };
        let Some(peer_slot) = peers.admit(ip) else {
            metrics
                .refused
                .get_or_create(&ReasonLabels {
                    reason: "peer_limit",
                })
                .inc();
            refusals.note("peer_limit", ip, peers.per_peer);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let handshake = handshake.clone();
        let app = app.clone();
        let builder = builder.clone();
        let limits = limits.clone();
        let metrics = metrics.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let _slots = (slot, peer_slot);
            match handshake {
                Handshake::Plain => {
                    connection(tcp, ip, app, &builder, &limits, &metrics, stopped).await;
                }
                Handshake::Tls(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            connection(stream, ip, app, &builder, &limits, &metrics, stopped).await;
                        }
                        Ok(Err(err)) => tracing::debug!(peer = %ip, %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!(peer = %ip, "TLS handshake timed out"),
                    }
                }
            }
        });
    }

    drop(listener);
    let _ = stop.send(true);
    // Every connection task holds a slot: all slots back means all connections are done.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!(port, "all connections drained"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(port, "shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
}

fn builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        // hyper's floor for its read buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // What a client can make the server hold before the body reader takes (and budgets)
        // it: one stream's window, and the connection's for all streams together.
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(64));
    builder
}

async fn connection<IO>(
    io: IO,
    peer: IpAddr,
    app: Router,
    builder: &auto::Builder<TokioExecutor>,
    limits: &ConnLimits,
    metrics: &ConnMetrics,
    mut stopped: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let service = ConnService {
        app,
        state: state.clone(),
        peer,
        request_timeout: limits.request_timeout,
    };
    metrics.open.inc();
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let expires = state.born + limits.max_age;
    // Set once the server has started a graceful shutdown: the time after which the
    // connection is dropped whatever it is doing.
    let mut closing: Option<Instant> = None;
    let stop = async move {
        // An error means the server is gone: stop too.
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stop);
    loop {
        let wake = match closing {
            Some(deadline) => deadline,
            None => expires.min(state.idle_deadline(limits.idle_timeout)),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, %err, "connection ended with an error");
                }
                break;
            }
            () = &mut stop, if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + limits.shutdown_grace);
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if closing.is_some() {
                    tracing::debug!(%peer, "connection did not close in time; dropping it");
                    break;
                }
                let reason = if now >= expires {
                    "max_age"
                } else if now >= state.idle_deadline(limits.idle_timeout) {
                    "idle"
                } else {
                    continue;
                };
                metrics.closed.get_or_create(&ReasonLabels { reason }).inc();
                connection.as_mut().graceful_shutdown();
                // Requests in flight have at most this left.
                closing = Some(now + limits.request_timeout + Duration::from_secs(1));
            }
        }
    }
    metrics.open.dec();
}

/// A connection's requests in flight and when it last had none.
struct ConnState {
    born: Instant,
    active: AtomicUsize,
    /// Nanoseconds after `born` at which `active` last dropped to zero (0: never busy yet).
    ready_after: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            active: AtomicUsize::new(0),
            ready_after: AtomicU64::new(0),
        }
    }

    fn ready_since(&self) -> Instant {
        self.born + Duration::from_nanos(self.ready_after.load(Ordering::Acquire))
    }

    /// When the connection counts as idle if nothing starts before: far away while busy.
    fn idle_deadline(&self, idle_timeout: Duration) -> Instant {
        if self.active.load(Ordering::Acquire) > 0 {
            Instant::now() + idle_timeout
        } else {
            self.ready_since() + idle_timeout
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.0.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.ready_after.store(elapsed, Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone)]
struct ConnService {
    app: Router,
    state: Arc<ConnState>,
    peer: IpAddr,
    request_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        // HTTP/1.1's head timer runs from when the connection became ready for the request;
        // the body gets what is left of the same time, so head and body together are bounded.
        let started = if request.version() == hyper::Version::HTTP_2 {
            Instant::now()
        } else {
            self.state.ready_since()
        };
        request
            .extensions_mut()
            .insert(RequestDeadline(started + self.request_timeout));
        request.extensions_mut().insert(Peer(self.peer));
        let in_flight = self.state.begin();
        let response = self.app.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

/// Open connections per address.
struct Peers {
    per_peer: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl Peers {
    fn new(per_peer: usize) -> Self {
        Self {
            per_peer,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.per_peer {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.peers.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Logs refusals at most once per [`REFUSAL_LOG_INTERVAL`], with how many there were.
struct RefusalLog {
    port: &'static str,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn new(port: &'static str) -> Self {
        Self {
            port,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts a refusal; logs (and says so) when the interval since the last line is over.
    fn note(&self, reason: &'static str, peer: IpAddr, limit: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let now = Instant::now();
        if state
            .0
            .is_none_or(|logged| now.duration_since(logged) >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                port = self.port,
                refused = state.1,
                reason,
                limit,
                last_peer = %peer,
                "connections refused at the limit (logged at most every {} s)",
                REFUSAL_LOG_INTERVAL.as_secs()
            );
            *state = (Some(now), 0);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_never_gets_every_slot() {
        let limits = ConnLimits {
            max_connections: 20,
            max_connections_per_peer: 64,
            ..ConnLimits::default()
        };
        assert_eq!(limits.effective_per_peer(), 10);
        let one = ConnLimits {
            max_connections: 1,
            ..ConnLimits::default()
        };
        assert_eq!(one.effective_per_peer(), 1);

        let peers = Arc::new(Peers::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = peers.admit(a).unwrap();
        let _second = peers.admit(a).unwrap();
        assert!(peers.admit(a).is_none());
        assert!(peers.admit(b).is_some());
        drop(first);
        assert!(peers.admit(a).is_some());
    }

    #[tokio::test]
    async fn refusals_are_logged_once_per_interval() {
        let log = RefusalLog::new("test");
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let logged = (0..10_000).filter(|_| log.note("limit", peer, 1)).count();
        assert_eq!(logged, 1);
    }
}
