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
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
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
    serde_norway::from_str(&text).unwrap()
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

/// The data of the ingress-nginx controller's ConfigMap (none: empty).
async fn controller_data(configmaps: &Api<ConfigMap>) -> BTreeMap<String, String> {
    configmaps
        .get("ingress-nginx-controller")
        .await
        .unwrap()
        .data
        .unwrap_or_default()
}

/// The Ingresses of the namespace `web`.
fn web_ingresses(client: &Client) -> Api<DynamicObject> {
    dynamic(
        client,
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        Some("web"),
    )
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
    let create = [
        "--target",
        "calico",
        "--apply",
        "--now",
        "2026-01-01T10:00:00Z",
        "--ttl",
        "1h",
        "203.0.113.7",
        "198.51.100.0/24",
    ];
    let first = block(&control_plane, &create);
    assert!(first.contains("applied"), "{first}");
    assert_eq!(
        network_set_nets(&client).await,
        ["198.51.100.0/24", "203.0.113.7/32"]
    );
    let created = calico_versions(&client).await;

    let again = block(&control_plane, &create);
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

/// Runs `ingress-tap block ARGS` against `control_plane` with `stdin` fed to the process.
fn block_output(control_plane: &ControlPlane, args: &[&str], stdin: &str) -> Output {
    common::output_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
            .arg("block")
            .args(args)
            .env("KUBECONFIG", control_plane.kubeconfig()),
        stdin,
    )
}

/// Runs `ingress-tap block ARGS` against `control_plane` expecting failure; returns stderr.
fn block_fails(control_plane: &ControlPlane, args: &[&str], stdin: &str) -> String {
    let output = block_output(control_plane, args, stdin);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "block {args:?} passed:\n{stderr}");
    stderr
}

/// Like [`block`], with `stdin` fed to the process.
fn block_with_input(control_plane: &ControlPlane, args: &[&str], stdin: &str) -> String {
    let output = block_output(control_plane, args, stdin);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "block {args:?} failed:\n{stderr}");
    stderr
}

fn ingress(namespace: &str, name: &str, annotations: BTreeMap<String, String>) -> Value {
    serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"defaultBackend": {"service": {"name": "shop", "port": {"number": 80}}}},
    })
}

