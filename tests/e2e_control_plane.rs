//! ingress-tap end to end on a real Kubernetes API server (the loopback control plane of
//! tests/control-plane/: etcd, kube-apiserver and kube-controller-manager 1.20.2, no scheduler,
//! no kubelet). What runs here and what only a real cluster adds is in docs/e2e.md.
//!
//! One control plane serves the whole file, so the scenarios run in sequence inside one test,
//! each reporting its time on stderr:
//! - the shipped manifests and `ingress-tap inject` output pass the server's dry run, except
//!   the two kinds a 1.20 server does not serve, which are named; fields newer than 1.20 are
//!   dropped by the server; native sidecars are shown to need a newer server and are kept under
//!   schema validation;
//! - the shipped MutatingWebhookConfiguration, pointed at the webhook on 127.0.0.1, is what the
//!   API server stores and uses;
//! - the controllers' own Deployments, opted in by pod label, become injected pods through the
//!   ReplicaSet controller, the webhook, service-account admission and defaulting;
//! - namespace and pod selection, including the namespaces that must never be injected;
//! - another mutating webhook adding a container after ours;
//! - the webhook stopped: failurePolicy Fail for selected pods only;
//! - `ingress-tap certs install` against the API server.

mod control_plane_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use control_plane_harness::{
    certs_job_args, describe, render, repository, review_counts, start_webhook, tail, wait_for,
    write_yaml_stream, yaml_documents, ControlPlane, ExtraContainerWebhook, ReviewCounts, Step,
};
use ingress_tap::admission::RunningWebhook;
use ingress_tap::certs::{self, CA_FILE, CERT_FILE, KEY_FILE};
use ingress_tap_core::inject::{
    InjectConfig, INJECT_DISABLED, INJECT_ENABLED, INJECT_LABEL, NATIVE_SIDECAR_ANNOTATION,
    STATUS_ANNOTATION,
};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

/// Controllers and admission configuration caches act through informers and retries; this is
/// ample on a busy two-core machine and still fails a broken setup in reasonable time.
const DEADLINE: Duration = Duration::from_secs(60);
/// The path where service-account admission mounts the token.
const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// What the API server sets on a container that does not say (its defaulting).
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The webhook's own namespace, as shipped.
const WEBHOOK_NAMESPACE: &str = "ingress-tap";
/// The shipped MutatingWebhookConfiguration's name.
const WEBHOOK_CONFIGURATION: &str = "ingress-tap";
/// A namespace labelled for injection, and one that is not.
const LABELLED_NAMESPACE: &str = "tap-enabled";
const PLAIN_NAMESPACE: &str = "tap-elsewhere";
/// Label the extra webhook of tests/fixtures/e2e/extra-container-webhook.yaml selects.
const EXTRA_CONTAINER_LABEL: &str = "e2e.ingress-tap.io/extra-container";

/// Fields this API server (1.20) does not know, where they sit, and the release that brought
/// them: a 1.20 server drops them from what it stores, as every server drops unknown fields.
const NEWER_THAN_1_20: [(&str, &str); 5] = [
    ("matchLabelKeys", "topology spread constraints, 1.25"),
    ("timeZone", "CronJob, 1.25"),
    ("unhealthyPodEvictionPolicy", "PodDisruptionBudget, 1.26"),
    (
        "restartPolicy",
        "containers: native sidecars, 1.28 (on by default 1.29)",
    ),
    ("terminationGracePeriodSeconds", "probes, 1.21"),
];

fn shipped_config() -> InjectConfig {
    let text = std::fs::read_to_string(shipped_config_path()).expect("read the shipped config");
    InjectConfig::from_yaml(&text).expect("the shipped injection config is valid")
}

fn shipped_config_path() -> PathBuf {
    repository().join("manifests/base/inject-config.yaml")
}

fn fixture(relative: &str) -> PathBuf {
    repository().join("tests/fixtures").join(relative)
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ingress-tap")
}

/// Starts timing one scenario of this file.
fn step(name: &'static str) -> Step {
    Step::start("e2e", name)
}

// ---------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_tap_on_a_real_control_plane() {
    let started = Instant::now();
    let control_plane = {
        let _step = step("control plane up");
        ControlPlane::start()
    };
    let client = control_plane.client().await;
    let base = render("manifests");

    {
        let _step = step("namespaces");
        create_namespaces(&control_plane, &client, &base).await;
    }
    {
        let _step = step("manifests: server-side dry run");
        manifests_pass_server_dry_run(&control_plane, &base);
    }
    {
        let _step = step("inject output: server-side dry run");
        inject_output_passes_server_dry_run(&control_plane);
    }
    {
        let _step = step("native sidecar mode");
        native_sidecars_need_a_newer_server(&control_plane);
        openshift_router_needs_a_newer_server(&control_plane);
    }

    let served = ServedWebhook::start().await;
    {
        let _step = step("shipped webhook configuration");
        shipped_configuration_is_stored_and_used(&client, &base, &served).await;
    }
    {
        let _step = step("controllers' Deployments");
        controller_deployments_are_injected(&client, &served).await;
    }
    {
        let _step = step("namespace and pod selection");
        selection_by_namespace_and_pod(&client, &served).await;
    }
    {
        let _step = step("another webhook after ours");
        another_webhook_adds_a_container_after_ours(&client, &served).await;
    }
    {
        let _step = step("webhook stopped");
        webhook_stopped_refuses_only_selected_pods(&client, served).await;
    }
    {
        let _step = step("certs install");
        certs_install_against_the_api_server(&control_plane, &client, &base).await;
    }
    eprintln!(
        "e2e: all scenarios done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Namespaces

async fn create_namespaces(control_plane: &ControlPlane, client: &Client, base: &[Value]) {
    // The webhook's namespace is the shipped object, applied for real: certs install and the
    // namespace exclusions need it. namespace.sh then adds the name label newer servers set.
    let shipped_namespace = base
        .iter()
        .find(|object| object["kind"] == "Namespace")
        .expect("manifests/ ship a Namespace");
    assert_eq!(shipped_namespace["metadata"]["name"], WEBHOOK_NAMESPACE);
    let file = control_plane.scratch("namespace.yaml");
    write_yaml_stream(&file, std::slice::from_ref(shipped_namespace));
    let applied = control_plane.kubectl(&["apply", "-f", path_str(&file)]);
    assert_success(&applied, "kubectl apply of the shipped Namespace");
    control_plane.create_namespace(WEBHOOK_NAMESPACE);

    for namespace in [
        LABELLED_NAMESPACE,
        PLAIN_NAMESPACE,
        "ingress-nginx",
        "nginx-ingress",
        "openshift-ingress",
    ] {
        control_plane.create_namespace(namespace);
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            LABELLED_NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: INJECT_ENABLED}}})),
        )
        .await
        .expect("label the namespace for injection");

    // Service-account admission refuses pods until the service account has its token.
    for namespace in [
        LABELLED_NAMESPACE,
        PLAIN_NAMESPACE,
        WEBHOOK_NAMESPACE,
        "kube-system",
    ] {
        wait_for_token(client, namespace, "default").await;
    }
}

