//! The memory bound with no cap on http_data, end to end: the collector binary under its
//! smallest memory limit, a real gRPC Felix on a Unix socket, intervals that carry more
//! distinct addresses than the interval's share holds, a queue that overflows while Felix is
//! away, and a SIGKILL (what the OOM killer sends) in the middle of it.
//!
//! Every line carries an original IP of its own, so each line reaches Felix at most once, as
//! one http_data entry, and each line that does not is counted by one documented reason.

#[path = "collector_harness/mod.rs"]
mod harness;

use harness::{
    append, felix_reads, numbered_ip, template_line, wait_for, Collector, CollectorSettings,
    FakeFelix, DEADLINE,
};
use ingress_tap_core::collect::budget::MemoryBudget;
use ingress_tap_felix_proto::DataplaneStats;
use ingress_tap_test_support::felix_recorder::Recorder;
use std::collections::BTreeSet;
use std::path::Path;

/// The smallest limit the collector accepts: its bounds are then the smallest too.
const LIMIT: usize = 16 << 20;
/// Connections the lines are spread over.
const CONNECTIONS: u32 = 8;

/// Line `n`: on connection `n % CONNECTIONS`, from original IP number `n`.
fn line(n: u32) -> String {
    let port = 2000 + (n % CONNECTIONS) as u16;
    template_line(
        ("10.1.10.1", port),
        ("10.1.1.10", 443),
        &numbered_ip(n),
        "-",
    )
}

fn lines(range: std::ops::Range<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    for n in range {
        out.extend_from_slice(line(n).as_bytes());
        out.push(b'\n');
    }
    out
}

/// The IP numbers of the http_data entries in `reports`, in arrival order.
fn delivered(reports: &[DataplaneStats]) -> Vec<u32> {
    reports
        .iter()
        .flat_map(|report| report.http_data.iter())
        .map(|entry| match felix_reads(entry) {
            Some(std::net::IpAddr::V4(ip)) => u32::from(ip) & 0x00ff_ffff,
            other => panic!("Felix would read {other:?} from {entry:?}"),
        })
        .collect()
}

fn values(reports: &[DataplaneStats]) -> i64 {
    reports
        .iter()
        .flat_map(|report| report.stats.iter())
        .map(|stat| stat.value)
        .sum()
}

/// The checkpoint's offset: where a restart resumes.
fn checkpoint_offset(log: &Path) -> Option<u64> {
    let path = log.with_file_name(".ingress.log.ingress-tap-checkpoint");
    let text = std::fs::read(path).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&text).ok()?;
    json.get("offset")?.as_u64()
}

/// Lines before byte `offset` of a log made of lines `0..`.
fn lines_before(offset: u64) -> u32 {
    let mut bytes = 0u64;
    let mut n = 0u32;
    while bytes < offset {
        bytes += line(n).len() as u64 + 1;
        n += 1;
    }
    assert_eq!(bytes, offset, "the checkpoint is not at a line boundary");
    n
}

