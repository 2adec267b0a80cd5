//! Offline injection over workload manifests: a YAML stream in, the same stream out with the
//! webhook's mutation applied to every opted-in pod template.
//!
//! GitOps repositories and objects the webhook never sees (rendered charts, templates reviewed
//! before they reach a cluster) need the very same mutation the webhook would apply, so each
//! pod template goes through [`crate::inject::decide`] with the same config file, and the
//! engine's patch is applied to that template's subtree.
//!
//! **Which templates.** In a cluster the webhook's selectors choose the pods. Offline there are
//! no selectors, so a template is injected only when it opts in with the label
//! `ingress-tap/inject: enabled` on the *pod template* (the label the webhook's object selector
//! matches, so it also keeps pods created from the injected workload recognisable).
//! [`Selection::All`] (`--all`) injects every template that is not labelled
//! `ingress-tap/inject: disabled`.
//!
//! **Where the templates are.** Pod: the object itself; Deployment, DaemonSet, StatefulSet,
//! ReplicaSet (`apps`), ReplicationController (core), Job (`batch`) and DeploymentConfig
//! (`apps.openshift.io`): `spec.template`; CronJob (`batch`): `spec.jobTemplate.spec.template`.
//! A `kind: List` (or any `…List`) document is handled item by item. Kinds are matched together
//! with their API group, so a custom resource that happens to be called `Deployment` is left
//! alone. The template sees the workload's namespace, as the pod created from it would.
//!
//! **What is left untouched.** The stream is cut at its `---` document markers and every
//! document that does not change is written back as its original text, byte for byte, with its
//! comments and layout. Only a changed document is re-serialised; it keeps its marker line and
//! the comments above its first key, and keeps the original order of its keys.
//!
//! **Idempotence.** The engine skips templates that carry the status annotation, so injecting
//! this module's own output changes nothing.

use json_patch::PatchOperation;
use serde_norway::{Mapping, Value as Yaml};
use std::borrow::Cow;
use std::fmt;

use crate::inject::{self, Decision, DenyReason, InjectConfig, SkipReason, INJECT_ENABLED};

/// Which pod templates are injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Only templates labelled `ingress-tap/inject: enabled`.
    #[default]
    OptedIn,
    /// Every template not labelled `ingress-tap/inject: disabled`.
    All,
}

/// Where a pod template sits in a stream, for reports and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based position of the document among the stream's non-empty documents.
    pub document: usize,
    /// 0-based position inside a `List` document's `items`.
    pub item: Option<usize>,
    /// The object's `kind`.
    pub kind: String,
    /// `namespace/name`, `name`, or `<unnamed>`.
    pub name: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        write!(f, " ({} {})", self.kind, self.name)
    }
}

/// What happened to one pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateOutcome {
    /// The sidecar was added.
    Injected,
    /// The engine left it alone, for this reason (already injected, disabled, …).
    Skipped(SkipReason),
    /// Not selected: without `--all`, the template lacks `ingress-tap/inject: enabled`.
    NotOptedIn,
    /// The workload has no pod template (a partial manifest, such as a kustomize patch).
    NoTemplate,
}

/// One workload's pod template and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateReport {
    /// Where the workload is.
    pub location: Location,
    /// What happened.
    pub outcome: TemplateOutcome,
}

/// The result of injecting a whole stream.
#[derive(Debug, Clone)]
pub struct Injection {
    /// The stream with the mutation applied; equal to the input when nothing changed.
    pub output: String,
    /// One entry per workload found, in stream order.
    pub templates: Vec<TemplateReport>,
}

impl Injection {
    /// Whether any template was injected, i.e. whether the output differs from the input.
    pub fn changed(&self) -> bool {
        self.templates
            .iter()
            .any(|report| report.outcome == TemplateOutcome::Injected)
    }
}

