//! The injection engine against real ingress controller manifests, every skip and deny
//! reason, the per-pod overrides, a huge pod, and random pods.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use ingress_tap_core::inject::{
    decide, Decision, DenyReason, FelixVolumeKind, InjectConfig, InjectionStatus, SkipReason,
    CONTAINER_ANNOTATION, INJECT_LABEL, INTERVAL_ANNOTATION, LOG_LEVEL_ANNOTATION,
    NATIVE_SIDECAR_ANNOTATION, REQUESTS_ANNOTATION, STATUS_ANNOTATION, STATUS_HASH_CHARS,
};
use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Deserialize;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ingress-controllers")
        .join(name)
}

/// The pod template of the first Deployment or DaemonSet document in a fixture file.
fn workload_template(file: &str) -> Value {
    let text = std::fs::read_to_string(fixture_path(file)).unwrap();
    for document in serde_norway::Deserializer::from_str(&text) {
        let mut value = Value::deserialize(document).unwrap();
        if matches!(value["kind"].as_str(), Some("Deployment" | "DaemonSet")) {
            octal_file_modes(&mut value);
            return value["spec"]["template"].clone();
        }
    }
    panic!("{file} has no Deployment or DaemonSet");
}

/// kubectl reads manifests as YAML 1.1, where `defaultMode: 0400` is octal (256); the YAML 1.2
/// reader used here keeps it a string. Convert, so the pod is what the API server would send.
fn octal_file_modes(value: &mut Value) {
    match value {
        Value::Object(members) => {
            for (key, member) in members.iter_mut() {
                let octal = member
                    .as_str()
                    .filter(|text| text.len() > 1 && text.starts_with('0'))
                    .and_then(|text| u32::from_str_radix(text, 8).ok());
                match octal {
                    Some(mode) if key == "defaultMode" || key == "mode" => *member = json!(mode),
                    _ => octal_file_modes(member),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(octal_file_modes),
        _ => {}
    }
}

/// The Pod the API server sends for a template: generateName, no name, the namespace set,
/// the template's labels plus the opt-in label.
fn pod_from_template(template: &Value, namespace: &str, generate_name: &str) -> Value {
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(INJECT_LABEL.to_owned(), json!("enabled"));
    let mut metadata = json!({
        "generateName": generate_name,
        "namespace": namespace,
        "labels": labels,
    });
    if let Some(annotations) = template["metadata"].get("annotations") {
        metadata["annotations"] = annotations.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

fn minimal_pod() -> Value {
    json!({
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {"containers": [{"name": "controller", "image": "nginx"}]}
    })
}

fn expect_patch(decision: Decision) -> Patch {
    match decision {
        Decision::Inject { patch } => patch,
        other => panic!("expected an injection, got {other:?}"),
    }
}

fn expect_deny(decision: Decision) -> DenyReason {
    match decision {
        Decision::Deny(reason) => reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn apply(original: &Value, patch: &Patch) -> Value {
    let mut mutated = original.clone();
    json_patch::patch(&mut mutated, patch).unwrap();
    mutated
}

fn inject(original: &Value, config: &InjectConfig) -> (Patch, Value) {
    let patch = expect_patch(decide(original, config));
    let mutated = apply(original, &patch);
    (patch, mutated)
}

fn patch_paths(patch: &Patch) -> Vec<String> {
    patch
        .0
        .iter()
        .map(|op| op.path().as_str().to_owned())
        .collect()
}

fn typed(mutated: &Value) -> Pod {
    serde_json::from_value(mutated.clone()).unwrap()
}

fn all_containers(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect()
}

fn env_map(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect()
}

fn find_sidecar<'p>(pod: &'p Pod, config: &InjectConfig, native: bool) -> &'p Container {
    let spec = pod.spec.as_ref().unwrap();
    let list: &[Container] = if native {
        spec.init_containers.as_deref().unwrap_or_default()
    } else {
        &spec.containers
    };
    let last = list.last().expect("the sidecar list is empty");
    assert_eq!(
        last.name, config.sidecar_name,
        "the sidecar is appended last"
    );
    let other_list: &[Container] = if native {
        &spec.containers
    } else {
        spec.init_containers.as_deref().unwrap_or_default()
    };
    assert!(other_list.iter().all(|c| c.name != config.sidecar_name));
    last
}

fn assert_unique<'a>(what: &str, names: impl IntoIterator<Item = &'a str>) {
    let mut seen = HashSet::new();
    for name in names {
        assert!(seen.insert(name), "duplicate {what} {name:?}");
    }
}

/// Container, volume, pull secret, env and mount-path names used twice.
fn assert_unique_names(pod: &Pod) {
    let spec = pod.spec.as_ref().unwrap();
    let containers = all_containers(pod);
    assert_unique("container", containers.iter().map(|c| c.name.as_str()));
    assert_unique(
        "volume",
        spec.volumes.iter().flatten().map(|v| v.name.as_str()),
    );
    assert_unique(
        "image pull secret",
        spec.image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str()),
    );
    for container in containers {
        assert_unique(
            "env var",
            container.env.iter().flatten().map(|e| e.name.as_str()),
        );
        assert_unique(
            "mount path",
            container
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| m.mount_path.as_str()),
        );
    }
}

/// `(container, volume)` for every mount that names a volume the pod does not have.
fn dangling_mounts(pod: &Pod) -> Vec<(String, String)> {
    let spec = pod.spec.as_ref().unwrap();
    let volumes: HashSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    all_containers(pod)
        .into_iter()
        .flat_map(|container| {
            container
                .volume_mounts
                .iter()
                .flatten()
                .filter(|mount| !volumes.contains(mount.name.as_str()))
                .map(|mount| (container.name.clone(), mount.name.clone()))
        })
        .collect()
}

/// Structural validity of a patched pod: unique names everywhere, every mount backed by a volume.
fn assert_well_formed(pod: &Pod) {
    assert_unique_names(pod);
    assert_eq!(dangling_mounts(pod), [], "mounts without a volume");
}

/// What the sidecar must look like for `config` with the given effective settings.
fn assert_sidecar(pod: &Pod, config: &InjectConfig, native: bool, expected_env: &[(&str, &str)]) {
    let sidecar = find_sidecar(pod, config, native);
    assert_eq!(sidecar.image.as_deref(), Some(config.image.as_str()));
    assert_eq!(sidecar.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(sidecar.args, Some(vec!["collect".to_owned()]));
    assert_eq!(sidecar.command, None);
    assert_eq!(
        sidecar.restart_policy.as_deref(),
        if native { Some("Always") } else { None }
    );
    let env: Vec<(String, String)> = sidecar
        .env
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
        .collect();
    let expected: Vec<(String, String)> = expected_env
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(env, expected);
    let mounts: Vec<(&str, &str, Option<bool>)> = sidecar
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("ingress-tap-logs", "/var/log/calico/ingress", None),
            ("ingress-tap-felix", "/var/run/felix", None)
        ]
    );
    let security = sidecar.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.run_as_user, Some(65532));
    assert_eq!(security.run_as_group, Some(65532));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let resources = sidecar.resources.as_ref().unwrap();
    let requests = resources.requests.as_ref().unwrap();
    assert_eq!(requests.get("cpu").unwrap().0, "10m");
    assert_eq!(requests.get("memory").unwrap().0, "32Mi");
    assert_eq!(
        resources.limits.as_ref().unwrap().get("memory").unwrap().0,
        "64Mi"
    );
}

