//! ingress-tap on a real node: the loopback control plane of tests/control-plane/ with
//! kube-scheduler and a node (containerd, runc, kubelet 1.20, bridge CNI), images built
//! offline from this machine's programs. What runs for real and what is stood in is in
//! docs/e2e.md.
//!
//! One node serves the whole file, so the scenarios run in sequence inside one test, each
//! reporting its time on stderr:
//! - a plain pod is scheduled onto the node and runs with an address from the pod network;
//! - an ingress-controller Deployment (Debian's nginx with the ingress log format) in a
//!   namespace labelled for injection gets the sidecar from the webhook, runs, serves a real
//!   request carrying X-Forwarded-For, and a Felix stand-in on the node's socket path receives
//!   a DataplaneStats whose HTTPData carries the client address;
//! - the sidecar is stopped and the kubelet restarts it: every request's record reaches Felix
//!   exactly once, including those logged while no collector ran;
//! - the sidecar's security context, as the kernel applies it to the running process;
//! - the webhook installed from manifests/ runs as pods on the node; the API server reaches it
//!   through its Service as docs/install.md describes, refuses opted-in pods while no replica
//!   is ready, and has the ingress controller's next pod injected by it once they are.

mod collector_harness;
mod control_plane_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use collector_harness::nginx::{Client as HttpClient, INGRESS_TEMPLATE};
use collector_harness::{delivered_pairs, duplicates, felix_reads, FakeFelix};
use control_plane_harness::{
    certs_job_args, render, repository, start_webhook, tail, wait_for, ControlPlane, Step,
};
use ingress_tap::admission::RunningWebhook;
use ingress_tap::certs;
use ingress_tap_core::inject::{
    InjectConfig, INJECT_ENABLED, INJECT_LABEL, INTERVAL_ANNOTATION, REQUESTS_ANNOTATION,
};
use ingress_tap_felix_proto::DataplaneStats;
use ingress_tap_test_support::felix_recorder::Recorder;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

/// Pods start, restart and report on a loaded two-core machine; every wait is on a condition
/// and this only bounds a broken run.
const DEADLINE: Duration = Duration::from_secs(180);
/// The namespace of the ingress controller, labelled for injection.
const INGRESS_NAMESPACE: &str = "ingress-nginx";
/// The ingress controller's Deployment and its container (one of the default targets).
const CONTROLLER: &str = "ingress-nginx-controller";
const CONTROLLER_CONTAINER: &str = "controller";
/// Where nginx listens inside the pod.
const NGINX_PORT: u16 = 8080;
/// The collector's report interval in this test (annotation), to keep waits short.
const INTERVAL_SECONDS: u64 = 1;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ingress-tap")
}

/// Starts timing one scenario of this file.
fn step(name: &'static str) -> Step {
    Step::start("e2e-node", name)
}

