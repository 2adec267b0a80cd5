//! `decide`: one pod and the config in, a verdict and the patch out.
//!
//! The pod is read through a typed view of only what the engine looks at: metadata labels and
//! annotations, container names and volume mounts, volume names (and in full only the volumes
//! named like ours) and image pull secrets. Those parts are checked with Kubernetes' own types
//! and semantics (so a malformed field the engine relies on is refused with a precise message);
//! everything else is skipped without being built, because on the webhook's path building the
//! rest of the pod costs more than all the decisions together. The patch is written against
//! the structure of the object as received (so fields the model does not know survive). Every
//! check is a single pass over the pod's lists with hash sets, and the patch only carries what
//! is added, so the cost stays linear however many containers or env vars a pod has.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LocalObjectReference, Volume, VolumeMount};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use super::config::{paths_overlap, same_path, InjectConfig};
use super::decision::{Decision, DenyReason, SkipReason};
use super::overrides::{
    PodSettings, CONTAINER_ANNOTATION, INJECT_DISABLED, INJECT_LABEL, STATUS_ANNOTATION,
};
use super::patch::{JsonKind, JsonShape, PatchBuilder, PatchShapeError};
use super::render::{self, PatchValue, Rendered, RenderedConfig, RenderedPatch};

/// Decides what to do with one pod-shaped object (`{"metadata": …, "spec": …}`: a Pod from an
/// admission review or a workload's pod template) and builds the patch when injecting.
///
/// `pod` is the object as JSON: a parsed `&serde_json::Value`, or its text as a
/// `&serde_json::value::RawValue`. From text, the parts the engine does not read are skipped
/// without being built; both give the same decision and the same patch.
pub fn decide<'de>(pod: impl PodJson<'de>, config: &InjectConfig) -> Decision {
    match PodView::deserialize(pod) {
        Ok(view) => decide_view(&view, config).map_patch(|patch| patch.to_patch()),
        Err(error) => Decision::Deny(view_error(&error)),
    }
}

/// [`decide`] for a pod already read into a [`PodView`], with the patch as a [`RenderedPatch`]:
/// what the admission webhook uses, reading the view in the same pass as the review around it
/// and writing the patch's JSON from values rendered once per config. The decision and the
/// patch's operations are exactly those of [`decide`].
pub fn decide_view(view: &PodView, config: &InjectConfig) -> Decision<RenderedPatch> {
    render::with_rendered(config, |rendered| {
        plan(view, config, rendered).unwrap_or_else(Decision::Deny)
    })
}

/// The denial of an object that does not read as a [`PodView`], as [`decide`] words it.
pub fn view_error(error: &serde_json::Error) -> DenyReason {
    invalid_pod(format!(
        "the object does not match the pod schema: {}",
        without_position(error)
    ))
}

/// The forms [`decide`] reads a pod from: a parsed tree, or the raw text of one JSON value.
pub trait PodJson<'de>: Deserializer<'de, Error = serde_json::Error> {}

impl<'de> PodJson<'de> for &'de Value {}

impl<'de> PodJson<'de> for &'de RawValue {}

/// The error's text without serde_json's "at line L column C": the position is relative to
/// the object's own text, which the user never sees, and would make the message depend on
/// whether the pod was handed over as text or as a parsed tree.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if error.line() == 0 {
        return text;
    }
    let position = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&position).unwrap_or(&text).to_owned()
}

fn invalid_pod(problem: impl Into<String>) -> DenyReason {
    DenyReason::InvalidPod {
        problem: problem.into(),
    }
}