/// Why a stream could not be injected. Nothing is written when any document fails: a
/// half-injected set of manifests is worse than none.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("document {document}: not valid YAML: {source}")]
    Yaml {
        document: usize,
        #[source]
        source: serde_norway::Error,
    },
    // Boxed: errors travel through every `?` of the stream walk, and stay small that way.
    #[error("{location}: injection refused ({}): {}", reason.as_str(), reason.message())]
    Denied {
        location: Box<Location>,
        reason: Box<DenyReason>,
    },
    #[error("{location}: {problem}")]
    Malformed {
        location: Box<Location>,
        problem: String,
    },
    #[error("document {document}: cannot write it back as YAML: {source}")]
    Serialise {
        document: usize,
        #[source]
        source: serde_norway::Error,
    },
}

/// Injects every selected pod template in a multi-document YAML stream.
pub fn inject_stream(
    input: &str,
    config: &InjectConfig,
    selection: Selection,
) -> Result<Injection, WorkloadError> {
    let mut output = String::with_capacity(input.len() + input.len() / 4);
    let mut templates = Vec::new();
    let mut document = 0;
    for chunk in split_documents(input) {
        if !has_content(chunk) {
            output.push_str(chunk);
            continue;
        }
        document += 1;
        let mut value: Yaml = serde_norway::from_str(&yaml11_octals_as_yaml12(chunk))
            .map_err(|source| WorkloadError::Yaml { document, source })?;
        let changed = inject_document(&mut value, document, config, selection, &mut templates)?;
        if changed {
            let text = serde_norway::to_string(&value)
                .map_err(|source| WorkloadError::Serialise { document, source })?;
            output.push_str(leading_trivia(chunk));
            output.push_str(&text);
        } else {
            output.push_str(chunk);
        }
    }
    Ok(Injection { output, templates })
}

/// Cuts a stream into documents at `---` marker lines, so that concatenating the pieces gives
/// back the input exactly. A marker belongs to the document it opens. YAML forbids a line
/// starting with `---` followed by a blank inside any document (block scalars included), so a
/// line-based cut cannot split a document in two.
pub fn split_documents(input: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in input.split_inclusive('\n') {
        if offset > start && is_document_marker(line) {
            pieces.push(&input[start..offset]);
            start = offset;
        }
        offset += line.len();
    }
    if start < input.len() || pieces.is_empty() {
        pieces.push(&input[start..]);
    }
    pieces
}

fn is_document_marker(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Whether a piece holds anything beyond markers, blank lines and comments.
fn has_content(chunk: &str) -> bool {
    chunk.lines().any(|line| {
        let body = line
            .strip_prefix("---")
            .filter(|_| is_document_marker(line));
        let body = body.unwrap_or(line).trim();
        !(body.is_empty() || body.starts_with('#') || body == "...")
    })
}

/// Rewrites plain YAML 1.1 octal integers (`defaultMode: 0400`) as YAML 1.2 ones (`0o400`).
///
/// Kubernetes reads manifests as YAML 1.1, where `0400` is the integer 256, while the parser
/// used here follows YAML 1.2, where it is the string "0400": the pod template would not match
/// the pod schema, and a re-serialised document would carry a string where the API expects a
/// number. Only plain scalars that are a whole mapping value or sequence item are rewritten,
/// never text inside block scalars (`|`, `>`), and only in the copy that is parsed; untouched
/// documents are still written back from their original text.
fn yaml11_octals_as_yaml12(chunk: &str) -> Cow<'_, str> {
    let mut rewritten = String::new();
    let mut copied_up_to = 0;
    // Lines indented deeper than this column belong to a block scalar.
    let mut block_parent: Option<usize> = None;
    let mut offset = 0;
    for line in chunk.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_parent {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_parent = None;
        }
        let mut node = line.get(indent..).unwrap_or_default();
        let mut node_column = indent;
        let mut dash_column = None;
        while let Some(rest) = node.strip_prefix("- ") {
            dash_column = Some(node_column);
            let trimmed = rest.trim_start_matches(' ');
            node_column += node.len() - trimmed.len();
            node = trimmed;
        }
        if node.starts_with(['"', '\'', '#']) {
            continue;
        }
        let (value, value_owner) = match node.find(": ") {
            Some(colon) => (node.get(colon + 2..).unwrap_or_default(), Some(node_column)),
            None if dash_column.is_some() => (node, dash_column),
            None => continue,
        };
        let without_comment = value.split(" #").next().unwrap_or_default();
        let scalar = without_comment.trim();
        if scalar.starts_with(['|', '>'])
            && scalar
                .get(1..)
                .unwrap_or_default()
                .bytes()
                .all(|b| b == b'-' || b == b'+' || b.is_ascii_digit())
        {
            block_parent = value_owner;
            continue;
        }
        let is_octal = scalar.len() > 1
            && scalar.starts_with('0')
            && scalar.bytes().all(|b| (b'0'..=b'7').contains(&b));
        if !is_octal {
            continue;
        }
        // `value` and `scalar` are slices of `line`, so their offsets locate the digits.
        let scalar_start =
            line_start + (scalar.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
        rewritten.push_str(chunk.get(copied_up_to..scalar_start).unwrap_or_default());
        rewritten.push_str("0o");
        rewritten.push_str(scalar.get(1..).unwrap_or_default());
        copied_up_to = scalar_start + scalar.len();
    }
    if copied_up_to == 0 {
        return Cow::Borrowed(chunk);
    }
    rewritten.push_str(chunk.get(copied_up_to..).unwrap_or_default());
    Cow::Owned(rewritten)
}