fn default_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("INGRESS_LOG_INTERVAL_SECONDS", "5"),
        ("INGRESS_LOG_REQUESTS_PER_INTERVAL", "5"),
        ("INGRESS_LOG_PATH", "/var/log/calico/ingress/ingress.log"),
        ("FELIX_DIAL_TARGET", "/var/run/felix/nodeagent/socket"),
        ("LOG_LEVEL", "Info"),
    ]
}

fn assert_target_mounts_log_dir(pod: &Pod, target: &str) {
    let spec = pod.spec.as_ref().unwrap();
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == target)
        .unwrap_or_else(|| panic!("no container {target}"));
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/var/log/calico/ingress")
        .unwrap_or_else(|| panic!("{target} does not mount the log dir"));
    assert_eq!(mount.name, "ingress-tap-logs");
    assert_ne!(mount.read_only, Some(true), "the log dir must be writable");
    for other in spec
        .containers
        .iter()
        .filter(|c| c.name != target && c.name != "ingress-collector")
    {
        assert!(
            other
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != "ingress-tap-logs"),
            "{} should not mount the log volume",
            other.name
        );
    }
}

/// Removes what the injection adds (by name, independently of the patch) and the parents it
/// created, so the result can be compared with the original.
fn strip_injection(mutated: &Value, original: &Value, config: &InjectConfig) -> Value {
    let mut pod = mutated.clone();
    let sidecar = config.sidecar_name.as_str();
    let ours = [
        config.log_volume_name.as_str(),
        config.felix_volume.name.as_str(),
    ];
    let mut parents: Vec<String> = vec![
        "/spec/containers".into(),
        "/spec/initContainers".into(),
        "/spec/volumes".into(),
        "/spec/imagePullSecrets".into(),
        "/metadata/annotations".into(),
    ];
    for list in ["containers", "initContainers"] {
        if let Some(items) = pod["spec"].get_mut(list).and_then(Value::as_array_mut) {
            items.retain(|c| c["name"] != sidecar);
            for (index, container) in items.iter_mut().enumerate() {
                if let Some(mounts) = container
                    .get_mut("volumeMounts")
                    .and_then(Value::as_array_mut)
                {
                    mounts.retain(|m| {
                        !(m["name"] == config.log_volume_name.as_str()
                            && m["mountPath"] == config.log_dir.as_str())
                    });
                }
                parents.push(format!("/spec/{list}/{index}/volumeMounts"));
            }
        }
    }
    if let Some(volumes) = pod["spec"].get_mut("volumes").and_then(Value::as_array_mut) {
        volumes.retain(|v| !ours.iter().any(|name| v["name"] == *name));
    }
    if let Some(secrets) = pod["spec"]
        .get_mut("imagePullSecrets")
        .and_then(Value::as_array_mut)
    {
        secrets.retain(|s| {
            !config
                .image_pull_secrets
                .iter()
                .any(|name| s["name"] == name.as_str())
        });
    }
    if let Some(annotations) = pod["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(STATUS_ANNOTATION);
    }
    for parent in parents {
        let empty = match pod.pointer(&parent) {
            Some(Value::Array(items)) => items.is_empty(),
            Some(Value::Object(members)) => members.is_empty(),
            _ => false,
        };
        if !empty {
            continue;
        }
        match original.pointer(&parent) {
            Some(value) => *pod.pointer_mut(&parent).unwrap() = value.clone(),
            None => {
                let (holder, key) = parent.rsplit_once('/').unwrap();
                pod.pointer_mut(holder)
                    .and_then(Value::as_object_mut)
                    .unwrap()
                    .remove(key);
            }
        }
    }
    if original.get("metadata").is_none()
        && pod["metadata"].as_object().is_some_and(|m| m.is_empty())
    {
        pod.as_object_mut().unwrap().remove("metadata");
    }
    pod
}

fn assert_only_adds(original: &Value, patch: &Patch) {
    for operation in &patch.0 {
        let PatchOperation::Add(add) = operation else {
            panic!("not an add: {operation:?}");
        };
        let path = add.path.as_str();
        if path.ends_with("/-") {
            continue;
        }
        assert!(
            matches!(original.pointer(path), None | Some(Value::Null)),
            "{path} overwrites an existing value"
        );
    }
}