/// Checks the messages' shape: at most `entries` http_data each, and one INGRESS_DATA value per
/// connection and interval, on its first message.
fn check_messages(reports: &[DataplaneStats], entries: usize) {
    for report in reports {
        assert!(
            report.http_data.len() <= entries,
            "a message with {} entries, over {entries}",
            report.http_data.len()
        );
        assert_eq!(report.stats.len(), 1, "{report:?}");
        assert!(report.http_data.iter().all(|h| h.r#type.is_empty()));
    }
}

/// `delivered` is the first `delivered.len()` numbers of `written`, each once: first come,
/// first kept.
fn assert_prefix(delivered: &[u32], written: std::ops::Range<u32>, context: &str) {
    let mut sorted = delivered.to_vec();
    sorted.sort_unstable();
    let expected: Vec<u32> = written.take(delivered.len()).collect();
    assert_eq!(sorted.len(), expected.len(), "{context}: count differs");
    let first_wrong = sorted.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        first_wrong, None,
        "{context}: the entries carried are not the first ones written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cap_over_the_interval_bounds_with_a_queue_overflow_and_a_kill() {
    let budget = MemoryBudget::of_limit(LIMIT);
    let limits = budget.aggregator_limits(-1);
    let per_message = budget.message_entries();
    // The first batch fits the exact pool (every count exact, every IP known new) but not the
    // interval's http_data share.
    let first = 32_000u32;
    assert!(
        (limits.max_http_data as u32) < first && first <= limits.max_exact_ips as u32,
        "{limits:?}"
    );
    let max = limits.max_http_data as u32;
    assert!((first / CONNECTIONS) as usize <= limits.exact_distinct_per_connection);
    // Then, with Felix away: a small interval, one within the share even with the vectors'
    // spare slots (a ninth at most, and one per connection), then one that, read together
    // with the one before it after a restart, is over the share.
    let (b, c, d) = (1_000u32, max / 9 * 8 - 2 * CONNECTIONS, 4_000u32);
    assert!(c + d > max && c + d <= limits.max_exact_ips as u32);
    assert!(((c + d) / CONNECTIONS + 1) as usize <= limits.exact_distinct_per_connection);

    let dir = tempfile::tempdir().unwrap();
    let mut settings = CollectorSettings::in_dir(dir.path(), -1);
    settings.extra_env = vec![
        ("INGRESS_TAP_MEMORY_LIMIT".to_owned(), "16Mi".to_owned()),
        ("INGRESS_TAP_QUEUE_INTERVALS".to_owned(), "2".to_owned()),
        ("INGRESS_TAP_TRACE".to_owned(), "false".to_owned()),
    ];
    let log = settings.log_path.clone();
    let socket = settings.felix_socket.clone().unwrap();

    // 1. Felix answers. The first batch appears at once (a file created after the start is
    // read from its beginning, in one read), so it is one interval.
    let mut felix = FakeFelix::start(&socket, Recorder::default()).await;
    let mut collector = Collector::start(&settings).await;
    let staged = dir.path().join("staged.log");
    std::fs::write(&staged, lines(0..first)).unwrap();
    std::fs::rename(&staged, &log).unwrap();
    let arrived = felix
        .recorder
        .wait_until(DEADLINE, |reports| values(reports) >= i64::from(first))
        .await;
    assert!(arrived, "phase 1 did not arrive:\n{}", collector.output());
    let first_bytes = std::fs::metadata(&log).unwrap().len();
    let saved = wait_for(DEADLINE, || async {
        checkpoint_offset(&log) == Some(first_bytes)
    })
    .await;
    assert!(
        saved,
        "the checkpoint did not reach the end of what Felix has"
    );
    let before = felix.recorder.take();
    check_messages(&before, per_message);
    assert_eq!(
        values(&before),
        i64::from(first),
        "every IP counts, carried or not"
    );
    let carried_first = delivered(&before);
    assert_prefix(&carried_first, 0..first, "first interval");
    let kept = carried_first.len() as u32;
    // Entries are kept until the share's slots are spent; a connection's spare slots are
    // under a ninth of its vector, plus one.
    assert!(kept <= max, "{kept}");
    assert!(kept >= max / 9 * 8 - CONNECTIONS, "{kept}");
    // One value per connection: the first message of each carries it, the rest carry 0.
    let with_value = before.iter().filter(|r| r.stats[0].value > 0).count();
    assert_eq!(with_value, CONNECTIONS as usize);
    assert!(
        before.len() > CONNECTIONS as usize,
        "large reports went in pieces"
    );
    let not_carried = "ingress_tap_collector_original_ips_not_carried_total";
    let over_memory = metric_with(&collector, not_carried, "interval_memory").await;
    assert_eq!(over_memory, f64::from(first - kept), "the rest is counted");

    // 2. Felix goes away. Three intervals queue up in a queue of two: the oldest is dropped
    // and counted, and the checkpoint moves past it (the decision is final).
    felix.stop().await;
    let mut written = first;
    for size in [b, c, d] {
        append(&log, &lines(written..written + size));
        written += size;
        let (parsed, ok) = collector
            .wait_metric("ingress_tap_collector_records_parsed_total", |v| {
                v >= f64::from(written)
            })
            .await;
        assert!(ok, "parsed {parsed} of {written}:\n{}", collector.output());
        collector.wait_intervals(1).await;
    }
    let (dropped, ok) = collector
        .wait_metric("ingress_tap_collector_reports_dropped_total", |v| v > 0.0)
        .await;
    assert!(ok && dropped >= f64::from(CONNECTIONS), "{dropped}");
    let moved = wait_for(DEADLINE, || async {
        checkpoint_offset(&log).is_some_and(|offset| offset > first_bytes)
    })
    .await;
    assert!(
        moved,
        "the checkpoint did not move past the dropped interval"
    );
    let queue_full = metric_with(&collector, not_carried, "queue_full").await;
    let over_memory_before = metric_with(&collector, not_carried, "interval_memory").await;
    assert_eq!(
        over_memory_before,
        f64::from(first - kept),
        "nothing over the share in the smaller intervals"
    );
    // The OOM killer does not wait.
    collector.kill();
    let resume = lines_before(checkpoint_offset(&log).unwrap());
    assert!(resume >= first + b && resume < written, "{resume}");
    assert_eq!(
        queue_full,
        f64::from(resume - first),
        "every line between the first interval and the checkpoint was dropped and counted"
    );

    // 3. Felix is back and the collector restarts: it resumes at the checkpoint, so it sends
    // exactly the lines after it (in one interval, read at once), first come first kept
    // within the share, and nothing Felix already had or the queue dropped.
    let felix = FakeFelix::start(&socket, Recorder::default()).await;
    let collector = Collector::start(&settings).await;
    let rest = written - resume;
    let arrived = felix
        .recorder
        .wait_until(DEADLINE, |reports| values(reports) >= i64::from(rest))
        .await;
    assert!(arrived, "phase 3 did not arrive:\n{}", collector.output());
    collector.wait_intervals(2).await;
    let after = felix.recorder.reports();
    check_messages(&after, per_message);
    assert_eq!(
        values(&after),
        i64::from(rest),
        "no line repeated, none skipped"
    );
    let carried_after = delivered(&after);
    assert_prefix(&carried_after, resume..written, "after the restart");
    let over_memory_after = metric_with(&collector, not_carried, "interval_memory").await;
    assert_eq!(
        over_memory_after,
        f64::from(rest - carried_after.len() as u32)
    );
    if rest > max {
        assert!(over_memory_after > 0.0);
    }
    let before_set: BTreeSet<u32> = carried_first.iter().copied().collect();
    assert!(carried_after.iter().all(|n| !before_set.contains(n)));
    // Every line written is accounted for exactly once.
    let accounted = f64::from(kept)
        + over_memory_before
        + queue_full
        + carried_after.len() as f64
        + over_memory_after;
    assert_eq!(accounted, f64::from(written));
}

/// One labelled series of a counter family.
async fn metric_with(collector: &Collector, name: &str, reason: &str) -> f64 {
    let text = collector.metrics().await.expect("metrics");
    let series = format!("{name}{{reason=\"{reason}\"}}");
    text.lines()
        .find_map(|line| {
            let (s, value) = line.rsplit_once(' ')?;
            (s == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}
