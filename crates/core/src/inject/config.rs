//! The injection config file: what the webhook adds to every ingress pod.
//!
//! One YAML document with camelCase keys; every key has a default, so an empty file is a valid
//! config. Loading rejects unknown keys (a misspelt key silently ignored would inject the
//! wrong thing into every ingress pod) and validates everything the API server would otherwise
//! reject pod by pod, so a bad config fails once, at load, instead of blocking pod creation.
//! Every key is documented in `docs/injection-config.md`; `examples/inject-config.yaml` lists
//! them all with their default values and is tested to load to exactly [`InjectConfig::default`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::quantity::Quantity;
pub use crate::log_level::{LogLevel, UnknownLogLevel, ACCEPTED_LOG_LEVELS};

/// The collector reports at most once per interval; an hour is the longest interval that still
/// gives flow logs a useful original source IP, a second the shortest that Felix can absorb.
pub const INTERVAL_SECONDS_RANGE: RangeInclusive<u32> = 1..=3600;

/// Environment variables the engine always sets on the sidecar; `extraEnv` may not redefine
/// them, because a duplicate env name would silently let one value shadow the other.
pub const RESERVED_ENV_NAMES: [&str; 7] = [
    "INGRESS_LOG_INTERVAL_SECONDS",
    "INGRESS_LOG_REQUESTS_PER_INTERVAL",
    "INGRESS_LOG_PATH",
    "FELIX_DIAL_TARGET",
    "LOG_LEVEL",
    TRUSTED_PROXIES_ENV,
    TRUSTED_HOPS_ENV,
];

/// The collector's variable for [`InjectConfig::trusted_proxies`].
pub const TRUSTED_PROXIES_ENV: &str = "INGRESS_TAP_TRUSTED_PROXIES";
/// The collector's variable for [`InjectConfig::trusted_hops`].
pub const TRUSTED_HOPS_ENV: &str = "INGRESS_TAP_TRUSTED_HOPS";

/// Resource names the sidecar may request; anything else is almost certainly a typo.
const RESOURCE_NAMES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// The sidecar image matching this build, so the collector and the webhook that injects it
/// always speak the same version unless the config pins another image on purpose.
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/ingress-tap/ingress-tap:",
    env!("CARGO_PKG_VERSION")
);

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document is not YAML, has an unknown key, or a value of the wrong type.
    #[error("injection config does not parse: {0}")]
    Parse(#[from] serde_norway::Error),
    /// A value parsed but is not acceptable; `key` is the dotted path of the offending key.
    #[error("injection config key `{key}`: {problem}")]
    Invalid {
        /// Dotted path of the key, for example `felixVolume.mountPath`.
        key: String,
        /// What is wrong and what would be accepted.
        problem: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The whole injection config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InjectConfig {
    /// Name of the injected container; also how an injected pod is recognised.
    pub sidecar_name: String,
    /// Collector image.
    pub image: String,
    /// Pull policy of the collector image.
    pub image_pull_policy: ImagePullPolicy,
    /// Pull secrets added to the pod when it does not already list them.
    pub image_pull_secrets: Vec<String>,
    /// Overrides the image entrypoint when non-empty.
    pub command: Vec<String>,
    /// Arguments of the collector; the image's entrypoint is the `ingress-tap` binary.
    pub args: Vec<String>,
    /// Container names that write the access log, tried in order.
    pub target_containers: Vec<String>,
    /// Inject as a native sidecar (an init container with `restartPolicy: Always`).
    pub native_sidecar: bool,
    /// `INGRESS_LOG_INTERVAL_SECONDS` of the collector.
    pub interval_seconds: u32,
    /// `INGRESS_LOG_REQUESTS_PER_INTERVAL` of the collector; negative means no cap.
    pub requests_per_interval: i64,
    /// `LOG_LEVEL` of the collector.
    pub log_level: LogLevel,
    /// Directory shared by the ingress controller and the collector.
    pub log_dir: String,
    /// File name of the access log inside `log_dir`.
    pub log_file: String,
    /// Name of the emptyDir volume holding `log_dir`.
    pub log_volume_name: String,
    /// The volume that exposes Felix's per-workload socket to the collector.
    pub felix_volume: FelixVolumeConfig,
    /// Proxies in front of the ingress whose X-Forwarded-For entries every injected collector
    /// believes (CIDRs or addresses); empty keeps the reference rule.
    pub trusted_proxies: Vec<String>,
    /// Proxies in front of the ingress that append to X-Forwarded-For, for every injected
    /// collector; exclusive with `trusted_proxies`.
    pub trusted_hops: Option<u16>,
    /// Extra environment of the collector.
    pub extra_env: Vec<ExtraEnvVar>,
    /// Resource requests and limits of the collector.
    pub resources: SidecarResources,
    /// User the collector runs as; never root.
    pub run_as_user: i64,
    /// Group the collector runs as.
    pub run_as_group: i64,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            sidecar_name: "ingress-collector".to_owned(),
            image: DEFAULT_IMAGE.to_owned(),
            image_pull_policy: ImagePullPolicy::IfNotPresent,
            image_pull_secrets: Vec::new(),
            command: Vec::new(),
            args: vec!["collect".to_owned()],
            target_containers: vec![
                "controller".to_owned(),
                "nginx-ingress".to_owned(),
                "logs".to_owned(),
            ],
            native_sidecar: false,
            interval_seconds: 5,
            requests_per_interval: 5,
            log_level: LogLevel::Info,
            log_dir: "/var/log/calico/ingress".to_owned(),
            log_file: "ingress.log".to_owned(),
            log_volume_name: "ingress-tap-logs".to_owned(),
            felix_volume: FelixVolumeConfig::default(),
            trusted_proxies: Vec::new(),
            trusted_hops: None,
            extra_env: Vec::new(),
            resources: SidecarResources::default(),
            run_as_user: 65532,
            run_as_group: 65532,
        }
    }
}