/// The AdmissionReview the API server sends for creating `pod`.
fn admission_review(pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7c1e5b0a-1d2f-4c53-9a8e-0f6b2d4e9a11",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// Calls the webhook's handler as the API server would, and returns the patch it answered
/// (decoded from base64) or `None` for an answer without one.
fn review_through_handler(pod: &Value, config: &InjectConfig) -> Option<Patch> {
    use base64::Engine;
    let review = admission_review(pod);
    let answer =
        ingress_tap::admission::handler::review(&serde_json::to_vec(&review).unwrap(), config)
            .expect("a well-formed review is answered");
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    assert_eq!(body["response"]["allowed"], true);
    let patch = body["response"].get("patch")?;
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("the patch is a base64 string"))
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// The full set of checks on a fixture, through the admission handler: injected as expected,
/// nothing original changed, and a second pass is a no-op.
fn check_fixture(original: &Value, config: &InjectConfig, target: &str, native: bool) {
    let patch = review_through_handler(original, config).expect("the fixture is injected");
    assert_eq!(patch, expect_patch(decide(original, config)));
    let mutated = apply(original, &patch);
    assert_only_adds(original, &patch);
    let pod = typed(&mutated);
    assert_well_formed(&pod);
    assert_sidecar(&pod, config, native, &default_env());
    assert_target_mounts_log_dir(&pod, target);
    let status: InjectionStatus = serde_json::from_str(
        pod.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(STATUS_ANNOTATION)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status.sidecar, "ingress-collector");
    assert_eq!(status.native_sidecar, native);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(&config.hash()[..STATUS_HASH_CHARS], status.config_hash);
    assert_eq!(&strip_injection(&mutated, original, config), original);
    assert_eq!(
        decide(&mutated, config),
        Decision::Skip(SkipReason::AlreadyInjected)
    );
    assert!(
        review_through_handler(&mutated, config).is_none(),
        "the second pass (reinvocation) must answer without a patch"
    );
}

// ---------------------------------------------------------------------------------------------
// Real ingress controllers

#[test]
fn ingress_nginx_controller_deployment() {
    let template = workload_template("ingress-nginx-controller-deployment.yaml");
    let pod = pod_from_template(&template, "ingress-nginx", "ingress-nginx-controller-");
    check_fixture(&pod, &InjectConfig::default(), "controller", false);
}

#[test]
fn ingress_nginx_cloud_deploy() {
    let template = workload_template("ingress-nginx-cloud-deploy.yaml");
    assert_eq!(template["spec"]["containers"][0]["name"], "controller");
    let pod = pod_from_template(&template, "ingress-nginx", "ingress-nginx-controller-");
    check_fixture(&pod, &InjectConfig::default(), "controller", false);
}

#[test]
fn nginx_inc_deployment_and_daemonset() {
    for file in ["nginx-inc-deployment.yaml", "nginx-inc-daemonset.yaml"] {
        let template = workload_template(file);
        assert!(
            template["spec"].get("volumes").is_none(),
            "{file} has no volumes"
        );
        let pod = pod_from_template(&template, "nginx-ingress", "nginx-ingress-");
        let (patch, _) = inject(&pod, &InjectConfig::default());
        let paths = patch_paths(&patch);
        assert_eq!(paths.first().map(String::as_str), Some("/spec/volumes"));
        assert!(paths.contains(&"/spec/containers/0/volumeMounts".to_owned()));
        assert!(paths.contains(&"/metadata/annotations".to_owned()));
        check_fixture(&pod, &InjectConfig::default(), "nginx-ingress", false);
    }
}

fn openshift_router_pod() -> Value {
    let template = workload_template("openshift-router-deployment.yaml");
    let mut pod = pod_from_template(&template, "openshift-ingress", "router-default-");
    for list in ["containers", "initContainers"] {
        for container in pod["spec"][list].as_array_mut().unwrap() {
            container["image"] = json!("quay.io/openshift/origin-haproxy-router:4.20");
        }
    }
    pod
}

#[test]
fn openshift_router_targets_the_first_container_without_a_logs_container() {
    let pod = openshift_router_pod();
    check_fixture(&pod, &InjectConfig::default(), "router", false);
}

#[test]
fn openshift_router_targets_the_logs_container_when_present() {
    let mut pod = openshift_router_pod();
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "logs",
            "image": "quay.io/openshift/origin-haproxy-router:4.20",
            "volumeMounts": [{"name": "rsyslog-socket", "mountPath": "/var/lib/rsyslog"}]
        }));
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "rsyslog-socket", "emptyDir": {}}));
    check_fixture(&pod, &InjectConfig::default(), "logs", false);
}

