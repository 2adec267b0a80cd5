//! Enforcement objects, one module per platform. Each turns merged blocklists into the objects
//! (or nftables text) of its platform and reads a blocklist back from what it wrote, so that
//! the next run merges into it.

pub mod calico;
pub mod ingress_nginx;
pub mod limits;
pub mod nftables;
pub mod nginx_inc;
pub mod openshift;

use super::merge::{Blocklist, MergeError, EXPIRIES_ANNOTATION};
use jiff::Timestamp;
use serde::Deserialize as _;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Where the blocks are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TargetKind {
    /// GlobalNetworkSet + GlobalNetworkPolicy (addresses seen as the connection's source).
    Calico,
    /// ingress-nginx: the controller ConfigMap's block-cidrs, or an Ingress annotation.
    IngressNginx,
    /// NGINX Inc's controller: a Policy with accessControl.deny.
    NginxInc,
    /// OpenShift router: no denylist exists; explains the alternatives.
    Openshift,
    /// nftables sets with per-element timeouts, for the firewall in front of the cluster.
    Nftables,
}

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for NamespacedName {
    type Err = String;

    /// The namespace must be a DNS-1123 label and the name a DNS-1123 subdomain, as the API
    /// server demands of ConfigMaps and Ingresses: a name it would refuse is refused here,
    /// before anything is read or written.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('/') {
            Some((namespace, name))
                if crate::block::is_dns_label(namespace)
                    && crate::block::is_dns_subdomain(name) =>
            {
                Ok(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!(
                "{:?} is not NAMESPACE/NAME (a namespace of 1-63 lower-case letters, digits and \
                 inner dashes; a name of such labels joined by dots, at most 253 bytes)",
                crate::block::escape(text)
            )),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Identifies one Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn cluster(api_version: &str, kind: &str, name: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: None,
            name: name.to_owned(),
        }
    }

    pub fn namespaced(api_version: &str, kind: &str, object: &NamespacedName) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: Some(object.namespace.clone()),
            name: object.name.clone(),
        }
    }

    /// The reference of a parsed object, when it has the fields that make one.
    pub fn of(object: &Value) -> Option<Self> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
        Some(Self {
            api_version: text("/apiVersion")?.to_owned(),
            kind: text("/kind")?.to_owned(),
            namespace: text("/metadata/namespace").map(str::to_owned),
            name: text("/metadata/name")?.to_owned(),
        })
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {}/{}", self.kind, namespace, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Calico settings; see docs/block.md for the two variants.
#[derive(Debug, Clone, PartialEq)]
pub struct CalicoSettings {
    /// Endpoints the deny applies to; `None` means all workloads (or all host endpoints).
    pub selector: Option<String>,
    pub order: f64,
    pub tier: String,
    pub tier_order: f64,
    /// Deny at the nodes' host endpoints before DNAT instead of at the workloads.
    pub host_endpoints: bool,
}

/// Everything the renderers need besides the lists.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    pub target: TargetKind,
    /// Names the blocklist: label value, object names, nftables set names.
    pub name: String,
    pub calico: CalicoSettings,
    /// ingress-nginx controller ConfigMap (used unless `ingresses` is set).
    pub configmap: NamespacedName,
    /// ingress-nginx: Ingresses to annotate; nginx-inc: Ingresses to attach the Policy to.
    pub ingresses: Vec<NamespacedName>,
    /// Namespace of the NGINX Inc Policy.
    pub namespace: String,
    pub nft_table: String,
}

/// How a blocklist is stored in one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    CalicoNetworkSet,
    IngressNginxConfigMap,
    IngressNginxAnnotation,
    NginxIncPolicy,
    NftablesSets,
}

/// One object holding one blocklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub object: ObjectRef,
    pub kind: SlotKind,
}

/// A blocklist as an object holds it, before merging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredList {
    pub nets: Vec<String>,
    pub expiries: Option<String>,
}

/// What the previous run left: objects read from the cluster or from `--existing`, or the
/// nftables text it printed.
#[derive(Debug, Clone, Default)]
pub struct ExistingState {
    pub objects: BTreeMap<ObjectRef, Value>,
    pub nftables: Option<String>,
}

