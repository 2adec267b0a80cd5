//! Logging, metrics and health endpoints shared by every role.
//!
//! Each role registers its own metric families in one [`prometheus_client::registry::Registry`]
//! and serves it, with `/healthz` and `/readyz`, on a plain-HTTP port separate from its data
//! path, so probes and scrapes never compete with admission traffic or need TLS.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use ingress_tap_core::log_level::{LogLevel, UnknownLogLevel};

/// An error and its causes on one line, `a: b: c`, as `{:#}` writes them, but without a cause
/// whose text is already in what came before: many error types quote their source in their
/// own message, and the reader should see each problem once.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// Installs the process-wide logger writing to stderr (stdout may carry data: the collector's
/// JSON reports). `json` selects one JSON object per line, for log pipelines.
pub fn init_logging(level: LogLevel, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level.filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second initialisation (tests) is harmless: the first logger stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A condition that makes a ready role unready: `Some(reason)` while it holds.
pub type ReadinessCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Readiness as a cheap shared flag, set once everything the role needs is loaded, and checks
/// that can take it back while they report a problem (said on `/readyz`).
#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    checks: Arc<std::sync::RwLock<Vec<ReadinessCheck>>>,
}

impl Readiness {
    /// Marks the role ready (or not).
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
    /// Whether the role is ready.
    pub fn is_ready(&self) -> bool {
        self.problem().is_none()
    }
    /// Adds a check consulted on every readiness probe.
    pub fn add_check(&self, check: impl Fn() -> Option<String> + Send + Sync + 'static) {
        self.checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(check));
    }
    /// Why the role is not ready, or `None` when it is.
    pub fn problem(&self) -> Option<String> {
        if !self.ready.load(Ordering::Acquire) {
            return Some("starting".to_owned());
        }
        let checks = self.checks.read().unwrap_or_else(|e| e.into_inner());
        checks.iter().find_map(|check| check())
    }
}

#[derive(Clone)]
struct HealthState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// `/healthz` (the process answers), `/readyz` (503 until ready) and `/metrics`
/// (Prometheus text format) for `registry`.
pub fn health_router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HealthState {
            registry,
            readiness,
        })
}

async fn readyz(State(state): State<HealthState>) -> Response {
    match state.readiness.problem() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<HealthState>) -> Response {
    let mut body = String::with_capacity(8 * 1024);
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

/// Registers the health port's connection metrics (`ingress_tap_health_…`) in `registry`.
pub fn register_health_metrics(registry: &mut Registry) -> crate::serve::ConnMetrics {
    crate::serve::ConnMetrics::register(
        registry.sub_registry_with_prefix("ingress_tap_health"),
        "health",
    )
}

/// Serves `router` on a plain-HTTP listener under `limits` until `shutdown` resolves. The
/// port answers probes and scrapes, so it has the same kinds of limits as a data port: a
/// client that opens many connections or sends half a request is cut off, never the kubelet.
pub async fn serve_plain(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: crate::serve::ConnLimits,
    metrics: crate::serve::ConnMetrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::serve::serve(
        listener,
        crate::serve::Handshake::Plain,
        router,
        limits,
        metrics,
        "health",
        shutdown,
    )
    .await
}

/// Resolves on SIGTERM or SIGINT: the signals Kubernetes and a terminal send to stop.
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives during startup is not lost (it would otherwise end the process with the
/// default action instead of a clean stop).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (term, int) => {
                let err = term
                    .err()
                    .or(int.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::error!(%err, "cannot listen for stop signals; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_quoted_by_its_parent_is_written_once() {
        let yaml = serde_norway::from_str::<ingress_tap_core::detect::TraceConfig>("bogus_key: 1")
            .unwrap_err();
        let error = anyhow::Error::new(ingress_tap_core::detect::TraceConfigError::from(yaml))
            .context("invalid trace config t.yaml");
        let text = error_chain(&error);
        assert_eq!(
            text.matches("unknown field `bogus_key`").count(),
            1,
            "{text}"
        );
        assert!(text.starts_with("invalid trace config t.yaml: "), "{text}");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
