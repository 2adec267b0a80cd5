//! RFC 6902 `add` operations against the pod exactly as it was received.
//!
//! The patch is built against the structure of the raw object, not a re-serialised typed pod:
//! the raw object may carry fields the typed model does not know, and the API server applies
//! the patch to the raw object. Only what is added is written (no diff of whole arrays), so the
//! patch stays small and its cost does not grow with the size of the pod. Missing parents are
//! created empty first, because RFC 6902 `add` fails on a path whose parent is absent.
//!
//! The builder is generic over the values it adds: the engine adds values it rendered once per
//! config (kept as text as well as trees), the tests add plain JSON trees.
//!
//! Every admission review builds a patch, so paths are written straight as encoded text into
//! one buffer sized up front: a `jsonptr::PointerBuf` grows and re-checks each token, which cost
//! more than the rest of the decision. [`Pointer::to_pointer_buf`] gives the `jsonptr` form
//! where a `json_patch::Patch` is wanted.

use json_patch::jsonptr::PointerBuf;
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

/// The JSON type of a node of the object, as far as the patch cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// No such member or element, or `null`: both are created (an `add` on a present key
    /// replaces its value).
    Absent,
    Object,
    Array,
    /// Anything else, named for the error message.
    Other(&'static str),
}

/// What the builder needs to know of the object: the JSON type at a path of unescaped tokens
/// (array elements by decimal index). The builder only asks about a path whose parent is an
/// object or an array, so the object never has to be held as a whole tree.
pub trait JsonShape {
    fn kind_at(&self, path: &[&str]) -> JsonKind;
}

/// The empty container the builder adds for a missing parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
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

    /// The empty container as a JSON tree.
    pub fn empty(self) -> Value {
        match self {
            Shape::Object => Value::Object(serde_json::Map::new()),
            Shape::Array => Value::Array(Vec::new()),
        }
    }

    /// The empty container as JSON text.
    pub fn empty_text(self) -> &'static str {
        match self {
            Shape::Object => "{}",
            Shape::Array => "[]",
        }
    }

    fn matches(self, kind: JsonKind) -> bool {
        match self {
            Shape::Object => kind == JsonKind::Object,
            Shape::Array => kind == JsonKind::Array,
        }
    }
}

/// A value the builder can add: besides what the caller gives it, it must be able to stand for
/// the empty parent containers the builder creates.
pub trait AddedValue {
    fn empty(shape: Shape) -> Self;
}

impl AddedValue for Value {
    fn empty(shape: Shape) -> Self {
        shape.empty()
    }
}

fn kind_name(kind: JsonKind) -> &'static str {
    match kind {
        JsonKind::Absent => "nothing",
        JsonKind::Object => "an object",
        JsonKind::Array => "an array",
        JsonKind::Other(name) => name,
    }
}

/// A JSON pointer (RFC 6901) as its encoded text: `/` before each token, and `~`, `/` inside a
/// token written `~0`, `~1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(String);

impl Pointer {
    /// The root (empty) pointer, with room for `capacity` bytes of tokens.
    fn with_capacity(capacity: usize) -> Self {
        Pointer(String::with_capacity(capacity))
    }

    /// Appends one unescaped token.
    fn push(&mut self, token: &str) {
        self.0.push('/');
        if token.bytes().any(|byte| byte == b'~' || byte == b'/') {
            for c in token.chars() {
                match c {
                    '~' => self.0.push_str("~0"),
                    '/' => self.0.push_str("~1"),
                    c => self.0.push(c),
                }
            }
        } else {
            self.0.push_str(token);
        }
    }

    /// The pointer to the node at `tokens` (unescaped).
    #[cfg(test)]
    pub fn from_tokens(tokens: &[&str]) -> Self {
        let mut pointer = Pointer::with_capacity(pointer_capacity(tokens, 0));
        for token in tokens {
            pointer.push(token);
        }
        pointer
    }

    /// The encoded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same pointer as `jsonptr` models it.
    pub fn to_pointer_buf(&self) -> PointerBuf {
        // Decoding `~1` before `~0` is RFC 6901's order: `~01` stands for `~1`, not `/`.
        PointerBuf::from_tokens(
            self.0
                .split('/')
                .skip(1)
                .map(|token| token.replace("~1", "/").replace("~0", "~")),
        )
    }
}

/// The room a pointer to `path` plus one more token of `last` bytes needs.
fn pointer_capacity(path: &[&str], last: usize) -> usize {
    path.iter().map(|token| token.len() + 1).sum::<usize>() + last + 1
}

/// One `add` operation: `value` at the pointer `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct Add<V> {
    pub path: Pointer,
    pub value: V,
}

/// Collects `add` operations relative to `document`'s root.
pub struct PatchBuilder<'doc, D: JsonShape + ?Sized, V> {
    document: &'doc D,
    /// Pointers of containers this patch creates (a few at most); the document itself never
    /// changes.
    created: Vec<Pointer>,
    operations: Vec<Add<V>>,
}

impl<'doc, D: JsonShape + ?Sized, V: AddedValue> PatchBuilder<'doc, D, V> {
    pub fn new(document: &'doc D) -> Self {
        PatchBuilder {
            document,
            created: Vec::new(),
            operations: Vec::with_capacity(8),
        }
    }

