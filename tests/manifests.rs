//! The deployment as users apply it: `kubectl kustomize` renders manifests/ (the default
//! installation) and manifests/overlays/cert-manager, and every rendered object is checked.
//!
//! - Schemas: every object passes kubernetes-validate in strict mode for the oldest and the
//!   newest Kubernetes version this project supports (tests/validate_manifests.py); the two
//!   cert-manager kinds, which have no bundled schema, are validated against the JSON schemas
//!   in tests/fixtures/schemas/, named in the output. The validator is also shown to reject a
//!   misspelt field and an unknown kind, so a pass means something.
//! - Semantics the schemas cannot see: which pods the two webhook entries select (never one pod
//!   twice, never the control plane or the webhook itself), the webhook's own pods being left
//!   alone by the injection engine, least-privilege RBAC, pod hardening, the image tag following
//!   the crate version, the certificate wiring of both variants.
//! - The Dockerfile builds with the command scripts/test.sh runs, and ends non-root.
//! - The docs name every flag, environment variable, annotation, reason code and metric.
//!
//! kubectl and kubernetes-validate are installed by scripts/test.sh; when they are missing the
//! tests fail with what to install, they never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ingress_tap::admission::metrics::{ReloadLabels, WebhookMetrics};
use ingress_tap::collect::metrics::CollectorMetrics;
use ingress_tap_core::collect::parse::Malformed;
use ingress_tap_core::inject::{self, Decision, DenyReason, InjectConfig, SkipReason};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

const IMAGE_REPOSITORY: &str = "ghcr.io/ingress-tap/ingress-tap";
const WEBHOOK_NAMESPACE: &str = "ingress-tap";
const WEBHOOK_NAME: &str = "ingress-tap";
const TLS_SECRET: &str = "ingress-tap-tls";
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The oldest Kubernetes release the manifests target (native sidecars need 1.29; 1.30 is
/// the oldest still maintained upstream when this was written) and the newest one the pinned
/// kubernetes-validate ships schemas for.
const SCHEMA_VERSIONS: [&str; 2] = ["1.30", "1.37"];
/// The command the Dockerfile and scripts/test.sh both build the binary with.
const RELEASE_BUILD: &str = "cargo build --release --locked";
const CERTS_INSTALL_ARGS: [&str; 10] = [
    "certs",
    "install",
    "--namespace",
    "ingress-tap",
    "--service",
    "ingress-tap",
    "--secret",
    "ingress-tap-tls",
    "--webhook-config",
    "ingress-tap",
];

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repository().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn expected_image() -> String {
    format!("{IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// One `kubectl kustomize` output: its text and its objects.
struct Rendering {
    label: &'static str,
    text: String,
    objects: Vec<Value>,
}

impl Rendering {
    fn render(label: &'static str, directory: &str) -> Rendering {
        let output = Command::new("kubectl")
            .arg("kustomize")
            .arg(repository().join(directory))
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run kubectl ({error}); it renders manifests/ with its built-in \
                     kustomize v5. Install kubectl (scripts/test.sh checks for it) and rerun"
                )
            });
        assert!(
            output.status.success(),
            "kubectl kustomize {directory} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("kustomize prints UTF-8");
        let objects = parse_documents(&text);
        assert!(!objects.is_empty(), "{directory} renders no objects");
        Rendering {
            label,
            text,
            objects,
        }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.label))
    }

    fn has(&self, kind: &str) -> bool {
        !self.all(kind).is_empty()
    }

    /// Every pod template: (owner, template), from Deployments, Jobs and CronJobs.
    fn pod_templates(&self) -> Vec<(String, &Value)> {
        let mut templates = Vec::new();
        for object in &self.objects {
            let owner = format!("{} {}", object["kind"], object["metadata"]["name"]);
            let template = match object["kind"].as_str() {
                Some("Deployment" | "Job" | "DaemonSet" | "StatefulSet") => {
                    &object["spec"]["template"]
                }
                Some("CronJob") => &object["spec"]["jobTemplate"]["spec"]["template"],
                _ => continue,
            };
            assert!(template.is_object(), "{owner} has no pod template");
            templates.push((owner, template));
        }
        templates
    }
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| {
            let value: serde_norway::Value =
                serde::Deserialize::deserialize(document).expect("rendered YAML parses");
            serde_json::to_value(value).expect("rendered YAML is JSON-shaped")
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn default_install() -> &'static Rendering {
    static RENDERING: OnceLock<Rendering> = OnceLock::new();
    RENDERING.get_or_init(|| Rendering::render("manifests/", "manifests"))
}

fn cert_manager_install() -> &'static Rendering {
    static RENDERING: OnceLock<Rendering> = OnceLock::new();
    RENDERING.get_or_init(|| {
        Rendering::render(
            "manifests/overlays/cert-manager",
            "manifests/overlays/cert-manager",
        )
    })
}

fn both_installs() -> [&'static Rendering; 2] {
    [default_install(), cert_manager_install()]
}

// ---------------------------------------------------------------------------------------------
// Schema validation

