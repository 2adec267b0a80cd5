//! Reporting to Felix: PolicySync.Report over gRPC on the Unix socket Felix creates per workload.
//!
//! Tailing must never wait for Felix. Closed intervals go into a bounded queue that a separate
//! task drains; when Felix is absent (not started yet, restarting, socket not mounted) or slow,
//! the task reconnects with capped exponential backoff and full jitter, and the queue keeps the
//! newest intervals, dropping (and counting) the oldest. A call that fails in transport is
//! retried after reconnecting, so delivery is at least once: a report whose answer was lost in
//! a Felix crash can arrive twice. `successful: false` is Felix saying that dataplane stats are
//! off right now: it is counted and logged, not retried, since retrying would only repeat it.
//!
//! # Memory
//!
//! The queue holds intervals as the aggregator closed them: 34 bytes per http_data entry and
//! no text. It is bounded in intervals (`queue_intervals`) and in bytes (`queue_bytes`, from
//! [`IntervalReport::memory_bytes`]); an interval that would take it past either bound makes
//! room by dropping the oldest intervals, whole or what is left of them, and the newest
//! interval is always kept. Entries of a connection are freed as soon as Felix has them.
//!
//! A message is made only when it is sent: one connection's report, with at most
//! `message_entries` http_data entries. A connection with more goes as several messages for the
//! same 5-tuple; the first carries its INGRESS_DATA value, the others a value of 0 (Felix adds
//! the DELTA values up, and reads http_data only beside an INGRESS_DATA statistic).

use hyper_util::rt::TokioIo;
use ingress_tap_core::collect::aggregate::{ConnectionReport, IntervalReport};
use ingress_tap_felix_proto::policy_sync_client::PolicySyncClient;
use ingress_tap_felix_proto::{
    protocol, statistic, Action, DataplaneStats, HttpData, Protocol, Statistic,
};
use rand::RngExt;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

use super::metrics::CollectorMetrics;
use ingress_tap_core::collect::budget::MemoryBudget;
use ingress_tap_core::collect::origin::CarriedOrigin;

