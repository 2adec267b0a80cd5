//! The `ingress-tap/status` annotation the renderer writes on every injected pod: which injector
//! and config patched it. Its presence is what tells the engine a pod is already injected;
//! `kubectl describe` and the offline tool read its content.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::InjectConfig;

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

/// The first [`STATUS_HASH_CHARS`] of [`InjectConfig::hash`].
pub(super) fn config_hash_prefix(config: &InjectConfig) -> String {
    let hash = config.hash();
    hash.get(..STATUS_HASH_CHARS).unwrap_or(&hash).to_owned()
}

pub(super) fn status_json(
    config: &InjectConfig,
    config_hash: &str,
    native_sidecar: bool,
) -> String {
    let status = InjectionStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config_hash: config_hash.to_owned(),
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