fn validator_python() -> PathBuf {
    if let Some(path) = std::env::var_os("INGRESS_TAP_VALIDATE_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = repository().join("target/kubernetes-validate-venv/bin/python");
    assert!(
        venv.exists(),
        "kubernetes-validate is not installed: run scripts/test.sh (it installs \
         kubernetes-validate 1.37.0 into target/kubernetes-validate-venv), or point \
         INGRESS_TAP_VALIDATE_PYTHON at a python that has it"
    );
    venv
}

/// Runs tests/validate_manifests.py on the given files; returns (success, combined output).
fn validate(files: &[&Path]) -> (bool, String) {
    let mut command = Command::new(validator_python());
    command.arg(repository().join("tests/validate_manifests.py"));
    for version in SCHEMA_VERSIONS {
        command.args(["--kubernetes-version", version]);
    }
    let output = command
        .args(files)
        .output()
        .expect("cannot run the manifest validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn every_rendered_manifest_passes_strict_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (file, rendering) in [
        ("default.yaml", default_install()),
        ("cert-manager.yaml", cert_manager_install()),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, &rendering.text).unwrap();
        files.push(path);
    }
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (ok, output) = validate(&paths);
    println!("{output}");
    assert!(ok, "schema validation failed:\n{output}");

    // Every object was checked: once per Kubernetes version, or once against its own schema.
    let custom_kinds = ["Issuer", "Certificate"];
    let mut expected = 0;
    for rendering in both_installs() {
        for object in &rendering.objects {
            let kind = object["kind"].as_str().unwrap();
            expected += if custom_kinds.contains(&kind) {
                1
            } else {
                SCHEMA_VERSIONS.len()
            };
        }
    }
    assert!(
        output.contains(&format!("manifests: {expected} passed, 0 failed")),
        "expected {expected} checks:\n{output}"
    );
    for kind in custom_kinds {
        assert!(
            output.contains(&format!(
                "cert-manager.io/v1 {kind} ingress-tap/ingress-tap-"
            )) && output.contains("custom resource, no Kubernetes schema; validated against"),
            "the {kind} objects must be validated against their own schema, and say so:\n{output}"
        );
    }
}

#[test]
fn the_validator_rejects_misspelt_fields_unknown_kinds_and_bad_custom_resources() {
    let dir = tempfile::tempdir().unwrap();
    let broken_builtin = dir.path().join("broken-builtin.yaml");
    let text = default_install()
        .text
        .replacen("minAvailable: 1", "minAvailabel: 1", 1);
    assert_ne!(text, default_install().text, "the PDB sets minAvailable");
    std::fs::write(
        &broken_builtin,
        format!("{text}---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"),
    )
    .unwrap();
    let broken_custom = dir.path().join("broken-custom.yaml");
    let text = cert_manager_install()
        .text
        .replace("algorithm: ECDSA", "algorithm: ecdsa");
    assert_ne!(text, cert_manager_install().text);
    std::fs::write(&broken_custom, text).unwrap();

    let (ok, output) = validate(&[&broken_builtin, &broken_custom]);
    assert!(!ok, "broken manifests passed:\n{output}");
    assert!(output.contains("'minAvailabel' was unexpected"), "{output}");
    assert!(
        output.contains("Couldn't find schema for kind Widget"),
        "{output}"
    );
    assert!(output.contains("'ecdsa' is not one of"), "{output}");
}

// ---------------------------------------------------------------------------------------------
// Webhook selection

type Labels = BTreeMap<String, String>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn labels_of(object: &Value) -> Labels {
    object["metadata"]["labels"]
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Kubernetes label-selector semantics: an absent or empty selector matches everything;
/// `NotIn` and `DoesNotExist` match objects without the key.
fn selector_matches(selector: &Value, labels: &Labels) -> bool {
    if selector.is_null() {
        return true;
    }
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| labels.get(key).map(String::as_str) == value.as_str());
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|expression| {
            let key = expression["key"].as_str().unwrap();
            let values: Vec<&str> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap())
                .collect();
            let actual = labels.get(key).map(String::as_str);
            match expression["operator"].as_str().unwrap() {
                "In" => actual.is_some_and(|a| values.contains(&a)),
                "NotIn" => actual.is_none_or(|a| !values.contains(&a)),
                "Exists" => actual.is_some(),
                "DoesNotExist" => actual.is_none(),
                other => panic!("unknown selector operator {other}"),
            }
        });
    by_label && by_expression
}

