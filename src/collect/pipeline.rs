//! One line at a time: parse → original IP → aggregate, with every outcome counted. The
//! collector's main loop feeds it lines from the tailer; the benchmark feeds it a generated
//! log. No I/O here.

use super::aggregate::{Aggregator, AggregatorLimits, IntervalReport};
use super::metrics::CollectorMetrics;
use super::origin::ClientIpPolicy;
use super::parse::parse_line;
use std::sync::Arc;

/// The collector's per-line work and its interval state.
pub struct Pipeline {
    policy: ClientIpPolicy,
    aggregator: Aggregator,
    metrics: Arc<CollectorMetrics>,
}

impl Pipeline {
    /// A pipeline attributing requests by `policy` and aggregating within `limits`.
    pub fn new(
        policy: ClientIpPolicy,
        limits: AggregatorLimits,
        metrics: Arc<CollectorMetrics>,
    ) -> Self {
        Self {
            policy,
            aggregator: Aggregator::new(limits),
            metrics,
        }
    }

    /// Takes one complete line (without its newline). A line without the ingress marker is
    /// another access-log line; a malformed ingress line is counted by reason and skipped.
    pub fn line(&mut self, line: &[u8]) {
        match parse_line(line) {
            Ok(Some(record)) => {
                self.metrics.records_parsed.inc();
                let origin = self.policy.original_ip(&record);
                self.aggregator.observe(&record, origin.as_ref());
            }
            Ok(None) => {
                self.metrics.lines_other.inc();
            }
            Err(malformed) => {
                self.metrics.malformed(malformed.as_str());
                tracing::debug!(reason = malformed.as_str(), %malformed, "skipped a malformed ingress line");
            }
        }
    }

    /// Ends the interval: its reports, and a fresh interval begins.
    pub fn close_interval(&mut self) -> IntervalReport {
        let report = self.aggregator.close_interval();
        self.metrics.intervals.inc();
        self.metrics
            .records_over_connection_cap
            .inc_by(report.dropped_records);
        report
    }
}
