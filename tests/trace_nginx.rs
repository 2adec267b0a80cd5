//! Trace end to end: real nginx writing the spec's template, the collector binary with trusted
//! proxies, volume rules and a threat list, and a recording Felix. What a security team reads —
//! reports, events, metrics and `/suspicious` — must name the right client.

use crate::collector_harness as harness;

use harness::nginx::Client;
use harness::traced::{events, suspicious, Traced, TracedStack};
use harness::{felix_reads, DEADLINE};
use serde_json::Value;
use std::net::IpAddr;

/// A trace config with a burst rule small enough to trip in a test and a long cool-down.
const TRACE_CONFIG: &str = r#"window_seconds: 60
top_n: 5
cooldown_seconds: 3600
rules:
  - type: threshold
    name: test-volume
    requests: 20
    window_seconds: 60
lists:
  - name: test-blocklist
    path: LIST
"#;

async fn start(env: &[(&str, &str)]) -> TracedStack {
    Traced {
        config: TRACE_CONFIG,
        list: "# test list\n192.0.2.0/24 ; documentation range\nnot-an-ip\n",
        env,
        ..Traced::default()
    }
    .start()
    .await
}

#[tokio::test]
async fn a_spoofed_header_behind_a_trusted_proxy_is_attributed_to_the_real_client() {
    // nginx sees every connection from 127.0.0.1: that is the trusted proxy (a load balancer).
    let stack = start(&[("INGRESS_TAP_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let mut client = Client::connect(stack.nginx.addr()).await;
    // The client wrote "6.6.6.6" itself; the proxy appended the address it saw, 203.0.113.9.
    client
        .get(&[
            ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
            ("X-Real-IP", "6.6.6.6"),
        ])
        .await;
    let wanted: IpAddr = "203.0.113.9".parse().unwrap();
    let arrived = harness::felix_heard(&stack.felix.recorder, wanted).await;
    let reports = stack.felix.recorder.reports();
    assert!(arrived, "Felix never read 203.0.113.9: {reports:?}");
    let spoofed: IpAddr = "6.6.6.6".parse().unwrap();
    assert!(
        reports
            .iter()
            .flat_map(|r| r.http_data.iter())
            .all(|entry| felix_reads(entry) != Some(spoofed)),
        "the spoofed address reached Felix: {reports:?}"
    );
    // The detectors see the same client.
    let ok = harness::wait_for(DEADLINE, || async {
        suspicious(&stack.collector).await["top_original"]
            .as_array()
            .is_some_and(|top| top.iter().any(|e| e["ip"] == "203.0.113.9"))
    })
    .await;
    assert!(ok, "{}", suspicious(&stack.collector).await);
    let top = suspicious(&stack.collector).await;
    assert!(
        !top.to_string().contains("6.6.6.6"),
        "the spoofed address reached the detectors: {top}"
    );
    drop(stack.dir);
}

#[tokio::test]
async fn a_burst_raises_one_event_per_cooldown_and_a_listed_ip_shows_everywhere() {
    // Through a trusted proxy, so that the clients are verified and reach the lists that
    // `block` acts on (claimed ones are kept apart: tests/trace_attacks.rs).
    let stack = start(&[("INGRESS_TAP_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let events_path = stack.dir.path().join("events.jsonl");

    // 60 requests from one client: the threshold (20 in a minute) is crossed once, and the
    // one-hour cool-down keeps it to one event.
    let mut client = Client::connect(stack.nginx.addr()).await;
    for _ in 0..60 {
        client.get(&[("X-Forwarded-For", "198.51.100.77")]).await;
    }
    // A client in the threat list.
    let mut listed = Client::connect(stack.nginx.addr()).await;
    listed.get(&[("X-Forwarded-For", "192.0.2.55")]).await;

    let path = events_path.clone();
    let arrived = harness::wait_for(DEADLINE, || {
        let path = path.clone();
        async move {
            let events = events(&path);
            events.iter().any(|e| e["kind"] == "volume_threshold")
                && events.iter().any(|e| e["kind"] == "threat_list")
        }
    })
    .await;
    let all = events(&events_path);
    assert!(arrived, "events: {all:?}\n{}", stack.collector.output());
    let volume: Vec<&Value> = all
        .iter()
        .filter(|e| e["kind"] == "volume_threshold")
        .collect();
    assert_eq!(volume.len(), 1, "one event per cool-down: {volume:?}");
    assert_eq!(volume[0]["ip"], "198.51.100.77");
    assert_eq!(volume[0]["name"], "test-volume");
    assert_eq!(volume[0]["field"], "original");
    assert_eq!(volume[0]["provenance"], "trusted");
    assert_eq!(volume[0]["schema_version"], 1);
    let threat: Vec<&Value> = all.iter().filter(|e| e["kind"] == "threat_list").collect();
    assert_eq!(threat.len(), 1, "{threat:?}");
    assert_eq!(threat[0]["ip"], "192.0.2.55");
    assert_eq!(threat[0]["name"], "test-blocklist");
    assert_eq!(threat[0]["connection"]["dst_port"], stack.nginx.port);

    // More requests after the event: still one event (cool-down), more requests counted.
    for _ in 0..10 {
        client.get(&[("X-Forwarded-For", "198.51.100.77")]).await;
    }
    let collector = &stack.collector;
    let (count, ok) = collector
        .wait_metric("ingress_tap_collector_records_parsed_total", |n| n >= 71.0)
        .await;
    assert!(ok, "only {count} records parsed");
    let published = harness::wait_for(DEADLINE, || async {
        suspicious(collector).await["top_original"]
            .as_array()
            .and_then(|top| top.first().cloned())
            .is_some_and(|first| first["ip"] == "198.51.100.77" && first["requests"] == 70)
    })
    .await;
    let view = suspicious(collector).await;
    assert!(published, "{view}");
    assert_eq!(
        events(&events_path)
            .iter()
            .filter(|e| e["kind"] == "volume_threshold")
            .count(),
        1
    );
    let recent = view["recent_events"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|e| e["kind"] == "threat_list" && e["ip"] == "192.0.2.55"),
        "{view}"
    );

    // Metrics: the list hit, the rule's event, the top IP as a ranked gauge, the bad list line.
    let metrics = collector.metrics().await.unwrap();
    assert!(
        metrics.contains(
            r#"ingress_tap_trace_list_hits_total{name="test-blocklist",provenance="trusted"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ingress_tap_trace_rule_events_total{name="test-volume",provenance="trusted"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ingress_tap_trace_top_original_requests{rank="1",provenance="trusted"} 70"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ingress_tap_trace_top_address_info{list="original",rank="1",ip="198.51.100.77",provenance="trusted"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("ingress_tap_trace_list_errors_total 1"),
        "{metrics}"
    );

    // The list file changes (a ConfigMap update): the new entry is in force without restart.
    let list = stack.dir.path().join("blocklist.txt");
    let tmp = stack.dir.path().join("blocklist.tmp");
    std::fs::write(&tmp, "192.0.2.0/24\n198.18.0.0/15 ; benchmark range\n").unwrap();
    std::fs::rename(&tmp, &list).unwrap();
    let reloaded = harness::wait_for(DEADLINE, || async {
        collector
            .metrics()
            .await
            .is_some_and(|m| m.contains("ingress_tap_trace_list_reloads_total 1"))
    })
    .await;
    assert!(reloaded, "{}", collector.output());
    listed.get(&[("X-Forwarded-For", "198.19.1.1")]).await;
    let path = events_path.clone();
    let seen = harness::wait_for(DEADLINE, || {
        let path = path.clone();
        async move { events(&path).iter().any(|e| e["ip"] == "198.19.1.1") }
    })
    .await;
    assert!(seen, "{:?}", events(&events_path));
}