impl InjectConfig {
    /// Parses and validates a config document. An empty document yields the defaults.
    pub fn from_yaml(text: &str) -> Result<InjectConfig, ConfigError> {
        let parsed: Option<InjectConfig> = serde_norway::from_str(text)?;
        let config = parsed.unwrap_or_default();
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule the loader enforces; useful for configs built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_dns_label("sidecarName", &self.sidecar_name)?;
        check_image(&self.image)?;
        check_unique_names(
            "imagePullSecrets",
            &self.image_pull_secrets,
            check_dns_subdomain,
        )?;
        check_unique_names("targetContainers", &self.target_containers, check_dns_label)?;
        check_interval("intervalSeconds", self.interval_seconds)?;
        check_absolute_path("logDir", &self.log_dir)?;
        check_file_name("logFile", &self.log_file)?;
        check_dns_label("logVolumeName", &self.log_volume_name)?;
        self.felix_volume.validate()?;
        if self.felix_volume.name == self.log_volume_name {
            return Err(ConfigError::invalid(
                "felixVolume.name",
                format!(
                    "{:?} is also the logVolumeName; the two volumes need distinct names",
                    self.felix_volume.name
                ),
            ));
        }
        if paths_overlap(&self.log_dir, &self.felix_volume.mount_path) {
            return Err(ConfigError::invalid(
                "felixVolume.mountPath",
                format!(
                    "{:?} overlaps logDir {:?}; the sidecar cannot mount one volume inside the other",
                    self.felix_volume.mount_path, self.log_dir
                ),
            ));
        }
        self.check_trusted_proxies()?;
        check_extra_env(&self.extra_env)?;
        self.resources.validate()?;
        if self.run_as_user < 1 {
            return Err(ConfigError::invalid(
                "runAsUser",
                format!(
                    "{} is not allowed: the sidecar runs with runAsNonRoot, so it needs a user id of 1 or more",
                    self.run_as_user
                ),
            ));
        }
        if self.run_as_group < 0 {
            return Err(ConfigError::invalid(
                "runAsGroup",
                format!(
                    "{} is negative; expected a group id of 0 or more",
                    self.run_as_group
                ),
            ));
        }
        Ok(())
    }

    /// Stable SHA-256 (lowercase hex) of the canonical JSON serialisation. Recorded in the status
    /// annotation so an operator can tell which config injected a pod; field order is fixed by
    /// the struct and maps are sorted, so equal configs always hash equally.
    pub fn hash(&self) -> String {
        // Serialising plain structs, strings, integers and sorted maps cannot fail; an empty
        // input on the impossible error path still yields a stable, recognisable hash.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        format!("{:x}", Sha256::digest(&canonical))
    }

