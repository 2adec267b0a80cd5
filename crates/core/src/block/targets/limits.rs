//! The API server's size limits, checked on an object as it will be stored, so that no object
//! this tool writes or prints is one the API server would refuse.
//!
//! Each limit is the one kube-apiserver (1.20 and later) enforces, and tests/block_limits.rs
//! shows each against a real API server with objects just under and just over it:
//!
//! - all annotations together, keys and values: 262,144 bytes (`TotalAnnotationSizeLimitB`,
//!   checked for every kind, custom resources included). The list is stored twice on an
//!   object that carries it in an annotation (the list and its expiries), and both count;
//! - a ConfigMap's data values together: 1 MiB (`ValidateConfigMap`);
//! - the whole object: etcd refuses a request over 1.5 MiB (`--max-request-bytes`), and the
//!   request holds the stored object (JSON for custom resources, protobuf, smaller, for built-in
//!   kinds) with its key and the fields the API server adds on storing (uid, timestamps, its
//!   managedFields entry). The object's JSON is counted with [`OBJECT_HEADROOM`] added.

use super::TargetKind;
use serde_json::Value;
use std::fmt;

/// `TotalAnnotationSizeLimitB`: the sum of every annotation's key and value lengths.
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// `core.MaxSecretSize`, which `ValidateConfigMap` holds `data` and `binaryData` to.
pub const MAX_CONFIGMAP_DATA_BYTES: usize = 1024 * 1024;

/// etcd's default `--max-request-bytes`.
pub const ETCD_REQUEST_BYTES: usize = 1536 * 1024;

/// What the API server and etcd add to an object's JSON as this tool renders it: the etcd key
/// and request framing, uid, creationTimestamp, generation, resourceVersion and the
/// managedFields entry of a server-side apply.
pub const OBJECT_HEADROOM: usize = 16 * 1024;

/// Which limit an object breaks, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Annotations { bytes: usize },
    ConfigMapData { bytes: usize },
    Object { bytes: usize },
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Annotations { bytes } => write!(
                f,
                "its annotations would total {bytes} bytes (keys and values, the list's expiries \
                 and every other annotation), over the API server's limit of \
                 {MAX_ANNOTATION_BYTES}"
            ),
            Self::ConfigMapData { bytes } => write!(
                f,
                "its data would total {bytes} bytes, over the API server's limit of \
                 {MAX_CONFIGMAP_DATA_BYTES} for a ConfigMap"
            ),
            Self::Object { bytes } => write!(
                f,
                "it would take {bytes} bytes as JSON, and with {OBJECT_HEADROOM} bytes for what \
                 the API server adds that is over etcd's request limit of {ETCD_REQUEST_BYTES}"
            ),
        }
    }
}

/// What to do instead, per target.
pub fn advice(target: TargetKind) -> &'static str {
    match target {
        TargetKind::Calico => {
            "Remove or --prune entries, block wider networks instead of many single addresses, \
             or keep part of the list under another --name"
        }
        _ => {
            "Remove or --prune entries, block wider networks instead of many single addresses, \
             or use --target nftables on the firewall, which has no such limit"
        }
    }
}

/// Sum of the lengths of every annotation's key and value, as the API server counts them.
pub fn annotation_bytes(object: &Value) -> usize {
    object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|annotations| {
            annotations
                .iter()
                .map(|(key, value)| key.len() + value.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0)
}

fn configmap_data_bytes(object: &Value) -> usize {
    let strings = |field: &str| {
        object
            .get(field)
            .and_then(Value::as_object)
            .map(|data| {
                data.values()
                    .map(|value| value.as_str().map_or(0, str::len))
                    .sum::<usize>()
            })
            .unwrap_or(0)
    };
    // binaryData is base64 on the wire; the limit counts decoded bytes.
    strings("data") + strings("binaryData") / 4 * 3
}

/// `Err` naming the first limit `object` breaks as the API server would store it.
pub fn check(object: &Value) -> Result<(), Exceeded> {
    let annotations = annotation_bytes(object);
    if annotations > MAX_ANNOTATION_BYTES {
        return Err(Exceeded::Annotations { bytes: annotations });
    }
    if object.get("kind").and_then(Value::as_str) == Some("ConfigMap")
        && object.get("apiVersion").and_then(Value::as_str) == Some("v1")
    {
        let data = configmap_data_bytes(object);
        if data > MAX_CONFIGMAP_DATA_BYTES {
            return Err(Exceeded::ConfigMapData { bytes: data });
        }
    }
    let bytes = serde_json::to_vec(object).map_or(usize::MAX, |json| json.len());
    if bytes.saturating_add(OBJECT_HEADROOM) > ETCD_REQUEST_BYTES {
        return Err(Exceeded::Object { bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotations_count_keys_and_values_of_all() {
        let object = json!({"metadata": {"annotations": {"ab": "cde", "f": ""}}});
        assert_eq!(annotation_bytes(&object), 6);
        let at_limit =
            json!({"metadata": {"annotations": {"k": "x".repeat(MAX_ANNOTATION_BYTES - 1)}}});
        assert_eq!(check(&at_limit), Ok(()));
        let over = json!({"metadata": {"annotations": {"k": "x".repeat(MAX_ANNOTATION_BYTES)}}});
        assert_eq!(
            check(&over),
            Err(Exceeded::Annotations {
                bytes: MAX_ANNOTATION_BYTES + 1
            })
        );
    }

    #[test]
    fn configmap_data_and_whole_objects_are_bounded() {
        let configmap = |bytes: usize| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "data": {"a": "x".repeat(bytes - 1), "b": "y"}})
        };
        assert_eq!(check(&configmap(MAX_CONFIGMAP_DATA_BYTES)), Ok(()));
        assert_eq!(
            check(&configmap(MAX_CONFIGMAP_DATA_BYTES + 1)),
            Err(Exceeded::ConfigMapData {
                bytes: MAX_CONFIGMAP_DATA_BYTES + 1
            })
        );
        let big =
            json!({"kind": "GlobalNetworkSet", "spec": {"nets": ["x".repeat(ETCD_REQUEST_BYTES)]}});
        assert!(matches!(check(&big), Err(Exceeded::Object { .. })));
    }
}
