//! The admission webhook: AdmissionReview v1 over HTTPS, answered by the injection engine.
//!
//! - [`handler`]: one review body in, one response body out (no sockets);
//! - [`server`]: the HTTPS listener with its limits and graceful stop;
//! - [`body`]: request bodies under a deadline and a shared byte budget;
//! - [`tls`]: the serving certificate, hot-swapped on file change;
//! - [`metrics`]: the webhook's metric families;
//! - [`dev`]: the self-contained local mode (a generated CA, a sample review to post).

pub mod body;
pub mod dev;
pub mod handler;
pub mod metrics;
pub mod server;

use crate::cli::webhook::WebhookOptions;
use crate::serve::{ConnLimits, ConnMetrics};
use crate::telemetry::{self, Readiness};
use crate::tls::{self, CertFiles, CertStore};
use crate::watch::FileChanges;
use anyhow::Context;
use arc_swap::ArcSwap;
use body::BodyBudget;
use ingress_tap_core::inject::InjectConfig;
use metrics::WebhookMetrics;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

impl Default for WebhookOptions {
    /// The options of `ingress-tap webhook` given no flags (local mode); a test holds them
    /// equal to the command line's defaults.
    fn default() -> Self {
        Self {
            listen: None,
            health_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            config: None,
            dev_dir: None,
            max_body_bytes: 3 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_peer: 64,
            client_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            max_connection_age_seconds: 300,
            max_inflight_body_bytes: None,
        }
    }
}

/// A webhook that is serving: its bound addresses and a way to stop it.
pub struct RunningWebhook {
    /// The HTTPS admission address actually bound.
    pub addr: SocketAddr,
    /// The health and metrics address actually bound.
    pub health_addr: SocketAddr,
    /// The generated CA (PEM) in local mode; `None` when serving certificate files.
    pub generated_ca_pem: Option<String>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningWebhook {
    /// Stops accepting, lets in-flight reviews finish, and waits for the end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("webhook task failed")?
    }

    /// Waits until the webhook stops by itself (it does not, unless `stop` is sent).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("webhook task failed")?
    }

    /// A handle that stops the webhook when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds both ports, loads config and certificate, and serves until stopped.
pub async fn start(options: WebhookOptions) -> anyhow::Result<RunningWebhook> {
    let local = options.tls_cert.is_none();
    let default_ip = if local { [127, 0, 0, 1] } else { [0, 0, 0, 0] };
    let listen = options
        .listen
        .unwrap_or(SocketAddr::from((default_ip, 8443)));
    let health_listen = options
        .health_listen
        .unwrap_or(SocketAddr::from((default_ip, 8080)));

    anyhow::ensure!(
        options.max_body_bytes > 0,
        "--max-body-bytes must be at least 1"
    );
    anyhow::ensure!(
        options.max_connections > 0,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(
        options.max_connections_per_peer > 0,
        "--max-connections-per-peer must be at least 1"
    );
    let config = Arc::new(ArcSwap::from_pointee(crate::inject_config::load(
        options.config.as_ref(),
    )?));
    let mut registry = Registry::default();
    let metrics = Arc::new(WebhookMetrics::register(&mut registry));
    metrics.config_valid.set(1);
    let connection_metrics = ConnMetrics::register(
        registry.sub_registry_with_prefix("ingress_tap_webhook"),
        "admission",
    );
    let health_metrics = telemetry::register_health_metrics(&mut registry);

    let (store, cert_files, generated_ca_pem) = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            let files = CertFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: options.tls_ca.clone(),
            };
            let store = CertStore::new(
                files
                    .load()
                    .context("cannot load the serving certificate")?,
            );
            (store, Some(files), None)
        }
        _ => {
            let generated = crate::certs::generate(
                &["localhost".into(), "127.0.0.1".into(), "::1".into()],
                "ingress-tap local CA",
            )?;
            let pair = tls::check_pair(
                generated.cert_pem.as_bytes(),
                generated.key_pem.as_bytes(),
                Some((
                    generated.ca_pem.as_bytes(),
                    std::path::Path::new("generated CA"),
                )),
                std::path::Path::new("generated"),
                rustls_pki_types::UnixTime::now(),
            )?;
            (CertStore::new(pair), None, Some(generated.ca_pem))
        }
    };
    metrics.certificate_expiry.set(store.not_after());
    let tls_config = Arc::new(tls::server_config(store.clone())?);

    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let health_listener = TcpListener::bind(health_listen)
        .await
        .with_context(|| format!("cannot listen on {health_listen}"))?;
    let addr = listener.local_addr()?;
    let health_addr = health_listener.local_addr()?;

    let (stop, stopped) = watch::channel(false);
    let readiness = Readiness::default();
    {
        let store = store.clone();
        readiness.add_check(move || {
            store.readiness_problem(time::OffsetDateTime::now_utc().unix_timestamp())
        });
    }
    let client_timeout = Duration::from_secs(options.client_timeout_seconds);
    let timeouts = ConnLimits {
        handshake_timeout: client_timeout,
        request_timeout: client_timeout,
        idle_timeout: Duration::from_secs(options.idle_timeout_seconds),
        max_age: Duration::from_secs(options.max_connection_age_seconds),
        ..ConnLimits::default()
    };
    let connection_limits = ConnLimits {
        max_connections: options.max_connections,
        max_connections_per_peer: options.max_connections_per_peer,
        ..timeouts.clone()
    };
    let health_limits = ConnLimits {
        handshake_timeout: timeouts.handshake_timeout,
        request_timeout: timeouts.request_timeout,
        idle_timeout: timeouts.idle_timeout,
        max_age: timeouts.max_age,
        ..ConnLimits::health()
    };
    let memory_limit = crate::cgroup::container_memory_limit();
    let budget_bytes = body::budget_size(
        options.max_inflight_body_bytes,
        memory_limit,
        options.max_body_bytes,
    );
    let budget = BodyBudget::new(budget_bytes, options.max_body_bytes, metrics.clone());
    tracing::info!(
        body_budget_bytes = budget.total(),
        memory_limit_bytes = memory_limit,
        "request body budget"
    );
    let app = server::router(server::AppState {
        config: config.clone(),
        metrics: metrics.clone(),
        budget,
        body_limit: options.max_body_bytes,
        request_timeout: client_timeout,
    });

    if let Some(path) = options.config.clone() {
        tokio::spawn(reload_config(
            path,
            config,
            metrics.clone(),
            stopped.clone(),
        ));
    }
    if let Some(files) = cert_files {
        tokio::spawn(reload_certificate(
            files,
            store,
            metrics.clone(),
            stopped.clone(),
        ));
    }

    let health = telemetry::health_router(Arc::new(registry), readiness.clone());
    let health_task = tokio::spawn(telemetry::serve_plain(
        health_listener,
        health,
        health_limits,
        health_metrics,
        stopped_future(stopped.clone()),
    ));
    readiness.set(true);
    tracing::info!(%addr, %health_addr, "webhook serving");

    let task = tokio::spawn(async move {
        server::serve_tls(
            listener,
            tls_config,
            app,
            connection_limits,
            connection_metrics,
            stopped_future(stopped),
        )
        .await?;
        health_task.await??;
        Ok(())
    });
    Ok(RunningWebhook {
        addr,
        health_addr,
        generated_ca_pem,
        stop,
        task,
    })
}

