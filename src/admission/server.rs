//! The admission endpoint: axum on tokio-rustls, with the limits a webhook in the pod
//! creation path needs.
//!
//! Limits, all in [`Limits`]: a TLS handshake must finish in `handshake_timeout`; HTTP/1
//! request headers must arrive within `header_read_timeout`; a body must arrive within
//! `body_timeout` and be at most `body_limit` bytes (413 above); at most `max_connections`
//! connections are open at once (further ones are closed at accept), so neither slow nor idle
//! clients can starve the API server's own connections for long. On shutdown the listener
//! closes first, in-flight reviews finish, then connections close (bounded by
//! `shutdown_grace`).

use super::handler::{self, Outcome, ReviewError};
use super::metrics::WebhookMetrics;
use crate::inject::InjectConfig;
use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Resource limits of the admission port.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body. The API server's own limit for an object is 3 MiB.
    pub body_limit: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for HTTP/1 request headers to arrive.
    pub header_read_timeout: Duration,
    /// Time allowed for a request body to arrive.
    pub body_timeout: Duration,
    /// Connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// How long shutdown waits for open connections to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_limit: 3 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// What the `/mutate` handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The injection config in force; swapped whole on reload.
    pub config: Arc<ArcSwap<InjectConfig>>,
    /// Where reviews are counted.
    pub metrics: Arc<WebhookMetrics>,
}

/// The admission router: `POST /mutate`.
pub fn router(state: AppState, limits: &Limits) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .with_state(state)
}

async fn mutate(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let config = state.config.load();
    let result = handler::review(&body, &config);
    state
        .metrics
        .review_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(answer) => {
            let outcome = answer.outcome;
            state.metrics.count(outcome.label(), outcome.reason());
            // Denials are what operators look for; every review is counted in the metrics, so
            // the line for each one is only worth its cost when debugging.
            if let Outcome::Denied(reason) = outcome {
                // Debug formatting: a pod name is not validated before mutating admission, and
                // must not be able to write newlines or escape sequences into the log.
                tracing::info!(
                    uid = ?answer.uid,
                    namespace = ?answer.namespace,
                    pod = ?answer.pod_name(),
                    outcome = outcome.label(),
                    reason,
                    dry_run = answer.dry_run,
                    "review"
                );
            } else {
                tracing::debug!(
                    uid = ?answer.uid,
                    namespace = ?answer.namespace,
                    pod = ?answer.pod_name(),
                    outcome = outcome.label(),
                    reason = outcome.reason(),
                    dry_run = answer.dry_run,
                    "review"
                );
            }
            ([(header::CONTENT_TYPE, "application/json")], answer.body).into_response()
        }
        Err(err) => {
            let reason = match err {
                ReviewError::NotJson(_) => "not_json",
                ReviewError::NotAdmissionReview(_) => "not_admission_review",
                ReviewError::NoRequest => "no_request",
                ReviewError::NoObject => "no_object",
            };
            state.metrics.count("error", reason);
            // Debug formatting quotes and escapes: request text inside an error message (an
            // unknown enum value, say) cannot start a forged log line.
            tracing::warn!(error = ?err.to_string(), "rejected a malformed review");
            (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response()
        }
    }
}

/// The runtime the webhook serves on, with `worker_threads` threads.
///
/// One thread, the default, is tokio's current-thread runtime. A review costs a few
/// microseconds of CPU, so one thread answers tens of thousands a second, far more than API
/// servers send. The work-stealing scheduler would wake a second thread to take work whenever
/// one is busy, and each wake-up costs about as much as the review it moves (measured in
/// docs/benchmarks.md, sixth round). Replicas, needed for availability anyway, are the way to
/// scale. More threads use the work-stealing scheduler, for a pod given several cores.
pub fn serving_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(worker_threads);
        builder
    };
    builder.enable_all().build()
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then drains.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Limits,
    metrics: Arc<WebhookMetrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    tokio::pin!(shutdown);

    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached; closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let metrics = metrics.clone();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            metrics.open_connections.inc();
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
            metrics.open_connections.dec();
        });
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
}