async fn create(client: &Client, api: &Api<DynamicObject>, object: &Value) -> Result<(), String> {
    let _ = client;
    let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// `threshold` entries of 16-byte IPv4 addresses from 198.18.0.0/15 (benchmarking space).
fn addresses(count: u32) -> String {
    (0..count)
        .map(|i| format!("198.{}.{}.{}\n", 18 + i / 65_536, (i / 256) % 256, i % 256))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_match_the_api_servers_just_under_and_just_over() {
    use ingress_tap_core::block::targets::limits::{
        self, ETCD_REQUEST_BYTES, MAX_ANNOTATION_BYTES, MAX_CONFIGMAP_DATA_BYTES, OBJECT_HEADROOM,
    };
    let control_plane = ControlPlane::start();
    let client = control_plane.client().await;
    install_crds(&client).await;
    control_plane.create_namespace("web");
    let ingresses = web_ingresses(&client);

    // ---- all annotations together: keys and values, exactly as limits::check counts them
    for (name, total, accepted) in [
        ("at-limit", MAX_ANNOTATION_BYTES, true),
        ("over-limit", MAX_ANNOTATION_BYTES + 1, false),
    ] {
        let mut annotations = BTreeMap::new();
        annotations.insert("a".to_owned(), "x".repeat(total - 1 - 7));
        annotations.insert("b".to_owned(), "y".repeat(6));
        let object = ingress("web", name, annotations);
        assert_eq!(limits::annotation_bytes(&object), total);
        assert_eq!(limits::check(&object).is_ok(), accepted, "{name}");
        let result = create(&client, &ingresses, &object).await;
        assert_eq!(result.is_ok(), accepted, "{name}: {result:?}");
        if let Err(error) = result {
            assert!(error.contains("262144"), "{error}");
        }
    }

    // ---- a ConfigMap's data
    let configmaps = dynamic(&client, "", "v1", "ConfigMap", "configmaps", Some("web"));
    for (name, total, accepted) in [
        ("data-at-limit", MAX_CONFIGMAP_DATA_BYTES, true),
        ("data-over-limit", MAX_CONFIGMAP_DATA_BYTES + 1, false),
    ] {
        let object = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "web"},
            "data": {"a": "x".repeat(total - 1), "b": "y"},
        });
        assert_eq!(limits::check(&object).is_ok(), accepted, "{name}");
        let result = create(&client, &configmaps, &object).await;
        assert_eq!(result.is_ok(), accepted, "{name}: {result:?}");
    }

    // ---- the whole object, stored as JSON by the API server in etcd
    let sets = dynamic(
        &client,
        "projectcalico.org",
        "v3",
        "GlobalNetworkSet",
        "globalnetworksets",
        None,
    );
    // A set whose JSON takes `json_bytes` bytes, give or take one entry.
    let network_set = |name: &str, json_bytes: usize| {
        let mut object = serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
            "metadata": {"name": name}, "spec": {"nets": []},
        });
        let mut size = serde_json::to_vec(&object).unwrap().len();
        let mut nets = Vec::new();
        for i in 0u32.. {
            let net = format!("198.{}.{}.{}/32", 18 + i / 65_536, (i / 256) % 256, i % 256);
            // Quotes, and a comma before every entry but the first.
            let adds = net.len() + 2 + usize::from(!nets.is_empty());
            if size + adds > json_bytes {
                break;
            }
            size += adds;
            nets.push(Value::from(net));
        }
        object["spec"]["nets"] = Value::Array(nets);
        assert_eq!(serde_json::to_vec(&object).unwrap().len(), size);
        object
    };
    let under = network_set("just-under", ETCD_REQUEST_BYTES - OBJECT_HEADROOM);
    assert!(limits::check(&under).is_ok());
    create(&client, &sets, &under)
        .await
        .unwrap_or_else(|error| panic!("the largest object block writes was refused: {error}"));
    let over = network_set("just-over", ETCD_REQUEST_BYTES + 1024);
    assert!(limits::check(&over).is_err());
    let refused = create(&client, &sets, &over).await;
    assert!(
        refused.is_err(),
        "etcd took an object over its request limit"
    );
    eprintln!("over the etcd limit: {refused:?}");

    // ---- block --apply: the most entries that fit an Ingress, and one more
    let shop = ingress("web", "shop", BTreeMap::new());
    create(&client, &ingresses, &shop).await.unwrap();
    let args = [
        "--target",
        "ingress-nginx",
        "--ingress",
        "web/shop",
        "--now",
        "2026-01-01T10:00:00Z",
        "--from",
        "-",
        "--apply",
    ];
    // The largest count block accepts, found by bisection on its own verdict (dry runs).
    let dry: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--dry-run", "server"])
        .collect();
    // 10,000 (the default cap) is far over the limit with both copies.
    let (mut fits, mut does_not) = (1_000u32, 10_000u32);
    while does_not - fits > 1 {
        let middle = (fits + does_not) / 2;
        let output = Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
            .arg("block")
            .args(&dry)
            .env("KUBECONFIG", control_plane.kubeconfig())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(addresses(middle).as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        if output.status.success() {
            fits = middle;
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("would not fit"), "{stderr}");
            does_not = middle;
        }
    }
    // Just under: the API server stores it, with its annotations within a few bytes of the
    // limit (one more entry adds about 35).
    block_with_input(&control_plane, &args, &addresses(fits));
    let stored = ingresses.get("shop").await.unwrap();
    let stored = serde_json::to_value(&stored).unwrap();
    let bytes = limits::annotation_bytes(&stored);
    assert!(
        bytes <= MAX_ANNOTATION_BYTES && bytes > MAX_ANNOTATION_BYTES - 64,
        "{fits} entries: {bytes} bytes"
    );
    let version = stored["metadata"]["resourceVersion"].clone();
    // Just over: refused before anything is sent; the stored object is untouched.
    let said = block_fails(&control_plane, &args, &addresses(fits + 1));
    assert!(
        said.contains("refused: Ingress web/shop would not fit"),
        "{said}"
    );
    let after = serde_json::to_value(ingresses.get("shop").await.unwrap()).unwrap();
    assert_eq!(after["metadata"]["resourceVersion"], version);
    eprintln!("an Ingress holds {fits} IPv4 entries ({bytes} bytes of annotations)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptying_a_list_removes_its_key_on_the_server() {
    let control_plane = ControlPlane::start();
    let client = control_plane.client().await;
    control_plane.create_namespace("ingress-nginx");
    control_plane.create_namespace("web");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "ingress-nginx");
    let mut configmap = ConfigMap::default();
    configmap.metadata.name = Some("ingress-nginx-controller".to_owned());
    configmap.data = Some(BTreeMap::from([(
        "use-forwarded-headers".to_owned(),
        "true".to_owned(),
    )]));
    configmaps
        .create(&PostParams::default(), &configmap)
        .await
        .unwrap();
    let ingresses = web_ingresses(&client);
    let shop = ingress(
        "web",
        "shop",
        BTreeMap::from([("argocd.argoproj.io/tracking-id".to_owned(), "x".to_owned())]),
    );
    create(&client, &ingresses, &shop).await.unwrap();

    let now = ["--now", "2026-01-01T10:00:00Z", "--apply"];
    for extra in [&[][..], &["--ingress", "web/shop"][..]] {
        let base: Vec<&str> = ["--target", "ingress-nginx"]
            .into_iter()
            .chain(now)
            .chain(extra.iter().copied())
            .collect();
        block(&control_plane, &[&base[..], &["203.0.113.7"]].concat());
        let emptied = block(
            &control_plane,
            &[&base[..], &["--remove", "203.0.113.7"]].concat(),
        );
        assert!(emptied.contains("applied"), "{emptied}");
        // A re-run with nothing to do sends nothing.
        let again = block(
            &control_plane,
            &[&base[..], &["--remove", "203.0.113.7"]].concat(),
        );
        assert!(!again.contains("applied"), "{again}");
    }
    let data = controller_data(&configmaps).await;
    assert!(!data.contains_key("block-cidrs"), "{data:?}");
    assert_eq!(
        data.get("use-forwarded-headers").map(String::as_str),
        Some("true")
    );
    let stored = serde_json::to_value(ingresses.get("shop").await.unwrap()).unwrap();
    let annotations = stored["metadata"]["annotations"].as_object().unwrap();
    assert!(
        !annotations.contains_key("nginx.ingress.kubernetes.io/denylist-source-range"),
        "{annotations:?}"
    );
    assert!(
        !annotations.contains_key("ingress-tap.io/expiries"),
        "{annotations:?}"
    );
    assert_eq!(annotations["argocd.argoproj.io/tracking-id"], "x");

    // A key someone else also set: leaving it out removes nothing, which is said, and
    // --force-conflicts removes it.
    let mut patch = ConfigMap::default();
    patch.metadata.name = Some("ingress-nginx-controller".to_owned());
    patch.data = Some(BTreeMap::from([(
        "block-cidrs".to_owned(),
        "198.51.100.7/32".to_owned(),
    )]));
    configmaps
        .patch(
            "ingress-nginx-controller",
            &kube::api::PatchParams::apply("helm"),
            &kube::api::Patch::Apply(&patch),
        )
        .await
        .unwrap();
    let base = [
        "--target",
        "ingress-nginx",
        "--now",
        "2026-01-01T10:00:00Z",
        "--apply",
    ];
    let said = block_fails(
        &control_plane,
        &[&base[..], &["--remove", "198.51.100.7"]].concat(),
        "",
    );
    assert!(said.contains("--force-conflicts"), "{said}");
    block(
        &control_plane,
        &[
            &base[..],
            &["--remove", "198.51.100.7", "--force-conflicts"],
        ]
        .concat(),
    );
    let data = controller_data(&configmaps).await;
    assert!(!data.contains_key("block-cidrs"), "{data:?}");
}
