//! Smoke test of the loopback control plane in tests/control-plane/.
//!
//! Proves that the Kubernetes 1.20 API server and controller-manager built from Debian's
//! source package are usable by the `kube` client this crate depends on: a Deployment turns
//! into a ReplicaSet and then a stored Pod (deployment + replicaset controllers, service
//! account token admission), and every namespace carries the `kubernetes.io/metadata.name`
//! label that webhook namespace selectors rely on.
//!
//! The first run compiles the two server binaries (several minutes on two cores); later runs
//! reuse the cache. When the binaries cannot be provided the test fails with the reason, it
//! never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Controllers work through informers and retries with backoff; a minute is ample on a busy
/// two-core machine and still fails a broken setup in reasonable time.
const CONTROLLER_DEADLINE: Duration = Duration::from_secs(90);

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/control-plane")
}

fn run_script(name: &str, args: &[&Path]) -> Output {
    Command::new(scripts_dir().join(name))
        .args(args)
        .env("INGRESS_TAP_CP_OWNER_PID", std::process::id().to_string())
        .output()
        .unwrap_or_else(|error| panic!("cannot run tests/control-plane/{name}: {error}"))
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Owns a running control plane; dropping it stops every process, also when an assertion
/// panics halfway through the test.
struct ControlPlane {
    dir: tempfile::TempDir,
}

impl ControlPlane {
    fn start() -> Self {
        let build = run_script("build.sh", &[]);
        assert!(
            build.status.success(),
            "the loopback control plane cannot be provided: build.sh failed ({}):\n{}",
            build.status,
            tail(&build.stderr, 60)
        );

        let dir = tempfile::Builder::new()
            .prefix("control-plane-")
            .tempdir()
            .expect("temp dir for the control plane");
        // The guard exists before up.sh runs so that a partial start is stopped as well.
        let control_plane = ControlPlane { dir };
        let up = run_script("up.sh", &[control_plane.dir.path()]);
        assert!(
            up.status.success(),
            "up.sh failed ({}):\n{}",
            up.status,
            tail(&up.stderr, 60)
        );
        control_plane
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn create_namespace(&self, name: &str) {
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

    async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.path("kubeconfig")).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("client config from the written kubeconfig");
        Client::try_from(config).expect("kube client")
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

fn deployment(name: &str) -> Deployment {
    let labels = std::collections::BTreeMap::from([("app".to_owned(), name.to_owned())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".to_owned(),
                        // Never pulled: there is no kubelet.
                        image: Some("registry.invalid/app:1".to_owned()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

async fn wait_for_pod(pods: &Api<Pod>, selector: &str) -> Pod {
    let deadline = Instant::now() + CONTROLLER_DEADLINE;
    let params = ListParams::default().labels(selector);
    loop {
        let listed = pods.list(&params).await.expect("list pods");
        if let Some(pod) = listed.items.into_iter().next() {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "no pod for {selector} within {CONTROLLER_DEADLINE:?}: the deployment or replicaset \
             controller did not act (see kube-controller-manager.log)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_becomes_stored_pod_and_namespaces_are_labelled() {
    let control_plane = ControlPlane::start();
    let client = control_plane.client().await;

    let namespace = "smoke";
    control_plane.create_namespace(namespace);

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let listed = namespaces
        .list(&ListParams::default())
        .await
        .expect("list namespaces");
    let names: Vec<String> = listed
        .items
        .iter()
        .filter_map(|ns| ns.metadata.name.clone())
        .collect();
    for expected in ["default", "kube-system", "kube-public", namespace] {
        assert!(
            names.iter().any(|name| name == expected),
            "namespace {expected} missing from {names:?}"
        );
    }
    for ns in &listed.items {
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        let label = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(NAMESPACE_NAME_LABEL));
        assert_eq!(
            label.map(String::as_str),
            Some(name),
            "namespace {name} lacks {NAMESPACE_NAME_LABEL}={name}"
        );
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    deployments
        .create(&PostParams::default(), &deployment("smoke-app"))
        .await
        .expect("create deployment");

    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let pod = wait_for_pod(&pods, "app=smoke-app").await;

    let owner_kinds: Vec<&str> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|owner| owner.kind.as_str())
        .collect();
    assert_eq!(
        owner_kinds,
        ["ReplicaSet"],
        "pod not created by the replicaset controller"
    );

    let spec = pod.spec.as_ref().expect("stored pod has a spec");
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("default"),
        "ServiceAccount admission did not assign the default service account"
    );
    let mounts_token = spec.containers.iter().all(|container| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|mount| mount.mount_path == SERVICE_ACCOUNT_MOUNT_PATH)
    });
    assert!(
        mounts_token,
        "ServiceAccount admission did not mount the token: {:?}",
        spec.containers
    );
    assert_eq!(
        spec.node_name, None,
        "a pod was bound to a node, but the control plane has no scheduler"
    );
}
