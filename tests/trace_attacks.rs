//! Trace under attack, end to end: real nginx writes the lines, the collector binary runs in
//! its default mode (headers believed from anyone) or behind a trusted proxy, and what it
//! publishes is what an operator would act on. Whoever sends the traffic writes
//! `X-Forwarded-For`; these tests are that sender.

use crate::collector_harness as harness;

use harness::nginx::Client;
use harness::traced::{self, suspicious, Traced, TracedStack};
use harness::DEADLINE;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// nginx, a recording Felix and the collector with `config` (`LIST` in it is the path of a
/// threat list holding `list`).
async fn start(config: &str, list: &str, env: &[(&str, &str)]) -> TracedStack {
    Traced {
        config,
        list,
        env,
        ..Traced::default()
    }
    .start()
    .await
}

fn events(dir: &Path) -> Vec<Value> {
    traced::events(&dir.join("events.jsonl"))
}

fn ips(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry["ip"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `ingress-tap block --target nftables` on `input` (a `/suspicious` document) with
/// `extra` arguments; returns (exit success, stdout, stderr).
fn block(input: &str, extra: &[&str]) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
        .args(["block", "--target", "nftables", "--from", "-", "--top", "5"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ingress-tap block");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const FRAMING_CONFIG: &str = r#"window_seconds: 60
top_n: 5
cooldown_seconds: 3600
rules:
  - type: threshold
    name: test-volume
    requests: 50
    window_seconds: 60
"#;

/// The victim: a public third party the attacker wants blocked.
const VICTIM: &str = "198.51.100.20";

#[tokio::test]
async fn framing_a_claimed_address_is_kept_apart_from_what_block_acts_on() {
    let stack = start(FRAMING_CONFIG, "", &[]).await;
    let mut attacker = Client::connect(stack.nginx.addr()).await;
    for _ in 0..120 {
        attacker.get(&[("X-Forwarded-For", VICTIM)]).await;
    }
    let collector = &stack.collector;
    let shown = harness::wait_for(DEADLINE, || async {
        let view = suspicious(collector).await;
        ips(&view["claimed_events"]).contains(&VICTIM.to_owned())
            && ips(&view["top_claimed"]).first().map(String::as_str) == Some(VICTIM)
    })
    .await;
    let view = suspicious(collector).await;
    assert!(shown, "{view}\n{}", collector.output());
    // The operator sees what the headers say, marked as claimed...
    assert_eq!(view["top_claimed"][0]["provenance"], "claimed");
    assert_eq!(view["claimed_events"][0]["provenance"], "claimed");
    assert_eq!(view["claimed_events"][0]["kind"], "volume_threshold");
    // ...and nothing that `block` takes by default names the victim.
    assert!(
        !ips(&view["top_original"]).contains(&VICTIM.to_owned()),
        "{view}"
    );
    assert!(
        !ips(&view["recent_events"]).contains(&VICTIM.to_owned()),
        "{view}"
    );
    // The connection itself is verified: it is the peer, with no header believed... except
    // that every request carried one, so the peer only shows as a connection source.
    assert_eq!(view["top_sources"][0]["ip"], "127.0.0.1");
    assert_eq!(view["top_sources"][0]["provenance"], "connection");
    // The events output marks the event the same way.
    let written = events(stack.dir.path());
    assert!(
        written
            .iter()
            .filter(|event| event["ip"] == VICTIM)
            .all(|event| event["provenance"] == "claimed"),
        "{written:?}"
    );
    // `block` fed this `/suspicious` writes no block for the victim, and says how to opt in.
    let (ok, blocks, said) = block(&view.to_string(), &[]);
    assert!(ok, "{said}");
    assert!(!blocks.contains(VICTIM), "{blocks}");
    assert!(said.contains("--trust-spoofable-headers"), "{said}");
    // Only an operator who says they trust the headers gets the claimed address blocked.
    let (ok, blocks, said) = block(&view.to_string(), &["--trust-spoofable-headers"]);
    assert!(ok && blocks.contains(VICTIM), "{said}\n{blocks}");
    // The startup log named the mode and warned, once, that headers are believed from anyone.
    let output = collector.output();
    assert!(
        output.contains("attribution=\"reference\"") || output.contains("attribution=reference"),
        "{output}"
    );
    assert_eq!(
        output.matches("believed from anyone").count(),
        1,
        "{output}"
    );
}

#[tokio::test]
async fn framing_behind_a_trusted_proxy_names_the_real_client_only() {
    let stack = start(
        FRAMING_CONFIG,
        "",
        &[("INGRESS_TAP_TRUSTED_PROXIES", "127.0.0.1/32")],
    )
    .await;
    // The client wrote the victim's address; the proxy (127.0.0.1) appended the client's.
    let mut attacker = Client::connect(stack.nginx.addr()).await;
    let header = format!("{VICTIM}, 203.0.113.50");
    for _ in 0..120 {
        attacker.get(&[("X-Forwarded-For", &header)]).await;
    }
    let collector = &stack.collector;
    let raised = harness::wait_for(DEADLINE, || async {
        ips(&suspicious(collector).await["recent_events"]).contains(&"203.0.113.50".to_owned())
    })
    .await;
    let view = suspicious(collector).await;
    assert!(raised, "{view}");
    assert_eq!(view["recent_events"][0]["provenance"], "trusted");
    assert_eq!(view["top_original"][0]["ip"], "203.0.113.50");
    assert_eq!(view["top_original"][0]["provenance"], "trusted");
    assert!(!view.to_string().contains(VICTIM), "{view}");
    // `block` fed this `/suspicious` blocks the real client, verified by the proxy.
    let (ok, blocks, said) = block(&view.to_string(), &[]);
    assert!(ok && blocks.contains("203.0.113.50"), "{said}\n{blocks}");
    assert!(!blocks.contains(VICTIM), "{blocks}");
    assert_eq!(
        collector.output().matches("believed from anyone").count(),
        0,
        "{}",
        collector.output()
    );
}

#[tokio::test]
async fn drowning_a_spoofed_flood_cannot_rate_limit_away_a_real_abusers_event() {
    // Every new claimed address crosses the rule, and each budget allows two events a
    // second: a flood of spoofed addresses uses up its own budget in its first batch.
    let config = r#"window_seconds: 60
cooldown_seconds: 3600
max_events_per_second: 2
rules:
  - type: threshold
    name: every-address
    requests: 1
    window_seconds: 60
lists:
  - name: abusers
    path: LIST
"#;
    let stack = start(config, "127.0.0.2/32 ; the real abuser\n", &[]).await;
    let collector = &stack.collector;
    let nginx = stack.nginx.addr();

    // The flood: distinct spoofed addresses, one per request, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut client = Client::connect(nginx).await;
            let mut n: u32 = 0;
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                // nginx closes a keep-alive connection after 1,000 requests.
                if n % 500 == 499 {
                    client = Client::connect(nginx).await;
                }
                let spoofed = IpAddr::from([198, 18, (n >> 8) as u8, n as u8]).to_string();
                client.get(&[("X-Forwarded-For", &spoofed)]).await;
                sent.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    };
    let (_, flooding) = collector
        .wait_metric("ingress_tap_trace_events_rate_limited_total", |n| n >= 50.0)
        .await;
    assert!(
        flooding,
        "the flood was never rate-limited:\n{}",
        collector.output()
    );

    // The real abuser: a listed peer, no header at all.
    let mut abuser = Client::connect_from(nginx, "127.0.0.2".parse().unwrap()).await;
    abuser.get(&[]).await;
    let sent_when_abusing = sent.load(Ordering::Relaxed);
    let arrived = harness::wait_for(DEADLINE, || async {
        events(stack.dir.path())
            .iter()
            .any(|event| event["kind"] == "threat_list" && event["ip"] == "127.0.0.2")
    })
    .await;
    let still_flooding = !flood.is_finished();
    stop.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    let written = events(stack.dir.path());
    assert!(
        arrived,
        "the abuser's event never came: {} events",
        written.len()
    );
    assert!(still_flooding && sent.load(Ordering::Relaxed) > sent_when_abusing);

    let abuser_event = written
        .iter()
        .find(|event| event["ip"] == "127.0.0.2" && event["kind"] == "threat_list")
        .unwrap();
    assert_eq!(abuser_event["provenance"], "connection");
    assert_eq!(abuser_event["name"], "abusers");
    // The view is republished at most once a second.
    let listed = harness::wait_for(DEADLINE, || async {
        ips(&suspicious(collector).await["recent_events"]).contains(&"127.0.0.2".to_owned())
    })
    .await;
    let view = suspicious(collector).await;
    assert!(listed, "{view}");
    assert!(
        view["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["provenance"] != "claimed"),
        "{view}"
    );
    // The flood's own budget held: at most two claimed events in any calendar second.
    let mut per_second: BTreeMap<String, usize> = BTreeMap::new();
    for event in written
        .iter()
        .filter(|event| event["provenance"] == "claimed")
    {
        let second = event["time"].as_str().unwrap()[..19].to_owned();
        *per_second.entry(second).or_default() += 1;
    }
    assert!(!per_second.is_empty());
    assert!(per_second.values().all(|&n| n <= 2), "{per_second:?}");
    let metrics = collector.metrics().await.unwrap();
    assert!(
        metrics.contains(
            r#"ingress_tap_trace_events_rate_limited_total{kind="volume_threshold",stream="claimed"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"ingress_tap_trace_events_rate_limited_total{kind="threat_list",stream="original"} 0"#
        ),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// Smaller faults found with the attacks

#[tokio::test]
async fn a_bad_threat_list_line_is_shown_at_the_default_log_level() {
    let config = "lists:\n  - name: feed\n    path: LIST\n";
    let list = "192.0.2.0/24\nnot-an-ip\n10.0.0.0/8 198.51.100.1\n203.0.113.0/24\n";
    // The default LOG_LEVEL (Panic, as the reference collector's) keeps only errors.
    let stack = start(config, list, &[("LOG_LEVEL", "Panic")]).await;
    let collector = &stack.collector;
    let (errors, counted) = collector
        .wait_metric("ingress_tap_trace_list_errors_total", |n| n >= 2.0)
        .await;
    assert!(counted, "{errors}");
    let output = collector.output();
    let summaries: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("threat list has lines that cannot be read"))
        .collect();
    assert_eq!(summaries.len(), 1, "{output}");
    assert!(summaries[0].contains("feed"), "{}", summaries[0]);
    assert!(summaries[0].contains("unreadable=2"), "{}", summaries[0]);
    assert!(summaries[0].contains("first_line=2"), "{}", summaries[0]);
    // Nothing below error level at the default.
    assert!(
        !output.contains("WARN") && !output.contains("INFO"),
        "{output}"
    );
}

#[test]
fn a_config_error_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trace.yaml");
    std::fs::write(&config, "window_seconds: 60\nwindw_seconds: 5\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
        .args(["collect", "--log-path"])
        .arg(dir.path().join("ingress.log"))
        .arg("--trace-config")
        .arg(&config)
        .env_clear()
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("unknown field `windw_seconds`").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("invalid trace config"), "{stderr}");
}
