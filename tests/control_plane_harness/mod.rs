//! What the end-to-end tests need around the loopback control plane of tests/control-plane/:
//! starting and always stopping it, clients for it (kube and kubectl), the rendered manifests,
//! the webhook's review counters, and a second, tiny mutating webhook.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ingress_tap::admission::{self, RunningWebhook};
use ingress_tap::certs::{self, CERT_FILE, KEY_FILE};
use ingress_tap::cli::webhook::WebhookOptions;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The repository root.
pub fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scripts_dir() -> PathBuf {
    repository().join("tests/control-plane")
}

/// Prints how long a scenario took, each line starting with `label`; the budget is checked by
/// reading, never asserted.
pub struct Step {
    label: &'static str,
    name: &'static str,
    started: Instant,
}

impl Step {
    pub fn start(label: &'static str, name: &'static str) -> Self {
        eprintln!("{label}: {name} ...");
        Step {
            label,
            name,
            started: Instant::now(),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        eprintln!(
            "{}: {} done in {:.1} s",
            self.label,
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Starts the webhook in this process on 127.0.0.1 with `config`, serving a certificate for
/// 127.0.0.1 signed by a new CA named `ca_name` (the files are written to `dir`); returns the
/// webhook and the CA's PEM, the caBundle the API server needs.
pub async fn start_webhook(dir: &Path, ca_name: &str, config: PathBuf) -> (RunningWebhook, String) {
    let generated =
        certs::generate(&["127.0.0.1".into()], ca_name).expect("generate the serving certificate");
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    std::fs::write(&cert, &generated.cert_pem).expect("write tls.crt");
    std::fs::write(&key, &generated.key_pem).expect("write tls.key");
    let webhook = admission::start(WebhookOptions {
        listen: Some("127.0.0.1:0".parse().expect("address")),
        health_listen: Some("127.0.0.1:0".parse().expect("address")),
        tls_cert: Some(cert),
        tls_key: Some(key),
        config: Some(config),
        dev_dir: None,
        max_body_bytes: 3 * 1024 * 1024,
        max_connections: 64,
        client_timeout_seconds: 10,
        ..WebhookOptions::default()
    })
    .await
    .expect("start the webhook");
    (webhook, generated.ca_pem)
}

/// The arguments of the certs Job shipped in `manifests` (as [`render`] returns them).
pub fn certs_job_args(manifests: &[Value]) -> Vec<String> {
    manifests
        .iter()
        .find(|object| object["kind"] == "Job")
        .expect("manifests/ ship the certs Job")
        .pointer("/spec/template/spec/containers/0/args")
        .and_then(Value::as_array)
        .expect("the Job's arguments")
        .iter()
        .map(|arg| arg.as_str().expect("string argument").to_owned())
        .collect()
}

/// The last `lines` lines of a process output, for failure messages.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run_script(name: &str, args: &[&Path]) -> Output {
    run_script_with(name, args, &[])
}

fn run_script_with(name: &str, args: &[&Path], env: &[(&str, &str)]) -> Output {
    Command::new(scripts_dir().join(name))
        .args(args)
        .envs(env.iter().copied())
        // The watchdog stops the control plane if this test process is killed outright, when
        // no Drop runs.
        .env("INGRESS_TAP_CP_OWNER_PID", std::process::id().to_string())
        .output()
        .unwrap_or_else(|error| panic!("cannot run tests/control-plane/{name}: {error}"))
}

/// A running control plane; dropping it stops every process, also when an assertion panics.
pub struct ControlPlane {
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Builds (or finds cached) and starts the control plane; fails the test with the
    /// scripts' own explanation when that is impossible, never skips.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`ControlPlane::start`], plus kube-scheduler and a node (containerd, runc and a
    /// kubelet named `localhost`) on which pods run; see tests/control-plane/node.sh.
    pub fn start_with_node() -> Self {
        Self::start_with(&[("INGRESS_TAP_CP_NODE", "1")])
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        let build = run_script("build.sh", &[]);
        assert!(
            build.status.success(),
            "the loopback control plane cannot be provided: build.sh failed ({}):\n{}",
            build.status,
            tail(&build.stderr, 60)
        );
        let dir = tempfile::Builder::new()
            .prefix("e2e-control-plane-")
            .tempdir()
            .expect("temp dir for the control plane");
        // The guard exists before up.sh runs, so a partial start is stopped as well.
        let control_plane = ControlPlane { dir };
        let up = run_script_with("up.sh", &[control_plane.dir.path()], env);
        assert!(
            up.status.success(),
            "up.sh failed ({}):\n{}",
            up.status,
            tail(&up.stderr, 60)
        );
        control_plane
    }

    /// The admin kubeconfig written by up.sh.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A value of the `env` file up.sh wrote (`KEY=value` lines).
    pub fn env(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.path().join("env")).ok()?;
        text.lines()
            .rev()
            .filter_map(|line| line.split_once('='))
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.to_owned())
    }

    /// The control plane's directory (logs, credentials, the node's state).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Builds an image with tests/control-plane/images.sh (`pause`, `nginx` or
    /// `ingress-tap`, the latter from `binary`) and imports it into the node's containerd;
    /// returns its reference.
    pub fn import_image(&self, kind: &str, binary: Option<&Path>) -> String {
        let out = self.dir.path().join("images");
        let mut command = Command::new(scripts_dir().join("images.sh"));
        command.arg(kind).arg(&out);
        if let Some(binary) = binary {
            command.env("INGRESS_TAP_BINARY", binary);
        }
        if let Some(bin_dir) = self.env("KUBE_BIN_DIR") {
            command.env("KUBE_BIN_DIR", bin_dir);
        }
        let built = command.output().expect("run images.sh");
        assert!(
            built.status.success(),
            "images.sh {kind} failed: {}",
            tail(&built.stderr, 30)
        );
        let line = String::from_utf8_lossy(&built.stdout).trim().to_owned();
        let (reference, archive) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("images.sh {kind} printed {line:?}"));
        let imported = Command::new(scripts_dir().join("node.sh"))
            .arg("import")
            .arg(self.dir.path())
            .arg(archive)
            .output()
            .expect("run node.sh import");
        assert!(
            imported.status.success(),
            "node.sh import {archive} failed: {}",
            tail(&imported.stderr, 30)
        );
        reference.to_owned()
    }

