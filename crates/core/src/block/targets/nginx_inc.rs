//! NGINX Inc's controller: a Policy (k8s.nginx.org/v1) with `accessControl.deny`, attached to
//! Ingresses by their `nginx.org/policies` annotation (or to VirtualServers by
//! `spec.policies`, which stays the user's to edit).

use super::{
    list_annotations, list_of, split_comma_list, ExistingState, NamespacedName, ObjectRef, Slot,
    SlotKind, TargetError, TargetSettings,
};
use crate::block::merge::Blocklist;
use serde_json::{json, Value};

pub const API_VERSION: &str = "k8s.nginx.org/v1";
pub const POLICIES_ANNOTATION: &str = "nginx.org/policies";

fn policy(settings: &TargetSettings) -> NamespacedName {
    NamespacedName {
        namespace: settings.namespace.clone(),
        name: format!("ingress-tap-{}", settings.name),
    }
}

pub fn slot(settings: &TargetSettings) -> Slot {
    Slot {
        object: ObjectRef::namespaced(API_VERSION, "Policy", &policy(settings)),
        kind: SlotKind::NginxIncPolicy,
    }
}

pub fn attachments(settings: &TargetSettings) -> Vec<ObjectRef> {
    settings
        .ingresses
        .iter()
        .map(|ingress| ObjectRef::namespaced("networking.k8s.io/v1", "Ingress", ingress))
        .collect()
}

/// The annotation's policy references: `name` from the Ingress's own namespace, or
/// `namespace/name` elsewhere.
fn policy_reference(policy: &NamespacedName, ingress: &ObjectRef) -> String {
    if ingress.namespace.as_deref() == Some(policy.namespace.as_str()) {
        policy.name.clone()
    } else {
        policy.to_string()
    }
}

pub fn render(
    settings: &TargetSettings,
    lists: &[(Slot, Blocklist)],
    existing: &ExistingState,
) -> Result<Vec<Value>, TargetError> {
    let list = list_of(lists, SlotKind::NginxIncPolicy);
    let policy = policy(settings);
    let mut objects = vec![json!({
        "apiVersion": API_VERSION,
        "kind": "Policy",
        "metadata": {
            "name": policy.name,
            "namespace": policy.namespace,
            "annotations": list_annotations(&list)?,
        },
        "spec": { "accessControl": { "deny": list.cidrs() } },
    })];
    for ingress in attachments(settings) {
        // The annotation may already name other policies: keep them, add ours once.
        let mut references = existing
            .objects
            .get(&ingress)
            .and_then(|object| object.pointer("/metadata/annotations"))
            .and_then(|annotations| annotations.get(POLICIES_ANNOTATION))
            .and_then(Value::as_str)
            .map(split_comma_list)
            .unwrap_or_default();
        let ours = policy_reference(&policy, &ingress);
        if !references.contains(&ours) {
            references.push(ours);
        }
        objects.push(json!({
            "apiVersion": ingress.api_version,
            "kind": ingress.kind,
            "metadata": {
                "name": ingress.name,
                "namespace": ingress.namespace,
                "annotations": { POLICIES_ANNOTATION: references.join(",") },
            },
        }));
    }
    Ok(objects)
}
