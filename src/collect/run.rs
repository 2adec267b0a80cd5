//! The collector's I/O shell: the tailer, the interval clock, the sink (Felix or stdout), the
//! checkpoint, the metrics listener and the stop signal.
//!
//! The read position is saved only up to the last interval whose reports are finished (sent,
//! or dropped from the full queue and counted), as Vector checkpoints after acknowledgements:
//! a collector killed with reports still queued re-reads their lines on restart instead of
//! losing them, and lines whose reports Felix already has are never read again.

use super::detection::{self, EventSink, TraceCollector, TraceMetrics};
use super::detector_thread::{DetectorThread, Publish, PublishHook};
use super::felix::{self, FelixHandle, FelixOptions};
use super::metrics::CollectorMetrics;
use super::pipeline::Pipeline;
use super::stdout;
use super::tail::{checkpoint, Checkpoint, TailConfig, Tailer};
use crate::cli::collect::CollectOptions;
use crate::telemetry::{self, Readiness};
use anyhow::Context;
use ingress_tap_core::collect::aggregate::IntervalReport;
use ingress_tap_core::collect::origin::ClientIpPolicy;
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where closed intervals go.
enum Sink {
    Felix(FelixHandle),
    /// JSON lines on stdout, at most this many http_data entries a line; an interval is
    /// finished once written.
    Stdout(AtomicU64, usize),
}

impl Sink {
    fn submit(&self, report: IntervalReport) -> u64 {
        match self {
            Sink::Felix(handle) => handle.submit(report),
            Sink::Stdout(written, message_entries) => {
                let mut out = std::io::stdout().lock();
                if let Err(err) = stdout::write_interval(&mut out, &report, *message_entries) {
                    tracing::error!(%err, "cannot write reports to stdout");
                }
                written.fetch_add(1, Ordering::AcqRel) + 1
            }
        }
    }

    fn finished(&self) -> u64 {
        match self {
            Sink::Felix(handle) => handle.finished(),
            Sink::Stdout(written, _) => written.load(Ordering::Acquire),
        }
    }
}

/// A collector that is running: where its metrics are served, and how to stop it.
pub struct RunningCollector {
    /// The health and metrics address actually bound.
    pub metrics_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningCollector {
    /// Closes the current interval, sends it (bounded wait), checkpoints and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("collector task failed")?
    }

    /// A handle that stops the collector when `true` is sent.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Waits for the collector to end.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("collector task failed")?
    }
}