async fn wait_for_token(client: &Client, namespace: &str, name: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    wait_for(
        DEADLINE,
        &format!("a token for service account {namespace}/{name}"),
        || async {
            let account = accounts.get_opt(name).await.ok().flatten()?;
            account
                .secrets
                .filter(|secrets| !secrets.is_empty())
                .map(|_| ())
        },
    )
    .await;
}

async fn create_service_account(client: &Client, namespace: &str, name: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap_or_else(|error| panic!("create service account {namespace}/{name}: {error}"));
    wait_for_token(client, namespace, name).await;
}

// ---------------------------------------------------------------------------------------------
// Server-side dry runs

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        tail(&output.stdout, 20),
        tail(&output.stderr, 40)
    );
}

/// Where an object carries a field from [`NEWER_THAN_1_20`], as JSON pointers. A field name
/// counts only where that field lives (`restartPolicy` of a container, not of a pod).
fn newer_field_paths(object: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, path: &mut Vec<String>, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(fields) => {
                for (key, child) in fields {
                    let parent = path.last().map(String::as_str).unwrap_or("");
                    let grandparent = path
                        .len()
                        .checked_sub(2)
                        .and_then(|index| path.get(index))
                        .map(String::as_str)
                        .unwrap_or("");
                    let newer = match key.as_str() {
                        "restartPolicy" => grandparent.ends_with("ontainers"),
                        "terminationGracePeriodSeconds" => parent.ends_with("Probe"),
                        other => NEWER_THAN_1_20.iter().any(|(name, _)| *name == other),
                    };
                    path.push(key.clone());
                    if newer {
                        found.insert(format!("/{}", path.join("/")));
                    }
                    walk(child, path, found);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    path.push(index.to_string());
                    walk(item, path, found);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    walk(object, &mut Vec::new(), &mut found);
    found
}

/// The objects of a kubectl `-o json` answer (one object, or a List).
fn answered_objects(stdout: &[u8]) -> Vec<Value> {
    let answer: Value = serde_json::from_slice(stdout).expect("kubectl -o json answer");
    if answer["kind"] == "List" {
        answer["items"].as_array().cloned().unwrap_or_default()
    } else {
        vec![answer]
    }
}

fn object_key(object: &Value) -> (String, String, String) {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    (
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

/// Server-side dry run of `objects` with kubectl, as a user would run it against this server,
/// and the objects the server answered, keyed by kind, namespace and name.
///
/// kubectl first validates on the client against the server's OpenAPI document, which rejects
/// fields newer than the server. That check is run and may fail only for those fields; the
/// server itself is then asked without it (`--validate=false`), and must accept every object
/// and drop those fields, as any 1.20 server does.
fn dry_run_on_server(
    control_plane: &ControlPlane,
    name: &str,
    objects: &[Value],
) -> BTreeMap<(String, String, String), Value> {
    let file = control_plane.scratch(&format!("{name}.yaml"));
    write_yaml_stream(&file, objects);
    let expected_newer: BTreeSet<String> = objects
        .iter()
        .flat_map(|object| {
            newer_field_paths(object)
                .into_iter()
                .filter_map(|path| path.rsplit('/').next().map(str::to_owned))
        })
        .collect();

    let strict = control_plane.kubectl(&["apply", "--dry-run=server", "-f", path_str(&file)]);
    let strict_stderr = String::from_utf8_lossy(&strict.stderr).into_owned();
    let unknown = regex::Regex::new(r#"unknown field "([A-Za-z]+)""#).expect("regex");
    let rejected: BTreeSet<String> = unknown
        .captures_iter(&strict_stderr)
        .filter_map(|captures| captures.get(1).map(|field| field.as_str().to_owned()))
        .collect();
    if strict.status.success() {
        assert!(
            expected_newer.is_empty(),
            "{name}: kubectl's schema check accepted fields a 1.20 server does not know: \
             {expected_newer:?}"
        );
    } else {
        assert!(
            !rejected.is_empty() && !strict_stderr.contains("Error from server"),
            "{name}: the server-side dry run failed for another reason than fields newer \
             than 1.20:\n{strict_stderr}"
        );
        assert_eq!(
            rejected, expected_newer,
            "{name}: kubectl's schema check must reject exactly the fields newer than 1.20 \
             ({NEWER_THAN_1_20:?}):\n{strict_stderr}"
        );
    }

    let lenient = control_plane.kubectl(&[
        "apply",
        "--dry-run=server",
        "--validate=false",
        "-o",
        "json",
        "-f",
        path_str(&file),
    ]);
    assert_success(&lenient, &format!("{name}: server-side dry run"));
    let answered: BTreeMap<_, _> = answered_objects(&lenient.stdout)
        .into_iter()
        .map(|object| (object_key(&object), object))
        .collect();
    for object in objects {
        let key = object_key(object);
        let stored = answered
            .get(&key)
            .unwrap_or_else(|| panic!("{name}: no answer for {}", describe(object)));
        let dropped = newer_field_paths(object);
        let kept: Vec<&String> = dropped
            .iter()
            .filter(|path| stored.pointer(path).is_some())
            .collect();
        assert!(
            kept.is_empty(),
            "{name}: {} kept fields a 1.20 server cannot know: {kept:?}",
            describe(object)
        );
    }
    answered
}

/// Kinds whose API version this 1.20 server does not serve, and the version it does serve
/// with the same schema (what a 1.20 cluster would be given).
const NOT_SERVED_ON_1_20: [(&str, &str, &str); 2] = [
    ("batch/v1", "CronJob", "batch/v1beta1"),
    ("policy/v1", "PodDisruptionBudget", "policy/v1beta1"),
];

fn is_cert_manager(object: &Value) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|version| version.starts_with("cert-manager.io/"))
}

fn manifests_pass_server_dry_run(control_plane: &ControlPlane, base: &[Value]) {
    let overlay = render("manifests/overlays/cert-manager");
    assert!(
        overlay.iter().any(is_cert_manager),
        "the cert-manager overlay renders no cert-manager resources"
    );
    for (name, rendered) in [("manifests", base), ("cert-manager-overlay", &overlay[..])] {
        let (unserved, served): (Vec<Value>, Vec<Value>) = rendered
            .iter()
            .filter(|object| !is_cert_manager(object))
            .cloned()
            .partition(|object| {
                NOT_SERVED_ON_1_20.iter().any(|(version, kind, _)| {
                    object["apiVersion"] == *version && object["kind"] == *kind
                })
            });
        let answered = dry_run_on_server(control_plane, name, &served);
        assert_eq!(answered.len(), served.len(), "{name}: objects answered");

        // The kinds this server does not serve: refused for exactly that reason, and accepted
        // under the API version a 1.20 server serves, which has the same schema.
        for object in unserved {
            let (version, kind, older) = NOT_SERVED_ON_1_20
                .iter()
                .find(|(version, kind, _)| {
                    object["apiVersion"] == *version && object["kind"] == *kind
                })
                .copied()
                .expect("partitioned above");
            let file = control_plane.scratch("unserved.yaml");
            write_yaml_stream(&file, std::slice::from_ref(&object));
            let refused =
                control_plane.kubectl(&["apply", "--dry-run=server", "-f", path_str(&file)]);
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(
                !refused.status.success()
                    && stderr.contains(&format!(
                        "no matches for kind \"{kind}\" in version \"{version}\""
                    )),
                "{name}: {} should be refused by a 1.20 server for its API version only:\n{stderr}",
                describe(&object)
            );
            let mut downgraded = object.clone();
            downgraded["apiVersion"] = json!(older);
            dry_run_on_server(
                control_plane,
                &format!("{name}-{}", kind.to_lowercase()),
                &[downgraded],
            );
        }
    }

    // The shipped Deployment's topology spread uses matchLabelKeys: shown dropped above.
    let deployment = base
        .iter()
        .find(|object| object["kind"] == "Deployment")
        .expect("manifests/ ship the webhook Deployment");
    assert!(
        !newer_field_paths(deployment).is_empty(),
        "the shipped Deployment no longer carries fields newer than 1.20; update docs/e2e.md"
    );
}

/// The OpenShift router template completed the way the cluster-ingress-operator completes it
/// at run time: name, namespace, selector, images and the default certificate's Secret.
fn completed_openshift_router() -> Value {
    let text = std::fs::read_to_string(fixture(
        "ingress-controllers/openshift-router-deployment.yaml",
    ))
    .expect("read the OpenShift router template");
    let mut deployment = yaml_documents(&text).remove(0);
    octal_modes_as_numbers(&mut deployment);
    let selector =
        json!({"ingresscontroller.operator.openshift.io/deployment-ingresscontroller": "default"});
    deployment["metadata"] = json!({"name": "router-default", "namespace": "openshift-ingress"});
    deployment["spec"]["replicas"] = json!(1);
    deployment["spec"]["selector"] = json!({"matchLabels": selector.clone()});
    deployment["spec"]["template"]["metadata"]["labels"] = selector;
    let spec = &mut deployment["spec"]["template"]["spec"];
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            container["image"] = json!("registry.invalid/openshift/router:1");
        }
    }
    for volume in spec["volumes"].as_array_mut().into_iter().flatten() {
        if volume["name"] == "default-certificate" {
            volume["secret"]["secretName"] = json!("router-certs-default");
        }
    }
    deployment
}

/// File modes written `0400` are octal numbers to Kubernetes' YAML 1.1 reader but strings to
/// the YAML 1.2 reader used here; the completed template is written back out, so they are
/// turned into the numbers Kubernetes would read.
fn octal_modes_as_numbers(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, child) in fields.iter_mut() {
                let octal = match (key.as_str(), &*child) {
                    ("defaultMode" | "mode", Value::String(text)) if text.starts_with('0') => {
                        i64::from_str_radix(text, 8).ok()
                    }
                    _ => None,
                };
                match octal {
                    Some(number) => *child = json!(number),
                    None => octal_modes_as_numbers(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(octal_modes_as_numbers),
        _ => {}
    }
}

/// Runs `ingress-tap inject` on a file; returns the injected stream.
fn inject_file(input: &Path, config: &Path) -> Vec<Value> {
    let output = Command::new(binary())
        .args(["inject", "--all", "--config", path_str(config), "-f"])
        .arg(input)
        .output()
        .expect("run ingress-tap inject");
    assert_success(
        &output,
        &format!("ingress-tap inject -f {}", input.display()),
    );
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        report.contains(": injected"),
        "ingress-tap inject injected nothing in {}:\n{report}",
        input.display()
    );
    yaml_documents(&String::from_utf8_lossy(&output.stdout))
}

/// Every pod template of an object (Deployment, DaemonSet, Job: `spec.template`).
fn pod_template_spec(object: &Value) -> Option<&Value> {
    object.pointer("/spec/template/spec")
}

fn inject_output_passes_server_dry_run(control_plane: &ControlPlane) {
    let config = shipped_config();
    let inputs = [
        fixture("ingress-controllers/ingress-nginx-cloud-deploy.yaml"),
        fixture("ingress-controllers/nginx-inc-deployment.yaml"),
        fixture("ingress-controllers/nginx-inc-daemonset.yaml"),
    ];
    for input in inputs {
        let injected = inject_file(&input, &shipped_config_path());
        let name = input
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or("inject")
            .to_owned();
        let answered = dry_run_on_server(control_plane, &format!("inject-{name}"), &injected);
        // The server validated the injected templates and kept the sidecar in them.
        let with_sidecar = answered
            .values()
            .filter_map(pod_template_spec)
            .filter(|spec| {
                spec["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|container| container["name"] == config.sidecar_name.as_str())
            })
            .count();
        assert!(
            with_sidecar > 0,
            "{name}: no injected pod template in the server's answer"
        );
    }
}

fn native_sidecars_need_a_newer_server(control_plane: &ControlPlane) {
    let config = shipped_config();
    let injected = inject_file(
        &fixture("ingress-controllers/nginx-inc-deployment.yaml"),
        &fixture("e2e/inject-config-native-sidecar.yaml"),
    );
    let sidecar_restart_policy = |object: &Value| {
        object
            .pointer("/spec/template/spec/initContainers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|container| container["name"] == config.sidecar_name.as_str())
            .map(|container| container["restartPolicy"].clone())
    };
    assert_eq!(
        sidecar_restart_policy(&injected[0]),
        Some(json!("Always")),
        "native mode injects an init container with restartPolicy Always"
    );

    // A 1.20 server drops restartPolicy: the sidecar would become an ordinary init container
    // that never exits, and the pod would never start. Native sidecars need Kubernetes 1.29.
    let answered = dry_run_on_server(control_plane, "inject-native-sidecar", &injected);
    let stored = answered
        .get(&object_key(&injected[0]))
        .expect("the Deployment was answered");
    assert_eq!(
        sidecar_restart_policy(stored),
        Some(Value::Null),
        "a 1.20 server must store the native sidecar without restartPolicy"
    );

    // So the mode is covered by strict schema validation for the releases that have it.
    validate_schemas_with_native_sidecars(control_plane, "native-sidecar", &injected);
}

/// Strict schema validation (tests/validate_manifests.py, kubernetes-validate) for the oldest
/// release with native sidecars on by default and the newest one the validator knows.
fn validate_schemas_with_native_sidecars(
    control_plane: &ControlPlane,
    name: &str,
    objects: &[Value],
) {
    let file = control_plane.scratch(&format!("{name}-schema.yaml"));
    write_yaml_stream(&file, objects);
    let python = std::env::var_os("INGRESS_TAP_VALIDATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository().join("target/kubernetes-validate-venv/bin/python"));
    assert!(
        python.exists(),
        "kubernetes-validate is not installed: run scripts/test.sh (it installs it into \
         target/kubernetes-validate-venv), or point INGRESS_TAP_VALIDATE_PYTHON at a python \
         that has it"
    );
    let validated = Command::new(&python)
        .arg(repository().join("tests/validate_manifests.py"))
        .args([
            "--kubernetes-version",
            "1.29",
            "--kubernetes-version",
            "1.37",
        ])
        .arg(&file)
        .output()
        .expect("run tests/validate_manifests.py");
    assert_success(&validated, &format!("{name}: strict schema validation"));
    let report = String::from_utf8_lossy(&validated.stdout);
    assert!(
        report.contains("Kubernetes 1.29") && report.contains("Kubernetes 1.37"),
        "{name}: {report}"
    );
}

/// The server's reasons for refusing the objects of `file` (its `* ` error lines).
fn refusal_reasons(control_plane: &ControlPlane, file: &Path) -> BTreeSet<String> {
    let refused = control_plane.kubectl(&[
        "apply",
        "--dry-run=server",
        "--validate=false",
        "-f",
        path_str(file),
    ]);
    assert!(
        !refused.status.success(),
        "{} was expected to be refused by a 1.20 server",
        file.display()
    );
    String::from_utf8_lossy(&refused.stderr)
        .lines()
        .filter_map(|line| line.strip_prefix("* "))
        // Go pointer values in the messages differ from one request to the next.
        .map(|line| {
            regex::Regex::new("0x[0-9a-f]+")
                .expect("regex")
                .replace_all(line, "0x")
                .into_owned()
        })
        .collect()
}

/// The OpenShift router runs HAProxy as a native sidecar with probes. A 1.20 server drops the
/// sidecar's restartPolicy and then refuses probes on what it takes for an ordinary init
/// container: the router itself cannot run below 1.29, injected or not. The injection must add
/// no reason of its own, and the injected router passes strict schema validation where native
/// sidecars exist.
fn openshift_router_needs_a_newer_server(control_plane: &ControlPlane) {
    let plain = control_plane.scratch("openshift-router-default.yaml");
    write_yaml_stream(&plain, &[completed_openshift_router()]);
    let injected_objects = inject_file(&plain, &shipped_config_path());
    let injected = control_plane.scratch("openshift-router-default-injected.yaml");
    write_yaml_stream(&injected, &injected_objects);

    let plain_reasons = refusal_reasons(control_plane, &plain);
    assert!(
        !plain_reasons.is_empty()
            && plain_reasons
                .iter()
                .all(|reason| reason.contains("must not be set for init containers")),
        "the router is refused for its native sidecar's probes only: {plain_reasons:#?}"
    );
    assert_eq!(
        refusal_reasons(control_plane, &injected),
        plain_reasons,
        "the injection adds a reason of its own to refuse the router"
    );
    validate_schemas_with_native_sidecars(control_plane, "openshift-router", &injected_objects);
}

// ---------------------------------------------------------------------------------------------
// The webhook and its shipped configuration

/// The webhook served in this process, with a certificate for 127.0.0.1 (the API server calls
/// it by URL: there is no Service routing here) and the shipped injection config.
struct ServedWebhook {
    webhook: RunningWebhook,
    ca_pem: String,
    _files: tempfile::TempDir,
}

impl ServedWebhook {
    async fn start() -> Self {
        let files = tempfile::tempdir().expect("temp dir for the certificate");
        let (webhook, ca_pem) =
            start_webhook(files.path(), "ingress-tap e2e CA", shipped_config_path()).await;
        ServedWebhook {
            webhook,
            ca_pem,
            _files: files,
        }
    }

    fn url(&self) -> String {
        format!("https://{}/mutate", self.webhook.addr)
    }

    async fn reviews(&self) -> ReviewCounts {
        review_counts(self.webhook.health_addr).await
    }
}

fn test_pod(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    let map = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: map(labels),
            annotations: map(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "controller".to_owned(),
                // Never pulled: there is no kubelet.
                image: Some("registry.invalid/controller:1".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn all_containers(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().expect("stored pod has a spec");
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect()
}

fn has_sidecar(pod: &Pod, config: &InjectConfig) -> bool {
    all_containers(pod)
        .iter()
        .any(|container| container.name == config.sidecar_name)
}

fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .filter(|name| !seen.insert(*name))
        .collect()
}

/// The stored pod carries the sidecar, its volumes and mounts exactly once, went through
/// service-account admission and defaulting after injection, and has no duplicate of anything.
fn assert_injected_once(pod: &Pod, config: &InjectConfig, target: &str) {
    let name = pod
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "<unnamed>".to_owned());
    let spec = pod.spec.as_ref().expect("stored pod has a spec");
    let containers = all_containers(pod);

    let container_names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        duplicates(container_names.iter().copied()),
        Vec::<&str>::new(),
        "{name}: duplicate containers in {container_names:?}"
    );
    let sidecars: Vec<&&Container> = containers
        .iter()
        .filter(|container| container.name == config.sidecar_name)
        .collect();
    assert_eq!(sidecars.len(), 1, "{name}: containers {container_names:?}");
    let sidecar = sidecars[0];

    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|volume| volume.name.as_str())
        .collect();
    assert_eq!(
        duplicates(volumes.iter().copied()),
        Vec::<&str>::new(),
        "{name}: duplicate volumes in {volumes:?}"
    );
    for volume in [&config.log_volume_name, &config.felix_volume.name] {
        assert!(
            volumes.contains(&volume.as_str()),
            "{name}: volume {volume} missing from {volumes:?}"
        );
    }

    for container in &containers {
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|mount| mount.mount_path.as_str())
            .collect();
        assert_eq!(
            duplicates(mounts.iter().copied()),
            Vec::<&str>::new(),
            "{name}: container {} mounts a path twice: {mounts:?}",
            container.name
        );
        let env: Vec<&str> = container
            .env
            .iter()
            .flatten()
            .map(|var| var.name.as_str())
            .collect();
        assert_eq!(
            duplicates(env.iter().copied()),
            Vec::<&str>::new(),
            "{name}: container {} sets a variable twice: {env:?}",
            container.name
        );
    }
    let mounts_of = |container: &Container, volume: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|mount| mount.name == volume)
            .map(|mount| mount.mount_path.clone())
            .collect::<Vec<_>>()
    };
    let target_container = containers
        .iter()
        .find(|container| container.name == target)
        .unwrap_or_else(|| panic!("{name}: no container {target}"));
    assert_eq!(
        mounts_of(target_container, &config.log_volume_name),
        vec![config.log_dir.clone()],
        "{name}: the log volume is not mounted once into {target}"
    );
    assert_eq!(
        mounts_of(sidecar, &config.log_volume_name),
        vec![config.log_dir.clone()]
    );
    assert_eq!(
        mounts_of(sidecar, &config.felix_volume.name),
        vec![config.felix_volume.mount_path.clone()]
    );

    // Service-account admission ran after the injection: the sidecar got the token too.
    if spec.automount_service_account_token != Some(false) {
        for container in &containers {
            assert!(
                container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|mount| mount.mount_path == SERVICE_ACCOUNT_MOUNT_PATH),
                "{name}: container {} has no service account token mount",
                container.name
            );
        }
    }
    // Defaulting ran on the injected container too.
    assert_eq!(
        sidecar.termination_message_path.as_deref(),
        Some(DEFAULT_TERMINATION_MESSAGE_PATH),
        "{name}: the API server did not default the sidecar"
    );
    assert!(
        pod.metadata
            .annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(STATUS_ANNOTATION)),
        "{name}: no {STATUS_ANNOTATION} annotation"
    );
}

