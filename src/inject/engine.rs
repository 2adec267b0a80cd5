//! `decide`: one pod and the config in, a verdict and the patch out.
//!
//! The pod is read through a typed view of only what the engine looks at: metadata labels and
//! annotations, container names and volume mounts, volumes and image pull secrets. Those parts
//! are checked with Kubernetes' own types and semantics (so a malformed field the engine relies
//! on is refused with a precise message); everything else is skipped without being built,
//! because on the webhook's path building the rest of the pod costs more than all the
//! decisions together. The patch is written against the structure of the object as received
//! (so fields the model does not know survive). Every check is a single pass over the pod's
//! lists with hash sets, and the patch only carries what is added, so the cost stays linear
//! however many containers or env vars a pod has.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use k8s_openapi::api::core::v1::{LocalObjectReference, Volume, VolumeMount};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::config::{
    paths_overlap, same_path, FelixVolumeKind, InjectConfig, FELIX_CSI_DRIVER, FELIX_FLEX_DRIVER,
};
use super::decision::{Decision, DenyReason, SkipReason};
use super::overrides::{
    PodSettings, CONTAINER_ANNOTATION, INJECT_DISABLED, INJECT_LABEL, STATUS_ANNOTATION,
};
use super::patch::{JsonKind, JsonShape, PatchBuilder, PatchShapeError};

/// How many hex characters of the config hash the status annotation keeps: enough to tell
/// configs apart, short enough to read in `kubectl describe`.
pub const STATUS_HASH_CHARS: usize = 16;

/// The value of the `ingress-tap/status` annotation, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionStatus {
    /// Version of the injector that patched the pod.
    pub version: String,
    /// Prefix of [`InjectConfig::hash`] of the config used.
    pub config_hash: String,
    /// Name of the injected container.
    pub sidecar: String,
    /// Whether the sidecar went into `initContainers` as a native sidecar.
    pub native_sidecar: bool,
}

/// Decides what to do with one pod-shaped object (`{"metadata": …, "spec": …}`: a Pod from an
/// admission review or a workload's pod template) and builds the patch when injecting.
///
/// `pod` is the object as JSON: a parsed `&serde_json::Value`, or its text as a
/// `&serde_json::value::RawValue`. From text, the parts the engine does not read are skipped
/// without being built, which is what keeps the admission path cheap; both give the same
/// decision and the same patch.
pub fn decide<'de>(pod: impl PodJson<'de>, config: &InjectConfig) -> Decision {
    let view = match PodView::deserialize(pod) {
        Ok(view) => view,
        Err(error) => {
            return Decision::Deny(invalid_pod(format!(
                "the object does not match the pod schema: {}",
                without_position(&error)
            )))
        }
    };
    match plan(&view, config) {
        Ok(decision) => decision,
        Err(reason) => Decision::Deny(reason),
    }
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
// (volumes, volume mounts, pull secrets) are k8s-openapi's types.

/// `metadata` and `spec` of a Pod or PodTemplateSpec.
#[derive(Debug, Default)]
struct PodView {
    metadata: Option<MetadataView>,
    spec: Option<SpecView>,
}

#[derive(Debug, Default)]
struct MetadataView {
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default)]
struct SpecView {
    containers: Vec<ContainerView>,
    init_containers: Option<Vec<ContainerView>>,
    /// Kept as JSON as well as typed: a volume is reused only when it is identical to ours.
    volumes: Option<Vec<(Value, Volume)>>,
    image_pull_secrets: Option<Vec<LocalObjectReference>>,
}

#[derive(Debug, Default)]
struct ContainerView {
    name: String,
    volume_mounts: Option<Vec<VolumeMount>>,
}