async fn stopped_future(mut stopped: watch::Receiver<bool>) {
    // An error means every sender is gone: nobody can stop us any more, so stop now.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn reload_config(
    path: PathBuf,
    config: Arc<ArcSwap<InjectConfig>>,
    metrics: Arc<WebhookMetrics>,
    stopped: watch::Receiver<bool>,
) {
    let mut changes = FileChanges::new(std::slice::from_ref(&path));
    loop {
        tokio::select! {
            () = changes.changed() => {}
            () = stopped_future(stopped.clone()) => return,
        }
        match crate::inject_config::load(Some(&path)) {
            Ok(new) => {
                config.store(Arc::new(new));
                metrics.config_valid.set(1);
                metrics
                    .config_reloads
                    .get_or_create(&metrics::ReloadLabels { result: "ok" })
                    .inc();
                tracing::info!(path = %path.display(), "injection config reloaded");
            }
            Err(err) => {
                metrics.config_valid.set(0);
                metrics
                    .config_reloads
                    .get_or_create(&metrics::ReloadLabels { result: "error" })
                    .inc();
                tracing::error!(path = %path.display(), error = crate::telemetry::error_chain(&err), "new injection config rejected; keeping the previous one");
            }
        }
    }
}

async fn reload_certificate(
    files: CertFiles,
    store: Arc<CertStore>,
    metrics: Arc<WebhookMetrics>,
    stopped: watch::Receiver<bool>,
) {
    let mut changes = FileChanges::new(&files.watched());
    loop {
        tokio::select! {
            () = changes.changed() => {}
            () = stopped_future(stopped.clone()) => return,
        }
        match files.load() {
            Ok(pair) => {
                metrics.certificate_expiry.set(pair.not_after);
                store.replace(pair);
                metrics
                    .certificate_reloads
                    .get_or_create(&metrics::ReloadLabels { result: "ok" })
                    .inc();
                tracing::info!(cert = %files.cert.display(), "serving certificate reloaded");
            }
            Err(err) => {
                metrics
                    .certificate_reloads
                    .get_or_create(&metrics::ReloadLabels { result: "error" })
                    .inc();
                tracing::warn!(%err, "serving certificate not reloaded; keeping the previous one");
                store.refuse(err.to_string());
            }
        }
    }
}

fn print_instructions(instructions: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{instructions}")?;
    stdout.flush()
}

/// `ingress-tap webhook`: serve until SIGTERM.
pub async fn run(options: WebhookOptions) -> anyhow::Result<()> {
    let dev_dir = options.dev_dir.clone();
    let signal = telemetry::shutdown_signal();
    let running = start(options).await?;
    if let Some(ca_pem) = &running.generated_ca_pem {
        let instructions =
            dev::write_and_describe(dev_dir, ca_pem, running.addr, running.health_addr)?;
        // A closed stdout (a pipe whose reader went away) must not stop a serving webhook:
        // `println!` would panic on it.
        if let Err(err) = print_instructions(&instructions) {
            tracing::warn!(%err, "cannot print the local-mode instructions; serving on");
        }
    }
    let stop = running.stopper();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("stopping: finishing in-flight reviews");
        let _ = stop.send(true);
    });
    running.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::webhook::parse_listen;

    #[test]
    fn listen_addresses_may_be_bare_ipv6() {
        assert_eq!(
            parse_listen("10.1.2.3:8080").unwrap(),
            "10.1.2.3:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("fd00::1:8080").unwrap(),
            "[fd00::1]:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[fd00::1]:8080").unwrap(),
            "[fd00::1]:8080".parse().unwrap()
        );
        assert!(parse_listen("localhost:8080").is_err());
        assert!(parse_listen("10.1.2.3").is_err());
        assert!(parse_listen("10.1.2.3:99999").is_err());
    }

    #[test]
    fn default_options_are_the_command_line_defaults() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            options: WebhookOptions,
        }
        let parsed = Command::try_parse_from(["webhook"]).unwrap().options;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", WebhookOptions::default())
        );
    }
}