/// The webhook entries of `rendering` that the API server would call for a pod CREATE.
fn entries_called(
    rendering: &Rendering,
    namespace_labels: &Labels,
    pod_labels: &Labels,
) -> Vec<String> {
    let configuration = rendering.get("MutatingWebhookConfiguration", WEBHOOK_NAME);
    configuration["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| {
            selector_matches(&entry["namespaceSelector"], namespace_labels)
                && selector_matches(&entry["objectSelector"], pod_labels)
        })
        .map(|entry| entry["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn each_opted_in_pod_is_sent_exactly_once_and_nothing_else_is_sent() {
    let inject = inject::INJECT_LABEL;
    let label_values = [None, Some("enabled"), Some("disabled"), Some("maybe")];
    for rendering in both_installs() {
        for namespace in ["default", "ingress", "kube-system", WEBHOOK_NAMESPACE] {
            for namespace_value in label_values {
                for pod_value in label_values {
                    let mut namespace_labels = labels(&[(NAMESPACE_NAME_LABEL, namespace)]);
                    if let Some(value) = namespace_value {
                        namespace_labels.insert(inject.into(), value.into());
                    }
                    let pod_labels = pod_value
                        .map(|value| labels(&[(inject, value)]))
                        .unwrap_or_default();
                    let called = entries_called(rendering, &namespace_labels, &pod_labels);

                    let protected = ["kube-system", WEBHOOK_NAMESPACE].contains(&namespace);
                    let pod_opted_in = pod_value == Some("enabled");
                    let namespace_opted_in = namespace_value == Some("enabled")
                        && !matches!(pod_value, Some("enabled" | "disabled"));
                    let expected = !protected && (pod_opted_in || namespace_opted_in);
                    let case = format!(
                        "{}: namespace {namespace} labelled {namespace_value:?}, pod labelled \
                         {pod_value:?}: called {called:?}",
                        rendering.label
                    );
                    assert!(called.len() <= 1, "{case}: a pod must never be sent twice");
                    assert_eq!(called.len() == 1, expected, "{case}");
                }
            }
        }
    }
}

#[test]
fn the_webhook_configuration_is_safe_for_pod_creation() {
    for rendering in both_installs() {
        let configuration = rendering.get("MutatingWebhookConfiguration", WEBHOOK_NAME);
        let service = rendering.get("Service", WEBHOOK_NAME);
        let entries = configuration["webhooks"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{}", rendering.label);
        let names: BTreeSet<&str> = entries
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "entry names must differ");
        for entry in entries {
            let name = entry["name"].as_str().unwrap();
            assert_eq!(entry["admissionReviewVersions"], json!(["v1"]), "{name}");
            assert_eq!(entry["sideEffects"], "None", "{name}: dry runs need None");
            assert_eq!(entry["failurePolicy"], "Fail", "{name}");
            assert_eq!(entry["reinvocationPolicy"], "IfNeeded", "{name}");
            let timeout = entry["timeoutSeconds"].as_u64().unwrap();
            assert!((1..=10).contains(&timeout), "{name}: timeout {timeout}");
            assert_eq!(
                entry["rules"],
                json!([{
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                    "scope": "Namespaced"
                }]),
                "{name}: pod CREATE only"
            );
            let excluded = entry["namespaceSelector"]["matchExpressions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["key"] == NAMESPACE_NAME_LABEL)
                .unwrap_or_else(|| panic!("{name} must exclude namespaces by name"));
            assert_eq!(excluded["operator"], "NotIn", "{name}");
            assert_eq!(
                excluded["values"],
                json!(["kube-system", WEBHOOK_NAMESPACE]),
                "{name}"
            );

            // The call reaches the webhook's HTTPS port through the Service.
            let client = &entry["clientConfig"]["service"];
            assert_eq!(client["name"], service["metadata"]["name"], "{name}");
            assert_eq!(
                client["namespace"], service["metadata"]["namespace"],
                "{name}"
            );
            assert_eq!(client["path"], "/mutate", "{name}");
            let port = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["port"] == client["port"])
                .unwrap_or_else(|| panic!("{name}: the Service has no port {}", client["port"]));
            assert_eq!(port["port"], 443);
            let container = webhook_container(rendering);
            let target = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == port["targetPort"])
                .expect("the Service's targetPort names a container port");
            assert_eq!(target["containerPort"], 8443);
        }
        // The Service selects exactly the webhook's pods.
        let pod_labels = labels_of(&webhook_deployment(rendering)["spec"]["template"]);
        let service_selector = json!({"matchLabels": service["spec"]["selector"]});
        assert!(selector_matches(&service_selector, &pod_labels));
    }
}

// ---------------------------------------------------------------------------------------------
// The webhook's own pods

fn webhook_deployment(rendering: &Rendering) -> &Value {
    rendering.get("Deployment", WEBHOOK_NAME)
}

