//! Reporting to Felix: PolicySync.Report over gRPC on the Unix socket Felix creates per workload.
//!
//! Tailing must never wait for Felix. Closed intervals go into a bounded queue that a separate
//! task drains; when Felix is absent (not started yet, restarting, socket not mounted) the task
//! reconnects with capped exponential backoff and full jitter, and the queue keeps the newest
//! intervals, dropping (and counting) the oldest. A call that fails in transport is retried
//! after reconnecting, so delivery is at least once: a report whose answer was lost in a Felix
//! crash can arrive twice. `successful: false` is Felix saying that dataplane stats are off
//! right now: it is counted and logged, not retried, since retrying would only repeat it.

use crate::collect::aggregate::ConnectionReport;
use crate::felix_proto::policy_sync_client::PolicySyncClient;
use crate::felix_proto::{
    protocol, statistic, Action, DataplaneStats, HttpData, Protocol, Statistic,
};
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

use super::metrics::CollectorMetrics;

/// How the reporter reaches Felix and how much it holds while Felix is away.
#[derive(Debug, Clone)]
pub struct FelixOptions {
    /// The Unix socket (FELIX_DIAL_TARGET).
    pub socket: PathBuf,
    /// Closed intervals held while Felix is unreachable.
    pub queue_intervals: usize,
    /// Deadline of one Report call.
    pub call_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

impl FelixOptions {
    /// Defaults for `socket`: a minute of 5 s intervals queued, 5 s calls, 100 ms..10 s backoff.
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            queue_intervals: 12,
            call_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// The report Felix expects for one connection's interval: the connection's 5-tuple, one
/// DELTA INGRESS_DATA statistic counting its distinct original IPs, and one `HTTPData` per
/// original IP carried (bare IPs only, `type` left empty so Felix reads them as original
/// source IPs and not as an L7 log).
pub fn dataplane_stats(report: &ConnectionReport) -> DataplaneStats {
    let connection = &report.connection;
    DataplaneStats {
        src_ip: connection.source_ip.to_string(),
        dst_ip: connection.destination_ip.to_string(),
        src_port: i32::from(connection.source_port),
        dst_port: i32::from(connection.destination_port),
        protocol: Some(Protocol {
            number_or_name: Some(protocol::NumberOrName::Name(
                connection.protocol.as_str().to_owned(),
            )),
        }),
        stats: vec![Statistic {
            direction: statistic::Direction::In.into(),
            relativity: statistic::Relativity::Delta.into(),
            kind: statistic::Kind::IngressData.into(),
            action: Action::Allowed.into(),
            value: i64::try_from(report.distinct_original_ips).unwrap_or(i64::MAX),
        }],
        rules: Vec::new(),
        action: Action::Allowed.into(),
        http_data: report
            .http_data
            .iter()
            .map(|entry| HttpData {
                x_forwarded_for: entry.x_forwarded_for.clone(),
                x_real_ip: entry.x_real_ip.clone(),
                ..HttpData::default()
            })
            .collect(),
    }
}

/// Accepts `FELIX_DIAL_TARGET` as a path or as `unix://PATH` / `unix:PATH`.
pub fn socket_path(dial_target: &str) -> PathBuf {
    let path = dial_target
        .strip_prefix("unix://")
        .or_else(|| dial_target.strip_prefix("unix:"))
        .unwrap_or(dial_target);
    PathBuf::from(path)
}

/// The reports of one queued interval, and how many interval sequence numbers finish with it:
/// intervals without reports queue nothing, they only finish together with the interval before
/// them, so an idle log does not fill the queue while Felix is away.
struct Pending {
    reports: VecDeque<DataplaneStats>,
    covers: u64,
}

struct Queue {
    intervals: VecDeque<Pending>,
    capacity: usize,
    closed: bool,
    /// Intervals handed to `submit` so far.
    submitted: u64,
    /// Intervals finished so far (every report answered, or the interval dropped). Intervals
    /// finish in submission order, so interval `n` (1-based) is finished once this is `>= n`.
    finished: u64,
}

impl Queue {
    fn depth(&self) -> usize {
        self.intervals.iter().map(|p| p.reports.len()).sum()
    }
}

/// The collector's side of the queue.
#[derive(Clone)]
pub struct FelixHandle {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    drained: Arc<Notify>,
    metrics: Arc<CollectorMetrics>,
}

impl FelixHandle {
    /// Queues one closed interval's reports and returns its sequence number (1-based); never
    /// blocks on Felix.
    pub fn submit(&self, reports: Vec<DataplaneStats>) -> u64 {
        let (sequence, depth) = {
            let mut queue = lock(&self.queue);
            queue.submitted += 1;
            if !reports.is_empty() {
                queue.intervals.push_back(Pending {
                    reports: reports.into(),
                    covers: 1,
                });
            } else if let Some(last) = queue.intervals.back_mut() {
                last.covers += 1;
            } else {
                queue.finished += 1;
            }
            while queue.intervals.len() > queue.capacity {
                if let Some(dropped) = queue.intervals.pop_front() {
                    queue.finished += dropped.covers;
                    self.metrics
                        .reports_dropped
                        .inc_by(dropped.reports.len() as u64);
                    tracing::warn!(
                        reports = dropped.reports.len(),
                        "Felix unreachable for too long: dropped the oldest queued interval"
                    );
                }
            }
            (queue.submitted, queue.depth())
        };
        self.metrics.queue_depth.set(depth as i64);
        self.wake.notify_one();
        sequence
    }