#[test]
fn openshift_router_native_sidecar_goes_after_haproxy() {
    let pod = openshift_router_pod();
    let config = InjectConfig {
        native_sidecar: true,
        ..InjectConfig::default()
    };
    check_fixture(&pod, &config, "router", true);
    let (_, mutated) = inject(&pod, &config);
    let names: Vec<&str> = mutated["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["init-router", "haproxy", "ingress-collector"]);
    assert_eq!(
        mutated["spec"]["initContainers"][1]["restartPolicy"],
        "Always"
    );
}

#[test]
fn a_workload_template_is_patched_like_a_pod() {
    let template = workload_template("ingress-nginx-controller-deployment.yaml");
    check_fixture(&template, &InjectConfig::default(), "controller", false);
}

// ---------------------------------------------------------------------------------------------
// Parents, escaping, unknown fields

#[test]
fn bare_pod_gets_every_parent_created_first() {
    let original = json!({"spec": {"containers": [{"name": "controller", "image": "nginx"}]}});
    let config = InjectConfig {
        native_sidecar: true,
        image_pull_secrets: vec!["cnx-pull-secret".to_owned()],
        ..InjectConfig::default()
    };
    let (patch, mutated) = inject(&original, &config);
    assert_eq!(
        patch_paths(&patch),
        [
            "/spec/imagePullSecrets",
            "/spec/imagePullSecrets/-",
            "/spec/volumes",
            "/spec/volumes/-",
            "/spec/volumes/-",
            "/spec/containers/0/volumeMounts",
            "/spec/containers/0/volumeMounts/-",
            "/spec/initContainers",
            "/spec/initContainers/-",
            "/metadata",
            "/metadata/annotations",
            "/metadata/annotations/ingress-tap~1status",
        ]
    );
    let pod = typed(&mutated);
    assert_well_formed(&pod);
    assert_sidecar(&pod, &config, true, &default_env());
    assert_eq!(
        pod.spec.unwrap().image_pull_secrets.unwrap()[0].name,
        "cnx-pull-secret"
    );
    assert_eq!(&strip_injection(&mutated, &original, &config), &original);
}

#[test]
fn null_parents_are_replaced() {
    let original = json!({
        "metadata": {"annotations": null},
        "spec": {"volumes": null, "initContainers": null,
                 "containers": [{"name": "controller", "image": "nginx", "volumeMounts": null}]}
    });
    let (patch, mutated) = inject(&original, &InjectConfig::default());
    assert_only_adds(&original, &patch);
    assert_well_formed(&typed(&mutated));
    assert_eq!(mutated["spec"]["volumes"].as_array().unwrap().len(), 2);
}

#[test]
fn keys_with_tilde_and_slash_survive_and_ours_is_escaped() {
    let mut original = minimal_pod();
    original["metadata"]["annotations"] = json!({"example.com/a~b": "1", "x/y/z": "2"});
    original["metadata"]["labels"] = json!({"app.kubernetes.io/name": "ingress"});
    let (patch, mutated) = inject(&original, &InjectConfig::default());
    assert!(patch_paths(&patch).contains(&"/metadata/annotations/ingress-tap~1status".to_owned()));
    assert_eq!(mutated["metadata"]["annotations"]["example.com/a~b"], "1");
    assert_eq!(mutated["metadata"]["annotations"]["x/y/z"], "2");
    assert!(mutated["metadata"]["annotations"][STATUS_ANNOTATION].is_string());
    assert_eq!(
        &strip_injection(&mutated, &original, &InjectConfig::default()),
        &original
    );
}

#[test]
fn fields_unknown_to_the_typed_model_are_kept() {
    let mut original = minimal_pod();
    original["spec"]["futureField"] = json!({"x": [1, 2]});
    original["spec"]["containers"][0]["futureContainerField"] = json!(true);
    original["status"] = json!({"phase": "Pending"});
    let (_, mutated) = inject(&original, &InjectConfig::default());
    assert_eq!(mutated["spec"]["futureField"], json!({"x": [1, 2]}));
    assert_eq!(
        mutated["spec"]["containers"][0]["futureContainerField"],
        json!(true)
    );
    assert_eq!(
        &strip_injection(&mutated, &original, &InjectConfig::default()),
        &original
    );
}

#[test]
fn only_missing_pull_secrets_are_added() {
    let mut original = minimal_pod();
    original["spec"]["imagePullSecrets"] = json!([{"name": "cnx-pull-secret"}]);
    let config = InjectConfig {
        image_pull_secrets: vec!["cnx-pull-secret".to_owned(), "mirror".to_owned()],
        ..InjectConfig::default()
    };
    let (_, mutated) = inject(&original, &config);
    assert_eq!(
        mutated["spec"]["imagePullSecrets"],
        json!([{"name": "cnx-pull-secret"}, {"name": "mirror"}])
    );
}

// ---------------------------------------------------------------------------------------------
// Skips

#[test]
fn each_skip_reason() {
    let config = InjectConfig::default();

    let mut disabled = minimal_pod();
    disabled["metadata"]["labels"] = json!({INJECT_LABEL: "disabled"});
    assert_eq!(
        decide(&disabled, &config),
        Decision::Skip(SkipReason::DisabledByLabel)
    );

    let mut enabled = minimal_pod();
    enabled["metadata"]["labels"] = json!({INJECT_LABEL: "enabled"});
    assert!(matches!(decide(&enabled, &config), Decision::Inject { .. }));

    let mut injected = minimal_pod();
    injected["metadata"]["annotations"] = json!({STATUS_ANNOTATION: "{}"});
    assert_eq!(
        decide(&injected, &config),
        Decision::Skip(SkipReason::AlreadyInjected)
    );

    let mut manual = minimal_pod();
    manual["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "ingress-collector", "image": "x"}));
    assert_eq!(
        decide(&manual, &config),
        Decision::Skip(SkipReason::SidecarPresent)
    );

    let mut manual_native = minimal_pod();
    manual_native["spec"]["initContainers"] =
        json!([{"name": "ingress-collector", "image": "x", "restartPolicy": "Always"}]);
    assert_eq!(
        decide(&manual_native, &config),
        Decision::Skip(SkipReason::SidecarPresent)
    );

    let labels: HashSet<&str> = [
        SkipReason::DisabledByLabel,
        SkipReason::AlreadyInjected,
        SkipReason::SidecarPresent,
    ]
    .iter()
    .map(SkipReason::as_str)
    .collect();
    assert_eq!(
        labels,
        HashSet::from(["disabled_by_label", "already_injected", "sidecar_present"])
    );
}

// ---------------------------------------------------------------------------------------------
// Denials

fn deny_message(pod: &Value, config: &InjectConfig, label: &str) -> String {
    let reason = expect_deny(decide(pod, config));
    assert_eq!(reason.as_str(), label, "{reason:?}");
    reason.message()
}

#[test]
fn invalid_pods_are_denied() {
    let config = InjectConfig::default();
    let no_containers = json!({"metadata": {}, "spec": {"containers": []}});
    assert!(deny_message(&no_containers, &config, "invalid_pod").contains("no containers"));
    let no_spec = json!({"metadata": {"name": "p"}});
    assert!(deny_message(&no_spec, &config, "invalid_pod").contains("no spec"));
    let not_a_pod = json!({"spec": {"containers": "controller"}});
    assert!(deny_message(&not_a_pod, &config, "invalid_pod").contains("pod schema"));
    assert!(deny_message(&json!("pod"), &config, "invalid_pod").contains("pod schema"));
    let mut twice = minimal_pod();
    twice["spec"]["initContainers"] = json!([{"name": "controller"}]);
    assert!(deny_message(&twice, &config, "invalid_pod").contains("\"controller\" is used twice"));
    let mut volumes_twice = minimal_pod();
    volumes_twice["spec"]["volumes"] =
        json!([{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]);
    assert!(deny_message(&volumes_twice, &config, "invalid_pod").contains("\"v\" is used twice"));
}

#[test]
fn unknown_target_container_is_denied() {
    let mut pod = minimal_pod();
    pod["metadata"]["annotations"] = json!({CONTAINER_ANNOTATION: "nginx"});
    let message = deny_message(&pod, &InjectConfig::default(), "unknown_target_container");
    assert!(message.contains("\"nginx\""), "{message}");
    assert!(message.contains("controller"), "{message}");
}

#[test]
fn volume_conflicts_are_denied() {
    let config = InjectConfig::default();
    let mut secret_logs = minimal_pod();
    secret_logs["spec"]["volumes"] =
        json!([{"name": "ingress-tap-logs", "secret": {"secretName": "s"}}]);
    let message = deny_message(&secret_logs, &config, "volume_conflict");
    assert!(
        message.contains("ingress-tap-logs")
            && message.contains("secret")
            && message.contains("emptyDir"),
        "{message}"
    );

    let mut other_felix = minimal_pod();
    other_felix["spec"]["volumes"] =
        json!([{"name": "ingress-tap-felix", "csi": {"driver": "other.example.com"}}]);
    let message = deny_message(&other_felix, &config, "volume_conflict");
    assert!(
        message.contains("csi driver other.example.com"),
        "{message}"
    );
    assert!(message.contains("csi driver csi.tigera.io"), "{message}");
}

#[test]
fn mount_conflicts_are_denied() {
    let config = InjectConfig::default();
    for path in [
        "/var/log/calico/ingress",
        "/var/log/calico/ingress/",
        "/var/log",
        "/var/log/calico/ingress/sub",
    ] {
        let mut pod = minimal_pod();
        pod["spec"]["volumes"] = json!([{"name": "logs", "emptyDir": {}}]);
        pod["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "logs", "mountPath": path}]);
        let message = deny_message(&pod, &config, "mount_conflict");
        assert!(
            message.contains("\"controller\"") && message.contains(path),
            "{message}"
        );
        assert!(message.contains("/var/log/calico/ingress"), "{message}");
    }
    let mut neighbour = minimal_pod();
    neighbour["spec"]["volumes"] = json!([{"name": "logs", "emptyDir": {}}]);
    neighbour["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "logs", "mountPath": "/var/log/calico/ingress-other"}]);
    assert!(matches!(
        decide(&neighbour, &config),
        Decision::Inject { .. }
    ));

    let mut sub_path = minimal_pod();
    sub_path["spec"]["volumes"] = json!([{"name": "ingress-tap-logs", "emptyDir": {}}]);
    sub_path["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "ingress-tap-logs", "mountPath": "/var/log/calico/ingress", "subPath": "x"}]);
    deny_message(&sub_path, &config, "mount_conflict");
}

#[test]
fn read_only_log_mount_is_denied() {
    let mut pod = minimal_pod();
    pod["spec"]["volumes"] = json!([{"name": "ingress-tap-logs", "emptyDir": {}}]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "ingress-tap-logs", "mountPath": "/var/log/calico/ingress", "readOnly": true}]);
    let message = deny_message(&pod, &InjectConfig::default(), "log_mount_read_only");
    assert!(
        message.contains("read-only") && message.contains("ingress-tap-logs"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// Reuse of what the pod already has

#[test]
fn an_existing_empty_dir_log_volume_is_reused() {
    let mut original = minimal_pod();
    original["spec"]["volumes"] = json!([{"name": "ingress-tap-logs", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]);
    let (patch, mutated) = inject(&original, &InjectConfig::default());
    assert_only_adds(&original, &patch);
    let volumes = mutated["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2);
    assert_eq!(
        volumes[0]["emptyDir"]["medium"], "Memory",
        "the pod's sizing is kept"
    );
    let pod = typed(&mutated);
    assert_well_formed(&pod);
    assert_target_mounts_log_dir(&pod, "controller");
}

#[test]
fn an_identical_felix_volume_and_an_existing_log_mount_are_reused() {
    let mut original = minimal_pod();
    original["spec"]["volumes"] = json!([
        {"name": "ingress-tap-felix", "csi": {"driver": "csi.tigera.io"}},
        {"name": "ingress-tap-logs", "emptyDir": {}}
    ]);
    original["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "ingress-tap-logs", "mountPath": "/var/log/calico/ingress/"}]);
    let (patch, mutated) = inject(&original, &InjectConfig::default());
    let paths = patch_paths(&patch);
    assert!(
        !paths.iter().any(|p| p.starts_with("/spec/volumes")),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("volumeMounts")),
        "{paths:?}"
    );
    assert_well_formed(&typed(&mutated));
}

// ---------------------------------------------------------------------------------------------
// Targets and overrides

#[test]
fn target_selection_order() {
    let config = InjectConfig::default();
    let mut pod = json!({"spec": {"containers": [
        {"name": "metrics", "image": "m"},
        {"name": "nginx-ingress", "image": "n"},
        {"name": "controller", "image": "c"}
    ]}});
    let (_, mutated) = inject(&pod, &config);
    assert_target_mounts_log_dir(&typed(&mutated), "controller");

    pod["metadata"] = json!({"annotations": {CONTAINER_ANNOTATION: "metrics"}});
    let (_, mutated) = inject(&pod, &config);
    assert_target_mounts_log_dir(&typed(&mutated), "metrics");

    let first_only =
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}});
    let (_, mutated) = inject(&first_only, &config);
    assert_target_mounts_log_dir(&typed(&mutated), "a");
}

fn with_annotations(pairs: &[(&str, &str)]) -> Value {
    let mut pod = minimal_pod();
    pod["metadata"]["annotations"] = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    pod
}

#[test]
fn valid_overrides_reach_the_sidecar_env() {
    let config = InjectConfig::default();
    let pod = with_annotations(&[
        (INTERVAL_ANNOTATION, "60"),
        (REQUESTS_ANNOTATION, "-1"),
        (LOG_LEVEL_ANNOTATION, "wArNiNg"),
    ]);
    let (_, mutated) = inject(&pod, &config);
    let typed_pod = typed(&mutated);
    let env = env_map(find_sidecar(&typed_pod, &config, false));
    assert_eq!(env["INGRESS_LOG_INTERVAL_SECONDS"], "60");
    assert_eq!(env["INGRESS_LOG_REQUESTS_PER_INTERVAL"], "-1");
    assert_eq!(env["LOG_LEVEL"], "Warning");
    assert_eq!(
        env["INGRESS_LOG_PATH"],
        "/var/log/calico/ingress/ingress.log"
    );
}

#[test]
fn invalid_overrides_are_denied_with_the_annotation_and_value() {
    let cases = [
        (INTERVAL_ANNOTATION, "0", "1 to 3600"),
        (INTERVAL_ANNOTATION, "5s", "1 to 3600"),
        (
            REQUESTS_ANNOTATION,
            "many",
            "negative value removes the cap",
        ),
        (LOG_LEVEL_ANNOTATION, "loud", "Warning"),
        (NATIVE_SIDECAR_ANNOTATION, "1", "true or false"),
    ];
    for (annotation, value, accepted) in cases {
        let pod = with_annotations(&[(annotation, value)]);
        let message = deny_message(&pod, &InjectConfig::default(), "invalid_annotation");
        assert!(message.contains(annotation), "{message}");
        assert!(message.contains(&format!("{value:?}")), "{message}");
        assert!(message.contains(accepted), "{message}");
    }
}

#[test]
fn native_sidecar_annotation_overrides_the_config() {
    let native_config = InjectConfig {
        native_sidecar: true,
        ..InjectConfig::default()
    };
    let (_, mutated) = inject(
        &with_annotations(&[(NATIVE_SIDECAR_ANNOTATION, "false")]),
        &native_config,
    );
    let pod = typed(&mutated);
    assert_sidecar(&pod, &native_config, false, &default_env());
    assert!(mutated["spec"].get("initContainers").is_none());

    let config = InjectConfig::default();
    let (_, mutated) = inject(
        &with_annotations(&[(NATIVE_SIDECAR_ANNOTATION, "true")]),
        &config,
    );
    let pod = typed(&mutated);
    assert_sidecar(&pod, &config, true, &default_env());
    let status: InjectionStatus = serde_json::from_str(
        mutated["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(status.native_sidecar);
}

#[test]
fn overrides_never_touch_image_privileges_or_mounts() {
    let config = InjectConfig::default();
    let plain = inject(&minimal_pod(), &config).1;
    let annotated = inject(
        &with_annotations(&[
            (INTERVAL_ANNOTATION, "9"),
            (LOG_LEVEL_ANNOTATION, "trace"),
            (REQUESTS_ANNOTATION, "1"),
        ]),
        &config,
    )
    .1;
    let sidecar = |pod: &Value| pod["spec"]["containers"][1].clone();
    for field in [
        "image",
        "securityContext",
        "volumeMounts",
        "resources",
        "args",
    ] {
        assert_eq!(
            sidecar(&plain)[field],
            sidecar(&annotated)[field],
            "{field}"
        );
    }
    assert_eq!(plain["spec"]["volumes"], annotated["spec"]["volumes"]);
}

// ---------------------------------------------------------------------------------------------
// Felix volume kinds and config

#[test]
fn each_felix_volume_kind() {
    let cases = [
        (
            FelixVolumeKind::Csi,
            json!({"name": "ingress-tap-felix", "csi": {"driver": "csi.tigera.io"}}),
        ),
        (
            FelixVolumeKind::FlexVolume,
            json!({"name": "ingress-tap-felix", "flexVolume": {"driver": "nodeagent/uds"}}),
        ),
        (
            FelixVolumeKind::HostPath,
            json!({"name": "ingress-tap-felix", "hostPath": {"path": "/var/run/calico-sync", "type": "DirectoryOrCreate"}}),
        ),
    ];
    for (kind, expected) in cases {
        let mut config = InjectConfig::default();
        config.felix_volume.kind = kind;
        config.felix_volume.host_path = "/var/run/calico-sync".to_owned();
        let (_, mutated) = inject(&minimal_pod(), &config);
        let volumes = mutated["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes[1], expected, "{kind:?}");
        let pod = typed(&mutated);
        assert_well_formed(&pod);
        let controller = &pod.spec.as_ref().unwrap().containers[0];
        assert!(
            controller
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != "ingress-tap-felix"),
            "only the sidecar mounts the Felix socket"
        );
    }
}

#[test]
fn configured_command_args_and_extra_env_are_used() {
    let config = InjectConfig::from_yaml(
        "command: [/usr/bin/ingress-tap]\nargs: [collect, --stdout]\nextraEnv:\n- {name: TRUSTED_PROXIES, value: 10.0.0.0/8}\n",
    )
    .unwrap();
    let (_, mutated) = inject(&minimal_pod(), &config);
    let sidecar = &mutated["spec"]["containers"][1];
    assert_eq!(sidecar["command"], json!(["/usr/bin/ingress-tap"]));
    assert_eq!(sidecar["args"], json!(["collect", "--stdout"]));
    let env = sidecar["env"].as_array().unwrap();
    assert_eq!(env.len(), 6);
    assert_eq!(
        env[5],
        json!({"name": "TRUSTED_PROXIES", "value": "10.0.0.0/8"})
    );
    assert_ne!(config.hash(), InjectConfig::default().hash());
}

#[test]
fn the_example_config_is_every_default() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/inject-config.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        InjectConfig::from_yaml(&text).unwrap(),
        InjectConfig::default()
    );
    // Every key of the defaults is spelt out in the example, not left to the defaults.
    let listed: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let defaults = serde_norway::to_value(InjectConfig::default()).unwrap();
    for (key, value) in defaults.as_mapping().unwrap() {
        let listed_value = listed
            .get(key)
            .unwrap_or_else(|| panic!("example lacks {key:?}"));
        if let Some(nested) = value.as_mapping() {
            for (nested_key, _) in nested {
                assert!(
                    listed_value.get(nested_key).is_some(),
                    "example lacks {key:?}.{nested_key:?}"
                );
            }
        }
    }
}

#[test]
fn the_docs_describe_every_key() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/injection-config.md");
    let docs = std::fs::read_to_string(path).unwrap();
    let defaults = serde_json::to_value(InjectConfig::default()).unwrap();
    for (key, value) in defaults.as_object().unwrap() {
        let keys: Vec<String> = match value {
            Value::Object(nested) => nested.keys().map(|n| format!("{key}.{n}")).collect(),
            _ => vec![key.clone()],
        };
        for documented in keys {
            assert!(
                docs.contains(&format!("| `{documented}` |")),
                "docs lack a row for {documented}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Size

#[test]
fn a_huge_pod_gets_the_same_small_patch() {
    let env: Vec<Value> = (0..1500)
        .map(|i| json!({"name": format!("VAR_{i}"), "value": format!("value-{i}")}))
        .collect();
    let containers: Vec<Value> = (0..200)
        .map(|i| {
            json!({
                "name": if i == 150 { "controller".to_owned() } else { format!("c{i}") },
                "image": "nginx",
                "env": env,
                "volumeMounts": [{"name": format!("v{i}"), "mountPath": format!("/data/{i}")}]
            })
        })
        .collect();
    let volumes: Vec<Value> = (0..200)
        .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
        .collect();
    let huge = json!({"metadata": {"annotations": {}}, "spec": {"containers": containers, "volumes": volumes}});
    let small = json!({"metadata": {"annotations": {}}, "spec": {
        "containers": [{"name": "controller", "image": "nginx", "volumeMounts": []}],
        "volumes": []
    }});
    let config = InjectConfig::default();
    let (huge_patch, mutated) = inject(&huge, &config);
    let (small_patch, _) = inject(&small, &config);
    // The patch describes only what is added, whatever the size of the pod.
    assert_eq!(huge_patch.0.len(), small_patch.0.len());
    let encoded = serde_json::to_string(&huge_patch).unwrap();
    assert!(encoded.len() < 4096, "patch of {} bytes", encoded.len());
    assert!(patch_paths(&huge_patch).contains(&"/spec/containers/150/volumeMounts/-".to_owned()));
    assert_eq!(mutated["spec"]["containers"].as_array().unwrap().len(), 201);
    assert_target_mounts_log_dir(&typed(&mutated), "controller");
}

// ---------------------------------------------------------------------------------------------
// Random pods

mod random_pods {
    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::select;

    const NAMES: [&str; 7] = [
        "controller",
        "nginx-ingress",
        "logs",
        "router",
        "app",
        "sidecar",
        "ingress-collector",
    ];
    const VOLUME_NAMES: [&str; 5] = [
        "ingress-tap-logs",
        "ingress-tap-felix",
        "data",
        "certs",
        "tmp",
    ];
    const PATHS: [&str; 8] = [
        "/var/log/calico/ingress",
        "/var/log/calico/ingress/",
        "/var/log",
        "/var/log/calico/ingress/sub",
        "/var/run/felix",
        "/data",
        "/etc/certs",
        "/tmp",
    ];

    fn volume_source() -> impl Strategy<Value = Value> {
        select(vec![
            json!({"emptyDir": {}}),
            json!({"emptyDir": {"medium": "Memory"}}),
            json!({"csi": {"driver": "csi.tigera.io"}}),
            json!({"csi": {"driver": "other"}}),
            json!({"secret": {"secretName": "s"}}),
            json!({"hostPath": {"path": "/x"}}),
        ])
    }

    fn mounts() -> impl Strategy<Value = Value> {
        btree_map(
            select(PATHS.to_vec()),
            (select(VOLUME_NAMES.to_vec()), any::<Option<bool>>()),
            0..3,
        )
        .prop_map(|by_path| {
            Value::Array(
                by_path
                    .into_iter()
                    .map(|(path, (name, read_only))| {
                        let mut mount = json!({"name": name, "mountPath": path});
                        if let Some(read_only) = read_only {
                            mount["readOnly"] = json!(read_only);
                        }
                        mount
                    })
                    .collect(),
            )
        })
    }

    fn container() -> impl Strategy<Value = Value> {
        (
            select(NAMES.to_vec()),
            option::of(mounts()),
            vec(select(vec!["A", "B", "C"]), 0..3),
            any::<bool>(),
        )
            .prop_map(|(name, mounts, env, native)| {
                let mut container = json!({"name": name, "image": "img"});
                if let Some(mounts) = mounts {
                    container["volumeMounts"] = mounts;
                }
                let env: BTreeMap<&str, Value> = env
                    .into_iter()
                    .map(|n| (n, json!({"name": n, "value": "v"})))
                    .collect();
                if !env.is_empty() {
                    container["env"] = Value::Array(env.into_values().collect());
                }
                if native {
                    container["restartPolicy"] = json!("Always");
                }
                container
            })
    }

    fn annotations() -> impl Strategy<Value = Value> {
        btree_map(
            select(vec![
                CONTAINER_ANNOTATION,
                NATIVE_SIDECAR_ANNOTATION,
                INTERVAL_ANNOTATION,
                REQUESTS_ANNOTATION,
                LOG_LEVEL_ANNOTATION,
                STATUS_ANNOTATION,
                "example.com/a~b",
                "ingress-tap/unknown",
            ]),
            select(vec![
                "",
                "5",
                "0",
                "-1",
                "3600",
                "debug",
                "true",
                "FALSE",
                "controller",
                "app",
                "~/",
            ]),
            0..4,
        )
        .prop_map(|map| json!(map))
    }

    fn pod() -> impl Strategy<Value = Value> {
        (
            vec(container(), 0..4),
            option::of(vec(container(), 0..3)),
            option::of(btree_map(
                select(VOLUME_NAMES.to_vec()),
                volume_source(),
                0..4,
            )),
            option::of(annotations()),
            any::<bool>(),
            option::of(vec(select(vec!["cnx-pull-secret", "other"]), 0..2)),
        )
            .prop_map(
                |(containers, init, volumes, annotations, disabled, secrets)| {
                    let mut spec = json!({"containers": containers});
                    if let Some(init) = init {
                        spec["initContainers"] = Value::Array(init);
                    }
                    if let Some(volumes) = volumes {
                        spec["volumes"] = volumes
                            .into_iter()
                            .map(|(name, mut source)| {
                                source["name"] = json!(name);
                                source
                            })
                            .collect();
                    }
                    if let Some(secrets) = secrets {
                        spec["imagePullSecrets"] = secrets
                            .into_iter()
                            .map(|name| json!({"name": name}))
                            .collect();
                    }
                    let mut metadata = json!({});
                    if let Some(annotations) = annotations {
                        metadata["annotations"] = annotations;
                    }
                    if disabled {
                        metadata["labels"] = json!({INJECT_LABEL: "disabled"});
                    }
                    json!({"metadata": metadata, "spec": spec})
                },
            )
    }

    fn config() -> impl Strategy<Value = InjectConfig> {
        (
            any::<bool>(),
            select(vec![
                FelixVolumeKind::Csi,
                FelixVolumeKind::FlexVolume,
                FelixVolumeKind::HostPath,
            ]),
            any::<bool>(),
        )
            .prop_map(|(native, kind, secrets)| {
                let mut config = InjectConfig {
                    native_sidecar: native,
                    ..InjectConfig::default()
                };
                config.felix_volume.kind = kind;
                if secrets {
                    config.image_pull_secrets = vec!["cnx-pull-secret".to_owned()];
                }
                config
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decide_never_panics_and_injections_are_valid(original in pod(), config in config()) {
            let decision = decide(&original, &config);
            if let Decision::Deny(reason) = &decision {
                prop_assert!(!reason.message().is_empty());
            }
            if let Decision::Inject { patch } = decision {
                assert_only_adds(&original, &patch);
                let mutated = apply(&original, &patch);
                let pod = typed(&mutated);
                // Random inputs may already mount volumes they lack: injection must not add
                // any such mount, and must keep every name unique.
                assert_unique_names(&pod);
                let before = dangling_mounts(&typed(&original));
                let after = dangling_mounts(&pod);
                prop_assert!(after.iter().all(|mount| before.contains(mount)), "{:?}", after);
                let all = all_containers(&pod);
                prop_assert_eq!(all.iter().filter(|c| c.name == config.sidecar_name).count(), 1);
                prop_assert_eq!(decide(&mutated, &config), Decision::Skip(SkipReason::AlreadyInjected));
            }
        }

        #[test]
        fn arbitrary_json_never_panics(original in arbitrary_json(), config in config()) {
            let _ = decide(&original, &config);
        }
    }

    /// The property above only means something if the generator reaches every outcome.
    #[test]
    fn the_generator_reaches_injections_skips_and_denials() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;

        let mut runner = TestRunner::deterministic();
        let (mut injected, mut skipped, mut denied) = (0, 0, 0);
        for _ in 0..512 {
            let original = pod().new_tree(&mut runner).unwrap().current();
            match decide(&original, &InjectConfig::default()) {
                Decision::Inject { .. } => injected += 1,
                Decision::Skip(_) => skipped += 1,
                Decision::Deny(_) => denied += 1,
            }
        }
        assert!(injected >= 25, "only {injected} injections");
        assert!(skipped >= 25, "only {skipped} skips");
        assert!(denied >= 25, "only {denied} denials");
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            select(vec!["controller", "ingress-tap-logs", "/var/log", ""]).prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                btree_map(
                    select(vec![
                        "metadata",
                        "spec",
                        "containers",
                        "name",
                        "volumes",
                        "volumeMounts",
                        "annotations",
                        "mountPath",
                        "emptyDir"
                    ]),
                    inner,
                    0..4
                )
                .prop_map(|map| json!(map)),
            ]
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Trusted proxies for every injected collector

#[test]
fn trusted_proxy_settings_reach_every_injected_collector() {
    let config =
        InjectConfig::from_yaml("trustedProxies: [\"10.0.0.0/8\", \" 192.168.1.7\"]\n").unwrap();
    let (_, mutated) = inject(&minimal_pod(), &config);
    let pod = typed(&mutated);
    let env = env_map(find_sidecar(&pod, &config, false));
    assert_eq!(env["INGRESS_TAP_TRUSTED_PROXIES"], "10.0.0.0/8,192.168.1.7");
    assert!(!env.contains_key("INGRESS_TAP_TRUSTED_HOPS"));
    // What the collector then does with it: the same parser as its own flag.
    for entry in env["INGRESS_TAP_TRUSTED_PROXIES"].split(',') {
        ingress_tap_core::net::parse_network(entry).unwrap();
    }

    let config = InjectConfig::from_yaml("trustedHops: 1\n").unwrap();
    let (_, mutated) = inject(&minimal_pod(), &config);
    let env = env_map(find_sidecar(&typed(&mutated), &config, false));
    assert_eq!(env["INGRESS_TAP_TRUSTED_HOPS"], "1");

    let (_, mutated) = inject(&minimal_pod(), &InjectConfig::default());
    let env = env_map(find_sidecar(
        &typed(&mutated),
        &InjectConfig::default(),
        false,
    ));
    assert!(!env.contains_key("INGRESS_TAP_TRUSTED_PROXIES"));
    assert!(!env.contains_key("INGRESS_TAP_TRUSTED_HOPS"));
}

#[test]
fn trusted_proxy_settings_are_validated() {
    let both =
        InjectConfig::from_yaml("trustedHops: 1\ntrustedProxies: [10.0.0.0/8]\n").unwrap_err();
    assert!(both.to_string().contains("trustedHops"), "{both}");
    let bad = InjectConfig::from_yaml("trustedProxies: [10.0.0.0/33]\n").unwrap_err();
    assert!(bad.to_string().contains("trustedProxies"), "{bad}");
    assert!(bad.to_string().contains("10.0.0.0/33"), "{bad}");
    let hops = InjectConfig::from_yaml("trustedHops: 65\n").unwrap_err();
    assert!(hops.to_string().contains("trustedHops"), "{hops}");
    let reserved = InjectConfig::from_yaml(
        "extraEnv: [{name: INGRESS_TAP_TRUSTED_PROXIES, value: 10.0.0.0/8}]\n",
    )
    .unwrap_err();
    assert!(
        reserved.to_string().contains("INGRESS_TAP_TRUSTED_PROXIES"),
        "{reserved}"
    );
}