fn webhook_container(rendering: &Rendering) -> &Value {
    let containers = webhook_deployment(rendering)["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn as_pod(template: &Value, namespace: &str) -> Value {
    let mut metadata = template["metadata"].clone();
    metadata["namespace"] = json!(namespace);
    metadata["generateName"] = json!("ingress-tap-");
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

#[test]
fn the_webhook_never_injects_into_its_own_pods() {
    for rendering in both_installs() {
        let namespace = rendering.get("Namespace", WEBHOOK_NAMESPACE);
        let mut namespace_labels = labels_of(namespace);
        namespace_labels.insert(NAMESPACE_NAME_LABEL.into(), WEBHOOK_NAMESPACE.into());
        assert_eq!(
            namespace_labels
                .get(inject::INJECT_LABEL)
                .map(String::as_str),
            Some(inject::INJECT_DISABLED),
            "the webhook's namespace is labelled disabled"
        );
        let templates = rendering.pod_templates();
        assert!(!templates.is_empty());
        for (owner, template) in templates {
            assert_eq!(
                template["metadata"]["namespace"],
                Value::Null,
                "{owner}: templates take the namespace of their owner"
            );
            let called = entries_called(rendering, &namespace_labels, &labels_of(template));
            assert!(called.is_empty(), "{owner} would be sent to {called:?}");
            // Even if selectors were rewritten, the engine itself skips these pods.
            let decision = inject::decide(
                &as_pod(template, WEBHOOK_NAMESPACE),
                &InjectConfig::default(),
            );
            assert_eq!(
                decision,
                Decision::Skip(SkipReason::DisabledByLabel),
                "{owner}"
            );
        }
    }
}

#[test]
fn every_pod_runs_hardened_and_with_the_release_image() {
    let image = expected_image();
    for rendering in both_installs() {
        for (owner, template) in rendering.pod_templates() {
            let spec = &template["spec"];
            let pod_security = &spec["securityContext"];
            assert_eq!(pod_security["runAsNonRoot"], true, "{owner}");
            assert_ne!(pod_security["runAsUser"], 0, "{owner}");
            assert_eq!(
                pod_security["seccompProfile"]["type"], "RuntimeDefault",
                "{owner}"
            );
            for forbidden in ["hostNetwork", "hostPID", "hostIPC"] {
                assert_ne!(spec[forbidden], true, "{owner}: {forbidden}");
            }
            for volume in spec["volumes"].as_array().into_iter().flatten() {
                assert!(volume["hostPath"].is_null(), "{owner}: hostPath volume");
            }
            let containers: Vec<&Value> = ["initContainers", "containers"]
                .iter()
                .flat_map(|field| spec[*field].as_array().into_iter().flatten())
                .collect();
            assert!(!containers.is_empty(), "{owner}");
            for container in containers {
                let name = format!("{owner} container {}", container["name"]);
                assert_eq!(container["image"], image.as_str(), "{name}");
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
                assert!(security["capabilities"]["add"].is_null(), "{name}");
                assert_ne!(security["privileged"], true, "{name}");
                let resources = &container["resources"];
                assert!(resources["requests"]["cpu"].is_string(), "{name}");
                assert!(resources["requests"]["memory"].is_string(), "{name}");
                assert!(resources["limits"]["memory"].is_string(), "{name}");
            }
        }
    }
}

#[test]
fn the_webhook_deployment_is_highly_available_and_wired_to_its_files() {
    for rendering in both_installs() {
        let deployment = webhook_deployment(rendering);
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 2);
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
        let pod = &spec["template"]["spec"];
        let pod_labels = labels_of(&spec["template"]);
        assert!(selector_matches(&spec["selector"], &pod_labels));

        // Spread over nodes, softly so a single-node cluster still runs.
        let spread = pod["topologySpreadConstraints"].as_array().unwrap();
        assert!(spread
            .iter()
            .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
                && selector_matches(&c["labelSelector"], &pod_labels)));

        // A disruption budget that covers these pods and keeps one of the two.
        let budget = rendering.get("PodDisruptionBudget", WEBHOOK_NAME);
        assert_eq!(budget["metadata"]["namespace"], WEBHOOK_NAMESPACE);
        assert!(selector_matches(&budget["spec"]["selector"], &pod_labels));
        assert_eq!(budget["spec"]["minAvailable"], 1);

        let container = webhook_container(rendering);
        assert_eq!(
            container["args"],
            json!([
                "webhook",
                "--tls-cert",
                "/etc/ingress-tap/tls/tls.crt",
                "--tls-key",
                "/etc/ingress-tap/tls/tls.key",
                "--tls-ca",
                "/etc/ingress-tap/tls/ca.crt",
                "--config",
                "/etc/ingress-tap/config/config.yaml",
                "--health-listen",
                "$(POD_IP):8080"
            ])
        );
        // The health port binds the pod's address, which the kubelet's probes use.
        let pod_ip = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "POD_IP")
            .expect("POD_IP in the environment");
        assert_eq!(pod_ip["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(container[probe]["httpGet"]["host"].is_null(), "{probe}");
        }
        let health_port = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["containerPort"] == 8080)
            .expect("health port 8080");
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{probe}");
            assert_eq!(get["port"], health_port["name"], "{probe}");
        }

        // The files the args name are the mounted Secret and ConfigMap, whole directories
        // (a subPath mount would never see an update).
        let volume = |name: &str| -> &Value {
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"))
        };
        let mount_of = |directory: &str| -> &Value {
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == directory)
                .unwrap_or_else(|| panic!("nothing mounted at {directory}"))
        };
        let tls = mount_of("/etc/ingress-tap/tls");
        assert!(tls["subPath"].is_null());
        assert_eq!(tls["readOnly"], true);
        assert_eq!(
            volume(tls["name"].as_str().unwrap())["secret"]["secretName"],
            TLS_SECRET
        );
        let config = mount_of("/etc/ingress-tap/config");
        assert!(config["subPath"].is_null());
        let config_map = &volume(config["name"].as_str().unwrap())["configMap"]["name"];
        let config_map = rendering.get("ConfigMap", config_map.as_str().unwrap());
        assert!(config_map["data"]["config.yaml"].is_string());
    }
}