impl From<PatchShapeError> for DenyReason {
    fn from(error: PatchShapeError) -> Self {
        invalid_pod(error.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// The typed view of a pod
//
// Each part follows Kubernetes' own decoding (k8s-openapi's): only JSON objects are accepted
// where an object is expected, a repeated key keeps its last value, `null` is the same as
// absent, a missing name is empty, and unknown keys are ignored. The parts reused whole
// (volumes named like ours, volume mounts, pull secrets) are k8s-openapi's types.
//
// Each view is declared once, with [`object_view!`]: a field is its name, its type and the
// JSON key it is read from, and adding one is that one line.

/// Declares a view struct (with `Debug` and `Default`) and its `Deserialize` from a JSON
/// object only, in Kubernetes' way: a repeated key keeps its last value, unknown keys are
/// skipped without being built. Each field is read from `$key` with `next_value`, or with
/// `$read` (a function of the map, see [`null_as_default`] and [`present`]).
macro_rules! object_view {
    (
        $(#[$attr:meta])*
        $vis:vis struct $view:ident as $expecting:literal {
            $($(#[$field_attr:meta])* $field:ident: $ty:ty = $key:literal $(via $read:path)?),+ $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Default)]
        $vis struct $view {
            $($(#[$field_attr])* $field: $ty,)+
        }

        impl<'de> Deserialize<'de> for $view {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ViewVisitor;

                impl<'de> Visitor<'de> for ViewVisitor {
                    type Value = $view;

                    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                        formatter.write_str($expecting)
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$view, A::Error> {
                        let mut view = $view::default();
                        while let Some(key) = map.next_key_seed(KnownKey(&[$($key),+]))? {
                            match key {
                                $(Some($key) => view.$field = object_view!(@read map $($read)?),)+
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(view)
                    }
                }

                deserializer.deserialize_map(ViewVisitor)
            }
        }
    };
    (@read $map:ident) => {
        $map.next_value()?
    };
    (@read $map:ident $read:path) => {
        $read(&mut $map)?
    };
}

object_view! {
    /// What the engine reads of a pod: `metadata` and `spec` of a Pod or PodTemplateSpec, as
    /// far as the decision and the patch need them, and the pod's name for log lines.
    ///
    /// Deserialised from the pod's JSON, alone or as a part of a larger document (an admission
    /// review), so the pod is read in the same pass as the document around it. A pod whose read
    /// parts do not match Kubernetes' types does not deserialise; [`view_error`] words the
    /// denial.
    pub struct PodView as "a pod object" {
        metadata: Option<MetadataView> = "metadata",
        spec: Option<SpecView> = "spec",
    }
}

object_view! {
    struct MetadataView as "object metadata" {
        labels: Option<OurEntries> = "labels",
        annotations: Option<OurEntries> = "annotations",
        /// Kept as text and read only for log lines: any JSON value is accepted here, as when
        /// the view did not read them, and only a log line pays for decoding them. A present
        /// `null` name hides `generateName`, as in a pointer lookup.
        name: Option<Box<RawValue>> = "name" via present,
        generate_name: Option<Box<RawValue>> = "generateName" via present,
    }
}

object_view! {
    struct SpecView as "a pod spec" {
        containers: Vec<ContainerView> = "containers" via null_as_default,
        init_containers: Option<Vec<ContainerView>> = "initContainers",
        volumes: Option<Vec<VolumeView>> = "volumes",
        image_pull_secrets: Option<Vec<LocalObjectReference>> = "imagePullSecrets",
    }
}

object_view! {
    struct ContainerView as "a container" {
        name: String = "name" via null_as_default,
        volume_mounts: Option<Vec<VolumeMount>> = "volumeMounts",
    }
}

object_view! {
    /// A volume's `name`, which k8s-openapi's `Volume` requires.
    struct VolumeName as "struct Volume" {
        name: Option<String> = "name" via present,
    }
}

/// A member whose `null` reads as the type's default, as k8s-openapi reads a null list or
/// name.
fn null_as_default<'de, A, T>(map: &mut A) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
}

/// A member kept as present whatever its value, `null` included.
fn present<'de, A, T>(map: &mut A) -> Result<Option<T>, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    map.next_value().map(Some)
}

/// Reads a JSON object key as the entry of `names` it equals, without allocating; `None` for
/// a key the view does not read.
struct KnownKey(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KnownKey {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KnownKey {
    type Value = Option<&'static str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|name| **name == key).copied())
    }
}

/// A pod volume: its name, and its JSON text, read further only when the name is one of ours.
/// Only then does its source matter (reused when identical, else a conflict), and a pod's
/// other volumes (secrets, config maps, projections) are not worth building on every review.
#[derive(Debug)]
struct VolumeView {
    name: String,
    text: Box<str>,
}

impl<'de> Deserialize<'de> for VolumeView {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Box::<RawValue>::deserialize(deserializer)?;
        let VolumeName { name } = serde_json::from_str(text.get()).map_err(de::Error::custom)?;
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        Ok(VolumeView {
            name,
            text: text.into(),
        })
    }
}

impl VolumeView {
    /// The volume as JSON and as its Kubernetes type; a volume that does not match the type is
    /// refused in the words a view that read it whole would use.
    fn read(&self) -> Result<(Value, Volume), DenyReason> {
        let json: Value = serde_json::from_str(&self.text).map_err(|err| view_error(&err))?;
        let typed = Volume::deserialize(&json).map_err(|err| view_error(&err))?;
        Ok((json, typed))
    }
}

/// The prefix of every label and annotation the engine reads.
const OUR_KEY_PREFIX: &str = "ingress-tap/";

/// Labels or annotations (a `map[string]string`), checked entry by entry as k8s-openapi's
/// `BTreeMap<String, String>` checks them (every value a string, the last of a repeated key
/// wins), keeping only the entries under [`OUR_KEY_PREFIX`]: a pod may carry many, some large,
/// that the engine never looks at.
#[derive(Debug, Default)]
struct OurEntries(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for OurEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = OurEntries;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OurEntries, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some(key) = map.next_key_seed(OurKey)? {
                    match key {
                        Some(key) => {
                            entries.insert(key, map.next_value()?);
                        }
                        None => {
                            map.next_value::<CheckedString>()?;
                        }
                    }
                }
                Ok(OurEntries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Reads a map key, and keeps it only when it is under [`OUR_KEY_PREFIX`].
struct OurKey;

impl<'de> DeserializeSeed<'de> for OurKey {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for OurKey {
    type Value = Option<String>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(key.starts_with(OUR_KEY_PREFIX).then(|| key.to_owned()))
    }
}

/// A JSON string, checked (a `String` reads the same values) and not kept.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckedString;

impl<'de> Deserialize<'de> for CheckedString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CheckedStringVisitor;

        impl Visitor<'_> for CheckedStringVisitor {
            type Value = CheckedString;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<CheckedString, E> {
                Ok(CheckedString)
            }
        }

        deserializer.deserialize_str(CheckedStringVisitor)
    }
}

/// A pod's name for log lines, as the JSON text of `metadata.name` when present, else of
/// `metadata.generateName`.
#[derive(Debug)]
pub struct LogName(Option<Box<RawValue>>);

impl LogName {
    /// The name when it is a string (`None` for a present `name` that is not one, even when
    /// `generateName` is), as a JSON pointer lookup of the one and then the other reads it.
    pub fn get(&self) -> Option<String> {
        serde_json::from_str(self.0.as_ref()?.get()).ok()
    }
}

impl PodView {
    /// The pod's name for log lines, still as JSON text: only a log line pays for decoding it.
    pub fn into_log_name(self) -> LogName {
        let Some(metadata) = self.metadata else {
            return LogName(None);
        };
        LogName(metadata.name.or(metadata.generate_name))
    }

    fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        Some(&self.metadata.as_ref()?.annotations.as_ref()?.0)
    }

    fn labels(&self) -> Option<&BTreeMap<String, String>> {
        Some(&self.metadata.as_ref()?.labels.as_ref()?.0)
    }
}

/// The JSON type at each path the patch touches, as the view saw it in the object: the patch
/// builder creates what is absent or null and appends to what exists.
impl JsonShape for PodView {
    fn kind_at(&self, path: &[&str]) -> JsonKind {
        fn present<T>(part: Option<&T>, kind: JsonKind) -> JsonKind {
            part.map_or(JsonKind::Absent, |_| kind)
        }
        let spec = self.spec.as_ref();
        match path {
            [] => JsonKind::Object,
            ["metadata"] => present(self.metadata.as_ref(), JsonKind::Object),
            ["metadata", "annotations"] => present(self.annotations(), JsonKind::Object),
            ["spec"] => present(spec, JsonKind::Object),
            ["spec", "containers"] => present(spec, JsonKind::Array),
            ["spec", "initContainers"] => present(
                spec.and_then(|spec| spec.init_containers.as_ref()),
                JsonKind::Array,
            ),
            ["spec", "volumes"] => {
                present(spec.and_then(|spec| spec.volumes.as_ref()), JsonKind::Array)
            }
            ["spec", "imagePullSecrets"] => present(
                spec.and_then(|spec| spec.image_pull_secrets.as_ref()),
                JsonKind::Array,
            ),
            ["spec", "containers", index] => present(container_at(spec, index), JsonKind::Object),
            ["spec", "containers", index, "volumeMounts"] => present(
                container_at(spec, index).and_then(|container| container.volume_mounts.as_ref()),
                JsonKind::Array,
            ),
            // The engine never patches anywhere else; claiming nothing is there would make the
            // builder create it, so the unexpected path is refused instead.
            _ => JsonKind::Other("a part of the pod the engine does not read"),
        }
    }
}

fn container_at<'view>(spec: Option<&'view SpecView>, index: &str) -> Option<&'view ContainerView> {
    let index: usize = index.parse().ok()?;
    spec?.containers.get(index)
}

// ---------------------------------------------------------------------------------------------
// The decision

fn plan(
    pod: &PodView,
    config: &InjectConfig,
    rendered: &mut RenderedConfig,
) -> Result<Decision<RenderedPatch>, DenyReason> {
    let labels = pod.labels();
    let annotations = pod.annotations();
    let opted_out = labels
        .and_then(|labels| labels.get(INJECT_LABEL))
        .is_some_and(|value| value == INJECT_DISABLED);
    if opted_out {
        return Ok(Decision::Skip(SkipReason::DisabledByLabel));
    }
    if annotations.is_some_and(|annotations| annotations.contains_key(STATUS_ANNOTATION)) {
        return Ok(Decision::Skip(SkipReason::AlreadyInjected));
    }
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| invalid_pod("it has no spec"))?;
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    let sidecar_present = spec
        .containers
        .iter()
        .chain(init_containers)
        .any(|container| container.name == config.sidecar_name);
    if sidecar_present {
        return Ok(Decision::Skip(SkipReason::SidecarPresent));
    }
    if spec.containers.is_empty() {
        return Err(invalid_pod("it has no containers"));
    }
    let container_index = index_container_names(&spec.containers, init_containers)?;
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    check_unique_volume_names(volumes)?;

    let settings = PodSettings::resolve(annotations, config)?;
    let target_index = select_target(&spec.containers, &container_index, annotations, config)?;
    let target = spec
        .containers
        .get(target_index)
        .ok_or_else(|| invalid_pod("the target container disappeared"))?;

    let add_log_volume = needs_volume(volumes, rendered.log_volume.tree(), |existing| {
        existing.empty_dir.is_some()
    })?;
    let add_felix_volume = needs_volume(volumes, rendered.felix_volume.tree(), |_| false)?;
    let add_target_mount = needs_target_mount(target, config)?;

    let add = |value: &Arc<Rendered>| PatchValue::Rendered(value.clone());
    let mut builder = PatchBuilder::new(pod);
    add_pull_secrets(&mut builder, spec, config, rendered)?;
    if add_log_volume {
        builder.append(&["spec", "volumes"], add(&rendered.log_volume))?;
    }
    if add_felix_volume {
        builder.append(&["spec", "volumes"], add(&rendered.felix_volume))?;
    }
    if add_target_mount {
        let index = target_index.to_string();
        builder.append(
            &["spec", "containers", index.as_str(), "volumeMounts"],
            add(&rendered.log_mount),
        )?;
    }
    let sidecar_list = if settings.native_sidecar {
        "initContainers"
    } else {
        "containers"
    };
    builder.append(
        &["spec", sidecar_list],
        PatchValue::Rendered(rendered.sidecar(&settings)),
    )?;
    builder.insert(
        &["metadata", "annotations"],
        STATUS_ANNOTATION,
        PatchValue::Rendered(rendered.status(settings.native_sidecar)),
    )?;
    Ok(Decision::Inject {
        patch: RenderedPatch::new(builder.finish()),
    })
}

/// Maps regular container names to their index, and refuses names used twice anywhere (the
/// API server would reject the pod, and a patched pod must stay unambiguous).
fn index_container_names<'pod>(
    containers: &'pod [ContainerView],
    init_containers: &'pod [ContainerView],
) -> Result<HashMap<&'pod str, usize>, DenyReason> {
    let mut index = HashMap::with_capacity(containers.len());
    for (position, container) in containers.iter().enumerate() {
        if index.insert(container.name.as_str(), position).is_some() {
            return Err(invalid_pod(format!(
                "container name {:?} is used twice",
                container.name
            )));
        }
    }
    let mut init_names = HashSet::with_capacity(init_containers.len());
    for container in init_containers {
        let name = container.name.as_str();
        if index.contains_key(name) || !init_names.insert(name) {
            return Err(invalid_pod(format!(
                "container name {name:?} is used twice"
            )));
        }
    }
    Ok(index)
}

fn check_unique_volume_names(volumes: &[VolumeView]) -> Result<(), DenyReason> {
    let mut names = HashSet::with_capacity(volumes.len());
    for volume in volumes {
        if !names.insert(volume.name.as_str()) {
            return Err(invalid_pod(format!(
                "volume name {:?} is used twice",
                volume.name
            )));
        }
    }
    Ok(())
}

/// The annotation wins; then the first configured name the pod has; then the first container,
/// which is where single-container controllers write their log.
fn select_target(
    containers: &[ContainerView],
    index: &HashMap<&str, usize>,
    annotations: Option<&BTreeMap<String, String>>,
    config: &InjectConfig,
) -> Result<usize, DenyReason> {
    if let Some(requested) =
        annotations.and_then(|annotations| annotations.get(CONTAINER_ANNOTATION))
    {
        return index.get(requested.as_str()).copied().ok_or_else(|| {
            DenyReason::UnknownTargetContainer {
                requested: requested.clone(),
                available: containers
                    .iter()
                    .map(|container| container.name.clone())
                    .collect(),
            }
        });
    }
    Ok(config
        .target_containers
        .iter()
        .find_map(|name| index.get(name.as_str()).copied())
        .unwrap_or(0))
}

/// Whether the volume `ours` still has to be added. A pod volume with the same name is reused
/// when it is identical to ours, or when `compatible` accepts it (any emptyDir serves as the
/// log volume, keeping the pod's own medium and size limit); any other source is a conflict.
fn needs_volume(
    volumes: &[VolumeView],
    ours: &Value,
    compatible: impl Fn(&Volume) -> bool,
) -> Result<bool, DenyReason> {
    let name = ours.get("name").and_then(Value::as_str).unwrap_or_default();
    let Some(volume) = volumes.iter().find(|volume| volume.name == name) else {
        return Ok(true);
    };
    let (raw, existing) = volume.read()?;
    if raw == *ours || compatible(&existing) {
        return Ok(false);
    }
    Err(DenyReason::VolumeConflict {
        volume: name.to_owned(),
        expected: describe_volume(ours),
        found: describe_volume(&raw),
    })
}

/// A short human description of a volume's source: `emptyDir`, `csi driver csi.tigera.io`.
fn describe_volume(volume: &Value) -> String {
    let Some(members) = volume.as_object() else {
        return "an unknown source".to_owned();
    };
    let sources: Vec<String> = members
        .iter()
        .filter(|(key, _)| key.as_str() != "name")
        .map(|(kind, source)| {
            let detail = source
                .get("driver")
                .map(|driver| ("driver", driver))
                .or_else(|| source.get("path").map(|path| ("path", path)));
            match detail {
                Some((label, Value::String(value))) => format!("{kind} {label} {value}"),
                _ => kind.clone(),
            }
        })
        .collect();
    if sources.is_empty() {
        "no source".to_owned()
    } else {
        sources.join(" + ")
    }
}

/// Whether the target container still needs the log mount. Any other mount at, above or
/// below the log directory would hide the log or be hidden by it, so it is a conflict; the
/// log volume itself already mounted read-write at the log directory is accepted as is.
fn needs_target_mount(target: &ContainerView, config: &InjectConfig) -> Result<bool, DenyReason> {
    let mut already_mounted = false;
    for mount in target.volume_mounts.iter().flatten() {
        if !paths_overlap(&mount.mount_path, &config.log_dir) {
            continue;
        }
        let whole_volume = mount.sub_path.as_deref().unwrap_or_default().is_empty()
            && mount
                .sub_path_expr
                .as_deref()
                .unwrap_or_default()
                .is_empty();
        let is_log_mount = mount.name == config.log_volume_name
            && whole_volume
            && same_path(&mount.mount_path, &config.log_dir);
        if !is_log_mount {
            return Err(DenyReason::MountConflict {
                container: target.name.clone(),
                volume: mount.name.clone(),
                mount_path: mount.mount_path.clone(),
                log_dir: config.log_dir.clone(),
            });
        }
        if mount.read_only == Some(true) {
            return Err(DenyReason::LogMountReadOnly {
                container: target.name.clone(),
                volume: mount.name.clone(),
            });
        }
        already_mounted = true;
    }
    Ok(!already_mounted)
}

fn add_pull_secrets(
    builder: &mut PatchBuilder<'_, PodView, PatchValue>,
    spec: &SpecView,
    config: &InjectConfig,
    rendered: &RenderedConfig,
) -> Result<(), PatchShapeError> {
    if config.image_pull_secrets.is_empty() {
        return Ok(());
    }
    let present: HashSet<&str> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|secret| secret.name.as_str())
        .collect();
    for (name, secret) in config.image_pull_secrets.iter().zip(&rendered.pull_secrets) {
        if !present.contains(name.as_str()) {
            builder.append(
                &["spec", "imagePullSecrets"],
                PatchValue::Rendered(secret.clone()),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rendered_patch_is_the_patch_of_decide() {
        let pods = [
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "controller"}]}}),
            json!({
                "metadata": {"annotations": {"ingress-tap/native-sidecar": "true", "ingress-tap/log-level": "debug"}},
                "spec": {
                    "containers": [{"name": "a"}, {"name": "controller", "volumeMounts": []}],
                    "volumes": [{"name": "ingress-tap-logs", "emptyDir": {"medium": "Memory"}}],
                    "imagePullSecrets": [{"name": "pull-a"}],
                },
            }),
        ];
        let config = InjectConfig {
            image_pull_secrets: vec!["pull-a".to_owned(), "pull-b".to_owned()],
            ..InjectConfig::default()
        };
        for pod in &pods {
            let Decision::Inject { patch } = decide(pod, &config) else {
                panic!("{pod} is injected");
            };
            let view = PodView::deserialize(pod).unwrap();
            let Decision::Inject { patch: rendered } = decide_view(&view, &config) else {
                panic!("{pod} is injected from its view");
            };
            assert_eq!(rendered.to_patch(), patch);
            let mut text = Vec::new();
            rendered.write_json(&mut text).unwrap();
            assert_eq!(text, serde_json::to_vec(&patch).unwrap());
        }
    }

    #[test]
    fn the_log_name_is_read_like_a_pointer_lookup() {
        let name = |metadata: Value| {
            let pod = json!({"metadata": metadata});
            let view = PodView::deserialize(&pod).unwrap();
            let expected = pod
                .pointer("/metadata/name")
                .or(pod.pointer("/metadata/generateName"))
                .and_then(Value::as_str);
            let name = view.into_log_name().get();
            assert_eq!(name.as_deref(), expected, "{pod}");
            name
        };
        assert_eq!(
            name(json!({"name": "n", "generateName": "g-"})).as_deref(),
            Some("n")
        );
        assert_eq!(name(json!({"generateName": "g-"})).as_deref(), Some("g-"));
        assert_eq!(name(json!({"name": null, "generateName": "g-"})), None);
        assert_eq!(
            name(json!({"name": {"a": [1]}, "generateName": "g-"})),
            None
        );
        assert_eq!(name(json!({"name": 7})), None);
        assert_eq!(name(json!({"generateName": ["g"]})), None);
        assert_eq!(name(json!({})), None);
    }

    #[test]
    fn labels_and_annotations_are_checked_whole_and_kept_in_part() {
        let metadata = json!({
            "labels": {"app": "x", "ingress-tap/inject": "enabled"},
            "annotations": {"ingress-tap/log-level": "debug", "note": "long text", "ingress-tap/log-level": "info"},
        });
        let pod = json!({"metadata": metadata});
        let view = PodView::deserialize(&pod).unwrap();
        let labels: Vec<_> = view.labels().unwrap().iter().collect();
        assert_eq!(labels, [(&INJECT_LABEL.to_owned(), &"enabled".to_owned())]);
        let annotations: Vec<_> = view.annotations().unwrap().iter().collect();
        assert_eq!(
            annotations,
            [(&"ingress-tap/log-level".to_owned(), &"info".to_owned())]
        );
        // Every key the engine reads is under the prefix.
        for key in [
            INJECT_LABEL,
            STATUS_ANNOTATION,
            CONTAINER_ANNOTATION,
            crate::inject::NATIVE_SIDECAR_ANNOTATION,
            crate::inject::INTERVAL_ANNOTATION,
            crate::inject::REQUESTS_ANNOTATION,
            crate::inject::LOG_LEVEL_ANNOTATION,
        ] {
            assert!(key.starts_with(OUR_KEY_PREFIX), "{key}");
        }
        // A value that is not a string is refused wherever it is, as a typed map refuses it.
        for (field, entries) in [
            ("labels", json!({"app": 7})),
            ("annotations", json!({"note": null})),
            ("labels", json!(["a"])),
        ] {
            let pod = json!({"metadata": {field: entries.clone()}});
            let ours = PodView::deserialize(&pod).unwrap_err().to_string();
            let typed = serde_json::from_value::<BTreeMap<String, String>>(entries)
                .unwrap_err()
                .to_string();
            assert_eq!(ours, typed);
        }
    }

    #[test]
    fn only_volumes_named_like_ours_are_read_whole() {
        let config = InjectConfig::default();
        let pod = |volumes: Value| json!({"spec": {"containers": [{"name": "controller"}], "volumes": volumes}});
        // Another volume's source is not read: any JSON there is left to the API server.
        let odd_source = pod(json!([{"name": "certs", "secret": 7, "emptyDir": "x"}]));
        assert!(matches!(
            decide(&odd_source, &config),
            Decision::Inject { .. }
        ));
        // Every volume still needs a name, as k8s-openapi's `Volume` requires.
        for volumes in [
            json!([{"secret": {}}]),
            json!([{"name": 7}]),
            json!([["certs"]]),
        ] {
            let Decision::Deny(reason) = decide(&pod(volumes.clone()), &config) else {
                panic!("{volumes} is refused");
            };
            assert!(
                reason.message().contains("does not match the pod schema"),
                "{volumes}: {}",
                reason.message()
            );
        }
        // Ours is typed in full: a malformed one is refused as the whole view refused it, a
        // different source is a conflict, and any emptyDir serves as the log volume.
        let ours = config.log_volume_name.as_str();
        let Decision::Deny(reason) = decide(&pod(json!([{"name": ours, "emptyDir": 7}])), &config)
        else {
            panic!("a malformed volume of ours is refused");
        };
        let typed =
            serde_json::from_value::<Volume>(json!({"name": ours, "emptyDir": 7})).unwrap_err();
        assert_eq!(reason, view_error(&typed));
        let conflict = pod(json!([{"name": ours, "hostPath": {"path": "/p"}}]));
        assert!(matches!(
            decide(&conflict, &config),
            Decision::Deny(DenyReason::VolumeConflict { .. })
        ));
        let reused = pod(json!([{"name": ours, "emptyDir": {"medium": "Memory"}}]));
        let Decision::Inject { patch } = decide(&reused, &config) else {
            panic!("the pod's own emptyDir serves as the log volume");
        };
        let added_volumes = patch
            .iter()
            .filter(|operation| operation.path().as_str().starts_with("/spec/volumes"))
            .count();
        assert_eq!(added_volumes, 1, "only the Felix volume is added");
    }

    #[test]
    fn volumes_are_described_by_source() {
        assert_eq!(
            describe_volume(&json!({"name": "a", "emptyDir": {}})),
            "emptyDir"
        );
        assert_eq!(
            describe_volume(&json!({"name": "a", "csi": {"driver": "x"}})),
            "csi driver x"
        );
        assert_eq!(
            describe_volume(&json!({"name": "a", "hostPath": {"path": "/p"}})),
            "hostPath path /p"
        );
        assert_eq!(describe_volume(&json!({"name": "a"})), "no source");
    }
}
