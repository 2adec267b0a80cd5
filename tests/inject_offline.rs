//! `ingress-tap inject`: golden files over real controller manifests, idempotence, untouched
//! documents, and the command line's exit codes.
//!
//! Every `tests/golden/NAME.yaml` is injected with the pinned config in
//! `tests/golden/config/` and compared with `tests/golden/NAME.yaml.injected`. The status
//! annotation's version and config hash are replaced by placeholders in the golden files, so a
//! version bump does not break them; the real values are checked separately. Run with
//! `UPDATE_GOLDEN=1` to rewrite the golden files after an intended change, and review the diff.

use crate::common;

use ingress_tap_core::inject::{InjectConfig, InjectionStatus, SkipReason, STATUS_ANNOTATION};
use ingress_tap_core::workload::{inject_stream, split_documents, Selection, TemplateOutcome};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GOLDEN_SUFFIX: &str = ".injected";
const VERSION_PLACEHOLDER: &str = "VERSION";
const HASH_PLACEHOLDER: &str = "CONFIG_HASH";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn pinned_config_path() -> PathBuf {
    golden_dir().join("config/inject-config.yaml")
}

fn pinned_config() -> InjectConfig {
    InjectConfig::from_yaml(&std::fs::read_to_string(pinned_config_path()).unwrap()).unwrap()
}

fn golden_inputs() -> Vec<PathBuf> {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no golden inputs in {:?}", golden_dir());
    inputs
}

fn twin_of(input: &Path) -> PathBuf {
    let mut name = input.file_name().unwrap().to_os_string();
    name.push(GOLDEN_SUFFIX);
    input.with_file_name(name)
}

