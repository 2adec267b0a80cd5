//! The labels and annotations a pod uses to steer its own injection.
//!
//! Overrides only tune the collector (interval, cap, log level), pick the container that writes
//! the log, and choose the sidecar style. They never change the image, the privileges or the
//! mounts: whoever may create a pod must not gain what the config denies them. An invalid value
//! denies the pod instead of falling back to a default, so a typo is seen at once rather than
//! after a day of missing flow-log data. Unknown `ingress-tap/` keys are ignored, so pods
//! written for a newer version keep working with an older webhook during an upgrade.

use std::collections::BTreeMap;

use super::config::{InjectConfig, LogLevel, ACCEPTED_LOG_LEVELS, INTERVAL_SECONDS_RANGE};
use super::decision::DenyReason;

/// Label that opts a pod out: `ingress-tap/inject: disabled`. The value `enabled` is the
/// opt-in the webhook's object selector matches.
pub const INJECT_LABEL: &str = "ingress-tap/inject";
/// Value of [`INJECT_LABEL`] that opts out.
pub const INJECT_DISABLED: &str = "disabled";
/// Value of [`INJECT_LABEL`] that opts in.
pub const INJECT_ENABLED: &str = "enabled";
/// Written on every injected pod: what was injected, by which version and config.
pub const STATUS_ANNOTATION: &str = "ingress-tap/status";
/// Names the container that writes the access log.
pub const CONTAINER_ANNOTATION: &str = "ingress-tap/container";
/// `"true"` or `"false"`: overrides the config's `nativeSidecar`.
pub const NATIVE_SIDECAR_ANNOTATION: &str = "ingress-tap/native-sidecar";
/// Overrides `intervalSeconds`.
pub const INTERVAL_ANNOTATION: &str = "ingress-tap/interval-seconds";
/// Overrides `requestsPerInterval`.
pub const REQUESTS_ANNOTATION: &str = "ingress-tap/requests-per-interval";
/// Overrides `logLevel`.
pub const LOG_LEVEL_ANNOTATION: &str = "ingress-tap/log-level";

const ACCEPTED_INTERVAL: &str = "an integer from 1 to 3600";
const ACCEPTED_REQUESTS: &str = "an integer; a negative value removes the cap";
const ACCEPTED_BOOLEAN: &str = "true or false";

/// The collector settings for one pod: the config's values with the pod's overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSettings {
    pub interval_seconds: u32,
    pub requests_per_interval: i64,
    pub log_level: LogLevel,
    pub native_sidecar: bool,
}

impl PodSettings {
    pub fn resolve(
        annotations: Option<&BTreeMap<String, String>>,
        config: &InjectConfig,
    ) -> Result<PodSettings, DenyReason> {
        let mut settings = PodSettings {
            interval_seconds: config.interval_seconds,
            requests_per_interval: config.requests_per_interval,
            log_level: config.log_level,
            native_sidecar: config.native_sidecar,
        };
        let Some(annotations) = annotations else {
            return Ok(settings);
        };
        if let Some(value) = annotations.get(INTERVAL_ANNOTATION) {
            settings.interval_seconds = parse_interval(value)
                .ok_or_else(|| invalid(INTERVAL_ANNOTATION, value, ACCEPTED_INTERVAL))?;
        }
        if let Some(value) = annotations.get(REQUESTS_ANNOTATION) {
            settings.requests_per_interval = parse_signed(value)
                .ok_or_else(|| invalid(REQUESTS_ANNOTATION, value, ACCEPTED_REQUESTS))?;
        }
        if let Some(value) = annotations.get(LOG_LEVEL_ANNOTATION) {
            settings.log_level = value
                .parse()
                .map_err(|_| invalid(LOG_LEVEL_ANNOTATION, value, ACCEPTED_LOG_LEVELS))?;
        }
        if let Some(value) = annotations.get(NATIVE_SIDECAR_ANNOTATION) {
            settings.native_sidecar = parse_boolean(value)
                .ok_or_else(|| invalid(NATIVE_SIDECAR_ANNOTATION, value, ACCEPTED_BOOLEAN))?;
        }
        Ok(settings)
    }
}

fn invalid(annotation: &'static str, value: &str, accepted: &'static str) -> DenyReason {
    DenyReason::InvalidAnnotation {
        annotation,
        value: value.to_owned(),
        accepted,
    }
}

/// Plain decimal digits only: `+5`, ` 5` or `5.0` are refused rather than guessed at.
fn parse_interval(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u32>()
        .ok()
        .filter(|seconds| INTERVAL_SECONDS_RANGE.contains(seconds))
}

fn parse_signed(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_boolean(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(pairs: &[(&str, &str)]) -> Result<PodSettings, DenyReason> {
        let annotations: BTreeMap<String, String> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        PodSettings::resolve(Some(&annotations), &InjectConfig::default())
    }

    #[test]
    fn no_annotations_means_the_config() {
        let settings = PodSettings::resolve(None, &InjectConfig::default()).unwrap();
        assert_eq!(settings.interval_seconds, 5);
        assert_eq!(settings.requests_per_interval, 5);
        assert_eq!(settings.log_level, LogLevel::Info);
        assert!(!settings.native_sidecar);
    }

    #[test]
    fn valid_overrides_apply() {
        let settings = resolve(&[
            (INTERVAL_ANNOTATION, "3600"),
            (REQUESTS_ANNOTATION, "-1"),
            (LOG_LEVEL_ANNOTATION, "dEbUg"),
            (NATIVE_SIDECAR_ANNOTATION, "TRUE"),
        ])
        .unwrap();
        assert_eq!(settings.interval_seconds, 3600);
        assert_eq!(settings.requests_per_interval, -1);
        assert_eq!(settings.log_level, LogLevel::Debug);
        assert!(settings.native_sidecar);
    }

    #[test]
    fn invalid_overrides_name_the_annotation() {
        let cases = [
            (INTERVAL_ANNOTATION, "0"),
            (INTERVAL_ANNOTATION, "3601"),
            (INTERVAL_ANNOTATION, "+5"),
            (INTERVAL_ANNOTATION, " 5"),
            (INTERVAL_ANNOTATION, "99999999999"),
            (REQUESTS_ANNOTATION, "ten"),
            (REQUESTS_ANNOTATION, "-"),
            (REQUESTS_ANNOTATION, "1.5"),
            (REQUESTS_ANNOTATION, "99999999999999999999"),
            (LOG_LEVEL_ANNOTATION, "verbose"),
            (NATIVE_SIDECAR_ANNOTATION, "yes"),
        ];
        for (annotation, value) in cases {
            match resolve(&[(annotation, value)]) {
                Err(DenyReason::InvalidAnnotation {
                    annotation: named,
                    value: offending,
                    ..
                }) => {
                    assert_eq!(named, annotation);
                    assert_eq!(offending, value);
                }
                other => panic!("{annotation}={value:?} gave {other:?}"),
            }
        }
    }
}