#[test]
fn the_config_map_holds_the_documented_default_config_for_the_release_image() {
    let example = read("examples/inject-config.yaml");
    for rendering in both_installs() {
        let config_map = rendering.get("ConfigMap", "ingress-tap-config");
        assert_eq!(config_map["metadata"]["namespace"], WEBHOOK_NAMESPACE);
        let text = config_map["data"]["config.yaml"].as_str().unwrap();
        assert_eq!(
            text, example,
            "manifests/base/inject-config.yaml must stay a copy of examples/inject-config.yaml"
        );
        let config = InjectConfig::from_yaml(text).expect("the webhook accepts the config");
        assert_eq!(config, InjectConfig::default());
        assert_eq!(config.image, expected_image());
        assert_eq!(
            webhook_container(rendering)["image"],
            config.image.as_str(),
            "the sidecar and the webhook run the same image"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC

/// The Roles and ClusterRoles a ServiceAccount of the webhook namespace is bound to.
fn roles_of<'a>(rendering: &'a Rendering, account: &str) -> Vec<&'a Value> {
    let mut roles = Vec::new();
    for binding_kind in ["RoleBinding", "ClusterRoleBinding"] {
        for binding in rendering.all(binding_kind) {
            let bound = binding["subjects"].as_array().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == account
                    && s["namespace"] == WEBHOOK_NAMESPACE
            });
            if bound {
                let role_ref = &binding["roleRef"];
                let role = rendering.get(role_ref["kind"].as_str().unwrap(), {
                    role_ref["name"].as_str().unwrap()
                });
                if binding_kind == "RoleBinding" {
                    assert_eq!(
                        role["metadata"]["namespace"],
                        binding["metadata"]["namespace"]
                    );
                }
                roles.push(role);
            }
        }
    }
    roles
}

/// One RBAC rule, where it applies (`None`: cluster-wide) and what it grants.
#[derive(Debug, PartialEq)]
struct Grant {
    namespace: Option<String>,
    api_groups: BTreeSet<String>,
    resources: BTreeSet<String>,
    verbs: BTreeSet<String>,
    resource_names: BTreeSet<String>,
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn grants(role: &Value) -> Vec<Grant> {
    let strings = |value: &Value| -> BTreeSet<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            assert!(rule["nonResourceURLs"].is_null(), "{rule}");
            Grant {
                namespace: role["metadata"]["namespace"].as_str().map(str::to_owned),
                api_groups: strings(&rule["apiGroups"]),
                resources: strings(&rule["resources"]),
                verbs: strings(&rule["verbs"]),
                resource_names: strings(&rule["resourceNames"]),
            }
        })
        .collect()
}

