//! The README's first command: `ingress-tap webhook` with no certificate flags generates a CA,
//! prints what a user needs, and the printed curl command succeeds. SIGTERM then stops it with
//! exit code 0, on the default one-thread runtime and on the multi-thread one alike; a closed
//! stdout does not stop it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ingress-tap webhook` in local mode on loopback, with `extra` arguments.
fn local_webhook(extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingress-tap"));
    command
        .args([
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env_remove("INGRESS_TAP_WORKER_THREADS");
    command
}

/// Starts `ingress-tap webhook` in local mode writing into `dir`; returns the child and its
/// stdout lines up to and including the printed curl command.
fn start_local_webhook(
    dir: &std::path::Path,
    stderr: Stdio,
    extra: &[&str],
) -> (KillOnDrop, Vec<String>) {
    let mut child = KillOnDrop(
        local_webhook(extra)
            .arg("--dev-dir")
            .arg(dir)
            .env("LOG_LEVEL", "Info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the binary starts"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    // Drains stdout to the end even once nobody listens, so the webhook never writes into a
    // closed pipe here (a_closed_stdout_does_not_stop_the_webhook covers that case).
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.unwrap_or_default());
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the webhook printed no curl command");
        let done = line.trim_start().starts_with("curl ");
        printed.push(line);
        if done {
            return (child, printed);
        }
    }
}

#[test]
fn local_mode_prints_a_working_curl_command_and_stops_on_sigterm() {
    serves_the_printed_curl_command_and_stops_on_sigterm(&[], 0);
}

#[test]
fn the_multi_thread_runtime_serves_and_stops_alike() {
    serves_the_printed_curl_command_and_stops_on_sigterm(&["--worker-threads", "2"], 2);
}

#[test]
fn zero_worker_threads_is_refused_with_the_accepted_range() {
    let output = local_webhook(&["--worker-threads", "0"])
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--worker-threads") && stderr.contains("1..=1024"),
        "{stderr}"
    );
}

/// Threads of process `pid` named as tokio names its worker threads; a current-thread runtime
/// has none, it runs on the main thread.
fn tokio_worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "tokio-rt-worker")
        .count()
}

fn serves_the_printed_curl_command_and_stops_on_sigterm(extra: &[&str], workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, printed) = start_local_webhook(dir.path(), Stdio::null(), extra);
    // tokio starts its workers when the runtime is built, but a worker names itself only once
    // its thread runs: the count is waited for, not read once.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = tokio_worker_threads(child.0.id());
    while seen != workers && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = tokio_worker_threads(child.0.id());
    }
    assert_eq!(seen, workers, "{extra:?}");
    let curl = printed.last().unwrap().clone();
    let text = printed.join("\n");
    assert!(text.contains("caBundle (base64):"), "{text}");
    assert!(dir.path().join("ca.pem").exists());
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE") && !ca.contains("PRIVATE KEY"));

    let output = Command::new("sh")
        .arg("-c")
        .arg(curl.trim())
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must end the webhook with exit code 0"
    );
}

/// A pod name is attacker-chosen text (mutating admission runs before the API server validates
/// names): logged, it must not be able to start a forged log line or carry escape bytes.
#[test]
fn a_pod_name_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("webhook.log");
    let (_child, printed) = start_local_webhook(
        dir.path(),
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
        &[],
    );
    let url = printed
        .last()
        .and_then(|curl| curl.split_whitespace().last())
        .unwrap()
        .to_owned();
    // A denied review (unknown target container) is logged at Info, with the pod's name.
    let mut review: serde_json::Value =
        serde_json::from_str(ingress_tap::admission::dev::SAMPLE_REVIEW).unwrap();
    review["request"]["object"]["metadata"]["name"] =
        serde_json::json!("evil\nFORGED review outcome=injected \u{1b}[31m");
    review["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({"ingress-tap/container": "no-such-container"});
    let body = dir.path().join("evil.json");
    std::fs::write(&body, serde_json::to_vec(&review).unwrap()).unwrap();
    let answer = curl_post(&dir.path().join("ca.pem"), &body, &url);
    assert_eq!(answer["response"]["allowed"], false);

    // The log line is written before the answer; wait for it with a deadline.
    let log = wait_for_log(&log_path, "unknown_target_container", None);
    assert!(
        !log.lines().any(|line| line.starts_with("FORGED")),
        "a pod name started a log line:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "an escape byte reached the log:\n{log}"
    );
    assert!(
        log.contains(r"evil\nFORGED"),
        "the name is logged, escaped:\n{log}"
    );
}

/// Local mode prints its instructions to stdout; when the reader of that pipe has gone away
/// the webhook logs that it cannot print them and serves on.
#[test]
fn a_closed_stdout_does_not_stop_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("webhook.log");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = KillOnDrop(
        local_webhook(&[])
            .arg("--dev-dir")
            .arg(dir.path())
            .env("LOG_LEVEL", "Info")
            .stdout(writer)
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("the binary starts"),
    );
    let log = wait_for_log(
        &log_path,
        "cannot print the local-mode instructions",
        Some(&mut child),
    );
    let addr = log
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no listen address logged:\n{log}"));
    let port = addr.rsplit(':').next().unwrap();
    let answer = curl_post(
        &dir.path().join("ca.pem"),
        &dir.path().join("review.json"),
        &format!("https://localhost:{port}/mutate"),
    );
    assert_eq!(answer["response"]["allowed"], true);
    assert!(child.0.try_wait().unwrap().is_none(), "the webhook exited");
}

/// Posts the review in file `body` to `url` with curl, trusting only `ca`; the parsed answer.
fn curl_post(ca: &std::path::Path, body: &std::path::Path, url: &str) -> serde_json::Value {
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(ca)
        .args(["-H", "Content-Type: application/json", "--data"])
        .arg(format!("@{}", body.display()))
        .arg(url)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The log at `path` once it holds `needle`, within a deadline; fails early when `webhook`
/// (if given) exits meanwhile.
fn wait_for_log(
    path: &std::path::Path,
    needle: &str,
    mut webhook: Option<&mut KillOnDrop>,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) {
            return log;
        }
        if let Some(webhook) = webhook.as_mut() {
            assert!(
                webhook.0.try_wait().unwrap().is_none(),
                "the webhook exited:\n{log}"
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never logged:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
