//! Hiding by padding a header, end to end: real nginx (accepting 8 KB headers, as its default
//! does, plus the header's name) writes the spec's template, the collector binary reads it in
//! its default mode and behind a trusted proxy, and a recording Felix takes the reports. A
//! client that pads its X-Forwarded-For must still be reported, checked against the threat
//! lists, and counted as oversize — not dropped as a malformed line.

#[path = "collector_harness/mod.rs"]
mod harness;

use harness::nginx::{Client, Nginx};
use harness::{felix_reads, http_get, Collector, CollectorSettings, FakeFelix, DEADLINE};
use ingress_tap::collect::felix_recorder::Recorder;
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;

/// nginx's default `large_client_header_buffers` size, the longest header line it accepts.
const HEADER_BYTES: usize = 8 * 1024;

/// Padding nginx's default escaping writes four times longer: each `"` is `\x22` in the log.
fn padding() -> String {
    "\"".repeat(HEADER_BYTES)
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every event line is JSON"))
        .collect()
}

struct Stack {
    nginx: Nginx,
    felix: FakeFelix,
    collector: Collector,
    dir: tempfile::TempDir,
}

async fn start(extra_env: &[(&str, &str)]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blocklist.txt");
    std::fs::write(&list, "192.0.2.0/24 ; documentation range\n").unwrap();
    let config = dir.path().join("trace.yaml");
    std::fs::write(
        &config,
        format!(
            "lists:\n  - name: test-blocklist\n    path: {}\n",
            list.display()
        ),
    )
    .unwrap();
    let mut settings = CollectorSettings::in_dir(dir.path(), -1);
    settings.extra_env = vec![
        (
            "INGRESS_TAP_TRACE_CONFIG".into(),
            config.display().to_string(),
        ),
        (
            "INGRESS_TAP_EVENTS_OUTPUT".into(),
            dir.path().join("events.jsonl").display().to_string(),
        ),
    ];
    for (name, value) in extra_env {
        settings.extra_env.push(((*name).into(), (*value).into()));
    }
    let felix =
        FakeFelix::start(settings.felix_socket.as_ref().unwrap(), Recorder::default()).await;
    // The default 8k buffer holds an 8 KB value but not its header name as well.
    let nginx = Nginx::start_with(
        dir.path(),
        &settings.log_path,
        "large_client_header_buffers 4 16k;",
    )
    .await;
    let collector = Collector::start(&settings).await;
    Stack {
        nginx,
        felix,
        collector,
        dir,
    }
}

/// Sends `x_forwarded_for` and checks that `client` comes out everywhere: Felix reads it, the
/// threat list names it, the oversize header is counted and no line was dropped.
async fn assert_padded_client_is_seen(stack: &Stack, x_forwarded_for: &str, client: &str) {
    let mut connection = Client::connect(stack.nginx.addr()).await;
    connection
        .get(&[("X-Forwarded-For", x_forwarded_for)])
        .await;
    // nginx writes the log line after the response; the padding is in it, escaped.
    let log = stack.dir.path().join("ingress.log");
    let escaped = r"\x22".repeat(HEADER_BYTES);
    let logged =
        harness::wait_for(DEADLINE, || {
            let (log, escaped) = (log.clone(), escaped.clone());
            async move {
                std::fs::read_to_string(&log).is_ok_and(|text| text.contains(escaped.as_str()))
            }
        })
        .await;
    assert!(logged, "{}", stack.nginx.diagnostics());

    let wanted: IpAddr = client.parse().unwrap();
    let reported = stack
        .felix
        .recorder
        .wait_until(DEADLINE, |reports| {
            reports
                .iter()
                .flat_map(|r| r.http_data.iter())
                .any(|entry| felix_reads(entry) == Some(wanted))
        })
        .await;
    assert!(
        reported,
        "Felix never read {client}: {:?}\n{}",
        stack.felix.recorder.reports(),
        stack.collector.output()
    );

    let events_path = stack.dir.path().join("events.jsonl");
    let path = events_path.clone();
    let hit = harness::wait_for(DEADLINE, || {
        let path = path.clone();
        async move {
            events(&path)
                .iter()
                .any(|e| e["kind"] == "threat_list" && e["ip"] == client)
        }
    })
    .await;
    assert!(hit, "no threat-list event: {:?}", events(&events_path));
    // The view is published after the event, on the detector's own schedule.
    let listed = harness::wait_for(DEADLINE, || async {
        http_get(stack.collector.metrics_addr, "/suspicious")
            .await
            .is_some_and(|(status, body)| status == 200 && body.contains(client))
    })
    .await;
    assert!(
        listed,
        "/suspicious: {:?}",
        http_get(stack.collector.metrics_addr, "/suspicious").await
    );

    let collector = &stack.collector;
    let (count, counted) = collector
        .wait_metric("ingress_tap_collector_oversized_headers_total", |n| {
            n >= 1.0
        })
        .await;
    assert!(counted, "oversize headers counted: {count}");
    let metrics = collector.metrics().await.unwrap();
    assert!(
        metrics.contains(
            r#"ingress_tap_collector_oversized_headers_total{field="x-forwarded-for"} 1"#
        ),
        "{metrics}"
    );
    assert_eq!(
        harness::metric_sum(&metrics, "ingress_tap_collector_malformed_lines_total"),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_padding_its_header_is_still_reported_and_checked() {
    // The reference rule reads the first entry, which the padding follows.
    let stack = start(&[]).await;
    let header = format!("192.0.2.10, {}", padding());
    assert_padded_client_is_seen(&stack, &header, "192.0.2.10").await;
}

#[tokio::test]
async fn a_padded_header_behind_a_trusted_proxy_is_walked_from_its_end() {
    // nginx sees every connection from 127.0.0.1, the trusted proxy; the walk reads the
    // right-hand entries, which the padding precedes.
    let stack = start(&[("INGRESS_TAP_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let header = format!("{}, 192.0.2.20", padding());
    assert_padded_client_is_seen(&stack, &header, "192.0.2.20").await;
}