/// Starts the collector with `options` and the client-IP `policy`.
pub async fn start(
    options: CollectOptions,
    policy: ClientIpPolicy,
) -> anyhow::Result<RunningCollector> {
    let mut registry = Registry::default();
    let metrics = Arc::new(CollectorMetrics::register(&mut registry));
    let readiness = Readiness::default();
    let budget = crate::cgroup::memory_budget(options.memory_limit);
    metrics
        .memory_limit_bytes
        .set(i64::try_from(budget.limit).unwrap_or(i64::MAX));
    let limits = budget.aggregator_limits(options.requests_per_interval);

    let checkpoint_path = options
        .checkpoint_path
        .clone()
        .unwrap_or_else(|| TailConfig::default_checkpoint_path(&options.log_path));
    let mut tail_config = TailConfig::new(options.log_path.clone());
    tail_config.max_line_bytes = usize::try_from(options.max_line_bytes).unwrap_or(usize::MAX);
    tail_config.checkpoint_path = checkpoint_path.clone();
    let tailer = Tailer::open(tail_config)
        .with_context(|| format!("cannot follow {}", options.log_path.display()))?;

    let (sink, sender_task) = match &options.felix_dial_target {
        Some(target) => {
            let mut felix_options = FelixOptions::new(felix::socket_path(target));
            felix_options.queue_intervals =
                usize::try_from(options.queue_intervals).unwrap_or(usize::MAX);
            felix_options.queue_bytes = budget.queue_bytes(&limits);
            felix_options.message_entries = budget.message_entries();
            let (handle, task) = felix::spawn(felix_options, metrics.clone());
            (Sink::Felix(handle), Some(task))
        }
        None => (
            Sink::Stdout(AtomicU64::new(0), budget.message_entries()),
            None,
        ),
    };

    let listener = tokio::net::TcpListener::bind(options.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.metrics_listen))?;
    let metrics_addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);

    let attribution = policy.mode();
    let headers_believed_from_anyone = policy == ClientIpPolicy::Reference;
    let mut pipeline = Pipeline::new(policy, limits, metrics.clone());
    let (published, list_updates) = match options.trace.load()? {
        Some(config) => {
            if config.memory_bound_bytes() > budget.detector {
                tracing::warn!(
                    detector_bytes = config.memory_bound_bytes(),
                    share_bytes = budget.detector,
                    memory_limit_bytes = budget.limit,
                    "the trace settings may take more memory than the detector's share of the \
                     memory limit; lower them or raise INGRESS_TAP_MEMORY_LIMIT with the limit"
                );
            }
            let trace_metrics = Arc::new(TraceMetrics::default());
            registry.register_collector(Box::new(TraceCollector(trace_metrics.clone())));
            let sources = config.lists.clone();
            let sink = EventSink::open(&options.trace.events_output)?;
            let (detector, mut detection, published) =
                detection::detector(config, sink, trace_metrics.clone())?;
            let publish: PublishHook =
                Box::new(move |detector, when| detection.publish(detector, when == Publish::Now));
            pipeline = pipeline.with_detector(
                DetectorThread::spawn(detector, Some(publish))
                    .context("cannot start the trace detector thread")?,
            );
            let updates = detection::spawn_list_reloader(sources, trace_metrics);
            (Some(published), updates)
        }
        None => (None, tokio::sync::mpsc::channel(1).1),
    };
    let tracing_on = published.is_some();
    let health_metrics = telemetry::register_health_metrics(&mut registry);
    let health = telemetry::health_router(Arc::new(registry), readiness.clone())
        .merge(detection::suspicious_router(published));
    let mut health_stopped = stopped.clone();
    let health_task = tokio::spawn(telemetry::serve_plain(
        listener,
        health,
        crate::serve::ConnLimits::health(),
        health_metrics,
        async move {
            let _ = health_stopped.wait_for(|s| *s).await;
        },
    ));
    readiness.set(true);
    tracing::info!(
        log = %options.log_path.display(),
        felix = options.felix_dial_target.as_deref().unwrap_or("stdout"),
        interval_seconds = options.interval_seconds,
        attribution,
        memory_limit_bytes = budget.limit,
        max_connections = limits.max_connections,
        max_http_data = limits.max_http_data,
        "collector started"
    );
    if headers_believed_from_anyone && tracing_on {
        tracing::warn!(
            attribution,
            "X-Forwarded-For and X-Real-IP are believed from anyone: detections on them are \
             reported as claimed and kept apart; set --trusted-proxies or --trusted-hops to \
             verify original IPs"
        );
    }
    let state = Loop {
        tailer,
        pipeline,
        list_updates,
        sink,
        metrics,
        checkpoint_path,
        pending: VecDeque::new(),
        saved: None,
    };
    let interval = Duration::from_secs(options.interval_seconds);
    let shutdown_wait = Duration::from_secs(options.shutdown_timeout_seconds);
    let task = tokio::spawn(async move {
        state
            .run(interval, shutdown_wait, stopped, sender_task)
            .await?;
        health_task.await??;
        Ok(())
    });
    Ok(RunningCollector {
        metrics_addr,
        stop,
        task,
    })
}

