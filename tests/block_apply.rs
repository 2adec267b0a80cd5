//! `ingress-tap block --apply` against a real Kubernetes API server (tests/control-plane/).
//!
//! Calico's API server and NGINX Inc's controller do not run here: their published CRDs from
//! tests/fixtures/crds stand in for their APIs. NGINX Inc's CRD is served as published
//! (k8s.nginx.org/v1). Calico's CRDs are the backing store (crd.projectcalico.org/v1); users
//! and this tool write projectcalico.org/v3, which Calico's own API server serves with the same
//! spec, so the test installs a copy of each Calico CRD with group and version changed to
//! projectcalico.org/v3 — same schema, same names.
//!
//! Checked: objects are created; a re-run changes nothing (same resourceVersions); a server
//! dry run persists nothing; `--prune` removes expired entries; the controller ConfigMap's
//! other keys survive server-side apply.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "control_plane_harness/mod.rs"]
mod harness;

use harness::ControlPlane;

const ESTABLISH_DEADLINE: Duration = Duration::from_secs(60);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `ingress-tap block ARGS` against `control_plane`; returns stderr.
fn block(control_plane: &ControlPlane, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
        .arg("block")
        .args(args)
        .env("KUBECONFIG", control_plane.kubeconfig())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "block {args:?} failed:\n{stderr}");
    assert!(
        output.stdout.is_empty(),
        "--apply must not print objects: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

fn fixture_crd(file: &str) -> Value {
    let text =
        std::fs::read_to_string(manifest_dir().join("tests/fixtures/crds").join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Calico's CRD re-served as projectcalico.org/v3, standing in for Calico's API server.
fn as_calico_v3(mut crd: Value) -> Value {
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap().to_owned();
    crd["metadata"]["name"] = Value::String(format!("{plural}.projectcalico.org"));
    crd["spec"]["group"] = Value::String("projectcalico.org".to_owned());
    crd["spec"]["versions"][0]["name"] = Value::String("v3".to_owned());
    crd
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    let manifests = [
        as_calico_v3(fixture_crd("crd.projectcalico.org_globalnetworksets.yaml")),
        as_calico_v3(fixture_crd(
            "crd.projectcalico.org_globalnetworkpolicies.yaml",
        )),
        as_calico_v3(fixture_crd("crd.projectcalico.org_tiers.yaml")),
        fixture_crd("k8s.nginx.org_policies.yaml"),
    ];
    for manifest in manifests {
        let crd: CustomResourceDefinition = serde_json::from_value(manifest).unwrap();
        names.push(crd.metadata.name.clone().unwrap());
        crds.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|error| panic!("create CRD {:?}: {error}", crd.metadata.name));
    }
    let deadline = Instant::now() + ESTABLISH_DEADLINE;
    for name in names {
        loop {
            let crd = crds.get(&name).await.unwrap();
            let established = crd
                .status
                .and_then(|status| status.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn dynamic(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Name → resourceVersion of the Calico objects.
async fn calico_versions(client: &Client) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    for (kind, plural, name) in [
        ("Tier", "tiers", "ingress-tap"),
        (
            "GlobalNetworkSet",
            "globalnetworksets",
            "ingress-tap-blocklist",
        ),
        (
            "GlobalNetworkPolicy",
            "globalnetworkpolicies",
            "ingress-tap.blocklist",
        ),
    ] {
        let object = dynamic(client, "projectcalico.org", "v3", kind, plural, None)
            .get(name)
            .await
            .unwrap_or_else(|error| panic!("{kind} {name} missing: {error}"));
        versions.insert(kind.to_owned(), object.metadata.resource_version.unwrap());
    }
    versions
}

async fn network_set_nets(client: &Client) -> Vec<String> {
    let set = dynamic(
        client,
        "projectcalico.org",
        "v3",
        "GlobalNetworkSet",
        "globalnetworksets",
        None,
    )
    .get("ingress-tap-blocklist")
    .await
    .unwrap();
    serde_json::from_value(set.data["spec"]["nets"].clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_reruns_without_change_and_prunes() {
    let control_plane = ControlPlane::start();
    let client = control_plane.client().await;
    install_crds(&client).await;

    // ---- calico: create, no-change re-run, dry run, prune
    let first = block(
        &control_plane,
        &[
            "--target",
            "calico",
            "--apply",
            "--now",
            "2026-01-01T10:00:00Z",
            "--ttl",
            "1h",
            "203.0.113.7",
            "198.51.100.0/24",
        ],
    );
    assert!(first.contains("applied"), "{first}");
    assert_eq!(
        network_set_nets(&client).await,
        ["198.51.100.0/24", "203.0.113.7/32"]
    );
    let created = calico_versions(&client).await;

    let again = block(
        &control_plane,
        &[
            "--target",
            "calico",
            "--apply",
            "--now",
            "2026-01-01T10:00:00Z",
            "--ttl",
            "1h",
            "203.0.113.7",
            "198.51.100.0/24",
        ],
    );
    assert!(
        !again.contains("applied"),
        "re-run applied something:\n{again}"
    );
    assert_eq!(
        calico_versions(&client).await,
        created,
        "a re-run changed objects"
    );

    let dry = block(
        &control_plane,
        &[
            "--target",
            "calico",
            "--apply",
            "--dry-run",
            "server",
            "--now",
            "2026-01-01T10:10:00Z",
            "192.0.2.44",
        ],
    );
    assert!(dry.contains("dry run"), "{dry}");
    assert_eq!(
        calico_versions(&client).await,
        created,
        "a dry run persisted"
    );

    // 30 minutes on, 203.0.113.7 offends again for 4h; at 12:00 the rest has expired.
    block(
        &control_plane,
        &[
            "--target",
            "calico",
            "--apply",
            "--now",
            "2026-01-01T10:30:00Z",
            "203.0.113.7",
        ],
    );
    let pruned = block(
        &control_plane,
        &[
            "--target",
            "calico",
            "--apply",
            "--prune",
            "--now",
            "2026-01-01T12:00:00Z",
        ],
    );
    assert!(pruned.contains("prune 198.51.100.0/24"), "{pruned}");
    assert_eq!(network_set_nets(&client).await, ["203.0.113.7/32"]);

    // ---- ingress-nginx: the ConfigMap's other keys are not this tool's
    control_plane.create_namespace("ingress-nginx");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "ingress-nginx");
    let mut configmap = ConfigMap::default();
    configmap.metadata.name = Some("ingress-nginx-controller".to_owned());
    configmap.data = Some(BTreeMap::from([
        ("use-forwarded-headers".to_owned(), "true".to_owned()),
        ("proxy-real-ip-cidr".to_owned(), "192.0.2.0/28".to_owned()),
    ]));
    configmaps
        .create(&PostParams::default(), &configmap)
        .await
        .unwrap();
    block(
        &control_plane,
        &[
            "--target",
            "ingress-nginx",
            "--apply",
            "--now",
            "2026-01-01T10:00:00Z",
            "--trusted-proxy",
            "192.0.2.0/28",
            "203.0.113.7",
        ],
    );
    let data = configmaps
        .get("ingress-nginx-controller")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        data.get("block-cidrs").map(String::as_str),
        Some("203.0.113.7/32")
    );
    assert_eq!(
        data.get("use-forwarded-headers").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        data.get("proxy-real-ip-cidr").map(String::as_str),
        Some("192.0.2.0/28")
    );

    // ---- nginx-inc: the Policy under NGINX Inc's published CRD
    control_plane.create_namespace("web");
    block(
        &control_plane,
        &[
            "--target",
            "nginx-inc",
            "--namespace",
            "web",
            "--apply",
            "--now",
            "2026-01-01T10:00:00Z",
            "203.0.113.7",
        ],
    );
    let policy = dynamic(
        &client,
        "k8s.nginx.org",
        "v1",
        "Policy",
        "policies",
        Some("web"),
    )
    .get("ingress-tap-blocklist")
    .await
    .unwrap();
    assert_eq!(
        policy.data["spec"]["accessControl"]["deny"],
        serde_json::json!(["203.0.113.7/32"])
    );
}