    /// A scratch file path inside the control plane's directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a namespace with the `kubernetes.io/metadata.name` label newer servers set.
    pub fn create_namespace(&self, name: &str) {
        let output = Command::new(scripts_dir().join("namespace.sh"))
            .arg(self.dir.path())
            .arg(name)
            .output()
            .expect("run namespace.sh");
        assert!(
            output.status.success(),
            "namespace.sh {name} failed: {}",
            tail(&output.stderr, 20)
        );
    }

    /// A kube client with admin rights.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("client config from the written kubeconfig");
        Client::try_from(config).expect("kube client")
    }

    /// Runs kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_path())
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let down = run_script("down.sh", &[self.dir.path()]);
        if !down.status.success() {
            // Panicking inside drop during an unwind would abort and hide the first failure.
            eprintln!("down.sh failed: {}", tail(&down.stderr, 20));
        }
    }
}

/// kubectl from PATH; the tests fail with what to install when it is missing.
pub fn kubectl_path() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("kubectl (with kustomize v5) is not on PATH; install it (scripts/test.sh says how)")
    })
}

/// Renders a kustomization with kubectl's built-in kustomize, as users apply it.
pub fn render(kustomization: &str) -> Vec<Value> {
    let output = Command::new(kubectl_path())
        .arg("kustomize")
        .arg(repository().join(kustomization))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {kustomization} failed: {}",
        tail(&output.stderr, 20)
    );
    yaml_documents(&String::from_utf8_lossy(&output.stdout))
}

/// Every non-empty document of a YAML stream, as JSON values.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("valid YAML document"))
        .filter(|value| !value.is_null())
        .collect()
}

/// Writes values as one YAML stream.
pub fn write_yaml_stream(path: &Path, documents: &[Value]) {
    let text: Vec<String> = documents
        .iter()
        .map(|document| serde_norway::to_string(document).expect("serialise YAML"))
        .collect();
    std::fs::write(path, text.join("---\n")).expect("write YAML stream");
}

