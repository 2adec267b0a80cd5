//! RFC 6902 `add` operations against the pod exactly as it was received.
//!
//! The patch is built against the raw JSON, not the typed pod: the raw object may carry fields
//! the typed model does not know, and the API server applies the patch to the raw object.
//! Only what is added is written (no diff of whole arrays), so the patch stays small and its
//! cost does not grow with the size of the pod. Missing parents are created empty first,
//! because RFC 6902 `add` fails on a path whose parent is absent.

use std::collections::HashSet;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::Value;

/// The raw object cannot hold what the engine needs to add at a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer} holds {found}, expected {expected}")]
pub struct PatchShapeError {
    /// Encoded JSON pointer of the offending node.
    pub pointer: String,
    /// JSON type found there.
    pub found: &'static str,
    /// JSON type needed there.
    pub expected: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Object,
    Array,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Object => "an object",
            Shape::Array => "an array",
        }
    }

    fn empty(self) -> Value {
        match self {
            Shape::Object => Value::Object(serde_json::Map::new()),
            Shape::Array => Value::Array(Vec::new()),
        }
    }

    fn matches(self, value: &Value) -> bool {
        match self {
            Shape::Object => value.is_object(),
            Shape::Array => value.is_array(),
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects `add` operations relative to `document`'s root.
pub(crate) struct PatchBuilder<'doc> {
    document: &'doc Value,
    /// Encoded pointers of containers this patch creates; the document itself never changes.
    created: HashSet<String>,
    operations: Vec<PatchOperation>,
}

impl<'doc> PatchBuilder<'doc> {
    pub(crate) fn new(document: &'doc Value) -> Self {
        PatchBuilder {
            document,
            created: HashSet::new(),
            operations: Vec::new(),
        }
    }

    /// Appends `value` to the array at `path` (unescaped tokens), creating the array and any
    /// missing parent objects first.
    pub(crate) fn append(&mut self, path: &[&str], value: Value) -> Result<(), PatchShapeError> {
        let array = self.ensure(path, Shape::Array)?;
        self.push_add(array.with_trailing_token("-"), value);
        Ok(())
    }

    /// Adds member `key` to the object at `path`, creating the object and any missing parents
    /// first. The caller guarantees `key` is absent (an `add` on a present key would replace it).
    pub(crate) fn insert(
        &mut self,
        path: &[&str],
        key: &str,
        value: Value,
    ) -> Result<(), PatchShapeError> {
        let object = self.ensure(path, Shape::Object)?;
        self.push_add(object.with_trailing_token(key), value);
        Ok(())
    }

    pub(crate) fn finish(self) -> Patch {
        Patch(self.operations)
    }

    fn push_add(&mut self, path: PointerBuf, value: Value) {
        self.operations
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Walks `path` through the document; the first absent (or null) node and everything below
    /// it are added empty. Intermediate nodes may be objects or arrays (indexed by number);
    /// the last one must have `shape`.
    fn ensure(&mut self, path: &[&str], shape: Shape) -> Result<PointerBuf, PatchShapeError> {
        let mut pointer = PointerBuf::root();
        let mut node = Some(self.document);
        for (depth, token) in path.iter().enumerate() {
            let is_last = depth + 1 == path.len();
            pointer.push_back(*token);
            let parent = node;
            node = parent.and_then(|parent| child(parent, token));
            if node.is_none() && parent.is_some_and(Value::is_array) {
                return Err(PatchShapeError {
                    pointer: pointer.as_str().to_owned(),
                    found: "nothing",
                    expected: "an existing array element",
                });
            }
            match node {
                Some(Value::Null) | None => {
                    node = None;
                    if self.created.insert(pointer.as_str().to_owned()) {
                        let needed = if is_last { shape } else { Shape::Object };
                        self.push_add(pointer.clone(), needed.empty());
                    }
                }
                Some(existing) => {
                    let needed_ok = if is_last {
                        shape.matches(existing)
                    } else {
                        existing.is_object() || existing.is_array()
                    };
                    if !needed_ok {
                        return Err(PatchShapeError {
                            pointer: pointer.as_str().to_owned(),
                            found: type_name(existing),
                            expected: if is_last {
                                shape.name()
                            } else {
                                "an object or an array"
                            },
                        });
                    }
                }
            }
        }
        Ok(pointer)
    }
}

fn child<'v>(parent: &'v Value, token: &str) -> Option<&'v Value> {
    match parent {
        Value::Object(members) => members.get(token),
        Value::Array(items) => token
            .parse::<usize>()
            .ok()
            .and_then(|index| items.get(index)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(patch: &Patch) -> Vec<String> {
        patch
            .0
            .iter()
            .map(|operation| operation.path().as_str().to_owned())
            .collect()
    }

    #[test]
    fn escapes_tilde_and_slash_in_keys() {
        let document = json!({"metadata": {"annotations": {}}});
        let mut builder = PatchBuilder::new(&document);
        builder
            .insert(
                &["metadata", "annotations"],
                "ingress-tap/status",
                json!("x"),
            )
            .unwrap();
        builder
            .insert(&["metadata", "annotations"], "a~b/c", json!("y"))
            .unwrap();
        let patch = builder.finish();
        assert_eq!(
            paths(&patch),
            [
                "/metadata/annotations/ingress-tap~1status",
                "/metadata/annotations/a~0b~1c"
            ]
        );
        let mut patched = document.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(
            patched,
            json!({"metadata": {"annotations": {"ingress-tap/status": "x", "a~b/c": "y"}}})
        );
    }

    #[test]
    fn creates_missing_parents_once_and_first() {
        let document = json!({"spec": {"containers": []}});
        let mut builder = PatchBuilder::new(&document);
        builder
            .append(&["spec", "volumes"], json!({"name": "a"}))
            .unwrap();
        builder
            .append(&["spec", "volumes"], json!({"name": "b"}))
            .unwrap();
        builder
            .insert(&["metadata", "annotations"], "k", json!("v"))
            .unwrap();
        let patch = builder.finish();
        assert_eq!(
            paths(&patch),
            [
                "/spec/volumes",
                "/spec/volumes/-",
                "/spec/volumes/-",
                "/metadata",
                "/metadata/annotations",
                "/metadata/annotations/k"
            ]
        );
        let mut patched = document.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(
            patched,
            json!({
                "spec": {"containers": [], "volumes": [{"name": "a"}, {"name": "b"}]},
                "metadata": {"annotations": {"k": "v"}}
            })
        );
    }

    #[test]
    fn null_parents_are_replaced_and_existing_arrays_appended() {
        let document = json!({"spec": {"volumes": null, "containers": [{"name": "c"}]}});
        let mut builder = PatchBuilder::new(&document);
        builder
            .append(&["spec", "volumes"], json!({"name": "a"}))
            .unwrap();
        builder
            .append(
                &["spec", "containers", "0", "volumeMounts"],
                json!({"name": "a"}),
            )
            .unwrap();
        builder
            .append(&["spec", "containers"], json!({"name": "d"}))
            .unwrap();
        let patch = builder.finish();
        assert_eq!(
            paths(&patch),
            [
                "/spec/volumes",
                "/spec/volumes/-",
                "/spec/containers/0/volumeMounts",
                "/spec/containers/0/volumeMounts/-",
                "/spec/containers/-"
            ]
        );
        let mut patched = document.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched["spec"]["volumes"], json!([{"name": "a"}]));
        assert_eq!(patched["spec"]["containers"][1], json!({"name": "d"}));
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        let document = json!({"spec": {"volumes": "nope", "containers": 3}});
        let mut builder = PatchBuilder::new(&document);
        let error = builder.append(&["spec", "volumes"], json!({})).unwrap_err();
        assert_eq!(error.pointer, "/spec/volumes");
        assert_eq!(error.found, "a string");
        let error = builder
            .append(&["spec", "containers", "0", "volumeMounts"], json!({}))
            .unwrap_err();
        assert_eq!(error.pointer, "/spec/containers");
        let document = json!({"spec": {"containers": [{"name": "c"}]}});
        let mut builder = PatchBuilder::new(&document);
        let error = builder
            .append(&["spec", "containers", "1", "volumeMounts"], json!({}))
            .unwrap_err();
        assert_eq!(error.pointer, "/spec/containers/1");
    }
}