#[test]
fn rbac_grants_only_what_events_and_certs_install_need() {
    for rendering in both_installs() {
        // Nothing anywhere grants a wildcard.
        for kind in ["Role", "ClusterRole"] {
            for role in rendering.all(kind) {
                let text = role["rules"].to_string();
                assert!(
                    !text.contains("\"*\""),
                    "{kind} {}",
                    role["metadata"]["name"]
                );
            }
        }

        // The webhook: recording events, nothing else.
        let webhook: Vec<Grant> = roles_of(rendering, "ingress-tap")
            .into_iter()
            .flat_map(grants)
            .collect();
        assert_eq!(
            webhook,
            vec![Grant {
                namespace: None,
                api_groups: set(&["", "events.k8s.io"]),
                resources: set(&["events"]),
                verbs: set(&["create", "patch"]),
                resource_names: set(&[]),
            }],
            "{}",
            rendering.label
        );
        let deployment = webhook_deployment(rendering);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["serviceAccountName"],
            "ingress-tap"
        );
    }

    // certs install: its Secret (create cannot be limited by name, so only in its namespace)
    // and the caBundle of its webhook configuration.
    let certgen: Vec<Grant> = roles_of(default_install(), "ingress-tap-certgen")
        .into_iter()
        .flat_map(grants)
        .collect();
    let namespaced = Some(WEBHOOK_NAMESPACE.to_owned());
    assert_eq!(
        certgen,
        vec![
            Grant {
                namespace: namespaced.clone(),
                api_groups: set(&[""]),
                resources: set(&["secrets"]),
                verbs: set(&["get", "update"]),
                resource_names: set(&[TLS_SECRET]),
            },
            Grant {
                namespace: namespaced,
                api_groups: set(&[""]),
                resources: set(&["secrets"]),
                verbs: set(&["create"]),
                resource_names: set(&[]),
            },
            Grant {
                namespace: None,
                api_groups: set(&["admissionregistration.k8s.io"]),
                resources: set(&["mutatingwebhookconfigurations"]),
                verbs: set(&["get", "patch"]),
                resource_names: set(&[WEBHOOK_NAME]),
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Certificates

#[test]
fn without_cert_manager_a_job_and_a_daily_cron_job_run_certs_install() {
    let rendering = default_install();
    let job = rendering.get("Job", "ingress-tap-certs-install");
    let cron_job = rendering.get("CronJob", "ingress-tap-certs-renew");
    let job_pod = &job["spec"]["template"]["spec"];
    let cron_pod = &cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        job_pod, cron_pod,
        "the install Job and the renewal CronJob run the same pod"
    );
    assert_eq!(job_pod["serviceAccountName"], "ingress-tap-certgen");
    assert_eq!(job_pod["containers"][0]["args"], json!(CERTS_INSTALL_ARGS));

    let schedule: Vec<&str> = cron_job["spec"]["schedule"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(schedule.len(), 5);
    assert!(
        schedule[0].parse::<u8>().is_ok_and(|m| m < 60)
            && schedule[1].parse::<u8>().is_ok_and(|h| h < 24)
            && schedule[2..] == ["*", "*", "*"],
        "once a day: {schedule:?}"
    );
    assert_eq!(cron_job["spec"]["concurrencyPolicy"], "Forbid");
    assert!(!rendering.has("Certificate") && !rendering.has("Issuer"));
}

#[test]
fn with_cert_manager_the_serving_secret_and_ca_bundle_come_from_a_ca_issued_certificate() {
    let rendering = cert_manager_install();
    for kind in ["Job", "CronJob", "Role", "RoleBinding"] {
        assert!(!rendering.has(kind), "no {kind} without certs install");
    }
    assert!(!rendering.text.contains("ingress-tap-certgen"));

    let configuration = rendering.get("MutatingWebhookConfiguration", WEBHOOK_NAME);
    let source = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        .as_str()
        .expect("the CA injector annotation");
    let (namespace, name) = source.split_once('/').unwrap();
    let serving = rendering.get("Certificate", name);
    assert_eq!(serving["metadata"]["namespace"], namespace);
    assert_eq!(serving["spec"]["secretName"], TLS_SECRET);
    let service = rendering.get("Service", WEBHOOK_NAME);
    let service_name = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    );
    assert!(
        serving["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!(service_name)),
        "the serving certificate names {service_name}"
    );
    assert_ne!(serving["spec"]["isCA"], true);

    // serving <- CA issuer <- CA certificate <- self-signed issuer.
    let ca_issuer = rendering.get(
        "Issuer",
        serving["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        .as_str()
        .expect("a CA issuer");
    let ca = rendering
        .all("Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == ca_secret)
        .expect("a Certificate writes the CA secret");
    assert_eq!(ca["spec"]["isCA"], true);
    let root = rendering.get("Issuer", ca["spec"]["issuerRef"]["name"].as_str().unwrap());
    assert!(root["spec"]["selfSigned"].is_object());
    for object in [serving, ca, ca_issuer, root] {
        assert_eq!(object["metadata"]["namespace"], WEBHOOK_NAMESPACE);
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// One Dockerfile instruction: keyword and arguments, continuation lines joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, arguments) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((keyword.to_ascii_uppercase(), arguments.trim().to_owned()));
        current.clear();
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside an instruction"
    );
    instructions
}

#[test]
fn the_dockerfile_builds_like_the_test_script_and_runs_non_root() {
    let instructions = dockerfile_instructions(&read("Dockerfile"));
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (keyword, _))| keyword == "FROM")
        .map(|(index, _)| index)
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    let (builder, final_stage) = instructions.split_at(*stages.last().unwrap());

    // The builder's cargo command is the one scripts/test.sh runs.
    let cargo_commands: Vec<String> = builder
        .iter()
        .filter(|(keyword, _)| keyword == "RUN")
        .flat_map(|(_, arguments)| {
            let command: Vec<&str> = arguments
                .split_whitespace()
                .skip_while(|word| word.starts_with("--"))
                .collect();
            command
                .join(" ")
                .split("&&")
                .map(|part| part.trim().to_owned())
                .filter(|part| part.starts_with("cargo "))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(cargo_commands, vec![RELEASE_BUILD.to_owned()]);
    let script = read("scripts/test.sh");
    assert!(
        script.lines().any(|line| line.trim() == RELEASE_BUILD),
        "scripts/test.sh must run `{RELEASE_BUILD}` as the Dockerfile does"
    );

    // The builder's Rust is at least the crate's rust-version, on the final image's Debian.
    let (base, alias) = builder[0]
        .1
        .split_once(" AS ")
        .expect("FROM image AS builder");
    let tag = base.rsplit_once(':').unwrap().1;
    let (rust, debian) = tag.split_once('-').unwrap();
    let version = |text: &str| -> (u32, u32) {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let manifest = read("Cargo.toml");
    let minimum = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(version(rust) >= version(minimum), "{rust} < {minimum}");
    let final_from = &final_stage[0].1;
    assert_eq!(debian, "bookworm");
    assert!(
        final_from.contains("distroless/cc-debian12"),
        "{final_from}: the binary needs glibc from the builder's Debian (bookworm = 12)"
    );

    // Final stage: the binary from the builder, a numeric non-root user, the binary as entrypoint.
    let final_of = |keyword: &str| -> Vec<&str> {
        final_stage
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, arguments)| arguments.as_str())
            .collect()
    };
    let copies = final_of("COPY");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0].starts_with(&format!("--from={} ", alias.trim())),
        "{copies:?}"
    );
    assert!(copies[0].ends_with(" /ingress-tap"), "{copies:?}");
    let users = final_of("USER");
    let user = users.last().expect("the final stage sets USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    assert!(uid.parse::<u32>().is_ok_and(|uid| uid != 0), "USER {user}");
    assert!(gid.parse::<u32>().is_ok_and(|gid| gid != 0), "USER {user}");
    let config = InjectConfig::default();
    assert_eq!(
        uid.parse::<i64>().unwrap(),
        config.run_as_user,
        "the image's user is the sidecar's"
    );
    assert_eq!(final_of("ENTRYPOINT"), vec![r#"["/ingress-tap"]"#]);

    // The documented build command tags the image the manifests and the config use.
    let build_command = format!("docker build -t {} .", expected_image());
    assert!(read("Dockerfile").contains(&build_command));
    assert!(read("docs/install.md").contains(&build_command));
}

// ---------------------------------------------------------------------------------------------
// Docs

/// Whether `doc` names `token` as code: a backtick, the token, and no longer word after it.
fn mentions_as_code(doc: &str, token: &str) -> bool {
    doc.match_indices(&format!("`{token}")).any(|(at, found)| {
        doc[at + found.len()..]
            .chars()
            .next()
            .is_none_or(|next| !(next.is_ascii_alphanumeric() || next == '-' || next == '_'))
    })
}

fn help(subcommand: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
        .args(subcommand)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "{subcommand:?} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The long flags and environment variables a `--help` text lists.
fn flags_and_variables(help: &str) -> (Vec<String>, Vec<String>) {
    let mut flags = Vec::new();
    let mut variables = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            for word in trimmed.split([' ', ',']) {
                if let Some(name) = word.strip_prefix("--") {
                    if !name.is_empty() && name != "help" {
                        flags.push(format!("--{name}"));
                    }
                }
            }
        }
        for (at, _) in line.match_indices("[env: ") {
            let rest = &line[at + "[env: ".len()..];
            let end = rest.find(['=', ']']).unwrap();
            variables.push(rest[..end].to_owned());
        }
    }
    (flags, variables)
}

#[test]
fn the_configuration_reference_names_every_flag_variable_and_annotation() {
    let doc = read("docs/configuration.md");
    let mut missing = Vec::new();
    // The roles the manifests run: the webhook, the sidecar, and the certificate jobs.
    for subcommand in [
        &["webhook"][..],
        &["collect"],
        &["certs", "install"],
        &["certs", "generate"],
    ] {
        let (flags, variables) = flags_and_variables(&help(subcommand));
        assert!(flags.len() >= 4, "{subcommand:?}: {flags:?}");
        if subcommand[0] != "certs" {
            assert!(!variables.is_empty(), "{subcommand:?}");
        }
        for token in flags.iter().chain(&variables) {
            if !mentions_as_code(&doc, token) {
                missing.push(format!("{} {token}", subcommand.join(" ")));
            }
        }
    }
    for key in [
        inject::INJECT_LABEL,
        inject::CONTAINER_ANNOTATION,
        inject::NATIVE_SIDECAR_ANNOTATION,
        inject::INTERVAL_ANNOTATION,
        inject::REQUESTS_ANNOTATION,
        inject::LOG_LEVEL_ANNOTATION,
        inject::STATUS_ANNOTATION,
    ] {
        if !mentions_as_code(&doc, key) {
            missing.push(key.to_owned());
        }
    }
    assert!(
        doc.contains("injection-config.md"),
        "the config keys are linked, not repeated"
    );
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not mention: {missing:?}"
    );
}

/// Every skip and deny reason of the engine. The matches are exhaustive on purpose: a new
/// reason does not compile here until it is listed, and so documented.
fn engine_reasons() -> Vec<&'static str> {
    let skips = [
        SkipReason::DisabledByLabel,
        SkipReason::AlreadyInjected,
        SkipReason::SidecarPresent,
    ];
    for skip in &skips {
        match skip {
            SkipReason::DisabledByLabel
            | SkipReason::AlreadyInjected
            | SkipReason::SidecarPresent => {}
        }
    }
    let text = String::new;
    let denials = [
        DenyReason::InvalidPod { problem: text() },
        DenyReason::UnknownTargetContainer {
            requested: text(),
            available: Vec::new(),
        },
        DenyReason::InvalidAnnotation {
            annotation: "",
            value: text(),
            accepted: "",
        },
        DenyReason::VolumeConflict {
            volume: text(),
            expected: text(),
            found: text(),
        },
        DenyReason::MountConflict {
            container: text(),
            volume: text(),
            mount_path: text(),
            log_dir: text(),
        },
        DenyReason::LogMountReadOnly {
            container: text(),
            volume: text(),
        },
    ];
    for denial in &denials {
        match denial {
            DenyReason::InvalidPod { .. }
            | DenyReason::UnknownTargetContainer { .. }
            | DenyReason::InvalidAnnotation { .. }
            | DenyReason::VolumeConflict { .. }
            | DenyReason::MountConflict { .. }
            | DenyReason::LogMountReadOnly { .. } => {}
        }
    }
    skips
        .iter()
        .map(SkipReason::as_str)
        .chain(denials.iter().map(DenyReason::as_str))
        .collect()
}

/// Every reason a collector counts a malformed line under (exhaustive, as above).
fn malformed_reasons() -> Vec<&'static str> {
    let all = [
        Malformed::NoJsonObject,
        Malformed::UnterminatedObject,
        Malformed::InvalidJson,
        Malformed::MissingField(""),
        Malformed::InvalidField(""),
        Malformed::DuplicateField(""),
    ];
    for reason in &all {
        match reason {
            Malformed::NoJsonObject
            | Malformed::UnterminatedObject
            | Malformed::InvalidJson
            | Malformed::MissingField(_)
            | Malformed::InvalidField(_)
            | Malformed::DuplicateField(_) => {}
        }
    }
    all.iter().map(Malformed::as_str).collect()
}

/// The names of every metric as Prometheus scrapes them (`_total` on counters).
fn metric_names() -> BTreeSet<String> {
    let mut registry = Registry::default();
    let webhook = WebhookMetrics::register(&mut registry);
    let collector = CollectorMetrics::register(&mut registry);
    // Families appear in the exposition only once they have a series.
    webhook.count("skipped", "disabled_by_label");
    for family in [&webhook.config_reloads, &webhook.certificate_reloads] {
        family.get_or_create(&ReloadLabels { result: "ok" }).inc();
    }
    collector.malformed("invalid_json");
    collector.oversized_header("x-forwarded-for");
    webhook
        .requests_refused
        .get_or_create(&ingress_tap::admission::metrics::ReasonLabels { reason: "busy" })
        .inc();
    let admission = ingress_tap::serve::ConnMetrics::register(
        registry.sub_registry_with_prefix("ingress_tap_webhook"),
        "admission",
    );
    let health = ingress_tap::telemetry::register_health_metrics(&mut registry);
    for connections in [&admission, &health] {
        let reason = ingress_tap::serve::ReasonLabels { reason: "limit" };
        connections.refused.get_or_create(&reason).inc();
        connections.closed.get_or_create(&reason).inc();
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let names: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            }
        })
        .collect();
    assert!(names.len() >= 20, "{names:?}");
    names
}