/// Creates a pod and returns it with the reviews the webhook answered meanwhile. Creation
/// returns after admission, so every review counted belongs to this pod.
async fn create_pod(
    client: &Client,
    served: &ServedWebhook,
    namespace: &str,
    pod: &Pod,
) -> (Pod, ReviewCounts) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let before = served.reviews().await;
    let stored = pods
        .create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "create pod {namespace}/{}: {error}",
                pod.metadata.name.as_deref().unwrap_or("?")
            )
        });
    let after = served.reviews().await;
    (stored, after.since(&before))
}

async fn shipped_configuration_is_stored_and_used(
    client: &Client,
    base: &[Value],
    served: &ServedWebhook,
) {
    let shipped = base
        .iter()
        .find(|object| object["kind"] == "MutatingWebhookConfiguration")
        .expect("manifests/ ship a MutatingWebhookConfiguration")
        .clone();
    assert_eq!(shipped["metadata"]["name"], WEBHOOK_CONFIGURATION);
    let shipped_webhooks = shipped["webhooks"].as_array().cloned().unwrap_or_default();
    assert!(
        !shipped_webhooks.is_empty(),
        "the configuration has no webhooks"
    );

    // The one change: the webhook's URL on 127.0.0.1 and the test CA, instead of the Service.
    let mut registered = shipped.clone();
    for webhook in registered["webhooks"].as_array_mut().into_iter().flatten() {
        webhook["clientConfig"] = json!({
            "url": served.url(),
            "caBundle": certs::ca_bundle(&served.ca_pem),
        });
    }
    let configuration: MutatingWebhookConfiguration =
        serde_json::from_value(registered).expect("typed MutatingWebhookConfiguration");
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let created = configurations
        .create(&PostParams::default(), &configuration)
        .await
        .expect("the API server accepts the shipped configuration");

    let stored = serde_json::to_value(&created).expect("stored configuration as JSON");
    let stored_webhooks = stored["webhooks"].as_array().cloned().unwrap_or_default();
    assert_eq!(stored_webhooks.len(), shipped_webhooks.len());
    for (shipped_webhook, stored_webhook) in shipped_webhooks.iter().zip(&stored_webhooks) {
        for (field, value) in shipped_webhook.as_object().into_iter().flatten() {
            if field == "clientConfig" {
                continue;
            }
            assert_eq!(
                &stored_webhook[field], value,
                "webhook {}: {field} is not as shipped",
                shipped_webhook["name"]
            );
        }
        assert_eq!(stored_webhook["clientConfig"]["url"], json!(served.url()));
        assert!(stored_webhook["clientConfig"].get("service").is_none());
    }

    // In use: the API server's configuration cache picks it up shortly after creation. Dry-run
    // pods go through mutating admission (the webhooks declare sideEffects None) and are not
    // stored.
    let config = shipped_config();
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLAIN_NAMESPACE);
    let probe = test_pod("probe", &[(INJECT_LABEL, INJECT_ENABLED)], &[]);
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    wait_for(DEADLINE, "the webhook configuration in use", || async {
        let answered = pods.create(&dry_run, &probe).await.ok()?;
        has_sidecar(&answered, &config).then_some(())
    })
    .await;
}