    /// How many intervals are finished: interval `n` is finished once this is `>= n`.
    pub fn finished(&self) -> u64 {
        lock(&self.queue).finished
    }

    /// Reports waiting to be sent.
    pub fn depth(&self) -> usize {
        lock(&self.queue).depth()
    }

    /// Waits until every queued interval is finished or `deadline` passes; true when
    /// everything was answered.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let drained = self.drained.notified();
                let done = {
                    let queue = lock(&self.queue);
                    queue.finished == queue.submitted
                };
                if done {
                    return;
                }
                drained.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }

    /// Stops the sender after the queue is empty (or at once when nothing is queued).
    pub fn close(&self) {
        lock(&self.queue).closed = true;
        self.wake.notify_one();
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // A panic while holding this lock cannot leave the queue half-updated in a way that
    // matters (each step is a whole push or pop), so a poisoned lock is still usable.
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the sender task; returns the handle that feeds it.
pub fn spawn(
    options: FelixOptions,
    metrics: Arc<CollectorMetrics>,
) -> (FelixHandle, tokio::task::JoinHandle<()>) {
    let handle = FelixHandle {
        queue: Arc::new(Mutex::new(Queue {
            intervals: VecDeque::new(),
            capacity: options.queue_intervals.max(1),
            closed: false,
            submitted: 0,
            finished: 0,
        })),
        wake: Arc::new(Notify::new()),
        drained: Arc::new(Notify::new()),
        metrics,
    };
    let task = tokio::spawn(send_loop(options, handle.clone()));
    (handle, task)
}

fn channel(socket: PathBuf, call_timeout: Duration) -> Channel {
    // The URI is a placeholder required by the HTTP/2 layer; the connector ignores it.
    Endpoint::from_static("http://felix.local")
        .connect_timeout(call_timeout)
        .timeout(call_timeout)
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
}

async fn send_loop(options: FelixOptions, handle: FelixHandle) {
    let mut client = PolicySyncClient::new(channel(options.socket.clone(), options.call_timeout));
    let mut failures: u32 = 0;
    loop {
        let next = {
            let queue = lock(&handle.queue);
            match queue.intervals.front() {
                Some(interval) => interval.reports.front().cloned(),
                None if queue.closed => return,
                None => None,
            }
        };
        let Some(report) = next else {
            handle.metrics.queue_depth.set(0);
            handle.drained.notify_waiters();
            handle.wake.notified().await;
            continue;
        };
        match client.report(report).await {
            Ok(answer) => {
                failures = 0;
                if answer.into_inner().successful {
                    handle.metrics.reports_sent.inc();
                } else {
                    handle.metrics.reports_rejected.inc();
                    tracing::info!(
                        "Felix answered successful=false (dataplane stats off); not retried"
                    );
                }
                let depth = {
                    let mut queue = lock(&handle.queue);
                    if let Some(interval) = queue.intervals.front_mut() {
                        interval.reports.pop_front();
                        if interval.reports.is_empty() {
                            let covers = interval.covers;
                            queue.intervals.pop_front();
                            queue.finished += covers;
                        }
                    }
                    queue.depth()
                };
                handle.metrics.queue_depth.set(depth as i64);
            }
            Err(status) => {
                handle.metrics.reports_failed.inc();
                failures = failures.saturating_add(1);
                let delay = backoff(failures, options.backoff_min, options.backoff_max);
                tracing::warn!(
                    code = ?status.code(),
                    message = status.message(),
                    socket = %options.socket.display(),
                    retry_in_ms = delay.as_millis() as u64,
                    "Report to Felix failed; will reconnect"
                );
                tokio::time::sleep(delay).await;
                // A fresh channel: the old one may hold a connection to a Felix that is gone.
                client =
                    PolicySyncClient::new(channel(options.socket.clone(), options.call_timeout));
            }
        }
    }
}

/// Capped exponential backoff with full jitter in [delay/2, delay]: retries of many collectors
/// restarted together (a node reboot) spread out instead of arriving in lockstep.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let ceiling = min.saturating_mul(1u32 << exp).min(max);
    let half = ceiling / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for _ in 0..100 {
            let first = backoff(1, min, max);
            assert!(
                first >= Duration::from_millis(50) && first <= min,
                "{first:?}"
            );
            let later = backoff(30, min, max);
            assert!(later >= max / 2 && later <= max, "{later:?}");
        }
    }

    #[test]
    fn dial_target_forms() {
        assert_eq!(
            socket_path("/var/run/felix/nodeagent/socket"),
            PathBuf::from("/var/run/felix/nodeagent/socket")
        );
        assert_eq!(socket_path("unix:///run/s"), PathBuf::from("/run/s"));
        assert_eq!(socket_path("unix:/run/s"), PathBuf::from("/run/s"));
    }
}