// ---------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_tap_on_a_real_node() {
    let started = Instant::now();
    let control_plane = {
        let _step = step("control plane and node up");
        ControlPlane::start_with_node()
    };
    let client = control_plane.client().await;

    let images = {
        let _step = step("images built offline and imported");
        Images::import(&control_plane)
    };
    {
        let _step = step("a plain pod runs");
        plain_pod_runs(&control_plane, &client, &images).await;
    }

    let felix_dir = PathBuf::from(
        control_plane
            .env("FELIX_HOST_DIR")
            .expect("up.sh names the node's Felix directory"),
    );
    let felix = FelixStandIn::start(&felix_dir).await;
    let served = ServedWebhook::start(&control_plane).await;
    let ingress = {
        let _step = step("injected ingress controller runs");
        let ingress = IngressController::deploy(&control_plane, &client, &images, &served).await;
        ingress.assert_injected_and_running(&served.config, &images);
        // The API server reaches the kubelet (node address localhost) for the logs.
        let logs = kubectl_ok(
            &control_plane,
            &[
                "logs",
                "-n",
                INGRESS_NAMESPACE,
                ingress.name(),
                "-c",
                CONTROLLER_CONTAINER,
            ],
            "kubectl logs of nginx",
        );
        assert!(logs.contains("start worker process"), "nginx's log: {logs}");
        ingress
    };
    let mut sent = Vec::new();
    {
        let _step = step("a real request's client address reaches Felix");
        sent.extend(client_address_reaches_felix(&ingress, &felix).await);
    }
    {
        let _step = step("sidecar restarted by the kubelet: nothing lost or doubled");
        sidecar_restart_loses_and_doubles_nothing(&control_plane, &client, &ingress, &felix, sent)
            .await;
    }
    {
        let _step = step("security context as applied");
        security_context_as_applied(&client, &ingress, &served.config).await;
    }
    {
        let _step = step("the webhook as a pod, behind its Service");
        webhook_as_a_pod(&control_plane, &client, &ingress, &felix, served).await;
    }
    eprintln!(
        "e2e-node: all scenarios done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Images

struct Images {
    pause: String,
    nginx: String,
    ingress_tap: String,
}

impl Images {
    fn import(control_plane: &ControlPlane) -> Images {
        let ingress_tap = control_plane.import_image("ingress-tap", Some(Path::new(binary())));
        // The shipped injection config names the image by the crate's version: the image the
        // webhook injects is the one just built.
        assert_eq!(
            ingress_tap,
            InjectConfig::default().image,
            "images.sh tags the project image as the injection config's default"
        );
        Images {
            pause: control_plane.import_image("pause", None),
            nginx: control_plane.import_image("nginx", None),
            ingress_tap,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The pod's phase, and whether every container is ready.
fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .container_statuses
            .iter()
            .flatten()
            .all(|container| container.ready)
}

fn pod_summary(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let containers: Vec<String> = status
        .container_statuses
        .iter()
        .flatten()
        .map(|container| {
            format!(
                "{} ready={} restarts={} state={}",
                container.name,
                container.ready,
                container.restart_count,
                serde_json::to_string(&container.state).unwrap_or_default()
            )
        })
        .collect();
    format!(
        "{} phase={:?} node={:?} ip={:?} [{}]",
        pod.metadata.name.as_deref().unwrap_or("?"),
        status.phase,
        pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        status.pod_ip,
        containers.join("; ")
    )
}

/// What a failure should show: the pods of the namespace, their events, the node's logs.
fn diagnostics(control_plane: &ControlPlane, namespace: &str) -> String {
    let pods = control_plane.kubectl(&["get", "pods", "-n", namespace, "-o", "wide"]);
    let events = control_plane.kubectl(&["get", "events", "-n", namespace]);
    let kubelet = std::fs::read(control_plane.dir().join("kubelet.log")).unwrap_or_default();
    let containerd = std::fs::read(control_plane.dir().join("containerd.log")).unwrap_or_default();
    format!(
        "pods:\n{}\nevents:\n{}\nkubelet.log (tail):\n{}\ncontainerd.log (tail):\n{}",
        String::from_utf8_lossy(&pods.stdout),
        String::from_utf8_lossy(&events.stdout),
        tail(&kubelet, 30),
        tail(&containerd, 15)
    )
}

/// Waits until a pod named by `select` among `namespace`'s pods satisfies `done`.
async fn wait_for_pod(
    control_plane: &ControlPlane,
    client: &Client,
    namespace: &str,
    labels: &str,
    what: &str,
    done: impl Fn(&Pod) -> bool,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    loop {
        let listed = pods
            .list(&ListParams::default().labels(labels))
            .await
            .map(|list| list.items)
            .unwrap_or_default();
        if let Some(pod) = listed.iter().find(|pod| done(pod)) {
            return pod.clone();
        }
        if start.elapsed() > DEADLINE {
            let summaries: Vec<String> = listed.iter().map(pod_summary).collect();
            panic!(
                "{what}: not within {DEADLINE:?}; pods: {summaries:#?}\n{}",
                diagnostics(control_plane, namespace)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A plain pod

async fn plain_pod_runs(control_plane: &ControlPlane, client: &Client, images: &Images) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "labels": {"e2e-node": "plain"}},
        // No nodeName: the scheduler places it.
        "spec": {"containers": [{"name": "pause", "image": images.pause}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the plain pod");
    let running = wait_for_pod(
        control_plane,
        client,
        "default",
        "e2e-node=plain",
        "the plain pod Running",
        running_and_ready,
    )
    .await;
    let spec = running.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some("localhost"), "scheduled");
    let ip: IpAddr = running
        .status
        .as_ref()
        .and_then(|status| status.pod_ip.as_deref())
        .expect("a pod IP")
        .parse()
        .expect("pod IP");
    assert!(
        matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 217, 0]),
        "the pod's address {ip} comes from the bridge network 10.217.0.0/24"
    );
    pods.delete("plain", &Default::default())
        .await
        .expect("delete the plain pod");
}

// ---------------------------------------------------------------------------------------------
// The Felix stand-in

/// A PolicySync server on the node's Felix socket path, recording every report.
struct FelixStandIn {
    recorder: Recorder,
    _felix: FakeFelix,
}

impl FelixStandIn {
    /// Serves where the injected hostPath volume puts `socketFile` of the shipped config:
    /// FELIX_HOST_DIR is the node's /var/run/nodeagent.
    async fn start(felix_dir: &Path) -> FelixStandIn {
        let config = InjectConfig::default();
        let socket = felix_dir.join(&config.felix_volume.socket_file);
        let parent = socket.parent().expect("socket directory");
        std::fs::create_dir_all(parent).expect("create the socket directory");
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the socket directory");
        let recorder = Recorder::default();
        let felix = FakeFelix::start(&socket, recorder.clone()).await;
        // Felix's sockets are for any workload user; the collector runs as 65532.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
            .expect("chmod the socket");
        FelixStandIn {
            recorder,
            _felix: felix,
        }
    }

    /// Waits until every address in `wanted` has reached Felix; fails naming what is missing.
    async fn wait_heard(&self, wanted: &[IpAddr], context: &str) {
        let wanted: BTreeSet<IpAddr> = wanted.iter().copied().collect();
        let heard = self
            .recorder
            .wait_until(DEADLINE, |reports| {
                wanted.is_subset(&heard_addresses(reports))
            })
            .await;
        let got = heard_addresses(&self.recorder.reports());
        assert!(
            heard,
            "{context}: Felix did not hear {:?} within {DEADLINE:?}",
            wanted.difference(&got).collect::<Vec<_>>()
        );
    }
}

fn heard_addresses(reports: &[DataplaneStats]) -> BTreeSet<IpAddr> {
    reports
        .iter()
        .flat_map(|report| report.http_data.iter())
        .filter_map(felix_reads)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The webhook (inside the test process, reached by the API server on 127.0.0.1)

struct ServedWebhook {
    webhook: RunningWebhook,
    ca_pem: String,
    config: InjectConfig,
    files: tempfile::TempDir,
}

impl ServedWebhook {
    /// The shipped injection config with the one change the node needs: the Felix volume is a
    /// hostPath (Calico's CSI driver does not run here).
    async fn start(control_plane: &ControlPlane) -> Self {
        let files = tempfile::tempdir_in(control_plane.dir()).expect("temp dir");
        let shipped =
            std::fs::read_to_string(repository().join("manifests/base/inject-config.yaml"))
                .expect("read the shipped config");
        let changed = shipped.replacen("  kind: csi ", "  kind: hostPath ", 1);
        assert_ne!(
            changed, shipped,
            "the shipped config sets felixVolume.kind: csi"
        );
        let config_path = files.path().join("config.yaml");
        std::fs::write(&config_path, &changed).expect("write the config");
        let config = InjectConfig::from_yaml(&changed).expect("the changed config is valid");

        let (webhook, ca_pem) =
            start_webhook(files.path(), "ingress-tap e2e-node CA", config_path).await;
        ServedWebhook {
            webhook,
            ca_pem,
            config,
            files,
        }
    }

    fn url(&self) -> String {
        format!("https://{}/mutate", self.webhook.addr)
    }
}

// ---------------------------------------------------------------------------------------------
// The ingress controller

struct IngressController {
    pod: Pod,
    address: SocketAddr,
}

fn nginx_conf(log_path: &str) -> String {
    format!(
        r#"worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr info;
events {{
    worker_connections 256;
}}
http {{
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    log_format ingress '{INGRESS_TEMPLATE}';
    access_log {log_path} ingress;
    server {{
        listen {NGINX_PORT};
        location / {{
            return 200 "ok\n";
        }}
    }}
}}
"#
    )
}

impl IngressController {
    /// Installs the shipped webhook configuration pointed at the test's webhook, labels the
    /// namespace, and creates the controller's ConfigMap and Deployment; returns once its pod
    /// runs with every container ready.
    async fn deploy(
        control_plane: &ControlPlane,
        client: &Client,
        images: &Images,
        served: &ServedWebhook,
    ) -> IngressController {
        install_webhook_configuration(client, served).await;

        control_plane.create_namespace(INGRESS_NAMESPACE);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .patch(
                INGRESS_NAMESPACE,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: INJECT_ENABLED}}})),
            )
            .await
            .expect("label the namespace for injection");
        wait_for_token(client, INGRESS_NAMESPACE).await;

        let log_path = format!("{}/{}", served.config.log_dir, served.config.log_file);
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), INGRESS_NAMESPACE);
        let config_map: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "nginx-conf"},
            "data": {"nginx.conf": nginx_conf(&log_path)}
        }))
        .expect("ConfigMap");
        config_maps
            .create(&PostParams::default(), &config_map)
            .await
            .expect("create the nginx ConfigMap");

        let labels = json!({"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"});
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": CONTROLLER},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        // No cap on the addresses per interval: every record must arrive.
                        "annotations": {
                            INTERVAL_ANNOTATION: INTERVAL_SECONDS.to_string(),
                            REQUESTS_ANNOTATION: "-1"
                        }
                    },
                    "spec": {
                        "containers": [{
                            "name": CONTROLLER_CONTAINER,
                            "image": images.nginx,
                            "imagePullPolicy": "Never",
                            "ports": [{"name": "http", "containerPort": NGINX_PORT}],
                            "securityContext": {"runAsUser": 101, "runAsGroup": 101},
                            "readinessProbe": {
                                "tcpSocket": {"port": NGINX_PORT},
                                "periodSeconds": 1
                            },
                            "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx"}]
                        }],
                        "volumes": [{"name": "conf", "configMap": {"name": "nginx-conf"}}]
                    }
                }
            }
        }))
        .expect("Deployment");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), INGRESS_NAMESPACE);
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .expect("create the ingress controller Deployment");

        let pod = wait_for_pod(
            control_plane,
            client,
            INGRESS_NAMESPACE,
            "app.kubernetes.io/name=ingress-nginx",
            "the injected ingress controller running and ready",
            running_and_ready,
        )
        .await;
        IngressController::serving(pod)
    }

    /// The controller `pod`, with nginx's address on the pod network.
    fn serving(pod: Pod) -> Self {
        let ip: IpAddr = pod
            .status
            .as_ref()
            .and_then(|status| status.pod_ip.as_deref())
            .expect("pod IP")
            .parse()
            .expect("pod IP parses");
        IngressController {
            pod,
            address: SocketAddr::new(ip, NGINX_PORT),
        }
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().expect("pod name")
    }

    /// Exactly one sidecar, running, with the shared log volume mounted in both containers
    /// and the Felix volume a hostPath.
    fn assert_injected_and_running(&self, config: &InjectConfig, images: &Images) {
        let spec = self.pod.spec.as_ref().expect("spec");
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec![CONTROLLER_CONTAINER, config.sidecar_name.as_str()],
            "the webhook appended one sidecar"
        );
        assert_eq!(
            spec.containers[1].image.as_deref(),
            Some(images.ingress_tap.as_str()),
            "the sidecar runs the image built from this tree"
        );
        let felix_volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == config.felix_volume.name)
            .expect("the Felix volume");
        assert_eq!(
            felix_volume.host_path.as_ref().map(|h| h.path.as_str()),
            Some(config.felix_volume.host_path.as_str())
        );
        for container in &spec.containers {
            assert!(
                container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|mount| mount.name == config.log_volume_name
                        && mount.mount_path == config.log_dir),
                "{} mounts the shared log volume at {}",
                container.name,
                config.log_dir
            );
        }
        let statuses = self
            .pod
            .status
            .as_ref()
            .and_then(|status| status.container_statuses.clone())
            .unwrap_or_default();
        assert_eq!(statuses.len(), 2, "{}", pod_summary(&self.pod));
        for status in &statuses {
            assert!(
                status.state.as_ref().is_some_and(|s| s.running.is_some()),
                "{}",
                pod_summary(&self.pod)
            );
        }
    }

    /// The containerd ID of a container of the pod (from its status), as in its cgroup path.
    fn container_id(pod: &Pod, container: &str) -> String {
        let status = pod
            .status
            .as_ref()
            .and_then(|status| status.container_statuses.as_ref())
            .and_then(|statuses| statuses.iter().find(|s| s.name == container))
            .unwrap_or_else(|| panic!("no status for container {container}"));
        let id = status.container_id.as_deref().expect("container ID");
        id.strip_prefix("containerd://")
            .unwrap_or_else(|| panic!("unexpected container ID {id}"))
            .to_owned()
    }
}