struct ControllerCase {
    deployment: Value,
    service_account: &'static str,
    target: &'static str,
}

fn controller_cases() -> Vec<ControllerCase> {
    let read = |relative: &str| {
        let text = std::fs::read_to_string(fixture(relative)).expect("read fixture");
        yaml_documents(&text).remove(0)
    };
    vec![
        ControllerCase {
            deployment: read("ingress-controllers/ingress-nginx-controller-deployment.yaml"),
            service_account: "ingress-nginx",
            target: "controller",
        },
        ControllerCase {
            deployment: read("ingress-controllers/nginx-inc-deployment.yaml"),
            service_account: "nginx-ingress",
            target: "nginx-ingress",
        },
    ]
}

async fn controller_deployments_are_injected(client: &Client, served: &ServedWebhook) {
    let config = shipped_config();
    let cases = controller_cases();
    let before = served.reviews().await;
    for case in &cases {
        let namespace = case.deployment["metadata"]["namespace"]
            .as_str()
            .expect("fixture namespace");
        create_service_account(client, namespace, case.service_account).await;
        // Opted in by pod label; one replica is enough to see what the API server stores.
        let mut deployment = case.deployment.clone();
        deployment["spec"]["replicas"] = json!(1);
        deployment["spec"]["template"]["metadata"]["labels"][INJECT_LABEL] = json!(INJECT_ENABLED);
        let typed: Deployment = serde_json::from_value(deployment).expect("typed Deployment");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        deployments
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_or_else(|error| panic!("create {}: {error}", describe(&case.deployment)));
    }

    for case in &cases {
        let namespace = case.deployment["metadata"]["namespace"]
            .as_str()
            .expect("fixture namespace");
        let selector = case.deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels")
            .iter()
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let params = ListParams::default().labels(&selector);
        let pod = wait_for(
            DEADLINE,
            &format!(
                "a pod of {} (see kube-controller-manager.log)",
                describe(&case.deployment)
            ),
            || async { pods.list(&params).await.ok()?.items.into_iter().next() },
        )
        .await;
        let owners: Vec<&str> = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|owner| owner.kind.as_str())
            .collect();
        assert_eq!(owners, ["ReplicaSet"], "{}", describe(&case.deployment));
        assert_injected_once(&pod, &config, case.target);
        assert_eq!(
            pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
            None,
            "no scheduler runs here"
        );
    }
    let reviews = served.reviews().await.since(&before);
    eprintln!("e2e: reviews for the controllers' pods: {:?}", reviews.0);
    assert_eq!(
        reviews.get("injected", ""),
        cases.len() as u64,
        "one injection per pod: {reviews:?}"
    );
    assert_eq!(
        reviews.total() - reviews.get("injected", "") - reviews.get("skipped", "already_injected"),
        0,
        "only injections and reinvocations: {reviews:?}"
    );
}