/// The marker line and the comments above a document's first key: kept when the document is
/// re-serialised, since they usually explain the whole object.
fn leading_trivia(chunk: &str) -> &str {
    let mut end = 0;
    for line in chunk.split_inclusive('\n') {
        let trimmed = line.trim();
        let bare_marker = is_document_marker(line) && {
            let rest = trimmed.trim_start_matches('-').trim();
            rest.is_empty() || rest.starts_with('#')
        };
        if end == 0 && is_document_marker(line) && !bare_marker {
            // `--- {…}` or `--- !tag`: the content starts on the marker line itself.
            return "---\n";
        }
        if bare_marker || trimmed.is_empty() || trimmed.starts_with('#') {
            end += line.len();
        } else {
            break;
        }
    }
    // Every piece is cut at line ends, so `end` is a char boundary.
    chunk.get(..end).unwrap_or_default()
}

fn inject_document(
    value: &mut Yaml,
    document: usize,
    config: &InjectConfig,
    selection: Selection,
    reports: &mut Vec<TemplateReport>,
) -> Result<bool, WorkloadError> {
    let is_list = string_at(value, &["kind"]).is_some_and(|kind| kind.ends_with("List"));
    if is_list {
        if let Some(Yaml::Sequence(items)) = value.get_mut("items") {
            let mut changed = false;
            for (index, item) in items.iter_mut().enumerate() {
                changed |=
                    inject_workload(item, document, Some(index), config, selection, reports)?;
            }
            return Ok(changed);
        }
    }
    inject_workload(value, document, None, config, selection, reports)
}

/// The path from a workload's root to its pod template, for the kinds that have one.
fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version
        .rsplit_once('/')
        .map_or("", |(group, _version)| group);
    const SPEC_TEMPLATE: &[&str] = &["spec", "template"];
    match (group, kind) {
        ("", "Pod") => Some(&[]),
        ("", "ReplicationController") => Some(SPEC_TEMPLATE),
        ("apps", "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet") => Some(SPEC_TEMPLATE),
        ("batch", "Job") => Some(SPEC_TEMPLATE),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        ("apps.openshift.io", "DeploymentConfig") => Some(SPEC_TEMPLATE),
        _ => None,
    }
}

fn string_at<'v>(value: &'v Yaml, path: &[&str]) -> Option<&'v str> {
    path.iter()
        .try_fold(value, |node, key| node.get(*key))
        .and_then(Yaml::as_str)
}