impl ExistingState {
    /// Reads previously printed output: YAML documents, or nftables text.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        if nftables::looks_like_nftables(text) {
            return Ok(Self {
                objects: BTreeMap::new(),
                nftables: Some(text.to_owned()),
            });
        }
        let mut objects = BTreeMap::new();
        for document in serde_norway::Deserializer::from_str(text) {
            let value = Value::deserialize(document)
                .map_err(|error| TargetError::Existing(error.to_string()))?;
            if value.is_null() {
                continue;
            }
            let reference = ObjectRef::of(&value).ok_or_else(|| {
                TargetError::Existing(
                    "a document lacks apiVersion, kind or metadata.name".to_owned(),
                )
            })?;
            objects.insert(reference, value);
        }
        Ok(Self {
            objects,
            nftables: None,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot read the existing objects: {}", crate::block::escape(.0))]
    Existing(String),
    #[error("{object}: {message}")]
    StoredShape { object: String, message: String },
    #[error("refused: {object} would not fit: {limit}; nothing was written. {advice}")]
    TooLarge {
        object: String,
        limit: limits::Exceeded,
        advice: &'static str,
    },
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// The objects holding blocklists for `settings`, in output order.
pub fn slots(settings: &TargetSettings) -> Result<Vec<Slot>, TargetError> {
    match settings.target {
        TargetKind::Calico => Ok(vec![calico::slot(settings)]),
        TargetKind::IngressNginx => Ok(ingress_nginx::slots(settings)),
        TargetKind::NginxInc => Ok(vec![nginx_inc::slot(settings)]),
        TargetKind::Nftables => Ok(vec![nftables::slot(settings)]),
        TargetKind::Openshift => Err(TargetError::Unsupported(openshift::EXPLANATION.to_owned())),
    }
}

/// Every object a run reads before merging: the slots and the objects it patches.
pub fn objects_to_read(settings: &TargetSettings) -> Result<Vec<ObjectRef>, TargetError> {
    let mut objects: Vec<ObjectRef> = slots(settings)?
        .into_iter()
        .filter(|slot| slot.kind != SlotKind::NftablesSets)
        .map(|slot| slot.object)
        .collect();
    if settings.target == TargetKind::NginxInc {
        objects.extend(nginx_inc::attachments(settings));
    }
    Ok(objects)
}

/// The blocklist `slot` holds in `existing`, empty when the object does not exist yet.
pub fn read_stored(slot: &Slot, existing: &ExistingState) -> Result<StoredList, TargetError> {
    if slot.kind == SlotKind::NftablesSets {
        return match &existing.nftables {
            Some(text) => nftables::read_stored(text),
            None => Ok(StoredList::default()),
        };
    }
    let Some(object) = existing.objects.get(&slot.object) else {
        return Ok(StoredList::default());
    };
    let shape_error = |message: &str| TargetError::StoredShape {
        object: slot.object.to_string(),
        message: message.to_owned(),
    };
    let nets = match slot.kind {
        SlotKind::CalicoNetworkSet => string_list(object.pointer("/spec/nets"))
            .ok_or_else(|| shape_error("spec.nets is not a list of strings"))?,
        SlotKind::NginxIncPolicy => string_list(object.pointer("/spec/accessControl/deny"))
            .ok_or_else(|| shape_error("spec.accessControl.deny is not a list of strings"))?,
        SlotKind::IngressNginxConfigMap => {
            comma_list(object.pointer(&format!("/data/{}", ingress_nginx::BLOCK_CIDRS_KEY)))
                .ok_or_else(|| shape_error("data.block-cidrs is not a string"))?
        }
        SlotKind::IngressNginxAnnotation => {
            comma_list(annotation(object, ingress_nginx::DENYLIST_ANNOTATION))
                .ok_or_else(|| shape_error("the denylist annotation is not a string"))?
        }
        SlotKind::NftablesSets => Vec::new(),
    };
    let expiries = annotation(object, EXPIRIES_ANNOTATION)
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(StoredList { nets, expiries })
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a Value> {
    object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .and_then(|annotations| annotations.get(key))
}

/// A missing list is an empty one; a list of something else is `None`.
fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

fn comma_list(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(text)) => Some(split_comma_list(text)),
        Some(_) => None,
    }
}

/// `a, b,,c` → `[a, b, c]`: the comma lists nginx annotations and ConfigMap keys use.
pub fn split_comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The rendered result: Kubernetes objects, or nftables text.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    Objects(Vec<Value>),
    Nftables(String),
}

/// Renders the merged lists (in [`slots`] order) and the objects that go with them.
pub fn render(
    settings: &TargetSettings,
    lists: &[(Slot, Blocklist)],
    existing: &ExistingState,
    now: Timestamp,
) -> Result<Rendered, TargetError> {
    match settings.target {
        TargetKind::Calico => Ok(Rendered::Objects(calico::render(settings, lists)?)),
        TargetKind::IngressNginx => Ok(Rendered::Objects(ingress_nginx::render(lists)?)),
        TargetKind::NginxInc => Ok(Rendered::Objects(nginx_inc::render(
            settings, lists, existing,
        )?)),
        TargetKind::Nftables => Ok(Rendered::Nftables(nftables::render_at(
            settings, lists, now,
        )?)),
        TargetKind::Openshift => Err(TargetError::Unsupported(openshift::EXPLANATION.to_owned())),
    }
}