async fn selection_by_namespace_and_pod(client: &Client, served: &ServedWebhook) {
    let config = shipped_config();

    // Labelled namespace: an unlabelled pod is injected, once.
    let (pod, reviews) = create_pod(
        client,
        served,
        LABELLED_NAMESPACE,
        &test_pod("unlabelled", &[], &[]),
    )
    .await;
    assert_injected_once(&pod, &config, "controller");
    assert_eq!(reviews.get("injected", ""), 1, "{reviews:?}");

    // A pod labelled enabled there: both webhook entries could match, only one may.
    let (pod, reviews) = create_pod(
        client,
        served,
        LABELLED_NAMESPACE,
        &test_pod("enabled", &[(INJECT_LABEL, INJECT_ENABLED)], &[]),
    )
    .await;
    assert_injected_once(&pod, &config, "controller");
    assert_eq!(reviews.get("injected", ""), 1, "{reviews:?}");

    // A pod labelled disabled is not injected, and never reaches the webhook.
    let (pod, reviews) = create_pod(
        client,
        served,
        LABELLED_NAMESPACE,
        &test_pod("disabled", &[(INJECT_LABEL, INJECT_DISABLED)], &[]),
    )
    .await;
    assert!(!has_sidecar(&pod, &config));
    assert_eq!(reviews.total(), 0, "{reviews:?}");

    // Elsewhere: an unlabelled pod in an unlabelled namespace never reaches the webhook.
    let (pod, reviews) = create_pod(
        client,
        served,
        PLAIN_NAMESPACE,
        &test_pod("plain", &[], &[]),
    )
    .await;
    assert!(!has_sidecar(&pod, &config));
    assert_eq!(reviews.total(), 0, "{reviews:?}");

    // kube-system and the webhook's own namespace are excluded, even for pods labelled
    // enabled, and even when the namespace itself is labelled for injection.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in ["kube-system", WEBHOOK_NAMESPACE] {
        namespaces
            .patch(
                namespace,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: INJECT_ENABLED}}})),
            )
            .await
            .expect("label the namespace for injection");
        for (name, labels) in [
            ("excluded-enabled", vec![(INJECT_LABEL, INJECT_ENABLED)]),
            ("excluded-unlabelled", vec![]),
        ] {
            let (pod, reviews) =
                create_pod(client, served, namespace, &test_pod(name, &labels, &[])).await;
            assert!(!has_sidecar(&pod, &config), "{namespace}/{name} injected");
            assert_eq!(reviews.total(), 0, "{namespace}/{name}: {reviews:?}");
        }
    }
    // Back to the shipped labels: kube-system had none, the webhook's namespace opts out.
    namespaces
        .patch(
            "kube-system",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: null}}})),
        )
        .await
        .expect("remove the label again");
    namespaces
        .patch(
            WEBHOOK_NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {INJECT_LABEL: INJECT_DISABLED}}})),
        )
        .await
        .expect("restore the shipped label");

    // Native sidecar requested per pod: this 1.20 server stores the init container without
    // restartPolicy, i.e. as an init container that would never finish. Needs 1.29.
    let (pod, _) = create_pod(
        client,
        served,
        PLAIN_NAMESPACE,
        &test_pod(
            "native",
            &[(INJECT_LABEL, INJECT_ENABLED)],
            &[(NATIVE_SIDECAR_ANNOTATION, "true")],
        ),
    )
    .await;
    assert_injected_once(&pod, &config, "controller");
    let init_sidecar = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.init_containers.as_ref())
        .and_then(|init| init.iter().find(|c| c.name == config.sidecar_name))
        .expect("native mode injects an init container");
    assert_eq!(
        init_sidecar.restart_policy, None,
        "a 1.20 server cannot keep restartPolicy: Always"
    );
}

