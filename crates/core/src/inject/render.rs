//! The values an injection adds, rendered once per config.
//!
//! Everything the patch adds depends only on the config and on the pod's collector settings
//! (its override annotations), never on the rest of the pod: the two volumes, the log mount of
//! the target container, the pull secrets, the sidecar container and the status annotation.
//! Building them as JSON trees and serialising them again for every pod cost the webhook about
//! as much as reading the pod, so each is built once per config (the sidecar once per distinct
//! settings) and kept both as a tree, for callers that want a `json_patch::Patch`, and as its
//! JSON text, which the webhook splices into the patch it sends.
//!
//! The cache is per thread and keyed by the config's value, not its address: a config swapped
//! in on reload (even at the address of the previous one) never meets a stale rendering.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{json, Map, Value};

use super::config::{FelixVolumeKind, InjectConfig, FELIX_CSI_DRIVER, FELIX_FLEX_DRIVER};
use super::overrides::PodSettings;
use super::patch::{Add, AddedValue, Shape};
use super::status::{config_hash_prefix, status_json};

/// One value the patch adds, as a JSON tree and as the compact JSON text the tree serialises to.
#[derive(Debug, PartialEq, Eq)]
pub struct Rendered {
    tree: Value,
    text: String,
}

impl Rendered {
    fn new(tree: Value) -> Arc<Self> {
        // `Display` writes the compact form `serde_json::to_vec` writes, and cannot fail for a
        // tree (its keys are strings).
        let text = tree.to_string();
        Arc::new(Rendered { tree, text })
    }

    pub fn tree(&self) -> &Value {
        &self.tree
    }
}

/// A value of the patch: an empty parent the patch creates, or a value rendered from the config.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchValue {
    Empty(Shape),
    Rendered(Arc<Rendered>),
}

impl AddedValue for PatchValue {
    fn empty(shape: Shape) -> Self {
        PatchValue::Empty(shape)
    }
}

impl PatchValue {
    fn tree(&self) -> Value {
        match self {
            PatchValue::Empty(shape) => shape.empty(),
            PatchValue::Rendered(rendered) => rendered.tree.clone(),
        }
    }

    fn text(&self) -> &str {
        match self {
            PatchValue::Empty(shape) => shape.empty_text(),
            PatchValue::Rendered(rendered) => &rendered.text,
        }
    }
}

/// An injection patch whose values were rendered once per config: written as JSON text without
/// serialising any tree, or turned into a `json_patch::Patch`. Both carry the same operations.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPatch {
    operations: Vec<Add<PatchValue>>,
}

/// The fixed parts of one operation's JSON, as `json_patch` writes an `add` operation.
const OPERATION_HEAD: &[u8] = br#"{"op":"add","path":"#;
const OPERATION_VALUE: &[u8] = br#","value":"#;

impl RenderedPatch {
    pub fn new(operations: Vec<Add<PatchValue>>) -> Self {
        RenderedPatch { operations }
    }

    /// Appends the patch as JSON to `out`: byte for byte what [`RenderedPatch::to_patch`]
    /// serialises to with `serde_json`, with every value copied from its rendered text.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.reserve(self.json_size_hint());
        out.push(b'[');
        for (index, operation) in self.operations.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(OPERATION_HEAD);
            serde_json::to_writer(&mut *out, operation.path.as_str())?;
            out.extend_from_slice(OPERATION_VALUE);
            out.extend_from_slice(operation.value.text().as_bytes());
            out.push(b'}');
        }
        out.push(b']');
        Ok(())
    }

    /// About the size of [`RenderedPatch::write_json`]'s output (exact unless a path needs
    /// escaping), so the output is written without growing.
    pub fn json_size_hint(&self) -> usize {
        let per_operation = OPERATION_HEAD.len() + OPERATION_VALUE.len() + 2 + 2;
        2 + self
            .operations
            .iter()
            .map(|operation| {
                per_operation + operation.path.as_str().len() + operation.value.text().len()
            })
            .sum::<usize>()
    }

    /// The patch as the `json_patch` crate models it.
    pub fn to_patch(&self) -> Patch {
        Patch(
            self.operations
                .iter()
                .map(|operation| {
                    PatchOperation::Add(AddOperation {
                        path: operation.path.to_pointer_buf(),
                        value: operation.value.tree(),
                    })
                })
                .collect(),
        )
    }
}

/// How many distinct pod settings (override annotations) get their sidecar cached per config and
/// thread. Most pods use the config's own settings; the cap bounds what unusual pods can make the
/// webhook keep.
const CACHED_SIDECARS: usize = 8;

/// Everything the patch may add for one config.
#[derive(Debug)]
pub struct RenderedConfig {
    /// The config these values were rendered from: the cache key.
    config: InjectConfig,
    pub log_volume: Arc<Rendered>,
    pub felix_volume: Arc<Rendered>,
    /// The log volume's mount in the target container.
    pub log_mount: Arc<Rendered>,
    /// `{"name": …}` for each of the config's pull secrets, in the config's order.
    pub pull_secrets: Vec<Arc<Rendered>>,
    /// The status annotation's value, for a regular sidecar and for a native one.
    status: [Arc<Rendered>; 2],
    /// The sidecar for the settings seen so far, at most [`CACHED_SIDECARS`].
    sidecars: Vec<(PodSettings, Arc<Rendered>)>,
}

