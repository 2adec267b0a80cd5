//! The whole trace path on real components: nginx writing the spec's template, a recording
//! Felix, and the collector binary with a trace configuration, a threat list and an events
//! file, all in one temporary directory.

use super::nginx::Nginx;
use super::{http_get, wait_for, Collector, CollectorSettings, FakeFelix, DEADLINE};
use ingress_tap_test_support::felix_recorder::Recorder;
use serde_json::Value;

/// A running traced stack; everything stops when it is dropped.
pub struct TracedStack {
    pub nginx: Nginx,
    pub felix: FakeFelix,
    pub collector: Collector,
    pub dir: tempfile::TempDir,
}

/// How to start a [`TracedStack`].
#[derive(Default)]
pub struct Traced<'a> {
    /// The trace configuration; `LIST` in it stands for the threat list's path.
    pub config: &'a str,
    /// The threat list's text.
    pub list: &'a str,
    /// More environment for the collector (trusted proxies, log level).
    pub env: &'a [(&'a str, &'a str)],
    /// More `http` directives for nginx.
    pub nginx: &'a str,
}

impl Traced<'_> {
    pub async fn start(&self) -> TracedStack {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("blocklist.txt");
        std::fs::write(&list, self.list).unwrap();
        let config = dir.path().join("trace.yaml");
        std::fs::write(
            &config,
            self.config.replace("LIST", &list.display().to_string()),
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
        for (name, value) in self.env {
            settings
                .extra_env
                .push(((*name).to_owned(), (*value).to_owned()));
        }
        let felix =
            FakeFelix::start(settings.felix_socket.as_ref().unwrap(), Recorder::default()).await;
        let nginx = Nginx::start_with(dir.path(), &settings.log_path, self.nginx).await;
        let collector = Collector::start(&settings).await;
        TracedStack {
            nginx,
            felix,
            collector,
            dir,
        }
    }
}

/// The events in an events file, one JSON value each.
pub fn events(file: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every event line is JSON"))
        .collect()
}

/// The published `/suspicious` view, once the detector has published one (503 before).
pub async fn suspicious(collector: &Collector) -> Value {
    let addr = collector.metrics_addr;
    let published = wait_for(DEADLINE, || async {
        http_get(addr, "/suspicious")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    let (status, body) = http_get(addr, "/suspicious")
        .await
        .expect("/suspicious answers");
    assert!(published && status == 200, "{status}: {body}");
    serde_json::from_str(&body).unwrap()
}
