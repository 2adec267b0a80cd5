//! The collector's metric families. No label takes attacker-chosen values: reasons are fixed
//! codes, so the series count stays bounded whatever the log contains.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of a malformed line: why it was skipped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MalformedLabels {
    pub reason: &'static str,
}

/// Label of an over-long header: which header it was.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeaderLabels {
    pub field: &'static str,
}

/// Label of an original IP that reached no http_data entry: why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotCarriedLabels {
    pub reason: &'static str,
}

/// Over `INGRESS_LOG_REQUESTS_PER_INTERVAL`.
pub const NOT_CARRIED_CAP: &str = "requests_per_interval";
/// Over the interval's memory share (`max_http_data`).
pub const NOT_CARRIED_MEMORY: &str = "interval_memory";
/// In an interval dropped from the full Felix queue.
pub const NOT_CARRIED_QUEUE: &str = "queue_full";

/// Every metric the collector exports.
#[derive(Default)]
pub struct CollectorMetrics {
    /// Complete lines read from the log.
    pub lines_read: Counter,
    /// Bytes read from the log.
    pub bytes_read: Counter,
    /// Lines without the ingress marker (other access-log lines).
    pub lines_other: Counter,
    /// Ingress records parsed.
    pub records_parsed: Counter,
    /// Ingress lines skipped, by reason.
    pub malformed: Family<MalformedLabels, Counter>,
    /// Lines longer than the cap, skipped unread.
    pub oversized_lines: Counter,
    /// Header values over the header cap, read from their ends, by header.
    pub oversized_headers: Family<HeaderLabels, Counter>,
    /// Rename rotations followed.
    pub rotations: Counter,
    /// Truncations (copytruncate) followed.
    pub truncations: Counter,
    /// Intervals closed.
    pub intervals: Counter,
    /// Records not aggregated because an interval reached its connection cap.
    pub records_over_connection_cap: Counter,
    /// Report calls Felix accepted.
    pub reports_sent: Counter,
    /// Report calls Felix answered with successful=false (dataplane stats off); not retried.
    pub reports_rejected: Counter,
    /// Report calls that failed in transport (retried).
    pub reports_failed: Counter,
    /// Connection reports dropped, wholly or in part, because the queue was full while Felix
    /// was away or slow.
    pub reports_dropped: Counter,
    /// Connection reports waiting to be sent.
    pub queue_depth: Gauge,
    /// Bytes the queued intervals hold.
    pub queue_bytes: Gauge,
    /// New original IPs that reached Felix in no http_data entry, by reason; they still count
    /// in their connection's value.
    pub original_ips_not_carried: Family<NotCarriedLabels, Counter>,
    /// Records whose original IP could not be counted: the interval's counting memory was
    /// spent (their connection's value is a lower bound).
    pub origins_uncounted: Counter,
    /// The memory limit the budget is derived from.
    pub memory_limit_bytes: Gauge,
    /// Bytes in the log not read yet.
    pub lag_bytes: Gauge,
}

impl CollectorMetrics {
    /// Creates the families and registers them under `ingress_tap_collector_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("ingress_tap_collector");
        r.register(
            "lines_read",
            "Complete lines read from the log",
            metrics.lines_read.clone(),
        );
        r.register(
            "bytes_read",
            "Bytes read from the log",
            metrics.bytes_read.clone(),
        );
        r.register(
            "lines_other",
            "Lines without the ingress marker",
            metrics.lines_other.clone(),
        );
        r.register(
            "records_parsed",
            "Ingress records parsed",
            metrics.records_parsed.clone(),
        );
        r.register(
            "malformed_lines",
            "Ingress lines skipped, by reason",
            metrics.malformed.clone(),
        );
        r.register(
            "oversized_lines",
            "Lines over the length cap, skipped",
            metrics.oversized_lines.clone(),
        );
        r.register(
            "oversized_headers",
            "Header values over the header cap, read from their ends, by field",
            metrics.oversized_headers.clone(),
        );
        r.register(
            "rotations",
            "Rename rotations followed",
            metrics.rotations.clone(),
        );
        r.register(
            "truncations",
            "Truncations followed",
            metrics.truncations.clone(),
        );
        r.register("intervals", "Intervals closed", metrics.intervals.clone());
        r.register(
            "records_over_connection_cap",
            "Records not aggregated because the interval's connection cap was reached",
            metrics.records_over_connection_cap.clone(),
        );
        r.register(
            "reports_sent",
            "Report calls Felix accepted",
            metrics.reports_sent.clone(),
        );
        r.register(
            "reports_rejected",
            "Report calls Felix answered with successful=false",
            metrics.reports_rejected.clone(),
        );
        r.register(
            "reports_failed",
            "Report calls that failed in transport",
            metrics.reports_failed.clone(),
        );
        r.register(
            "reports_dropped",
            "Connection reports dropped, wholly or in part, from the full queue",
            metrics.reports_dropped.clone(),
        );
        r.register(
            "queue_depth",
            "Connection reports waiting to be sent",
            metrics.queue_depth.clone(),
        );
        r.register(
            "queue_bytes",
            "Bytes the queued intervals hold",
            metrics.queue_bytes.clone(),
        );
        r.register(
            "original_ips_not_carried",
            "New original IPs that reached Felix in no http_data entry, by reason",
            metrics.original_ips_not_carried.clone(),
        );
        r.register(
            "origins_uncounted",
            "Records whose original IP could not be counted for lack of counting memory",
            metrics.origins_uncounted.clone(),
        );
        r.register(
            "memory_limit_bytes",
            "The memory limit the collector's budget is derived from",
            metrics.memory_limit_bytes.clone(),
        );
        r.register(
            "lag_bytes",
            "Bytes in the log not read yet",
            metrics.lag_bytes.clone(),
        );
        metrics
    }

    /// Counts a malformed line.
    pub fn malformed(&self, reason: &'static str) {
        self.malformed
            .get_or_create(&MalformedLabels { reason })
            .inc();
    }

    /// Counts original IPs that got no http_data entry, for `reason`.
    pub fn not_carried(&self, reason: &'static str, count: u64) {
        if count > 0 {
            self.original_ips_not_carried
                .get_or_create(&NotCarriedLabels { reason })
                .inc_by(count);
        }
    }

    /// Counts the entries of an interval dropped from the full queue.
    pub fn queue_full(&self, entries: u64) {
        self.not_carried(NOT_CARRIED_QUEUE, entries);
    }

    /// Counts a header value kept only by its ends.
    pub fn oversized_header(&self, field: &'static str) {
        self.oversized_headers
            .get_or_create(&HeaderLabels { field })
            .inc();
    }
}