impl RenderedConfig {
    pub fn new(config: &InjectConfig) -> Self {
        let hash = config_hash_prefix(config);
        RenderedConfig {
            config: config.clone(),
            log_volume: Rendered::new(log_volume_json(config)),
            felix_volume: Rendered::new(felix_volume_json(config)),
            log_mount: Rendered::new(
                json!({"name": config.log_volume_name, "mountPath": config.log_dir}),
            ),
            pull_secrets: config
                .image_pull_secrets
                .iter()
                .map(|name| Rendered::new(json!({ "name": name })))
                .collect(),
            status: [false, true]
                .map(|native| Rendered::new(Value::String(status_json(config, &hash, native)))),
            sidecars: Vec::new(),
        }
    }

    /// The status annotation's value.
    pub fn status(&self, native_sidecar: bool) -> Arc<Rendered> {
        self.status[usize::from(native_sidecar)].clone()
    }

    /// The sidecar container for `settings`.
    pub fn sidecar(&mut self, settings: &PodSettings) -> Arc<Rendered> {
        if let Some((_, sidecar)) = self.sidecars.iter().find(|(seen, _)| seen == settings) {
            return sidecar.clone();
        }
        let sidecar = Rendered::new(sidecar_json(&self.config, settings));
        if self.sidecars.len() < CACHED_SIDECARS {
            self.sidecars.push((*settings, sidecar.clone()));
        }
        sidecar
    }
}

thread_local! {
    /// The rendering of the last config used on this thread. The config changes only when its
    /// file is reloaded; comparing it with the cached copy costs far less than rendering.
    static RENDERED: RefCell<Option<Box<RenderedConfig>>> = const { RefCell::new(None) };
}