/// How the reporter reaches Felix and how much it holds while Felix is away.
#[derive(Debug, Clone)]
pub struct FelixOptions {
    /// The Unix socket (FELIX_DIAL_TARGET).
    pub socket: PathBuf,
    /// Closed intervals held while Felix is unreachable.
    pub queue_intervals: usize,
    /// Bytes of closed intervals held ([`IntervalReport::memory_bytes`]).
    pub queue_bytes: usize,
    /// The most http_data entries one message carries.
    pub message_entries: usize,
    /// Deadline of one Report call.
    pub call_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

impl FelixOptions {
    /// Defaults for `socket`: a minute of 5 s intervals queued within the default memory
    /// budget's queue share, 5 s calls, 100 ms..10 s backoff.
    pub fn new(socket: PathBuf) -> Self {
        let budget = MemoryBudget::default();
        Self {
            socket,
            queue_intervals: 12,
            queue_bytes: budget.queue,
            message_entries: budget.message_entries(),
            call_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// The report Felix expects for one connection's interval, whole: the connection's 5-tuple, one
/// DELTA INGRESS_DATA statistic counting its distinct original IPs, and one `HTTPData` per
/// original IP carried (bare IPs only, `type` left empty so Felix reads them as original
/// source IPs and not as an L7 log).
pub fn dataplane_stats(report: &ConnectionReport) -> DataplaneStats {
    message(report, 0, usize::MAX)
}

/// The messages of one connection's interval, each with at most `entries` http_data entries
/// (at least one message, even without entries).
pub fn messages(
    report: &ConnectionReport,
    entries: usize,
) -> impl Iterator<Item = DataplaneStats> + '_ {
    let entries = entries.max(1);
    let count = report.http_data.len().div_ceil(entries).max(1);
    (0..count).map(move |n| message(report, n * entries, entries))
}

/// One message of a connection's interval: http_data entries from `first`, at most `entries` of
/// them; the INGRESS_DATA value goes with the first message only.
pub fn message(report: &ConnectionReport, first: usize, entries: usize) -> DataplaneStats {
    let connection = &report.connection;
    let value = if first == 0 {
        i64::try_from(report.distinct_original_ips).unwrap_or(i64::MAX)
    } else {
        0
    };
    let chunk = report
        .http_data
        .get(first..)
        .unwrap_or_default()
        .iter()
        .take(entries);
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
            value,
        }],
        rules: Vec::new(),
        action: Action::Allowed.into(),
        http_data: chunk
            .map(|carried| {
                let entry = carried.render();
                HttpData {
                    x_forwarded_for: entry.x_forwarded_for,
                    x_real_ip: entry.x_real_ip,
                    ..HttpData::default()
                }
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

/// One queued interval, and how many interval sequence numbers finish with it: intervals
/// without reports queue nothing, they only finish together with the interval before them, so
/// an idle log does not fill the queue while Felix is away.
struct Pending {
    /// Tells a dropped interval from the one that replaced it at the front.
    id: u64,
    connections: Vec<ConnectionReport>,
    /// The first connection not wholly answered, and its first entry not answered.
    next_connection: usize,
    next_entry: usize,
    /// What the interval holds now ([`IntervalReport::memory_bytes`], less what was freed).
    bytes: usize,
    covers: u64,
}

impl Pending {
    /// Connection reports not wholly answered yet.
    fn remaining_reports(&self) -> usize {
        self.connections.len().saturating_sub(self.next_connection)
    }

    /// http_data entries not answered yet.
    fn remaining_entries(&self) -> usize {
        self.connections
            .iter()
            .skip(self.next_connection)
            .map(|c| c.http_data.len())
            .sum::<usize>()
            .saturating_sub(self.next_entry)
    }
}

struct Queue {
    intervals: VecDeque<Pending>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    message_entries: usize,
    next_id: u64,
    closed: bool,
    /// Intervals handed to `submit` so far.
    submitted: u64,
    /// Intervals finished so far (every report answered, or the interval dropped). Intervals
    /// finish in submission order, so interval `n` (1-based) is finished once this is `>= n`.
    finished: u64,
}

impl Queue {
    fn depth(&self) -> usize {
        self.intervals.iter().map(Pending::remaining_reports).sum()
    }

    /// The next message to send: the front interval's id, the message, and where the
    /// connection's entries stand once it is answered.
    #[cfg(test)]
    fn next_message(&self) -> Option<(u64, DataplaneStats, usize)> {
        self.message_after(None)
            .map(|(message, cursor)| (cursor.id, message, cursor.end))
    }

    /// The message after the one dispatched at `dispatched` (from the front interval's first
    /// unanswered entry when that is `None` or of an interval no longer at the front), and
    /// where it ends. Only the front interval is sent from.
    fn message_after(&self, dispatched: Option<Cursor>) -> Option<(DataplaneStats, Cursor)> {
        let interval = self.intervals.front()?;
        let (connection, first) = match dispatched {
            Some(cursor) if cursor.id == interval.id => {
                let report = interval.connections.get(cursor.connection)?;
                if cursor.end < report.http_data.len() {
                    (cursor.connection, cursor.end)
                } else {
                    (cursor.connection + 1, 0)
                }
            }
            _ => (interval.next_connection, interval.next_entry),
        };
        let report = interval.connections.get(connection)?;
        let message = message(report, first, self.message_entries);
        let end = first + message.http_data.len();
        Some((
            message,
            Cursor {
                id: interval.id,
                connection,
                end,
            },
        ))
    }

    /// Records that the message ending at entry `end` of the front interval was answered.
    /// `None` when that interval was dropped meanwhile; else how many intervals finished.
    fn answered(&mut self, id: u64, end: usize) -> Option<u64> {
        let interval = self.intervals.front_mut().filter(|i| i.id == id)?;
        let report = interval.connections.get_mut(interval.next_connection)?;
        if end < report.http_data.len() {
            interval.next_entry = end;
            return Some(0);
        }
        // This connection is done: its entries go back to the allocator now, not when the
        // whole interval is done, so a slow Felix drains the queue's memory as it goes.
        let freed = report.http_data.capacity() * std::mem::size_of::<CarriedOrigin>();
        report.http_data = Vec::new();
        interval.bytes = interval.bytes.saturating_sub(freed);
        self.bytes = self.bytes.saturating_sub(freed);
        interval.next_connection += 1;
        interval.next_entry = 0;
        if interval.next_connection < interval.connections.len() {
            return Some(0);
        }
        let covers = interval.covers;
        let bytes = interval.bytes;
        self.intervals.pop_front();
        self.bytes = self.bytes.saturating_sub(bytes);
        self.finished += covers;
        Some(covers)
    }
}

/// Where a dispatched message ends: its interval, connection, and the entry after its last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    id: u64,
    connection: usize,
    end: usize,
}

/// Report calls in flight at once. Felix answers each call after a round trip; one at a time,
/// 2,000 connections a second would take the whole second. Together they carry at most
/// `message_entries` entries, so the message share holds for all of them.
const CALLS_IN_FLIGHT: usize = 16;

/// The collector's side of the queue.
#[derive(Clone)]
pub struct FelixHandle {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    drained: Arc<Notify>,
    metrics: Arc<CollectorMetrics>,
}

impl FelixHandle {
    /// An empty queue holding at most `capacity` intervals and `max_bytes` bytes, sending
    /// `message_entries` entries a message.
    fn new(
        capacity: usize,
        max_bytes: usize,
        message_entries: usize,
        metrics: Arc<CollectorMetrics>,
    ) -> Self {
        FelixHandle {
            queue: Arc::new(Mutex::new(Queue {
                intervals: VecDeque::new(),
                capacity,
                max_bytes,
                bytes: 0,
                message_entries,
                next_id: 0,
                closed: false,
                submitted: 0,
                finished: 0,
            })),
            wake: Arc::new(Notify::new()),
            drained: Arc::new(Notify::new()),
            metrics,
        }
    }

    /// Queues one closed interval and returns its sequence number (1-based); never blocks on
    /// Felix.
    pub fn submit(&self, report: IntervalReport) -> u64 {
        let (sequence, depth) = {
            let mut queue = lock(&self.queue);
            queue.submitted += 1;
            if !report.connections.is_empty() {
                let bytes = report.memory_bytes();
                let id = queue.next_id;
                queue.next_id += 1;
                queue.bytes += bytes;
                queue.intervals.push_back(Pending {
                    id,
                    connections: report.connections,
                    next_connection: 0,
                    next_entry: 0,
                    bytes,
                    covers: 1,
                });
            } else if let Some(last) = queue.intervals.back_mut() {
                last.covers += 1;
            } else {
                queue.finished += 1;
            }
            while queue.intervals.len() > 1
                && (queue.intervals.len() > queue.capacity || queue.bytes > queue.max_bytes)
            {
                let Some(dropped) = queue.intervals.pop_front() else {
                    break;
                };
                queue.bytes = queue.bytes.saturating_sub(dropped.bytes);
                queue.finished += dropped.covers;
                let (reports, entries) = (dropped.remaining_reports(), dropped.remaining_entries());
                self.metrics.reports_dropped.inc_by(reports as u64);
                self.metrics.queue_full(entries as u64);
                tracing::warn!(
                    reports,
                    http_data = entries,
                    "Felix unreachable or too slow: dropped the oldest queued interval"
                );
            }
            self.metrics.queue_bytes.set(queue.bytes as i64);
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
    let handle = FelixHandle::new(
        options.queue_intervals.max(1),
        options.queue_bytes,
        options.message_entries.max(1),
        metrics,
    );
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
    // Calls in dispatch order; answers are taken in that order too, so the queue's cursor
    // only ever moves forward one message at a time.
    type Call = tokio::task::JoinHandle<
        Result<tonic::Response<ingress_tap_felix_proto::ReportResult>, tonic::Status>,
    >;
    let mut in_flight: VecDeque<(Cursor, usize, Call)> = VecDeque::new();
    let mut entries_in_flight = 0usize;
    let mut dispatched: Option<Cursor> = None;
    loop {
        let closed = {
            let queue = lock(&handle.queue);
            while in_flight.len() < CALLS_IN_FLIGHT {
                let Some((report, cursor)) = queue.message_after(dispatched) else {
                    break;
                };
                let entries = report.http_data.len();
                if !in_flight.is_empty() && entries_in_flight + entries > queue.message_entries {
                    break;
                }
                let mut call_client = client.clone();
                let call = tokio::spawn(async move { call_client.report(report).await });
                in_flight.push_back((cursor, entries, call));
                entries_in_flight += entries;
                dispatched = Some(cursor);
            }
            queue.closed
        };
        let Some((cursor, entries, call)) = in_flight.pop_front() else {
            if closed {
                return;
            }
            dispatched = None;
            handle.metrics.queue_depth.set(0);
            handle.drained.notify_waiters();
            handle.wake.notified().await;
            continue;
        };
        entries_in_flight -= entries;
        let result = match call.await {
            Ok(result) => result,
            Err(err) => Err(tonic::Status::internal(format!("report call ended: {err}"))),
        };
        match result {
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
                let (depth, bytes) = {
                    let mut queue = lock(&handle.queue);
                    queue.answered(cursor.id, cursor.end);
                    (queue.depth(), queue.bytes)
                };
                handle.metrics.queue_depth.set(depth as i64);
                handle.metrics.queue_bytes.set(bytes as i64);
            }
            Err(status) => {
                // The calls after it are abandoned and sent again from the first unanswered
                // message: at least once, as for an answer lost in a Felix crash.
                for (_, _, call) in in_flight.drain(..) {
                    call.abort();
                }
                entries_in_flight = 0;
                dispatched = None;
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

    use ingress_tap_core::collect::cardinality::Accuracy;
    use ingress_tap_core::model::Connection;
    use ingress_tap_core::model::Protocol;
    use std::net::{IpAddr, Ipv4Addr};

    fn connection_report(port: u16, entries: u32) -> ConnectionReport {
        ConnectionReport {
            connection: Connection {
                source_ip: "10.1.10.1".parse().unwrap(),
                source_port: port,
                destination_ip: "10.1.1.10".parse().unwrap(),
                destination_port: 443,
                protocol: Protocol::Tcp,
            },
            requests: u64::from(entries),
            distinct_original_ips: u64::from(entries),
            accuracy: Accuracy::Exact,
            http_data: (0..entries)
                .map(|n| CarriedOrigin {
                    x_forwarded_for: Some(IpAddr::V4(Ipv4Addr::from(n))),
                    x_real_ip: None,
                })
                .collect(),
        }
    }

    fn interval(connections: u16, entries: u32) -> IntervalReport {
        IntervalReport {
            connections: (0..connections)
                .map(|port| connection_report(port, entries))
                .collect(),
            ..IntervalReport::default()
        }
    }

    fn handle(intervals: usize, bytes: usize, entries: usize) -> FelixHandle {
        FelixHandle::new(
            intervals,
            bytes,
            entries,
            Arc::new(CollectorMetrics::default()),
        )
    }

    #[test]
    fn large_reports_go_in_pieces_with_the_value_on_the_first() {
        let report = connection_report(1, 10);
        let pieces: Vec<DataplaneStats> = messages(&report, 4).collect();
        let sizes: Vec<usize> = pieces.iter().map(|m| m.http_data.len()).collect();
        let values: Vec<i64> = pieces.iter().map(|m| m.stats[0].value).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(values, [10, 0, 0]);
        assert!(pieces.iter().all(|m| m.src_port == 1 && m.stats.len() == 1));
        let whole = dataplane_stats(&report);
        let joined: Vec<HttpData> = pieces.into_iter().flat_map(|m| m.http_data).collect();
        assert_eq!(joined, whole.http_data);
        let empty = connection_report(2, 0);
        assert_eq!(messages(&empty, 4).count(), 1);
    }

    #[test]
    fn the_queue_drops_the_oldest_past_its_bytes_and_frees_as_it_goes() {
        let one = interval(2, 100).memory_bytes();
        let felix = handle(12, 2 * one, 64);
        assert_eq!(felix.submit(interval(2, 100)), 1);
        assert_eq!(felix.submit(interval(2, 100)), 2);
        assert_eq!(felix.finished(), 0);
        // The third would hold three intervals' bytes: the oldest goes, and is counted.
        assert_eq!(felix.submit(interval(2, 100)), 3);
        assert_eq!(felix.finished(), 1);
        assert_eq!(felix.metrics.reports_dropped.get(), 2);
        let queue_full = felix
            .metrics
            .original_ips_not_carried
            .get_or_create(&crate::collect::metrics::NotCarriedLabels {
                reason: crate::collect::metrics::NOT_CARRIED_QUEUE,
            })
            .get();
        assert_eq!(queue_full, 200);
        // Sending: two pieces per connection; the bytes go down as connections finish.
        let mut queue = lock(&felix.queue);
        assert!(queue.bytes <= 2 * one);
        let (id, first, end) = queue.next_message().unwrap();
        assert_eq!(
            (first.http_data.len(), first.stats[0].value, end),
            (64, 100, 64)
        );
        queue.answered(id, end);
        let (id, second, end) = queue.next_message().unwrap();
        assert_eq!(
            (second.http_data.len(), second.stats[0].value, end),
            (36, 0, 100)
        );
        let before = queue.bytes;
        queue.answered(id, end);
        assert!(
            queue.bytes < before,
            "a finished connection's entries are freed"
        );
        // An answer for an interval dropped meanwhile changes nothing.
        assert_eq!(queue.answered(id + 100, 1), None);
        drop(queue);
        // Intervals without reports finish with the one before them.
        felix.submit(IntervalReport::default());
        assert_eq!(felix.depth(), 3);
        // A single interval over the bytes is kept: the newest always is.
        let small = handle(12, 1, 64);
        small.submit(interval(1, 10));
        small.submit(interval(1, 10));
        assert_eq!(small.finished(), 1);
        assert_eq!(small.depth(), 1);
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