    /// The collector environment for the trusted-proxy settings, if any.
    pub fn trusted_proxy_env(&self) -> Option<(&'static str, String)> {
        if let Some(hops) = self.trusted_hops {
            return Some((TRUSTED_HOPS_ENV, hops.to_string()));
        }
        (!self.trusted_proxies.is_empty()).then(|| {
            (
                TRUSTED_PROXIES_ENV,
                self.trusted_proxies
                    .iter()
                    .map(|entry| entry.trim())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
    }

    fn check_trusted_proxies(&self) -> Result<(), ConfigError> {
        if self.trusted_hops.is_some() && !self.trusted_proxies.is_empty() {
            return Err(ConfigError::invalid(
                "trustedHops",
                "cannot be combined with trustedProxies: choose one way to find the client",
            ));
        }
        if self.trusted_hops.is_some_and(|hops| hops > 64) {
            return Err(ConfigError::invalid("trustedHops", "must be 0-64"));
        }
        for entry in &self.trusted_proxies {
            crate::net::parse_network(entry)
                .map_err(|problem| ConfigError::invalid("trustedProxies", problem))?;
        }
        Ok(())
    }

    /// Where the controller writes and the collector reads the access log. Built from
    /// `logDir` and `logFile` so the log can never sit outside the shared volume.
    pub fn log_path(&self) -> String {
        format!("{}/{}", self.log_dir, self.log_file)
    }

    /// The Felix socket as the collector sees it, inside the Felix volume's mount.
    pub fn felix_dial_target(&self) -> String {
        format!(
            "{}/{}",
            self.felix_volume.mount_path, self.felix_volume.socket_file
        )
    }
}

/// Container image pull policy, spelled as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImagePullPolicy {
    /// Pull on every container start.
    Always,
    /// Pull only when the node lacks the image.
    IfNotPresent,
    /// Never pull; the image must be preloaded.
    Never,
}

impl ImagePullPolicy {
    /// The value of a container's `imagePullPolicy` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// How the Felix socket reaches the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FelixVolumeKind {
    /// The Calico CSI driver `csi.tigera.io` (current clusters).
    Csi,
    /// The flexVolume driver `nodeagent/uds` (older clusters).
    FlexVolume,
    /// A host directory (clusters without either driver).
    HostPath,
}

/// The CSI driver that mounts a workload's Felix policy-sync directory.
pub const FELIX_CSI_DRIVER: &str = "csi.tigera.io";
/// The flexVolume driver that did the same before the CSI driver existed.
pub const FELIX_FLEX_DRIVER: &str = "nodeagent/uds";

/// The Felix socket volume of the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FelixVolumeConfig {
    /// Which volume source provides the socket.
    pub kind: FelixVolumeKind,
    /// Volume name in the pod.
    pub name: String,
    /// Where the sidecar mounts it.
    pub mount_path: String,
    /// The socket, relative to `mount_path`.
    pub socket_file: String,
    /// Host directory, used only when `kind` is `hostPath`.
    pub host_path: String,
}

impl Default for FelixVolumeConfig {
    fn default() -> Self {
        FelixVolumeConfig {
            kind: FelixVolumeKind::Csi,
            name: "ingress-tap-felix".to_owned(),
            mount_path: "/var/run/felix".to_owned(),
            socket_file: "nodeagent/socket".to_owned(),
            host_path: "/var/run/nodeagent".to_owned(),
        }
    }
}

impl FelixVolumeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_dns_label("felixVolume.name", &self.name)?;
        check_absolute_path("felixVolume.mountPath", &self.mount_path)?;
        check_relative_path("felixVolume.socketFile", &self.socket_file)?;
        check_absolute_path("felixVolume.hostPath", &self.host_path)
    }
}

/// One extra environment variable of the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraEnvVar {
    /// Variable name.
    pub name: String,
    /// Literal value.
    pub value: String,
}

/// Requests and limits of the collector. Each map replaces its default as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarResources {
    /// Resource name (`cpu`, `memory`, `ephemeral-storage`) to quantity.
    pub requests: BTreeMap<String, String>,
    /// Resource name to quantity.
    pub limits: BTreeMap<String, String>,
}

impl Default for SidecarResources {
    fn default() -> Self {
        SidecarResources {
            requests: BTreeMap::from([
                ("cpu".to_owned(), "10m".to_owned()),
                ("memory".to_owned(), "32Mi".to_owned()),
            ]),
            limits: BTreeMap::from([("memory".to_owned(), "64Mi".to_owned())]),
        }
    }
}

impl SidecarResources {
    fn validate(&self) -> Result<(), ConfigError> {
        let requests = parse_resource_map("resources.requests", &self.requests)?;
        let limits = parse_resource_map("resources.limits", &self.limits)?;
        for (name, request) in &requests {
            let Some(limit) = limits.get(name) else {
                continue;
            };
            if request.compare(*limit) == Some(Ordering::Greater) {
                return Err(ConfigError::invalid(
                    format!("resources.requests.{name}"),
                    format!(
                        "request {:?} exceeds limit {:?}; the API server would reject every injected pod",
                        self.requests.get(*name).map_or("", String::as_str),
                        self.limits.get(*name).map_or("", String::as_str),
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn parse_resource_map<'a>(
    key: &str,
    map: &'a BTreeMap<String, String>,
) -> Result<BTreeMap<&'a str, Quantity>, ConfigError> {
    map.iter()
        .map(|(name, value)| {
            if !RESOURCE_NAMES.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.{name}"),
                    format!(
                        "unknown resource; expected one of {}",
                        RESOURCE_NAMES.join(", ")
                    ),
                ));
            }
            let quantity = Quantity::parse(value).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{key}.{name}"),
                    format!("{value:?} is not a Kubernetes quantity (for example 10m, 32Mi, 1)"),
                )
            })?;
            Ok((name.as_str(), quantity))
        })
        .collect()
}

