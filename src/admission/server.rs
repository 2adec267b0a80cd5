//! The admission endpoint: axum on tokio-rustls, with the limits a webhook in the pod
//! creation path needs.
//!
//! Connections are served by [`crate::serve`] (connection slots per port and per address,
//! handshake, request, idle and age limits, HTTP/2 limits, graceful stop); request bodies are
//! read by [`super::body`] (size limit, the request deadline, the shared byte budget). All
//! limits are in [`Limits`].

use super::body::{self, BodyBudget, BodyError};
use super::handler::{self, Outcome, ReviewError};
use super::metrics::{ReasonLabels, WebhookMetrics};
use crate::serve::{self, ConnLimits, ConnMetrics, Handshake};
use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use ingress_tap_core::inject::InjectConfig;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Resource limits of the admission port.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connection limits (slots, timeouts, HTTP/2).
    pub connections: ConnLimits,
    /// Largest accepted request body. The API server's own limit for an object is 3 MiB.
    pub body_limit: usize,
    /// Bytes of request bodies held at once, by all requests together.
    pub body_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: ConnLimits::default(),
            body_limit: 3 * 1024 * 1024,
            body_budget: body::DEFAULT_BUDGET,
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
    /// The byte budget request bodies are read under.
    pub budget: Arc<BodyBudget>,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// Time for a request without a deadline from the connection layer.
    pub request_timeout: Duration,
}

/// The admission router: `POST /mutate`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .with_state(state)
}

/// The answer to a request whose body was not read, counted by reason. A body left unread
/// on an HTTP/1.1 connection leaves it unusable, so that connection is closed.
pub fn refuse_body(metrics: &WebhookMetrics, error: BodyError, version: Version) -> Response {
    metrics
        .requests_refused
        .get_or_create(&ReasonLabels {
            reason: error.label(),
        })
        .inc();
    let (status, text) = match error {
        BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        BodyError::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many request bodies in flight; retry shortly\n",
        ),
        BodyError::Timeout => (
            StatusCode::REQUEST_TIMEOUT,
            "request not complete within the deadline\n",
        ),
        BodyError::Broken => (StatusCode::BAD_REQUEST, "request body broken off\n"),
    };
    let mut response = (status, text).into_response();
    if error == BodyError::Busy {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if version != Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn mutate(State(state): State<AppState>, request: Request) -> Response {
    let version = request.version();
    let (body, _reservation) = match body::read(
        request,
        state.body_limit,
        &state.budget,
        state.request_timeout,
    )
    .await
    {
        Ok(read) => read,
        Err(error) => return refuse_body(&state.metrics, error, version),
    };
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
/// one is busy, and each wake-up costs about as much as the review it moves (docs/benchmarks.md,
/// "One serving thread or two"). Replicas, needed for availability anyway, are the way to
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
    limits: ConnLimits,
    metrics: ConnMetrics,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve::serve(
        listener,
        Handshake::Tls(TlsAcceptor::from(tls)),
        app,
        limits,
        metrics,
        "admission",
        shutdown,
    )
    .await
}
