//! The cluster side of `--apply`: reads the objects a run merges into and writes the result
//! with server-side apply under the field manager `ingress-tap`.
//!
//! Server-side apply makes this tool own exactly the fields it writes (the list, its expiries
//! annotation, its policy) and nothing else of a shared object such as the controller
//! ConfigMap; a field another manager owns is a conflict unless `--force-conflicts`. Objects
//! whose desired fields already hold those values are not sent at all, so a re-run with
//! nothing new leaves every object (and its resourceVersion) untouched.

use ingress_tap_core::block::targets::{ExistingState, ObjectRef};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::Value;
use std::collections::BTreeMap;

pub const FIELD_MANAGER: &str = "ingress-tap";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("ingress-tap does not know how to address {0} in the API")]
    UnknownKind(String),
    #[error("the object has no apiVersion, kind or metadata.name: {0}")]
    Unidentified(String),
    #[error("cannot read {object}: {source}")]
    Read {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply {object}: {source}")]
    Write {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object} came back in an unexpected shape: {source}")]
    Shape {
        object: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{object}: {field} is still set after the apply: another field manager owns it too, so leaving it out did not remove it; pass --force-conflicts to remove it")]
    StillSet { object: String, field: String },
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its fields already had the desired values: nothing was sent.
    Unchanged,
    Applied,
    /// Sent with dryRun=All: validated and admitted, not persisted.
    DryRun,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ApplySettings {
    pub dry_run: bool,
    pub force_conflicts: bool,
}

/// Plural resource names of the kinds this tool writes.
fn plural(reference: &ObjectRef) -> Option<&'static str> {
    let plural = match (reference.api_version.as_str(), reference.kind.as_str()) {
        ("v1", "ConfigMap") => "configmaps",
        ("networking.k8s.io/v1", "Ingress") => "ingresses",
        ("projectcalico.org/v3", "GlobalNetworkSet") => "globalnetworksets",
        ("projectcalico.org/v3", "GlobalNetworkPolicy") => "globalnetworkpolicies",
        ("projectcalico.org/v3", "Tier") => "tiers",
        ("k8s.nginx.org/v1", "Policy") => "policies",
        _ => return None,
    };
    Some(plural)
}

fn api_for(client: &Client, reference: &ObjectRef) -> Result<Api<DynamicObject>, ApplyError> {
    let plural = plural(reference).ok_or_else(|| ApplyError::UnknownKind(reference.to_string()))?;
    let (group, version) = match reference.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", reference.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &reference.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    Ok(match &reference.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    })
}

/// Reads every object in `references` that exists; absent ones are simply not in the result.
pub async fn read_existing(
    client: &Client,
    references: &[ObjectRef],
) -> Result<ExistingState, ApplyError> {
    let mut objects = BTreeMap::new();
    for reference in references {
        let api = api_for(client, reference)?;
        let found = api
            .get_opt(&reference.name)
            .await
            .map_err(|source| ApplyError::Read {
                object: reference.to_string(),
                source,
            })?;
        if let Some(object) = found {
            let value = serde_json::to_value(&object).map_err(|source| ApplyError::Shape {
                object: reference.to_string(),
                source,
            })?;
            objects.insert(reference.clone(), value);
        }
    }
    Ok(ExistingState {
        objects,
        nftables: None,
    })
}

/// Whether every field of `desired` has the same value in `actual` (lists compared whole, as
/// server-side apply treats them atomically for these fields).
pub fn holds(actual: &Value, desired: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(wanted), Value::Object(present)) => wanted.iter().all(|(key, value)| {
            present
                .get(key)
                .is_some_and(|actual_value| holds(actual_value, value))
                // An empty map or list asked for is satisfied by its absence.
                || (present.get(key).is_none() && is_empty(value))
        }),
        _ => desired == actual,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.values().all(is_empty),
        Value::Array(items) => items.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Whether `current` holds one of `owned` that `desired` leaves out: then the object must be
/// sent although every desired field already holds, for the field to go.
fn must_remove<'a>(
    current: &Value,
    desired: &Value,
    owned: &'a [String],
) -> impl Iterator<Item = &'a String> {
    let stale: Vec<&String> = owned
        .iter()
        .filter(|field| current.pointer(field).is_some() && desired.pointer(field).is_none())
        .collect();
    stale.into_iter()
}