/// `kind namespace/name` of an object, for messages.
pub fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Polls `probe` until it yields a value or `deadline` passes; then fails naming `what`.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The webhook's `ingress_tap_webhook_reviews_total` counters, keyed by (outcome, reason).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewCounts(pub BTreeMap<(String, String), u64>);

impl ReviewCounts {
    /// Parses the Prometheus text exposition.
    pub fn parse(metrics: &str) -> Self {
        let mut counts = BTreeMap::new();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("ingress_tap_webhook_reviews_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                    .map(|value| value.trim_end_matches('"').to_owned())
                    .unwrap_or_default()
            };
            let value: u64 = value.trim().parse().expect("counter value");
            counts.insert((label("outcome"), label("reason")), value);
        }
        ReviewCounts(counts)
    }

    /// One counter (0 when never incremented).
    pub fn get(&self, outcome: &str, reason: &str) -> u64 {
        self.0
            .get(&(outcome.to_owned(), reason.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Every review answered.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The counts added since `earlier`.
    pub fn since(&self, earlier: &ReviewCounts) -> ReviewCounts {
        ReviewCounts(
            self.0
                .iter()
                .map(|(key, value)| {
                    let before = earlier.0.get(key).copied().unwrap_or(0);
                    (key.clone(), value.saturating_sub(before))
                })
                .filter(|(_, value)| *value > 0)
                .collect(),
        )
    }
}

/// Reads the review counters from the webhook's plain-HTTP metrics port.
pub async fn review_counts(health_addr: SocketAddr) -> ReviewCounts {
    let tcp = tokio::net::TcpStream::connect(health_addr)
        .await
        .expect("connect to the metrics port");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake with the metrics port");
    tokio::spawn(connection);
    let request = Request::get("/metrics")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("metrics request");
    let response = sender.send_request(request).await.expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200, "GET /metrics");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("metrics body")
        .to_bytes();
    ReviewCounts::parse(&String::from_utf8_lossy(&body))
}

/// A TLS server config for a PEM certificate and key, with the ring provider.
pub fn tls_server_config(cert_pem: &str, key_pem: &str) -> rustls::ServerConfig {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate")
}

/// A second mutating webhook, standing in for any other injector in a cluster: it appends a
/// container named [`ExtraContainerWebhook::CONTAINER`] to every pod it is asked about that
/// does not have one yet, and counts its calls.
pub struct ExtraContainerWebhook {
    /// Where it listens (HTTPS, path /mutate).
    pub addr: SocketAddr,
    /// The CA its certificate chains to: the caBundle of its configuration.
    pub ca_pem: String,
    calls: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

impl ExtraContainerWebhook {
    /// Name of the container it adds.
    pub const CONTAINER: &'static str = "extra";

    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        let certs = ingress_tap::certs::generate(&["127.0.0.1".into()], "extra webhook CA")
            .expect("certificates for the extra webhook");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_server_config(
            &certs.cert_pem,
            &certs.key_pem,
        )));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let calls = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let counter = calls.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopped.wait_for(|stop| *stop) => return,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            counter.fetch_add(1, Ordering::SeqCst);
                            let answer = Self::answer(&body);
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(answer)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        ExtraContainerWebhook {
            addr,
            ca_pem: certs.ca_pem,
            calls,
            stop,
        }
    }

    /// The AdmissionReview answer: allowed, with a patch adding the container when missing.
    fn answer(body: &[u8]) -> Vec<u8> {
        let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let request = &review["request"];
        let containers = request["object"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let present = containers
            .iter()
            .any(|container| container["name"] == Self::CONTAINER);
        let mut response = json!({"uid": request["uid"].clone(), "allowed": true});
        if !present {
            let patch = json!([{
                "op": "add",
                "path": "/spec/containers/-",
                "value": {"name": Self::CONTAINER, "image": "registry.invalid/extra:1"}
            }]);
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&patch).expect("patch JSON")));
        }
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response
        }))
        .expect("review JSON")
    }

    /// Reviews answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for ExtraContainerWebhook {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