/// Checks a per-pod or configured interval; shared with the annotation overrides.
pub fn check_interval(key: &str, seconds: u32) -> Result<(), ConfigError> {
    if INTERVAL_SECONDS_RANGE.contains(&seconds) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "{seconds} is out of range; expected an integer from {} to {}",
                INTERVAL_SECONDS_RANGE.start(),
                INTERVAL_SECONDS_RANGE.end()
            ),
        ))
    }
}

fn check_image(image: &str) -> Result<(), ConfigError> {
    if image.trim().is_empty() {
        return Err(ConfigError::invalid(
            "image",
            "is empty; the sidecar needs an image",
        ));
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::invalid(
            "image",
            format!("{image:?} contains whitespace; an image reference has none"),
        ));
    }
    Ok(())
}

/// RFC 1123 label: container and volume names.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
}

fn check_dns_label(key: &str, name: &str) -> Result<(), ConfigError> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "{name:?} is not a DNS-1123 label (1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
            ),
        ))
    }
}

fn check_dns_subdomain(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.len() <= 253 && name.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("{name:?} is not a DNS-1123 subdomain (dot-separated DNS-1123 labels, at most 253 characters)"),
        ))
    }
}

fn check_unique_names(
    key: &str,
    names: &[String],
    check_one: fn(&str, &str) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    let mut seen = HashSet::with_capacity(names.len());
    for name in names {
        check_one(key, name)?;
        if !seen.insert(name.as_str()) {
            return Err(ConfigError::invalid(
                key,
                format!("{name:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// A normalised absolute path: no empty, `.` or `..` component, no trailing slash, not `/`.
fn check_absolute_path(key: &str, path: &str) -> Result<(), ConfigError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ConfigError::invalid(
            key,
            format!("{path:?} is not an absolute path"),
        ));
    };
    check_components(key, path, rest)
}

fn check_relative_path(key: &str, path: &str) -> Result<(), ConfigError> {
    if path.starts_with('/') {
        return Err(ConfigError::invalid(
            key,
            format!("{path:?} must be relative to the mount path"),
        ));
    }
    check_components(key, path, path)
}

fn check_components(key: &str, path: &str, components: &str) -> Result<(), ConfigError> {
    let bad = components.is_empty()
        || path.contains('\0')
        || components
            .split('/')
            .any(|component| component.is_empty() || component == "." || component == "..");
    if bad {
        Err(ConfigError::invalid(
            key,
            format!(
                "{path:?} is not a normalised path (no empty, '.' or '..' components, no trailing '/', not the root)"
            ),
        ))
    } else {
        Ok(())
    }
}

fn check_file_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Err(ConfigError::invalid(
            key,
            format!("{name:?} is not a plain file name; the log always sits directly in logDir"),
        ))
    } else {
        Ok(())
    }
}

/// Environment variable names as the API server accepts them (C identifiers plus `-` and `.`).
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'-' | b'.'));
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check_extra_env(extra_env: &[ExtraEnvVar]) -> Result<(), ConfigError> {
    let mut seen = HashSet::with_capacity(extra_env.len());
    for variable in extra_env {
        let name = variable.name.as_str();
        if !is_env_name(name) {
            return Err(ConfigError::invalid(
                "extraEnv",
                format!("{name:?} is not a valid environment variable name (letters, digits, '_', '-', '.'; not starting with a digit)"),
            ));
        }
        if RESERVED_ENV_NAMES.contains(&name) {
            return Err(ConfigError::invalid(
                "extraEnv",
                format!("{name:?} is set by the injector from its own keys; configure it there"),
            ));
        }
        if !seen.insert(name) {
            return Err(ConfigError::invalid(
                "extraEnv",
                format!("{name:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Splits a path into its meaningful components, ignoring repeated, trailing and `.` separators,
/// so `/var/log/` and `/var//log` compare equal to `/var/log`.
pub fn path_components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter(|component| !component.is_empty() && *component != ".")
}

/// True when one path equals the other or lies inside it: mounting a volume there would hide,
/// or be hidden by, the other mount.
pub fn paths_overlap(first: &str, second: &str) -> bool {
    path_components(first)
        .zip(path_components(second))
        .all(|(a, b)| a == b)
}

/// True when both spell the same directory.
pub fn same_path(first: &str, second: &str) -> bool {
    path_components(first).eq(path_components(second))
}

#[cfg(test)]
mod tests;