    /// Appends `value` to the array at `path` (unescaped tokens), creating the array and any
    /// missing parent objects first.
    pub fn append(&mut self, path: &[&str], value: V) -> Result<(), PatchShapeError> {
        let mut array = self.ensure(path, Shape::Array, 1)?;
        array.push("-");
        self.push_add(array, value);
        Ok(())
    }

    /// Adds member `key` to the object at `path`, creating the object and any missing parents
    /// first. The caller guarantees `key` is absent (an `add` on a present key would replace it).
    pub fn insert(&mut self, path: &[&str], key: &str, value: V) -> Result<(), PatchShapeError> {
        // Room for `key` even when it needs escaping (each byte at most doubles).
        let mut object = self.ensure(path, Shape::Object, 2 * key.len())?;
        object.push(key);
        self.push_add(object, value);
        Ok(())
    }

    /// The operations, in the order they must be applied.
    pub fn finish(self) -> Vec<Add<V>> {
        self.operations
    }

    fn push_add(&mut self, path: Pointer, value: V) {
        self.operations.push(Add { path, value });
    }

    /// Walks `path` through the document; the first absent (or null) node and everything below
    /// it are added empty. Intermediate nodes may be objects or arrays (indexed by number);
    /// the last one must have `shape`. The pointer returned has room for one more token of
    /// `room` bytes.
    fn ensure(
        &mut self,
        path: &[&str],
        shape: Shape,
        room: usize,
    ) -> Result<Pointer, PatchShapeError> {
        let mut pointer = Pointer::with_capacity(pointer_capacity(path, room));
        // Below a node this patch creates, nothing exists yet.
        let mut parent = Some(self.document.kind_at(&[]));
        for (depth, token) in path.iter().enumerate() {
            let is_last = depth + 1 == path.len();
            pointer.push(token);
            let node = match parent {
                Some(JsonKind::Object | JsonKind::Array) => match path.get(..=depth) {
                    Some(prefix) => self.document.kind_at(prefix),
                    None => JsonKind::Absent,
                },
                _ => JsonKind::Absent,
            };
            if node == JsonKind::Absent && parent == Some(JsonKind::Array) {
                return Err(PatchShapeError {
                    pointer: pointer.as_str().to_owned(),
                    found: "nothing",
                    expected: "an existing array element",
                });
            }
            match node {
                JsonKind::Absent => {
                    parent = None;
                    if !self.created.contains(&pointer) {
                        self.created.push(pointer.clone());
                        let needed = if is_last { shape } else { Shape::Object };
                        self.push_add(pointer.clone(), V::empty(needed));
                    }
                }
                existing => {
                    let needed_ok = if is_last {
                        shape.matches(existing)
                    } else {
                        matches!(existing, JsonKind::Object | JsonKind::Array)
                    };
                    if !needed_ok {
                        return Err(PatchShapeError {
                            pointer: pointer.as_str().to_owned(),
                            found: kind_name(existing),
                            expected: if is_last {
                                shape.name()
                            } else {
                                "an object or an array"
                            },
                        });
                    }
                    parent = Some(existing);
                }
            }
        }
        Ok(pointer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use json_patch::{AddOperation, Patch, PatchOperation};
    use serde_json::json;

    /// A parsed tree answers for itself, node by node.
    impl JsonShape for Value {
        fn kind_at(&self, path: &[&str]) -> JsonKind {
            let mut node = self;
            for token in path {
                let child = match node {
                    Value::Object(members) => members.get(*token),
                    Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
                    _ => None,
                };
                match child {
                    Some(child) => node = child,
                    None => return JsonKind::Absent,
                }
            }
            match node {
                Value::Null => JsonKind::Absent,
                Value::Object(_) => JsonKind::Object,
                Value::Array(_) => JsonKind::Array,
                Value::Bool(_) => JsonKind::Other("a boolean"),
                Value::Number(_) => JsonKind::Other("a number"),
                Value::String(_) => JsonKind::Other("a string"),
            }
        }
    }

    /// The operations as the `json_patch` crate models them, to apply them.
    fn patch_of(operations: Vec<Add<Value>>) -> Patch {
        Patch(
            operations
                .into_iter()
                .map(|add| {
                    PatchOperation::Add(AddOperation {
                        path: add.path.to_pointer_buf(),
                        value: add.value,
                    })
                })
                .collect(),
        )
    }

    fn paths(patch: &Patch) -> Vec<String> {
        patch
            .0
            .iter()
            .map(|operation| operation.path().as_str().to_owned())
            .collect()
    }

    #[test]
    fn pointers_are_encoded_as_jsonptr_encodes_them() {
        let cases: [&[&str]; 5] = [
            &[],
            &["spec", "containers", "0", "volumeMounts", "-"],
            &["metadata", "annotations", "ingress-tap/status"],
            &["a~b/c", "~1", "~01", "/~", ""],
            &["ünïcode", "a\"b\\c"],
        ];
        for tokens in cases {
            let ours = Pointer::from_tokens(tokens);
            let theirs = PointerBuf::from_tokens(tokens.iter().copied());
            assert_eq!(ours.as_str(), theirs.as_str(), "{tokens:?}");
            assert_eq!(ours.to_pointer_buf(), theirs, "{tokens:?}");
        }
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
        let patch = patch_of(builder.finish());
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
        let patch = patch_of(builder.finish());
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
        let patch = patch_of(builder.finish());
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
