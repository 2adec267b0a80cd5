//! One line at a time: parse → original IP → aggregate, with every outcome counted. The
//! collector's main loop feeds it lines from the tailer; the benchmark feeds it a generated
//! log. No I/O here.

use super::detector_thread::{DetectorStopped, DetectorThread};
use super::metrics::{CollectorMetrics, NOT_CARRIED_CAP, NOT_CARRIED_MEMORY};
use ingress_tap_core::collect::aggregate::{Aggregator, AggregatorLimits, IntervalReport};
use ingress_tap_core::collect::origin::ClientIpPolicy;
use ingress_tap_core::collect::parse::{parse_line, HeaderValue};
use ingress_tap_core::model::Connection;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The collector's per-line work and its interval state.
pub struct Pipeline {
    policy: ClientIpPolicy,
    aggregator: Aggregator,
    metrics: Arc<CollectorMetrics>,
    /// The trace detector, on its own thread, when tracing is on.
    detector: Option<DetectorThread>,
    /// The detector's clock, set once per batch of lines rather than read per line: lines of
    /// one read arrived together, and a clock read costs as much as a short parse.
    clock_origin: Instant,
    now_ms: u64,
    wall: SystemTime,
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
            detector: None,
            clock_origin: Instant::now(),
            now_ms: 0,
            wall: SystemTime::now(),
        }
    }

    /// Feeds every record to `detector` as well (the trace detectors).
    pub fn with_detector(mut self, detector: DetectorThread) -> Self {
        self.detector = Some(detector);
        let (now_ms, wall) = (self.now_ms, self.wall);
        self.feed_detector(|detector| detector.advance(now_ms, wall));
        self
    }

    /// The detector, when tracing is on.
    pub fn detector(&mut self) -> Option<&mut DetectorThread> {
        self.detector.as_mut()
    }

    /// Reads the clock for the lines that follow; the detector thread gets the reading with
    /// the requests that follow it, in the message of their read.
    pub fn tick_clock(&mut self) {
        self.now_ms = u64::try_from(self.clock_origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall = SystemTime::now();
        let (now_ms, wall) = (self.now_ms, self.wall);
        self.feed_detector(|detector| detector.advance(now_ms, wall));
    }

    /// Runs `send` on the detector thread's handle, if tracing is on; if that thread has
    /// stopped (it never should), tracing ends with an error in the log and collecting goes
    /// on without it.
    pub fn feed_detector(
        &mut self,
        send: impl FnOnce(&mut DetectorThread) -> Result<(), DetectorStopped>,
    ) {
        let Some(detector) = self.detector.as_mut() else {
            return;
        };
        if let Err(err) = send(detector) {
            tracing::error!(%err, "tracing is off from now on; collecting goes on");
            self.detector = None;
        }
    }

    /// Takes one complete line (without its newline). A line without the ingress marker is
    /// another access-log line; a malformed ingress line is counted by reason and skipped.
    pub fn line(&mut self, line: &[u8]) {
        match parse_line(line) {
            Ok(Some(record)) => {
                self.metrics.records_parsed.inc();
                for (field, value) in [
                    ("x-forwarded-for", &record.x_forwarded_for),
                    ("x-real-ip", &record.x_real_ip),
                ] {
                    if value.as_ref().is_some_and(HeaderValue::is_oversize) {
                        self.metrics.oversized_header(field);
                    }
                }
                let attribution = self.policy.attribute(&record);
                self.aggregator
                    .observe(&record, attribution.origin.as_ref());
                if self.detector.is_some() {
                    let connection = Connection::of(&record);
                    self.feed_detector(|detector| {
                        detector.observe(&connection, Some(attribution.client))
                    });
                }
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

    /// Has the detector apply what it was given so far, and publish if due: the collector
    /// calls it after each read.
    pub fn flush_detector(&mut self) {
        self.feed_detector(DetectorThread::flush);
    }

    /// Ends the interval: its reports, and a fresh interval begins. The detector is brought
    /// up to date with the interval's last requests too.
    pub fn close_interval(&mut self) -> IntervalReport {
        self.flush_detector();
        let report = self.aggregator.close_interval();
        self.metrics.intervals.inc();
        self.metrics
            .records_over_connection_cap
            .inc_by(report.dropped_records);
        self.metrics
            .not_carried(NOT_CARRIED_CAP, report.http_data_over_cap);
        self.metrics
            .not_carried(NOT_CARRIED_MEMORY, report.http_data_over_memory);
        self.metrics
            .origins_uncounted
            .inc_by(report.uncounted_origins);
        report
    }
}