async fn install_webhook_configuration(client: &Client, served: &ServedWebhook) {
    let base = render("manifests");
    let mut configuration = base
        .iter()
        .find(|object| object["kind"] == "MutatingWebhookConfiguration")
        .expect("manifests/ ship a MutatingWebhookConfiguration")
        .clone();
    for webhook in configuration["webhooks"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        webhook["clientConfig"] = json!({
            "url": served.url(),
            "caBundle": certs::ca_bundle(&served.ca_pem),
        });
    }
    let configuration: MutatingWebhookConfiguration =
        serde_json::from_value(configuration).expect("typed MutatingWebhookConfiguration");
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configurations
        .create(&PostParams::default(), &configuration)
        .await
        .expect("create the webhook configuration");
    // In use once a dry-run pod in a labelled namespace comes back injected; the namespace
    // does not exist yet, so the probe uses a pod label in namespace default.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let probe: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "labels": {INJECT_LABEL: INJECT_ENABLED}},
        "spec": {"containers": [{"name": "controller", "image": "registry.invalid/x:1"}]}
    }))
    .expect("probe pod");
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let sidecar = served.config.sidecar_name.clone();
    wait_for(DEADLINE, "the webhook configuration in use", || async {
        let answered = pods.create(&dry_run, &probe).await.ok()?;
        answered
            .spec?
            .containers
            .iter()
            .any(|container| container.name == sidecar)
            .then_some(())
    })
    .await;
}