fn inject_workload(
    workload: &mut Yaml,
    document: usize,
    item: Option<usize>,
    config: &InjectConfig,
    selection: Selection,
    reports: &mut Vec<TemplateReport>,
) -> Result<bool, WorkloadError> {
    let api_version = string_at(workload, &["apiVersion"]).unwrap_or_default();
    let kind = string_at(workload, &["kind"])
        .unwrap_or_default()
        .to_owned();
    let Some(path) = template_path(api_version, &kind) else {
        return Ok(false);
    };
    let namespace = string_at(workload, &["metadata", "namespace"]).map(str::to_owned);
    let name = match (
        namespace.as_deref(),
        string_at(workload, &["metadata", "name"]),
    ) {
        (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        (None, Some(name)) => name.to_owned(),
        (_, None) => "<unnamed>".to_owned(),
    };
    let location = Location {
        document,
        item,
        kind,
        name,
    };
    let template = path
        .iter()
        .try_fold(&mut *workload, |node, key| node.get_mut(*key));
    let Some(template) = template else {
        reports.push(TemplateReport {
            location,
            outcome: TemplateOutcome::NoTemplate,
        });
        return Ok(false);
    };
    if !template.is_mapping() {
        return Err(WorkloadError::Malformed {
            location: Box::new(location),
            problem: format!("the pod template at /{} is not a mapping", path.join("/")),
        });
    }
    let label = string_at(template, &["metadata", "labels", inject::INJECT_LABEL]);
    let selected = match selection {
        Selection::OptedIn => label == Some(INJECT_ENABLED),
        Selection::All => true,
    };
    if !selected {
        reports.push(TemplateReport {
            location,
            outcome: TemplateOutcome::NotOptedIn,
        });
        return Ok(false);
    }

    let mut pod = serde_json::to_value(&*template).map_err(|error| WorkloadError::Malformed {
        location: Box::new(location.clone()),
        problem: format!("the pod template cannot be read as JSON: {error}"),
    })?;
    // Only fill in a namespace where metadata already exists: the patch is applied to the
    // template as written, so the engine must not see parents the template lacks.
    if let (Some(namespace), Some(metadata)) = (
        namespace,
        pod.get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut),
    ) {
        metadata
            .entry("namespace")
            .or_insert(serde_json::Value::String(namespace));
    }

    match inject::decide(&pod, config) {
        Decision::Inject { patch } => {
            for operation in patch.0 {
                apply_add(template, operation).map_err(|problem| WorkloadError::Malformed {
                    location: Box::new(location.clone()),
                    problem,
                })?;
            }
            reports.push(TemplateReport {
                location,
                outcome: TemplateOutcome::Injected,
            });
            Ok(true)
        }
        Decision::Skip(reason) => {
            reports.push(TemplateReport {
                location,
                outcome: TemplateOutcome::Skipped(reason),
            });
            Ok(false)
        }
        Decision::Deny(reason) => Err(WorkloadError::Denied {
            location: Box::new(location),
            reason: Box::new(reason),
        }),
    }
}

/// Applies one of the engine's `add` operations to the YAML tree in place, so the document
/// keeps the order of its keys (a JSON round trip would sort them).
fn apply_add(root: &mut Yaml, operation: PatchOperation) -> Result<(), String> {
    let PatchOperation::Add(add) = operation else {
        return Err(format!(
            "the engine produced a {:?} operation; only add is applied offline",
            operation
        ));
    };
    let pointer = add.path.as_str().to_owned();
    let value = serde_norway::to_value(&add.value)
        .map_err(|error| format!("cannot convert the value for {pointer} to YAML: {error}"))?;
    let tokens: Vec<String> = add
        .path
        .tokens()
        .map(|token| token.decoded().into_owned())
        .collect();
    let Some((last, parents)) = tokens.split_last() else {
        return Err("the engine tried to replace the whole pod template".to_owned());
    };
    let mut node = root;
    for token in parents {
        node = child_mut(node, token)
            .ok_or_else(|| format!("{pointer}: no parent at /{token} in the pod template"))?;
    }
    match node {
        Yaml::Mapping(mapping) => {
            insert_keeping_position(mapping, last, value);
            Ok(())
        }
        Yaml::Sequence(items) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            match last.parse::<usize>() {
                Ok(index) if index <= items.len() => {
                    items.insert(index, value);
                    Ok(())
                }
                _ => Err(format!("{pointer}: index {last} is out of range")),
            }
        }
        _ => Err(format!(
            "{pointer}: the parent is neither a mapping nor a list"
        )),
    }
}

