//! The AdmissionReview bodies the webhook benchmarks send, shared by the criterion benchmark
//! and the HTTPS load harness so that both measure the very same request.
//!
//! The main one is what the API server sends when the ingress-nginx controller Deployment of
//! the fixtures creates a pod: the template's spec, a `generateName`, the namespace, the
//! template's labels plus the opt-in label. The wide pods (many containers, many env vars
//! each) show how the cost grows with the size of the pod.

use anyhow::{bail, Context};
use ingress_tap_core::inject::INJECT_LABEL;
use serde::Deserialize;
use serde_json::{json, Value};

/// The fixture whose pod template is reviewed: the upstream ingress-nginx controller.
pub const CONTROLLER_FIXTURE: &str =
    "tests/fixtures/ingress-controllers/ingress-nginx-controller-deployment.yaml";

/// Namespace the reviewed pods are created in.
const NAMESPACE: &str = "ingress-nginx";

/// The serialised AdmissionReview for a pod of the ingress-nginx controller Deployment.
pub fn controller_review() -> anyhow::Result<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CONTROLLER_FIXTURE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let template = deployment_template(&text)
        .with_context(|| format!("{} has no usable Deployment", path.display()))?;
    let pod = pod_from_template(&template, "ingress-nginx-controller-7d9f8b6c5d-");
    encode(&review_of(pod))
}

/// The serialised AdmissionReview for a pod of `containers` containers with
/// `env_per_container` literal env vars and one volume each; the first container is named
/// `controller`, so the default config injects next to it.
pub fn wide_pod_review(containers: usize, env_per_container: usize) -> anyhow::Result<Vec<u8>> {
    let containers_json: Vec<Value> = (0..containers)
        .map(|index| {
            let name = if index == 0 {
                "controller".to_owned()
            } else {
                format!("worker-{index}")
            };
            let env: Vec<Value> = (0..env_per_container)
                .map(|var| json!({"name": format!("VAR_{var}"), "value": format!("value-{index}-{var}")}))
                .collect();
            json!({
                "name": name,
                "image": "registry.example/worker:1.0",
                "env": env,
                "volumeMounts": [{"name": format!("data-{index}"), "mountPath": format!("/data/{index}")}],
            })
        })
        .collect();
    let volumes: Vec<Value> = (0..containers)
        .map(|index| json!({"name": format!("data-{index}"), "emptyDir": {}}))
        .collect();
    let template = json!({
        "metadata": {"labels": {"app": "wide"}},
        "spec": {"containers": containers_json, "volumes": volumes},
    });
    encode(&review_of(pod_from_template(&template, "wide-6c9d8f7b5-")))
}

fn encode(review: &Value) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(review).context("cannot serialise the AdmissionReview")
}

/// The pod template of the first Deployment document in a manifest.
fn deployment_template(manifest: &str) -> anyhow::Result<Value> {
    for document in serde_norway::Deserializer::from_str(manifest) {
        let value = Value::deserialize(document).context("invalid YAML document")?;
        if value["kind"] == "Deployment" {
            let template = &value["spec"]["template"];
            if !template.is_object() {
                bail!("the Deployment has no spec.template");
            }
            return Ok(template.clone());
        }
    }
    bail!("no Deployment document")
}

/// The Pod the API server sends for a template: `generateName` and no name, the namespace
/// set, the template's labels plus the opt-in label.
fn pod_from_template(template: &Value, generate_name: &str) -> Value {
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(INJECT_LABEL.to_owned(), json!("enabled"));
    let mut metadata = json!({
        "generateName": generate_name,
        "namespace": NAMESPACE,
        "labels": labels,
    });
    if let Some(annotations) = template["metadata"].get("annotations") {
        metadata["annotations"] = annotations.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

/// The AdmissionReview v1 envelope of a pod CREATE, as the replicaset controller causes it.
fn review_of(pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b7e3c52-5a8f-4d0e-9c61-3f2d8a7b9e14",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "4f1d2e3c-6b7a-4c8d-9e0f-1a2b3c4d5e6f",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}