async fn wait_for_token(client: &Client, namespace: &str) {
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    wait_for(DEADLINE, "the default service account's token", || async {
        let account = accounts.get("default").await.ok()?;
        account
            .secrets
            .is_some_and(|secrets| !secrets.is_empty())
            .then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Requests and what Felix hears

/// The client address of request `n`: TEST-NET-3, distinct per request.
fn client_address(n: u32) -> IpAddr {
    IpAddr::from([203, 0, 113, (n % 250 + 1) as u8])
}

/// One request on its own connection (each connection is its own flow at Felix); returns
/// the (source port, client address) pair Felix should receive.
async fn request(address: SocketAddr, client: IpAddr) -> (i32, String) {
    let mut connection = HttpClient::connect(address).await;
    connection
        .get(&[("X-Forwarded-For", &client.to_string())])
        .await;
    (i32::from(connection.local_port), client.to_string())
}

async fn client_address_reaches_felix(
    ingress: &IngressController,
    felix: &FelixStandIn,
) -> Vec<(i32, String)> {
    let client = client_address(0);
    let pair = request(ingress.address, client).await;
    felix.wait_heard(&[client], "the first request").await;
    let reports = felix.recorder.reports();
    let report = reports
        .iter()
        .find(|report| {
            report
                .http_data
                .iter()
                .any(|entry| felix_reads(entry) == Some(client))
        })
        .expect("the report carrying the client");
    // The flow is the real connection: from the node's bridge address to the pod.
    assert_eq!(
        report.dst_ip,
        ingress.address.ip().to_string(),
        "{report:?}"
    );
    assert_eq!(report.dst_port, i32::from(NGINX_PORT), "{report:?}");
    assert_eq!(report.src_port, pair.0, "{report:?}");
    let entry = report
        .http_data
        .iter()
        .find(|entry| felix_reads(entry) == Some(client))
        .expect("entry");
    assert_eq!(entry.x_forwarded_for, client.to_string());
    assert!(
        entry.r#type.is_empty(),
        "HTTPData.type stays empty: {entry:?}"
    );
    vec![pair]
}

// ---------------------------------------------------------------------------------------------
// The sidecar restarted

/// The PID, in this machine's PID namespace, of the container's first process: the process
/// whose cgroup path ends in the container's ID.
fn container_pid(container_id: &str) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cgroups| {
                cgroups
                    .lines()
                    .any(|line| line.ends_with(&format!("/{container_id}")))
            })
        })
        .collect();
    pids.sort_unstable();
    pids.first().copied()
}