async fn another_webhook_adds_a_container_after_ours(client: &Client, served: &ServedWebhook) {
    let config = shipped_config();
    let extra = ExtraContainerWebhook::start().await;
    let text = std::fs::read_to_string(fixture("e2e/extra-container-webhook.yaml"))
        .expect("read the extra webhook's configuration");
    let mut registered = yaml_documents(&text).remove(0);
    let extra_name = registered["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    assert!(
        extra_name.as_str() > WEBHOOK_CONFIGURATION,
        "the API server calls webhooks in configuration name order; {extra_name} must sort \
         after {WEBHOOK_CONFIGURATION}"
    );
    for webhook in registered["webhooks"].as_array_mut().into_iter().flatten() {
        webhook["clientConfig"] = json!({
            "url": format!("https://{}/mutate", extra.addr),
            "caBundle": certs::ca_bundle(&extra.ca_pem),
        });
    }
    let configuration: MutatingWebhookConfiguration =
        serde_json::from_value(registered).expect("typed configuration");
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configurations
        .create(&PostParams::default(), &configuration)
        .await
        .expect("register the extra webhook");

    let labels = [
        (INJECT_LABEL, INJECT_ENABLED),
        (EXTRA_CONTAINER_LABEL, "yes"),
    ];
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLAIN_NAMESPACE);
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let probe = test_pod("extra-probe", &labels, &[]);
    wait_for(DEADLINE, "the extra webhook in use", || async {
        let answered = pods.create(&dry_run, &probe).await.ok()?;
        all_containers(&answered)
            .iter()
            .any(|container| container.name == ExtraContainerWebhook::CONTAINER)
            .then_some(())
    })
    .await;

    let calls_before = extra.calls();
    let (pod, reviews) = create_pod(
        client,
        served,
        PLAIN_NAMESPACE,
        &test_pod("with-extra", &labels, &[]),
    )
    .await;
    assert_injected_once(&pod, &config, "controller");
    let names: Vec<&str> = all_containers(&pod)
        .iter()
        .map(|container| container.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "controller",
            config.sidecar_name.as_str(),
            ExtraContainerWebhook::CONTAINER
        ],
        "ours first, then the extra webhook's container, each once"
    );
    assert!(
        extra.calls() > calls_before,
        "the extra webhook was not called"
    );
    eprintln!(
        "e2e: reviews for the pod with the extra container: ours {:?}, extra webhook {}",
        reviews.0,
        extra.calls() - calls_before
    );
    // Ours ran, then was reinvoked after the extra webhook changed the pod, and added nothing.
    assert_eq!(reviews.get("injected", ""), 1, "{reviews:?}");
    assert!(
        reviews.get("skipped", "already_injected") >= 1 && reviews.total() >= 2,
        "our webhook was not reinvoked: {reviews:?}"
    );

    configurations
        .delete(&extra_name, &DeleteParams::default())
        .await
        .expect("remove the extra webhook");
}

