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

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, ListParams, PostParams};

#[path = "control_plane_harness/mod.rs"]
mod harness;

use harness::ControlPlane;

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Controllers work through informers and retries with backoff; a minute is ample on a busy
/// two-core machine and still fails a broken setup in reasonable time.
const CONTROLLER_DEADLINE: Duration = Duration::from_secs(90);

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