struct Loop {
    tailer: Tailer,
    pipeline: Pipeline,
    /// Threat lists reloaded from their files.
    list_updates: tokio::sync::mpsc::Receiver<ingress_tap_core::detect::threat_lists::ThreatLists>,
    sink: Sink,
    metrics: Arc<CollectorMetrics>,
    checkpoint_path: PathBuf,
    /// Read positions at the end of each submitted interval, by interval sequence number.
    pending: VecDeque<(u64, Checkpoint)>,
    saved: Option<Checkpoint>,
}

impl Loop {
    async fn run(
        mut self,
        interval: Duration,
        shutdown_wait: Duration,
        mut stopped: watch::Receiver<bool>,
        sender_task: Option<JoinHandle<()>>,
    ) -> anyhow::Result<()> {
        let start = tokio::time::Instant::now() + interval;
        let mut clock = tokio::time::interval_at(start, interval);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => break,
                _ = clock.tick() => {
                    self.read();
                    self.close_interval();
                }
                () = self.tailer.changed() => self.read(),
                Some(lists) = self.list_updates.recv() => {
                    self.pipeline.feed_detector(|detector| detector.replace_lists(lists));
                }
            }
            self.persist_finished();
        }

        // Stop: the lines written so far form the last interval; send it, then checkpoint.
        self.read();
        self.close_interval();
        self.pipeline.feed_detector(DetectorThread::publish_now);
        if let Sink::Felix(handle) = &self.sink {
            if !handle.drain(shutdown_wait).await {
                tracing::warn!(
                    queued = handle.depth(),
                    "stopping before Felix took every report; their lines will be read again on restart"
                );
            }
            handle.close();
        }
        self.persist_finished();
        if let Some(task) = sender_task {
            task.abort();
        }
        tracing::info!("collector stopped");
        Ok(())
    }

    fn read(&mut self) {
        self.pipeline.tick_clock();
        let Self {
            tailer, pipeline, ..
        } = self;
        match tailer.read_available(|line| pipeline.line(line)) {
            Ok(stats) => {
                self.metrics.lines_read.inc_by(stats.lines);
                self.metrics.bytes_read.inc_by(stats.bytes);
                self.metrics
                    .oversized_lines
                    .inc_by(stats.oversized_lines_skipped);
                self.metrics.rotations.inc_by(stats.rotations);
                self.metrics.truncations.inc_by(stats.truncations);
            }
            Err(err) => tracing::warn!(%err, "reading the ingress log failed; retrying"),
        }
        self.pipeline.flush_detector();
        self.metrics
            .lag_bytes
            .set(i64::try_from(self.tailer.lag_bytes()).unwrap_or(i64::MAX));
    }

    fn close_interval(&mut self) {
        let report = self.pipeline.close_interval();
        let sequence = self.sink.submit(report);
        if let Some(position) = self.tailer.checkpoint() {
            self.pending.push_back((sequence, position));
        }
    }

    /// Saves the read position of the newest finished interval, if it moved.
    fn persist_finished(&mut self) {
        let finished = self.sink.finished();
        let mut newest = None;
        while self
            .pending
            .front()
            .is_some_and(|(seq, _)| *seq <= finished)
        {
            newest = self.pending.pop_front().map(|(_, position)| position);
        }
        let Some(position) = newest else { return };
        if self.saved.as_ref() == Some(&position) {
            return;
        }
        match checkpoint::save(&self.checkpoint_path, &position) {
            Ok(()) => self.saved = Some(position),
            Err(err) => tracing::warn!(
                path = %self.checkpoint_path.display(),
                %err,
                "cannot save the checkpoint; will retry"
            ),
        }
    }
}

/// `ingress-tap collect`: run until SIGTERM.
pub async fn run(options: CollectOptions, policy: ClientIpPolicy) -> anyhow::Result<()> {
    let signal = telemetry::shutdown_signal();
    let running = start(options, policy).await?;
    let stop = running.stopper();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("stopping: closing the current interval");
        let _ = stop.send(true);
    });
    running.wait().await
}
