//! The trace detectors inside the collector: threat-list files (read, watched, reloaded),
//! events written as JSON lines, the `/suspicious` snapshot and the trace metrics.
//!
//! The detector itself ([`ingress_tap_core::detect::Detector`]) is pure and runs on its own thread
//! ([`super::detector_thread`]), fed by the collector's main loop. What others read of it — the
//! HTTP handler and the metrics scrape — is a copy published from that thread at most once a
//! second, so a scrape never waits on detection and detection never waits on a scrape.

use crate::cli::collect::TraceOptions;
use crate::watch::FileChanges;
use arc_swap::ArcSwap;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ingress_tap_core::detect::threat_lists::{parse_list, ThreatLists};
use ingress_tap_core::detect::{Detector, ListSource, Suspicious, TraceConfig, TraceCounters};
use ingress_tap_core::model::Provenance;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

impl TraceOptions {
    /// The trace configuration: the file's, then the flags on top. `None` when tracing is off.
    pub fn load(&self) -> anyhow::Result<Option<TraceConfig>> {
        use anyhow::Context;
        if !self.enabled {
            return Ok(None);
        }
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read trace config {}", path.display()))?;
                TraceConfig::from_yaml(&text)
                    .with_context(|| format!("invalid trace config {}", path.display()))?
            }
            None => TraceConfig::default(),
        };
        if let Some(window) = self.window_seconds {
            config.window_seconds = window;
        }
        if let Some(top_n) = self.top_n {
            config.top_n = top_n;
        }
        for source in &self.threat_lists {
            config.lists.retain(|existing| existing.name != source.name);
            config.lists.push(source.clone());
        }
        config.validate().context("invalid trace settings")?;
        Ok(Some(config))
    }
}

/// Reads every list file. A missing or unreadable file, or a bad line, is reported (log and
/// metric) and the rest loads: one broken list must not blind the others.
pub fn load_lists(sources: &[ListSource], metrics: &TraceMetrics) -> ThreatLists {
    let mut lists = Vec::with_capacity(sources.len());
    for source in sources {
        let text = match std::fs::read_to_string(&source.path) {
            Ok(text) => text,
            Err(err) => {
                tracing::error!(list = %source.name, path = %source.path.display(), %err, "cannot read threat list; it is empty until the file can be read");
                metrics.list_errors.fetch_add(1, Ordering::Relaxed);
                String::new()
            }
        };
        let (list, problems) = parse_list(&source.name, &text);
        for problem in &problems {
            tracing::warn!(
                list = %source.name,
                path = %source.path.display(),
                line = problem.line,
                text = ?problem.text,
                reason = %problem.reason,
                loaded = problem.loaded,
                "threat list entry"
            );
        }
        let unreadable: Vec<_> = problems.iter().filter(|p| !p.loaded).collect();
        metrics
            .list_errors
            .fetch_add(unreadable.len() as u64, Ordering::Relaxed);
        // One line per load at error level, which the default log level (Panic, as the
        // reference collector's) still shows: a feed that lost entries must not go unnoticed.
        if let Some(first) = unreadable.first() {
            tracing::error!(
                list = %source.name,
                path = %source.path.display(),
                unreadable = unreadable.len(),
                loaded = list.entries().len(),
                first_line = first.line,
                first_reason = %first.reason,
                "threat list has lines that cannot be read; they are skipped, the rest is in force"
            );
        }
        tracing::info!(list = %source.name, entries = list.entries().len(), "threat list loaded");
        lists.push(list);
    }
    match ThreatLists::build(lists) {
        Ok(lists) => lists,
        Err(err) => {
            tracing::error!(%err, "threat lists not usable; none in force");
            metrics.list_errors.fetch_add(1, Ordering::Relaxed);
            ThreatLists::empty()
        }
    }
}

/// Watches the list files and sends freshly loaded lists to the main loop.
pub fn spawn_list_reloader(
    sources: Vec<ListSource>,
    metrics: Arc<TraceMetrics>,
) -> mpsc::Receiver<ThreatLists> {
    let (updates, receiver) = mpsc::channel(1);
    if sources.is_empty() {
        return receiver;
    }
    tokio::spawn(async move {
        let paths: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
        let mut changes = FileChanges::new(&paths);
        loop {
            changes.changed().await;
            let lists = load_lists(&sources, &metrics);
            metrics.list_reloads.fetch_add(1, Ordering::Relaxed);
            if updates.send(lists).await.is_err() {
                return;
            }
        }
    });
    receiver
}

/// Where events are written.
pub enum EventSink {
    Stdout,
    File(std::fs::File),
}

impl EventSink {
    /// `-` for stdout, else a file opened for appending.
    pub fn open(output: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        if output == "-" {
            return Ok(EventSink::Stdout);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(output)
            .with_context(|| format!("cannot open events output {output}"))?;
        Ok(EventSink::File(file))
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        match self {
            EventSink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            }
            EventSink::File(file) => file.write_all(text.as_bytes()),
        }
    }
}