async fn sidecar_restart_loses_and_doubles_nothing(
    control_plane: &ControlPlane,
    client: &Client,
    ingress: &IngressController,
    felix: &FelixStandIn,
    mut sent: Vec<(i32, String)>,
) {
    let sidecar = InjectConfig::default().sidecar_name;
    // Before: requests the running collector reports.
    for n in 1..=20 {
        sent.push(request(ingress.address, client_address(n)).await);
    }
    wait_delivered(felix, &sent, "before the restart").await;

    let id = IngressController::container_id(&ingress.pod, &sidecar);
    let pid = container_pid(&id).unwrap_or_else(|| panic!("no process for container {id}"));
    // SIGTERM, as the kubelet stops a container: the collector sends its open interval,
    // checkpoints and exits; restartPolicy Always has the kubelet start it again.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -TERM {pid}");
    // Logged while the collector is down or starting: the checkpoint brings them back.
    for n in 21..=40 {
        sent.push(request(ingress.address, client_address(n)).await);
    }
    let restarted = wait_for_pod(
        control_plane,
        client,
        INGRESS_NAMESPACE,
        "app.kubernetes.io/name=ingress-nginx",
        "the sidecar restarted by the kubelet",
        |pod| {
            pod.metadata.name.as_deref() == Some(ingress.name())
                && running_and_ready(pod)
                && pod
                    .status
                    .as_ref()
                    .and_then(|status| status.container_statuses.as_ref())
                    .and_then(|statuses| statuses.iter().find(|s| s.name == sidecar))
                    .is_some_and(|status| status.restart_count >= 1)
        },
    )
    .await;
    let new_id = IngressController::container_id(&restarted, &sidecar);
    assert_ne!(new_id, id, "a new container");
    for n in 41..=60 {
        sent.push(request(ingress.address, client_address(n)).await);
    }
    wait_delivered(felix, &sent, "after the restart").await;

    // Two more intervals, so that a late duplicate would have arrived too.
    tokio::time::sleep(Duration::from_secs(3 * INTERVAL_SECONDS)).await;
    let reports = felix.recorder.reports();
    let pairs = delivered_pairs(&reports);
    let delivered: BTreeSet<(i32, String)> = pairs.iter().cloned().collect();
    let wanted: BTreeSet<(i32, String)> = sent.iter().cloned().collect();
    assert_eq!(wanted.len(), sent.len(), "each request is its own record");
    let doubled: BTreeMap<(i32, String), usize> = duplicates(&pairs);
    assert_eq!(delivered, wanted, "exactly the requests sent reached Felix");
    assert!(doubled.is_empty(), "delivered twice: {doubled:?}");
}

