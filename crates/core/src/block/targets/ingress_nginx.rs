//! ingress-nginx: the controller ConfigMap's `block-cidrs` key, or the
//! `nginx.ingress.kubernetes.io/denylist-source-range` annotation of chosen Ingresses.
//!
//! Both become `deny` lines that nginx checks against `$remote_addr` *after* its real-IP step.
//! With the controller's defaults for `use-forwarded-headers: "true"` (trusting
//! `proxy-real-ip-cidr: 0.0.0.0/0`), any client can write the address nginx judges, and so
//! escape a block: [`TRUST_WARNING`] is printed with every run of this target.

use super::{list_annotations, ObjectRef, Slot, SlotKind, TargetError, TargetSettings};
use crate::block::merge::Blocklist;
use serde_json::{json, Value};

pub const BLOCK_CIDRS_KEY: &str = "block-cidrs";
pub const DENYLIST_ANNOTATION: &str = "nginx.ingress.kubernetes.io/denylist-source-range";

pub const TRUST_WARNING: &str = "ingress-nginx matches block-cidrs and denylist-source-range \
against the client address after its real-IP step. With use-forwarded-headers: \"true\" and \
the default proxy-real-ip-cidr (0.0.0.0/0) any client can forge X-Forwarded-For and escape the \
block. Set proxy-real-ip-cidr to the addresses of your load balancers only (and keep \
compute-full-forwarded-for off unless you need it); see docs/block.md.";

pub fn slots(settings: &TargetSettings) -> Vec<Slot> {
    if settings.ingresses.is_empty() {
        return vec![Slot {
            object: ObjectRef::namespaced("v1", "ConfigMap", &settings.configmap),
            kind: SlotKind::IngressNginxConfigMap,
        }];
    }
    settings
        .ingresses
        .iter()
        .map(|ingress| Slot {
            object: ObjectRef::namespaced("networking.k8s.io/v1", "Ingress", ingress),
            kind: SlotKind::IngressNginxAnnotation,
        })
        .collect()
}

/// Partial objects: only the fields this tool owns, as server-side apply wants them (and as
/// `kubectl apply --server-side` takes them from a GitOps repository).
///
/// An empty list leaves the key out instead of writing `""`: ingress-nginx refuses an empty
/// `denylist-source-range` and then answers 503 on every path of the Ingress, so unblocking
/// the last client would take the site down. Left out of a server-side apply by the manager
/// that owned it, the key is removed.
pub fn render(lists: &[(Slot, Blocklist)]) -> Result<Vec<Value>, TargetError> {
    let mut objects = Vec::with_capacity(lists.len());
    for (slot, list) in lists {
        let mut annotations = list_annotations(list)?;
        let value = (!list.is_empty()).then(|| list.cidrs().join(","));
        let mut metadata = json!({
            "name": slot.object.name,
            "namespace": slot.object.namespace,
        });
        let object = match slot.kind {
            SlotKind::IngressNginxAnnotation => {
                if let Some(value) = value {
                    annotations.insert(DENYLIST_ANNOTATION.to_owned(), Value::String(value));
                }
                metadata["annotations"] = Value::Object(annotations);
                json!({
                    "apiVersion": slot.object.api_version,
                    "kind": slot.object.kind,
                    "metadata": metadata,
                })
            }
            _ => {
                metadata["annotations"] = Value::Object(annotations);
                let mut object = json!({
                    "apiVersion": slot.object.api_version,
                    "kind": slot.object.kind,
                    "metadata": metadata,
                });
                if let Some(value) = value {
                    object["data"] = json!({ BLOCK_CIDRS_KEY: value });
                }
                object
            }
        };
        objects.push(object);
    }
    Ok(objects)
}

/// The `deny` lines ingress-nginx renders from `block-cidrs` into its `http` block (one per
/// entry, in list order), for checking the list's effect on a real nginx.
pub fn nginx_deny_lines(block_cidrs: &str) -> String {
    super::split_comma_list(block_cidrs)
        .iter()
        .map(|cidr| format!("deny {cidr};\n"))
        .collect()
}