/// What others see of the detector, republished from the detector thread.
#[derive(Default)]
pub struct Published {
    suspicious: ArcSwap<Option<Suspicious>>,
    counters: ArcSwap<TraceCounters>,
}

/// The detector's outputs: the detector thread's handle on publishing what the detector saw
/// (it runs as that thread's [`super::detector_thread::PublishHook`]).
pub struct Detection {
    sink: EventSink,
    published: Arc<Published>,
    metrics: Arc<TraceMetrics>,
    last_publish: Option<Instant>,
}

/// How often the snapshot and the counters are republished.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A detector for `config` with its lists loaded, and the outputs it publishes to.
pub fn detector(
    config: TraceConfig,
    sink: EventSink,
    metrics: Arc<TraceMetrics>,
) -> anyhow::Result<(Detector, Detection, Arc<Published>)> {
    let lists = load_lists(&config.lists, &metrics);
    let mut detector = Detector::new(config)?;
    detector.replace_lists(lists);
    let published = Arc::new(Published::default());
    metrics.attach(published.clone());
    let detection = Detection {
        sink,
        published: published.clone(),
        metrics,
        last_publish: None,
    };
    Ok((detector, detection, published))
}

impl Detection {
    /// Writes pending events and, at most once a second (or when `force`), republishes the
    /// snapshot and counters.
    pub fn publish(&mut self, detector: &mut Detector, force: bool) {
        for event in detector.take_events() {
            match event.to_json_line() {
                Ok(line) => {
                    if let Err(err) = self.sink.write(&line) {
                        self.metrics
                            .events_unwritten
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%err, "cannot write an event");
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot serialise an event"),
            }
        }
        let due = self
            .last_publish
            .is_none_or(|last| last.elapsed() >= PUBLISH_EVERY);
        if force || due {
            self.published
                .suspicious
                .store(Arc::new(Some(detector.snapshot())));
            self.published.counters.store(Arc::new(detector.counters()));
            self.last_publish = Some(Instant::now());
        }
    }
}

/// `GET /suspicious`: the current top lists and recent events, as `ingress-tap block` reads
/// them.
pub fn suspicious_router(published: Option<Arc<Published>>) -> Router {
    Router::new()
        .route("/suspicious", get(suspicious))
        .with_state(published)
}

async fn suspicious(State(published): State<Option<Arc<Published>>>) -> Response {
    match published.as_ref().map(|p| p.suspicious.load_full()) {
        Some(snapshot) => match snapshot.as_ref() {
            Some(suspicious) => Json(suspicious.clone()).into_response(),
            None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
        },
        None => (
            axum::http::StatusCode::NOT_FOUND,
            "tracing is off (INGRESS_TAP_TRACE=false)\n",
        )
            .into_response(),
    }
}

/// Trace metrics, encoded at scrape time from the published copy.
///
/// The top lists hold attacker-chosen addresses, which change as fast as a sender rotates
/// them. Their request gauges are labelled by `rank` and `provenance` only, a fixed set of at
/// most `top_n` × 3 series per list, so a gauge's history is continuous however the addresses
/// turn over. The address at each rank is in `ingress_tap_trace_top_address_info` (value 1),
/// which is the one family whose series follow the addresses: at most `top_n` per list at any
/// scrape, joined to the gauges on `rank`.
#[derive(Debug, Default)]
pub struct TraceMetrics {
    published: std::sync::OnceLock<Arc<Published>>,
    /// Threat list files or lines that could not be loaded.
    pub list_errors: AtomicU64,
    /// Threat list reloads.
    pub list_reloads: AtomicU64,
    /// Events that could not be written.
    pub events_unwritten: AtomicU64,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Published")
    }
}

