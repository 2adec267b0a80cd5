//! What the engine answers for one pod, and why.
//!
//! Skips and denials carry a reason code (`as_str`, stable, snake_case, used as a metric label
//! and an event reason) apart from the human text (`message`), so dashboards do not break when
//! a message is reworded.

use json_patch::Patch;

/// The engine's verdict on one pod, with the patch as `P`: a `json_patch::Patch`, or for the
/// webhook a [`RenderedPatch`](super::RenderedPatch) that writes its JSON without serialising
/// trees.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<P = Patch> {
    /// Admit the pod with this RFC 6902 patch, relative to the object's root.
    Inject {
        /// Only `add` operations: nothing of the original pod is changed or removed.
        patch: P,
    },
    /// Admit the pod unchanged. Not an error.
    Skip(SkipReason),
    /// Refuse the pod; injecting would produce a broken pod or ignore the user's intent.
    Deny(DenyReason),
}

impl<P> Decision<P> {
    /// The same decision with the patch converted by `convert`.
    pub fn map_patch<Q>(self, convert: impl FnOnce(P) -> Q) -> Decision<Q> {
        match self {
            Decision::Inject { patch } => Decision::Inject {
                patch: convert(patch),
            },
            Decision::Skip(reason) => Decision::Skip(reason),
            Decision::Deny(reason) => Decision::Deny(reason),
        }
    }
}

/// Why a pod is admitted without injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The pod carries the label `ingress-tap/inject: disabled`.
    DisabledByLabel,
    /// The pod carries the status annotation: it was injected already (reinvocation, or a
    /// template copied from an injected pod).
    AlreadyInjected,
    /// A container or init container already has the sidecar's name (added by hand).
    SidecarPresent,
}

impl SkipReason {
    /// Stable label for metrics and events.
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::DisabledByLabel => "disabled_by_label",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::SidecarPresent => "sidecar_present",
        }
    }
}

/// Why a pod is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The object is not a pod the engine can reason about (no containers, duplicate names,
    /// fields of the wrong type).
    InvalidPod {
        /// What is wrong with it.
        problem: String,
    },
    /// The `ingress-tap/container` annotation names a container the pod does not have.
    UnknownTargetContainer {
        /// The annotation's value.
        requested: String,
        /// The pod's container names, in order.
        available: Vec<String>,
    },
    /// An `ingress-tap/*` annotation has a value outside what it accepts.
    InvalidAnnotation {
        /// The annotation key.
        annotation: &'static str,
        /// The offending value.
        value: String,
        /// What the annotation accepts.
        accepted: &'static str,
    },
    /// The pod already has a volume with one of the injector's volume names but another source.
    VolumeConflict {
        /// The clashing volume name.
        volume: String,
        /// The source the injector needs under that name.
        expected: String,
        /// The source the pod has under that name.
        found: String,
    },
    /// The target container already mounts another volume at, above or below the log directory.
    MountConflict {
        /// The target container.
        container: String,
        /// The other volume.
        volume: String,
        /// Where it is mounted.
        mount_path: String,
        /// The log directory it overlaps.
        log_dir: String,
    },
    /// The target container mounts the log volume at the log directory read-only, so the
    /// controller could not write its access log.
    LogMountReadOnly {
        /// The target container.
        container: String,
        /// The log volume.
        volume: String,
    },
}

/// Longest quoted value in a message: annotation values are user input of any size.
const MAX_QUOTED_CHARS: usize = 64;

fn quoted(value: &str) -> String {
    if value.chars().count() <= MAX_QUOTED_CHARS {
        format!("{value:?}")
    } else {
        let prefix: String = value.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{prefix:?}…")
    }
}

impl DenyReason {
    /// Stable label for metrics and events.
    pub fn as_str(&self) -> &'static str {
        match self {
            DenyReason::InvalidPod { .. } => "invalid_pod",
            DenyReason::UnknownTargetContainer { .. } => "unknown_target_container",
            DenyReason::InvalidAnnotation { .. } => "invalid_annotation",
            DenyReason::VolumeConflict { .. } => "volume_conflict",
            DenyReason::MountConflict { .. } => "mount_conflict",
            DenyReason::LogMountReadOnly { .. } => "log_mount_read_only",
        }
    }

    /// The text shown to whoever created the pod: what is wrong and how to fix it.
    pub fn message(&self) -> String {
        match self {
            DenyReason::InvalidPod { problem } => {
                format!("ingress-tap cannot inject into this pod: {problem}")
            }
            DenyReason::UnknownTargetContainer {
                requested,
                available,
            } => format!(
                "annotation ingress-tap/container names container {}, but the pod's containers are: {}",
                quoted(requested),
                available.join(", ")
            ),
            DenyReason::InvalidAnnotation {
                annotation,
                value,
                accepted,
            } => format!(
                "annotation {annotation} has invalid value {}; accepted: {accepted}",
                quoted(value)
            ),
            DenyReason::VolumeConflict {
                volume,
                expected,
                found,
            } => format!(
                "the pod already has a volume named {volume:?} backed by {found}, but ingress-tap needs that name for its {expected} volume; rename the pod's volume or change the volume name in the injection config"
            ),
            DenyReason::MountConflict {
                container,
                volume,
                mount_path,
                log_dir,
            } => format!(
                "container {container:?} already mounts volume {volume:?} at {mount_path:?}, which overlaps the ingress log directory {log_dir:?}; move that mount or change logDir in the injection config"
            ),
            DenyReason::LogMountReadOnly { container, volume } => format!(
                "container {container:?} mounts the log volume {volume:?} read-only, so it could not write the ingress access log; drop readOnly from that mount"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_in_messages() {
        let reason = DenyReason::InvalidAnnotation {
            annotation: "ingress-tap/log-level",
            value: "x".repeat(10_000),
            accepted: "a level",
        };
        let message = reason.message();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn reason_labels_are_snake_case() {
        let labels = [
            SkipReason::DisabledByLabel.as_str(),
            SkipReason::AlreadyInjected.as_str(),
            SkipReason::SidecarPresent.as_str(),
            DenyReason::InvalidPod {
                problem: String::new(),
            }
            .as_str(),
            DenyReason::LogMountReadOnly {
                container: String::new(),
                volume: String::new(),
            }
            .as_str(),
        ];
        for label in labels {
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
        }
    }
}