async fn wait_delivered(felix: &FelixStandIn, sent: &[(i32, String)], context: &str) {
    let wanted: BTreeSet<(i32, String)> = sent.iter().cloned().collect();
    let all = felix
        .recorder
        .wait_until(DEADLINE, |reports| {
            let delivered: BTreeSet<(i32, String)> = delivered_pairs(reports).into_iter().collect();
            wanted.is_subset(&delivered)
        })
        .await;
    let delivered: BTreeSet<(i32, String)> = delivered_pairs(&felix.recorder.reports())
        .into_iter()
        .collect();
    assert!(
        all,
        "{context}: not delivered within {DEADLINE:?}: {:?}",
        wanted.difference(&delivered).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// The security context, as the runtime applied it

/// One `Name:\tvalue` line of /proc/PID/status.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        .trim()
        .to_owned()
}

async fn security_context_as_applied(
    client: &Client,
    ingress: &IngressController,
    config: &InjectConfig,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), INGRESS_NAMESPACE);
    let pod = pods.get(ingress.name()).await.expect("get the pod");
    let id = IngressController::container_id(&pod, &config.sidecar_name);
    let pid = container_pid(&id).unwrap_or_else(|| panic!("no process for container {id}"));
    // The kernel's record of the running container process: what runc applied, not what the
    // pod spec asks for.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let uid = config.run_as_user.to_string();
    let gid = config.run_as_group.to_string();
    assert_eq!(
        status_field(&status, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec![uid.as_str(); 4],
        "real, effective, saved and filesystem uid"
    );
    assert_eq!(
        status_field(&status, "Gid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec![gid.as_str(); 4]
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&status, set),
            "0000000000000000",
            "{set}: every capability dropped"
        );
    }
    assert_eq!(
        status_field(&status, "NoNewPrivs"),
        "1",
        "no privilege escalation"
    );
    assert_eq!(
        status_field(&status, "Seccomp"),
        "2",
        "a seccomp filter (RuntimeDefault)"
    );
    // The root filesystem as mounted in the container's own mount namespace.
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("read mountinfo");
    let root = mountinfo
        .lines()
        .find(|line| line.split_whitespace().nth(4) == Some("/"))
        .expect("the container's root mount");
    let options: Vec<&str> = root
        .split_whitespace()
        .nth(5)
        .expect("mount options")
        .split(',')
        .collect();
    assert!(options.contains(&"ro"), "read-only root filesystem: {root}");
}