/// Replaces what changes with every release by placeholders: the crate version and the config
/// hash (any new config key changes the canonical form, hence the hash).
fn normalise(text: &str) -> String {
    let version = format!(r#""version":"{}""#, env!("CARGO_PKG_VERSION"));
    let mut out = text.replace(&version, &format!(r#""version":"{VERSION_PLACEHOLDER}""#));
    let marker = r#""configHash":""#;
    let mut from = 0;
    while let Some(found) = out[from..].find(marker) {
        let start = from + found + marker.len();
        let end = start + out[start..].find('"').unwrap();
        out.replace_range(start..end, HASH_PLACEHOLDER);
        from = start + HASH_PLACEHOLDER.len();
    }
    out
}

fn inject_file(path: &Path) -> ingress_tap_core::workload::Injection {
    let input = std::fs::read_to_string(path).unwrap();
    inject_stream(&input, &pinned_config(), Selection::OptedIn)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every status annotation in a stream, parsed.
fn statuses(stream: &str) -> Vec<InjectionStatus> {
    let mut found = Vec::new();
    for piece in split_documents(stream) {
        let Ok(document) = serde_norway::from_str::<serde_norway::Value>(piece) else {
            continue;
        };
        collect_statuses(&document, &mut found);
    }
    found
}

fn collect_statuses(node: &serde_norway::Value, found: &mut Vec<InjectionStatus>) {
    match node {
        serde_norway::Value::Mapping(mapping) => {
            for (key, value) in mapping {
                if key.as_str() == Some(STATUS_ANNOTATION) {
                    found.push(serde_json::from_str(value.as_str().unwrap()).unwrap());
                } else {
                    collect_statuses(value, found);
                }
            }
        }
        serde_norway::Value::Sequence(items) => {
            items.iter().for_each(|item| collect_statuses(item, found))
        }
        _ => {}
    }
}

#[test]
fn golden_files_match() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|value| value == "1");
    let mut failures = Vec::new();
    for input in golden_inputs() {
        let injection = inject_file(&input);
        assert!(
            injection.changed(),
            "{}: a golden input must inject something",
            input.display()
        );
        let actual = normalise(&injection.output);
        let twin = twin_of(&input);
        if update {
            std::fs::write(&twin, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&twin) {
            Err(_) => failures.push(format!(
                "{} is missing; run with UPDATE_GOLDEN=1",
                twin.display()
            )),
            Ok(expected) if expected != actual => failures.push(format!(
                "{} differs from the output; run with UPDATE_GOLDEN=1 and review the diff",
                twin.display()
            )),
            Ok(_) => {}
        }
    }
    // A golden output without its input is stale: it tests nothing.
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(input_name) = name.strip_suffix(GOLDEN_SUFFIX) {
            if !path.with_file_name(input_name).exists() {
                failures.push(format!("{} has no input {input_name}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn placeholders_hide_the_real_version_and_hash() {
    let config = pinned_config();
    let hash = config.hash();
    for input in golden_inputs() {
        let injection = inject_file(&input);
        let found = statuses(&injection.output);
        assert!(!found.is_empty(), "{}", input.display());
        for status in found {
            assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
            assert!(hash.starts_with(&status.config_hash), "{}", input.display());
        }
        assert!(!normalise(&injection.output).contains(&hash[..16]));
    }
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    for input in golden_inputs() {
        let first = inject_file(&input);
        let second = inject_stream(&first.output, &pinned_config(), Selection::OptedIn).unwrap();
        assert_eq!(second.output, first.output, "{}", input.display());
        assert!(!second.changed());
        assert!(second
            .templates
            .iter()
            .all(|report| report.outcome != TemplateOutcome::Injected));
        assert!(second
            .templates
            .iter()
            .any(|report| report.outcome == TemplateOutcome::Skipped(SkipReason::AlreadyInjected)));
    }
}

#[test]
fn only_injected_documents_differ_from_the_input() {
    for input in golden_inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let injection = inject_file(&input);
        let before = split_documents(&text);
        let after = split_documents(&injection.output);
        assert_eq!(before.len(), after.len(), "{}", input.display());
        let mut injected_documents: Vec<usize> = injection
            .templates
            .iter()
            .filter(|report| report.outcome == TemplateOutcome::Injected)
            .map(|report| report.location.document)
            .collect();
        injected_documents.dedup();
        let differing = before
            .iter()
            .zip(&after)
            .filter(|(old, new)| old != new)
            .count();
        assert_eq!(differing, injected_documents.len(), "{}", input.display());
    }
}

#[test]
fn cloud_deploy_changes_only_the_controller_deployment() {
    let input = golden_dir().join("ingress-nginx-cloud-deploy.yaml");
    let text = std::fs::read_to_string(&input).unwrap();
    let injection = inject_file(&input);
    let before = split_documents(&text);
    let after = split_documents(&injection.output);
    assert!(before.len() > 15, "the cloud manifest has many documents");
    for (old, new) in before.iter().zip(&after) {
        if old.contains("\nkind: Deployment\n") {
            assert_ne!(old, new);
        } else {
            // Namespace, RBAC, ConfigMap, Services, the two admission Jobs (not opted in),
            // IngressClass, ValidatingWebhookConfiguration: byte for byte.
            assert_eq!(old, new);
        }
    }
    let jobs: Vec<_> = injection
        .templates
        .iter()
        .filter(|report| report.location.kind == "Job")
        .collect();
    assert_eq!(jobs.len(), 2);
    assert!(jobs
        .iter()
        .all(|report| report.outcome == TemplateOutcome::NotOptedIn));
}

#[test]
fn every_template_kind_is_found() {
    let injection = inject_file(&golden_dir().join("workload-kinds.yaml"));
    let outcomes: Vec<(String, String, TemplateOutcome)> = injection
        .templates
        .into_iter()
        .map(|report| (report.location.kind, report.location.name, report.outcome))
        .collect();
    let injected =
        |kind: &str, name: &str| (kind.to_owned(), name.to_owned(), TemplateOutcome::Injected);
    assert_eq!(
        outcomes,
        vec![
            injected("Pod", "edge/bare-pod"),
            injected("StatefulSet", "edge/stateful-ingress"),
            injected("ReplicaSet", "replica-ingress"),
            injected("Job", "one-shot"),
            injected("CronJob", "batch/nightly"),
            injected("DeploymentConfig", "openshift-ingress/router-dc"),
            injected("DaemonSet", "edge/listed"),
            (
                "Deployment".to_owned(),
                "not-opted-in".to_owned(),
                TemplateOutcome::NotOptedIn
            ),
            (
                "Deployment".to_owned(),
                "opted-out".to_owned(),
                TemplateOutcome::NotOptedIn
            ),
        ]
    );
}

/// The YAML-side application of the patch must mean exactly what the webhook's JSON patch
/// means: apply the engine's patch to the input template as JSON and compare.
#[test]
fn output_equals_the_webhook_patch_applied_to_each_template() {
    let config = pinned_config();
    let mut checked = 0;
    for input in golden_inputs() {
        // Kubernetes reads `0400` as YAML 1.1 octal; say so explicitly for this JSON view.
        let text = std::fs::read_to_string(&input)
            .unwrap()
            .replace("defaultMode: 0400", "defaultMode: 0o400");
        let output = inject_stream(&text, &config, Selection::OptedIn)
            .unwrap()
            .output;
        for (old, new) in split_documents(&text).iter().zip(split_documents(&output)) {
            if *old == new {
                continue;
            }
            let old: Value = serde_norway::from_str(old).unwrap();
            let new: Value = serde_norway::from_str(new).unwrap();
            for pointer in template_pointers(&old) {
                let mut template = old.pointer(&pointer).unwrap().clone();
                let ingress_tap_core::inject::Decision::Inject { patch } =
                    ingress_tap_core::inject::decide(&template, &config)
                else {
                    continue;
                };
                json_patch::patch(&mut template, &patch).unwrap();
                assert_eq!(
                    new.pointer(&pointer),
                    Some(&template),
                    "{} {pointer}",
                    input.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 11, "only {checked} templates compared");
}

fn template_pointers(document: &Value) -> Vec<String> {
    if let Some(items) = document.get("items").and_then(Value::as_array) {
        return items
            .iter()
            .enumerate()
            .flat_map(|(index, item)| {
                template_pointers(item)
                    .into_iter()
                    .map(move |pointer| format!("/items/{index}{pointer}"))
            })
            .collect();
    }
    match document.get("kind").and_then(Value::as_str) {
        Some("Pod") => vec![String::new()],
        Some("CronJob") => vec!["/spec/jobTemplate/spec/template".to_owned()],
        Some("Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job")
        | Some("DeploymentConfig") => vec!["/spec/template".to_owned()],
        _ => Vec::new(),
    }
}

#[test]
fn octal_file_modes_stay_numbers() {
    let injection = inject_file(&golden_dir().join("openshift-router-deployment.yaml"));
    let document: Value = serde_norway::from_str(&injection.output).unwrap();
    let volumes = document
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .unwrap();
    let modes: Vec<&Value> = volumes
        .iter()
        .filter_map(|volume| {
            [
                "/secret/defaultMode",
                "/configMap/defaultMode",
                "/projected/defaultMode",
            ]
            .iter()
            .find_map(|pointer| volume.pointer(pointer))
        })
        .collect();
    // `0400` is YAML 1.1 octal, as Kubernetes reads it; `420` is decimal in the source.
    let expected = [420, 420, 0o400].map(Value::from);
    assert_eq!(modes, expected.iter().collect::<Vec<_>>());
}

// ---- the command line -------------------------------------------------------------------

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    common::output_with_stdin(binary().args(args), stdin)
}

fn config_arg() -> String {
    pinned_config_path().to_string_lossy().into_owned()
}

#[test]
fn cli_reads_stdin_and_writes_stdout() {
    let input_path = golden_dir().join("nginx-inc-deployment.yaml");
    let input = std::fs::read_to_string(&input_path).unwrap();
    let output = run_with_stdin(&["inject", "--config", &config_arg()], &input);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout, inject_file(&input_path).output);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("document 1 (Deployment nginx-ingress/nginx-ingress): injected"),
        "{stderr}"
    );
}

#[test]
fn cli_check_exit_codes() {
    let config = config_arg();
    let labelled = golden_dir().join("ingress-nginx-controller-deployment.yaml");
    let labelled = labelled.to_str().unwrap();
    let check = |file: &str, extra: &[&str]| {
        let mut args = vec!["inject", "--check", "--config", config.as_str(), "-f", file];
        args.extend_from_slice(extra);
        binary().args(&args).output().unwrap()
    };

    let would_change = check(labelled, &[]);
    assert_eq!(would_change.status.code(), Some(1), "{would_change:?}");
    assert!(would_change.stdout.is_empty(), "--check writes no manifest");
    assert!(String::from_utf8_lossy(&would_change.stderr).contains("would inject"));

    // The injected output is a fixed point.
    let dir = tempfile::tempdir().unwrap();
    let injected = dir.path().join("injected.yaml");
    let written = binary()
        .args(["inject", "--config", &config, "-f", labelled, "-o"])
        .arg(&injected)
        .output()
        .unwrap();
    assert_eq!(written.status.code(), Some(0), "{written:?}");
    assert!(written.stdout.is_empty(), "with -o nothing goes to stdout");
    let fixed_point = check(injected.to_str().unwrap(), &[]);
    assert_eq!(fixed_point.status.code(), Some(0), "{fixed_point:?}");

    // The unmodified upstream manifest is not opted in, unless --all says so.
    let upstream = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ingress-controllers/ingress-nginx-controller-deployment.yaml");
    let upstream = upstream.to_str().unwrap();
    assert_eq!(check(upstream, &[]).status.code(), Some(0));
    assert_eq!(check(upstream, &["--all"]).status.code(), Some(1));
}

#[test]
fn cli_all_injects_unlabelled_upstream_manifests() {
    let upstream = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ingress-controllers/nginx-inc-daemonset.yaml");
    let output = binary()
        .args(["inject", "--all", "--config", &config_arg(), "-f"])
        .arg(&upstream)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let injected = String::from_utf8(output.stdout).unwrap();
    assert_eq!(statuses(&injected).len(), 1);
    let document: Value = serde_norway::from_str(&injected).unwrap();
    let names: Vec<&str> = document
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .filter_map(|container| container.get("name").and_then(Value::as_str))
        .collect();
    assert_eq!(names, ["nginx-ingress", "ingress-collector"]);
}

#[test]
fn cli_denial_names_the_document_and_writes_nothing() {
    let input = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken, namespace: edge}\nspec:\n  template:\n    metadata:\n      labels: {ingress-tap/inject: enabled}\n      annotations: {ingress-tap/container: missing}\n    spec:\n      containers: [{name: controller, image: nginx}]\n";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.yaml");
    let output = run_with_stdin(&["inject", "-f", "-", "-o", out.to_str().unwrap()], input);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("document 2 (Deployment edge/broken)"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown_target_container"), "{stderr}");
    assert!(stderr.contains("\"missing\""), "{stderr}");
    assert!(
        !out.exists(),
        "nothing is written when a template is refused"
    );
}

#[test]
fn cli_reports_bad_input_and_bad_config() {
    let invalid_yaml = run_with_stdin(&["inject"], "kind: Pod\n---\nspec: [unclosed\n");
    assert_eq!(invalid_yaml.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid_yaml.stderr).contains("document 2: not valid YAML"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "sidecarNmae: typo\n").unwrap();
    let bad_config = run_with_stdin(&["inject", "--config", config.to_str().unwrap()], "");
    assert_eq!(bad_config.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_config.stderr).contains("invalid injection config"));

    let missing = binary()
        .args(["inject", "-f", "/nonexistent/manifest.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}