/// JSON pointer of an annotation key.
fn annotation_pointer(key: &str) -> String {
    format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

/// Per object this target writes, the fields it owns that a render may leave out: written
/// when the list has entries, absent when it is empty. An absent owned field must go from the
/// stored object (an empty `denylist-source-range` makes ingress-nginx answer 503), so
/// `--apply` sends the object whenever one of them is still there, and the printed object
/// drops it.
pub fn owned_optional_fields(
    settings: &TargetSettings,
) -> Result<BTreeMap<ObjectRef, Vec<String>>, TargetError> {
    let mut owned = BTreeMap::new();
    for slot in slots(settings)? {
        let mut fields = vec![annotation_pointer(EXPIRIES_ANNOTATION)];
        match slot.kind {
            SlotKind::IngressNginxConfigMap => {
                fields.push(format!("/data/{}", ingress_nginx::BLOCK_CIDRS_KEY));
            }
            SlotKind::IngressNginxAnnotation => {
                fields.push(annotation_pointer(ingress_nginx::DENYLIST_ANNOTATION));
            }
            SlotKind::NftablesSets => continue,
            SlotKind::CalicoNetworkSet | SlotKind::NginxIncPolicy => {}
        }
        owned.insert(slot.object, fields);
    }
    Ok(owned)
}

/// `ours` laid over `base`: maps merge key by key, anything else is replaced.
fn overlay(base: &mut Value, ours: &Value) {
    match (base, ours) {
        (Value::Object(base), Value::Object(ours)) => {
            for (key, value) in ours {
                match base.get_mut(key) {
                    Some(present) => overlay(present, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, ours) => *base = ours.clone(),
    }
}

/// Removes the value at `pointer`, if any.
fn remove_pointer(object: &mut Value, pointer: &str) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = key.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(map)) = object.pointer_mut(parent) {
        map.remove(&key);
    }
}

/// The objects as they will be stored: each rendered object laid over the previous one, so
/// that labels, annotations and fields others wrote stay as they were, and owned fields the
/// render left out are removed. Every object is checked against the API server's limits
/// here, on what it will store.
pub fn complete(
    settings: &TargetSettings,
    rendered: &Rendered,
    existing: &ExistingState,
) -> Result<Rendered, TargetError> {
    let objects = match rendered {
        Rendered::Nftables(text) => return Ok(Rendered::Nftables(text.clone())),
        Rendered::Objects(objects) => objects,
    };
    let owned = owned_optional_fields(settings)?;
    let mut completed = Vec::with_capacity(objects.len());
    for object in objects {
        let reference = ObjectRef::of(object);
        let mut whole = match reference.as_ref().and_then(|r| existing.objects.get(r)) {
            Some(previous) => {
                let mut whole = previous.clone();
                overlay(&mut whole, object);
                whole
            }
            None => object.clone(),
        };
        if let Some(fields) = reference.as_ref().and_then(|r| owned.get(r)) {
            for field in fields {
                if object.pointer(field).is_none() {
                    remove_pointer(&mut whole, field);
                }
            }
        }
        if let Some(reference) = &reference {
            limits::check(&whole).map_err(|limit| TargetError::TooLarge {
                object: reference.to_string(),
                limit,
                advice: limits::advice(settings.target),
            })?;
        }
        completed.push(whole);
    }
    Ok(Rendered::Objects(completed))
}

/// `metadata.annotations` for a list object: the expiries when anything is managed.
fn list_annotations(list: &Blocklist) -> Result<serde_json::Map<String, Value>, TargetError> {
    let mut annotations = serde_json::Map::new();
    if let Some(expiries) = list.expiries_annotation()? {
        annotations.insert(EXPIRIES_ANNOTATION.to_owned(), Value::String(expiries));
    }
    Ok(annotations)
}

/// The list of `kind` among `lists`; an empty one when absent (every renderer gets its slots).
fn list_of(lists: &[(Slot, Blocklist)], kind: SlotKind) -> Blocklist {
    lists
        .iter()
        .find(|(slot, _)| slot.kind == kind)
        .map(|(_, list)| list.clone())
        .unwrap_or_default()
}