#[test]
fn troubleshooting_explains_every_reason_code_and_metric() {
    let doc = read("docs/troubleshooting.md");
    // The reasons the admission handler adds around the engine, and its error codes.
    let handler_reasons = [
        "not_a_pod",
        "not_a_create",
        "subresource",
        "patch_serialisation",
        "not_json",
        "not_admission_review",
        "no_request",
        "no_object",
    ];
    let mut missing: Vec<String> = engine_reasons()
        .into_iter()
        .chain(handler_reasons)
        .chain(malformed_reasons())
        .filter(|reason| !mentions_as_code(&doc, reason))
        .map(str::to_owned)
        .collect();
    missing.extend(
        metric_names()
            .into_iter()
            .filter(|name| !mentions_as_code(&doc, name)),
    );
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not mention: {missing:?}"
    );
}

#[test]
fn a_network_policy_admits_no_pod_to_the_webhook() {
    for rendering in both_installs() {
        let policy = rendering.get("NetworkPolicy", "ingress-tap-webhook");
        assert_eq!(policy["metadata"]["namespace"], WEBHOOK_NAMESPACE);
        let spec = &policy["spec"];
        let pod_labels = labels_of(&webhook_deployment(rendering)["spec"]["template"]);
        assert!(selector_matches(&spec["podSelector"], &pod_labels));
        assert_eq!(spec["policyTypes"], json!(["Ingress"]));

        let container = webhook_container(rendering);
        let port_names: BTreeSet<&str> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let rules = spec["ingress"].as_array().unwrap();
        assert!(!rules.is_empty());
        let mut admitted = BTreeSet::new();
        for rule in rules {
            // Every rule names its ports (no rule opens every port), and they are the pod's.
            let ports = rule["ports"].as_array().expect("a rule without ports");
            for port in ports {
                let name = port["port"].as_str().expect("ports by name");
                assert!(port_names.contains(name), "{name}");
                admitted.insert(name);
            }
            // Peers are addresses only: a pod or namespace selector would admit pods.
            let peers = rule["from"].as_array().expect("a rule from anyone");
            for peer in peers {
                assert!(peer["podSelector"].is_null(), "{peer}");
                assert!(peer["namespaceSelector"].is_null(), "{peer}");
                let block = &peer["ipBlock"];
                assert!(block["cidr"].is_string(), "{peer}");
                // The default pod network is excluded wherever everything else is admitted.
                if block["cidr"] == "0.0.0.0/0" {
                    assert!(
                        block["except"]
                            .as_array()
                            .is_some_and(|e| e.contains(&json!("192.168.0.0/16"))),
                        "{peer}"
                    );
                }
            }
        }
        assert!(admitted.contains("https"));
    }
    // Each platform's peers are documented.
    let install = read("docs/install.md");
    for platform in ["kubeadm", "GKE", "EKS", "AKS", "OpenShift"] {
        assert!(
            install.contains(&format!("| {platform}")),
            "docs/install.md has no network policy row for {platform}"
        );
    }
}

/// Every source file under `dir`, recursively.
fn rust_sources(dir: &Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn the_security_review_names_tests_that_exist() {
    let doc = read("docs/security.md");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = String::new();
    rust_sources(&root.join("src"), &mut sources);
    rust_sources(&root.join("tests"), &mut sources);
    rust_sources(&root.join("crates"), &mut sources);
    let mut named = 0;
    let mut missing = Vec::new();
    for (i, code) in doc.split('`').enumerate() {
        // Odd pieces are inside backticks. A test is named as `file::test` or by a name of
        // five words or more.
        if i % 2 == 0
            || !code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b':')
        {
            continue;
        }
        let name = code.rsplit("::").next().unwrap();
        // Metric names are not tests.
        if code.starts_with("ingress_tap_")
            || (!code.contains("::") && name.matches('_').count() < 4)
        {
            continue;
        }
        named += 1;
        if !sources.contains(&format!("fn {name}(")) {
            missing.push(code.to_owned());
        }
    }
    assert!(named >= 10, "{named}");
    assert!(
        missing.is_empty(),
        "docs/security.md names tests that do not exist: {missing:?}"
    );
}
