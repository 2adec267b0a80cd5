//! Hiding by padding a header, end to end: real nginx (accepting 8 KB headers, as its default
//! does, plus the header's name) writes the spec's template, the collector binary reads it in
//! its default mode and behind a trusted proxy, and a recording Felix takes the reports. A
//! client that pads its X-Forwarded-For must still be reported, checked against the threat
//! lists, and counted as oversize — not dropped as a malformed line.

use crate::collector_harness as harness;

use harness::nginx::Client;
use harness::traced::{events, Traced, TracedStack};
use harness::{http_get, DEADLINE};
use std::net::IpAddr;

/// nginx's default `large_client_header_buffers` size, the longest header line it accepts.
const HEADER_BYTES: usize = 8 * 1024;

/// Padding nginx's default escaping writes four times longer: each `"` is `\x22` in the log.
fn padding() -> String {
    "\"".repeat(HEADER_BYTES)
}

async fn start(env: &[(&str, &str)]) -> TracedStack {
    Traced {
        config: "lists:\n  - name: test-blocklist\n    path: LIST\n",
        list: "192.0.2.0/24 ; documentation range\n",
        env,
        // The default 8k buffer holds an 8 KB value but not its header name as well.
        nginx: "large_client_header_buffers 4 16k;",
    }
    .start()
    .await
}

/// Sends `x_forwarded_for` and checks that `client` comes out everywhere: Felix reads it, the
/// threat list names it, the oversize header is counted and no line was dropped.
async fn assert_padded_client_is_seen(stack: &TracedStack, x_forwarded_for: &str, client: &str) {
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
    let reported = harness::felix_heard(&stack.felix.recorder, wanted).await;
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