// ---------------------------------------------------------------------------------------------
// The webhook as a pod

/// The webhook's namespace and objects, as shipped.
const WEBHOOK_NAMESPACE: &str = "ingress-tap";
const WEBHOOK_NAME: &str = "ingress-tap";

fn kubectl_ok(control_plane: &ControlPlane, args: &[&str], what: &str) -> String {
    let output = control_plane.kubectl(args);
    assert!(
        output.status.success(),
        "{what}: kubectl {args:?} failed ({}):\n{}\n{}",
        output.status,
        tail(&output.stdout, 20),
        tail(&output.stderr, 40)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The default installation (manifests/, which tags the image) as this 1.20 server takes it:
/// the PodDisruptionBudget under policy/v1beta1 (policy/v1 is served from 1.21, same schema),
/// the Felix volume of the injection config a hostPath (no CSI driver here), and without the
/// certs Job and CronJob, whose `certs install` the test runs from the machine (pods cannot
/// reach the API server on 127.0.0.1). Everything else as rendered.
fn base_for_this_node(config_yaml: &str) -> Vec<Value> {
    let mut objects = render("manifests");
    objects.retain(|object| object["kind"] != "Job" && object["kind"] != "CronJob");
    for object in &mut objects {
        if object["kind"] == "PodDisruptionBudget" {
            object["apiVersion"] = json!("policy/v1beta1");
            if let Some(spec) = object["spec"].as_object_mut() {
                spec.remove("unhealthyPodEvictionPolicy");
            }
        }
        if object["kind"] == "ConfigMap" && object["metadata"]["name"] == "ingress-tap-config" {
            object["data"]["config.yaml"] = json!(config_yaml);
        }
    }
    objects
}

/// Creates a pod opted in by label in the ingress namespace; the API server's answer.
async fn create_opted_in_pod(client: &Client, name: &str) -> Result<Pod, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), INGRESS_NAMESPACE);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {INJECT_LABEL: INJECT_ENABLED, "e2e-node": "probe"}},
        "spec": {"containers": [{"name": "controller", "image": "registry.invalid/x:1"}]}
    }))
    .expect("pod");
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    pods.create(&dry_run, &pod).await
}