fn insert_keeping_position(mapping: &mut Mapping, key: &str, value: Yaml) {
    // `Mapping::insert` replaces in place when the key exists, and appends otherwise.
    mapping.insert(Yaml::String(key.to_owned()), value);
}

fn child_mut<'v>(node: &'v mut Yaml, token: &str) -> Option<&'v mut Yaml> {
    match node {
        Yaml::Mapping(mapping) => mapping.get_mut(token),
        Yaml::Sequence(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled_deployment() -> &'static str {
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: edge\nspec:\n  template:\n    metadata:\n      labels:\n        ingress-tap/inject: enabled\n    spec:\n      containers:\n      - name: controller\n        image: nginx\n"
    }

    #[test]
    fn splitting_gives_back_the_input() {
        let inputs = [
            "",
            "a: 1\n",
            "---\na: 1\n---\nb: 2",
            "# head\n---\na: 1\n--- # note\nb: |\n  --- not a marker\n----\n",
            "a: 1\r\n---\r\nb: 2\r\n",
        ];
        for input in inputs {
            assert_eq!(split_documents(input).concat(), input);
        }
        assert_eq!(
            split_documents("---\na: 1\n---\nb: 2").len(),
            2,
            "a leading marker does not open an empty piece"
        );
        assert_eq!(split_documents("a: 1\n---\nb: |\n  ---\n").len(), 2);
    }

    #[test]
    fn yaml11_octals_become_yaml12_octals() {
        let input = "mode: 0400\nlist:\n- 0755 # comment\n- name: x\n  defaultMode: 0644\nport: 8080\nzero: 0\nquoted: \"0400\"\nname: 0400x\n";
        let expected = "mode: 0o400\nlist:\n- 0o755 # comment\n- name: x\n  defaultMode: 0o644\nport: 8080\nzero: 0\nquoted: \"0400\"\nname: 0400x\n";
        assert_eq!(yaml11_octals_as_yaml12(input), expected);
        let parsed: Yaml = serde_norway::from_str(expected).unwrap();
        assert_eq!(parsed["mode"].as_u64(), Some(0o400));
        assert_eq!(parsed["quoted"].as_str(), Some("0400"));
    }

    #[test]
    fn block_scalars_are_not_rewritten() {
        let input = "script: |\n  mode: 0400\n  - 0755\nargs:\n- |\n  mode: 0400\n- >-\n  0644\nafter: 0600\n";
        let output = yaml11_octals_as_yaml12(input);
        assert_eq!(output, input.replace("after: 0600", "after: 0o600"));
        assert!(matches!(
            yaml11_octals_as_yaml12("a: 1\n"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn marker_lines_are_recognised() {
        assert!(is_document_marker("---\n"));
        assert!(is_document_marker("--- # comment\n"));
        assert!(is_document_marker("---"));
        assert!(!is_document_marker("----\n"));
        assert!(!is_document_marker(" ---\n"));
        assert!(!is_document_marker("---x\n"));
    }

    #[test]
    fn trivia_keeps_marker_and_comments_only() {
        assert_eq!(
            leading_trivia("---\n# why\n\nkind: Pod\n# later\n"),
            "---\n# why\n\n"
        );
        assert_eq!(leading_trivia("kind: Pod\n"), "");
        assert_eq!(leading_trivia("--- {kind: Pod}\n"), "---\n");
    }

    #[test]
    fn opted_in_template_is_injected_in_place() {
        let result = inject_stream(
            labelled_deployment(),
            &InjectConfig::default(),
            Selection::OptedIn,
        )
        .unwrap();
        assert!(result.changed());
        let value: Yaml = serde_norway::from_str(&result.output).unwrap();
        let containers = value["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[1]["name"].as_str(), Some("ingress-collector"));
        // Key order of the original document is kept.
        assert!(result
            .output
            .starts_with("apiVersion: apps/v1\nkind: Deployment\n"));
        assert_eq!(result.templates[0].location.name, "edge/web");
    }

    #[test]
    fn unlabelled_template_needs_all() {
        let input = labelled_deployment().replace("ingress-tap/inject: enabled", "app: web");
        let config = InjectConfig::default();
        let opted_in = inject_stream(&input, &config, Selection::OptedIn).unwrap();
        assert!(!opted_in.changed());
        assert_eq!(opted_in.output, input);
        assert_eq!(opted_in.templates[0].outcome, TemplateOutcome::NotOptedIn);
        assert!(inject_stream(&input, &config, Selection::All)
            .unwrap()
            .changed());
    }

    #[test]
    fn disabled_template_is_skipped_even_with_all() {
        let input = labelled_deployment().replace("enabled", "disabled");
        let result = inject_stream(&input, &InjectConfig::default(), Selection::All).unwrap();
        assert_eq!(result.output, input);
        assert_eq!(
            result.templates[0].outcome,
            TemplateOutcome::Skipped(SkipReason::DisabledByLabel)
        );
    }

    #[test]
    fn a_custom_resource_named_deployment_is_not_a_workload() {
        let input = labelled_deployment().replace("apps/v1", "example.com/v1");
        let result = inject_stream(&input, &InjectConfig::default(), Selection::All).unwrap();
        assert_eq!(result.output, input);
        assert!(result.templates.is_empty());
    }

    #[test]
    fn denial_names_document_and_object() {
        let input = format!(
            "kind: ConfigMap\napiVersion: v1\n---\n{}",
            labelled_deployment().replace(
                "      - name: controller",
                "      - name: controller\n      - name: controller"
            )
        );
        let error = inject_stream(&input, &InjectConfig::default(), Selection::OptedIn)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("document 2 (Deployment edge/web)"),
            "{error}"
        );
        assert!(error.contains("invalid_pod"), "{error}");
    }

    #[test]
    fn invalid_yaml_names_the_document() {
        let error = inject_stream(
            "a: 1\n---\nb: [\n",
            &InjectConfig::default(),
            Selection::All,
        )
        .unwrap_err();
        assert!(matches!(error, WorkloadError::Yaml { document: 2, .. }));
    }

    #[test]
    fn list_items_are_injected() {
        let item = labelled_deployment().replace('\n', "\n    ");
        let input = format!("apiVersion: v1\nkind: List\nitems:\n  - {item}\n");
        let result = inject_stream(&input, &InjectConfig::default(), Selection::OptedIn).unwrap();
        assert!(result.changed());
        assert_eq!(result.templates[0].location.item, Some(0));
        let again =
            inject_stream(&result.output, &InjectConfig::default(), Selection::OptedIn).unwrap();
        assert_eq!(again.output, result.output);
    }

    #[test]
    fn workload_without_template_is_left_alone() {
        let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: patch\nspec:\n  replicas: 3\n";
        let result = inject_stream(input, &InjectConfig::default(), Selection::All).unwrap();
        assert_eq!(result.output, input);
        assert_eq!(result.templates[0].outcome, TemplateOutcome::NoTemplate);
    }

    #[test]
    fn add_inserts_into_lists_and_maps() {
        let mut tree: Yaml = serde_norway::from_str("a: [1, 3]\nb: {x: 1}\n").unwrap();
        let add = |path: &str, value: serde_json::Value| {
            PatchOperation::Add(json_patch::AddOperation {
                path: json_patch::jsonptr::PointerBuf::parse(path).unwrap(),
                value,
            })
        };
        apply_add(&mut tree, add("/a/1", serde_json::json!(2))).unwrap();
        apply_add(&mut tree, add("/a/-", serde_json::json!(4))).unwrap();
        apply_add(&mut tree, add("/b/y~1z", serde_json::json!("v"))).unwrap();
        assert!(apply_add(&mut tree, add("/a/9", serde_json::json!(0))).is_err());
        assert!(apply_add(&mut tree, add("/c/d", serde_json::json!(0))).is_err());
        let expected: Yaml =
            serde_norway::from_str("a: [1, 2, 3, 4]\nb: {x: 1, y/z: v}\n").unwrap();
        assert_eq!(tree, expected);
    }
}
