//! Pure sidecar injection: a Pod and the injection config in, a decision and a JSON patch out.
//!
//! Kept free of I/O so the admission webhook and any offline tool share exactly one engine,
//! and so every rule is testable without a cluster:
//! - [`config`]: the injection config file, its defaults and its validation;
//! - [`decide`]: who is injected, which container writes the log, what is added;
//! - the patch: RFC 6902 `add` operations against the pod as received, parents first.

pub mod config;
mod decision;
mod engine;
mod overrides;
mod patch;
mod quantity;
mod render;
mod status;

pub use engine::CheckedString;

pub use config::{
    ConfigError, ExtraEnvVar, FelixVolumeConfig, FelixVolumeKind, ImagePullPolicy, InjectConfig,
    LogLevel, SidecarResources,
};
pub use decision::{Decision, DenyReason, SkipReason};
pub use engine::{decide, decide_view, view_error, LogName, PodJson, PodView};
pub use overrides::{
    CONTAINER_ANNOTATION, INJECT_DISABLED, INJECT_ENABLED, INJECT_LABEL, INTERVAL_ANNOTATION,
    LOG_LEVEL_ANNOTATION, NATIVE_SIDECAR_ANNOTATION, REQUESTS_ANNOTATION, STATUS_ANNOTATION,
};
pub use patch::PatchShapeError;
pub use render::RenderedPatch;
pub use status::{InjectionStatus, STATUS_HASH_CHARS};