async fn webhook_stopped_refuses_only_selected_pods(client: &Client, served: ServedWebhook) {
    served
        .webhook
        .shutdown()
        .await
        .expect("the webhook stops cleanly");

    // Selected pods: failurePolicy Fail, and the message names the webhook entry.
    for (namespace, name, labels, entry) in [
        (
            PLAIN_NAMESPACE,
            "refused-by-label",
            vec![(INJECT_LABEL, INJECT_ENABLED)],
            "by-pod-label.ingress-tap.io",
        ),
        (
            LABELLED_NAMESPACE,
            "refused-by-namespace",
            vec![],
            "by-namespace-label.ingress-tap.io",
        ),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let error = pods
            .create(&PostParams::default(), &test_pod(name, &labels, &[]))
            .await
            .expect_err("a selected pod must be refused while the webhook is down");
        let message = match &error {
            kube::Error::Api(status) => status.message.clone(),
            other => panic!("{namespace}/{name}: not an API error: {other}"),
        };
        assert!(
            message.contains("ingress-tap") && message.contains(entry),
            "{namespace}/{name}: the refusal must name the webhook: {message}"
        );
    }

    // Pods the webhook does not select are created: the API server does not call it.
    for (namespace, name, labels) in [
        (PLAIN_NAMESPACE, "unselected", vec![]),
        (
            LABELLED_NAMESPACE,
            "opted-out",
            vec![(INJECT_LABEL, INJECT_DISABLED)],
        ),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        pods.create(&PostParams::default(), &test_pod(name, &labels, &[]))
            .await
            .unwrap_or_else(|error| {
                panic!("{namespace}/{name} must be created without the webhook: {error}")
            });
    }
}