/// Runs `use_rendered` with the rendering of `config`: this thread's cached one when it was
/// rendered from an equal config, else a new one, which then replaces it in the cache.
pub fn with_rendered<R>(
    config: &InjectConfig,
    use_rendered: impl FnOnce(&mut RenderedConfig) -> R,
) -> R {
    // Taken out while in use: a nested call (there is none) or a thread being torn down finds
    // no cache and renders for itself, instead of failing.
    let cached = RENDERED
        .try_with(|cell| {
            cell.try_borrow_mut()
                .ok()
                .and_then(|mut cache| cache.take())
        })
        .ok()
        .flatten();
    let mut rendered = match cached {
        Some(rendered) if rendered.config == *config => rendered,
        _ => Box::new(RenderedConfig::new(config)),
    };
    let result = use_rendered(&mut rendered);
    let _ = RENDERED.try_with(|cell| {
        if let Ok(mut cache) = cell.try_borrow_mut() {
            *cache = Some(rendered);
        }
    });
    result
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::config::LogLevel;
    use crate::inject::patch::Pointer;
    use crate::inject::status::{InjectionStatus, STATUS_HASH_CHARS};
    use k8s_openapi::api::core::v1::{Container, Volume};

    /// Settings a pod's annotations can ask for, the config's own first.
    fn settings_variants(config: &InjectConfig) -> Vec<PodSettings> {
        let base = PodSettings::resolve(None, config).unwrap();
        let mut variants = vec![base];
        for native_sidecar in [false, true] {
            for log_level in [LogLevel::Info, LogLevel::Debug] {
                variants.push(PodSettings {
                    interval_seconds: 30,
                    requests_per_interval: -1,
                    log_level,
                    native_sidecar,
                });
            }
        }
        variants
    }

    /// A config that differs from the default in every part the rendering reads.
    fn unusual_config() -> InjectConfig {
        let mut config = InjectConfig {
            sidecar_name: "collector".to_owned(),
            image: "registry.example/other:1".to_owned(),
            image_pull_secrets: vec!["pull-a".to_owned(), "pull-b".to_owned()],
            command: vec!["/ingress-tap".to_owned()],
            args: Vec::new(),
            native_sidecar: true,
            log_dir: "/logs".to_owned(),
            log_volume_name: "logs".to_owned(),
            trusted_hops: Some(2),
            run_as_user: 1000,
            ..InjectConfig::default()
        };
        config.felix_volume.kind = FelixVolumeKind::HostPath;
        config
            .resources
            .limits
            .insert("memory".to_owned(), "64Mi".to_owned());
        config.extra_env.push(crate::inject::ExtraEnvVar {
            name: "EXTRA".to_owned(),
            value: "quote \" and \u{e9}".to_owned(),
        });
        config
    }

    /// What rendering `config` from scratch gives, compared part by part.
    fn assert_renders_as_uncached(rendered: &mut RenderedConfig, config: &InjectConfig) {
        let hash = config_hash_prefix(config);
        let expected = [
            (&rendered.log_volume, log_volume_json(config)),
            (&rendered.felix_volume, felix_volume_json(config)),
            (
                &rendered.log_mount,
                json!({"name": config.log_volume_name, "mountPath": config.log_dir}),
            ),
        ];
        for (rendered, tree) in expected {
            assert_eq!(rendered.tree, tree);
            assert_eq!(rendered.text, serde_json::to_string(&tree).unwrap());
        }
        let secrets: Vec<Value> = rendered
            .pull_secrets
            .iter()
            .map(|secret| secret.tree.clone())
            .collect();
        let expected: Vec<Value> = config
            .image_pull_secrets
            .iter()
            .map(|name| json!({ "name": name }))
            .collect();
        assert_eq!(secrets, expected);
        for native in [false, true] {
            let status = rendered.status(native);
            assert_eq!(
                status.tree,
                Value::String(status_json(config, &hash, native))
            );
            assert_eq!(status.text, serde_json::to_string(&status.tree).unwrap());
        }
        for settings in settings_variants(config) {
            let sidecar = rendered.sidecar(&settings);
            let tree = sidecar_json(config, &settings);
            assert_eq!(sidecar.tree, tree, "{settings:?}");
            assert_eq!(sidecar.text, serde_json::to_string(&tree).unwrap());
        }
    }

    #[test]
    fn the_cached_rendering_equals_an_uncached_one() {
        let default = InjectConfig::default();
        let unusual = unusual_config();
        // Twice round, so the second pass reads every part from the cache.
        for _ in 0..2 {
            for config in [&default, &unusual] {
                with_rendered(config, |rendered| {
                    assert_eq!(rendered.config, *config);
                    assert_renders_as_uncached(rendered, config);
                });
            }
        }
    }

    #[test]
    fn a_changed_config_is_rendered_again() {
        let config = InjectConfig::default();
        let mut changed = config.clone();
        changed.image = "registry.example/other:1".to_owned();
        let settings = PodSettings::resolve(None, &config).unwrap();
        for _ in 0..2 {
            for config in [&config, &changed] {
                let (sidecar, status) = with_rendered(config, |rendered| {
                    (rendered.sidecar(&settings), rendered.status(false))
                });
                assert_eq!(sidecar.tree["image"], config.image.as_str());
                let status: InjectionStatus =
                    serde_json::from_str(status.tree.as_str().unwrap()).unwrap();
                assert_eq!(status.config_hash, config.hash()[..STATUS_HASH_CHARS]);
            }
        }
        let hash = |config| {
            with_rendered(config, |rendered| {
                rendered.status(false).tree.as_str().unwrap().to_owned()
            })
        };
        assert_ne!(hash(&config), hash(&changed));
    }

    #[test]
    fn the_sidecar_cache_is_bounded() {
        let config = InjectConfig::default();
        let mut rendered = RenderedConfig::new(&config);
        for interval_seconds in 1..=(CACHED_SIDECARS as u32 * 2) {
            let settings = PodSettings {
                interval_seconds,
                ..PodSettings::resolve(None, &config).unwrap()
            };
            let sidecar = rendered.sidecar(&settings);
            assert_eq!(
                sidecar.tree["env"][0]["value"],
                interval_seconds.to_string()
            );
        }
        assert_eq!(rendered.sidecars.len(), CACHED_SIDECARS);
    }

    #[test]
    fn a_rendered_patch_writes_what_its_patch_serialises_to() {
        let config = unusual_config();
        let mut rendered = RenderedConfig::new(&config);
        let settings = PodSettings::resolve(None, &config).unwrap();
        let path = Pointer::from_tokens;
        let patch = RenderedPatch::new(vec![
            Add {
                path: path(&["spec", "volumes"]),
                value: PatchValue::Empty(Shape::Array),
            },
            Add {
                path: path(&["spec", "volumes", "-"]),
                value: PatchValue::Rendered(rendered.log_volume.clone()),
            },
            Add {
                path: path(&["metadata", "annotations"]),
                value: PatchValue::Empty(Shape::Object),
            },
            Add {
                path: path(&["metadata", "annotations", "ingress-tap/status"]),
                value: PatchValue::Rendered(rendered.status(true)),
            },
            Add {
                path: path(&["spec", "containers", "-"]),
                value: PatchValue::Rendered(rendered.sidecar(&settings)),
            },
            Add {
                path: path(&["metadata", "annotations", "a\"b\\c"]),
                value: PatchValue::Rendered(rendered.pull_secrets[1].clone()),
            },
        ]);
        let mut text = Vec::new();
        patch.write_json(&mut text).unwrap();
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            serde_json::to_string(&patch.to_patch()).unwrap()
        );
        let hint = patch.json_size_hint();
        assert!(hint + 4 >= text.len() && hint <= text.len(), "{hint}");
    }

    #[test]
    fn status_round_trips_through_its_type() {
        let config = InjectConfig::default();
        let text = status_json(&config, &config_hash_prefix(&config), true);
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
}