impl TraceMetrics {
    fn attach(&self, published: Arc<Published>) {
        let _ = self.published.set(published);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct NameLabels {
    name: String,
    provenance: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct BudgetLabels {
    kind: &'static str,
    stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RankLabels {
    rank: String,
    provenance: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AddressLabels {
    list: &'static str,
    rank: String,
    ip: String,
    provenance: &'static str,
}

/// The shared handle registered in the registry.
#[derive(Debug)]
pub struct TraceCollector(pub Arc<TraceMetrics>);

impl Collector for TraceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let metrics = &self.0;
        let counter = |encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64| {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        counter(
            &mut encoder,
            "ingress_tap_trace_list_errors",
            "Threat list files or entries that could not be loaded",
            metrics.list_errors.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "ingress_tap_trace_list_reloads",
            "Threat list reloads",
            metrics.list_reloads.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "ingress_tap_trace_events_unwritten",
            "Events that could not be written",
            metrics.events_unwritten.load(Ordering::Relaxed),
        )?;
        let Some(published) = metrics.published.get() else {
            return Ok(());
        };
        let counters = published.counters.load_full();
        let named = |encoder: &mut DescriptorEncoder<'_>,
                     name: &str,
                     help: &str,
                     values: &[ingress_tap_core::detect::NamedCount]|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for value in values {
                let labels = NameLabels {
                    name: value.name.clone(),
                    provenance: value.provenance.as_str(),
                };
                ConstCounter::new(value.count).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        named(
            &mut encoder,
            "ingress_tap_trace_list_hits",
            "Requests whose original IP or connection source fell in a threat list",
            &counters.list_hits,
        )?;
        named(
            &mut encoder,
            "ingress_tap_trace_list_events",
            "Threat list events raised",
            &counters.list_events,
        )?;
        named(
            &mut encoder,
            "ingress_tap_trace_rule_events",
            "Volume rule events raised",
            &counters.rule_events,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "ingress_tap_trace_events_rate_limited",
                "Events not raised because their budget (max_events_per_second per kind and \
                 stream) was used up",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for budget in &counters.events_rate_limited_by_budget {
                let labels = BudgetLabels {
                    kind: budget.kind.as_str(),
                    stream: budget.stream.as_str(),
                };
                ConstCounter::new(budget.count).encode(family.encode_family(&labels)?)?;
            }
        }
        let suspicious = published.suspicious.load_full();
        if let Some(suspicious) = suspicious.as_ref() {
            let lists = [
                (
                    "original",
                    "ingress_tap_trace_top_original_requests",
                    "Requests of the busiest verified original IPs in the current window, by rank",
                    &suspicious.top_original,
                ),
                (
                    "source",
                    "ingress_tap_trace_top_source_requests",
                    "Requests of the busiest connection sources in the current window, by rank",
                    &suspicious.top_sources,
                ),
                (
                    "claimed",
                    "ingress_tap_trace_top_claimed_requests",
                    "Requests of the busiest claimed original IPs (believed from headers \
                     nothing vouches for) in the current window, by rank",
                    &suspicious.top_claimed,
                ),
            ];
            for (_, name, help, entries) in lists {
                let mut family = encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    prometheus_client::metrics::MetricType::Gauge,
                )?;
                for (rank, entry) in entries.iter().enumerate() {
                    let labels = RankLabels {
                        rank: (rank + 1).to_string(),
                        provenance: entry.provenance.map_or("unknown", Provenance::as_str),
                    };
                    ConstGauge::new(i64::try_from(entry.requests).unwrap_or(i64::MAX))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "ingress_tap_trace_top_address_info",
                "The address at each rank of the top lists (list: original, source, claimed)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (list, _, _, entries) in lists {
                for (rank, entry) in entries.iter().enumerate() {
                    let labels = AddressLabels {
                        list,
                        rank: (rank + 1).to_string(),
                        ip: entry.ip.to_string(),
                        provenance: entry.provenance.map_or("unknown", Provenance::as_str),
                    };
                    ConstGauge::new(1).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingress_tap_core::detect::heavy_hitters::TopEntry;
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    fn scrape(metrics: &Arc<TraceMetrics>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(TraceCollector(metrics.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn suspicious(first_address: u32, top_n: u32) -> Suspicious {
        let entries = |provenance| {
            (0..top_n)
                .map(|i| TopEntry {
                    ip: IpAddr::from(std::net::Ipv4Addr::from(first_address + i)),
                    requests: u64::from(top_n - i) * 10,
                    error: 0,
                    provenance: Some(provenance),
                })
                .collect::<Vec<_>>()
        };
        Suspicious {
            schema_version: 1,
            window_seconds: 60,
            window_started: None,
            top_original: entries(Provenance::Trusted),
            top_sources: entries(Provenance::Connection),
            previous_window: None,
            recent_events: Vec::new(),
            top_claimed: entries(Provenance::Claimed),
            claimed_events: Vec::new(),
        }
    }

    fn series(text: &str, family: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|line| line.starts_with(family))
            .map(|line| line.rsplit_once(' ').unwrap().0.to_owned())
            .collect()
    }

    #[test]
    fn top_list_gauges_keep_their_series_while_addresses_rotate() {
        let metrics = Arc::new(TraceMetrics::default());
        let published = Arc::new(Published::default());
        metrics.attach(published.clone());
        let mut gauges = BTreeSet::new();
        let mut addresses = 0;
        // Ten scrapes, each seeing ten entirely new addresses per list.
        for scrape_number in 0..10 {
            published.suspicious.store(Arc::new(Some(suspicious(
                0x0a00_0000 + scrape_number * 100,
                10,
            ))));
            let text = scrape(&metrics);
            for list in ["original", "source", "claimed"] {
                gauges.extend(series(
                    &text,
                    &format!("ingress_tap_trace_top_{list}_requests{{"),
                ));
            }
            let info = series(&text, "ingress_tap_trace_top_address_info{");
            assert_eq!(info.len(), 30, "{text}");
            addresses += info.len();
            assert!(gauges.iter().all(|s| !s.contains("ip=")), "{gauges:?}");
        }
        // 3 lists × 10 ranks, whatever the addresses; only the info family follows them.
        assert_eq!(gauges.len(), 30, "{gauges:?}");
        assert_eq!(addresses, 300);
    }
}