// ---------------------------------------------------------------------------------------------
// certs install

/// Runs `ingress-tap certs install` with the shipped Job's arguments against this server.
fn certs_install(control_plane: &ControlPlane, job_args: &[String]) -> String {
    let output = Command::new(binary())
        .args(job_args)
        .arg("--kubeconfig")
        .arg(control_plane.kubeconfig())
        .output()
        .expect("run ingress-tap certs install");
    assert_success(&output, "ingress-tap certs install");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn secret_data<'s>(secret: &'s Secret, key: &str) -> &'s [u8] {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.0.as_slice())
        .unwrap_or_else(|| panic!("the Secret has no {key}"))
}

fn ca_bundles(configuration: &MutatingWebhookConfiguration) -> Vec<Vec<u8>> {
    configuration
        .webhooks
        .iter()
        .flatten()
        .map(|webhook| {
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|bundle| bundle.0.clone())
                .unwrap_or_default()
        })
        .collect()
}

fn not_after(cert_pem: &[u8]) -> time::OffsetDateTime {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem).expect("PEM certificate");
    let cert = pem.parse_x509().expect("X.509 certificate");
    time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .expect("valid timestamp")
}

/// A CA and a serving certificate for the Service that expire in ten days.
fn expiring_chain(names: &[String]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let now = time::OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.not_before = now - time::Duration::days(1);
    ca_params.not_after = now + time::Duration::days(10);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|name| SanType::DnsName(name.as_str().try_into().expect("DNS name")))
        .collect();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(10);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

async fn certs_install_against_the_api_server(
    control_plane: &ControlPlane,
    client: &Client,
    base: &[Value],
) {
    let job_args = certs_job_args(base);
    let option = |flag: &str| {
        job_args
            .iter()
            .position(|arg| arg == flag)
            .and_then(|index| job_args.get(index + 1))
            .cloned()
            .unwrap_or_else(|| panic!("the Job passes no {flag}"))
    };
    let (namespace, service, secret_name) = (
        option("--namespace"),
        option("--service"),
        option("--secret"),
    );
    assert_eq!(option("--webhook-config"), WEBHOOK_CONFIGURATION);
    let names = certs::service_names(&service, &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());

    // First run: creates the Secret and writes its CA into every webhook's caBundle.
    let said = certs_install(control_plane, &job_args);
    assert!(
        said.contains("created") && said.contains("caBundle patched"),
        "{said}"
    );
    let secret = secrets.get(&secret_name).await.expect("the Secret exists");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = secret_data(&secret, CA_FILE).to_vec();
    ingress_tap::certs::install::plan::chain_serves(
        &ca,
        secret_data(&secret, CERT_FILE),
        &names,
        time::OffsetDateTime::now_utc(),
    )
    .expect("the stored certificate serves the Service's names under ca.crt");
    let configuration = configurations
        .get(WEBHOOK_CONFIGURATION)
        .await
        .expect("configuration");
    assert!(ca_bundles(&configuration)
        .iter()
        .all(|bundle| *bundle == ca));

    // Second run: nothing to do, nothing written.
    let said = certs_install(control_plane, &job_args);
    assert_eq!(said.matches("unchanged").count(), 2, "{said}");
    let again = secrets.get(&secret_name).await.expect("the Secret");
    let configuration_again = configurations
        .get(WEBHOOK_CONFIGURATION)
        .await
        .expect("configuration");
    assert_eq!(
        again.metadata.resource_version,
        secret.metadata.resource_version
    );
    assert_eq!(
        configuration_again.metadata.resource_version,
        configuration.metadata.resource_version
    );

    // An expiring certificate is renewed, and the caBundle follows.
    let (old_ca, old_cert, old_key) = expiring_chain(&names);
    let mut expiring = again.clone();
    expiring.data = Some(BTreeMap::from([
        (CA_FILE.to_owned(), ByteString(old_ca.clone().into_bytes())),
        (CERT_FILE.to_owned(), ByteString(old_cert.into_bytes())),
        (KEY_FILE.to_owned(), ByteString(old_key.into_bytes())),
    ]));
    let expiring = secrets
        .replace(&secret_name, &PostParams::default(), &expiring)
        .await
        .expect("store the expiring certificate");
    let said = certs_install(control_plane, &job_args);
    assert!(
        said.contains("renewed") && said.contains("caBundle patched"),
        "{said}"
    );
    let renewed = secrets.get(&secret_name).await.expect("the Secret");
    assert_ne!(
        renewed.metadata.resource_version,
        expiring.metadata.resource_version
    );
    let renewed_ca = secret_data(&renewed, CA_FILE).to_vec();
    let now = time::OffsetDateTime::now_utc();
    assert!(not_after(secret_data(&renewed, CERT_FILE)) > now + time::Duration::days(300));
    ingress_tap::certs::install::plan::chain_serves(
        &renewed_ca,
        secret_data(&renewed, CERT_FILE),
        &names,
        now,
    )
    .expect("the renewed certificate serves the Service's names");
    assert!(
        String::from_utf8_lossy(&renewed_ca).contains(old_ca.trim()),
        "the previous CA stays trusted while the old certificate may still be served"
    );
    let configuration = configurations
        .get(WEBHOOK_CONFIGURATION)
        .await
        .expect("configuration");
    assert!(ca_bundles(&configuration)
        .iter()
        .all(|bundle| *bundle == renewed_ca));
}