/// Sets the field at JSON pointer `pointer` of a merge patch to null (delete).
fn set_null(patch: &mut Value, pointer: &str) {
    let keys: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|key| key.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut node = patch;
    for (index, key) in keys.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = node else { return };
        if index + 1 == keys.len() {
            map.insert(key.clone(), Value::Null);
            return;
        }
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

/// Applies `objects` in order (tiers before their policies, sets before policies naming them).
/// `owned` lists, per object, the fields this tool owns that an object may leave out; such a
/// field still on the stored object is removed.
pub async fn apply_objects(
    client: &Client,
    objects: &[Value],
    existing: &ExistingState,
    owned: &BTreeMap<ObjectRef, Vec<String>>,
    settings: ApplySettings,
) -> Result<Vec<(ObjectRef, Outcome)>, ApplyError> {
    let mut outcomes = Vec::with_capacity(objects.len());
    for object in objects {
        let reference =
            ObjectRef::of(object).ok_or_else(|| ApplyError::Unidentified(object.to_string()))?;
        let api = api_for(client, &reference)?;
        let current = match existing.objects.get(&reference) {
            Some(current) => Some(current.clone()),
            None => api
                .get_opt(&reference.name)
                .await
                .map_err(|source| ApplyError::Read {
                    object: reference.to_string(),
                    source,
                })?
                .map(serde_json::to_value)
                .transpose()
                .map_err(|source| ApplyError::Shape {
                    object: reference.to_string(),
                    source,
                })?,
        };
        let owned_here = owned.get(&reference).map(Vec::as_slice).unwrap_or(&[]);
        if current.as_ref().is_some_and(|current| {
            holds(current, object) && must_remove(current, object, owned_here).next().is_none()
        }) {
            outcomes.push((reference, Outcome::Unchanged));
            continue;
        }
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if settings.force_conflicts {
            params = params.force();
        }
        if settings.dry_run {
            params = params.dry_run();
        }
        let applied = api
            .patch(&reference.name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| ApplyError::Write {
                object: reference.to_string(),
                source,
            })?;
        let applied = serde_json::to_value(&applied).map_err(|source| ApplyError::Shape {
            object: reference.to_string(),
            source,
        })?;
        let stale: Vec<String> = must_remove(&applied, object, owned_here).cloned().collect();
        if let Some(field) = stale.first() {
            if !settings.force_conflicts {
                return Err(ApplyError::StillSet {
                    object: reference.to_string(),
                    field: field.clone(),
                });
            }
            // A merge patch setting each field to null, made conditional on the
            // resourceVersion just seen: a concurrent writer's newer value is never removed
            // unseen (the API server answers 409 instead).
            let mut patch = serde_json::json!({
                "metadata": {"resourceVersion": applied.pointer("/metadata/resourceVersion")},
            });
            for field in &stale {
                set_null(&mut patch, field);
            }
            let mut params = PatchParams::default();
            if settings.dry_run {
                params = params.dry_run();
            }
            api.patch(&reference.name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|source| ApplyError::Write {
                    object: reference.to_string(),
                    source,
                })?;
        }
        let outcome = if settings.dry_run {
            Outcome::DryRun
        } else {
            Outcome::Applied
        };
        outcomes.push((reference, outcome));
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn holds_compares_only_desired_fields() {
        let actual = json!({
            "metadata": {"name": "x", "resourceVersion": "7", "annotations": {"a": "1", "b": "2"}},
            "data": {"block-cidrs": "203.0.113.0/24", "other": "kept"}
        });
        assert!(holds(
            &actual,
            &json!({"metadata": {"name": "x", "annotations": {"a": "1"}}, "data": {"block-cidrs": "203.0.113.0/24"}})
        ));
        assert!(!holds(
            &actual,
            &json!({"data": {"block-cidrs": "203.0.113.0/24,198.51.100.7/32"}})
        ));
        assert!(holds(&actual, &json!({"metadata": {"labels": {}}})));
        assert!(!holds(
            &json!({"spec": {"nets": ["a"]}}),
            &json!({"spec": {"nets": []}})
        ));
        assert!(holds(&json!({"spec": {}}), &json!({"spec": {"nets": []}})));
    }
}