async fn webhook_as_a_pod(
    control_plane: &ControlPlane,
    client: &Client,
    ingress: &IngressController,
    felix: &FelixStandIn,
    in_process: ServedWebhook,
) {
    // The webhook in the test process leaves; from here on only the pods serve.
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configurations
        .delete(WEBHOOK_NAME, &Default::default())
        .await
        .expect("delete the configuration of the in-process webhook");
    let config = in_process.config.clone();
    let config_yaml = std::fs::read_to_string(in_process.files.path().join("config.yaml"))
        .expect("the injection config the test used");
    drop(in_process);

    // Install: the shipped base, with no ready replica at first.
    let mut objects = base_for_this_node(&config_yaml);
    let deployment = objects
        .iter_mut()
        .find(|object| object["kind"] == "Deployment")
        .expect("the base ships the webhook Deployment");
    let replicas = deployment["spec"]["replicas"].as_i64().expect("replicas");
    assert!(replicas >= 1);
    deployment["spec"]["replicas"] = json!(0);
    let file = control_plane.dir().join("webhook-base.yaml");
    control_plane_harness::write_yaml_stream(&file, &objects);
    let path = file.to_str().expect("UTF-8 path");
    // The server drops the fields it does not know (matchLabelKeys, 1.25); kubectl's own
    // check against this server's schema would refuse them instead.
    kubectl_ok(
        control_plane,
        &["apply", "--validate=false", "-f", path],
        "apply the shipped base",
    );
    control_plane.create_namespace(WEBHOOK_NAMESPACE);

    // The serving certificate and caBundle, with the arguments of the shipped certs Job.
    let job_args = certs_job_args(&render("manifests"));
    let installed = std::process::Command::new(binary())
        .args(&job_args)
        .arg("--kubeconfig")
        .arg(control_plane.kubeconfig())
        .output()
        .expect("run ingress-tap certs install");
    assert!(
        installed.status.success(),
        "certs install: {}",
        tail(&installed.stderr, 30)
    );

    // No ready replica: the API server finds no endpoint behind the Service, and under
    // failurePolicy Fail refuses the opted-in pod. Once the configuration is in use, that is.
    let refusal = wait_for(
        DEADLINE,
        "an opted-in pod refused without a webhook",
        || async {
            match create_opted_in_pod(client, "refused").await {
                Err(kube::Error::Api(response)) => Some(response.message),
                _ => None,
            }
        },
    )
    .await;
    assert!(
        refusal.contains("by-pod-label.ingress-tap.io"),
        "the refusal names the webhook: {refusal}"
    );
    assert!(
        refusal.contains("no endpoints available"),
        "refused because no replica is ready: {refusal}"
    );

    // The shipped replica count: the pods start, and once the kubelet's readiness probe passes
    // they join the Service's Endpoints and admission goes through them.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), WEBHOOK_NAMESPACE);
    deployments
        .patch(
            WEBHOOK_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scale the webhook");
    let webhook_pod = wait_for_pod(
        control_plane,
        client,
        WEBHOOK_NAMESPACE,
        "app.kubernetes.io/name=ingress-tap",
        "a webhook pod ready",
        running_and_ready,
    )
    .await;
    assert_eq!(
        webhook_pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref()),
        Some("localhost")
    );
    let injected = wait_for(
        DEADLINE,
        "an opted-in pod injected by the webhook pods",
        || async { create_opted_in_pod(client, "admitted").await.ok() },
    )
    .await;
    assert!(
        injected.spec.as_ref().is_some_and(|spec| spec
            .containers
            .iter()
            .any(|c| c.name == config.sidecar_name)),
        "the pod the webhook pods admitted has the sidecar"
    );

    // The ingress controller's next pod: injected by the webhook pods, running, heard by Felix.
    let pods: Api<Pod> = Api::namespaced(client.clone(), INGRESS_NAMESPACE);
    pods.delete(ingress.name(), &Default::default())
        .await
        .expect("delete the ingress controller's pod");
    let old_name = ingress.name().to_owned();
    let next = wait_for_pod(
        control_plane,
        client,
        INGRESS_NAMESPACE,
        "app.kubernetes.io/name=ingress-nginx",
        "the ingress controller's next pod running",
        |pod| {
            pod.metadata.name.as_deref() != Some(old_name.as_str())
                && pod.metadata.deletion_timestamp.is_none()
                && running_and_ready(pod)
        },
    )
    .await;
    let next = IngressController::serving(next);
    assert!(
        next.pod.spec.as_ref().is_some_and(|spec| spec
            .containers
            .iter()
            .any(|c| c.name == config.sidecar_name)),
        "{}",
        pod_summary(&next.pod)
    );
    let client_ip = client_address(100);
    request(next.address, client_ip).await;
    felix
        .wait_heard(&[client_ip], "through the pod the webhook pods injected")
        .await;
}