/// Reads a JSON object key as its position in `names`, without allocating; `None` for a key
/// the view does not read.
struct FieldIndex(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldIndex {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldIndex {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

/// Implements `Deserialize` for a view struct from a JSON object only: `$fields` are the JSON
/// keys read, in the order of the `$index => $assign` arms.
macro_rules! object_view {
    ($view:ident, $expecting:literal, [$($key:literal),+ $(,)?],
     |$target:ident, $map:ident| { $($index:pat => $assign:expr),+ $(,)? }) => {
        impl<'de> Deserialize<'de> for $view {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ViewVisitor;

                impl<'de> Visitor<'de> for ViewVisitor {
                    type Value = $view;

                    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                        formatter.write_str($expecting)
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<$view, A::Error> {
                        let mut $target = $view::default();
                        while let Some(field) = $map.next_key_seed(FieldIndex(&[$($key),+]))? {
                            match field {
                                $(Some($index) => $assign,)+
                                _ => {
                                    $map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok($target)
                    }
                }

                deserializer.deserialize_map(ViewVisitor)
            }
        }
    };
}

object_view!(PodView, "a pod object", ["metadata", "spec"], |view, map| {
    0 => view.metadata = map.next_value()?,
    1 => view.spec = map.next_value()?,
});

object_view!(MetadataView, "object metadata", ["labels", "annotations"], |view, map| {
    0 => view.labels = map.next_value()?,
    1 => view.annotations = map.next_value()?,
});

object_view!(
    SpecView,
    "a pod spec",
    ["containers", "initContainers", "volumes", "imagePullSecrets"],
    |view, map| {
        0 => view.containers = map.next_value::<Option<_>>()?.unwrap_or_default(),
        1 => view.init_containers = map.next_value()?,
        2 => view.volumes = map.next_value::<Option<Vec<TypedJson<Volume>>>>()?.map(|volumes| {
            volumes.into_iter().map(|volume| (volume.json, volume.typed)).collect()
        }),
        3 => view.image_pull_secrets = map.next_value()?,
    }
);

object_view!(ContainerView, "a container", ["name", "volumeMounts"], |view, map| {
    0 => view.name = map.next_value::<Option<String>>()?.unwrap_or_default(),
    1 => view.volume_mounts = map.next_value()?,
});

/// A value kept both as JSON and as its Kubernetes type.
struct TypedJson<T> {
    json: Value,
    typed: T,
}

impl<'de, T: de::DeserializeOwned> Deserialize<'de> for TypedJson<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Value::deserialize(deserializer)?;
        let typed = T::deserialize(&json).map_err(de::Error::custom)?;
        Ok(TypedJson { json, typed })
    }
}

impl PodView {
    fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.as_ref()?.annotations.as_ref()
    }

    fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.as_ref()?.labels.as_ref()
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

fn plan(pod: &PodView, config: &InjectConfig) -> Result<Decision, DenyReason> {
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

    let log_volume = log_volume_json(config);
    let felix_volume = felix_volume_json(config);
    let add_log_volume = needs_volume(volumes, &log_volume, |existing| {
        existing.empty_dir.is_some()
    })?;
    let add_felix_volume = needs_volume(volumes, &felix_volume, |_| false)?;
    let add_target_mount = needs_target_mount(target, config)?;

    let mut builder = PatchBuilder::new(pod);
    add_pull_secrets(&mut builder, spec, config)?;
    if add_log_volume {
        builder.append(&["spec", "volumes"], log_volume)?;
    }
    if add_felix_volume {
        builder.append(&["spec", "volumes"], felix_volume)?;
    }
    if add_target_mount {
        let index = target_index.to_string();
        builder.append(
            &["spec", "containers", index.as_str(), "volumeMounts"],
            json!({"name": config.log_volume_name, "mountPath": config.log_dir}),
        )?;
    }
    let sidecar_list = if settings.native_sidecar {
        "initContainers"
    } else {
        "containers"
    };
    builder.append(&["spec", sidecar_list], sidecar_json(config, &settings))?;
    builder.insert(
        &["metadata", "annotations"],
        STATUS_ANNOTATION,
        Value::String(status_json(config, settings.native_sidecar)),
    )?;
    Ok(Decision::Inject {
        patch: builder.finish(),
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

fn check_unique_volume_names(volumes: &[(Value, Volume)]) -> Result<(), DenyReason> {
    let mut names = HashSet::with_capacity(volumes.len());
    for (_, volume) in volumes {
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
    volumes: &[(Value, Volume)],
    ours: &Value,
    compatible: impl Fn(&Volume) -> bool,
) -> Result<bool, DenyReason> {
    let name = ours.get("name").and_then(Value::as_str).unwrap_or_default();
    let Some((raw, existing)) = volumes.iter().find(|(_, volume)| volume.name == name) else {
        return Ok(true);
    };
    if raw == ours || compatible(existing) {
        return Ok(false);
    }
    Err(DenyReason::VolumeConflict {
        volume: name.to_owned(),
        expected: describe_volume(ours),
        found: describe_volume(raw),
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
    builder: &mut PatchBuilder<'_, PodView>,
    spec: &SpecView,
    config: &InjectConfig,
) -> Result<(), PatchShapeError> {
    let present: HashSet<&str> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|secret| secret.name.as_str())
        .collect();
    for name in &config.image_pull_secrets {
        if !present.contains(name.as_str()) {
            builder.append(&["spec", "imagePullSecrets"], json!({ "name": name }))?;
        }
    }
    Ok(())
}

fn log_volume_json(config: &InjectConfig) -> Value {
    json!({"name": config.log_volume_name, "emptyDir": {}})
}

fn felix_volume_json(config: &InjectConfig) -> Value {
    let felix = &config.felix_volume;
    match felix.kind {
        FelixVolumeKind::Csi => json!({"name": felix.name, "csi": {"driver": FELIX_CSI_DRIVER}}),
        FelixVolumeKind::FlexVolume => {
            json!({"name": felix.name, "flexVolume": {"driver": FELIX_FLEX_DRIVER}})
        }
        FelixVolumeKind::HostPath => json!({
            "name": felix.name,
            "hostPath": {"path": felix.host_path, "type": "DirectoryOrCreate"}
        }),
    }
}

fn quantities(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(name, quantity)| (name.clone(), Value::String(quantity.clone())))
            .collect(),
    )
}

fn sidecar_json(config: &InjectConfig, settings: &PodSettings) -> Value {
    let mut env = vec![
        json!({"name": "INGRESS_LOG_INTERVAL_SECONDS", "value": settings.interval_seconds.to_string()}),
        json!({"name": "INGRESS_LOG_REQUESTS_PER_INTERVAL", "value": settings.requests_per_interval.to_string()}),
        json!({"name": "INGRESS_LOG_PATH", "value": config.log_path()}),
        json!({"name": "FELIX_DIAL_TARGET", "value": config.felix_dial_target()}),
        json!({"name": "LOG_LEVEL", "value": settings.log_level.as_str()}),
    ];
    if let Some((name, value)) = config.trusted_proxy_env() {
        env.push(json!({"name": name, "value": value}));
    }
    env.extend(
        config
            .extra_env
            .iter()
            .map(|variable| json!({"name": variable.name, "value": variable.value})),
    );

    let mut container = Map::new();
    container.insert("name".into(), json!(config.sidecar_name));
    container.insert("image".into(), json!(config.image));
    container.insert(
        "imagePullPolicy".into(),
        json!(config.image_pull_policy.as_str()),
    );
    if !config.command.is_empty() {
        container.insert("command".into(), json!(config.command));
    }
    if !config.args.is_empty() {
        container.insert("args".into(), json!(config.args));
    }
    container.insert("env".into(), Value::Array(env));
    let mut resources = Map::new();
    if !config.resources.requests.is_empty() {
        resources.insert("requests".into(), quantities(&config.resources.requests));
    }
    if !config.resources.limits.is_empty() {
        resources.insert("limits".into(), quantities(&config.resources.limits));
    }
    if !resources.is_empty() {
        container.insert("resources".into(), Value::Object(resources));
    }
    container.insert(
        "securityContext".into(),
        json!({
            "runAsNonRoot": true,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_group,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }),
    );
    container.insert(
        "volumeMounts".into(),
        json!([
            {"name": config.log_volume_name, "mountPath": config.log_dir},
            {"name": config.felix_volume.name, "mountPath": config.felix_volume.mount_path}
        ]),
    );
    if settings.native_sidecar {
        container.insert("restartPolicy".into(), json!("Always"));
    }
    Value::Object(container)
}

thread_local! {
    /// The last config seen on this thread and its hash prefix. The config changes only when
    /// its file is reloaded, while hashing it (serialise, then SHA-256) on every pod would cost
    /// as much as the rest of the patch; comparing it with the cached copy costs little.
    static CONFIG_HASH: RefCell<Option<(InjectConfig, String)>> = const { RefCell::new(None) };
}

/// The first [`STATUS_HASH_CHARS`] of [`InjectConfig::hash`].
fn config_hash_prefix(config: &InjectConfig) -> String {
    let compute = || {
        let hash = config.hash();
        hash.get(..STATUS_HASH_CHARS).unwrap_or(&hash).to_owned()
    };
    let cached = CONFIG_HASH.try_with(|cell| {
        // Not re-entered, but a busy cell or a thread being torn down just computes it.
        let Ok(mut cache) = cell.try_borrow_mut() else {
            return compute();
        };
        match &*cache {
            Some((seen, prefix)) if seen == config => prefix.clone(),
            _ => {
                let prefix = compute();
                *cache = Some((config.clone(), prefix.clone()));
                prefix
            }
        }
    });
    cached.unwrap_or_else(|_| compute())
}

fn status_json(config: &InjectConfig, native_sidecar: bool) -> String {
    let status = InjectionStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config_hash: config_hash_prefix(config),
        sidecar: config.sidecar_name.clone(),
        native_sidecar,
    };
    // A struct of strings and a bool always serialises; the fallback keeps the same content
    // (with sorted keys) rather than panicking on an impossible error.
    serde_json::to_string(&status).unwrap_or_else(|_| {
        json!({
            "version": status.version,
            "configHash": status.config_hash,
            "sidecar": status.sidecar,
            "nativeSidecar": status.native_sidecar,
        })
        .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    #[test]
    fn status_round_trips_through_its_type() {
        let text = status_json(&InjectConfig::default(), true);
        let status: InjectionStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(status.sidecar, "ingress-collector");
        assert!(status.native_sidecar);
        assert_eq!(status.config_hash.len(), STATUS_HASH_CHARS);
        assert!(InjectConfig::default()
            .hash()
            .starts_with(&status.config_hash));
        assert!(text.starts_with(r#"{"version":"#), "{text}");
    }

    #[test]
    fn the_cached_hash_follows_a_changed_config() {
        let config = InjectConfig::default();
        let mut changed = config.clone();
        changed.image = "registry.example/other:1".to_owned();
        for _ in 0..2 {
            for config in [&config, &changed] {
                assert_eq!(
                    config_hash_prefix(config),
                    config.hash()[..STATUS_HASH_CHARS]
                );
            }
        }
        assert_ne!(config_hash_prefix(&config), config_hash_prefix(&changed));
    }

    #[test]
    fn our_volumes_parse_as_typed_volumes() {
        let mut config = InjectConfig::default();
        for kind in [
            FelixVolumeKind::Csi,
            FelixVolumeKind::FlexVolume,
            FelixVolumeKind::HostPath,
        ] {
            config.felix_volume.kind = kind;
            let volume: Volume = serde_json::from_value(felix_volume_json(&config)).unwrap();
            assert_eq!(volume.name, "ingress-tap-felix");
        }
        let volume: Volume = serde_json::from_value(log_volume_json(&config)).unwrap();
        assert!(volume.empty_dir.is_some());
    }

    #[test]
    fn sidecar_parses_as_a_typed_container() {
        let config = InjectConfig {
            command: vec!["/ingress-tap".to_owned()],
            ..InjectConfig::default()
        };
        let settings = PodSettings::resolve(None, &config).unwrap();
        let container: Container =
            serde_json::from_value(sidecar_json(&config, &settings)).unwrap();
        assert_eq!(container.command, Some(vec!["/ingress-tap".to_owned()]));
        assert_eq!(container.args, Some(vec!["collect".to_owned()]));
        assert_eq!(container.restart_policy, None);
        let security = container.security_context.unwrap();
        assert_eq!(security.run_as_user, Some(65532));
        assert_eq!(security.read_only_root_filesystem, Some(true));
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
