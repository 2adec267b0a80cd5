//! `ingress-tap block` end to end through the binary: every rendered object validated against
//! its schema, the merge rules (idempotent, extend, prune, remove), each safety rule, the
//! inputs, and the nftables text loaded by a real `nft`.
//!
//! Custom resources are checked against the OpenAPI v3 schemas of their published CRDs in
//! tests/fixtures/crds (see SOURCES.md) by the structural-schema validator below; Kubernetes
//! objects by a strict round trip through k8s-openapi's types and, where scripts/test.sh has
//! installed it, by kubernetes-validate in strict mode as well.

use ingress_tap_core::detect::events::{
    Event, EventConnection, EventDetails, EventKind, Field, EVENT_SCHEMA_VERSION,
};
use ingress_tap_core::detect::heavy_hitters::TopEntry;
use ingress_tap_core::detect::{Suspicious, SUSPICIOUS_SCHEMA_VERSION};
use ingress_tap_core::model::Provenance;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NOW: &str = "2026-01-01T10:00:00Z";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `ingress-tap block ARGS` with `stdin`.
fn block(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingress-tap"))
        .arg("block")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ingress-tap");
    // The binary may stop reading early (a refusal while reading): a closed pipe is fine.
    if let Err(error) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    child.wait_with_output().unwrap()
}

/// Runs and expects success; returns (stdout, stderr).
fn block_ok(args: &[&str], stdin: &str) -> (String, String) {
    let output = block(args, stdin);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "block {args:?} failed: {stderr}\n{stdout}"
    );
    (stdout, stderr)
}

/// `--target nftables --now NOW --from -` followed by `extra`.
fn nftables_from_stdin<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [
        &["--target", "nftables", "--now", NOW, "--from", "-"][..],
        extra,
    ]
    .concat()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .filter(|value: &Value| !value.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {objects:#?}"))
}

/// The `ingress-tap.io/expiries` annotation of `object`.
fn expiries(object: &Value) -> &str {
    object["metadata"]["annotations"]["ingress-tap.io/expiries"]
        .as_str()
        .unwrap()
}

/// `--target calico --from -` over `events`: (stdout, its GlobalNetworkSet, stderr).
fn calico_from_events(events: &str) -> (String, Value, String) {
    let (stdout, stderr) = block_ok(&["--target", "calico", "--now", NOW, "--from", "-"], events);
    let set = find(&documents(&stdout), "GlobalNetworkSet").clone();
    (stdout, set, stderr)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|item| item.as_str().unwrap().to_owned())
        .collect()
}

// ---- structural schema validation ---------------------------------------------------------

/// The `openAPIV3Schema` of the CRD in `file` for `version`.
fn crd_schema(file: &str, version: &str) -> Value {
    let path = manifest_dir().join("tests/fixtures/crds").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let crd: Value = serde_norway::from_str(&text).unwrap();
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .unwrap_or_else(|| panic!("{file} has no version {version}"))
}

/// What validating one value found.
#[derive(Default, Debug)]
struct Findings {
    errors: Vec<String>,
    /// CEL rules on the nodes the value touched: not evaluated here, so the test asserts that
    /// none apply instead of passing them silently.
    unevaluated_rules: Vec<String>,
}

/// A validator for Kubernetes structural schemas: types, properties (unknown fields are
/// errors: the API server would prune them silently, which for us means a lost setting),
/// required, enum, pattern, lengths, bounds, items, additionalProperties, int-or-string,
/// preserve-unknown-fields, nullable, anyOf/allOf/oneOf.
fn validate(schema: &Value, value: &Value, path: &str, findings: &mut Findings) {
    if let Some(rules) = schema.get("x-kubernetes-validations") {
        findings.unevaluated_rules.push(format!("{path}: {rules}"));
    }
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            findings
                .errors
                .push(format!("{path}: {value} is neither integer nor string"));
        }
        return;
    }
    for (keyword, need) in [("anyOf", 1usize), ("oneOf", 1)] {
        if let Some(options) = schema.get(keyword).and_then(Value::as_array) {
            let passing = options
                .iter()
                .filter(|option| {
                    let mut sub = Findings::default();
                    validate_value_only(option, value, path, &mut sub);
                    sub.errors.is_empty()
                })
                .count();
            let ok = if keyword == "oneOf" {
                passing == need
            } else {
                passing >= need
            };
            if !ok {
                findings.errors.push(format!(
                    "{path}: {value} fails {keyword} ({passing} matched)"
                ));
            }
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for option in all {
            validate_value_only(option, value, path, findings);
        }
    }
    let type_ok = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("{path}: schema type {other} not handled"),
    };
    if !type_ok {
        findings
            .errors
            .push(format!("{path}: {value} is not of type {}", schema["type"]));
        return;
    }
    validate_value_only(schema, value, path, findings);
    if path == ".metadata" {
        // Structural schemas leave metadata to the API server: it is checked as ObjectMeta.
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(child_schema), _) => validate(child_schema, child, &child_path, findings),
                    (None, Some(Value::Object(_))) => {
                        validate(additional.unwrap(), child, &child_path, findings)
                    }
                    (None, Some(Value::Bool(true))) => {}
                    (None, _) if preserve => {}
                    (None, _) => findings.errors.push(format!("{child_path}: unknown field")),
                }
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = required.as_str().unwrap();
                if !map.contains_key(key) {
                    findings
                        .errors
                        .push(format!("{path}: required field {key} missing"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{index}]"), findings);
                }
            }
        }
        _ => {}
    }
}

/// Value constraints that do not descend: enum, pattern, lengths, bounds, item counts.
fn validate_value_only(schema: &Value, value: &Value, path: &str, findings: &mut Findings) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            findings
                .errors
                .push(format!("{path}: {value} not in enum {allowed:?}"));
        }
    }
    if let Some(text) = value.as_str() {
        if let Some(pattern) = schema["pattern"].as_str() {
            let regex = regex::Regex::new(pattern).unwrap();
            if !regex.is_match(text) {
                findings
                    .errors
                    .push(format!("{path}: {text:?} does not match {pattern}"));
            }
        }
        if let Some(max) = schema["maxLength"].as_u64() {
            if text.chars().count() as u64 > max {
                findings.errors.push(format!("{path}: longer than {max}"));
            }
        }
        if let Some(min) = schema["minLength"].as_u64() {
            if (text.chars().count() as u64) < min {
                findings.errors.push(format!("{path}: shorter than {min}"));
            }
        }
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64() {
            if number < min {
                findings.errors.push(format!("{path}: {number} < {min}"));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            if number > max {
                findings.errors.push(format!("{path}: {number} > {max}"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema["maxItems"].as_u64() {
            if items.len() as u64 > max {
                findings
                    .errors
                    .push(format!("{path}: more than {max} items"));
            }
        }
        if let Some(min) = schema["minItems"].as_u64() {
            if (items.len() as u64) < min {
                findings
                    .errors
                    .push(format!("{path}: fewer than {min} items"));
            }
        }
    }
}

/// Deserialises into the k8s-openapi type and back: a field the type does not know is lost on
/// the way, and so shows up as a difference.
fn strict_round_trip<T: DeserializeOwned + Serialize>(value: &Value, what: &str) {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|error| panic!("{what} does not deserialise: {error}\n{value:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, value,
        "{what} has fields its Kubernetes type does not know"
    );
}

/// Validates a custom resource: its metadata as ObjectMeta, the rest against the CRD schema.
fn assert_custom_resource_valid(object: &Value, crd_file: &str, version: &str) {
    let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
    strict_round_trip::<ObjectMeta>(&object["metadata"], &format!("{what} metadata"));
    let schema = crd_schema(crd_file, version);
    let mut findings = Findings::default();
    validate(&schema, object, "", &mut findings);
    assert!(
        findings.errors.is_empty(),
        "{what} violates {crd_file}:\n{}\n{object:#}",
        findings.errors.join("\n")
    );
    assert!(
        findings.unevaluated_rules.is_empty(),
        "{what} touches CEL rules this validator does not evaluate: {:?}",
        findings.unevaluated_rules
    );
}

/// kubernetes-validate, strict, through tests/validate_manifests.py, when installed.
fn kubernetes_validate(objects: &[Value]) -> Option<String> {
    let python = std::env::var_os("INGRESS_TAP_VALIDATE_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = manifest_dir().join("target/kubernetes-validate-venv/bin/python");
            venv.is_file().then_some(venv)
        })?;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, ingress_tap_core::block::to_yaml(objects).unwrap()).unwrap();
    let output = Command::new(python)
        .arg(manifest_dir().join("tests/validate_manifests.py"))
        .args(["--kubernetes-version", "1.30"])
        .arg(&file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate rejected:\n{said}"
    );
    Some(said)
}

#[test]
fn the_validator_catches_what_it_claims_to() {
    let schema = crd_schema("crd.projectcalico.org_globalnetworkpolicies.yaml", "v1");
    let broken = serde_json::json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "x"},
        "spec": {
            "order": "first",
            "preDNAT": "yes",
            "ingress": [{"action": "Deny", "source": {"selectr": "a == 'b'"}}],
        }
    });
    let mut findings = Findings::default();
    validate(&schema, &broken, "", &mut findings);
    let errors = findings.errors.join("\n");
    assert!(errors.contains(".spec.order"), "{errors}");
    assert!(errors.contains(".spec.preDNAT"), "{errors}");
    assert!(errors.contains("selectr: unknown field"), "{errors}");

    let tier_schema = crd_schema("crd.projectcalico.org_tiers.yaml", "v1");
    let mut findings = Findings::default();
    let tier = serde_json::json!({"spec": {"defaultAction": "Maybe", "order": 1}});
    validate(&tier_schema, &tier, "", &mut findings);
    assert_eq!(findings.errors.len(), 1, "{:?}", findings.errors);
    assert!(
        findings.errors[0].contains("not in enum"),
        "{:?}",
        findings.errors
    );

    let policy_schema = crd_schema("k8s.nginx.org_policies.yaml", "v1");
    let mut findings = Findings::default();
    let cors = serde_json::json!({"spec": {"cors": {"allowOrigin": ["*"]}}});
    validate(&policy_schema, &cors, "", &mut findings);
    assert!(
        !findings.unevaluated_rules.is_empty(),
        "CEL rules on a touched node must be reported"
    );
}

#[test]
fn calico_objects_match_the_published_crds() {
    for variant in [&[][..], &["--calico-host-endpoints"][..]] {
        let mut args = vec![
            "--target",
            "calico",
            "--now",
            NOW,
            "203.0.113.7",
            "2001:db8::/48",
        ];
        args.extend_from_slice(variant);
        let (stdout, _) = block_ok(&args, "");
        let objects = documents(&stdout);
        let set = find(&objects, "GlobalNetworkSet");
        assert_custom_resource_valid(set, "crd.projectcalico.org_globalnetworksets.yaml", "v1");
        assert_eq!(
            strings(&set["spec"]["nets"]),
            ["203.0.113.7/32", "2001:db8::/48"]
        );
        let policy = find(&objects, "GlobalNetworkPolicy");
        assert_custom_resource_valid(
            policy,
            "crd.projectcalico.org_globalnetworkpolicies.yaml",
            "v1",
        );
        assert_eq!(
            policy["spec"]["ingress"][0]["source"]["selector"],
            format!(
                "ingress-tap.io/blocklist == '{}'",
                set["metadata"]["labels"]["ingress-tap.io/blocklist"]
                    .as_str()
                    .unwrap()
            )
        );
        if variant.is_empty() {
            let tier = find(&objects, "Tier");
            assert_custom_resource_valid(tier, "crd.projectcalico.org_tiers.yaml", "v1");
            assert_eq!(policy["spec"]["tier"], tier["metadata"]["name"]);
            // Without the Pass rule every selected endpoint would become default-deny.
            assert_eq!(policy["spec"]["ingress"][1]["action"], "Pass");
        } else {
            assert_eq!(policy["spec"]["preDNAT"], true);
            assert_eq!(policy["spec"]["applyOnForward"], true);
            assert_eq!(policy["spec"]["selector"], "has(kubernetes-host)");
            assert!(objects.iter().all(|object| object["kind"] != "Tier"));
        }
    }
}

#[test]
fn nginx_inc_policy_matches_the_published_crd_and_attaches() {
    let existing = "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: shop\n  namespace: web\n  annotations:\n    nginx.org/policies: rate-limit\n";
    let dir = tempfile::tempdir().unwrap();
    let existing_path = dir.path().join("existing.yaml");
    std::fs::write(&existing_path, existing).unwrap();
    let (stdout, _) = block_ok(
        &[
            "--target",
            "nginx-inc",
            "--namespace",
            "web",
            "--ingress",
            "web/shop",
            "--existing",
            existing_path.to_str().unwrap(),
            "--now",
            NOW,
            "203.0.113.7",
        ],
        "",
    );
    let objects = documents(&stdout);
    let policy = find(&objects, "Policy");
    assert_custom_resource_valid(policy, "k8s.nginx.org_policies.yaml", "v1");
    assert_eq!(
        strings(&policy["spec"]["accessControl"]["deny"]),
        ["203.0.113.7/32"]
    );
    let ingress = find(&objects, "Ingress");
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.org/policies"],
        "rate-limit,ingress-tap-blocklist",
        "the Ingress's other policies must be kept"
    );
    strict_round_trip::<Ingress>(ingress, "attachment Ingress");
    kubernetes_validate(std::slice::from_ref(ingress));
}

#[test]
fn ingress_nginx_objects_are_valid_kubernetes_objects() {
    let (stdout, stderr) = block_ok(
        &[
            "--target",
            "ingress-nginx",
            "--now",
            NOW,
            "203.0.113.7",
            "198.51.100.0/24",
        ],
        "",
    );
    assert!(
        stderr.contains("proxy-real-ip-cidr"),
        "the real-IP trust warning is missing: {stderr}"
    );
    let objects = documents(&stdout);
    let configmap = find(&objects, "ConfigMap");
    strict_round_trip::<ConfigMap>(configmap, "ConfigMap");
    assert_eq!(configmap["metadata"]["namespace"], "ingress-nginx");
    assert_eq!(configmap["metadata"]["name"], "ingress-nginx-controller");
    assert_eq!(
        configmap["data"]["block-cidrs"],
        "198.51.100.0/24,203.0.113.7/32"
    );

    let (stdout, _) = block_ok(
        &[
            "--target",
            "ingress-nginx",
            "--ingress",
            "web/shop",
            "--ingress",
            "web/api",
            "--now",
            NOW,
            "203.0.113.7",
        ],
        "",
    );
    let ingresses = documents(&stdout);
    assert_eq!(ingresses.len(), 2);
    for ingress in &ingresses {
        strict_round_trip::<Ingress>(ingress, "Ingress");
        assert_eq!(
            ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/denylist-source-range"],
            "203.0.113.7/32"
        );
    }
    let mut all = vec![configmap.clone()];
    all.extend(ingresses);
    if let Some(said) = kubernetes_validate(&all) {
        eprintln!("kubernetes-validate: {said}");
    }
}

// ---- merge rules --------------------------------------------------------------------------

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn the_same_input_twice_gives_byte_identical_objects() {
    let dir = tempfile::tempdir().unwrap();
    let list = write(
        dir.path(),
        "threats.txt",
        "# feed\n203.0.113.0/24 ; scanner\n203.0.113.9\n198.51.100.7 ; brute force\n2001:db8::1\n",
    );
    for target in ["calico", "ingress-nginx", "nginx-inc", "nftables"] {
        let args = ["--target", target, "--now", NOW, "--from", list.as_str()];
        let (first, _) = block_ok(&args, "");
        let (second, _) = block_ok(&args, "");
        assert_eq!(first, second, "{target}: two runs differ");
        // Merging the same input into the first output changes nothing either.
        let previous = write(dir.path(), &format!("{target}.out"), &first);
        let mut again = args.to_vec();
        again.extend(["--existing", previous.as_str()]);
        let (third, report) = block_ok(&again, "");
        assert_eq!(first, third, "{target}: re-run over its own output differs");
        assert!(report.contains("no change"), "{target}: {report}");
        assert!(
            !report.contains(": add "),
            "{target}: re-run reports adds: {report}"
        );
        // The covered /32 was folded into the /24.
        assert!(!first.contains("203.0.113.9"), "{target}: {first}");
    }
}

#[test]
fn reruns_add_extend_keep_others_and_prune_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = block_ok(
        &[
            "--target",
            "calico",
            "--now",
            NOW,
            "--ttl",
            "1h",
            "203.0.113.7",
            "198.51.100.7",
        ],
        "",
    );
    // Someone adds an entry by hand: it has no recorded expiry and must survive every run.
    let edited = first.replace(
        "  - 203.0.113.7/32\n",
        "  - 203.0.113.7/32\n  - 192.0.2.99/32\n",
    );
    assert_ne!(edited, first);
    let previous = write(dir.path(), "v1.yaml", &edited);

    // Thirty minutes later 198.51.100.7 offends again (4h) and 192.0.2.1 is new.
    let (second, report) = block_ok(
        &[
            "--target",
            "calico",
            "--now",
            "2026-01-01T10:30:00Z",
            "--existing",
            &previous,
            "198.51.100.7",
            "192.0.2.1",
        ],
        "",
    );
    let set = find(&documents(&second), "GlobalNetworkSet").clone();
    assert_eq!(
        strings(&set["spec"]["nets"]),
        [
            "192.0.2.1/32",
            "192.0.2.99/32",
            "198.51.100.7/32",
            "203.0.113.7/32"
        ]
    );
    let expiries: Value = serde_json::from_str(expiries(&set)).unwrap();
    assert_eq!(
        expiries,
        serde_json::json!({
            "2026-01-01T11:00:00Z": ["203.0.113.7/32"],
            "2026-01-01T14:30:00Z": ["192.0.2.1/32", "198.51.100.7/32"],
        })
    );
    assert!(report.contains("extend 198.51.100.7/32"), "{report}");
    assert!(report.contains("add 192.0.2.1/32"), "{report}");

    // At noon 203.0.113.7 has expired: kept (and said so) without --prune, gone with it.
    let previous = write(dir.path(), "v2.yaml", &second);
    let base = [
        "--target",
        "calico",
        "--now",
        "2026-01-01T12:00:00Z",
        "--existing",
        &previous,
    ];
    let (kept, report) = block_ok(&base, "");
    assert!(kept.contains("203.0.113.7/32"));
    assert!(report.contains("203.0.113.7/32 has expired"), "{report}");
    let mut pruning = base.to_vec();
    pruning.push("--prune");
    let (pruned, report) = block_ok(&pruning, "");
    let nets = strings(&find(&documents(&pruned), "GlobalNetworkSet")["spec"]["nets"]);
    assert_eq!(nets, ["192.0.2.1/32", "192.0.2.99/32", "198.51.100.7/32"]);
    assert!(report.contains("prune 203.0.113.7/32"), "{report}");

    // And back: --remove unblocks, including entries nobody here manages.
    let previous = write(dir.path(), "v3.yaml", &pruned);
    let (removed, _) = block_ok(
        &[
            "--target",
            "calico",
            "--now",
            "2026-01-01T12:00:00Z",
            "--existing",
            &previous,
            "--remove",
            "192.0.2.0/24",
        ],
        "",
    );
    let nets = strings(&find(&documents(&removed), "GlobalNetworkSet")["spec"]["nets"]);
    assert_eq!(nets, ["198.51.100.7/32"]);
}

// ---- safety rules -------------------------------------------------------------------------

#[test]
fn each_safety_rule_refuses_by_name_and_blocks_the_rest() {
    let cases = [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("192.0.2.10", "trusted proxy range 192.0.2.0/28"),
        ("198.51.100.3", "cluster range 198.51.100.0/25"),
        ("198.51.100.0/24", "cluster range 198.51.100.0/25"),
        ("198.51.100.130", "cluster range 198.51.100.128/26"),
        ("2001:db8:1::5", "cluster range 2001:db8:1::/48"),
        ("0.0.0.0/0", "loopback"),
    ];
    for (address, reason) in cases {
        let (stdout, stderr) = block_ok(
            &[
                "--target",
                "calico",
                "--now",
                NOW,
                "--trusted-proxy",
                "192.0.2.0/28",
                "--cluster-range",
                "198.51.100.0/25",
                "--cluster-range",
                "198.51.100.128/26",
                "--cluster-range",
                "2001:db8:1::/48",
                address,
                "203.0.113.7",
            ],
            "",
        );
        assert!(
            stderr.contains("refused: ") && stderr.contains(reason),
            "{address}: refusal not named ({reason}): {stderr}"
        );
        let nets = strings(&find(&documents(&stdout), "GlobalNetworkSet")["spec"]["nets"]);
        assert_eq!(nets, ["203.0.113.7/32"], "{address} was blocked");
    }
}

#[test]
fn private_shared_unique_local_and_their_nat64_and_6to4_embeddings_are_refused() {
    // (argument, as normalised, what the refusal names)
    let cases = [
        ("10.1.2.3", "10.1.2.3/32", "the private range 10.0.0.0/8 (RFC 1918)"),
        ("172.16.5.0/24", "172.16.5.0/24", "the private range 172.16.0.0/12"),
        ("192.168.1.7", "192.168.1.7/32", "the private range 192.168.0.0/16"),
        ("::ffff:192.168.0.1", "192.168.0.1/32", "the private range 192.168.0.0/16"),
        ("100.64.0.1", "100.64.0.1/32", "the shared address space 100.64.0.0/10"),
        ("100.100.100.100", "100.100.100.100/32", "carrier-grade NAT"),
        ("fd00::1", "fd00::1/128", "the unique local range fc00::/7"),
        (
            "2002:0a00:0001::/48",
            "2002:a00:1::/48",
            "holds 10.0.0.1/32 through its 6to4 (2002::/16) embedding, which overlaps the private range 10.0.0.0/8",
        ),
        ("2002:c0a8::/32", "2002:c0a8::/32", "holds 192.168.0.0/16 through its 6to4"),
        ("2002:6440::1", "2002:6440::1/128", "holds 100.64.0.0/32 through its 6to4"),
        (
            "2002:7f00:1::/48",
            "2002:7f00:1::/48",
            "6to4 (2002::/16) embedding, which overlaps the loopback range",
        ),
        ("2002::/16", "2002::/16", "holds 0.0.0.0/0 through its 6to4"),
        (
            "64:ff9b::10.0.0.1",
            "64:ff9b::a00:1/128",
            "holds 10.0.0.1/32 through its NAT64 (64:ff9b::/96) embedding, which overlaps the private range 10.0.0.0/8",
        ),
        ("64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe/128", "overlaps the link-local range"),
        ("64:ff9b::/96", "64:ff9b::/96", "holds 0.0.0.0/0 through its NAT64"),
        (
            "64:ff9b:1:abcd::172.16.0.1",
            "64:ff9b:1:abcd::ac10:1/128",
            "holds 172.16.0.1/32 through its local-use NAT64 (64:ff9b:1::/48) embedding",
        ),
        (
            "2002:c000:20a::/48",
            "2002:c000:20a::/48",
            "holds 192.0.2.10/32 through its 6to4 (2002::/16) embedding, which overlaps the trusted proxy range 192.0.2.10/32",
        ),
    ];
    let mut args = vec![
        "--target",
        "nftables",
        "--now",
        NOW,
        "--trusted-proxy",
        "192.0.2.10",
    ];
    args.extend(cases.iter().map(|(argument, _, _)| *argument));
    // The same embeddings of public addresses are blocked like any client.
    args.extend(["2002:cb00:7107::/48", "64:ff9b::203.0.113.7", "203.0.113.8"]);
    let (stdout, stderr) = block_ok(&args, "");
    for (argument, net, reason) in cases {
        let refusal = format!("refused: {net} (argument): ");
        let line = stderr
            .lines()
            .find(|line| line.starts_with(&refusal))
            .unwrap_or_else(|| panic!("{argument} not refused: {stderr}"));
        assert!(line.contains(reason), "{argument}: {line}");
        assert!(!stdout.contains(net), "{argument} was blocked: {stdout}");
    }
    for public in ["2002:cb00:7107::/48", "64:ff9b::cb00:7107", "203.0.113.8"] {
        assert!(stdout.contains(public), "{public} missing: {stdout}");
    }
}

#[test]
fn the_cap_refuses_without_force() {
    let list: String = (0..=255)
        .flat_map(|c| (1..=4).map(move |d| format!("198.51.{c}.{d}\n")))
        .collect();
    let args = nftables_from_stdin(&["--max-entries", "1000"]);
    let output = block(&args, &list);
    assert!(
        !output.status.success(),
        "1024 entries passed a cap of 1000"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1024 entries, over the cap of 1000"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "output written despite the refusal"
    );
    let mut forced = args;
    forced.push("--force");
    let (stdout, _) = block_ok(&forced, &list);
    assert!(stdout.contains("198.51.255.4/32 timeout 4h"), "{stdout}");
}

#[test]
fn networks_wider_than_the_minimum_prefix_need_force() {
    let args = [
        "--target",
        "nftables",
        "--now",
        NOW,
        "203.0.0.0/15",
        "2001:db8::/31",
        "198.51.0.0/16",
        "3fff::/32",
    ];
    let (stdout, stderr) = block_ok(&args, "");
    assert_eq!(nft_elements(&stdout), ["198.51.0.0/16", "3fff::/32"]);
    for (net, flag) in [
        ("203.0.0.0/15", "wider than /16 (--min-prefix-v4)"),
        ("2001:db8::/31", "wider than /32 (--min-prefix-v6)"),
    ] {
        let refusal = format!("refused: {net} (argument): {flag}");
        assert!(
            stderr
                .lines()
                .any(|line| line.starts_with(&refusal) && line.contains("--force")),
            "{net}: {stderr}"
        );
    }
    assert!(stderr.contains("2 refused (2 too wide)"), "{stderr}");

    let mut forced = args.to_vec();
    forced.push("--force");
    let (stdout, _) = block_ok(&forced, "");
    assert_eq!(
        nft_elements(&stdout),
        [
            "198.51.0.0/16",
            "203.0.0.0/15",
            "2001:db8::/31",
            "3fff::/32"
        ]
    );

    // The minimum is configurable per family, and --force never lifts a protected range.
    let minimums = [
        "--target",
        "nftables",
        "--now",
        NOW,
        "--min-prefix-v4",
        "24",
        "--min-prefix-v6",
        "48",
    ];
    let (stdout, stderr) = block_ok(
        &[&minimums[..], &["--force", "10.0.0.0/8", "198.51.100.0/24"]].concat(),
        "",
    );
    assert_eq!(nft_elements(&stdout), ["198.51.100.0/24"]);
    assert!(
        stderr.contains("refused: 10.0.0.0/8 (argument): overlaps the private range"),
        "{stderr}"
    );
    let (stdout, stderr) = block_ok(
        &[
            &minimums[..],
            &["198.51.0.0/23", "2001:db8::/47", "198.51.100.0/24"],
        ]
        .concat(),
        "",
    );
    assert_eq!(nft_elements(&stdout), ["198.51.100.0/24"]);
    assert!(
        stderr.contains("wider than /24 (--min-prefix-v4)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("wider than /48 (--min-prefix-v6)"),
        "{stderr}"
    );
    let output = block(
        &[
            "--target",
            "nftables",
            "--min-prefix-v4",
            "33",
            "198.51.100.7",
        ],
        "",
    );
    assert!(!output.status.success(), "a /33 minimum was accepted");
}

#[test]
fn the_total_address_limit_refuses_the_run_without_force() {
    // 257 public /16s: one more than the default limit (a /8's worth) allows.
    let list: String = (0..=255)
        .map(|b| format!("20.{b}.0.0/16\n"))
        .chain(["21.0.0.0/16\n".to_owned()])
        .collect();
    let args = ["--target", "nftables", "--now", NOW, "--from", "-"];
    let output = block(&args, &list);
    assert!(
        !output.status.success(),
        "257 /16s passed the default limit"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("would block 16842752 addresses (IPv4 addresses plus IPv6 /48 networks), over the limit of 16777216"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--max-addresses") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "output written despite the refusal"
    );
    let (stdout, _) = block_ok(&[&args[..], &["--force"]].concat(), &list);
    assert_eq!(nft_elements(&stdout).len(), 257);
    // The first 256 alone are within it.
    let within: String = list
        .lines()
        .take(256)
        .map(|line| format!("{line}\n"))
        .collect();
    block_ok(&args, &within);

    // IPv6 counts in /48s: a /32 is 65,536 of them, and an entry inside another counts once.
    let limited = [
        "--target",
        "nftables",
        "--now",
        NOW,
        "--max-addresses",
        "65536",
        "2001:db8::/32",
        "2001:db8:1::/48",
    ];
    block_ok(&limited, "");
    let output = block(&[&limited[..], &["203.0.113.7"]].concat(), "");
    assert!(!output.status.success(), "65,537 passed a limit of 65,536");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("would block 65537 addresses"), "{stderr}");
}

#[test]
fn a_mapped_address_and_its_ipv4_address_are_one_client() {
    let events = json_lines(&[event(
        "2026-01-01T09:00:00.000Z",
        EventKind::LeakyBucket,
        "login",
        "::ffff:198.51.100.9",
        Field::Source,
        Some(Provenance::Connection),
    )]);
    let (stdout, stderr) = block_ok(
        &nftables_from_stdin(&[
            "::ffff:203.0.113.7",
            "203.0.113.7",
            "198.51.100.9",
            "::ffff:192.0.2.0/120",
            "::ffff:10.1.2.3",
        ]),
        &events,
    );
    assert_eq!(
        nft_elements(&stdout),
        ["192.0.2.0/24", "198.51.100.9/32", "203.0.113.7/32"]
    );
    assert!(!stdout.contains("::ffff"), "{stdout}");
    assert!(
        stderr.contains("refused: 10.1.2.3/32 (argument): overlaps the private range 10.0.0.0/8"),
        "{stderr}"
    );
    // One entry each, however many spellings named it.
    assert!(stderr.contains("table ingress_tap: 3 entries"), "{stderr}");
}

// ---- inputs and targets -------------------------------------------------------------------

/// An event as the collector writes it.
fn event(
    time: &str,
    kind: EventKind,
    name: &str,
    ip: &str,
    field: Field,
    provenance: Option<Provenance>,
) -> Event {
    Event {
        schema_version: EVENT_SCHEMA_VERSION,
        time: time.to_owned(),
        kind,
        name: name.to_owned(),
        ip: ip.parse().unwrap(),
        field,
        provenance,
        connection: EventConnection {
            src_ip: "192.0.2.10".parse().unwrap(),
            src_port: 40_000,
            dst_ip: "192.0.2.20".parse().unwrap(),
            dst_port: 443,
            protocol: "tcp".to_owned(),
        },
        details: EventDetails::default(),
    }
}

fn json_lines(events: &[Event]) -> String {
    events
        .iter()
        .map(|event| event.to_json_line().unwrap())
        .collect()
}

fn top_entry(ip: &str, requests: u64, provenance: Option<Provenance>) -> TopEntry {
    TopEntry {
        ip: ip.parse().unwrap(),
        requests,
        error: 12,
        provenance,
    }
}

/// A `/suspicious` document as the collector serves it, with empty lists.
fn suspicious() -> Suspicious {
    Suspicious {
        schema_version: SUSPICIOUS_SCHEMA_VERSION,
        window_seconds: 300,
        window_started: Some("2026-01-01T09:58:00.000Z".to_owned()),
        top_original: Vec::new(),
        top_sources: Vec::new(),
        previous_window: None,
        recent_events: Vec::new(),
        top_claimed: Vec::new(),
        claimed_events: Vec::new(),
    }
}

/// The report line adding `net`.
fn added_line<'a>(stderr: &'a str, net: &str) -> &'a str {
    let needle = format!(": add {net} ");
    stderr
        .lines()
        .find(|line| line.contains(&needle))
        .unwrap_or_else(|| panic!("{net} not added: {stderr}"))
}

#[test]
fn collector_events_and_suspicious_documents_are_read_from_stdin() {
    let mut listed = event(
        "2026-01-01T09:30:00.000Z",
        EventKind::ThreatList,
        "feed",
        "198.51.100.9",
        Field::Source,
        Some(Provenance::Connection),
    );
    listed.details.cidr = Some("198.51.100.0/25".to_owned());
    listed.details.note = Some("scanner".to_owned());
    let events = json_lines(&[
        event(
            "2026-01-01T09:00:00.000Z",
            EventKind::VolumeThreshold,
            "burst",
            "203.0.113.7",
            Field::Original,
            Some(Provenance::Trusted),
        ),
        listed,
        // Older than the TTL: its block would already be over.
        event(
            "2025-12-31T00:00:00.000Z",
            EventKind::LeakyBucket,
            "slow",
            "198.51.100.10",
            Field::Source,
            Some(Provenance::Connection),
        ),
    ]);
    let (_, set, stderr) = calico_from_events(&events);
    assert_eq!(
        strings(&set["spec"]["nets"]),
        ["198.51.100.9/32", "203.0.113.7/32"]
    );
    // Expiry counts from the event, so the same events later give the same object.
    let expiries = expiries(&set);
    assert!(
        expiries.contains(r#""2026-01-01T13:00:00Z":["203.0.113.7/32"]"#),
        "{expiries}"
    );
    assert!(stderr.contains("skipped: 198.51.100.10/32"), "{stderr}");
    assert!(
        stderr.contains("203.0.113.7/32 seen only in HTTP headers"),
        "calico must warn about header-only addresses: {stderr}"
    );
    assert!(
        !stderr.contains("198.51.100.9/32 seen only"),
        "a connection source is not header-only: {stderr}"
    );
    // The event's rule or list name is the entry's reason in the object's report.
    assert!(
        added_line(&stderr, "203.0.113.7/32").ends_with("[volume_threshold (rule burst)]"),
        "{stderr}"
    );
    assert!(
        added_line(&stderr, "198.51.100.9/32")
            .ends_with("[threat_list (list feed, entry 198.51.100.0/25: scanner)]"),
        "{stderr}"
    );

    let mut summary = suspicious();
    summary.top_original = vec![top_entry("203.0.113.50", 5000, Some(Provenance::Trusted))];
    summary.top_sources = vec![top_entry("192.0.2.10", 9000, Some(Provenance::Connection))];
    summary.recent_events = vec![event(
        "2026-01-01T09:59:00.000Z",
        EventKind::LeakyBucket,
        "login",
        "198.51.100.20",
        Field::Original,
        Some(Provenance::Trusted),
    )];
    let (stdout, stderr) = block_ok(
        &[
            "--target",
            "nginx-inc",
            "--now",
            NOW,
            "--from",
            "-",
            "--top",
            "1",
            "--trusted-proxy",
            "192.0.2.10",
        ],
        &serde_json::to_string_pretty(&summary).unwrap(),
    );
    let policy = find(&documents(&stdout), "Policy").clone();
    assert_eq!(
        strings(&policy["spec"]["accessControl"]["deny"]),
        ["198.51.100.20/32", "203.0.113.50/32"]
    );
    assert!(stderr.contains("refused: 192.0.2.10/32"), "{stderr}");
    assert!(
        added_line(&stderr, "198.51.100.20/32").ends_with("[leaky_bucket (rule login)]"),
        "{stderr}"
    );
}

/// The nets of nftables output, from its header.
fn nft_elements(text: &str) -> Vec<String> {
    let nets = text
        .lines()
        .find_map(|line| line.strip_prefix("# ingress-tap.io/nets: "))
        .unwrap_or_else(|| panic!("no nets header: {text}"));
    serde_json::from_str(nets).unwrap()
}

#[test]
fn claimed_events_are_refused_unless_spoofable_headers_are_trusted() {
    let at = "2026-01-01T09:00:00.000Z";
    let events = json_lines(&[
        event(
            at,
            EventKind::VolumeThreshold,
            "burst",
            "203.0.113.7",
            Field::Original,
            Some(Provenance::Trusted),
        ),
        event(
            at,
            EventKind::VolumeThreshold,
            "burst",
            "203.0.113.66",
            Field::Original,
            Some(Provenance::Claimed),
        ),
        // A collector older than the provenance field: an original IP may have been claimed.
        event(
            at,
            EventKind::LeakyBucket,
            "login",
            "198.51.100.67",
            Field::Original,
            None,
        ),
        // Claimed and in a protected range: the flag lifts only the claimed rule.
        event(
            at,
            EventKind::VolumeThreshold,
            "burst",
            "10.0.0.5",
            Field::Original,
            Some(Provenance::Claimed),
        ),
    ]);
    let args = ["--target", "nftables", "--now", NOW, "--from", "-"];
    let (stdout, stderr) = block_ok(&args, &events);
    assert_eq!(nft_elements(&stdout), ["203.0.113.7/32"]);
    for (net, line) in [
        ("203.0.113.66/32", 2),
        ("198.51.100.67/32", 3),
        ("10.0.0.5/32", 4),
    ] {
        let refusal = format!("refused: {net} (stdin:{line}): claimed: ");
        let said = stderr
            .lines()
            .find(|said| said.starts_with(&refusal))
            .unwrap_or_else(|| panic!("{net} not refused as claimed: {stderr}"));
        assert!(said.contains("--trust-spoofable-headers"), "{said}");
        assert!(said.contains("X-Forwarded-For"), "{said}");
    }
    assert!(
        stderr.contains("summary: 4 candidates: 1 accepted, 3 refused (3 claimed)"),
        "{stderr}"
    );

    let mut trusting = args.to_vec();
    trusting.push("--trust-spoofable-headers");
    let (stdout, stderr) = block_ok(&trusting, &events);
    assert_eq!(
        nft_elements(&stdout),
        ["198.51.100.67/32", "203.0.113.7/32", "203.0.113.66/32"]
    );
    assert!(
        stderr.contains("refused: 10.0.0.5/32 (stdin:4): overlaps the private range 10.0.0.0/8"),
        "{stderr}"
    );
}

#[test]
fn claimed_suspicious_entries_are_refused_or_left_unread_unless_trusted() {
    let mut summary = suspicious();
    summary.top_original = vec![
        top_entry("203.0.113.50", 5000, Some(Provenance::Trusted)),
        // Written by a collector older than the field: taken as claimed.
        top_entry("203.0.113.51", 4000, None),
        top_entry("203.0.113.52", 3000, Some(Provenance::Claimed)),
    ];
    summary.top_claimed = vec![top_entry(
        "198.51.100.66",
        90_000,
        Some(Provenance::Claimed),
    )];
    summary.claimed_events = vec![event(
        "2026-01-01T09:59:00.000Z",
        EventKind::VolumeThreshold,
        "burst",
        "198.51.100.77",
        Field::Original,
        Some(Provenance::Claimed),
    )];
    let text = serde_json::to_string_pretty(&summary).unwrap();
    let args = [
        "--target", "nftables", "--now", NOW, "--from", "-", "--top", "3",
    ];
    let (stdout, stderr) = block_ok(&args, &text);
    assert_eq!(nft_elements(&stdout), ["203.0.113.50/32"]);
    for (net, origin) in [
        ("203.0.113.51/32", "top_original[1]"),
        ("203.0.113.52/32", "top_original[2]"),
    ] {
        let refusal = format!("refused: {net} (stdin: {origin}): claimed: ");
        assert!(
            stderr.lines().any(
                |line| line.starts_with(&refusal) && line.contains("--trust-spoofable-headers")
            ),
            "{net}: {stderr}"
        );
    }
    // The claimed lists are not read at all, and the run says so once.
    assert!(!stderr.contains("198.51.100.66"), "{stderr}");
    assert!(!stderr.contains("198.51.100.77"), "{stderr}");
    assert!(
        stderr.contains("warning: 2 entries of claimed_events and top_claimed not read")
            && stderr.contains("pass --trust-spoofable-headers to read them"),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 candidates: 1 accepted, 2 refused (2 claimed), 0 already expired, 2 claimed not read"),
        "{stderr}"
    );

    let mut trusting = args.to_vec();
    trusting.push("--trust-spoofable-headers");
    let (stdout, stderr) = block_ok(&trusting, &text);
    assert_eq!(
        nft_elements(&stdout),
        [
            "198.51.100.66/32",
            "198.51.100.77/32",
            "203.0.113.50/32",
            "203.0.113.51/32",
            "203.0.113.52/32"
        ]
    );
    assert!(!stderr.contains("refused: "), "{stderr}");
}

#[test]
fn events_missing_a_field_stop_the_run_with_their_line() {
    // The shape the collector never wrote: `rule` for `name`, no connection.
    let complete = json_lines(&[event(
        "2026-01-01T09:00:00.000Z",
        EventKind::VolumeThreshold,
        "burst",
        "203.0.113.7",
        Field::Source,
        Some(Provenance::Connection),
    )]);
    let partial = r#"{"schema_version":1,"time":"2026-01-01T09:00:00Z","kind":"volume_threshold","rule":"burst","ip":"198.51.100.7","field":"source"}"#;
    let output = block(
        &["--target", "calico", "--now", NOW, "--from", "-"],
        &format!("{complete}{partial}\n"),
    );
    assert!(!output.status.success(), "a partial event was accepted");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stdin:2"), "{stderr}");
    assert!(stderr.contains("missing field"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_input_stops_the_run_with_its_place() {
    let output = block(
        &["--target", "calico", "--from", "-"],
        "203.0.113.7\n203.0.113.300\n",
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stdin:2"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn openshift_says_where_to_block_instead() {
    let output = block(&["--target", "openshift", "203.0.113.7"], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no denylist"), "{stderr}");
    assert!(stderr.contains("--target calico"), "{stderr}");
    assert!(stderr.contains("--target nftables"), "{stderr}");
    assert!(output.stdout.is_empty());
}

// ---- nftables with the real nft -----------------------------------------------------------

fn nft() -> PathBuf {
    ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("nft not found: install Debian's nftables package"))
}

/// Asserts that `nft -c` accepts `file`; `context` follows nft's complaint when it does not.
fn nft_accepts(file: &str, context: &str) {
    let check = Command::new(nft())
        .args(["-c", "-f", file])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nft -c rejected the text: {}\n{context}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn nftables_text_loads_into_a_real_nft_and_reloads_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (text, _) = block_ok(
        &[
            "--target",
            "nftables",
            "--now",
            NOW,
            "--ttl",
            "90m",
            "203.0.113.0/24",
            "198.51.100.7",
            "2001:db8::/48",
        ],
        "",
    );
    let file = write(dir.path(), "blocklist.nft", &text);
    nft_accepts(&file, &text);
    // Loaded twice in a private network namespace (the host's firewall is never touched):
    // one copy of each rule, every element with its timeout.
    let script = format!(
        "{nft} -f {file} && {nft} -f {file} && {nft} list table inet ingress_tap",
        nft = nft().display()
    );
    let loaded = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .expect("run unshare (util-linux)");
    let listed = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success(),
        "loading in a network namespace failed (needs root): {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert_eq!(
        listed.matches("ip saddr @blocklist_v4 drop").count(),
        1,
        "{listed}"
    );
    assert_eq!(
        listed.matches("ip6 saddr @blocklist_v6 drop").count(),
        1,
        "{listed}"
    );
    for element in [
        "198.51.100.7 timeout 1h30m",
        "203.0.113.0/24 timeout 1h30m",
        "2001:db8::/48 timeout 1h30m",
    ] {
        assert!(listed.contains(element), "{element} missing:\n{listed}");
    }
}

// ---- empty lists, honest answers, names ---------------------------------------------------

fn configmap_of(yaml: &str) -> Value {
    find(&documents(yaml), "ConfigMap").clone()
}

#[test]
fn an_emptied_ingress_nginx_list_removes_its_key_instead_of_an_empty_value() {
    let dir = tempfile::tempdir().unwrap();
    // ConfigMap: block one, then unblock it.
    let base = ["--target", "ingress-nginx", "--now", NOW];
    let (first, _) = block_ok(&[&base[..], &["203.0.113.7"]].concat(), "");
    assert_eq!(
        configmap_of(&first)["data"]["block-cidrs"],
        "203.0.113.7/32"
    );
    let previous = write(dir.path(), "cm.yaml", &first);
    let (emptied, _) = block_ok(
        &[
            &base[..],
            &["--existing", &previous, "--remove", "203.0.113.7"],
        ]
        .concat(),
        "",
    );
    let configmap = configmap_of(&emptied);
    assert!(
        configmap.pointer("/data/block-cidrs").is_none(),
        "{emptied}"
    );
    assert!(
        configmap
            .pointer("/metadata/annotations/ingress-tap.io~1expiries")
            .is_none(),
        "{emptied}"
    );
    assert!(!emptied.contains("''"), "{emptied}");

    // Ingress annotation: emptied by --prune, and a first run where everything was refused.
    let ingress = ["--target", "ingress-nginx", "--ingress", "web/shop"];
    let (first, _) = block_ok(
        &[&ingress[..], &["--now", NOW, "--ttl", "1h", "203.0.113.7"]].concat(),
        "",
    );
    let previous = write(dir.path(), "ingress.yaml", &first);
    let (pruned, report) = block_ok(
        &[
            &ingress[..],
            &[
                "--now",
                "2026-01-01T12:00:00Z",
                "--prune",
                "--existing",
                &previous,
            ],
        ]
        .concat(),
        "",
    );
    assert!(report.contains("prune 203.0.113.7/32"), "{report}");
    let (refused, _) = block_ok(&[&ingress[..], &["--now", NOW, "10.0.0.1"]].concat(), "");
    for yaml in [&pruned, &refused] {
        let object = find(&documents(yaml), "Ingress").clone();
        let annotations = object["metadata"]["annotations"].as_object().cloned();
        assert!(
            !annotations
                .unwrap_or_default()
                .contains_key("nginx.ingress.kubernetes.io/denylist-source-range"),
            "{yaml}"
        );
    }
}

#[test]
fn removing_an_address_inside_a_wider_entry_names_the_entry_and_split_removes_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = block_ok(
        &[
            "--target",
            "nftables",
            "--now",
            NOW,
            "203.0.113.0/24",
            "203.0.113.7",
        ],
        "",
    );
    assert_eq!(nft_elements(&first), ["203.0.113.0/24"]);
    let previous = write(dir.path(), "v1.nft", &first);
    let args = [
        "--target",
        "nftables",
        "--now",
        NOW,
        "--existing",
        previous.as_str(),
        "--remove",
        "203.0.113.7",
    ];
    let output = block(&args, "");
    assert!(!output.status.success(), "a covered removal passed as done");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--remove 203.0.113.7/32: table ingress_tap still blocks it through 203.0.113.0/24 (until 2026-01-01T14:00:00Z)"),
        "{stderr}"
    );
    assert!(stderr.contains("--split"), "{stderr}");
    assert!(output.stdout.is_empty());

    let (split, report) = block_ok(&[&args[..], &["--split"]].concat(), "");
    let nets = nft_elements(&split);
    assert_eq!(nets.len(), 8, "{nets:?}");
    assert!(!nets.contains(&"203.0.113.7/32".to_owned()));
    assert!(
        report.contains("split 203.0.113.0/24 into 8 networks around 203.0.113.7/32"),
        "{report}"
    );
    // Every other address of the /24 is still blocked, until the same time.
    let covered: u32 = nets
        .iter()
        .map(|net| 1u32 << (32 - net.rsplit('/').next().unwrap().parse::<u32>().unwrap()))
        .sum();
    assert_eq!(covered, 255);
    assert!(split.contains("203.0.113.6/32 timeout 4h"), "{split}");
}

#[test]
fn empty_whitespace_and_comment_only_feeds_fail_unless_allowed() {
    let args = ["--target", "calico", "--now", NOW, "--from", "-"];
    for (input, said) in [
        ("", "stdin: empty"),
        ("  \n\t\n", "stdin: only whitespace"),
        ("# nothing today\n", "stdin: no entries, only comments"),
    ] {
        let output = block(&args, input);
        assert!(!output.status.success(), "{input:?} passed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(said), "{input:?}: {stderr}");
        assert!(stderr.contains("--allow-empty"), "{stderr}");
        assert!(output.stdout.is_empty());
        block_ok(&[&args[..], &["--allow-empty"]].concat(), input);
    }
    // JSON of another shape is an error, with or without the flag.
    for extra in [&[][..], &["--allow-empty"][..]] {
        let output = block(
            &[&args[..], extra].concat(),
            "{\"suspicious\": {\"top\": []}}\n",
        );
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("stdin:1"));
    }
    // A /suspicious document that names nothing to block.
    let output = block(&args, &serde_json::to_string(&suspicious()).unwrap());
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("a /suspicious document with nothing to block"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn event_times_ahead_of_the_clock_count_from_now() {
    let events = json_lines(&[
        event(
            "2099-01-01T00:00:00.000Z",
            EventKind::VolumeThreshold,
            "burst",
            "203.0.113.7",
            Field::Source,
            Some(Provenance::Connection),
        ),
        // Within the allowed skew: taken as it is.
        event(
            "2026-01-01T10:04:00.000Z",
            EventKind::VolumeThreshold,
            "burst",
            "198.51.100.7",
            Field::Source,
            Some(Provenance::Connection),
        ),
    ]);
    let (stdout, set, stderr) = calico_from_events(&events);
    let expiries = expiries(&set);
    assert_eq!(
        expiries,
        r#"{"2026-01-01T14:00:00Z":["203.0.113.7/32"],"2026-01-01T14:04:00Z":["198.51.100.7/32"]}"#
    );
    assert!(!stdout.contains("2099"), "{stdout}");
    assert!(
        stderr.contains("clamped: 203.0.113.7/32 (stdin:1): event time 2099-01-01T00:00:00Z is more than 5m ahead of the clock"),
        "{stderr}"
    );
    assert!(stderr.contains("1 clamped to now"), "{stderr}");
}

#[test]
fn echoed_input_cannot_forge_report_lines_and_names_are_validated() {
    let forged = "burst\nrefused: 198.51.100.1/32 (x): forged\u{1b}[31m";
    let mut listed = event(
        "2026-01-01T09:30:00.000Z",
        EventKind::ThreatList,
        forged,
        "203.0.113.7",
        Field::Source,
        Some(Provenance::Connection),
    );
    listed.details.note = Some("note\r\nsummary: forged".to_owned());
    let (_, stderr) = block_ok(
        &["--target", "nftables", "--now", NOW, "--from", "-"],
        &json_lines(&[listed]),
    );
    assert!(
        !stderr
            .lines()
            .any(|line| line.starts_with("refused: 198.51.100.1")),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|line| line.starts_with("summary:"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("burst\\nrefused"), "{stderr}");
    // A list note and an unknown event kind quoted by the parser's message.
    let (_, stderr) = block_ok(
        &["--target", "nftables", "--now", NOW, "--from", "-"],
        "203.0.113.7 ; a\u{2028}b\u{202e}c\n",
    );
    assert!(
        !stderr.contains('\u{2028}') && !stderr.contains('\u{202e}'),
        "{stderr}"
    );
    let bad_kind = r#"{"schema_version":1,"time":"2026-01-01T09:00:00Z","kind":"x\nsummary: forged","name":"n","ip":"203.0.113.7","field":"source","connection":{"src_ip":"192.0.2.1","src_port":1,"dst_ip":"192.0.2.2","dst_port":2,"protocol":"tcp"},"details":{}}"#;
    let output = block(
        &["--target", "nftables", "--now", NOW, "--from", "-"],
        &format!("{bad_kind}\n"),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    for (flag, value) in [
        ("--calico-tier", "edge\nname"),
        ("--calico-tier", "default"),
        ("--calico-tier", "Edge"),
        ("--calico-tier", "a.b"),
        ("--configmap", "ingress-nginx/bad\nname"),
        ("--configmap", "Ingress-Nginx/controller"),
        ("--ingress", "web/"),
        ("--ingress", "web/shop_1"),
        ("--namespace", "we b"),
        ("--nft-table", "1table"),
        ("--nft-table", "t;flush ruleset"),
        ("--calico-selector", "all()\nx"),
    ] {
        let output = block(
            &[
                "--target",
                "calico",
                "--now",
                NOW,
                flag,
                value,
                "203.0.113.7",
            ],
            "",
        );
        assert!(!output.status.success(), "{flag} {value:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains(value) || !value.contains('\n'), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    block_ok(
        &[
            "--target",
            "calico",
            "--now",
            NOW,
            "--calico-tier",
            "edge-1",
            "203.0.113.7",
        ],
        "",
    );
}

// ---- what others wrote --------------------------------------------------------------------

#[test]
fn labels_annotations_and_fields_others_wrote_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let argo = "argocd.argoproj.io/tracking-id";
    let tracking = "blocklist:projectcalico.org/GlobalNetworkSet:/ingress-tap-blocklist";
    for (target, kind, extra) in [
        ("calico", "GlobalNetworkSet", vec![]),
        ("nginx-inc", "Policy", vec![]),
        ("ingress-nginx", "ConfigMap", vec![]),
        ("ingress-nginx", "Ingress", vec!["--ingress", "web/shop"]),
    ] {
        let base = [&["--target", target, "--now", NOW][..], &extra[..]].concat();
        let (first, _) = block_ok(&[&base[..], &["203.0.113.7"]].concat(), "");
        let mut objects = documents(&first);
        for object in objects.iter_mut().filter(|o| o["kind"] == kind) {
            object["metadata"]["labels"]["team"] = Value::from("edge");
            object["metadata"]["annotations"][argo] = Value::from(tracking);
            object["metadata"]["annotations"]["note"] = Value::from("  spaced\nand 'quoted'  ");
            if kind == "ConfigMap" {
                object["data"]["use-forwarded-headers"] = Value::from("true");
            }
            if kind == "Ingress" {
                object["spec"] = serde_json::json!({"ingressClassName": "nginx"});
            }
        }
        let edited: String = objects
            .iter()
            .map(|o| format!("---\n{}", serde_norway::to_string(o).unwrap()))
            .collect();
        let previous = write(dir.path(), &format!("{target}-{kind}.yaml"), &edited);
        let (second, _) = block_ok(
            &[&base[..], &["--existing", &previous, "198.51.100.7"]].concat(),
            "",
        );
        let object = find(&documents(&second), kind).clone();
        assert_eq!(
            object["metadata"]["labels"]["team"], "edge",
            "{kind}: {second}"
        );
        assert_eq!(object["metadata"]["annotations"][argo], tracking, "{kind}");
        assert_eq!(
            object["metadata"]["annotations"]["note"], "  spaced\nand 'quoted'  ",
            "{kind}"
        );
        assert!(second.contains("198.51.100.7/32"), "{kind}: {second}");
        if kind == "ConfigMap" {
            assert_eq!(object["data"]["use-forwarded-headers"], "true");
        }
        if kind == "Ingress" {
            assert_eq!(object["spec"]["ingressClassName"], "nginx");
        }
        // And the re-run over it is byte-identical.
        let kept = write(dir.path(), &format!("{target}-{kind}-2.yaml"), &second);
        let (third, _) = block_ok(
            &[&base[..], &["--existing", &kept, "198.51.100.7"]].concat(),
            "",
        );
        assert_eq!(third, second, "{kind}");
    }
}

// ---- nftables: no overlaps, and --force above the cap ------------------------------------

fn nft_check(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    nft_accepts(&write(dir.path(), "check.nft", text), "");
}

#[test]
fn nftables_entries_from_every_source_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    // Someone else's entries in the header (no recorded expiry), nested in each other and in
    // what the run adds.
    let (first, _) = block_ok(&["--target", "nftables", "--now", NOW, "198.51.100.7"], "");
    let edited = first.replace(
        r#"# ingress-tap.io/nets: ["198.51.100.7/32"]"#,
        r#"# ingress-tap.io/nets: ["198.51.100.7/32","203.0.113.7/32","192.0.2.0/24","192.0.2.128/25","2001:db8::1/128"]"#,
    );
    assert_ne!(edited, first);
    let previous = write(dir.path(), "v1.nft", &edited);
    let (text, _) = block_ok(
        &[
            "--target",
            "nftables",
            "--now",
            NOW,
            "--existing",
            &previous,
            "203.0.113.0/24",
            "198.51.100.0/24",
            "2001:db8::/64",
        ],
        "",
    );
    nft_check(&text);
    // The header keeps every entry as merged, for the next run.
    let nets = nft_elements(&text);
    assert!(nets.contains(&"203.0.113.7/32".to_owned()), "{nets:?}");
    assert!(nets.contains(&"192.0.2.128/25".to_owned()), "{nets:?}");
    // Loaded for real: the permanent /32 outlives the /24 around it.
    let file = write(dir.path(), "v2.nft", &text);
    let script = format!(
        "{nft} -f {file} && {nft} list table inet ingress_tap",
        nft = nft().display()
    );
    let loaded = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(listed.contains("203.0.113.6 timeout 4h"), "{listed}");
    assert!(!listed.contains("203.0.113.7 timeout"), "{listed}");
    assert!(
        listed.contains("203.0.113.7,") || listed.contains("203.0.113.7 }"),
        "{listed}"
    );
}

#[test]
fn nftables_takes_force_above_the_cap_and_any_size() {
    let list: String = (0..12_000u32)
        .map(|i| format!("2001:db8:{:x}:{:x}::{:x}\n", i / 256, i % 256, i + 1))
        .collect();
    let args = ["--target", "nftables", "--now", NOW, "--from", "-"];
    let output = block(&args, &list);
    assert!(!output.status.success());
    let (text, _) = block_ok(&[&args[..], &["--force"]].concat(), &list);
    assert_eq!(nft_elements(&text).len(), 12_000);
    nft_check(&text);
}

#[test]
fn objects_over_the_api_servers_limits_are_refused_counting_every_copy() {
    // Two copies on an Ingress: the list and its expiries; 9,000 IPv4 addresses do not fit.
    let list: String = (0..9_000u32)
        .map(|i| format!("198.{}.{}.{}\n", 18 + i / 65_536, (i / 256) % 256, i % 256))
        .collect();
    let args = [
        "--target",
        "ingress-nginx",
        "--ingress",
        "web/shop",
        "--now",
        NOW,
        "--from",
        "-",
    ];
    let output = block(&args, &list);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("refused: Ingress web/shop would not fit: its annotations would total")
            && stderr.contains("over the API server's limit of 262144"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    // Someone else's annotations count too: what fits alone may not fit beside them.
    let half: String = list.lines().take(3_000).map(|l| format!("{l}\n")).collect();
    let (fits, _) = block_ok(&args, &half);
    let mut objects = documents(&fits);
    objects[0]["metadata"]["annotations"]["other"] = Value::from("x".repeat(200_000));
    let dir = tempfile::tempdir().unwrap();
    let previous = write(
        dir.path(),
        "big.yaml",
        &serde_norway::to_string(&objects[0]).unwrap(),
    );
    let output = block(
        &[&args[..], &["--existing", &previous, "--allow-empty"]].concat(),
        "",
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("would not fit"));
}

#[test]
fn the_cap_is_checked_while_reading_and_refusals_are_counted_past_a_thousand() {
    let list: String = (0..200_000u32)
        .map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0b00_0000 + i)))
        .collect();
    let output = block(&nftables_from_stdin(&["--max-entries", "1000"]), &list);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line: u32 = stderr
        .split("the input read up to stdin:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line < 200_000,
        "the cap was checked only at the end: {stderr}"
    );
    assert!(stderr.contains("over the cap of 1000"), "{stderr}");

    // 5,000 refused lines: 1,000 listed, the rest counted, the summary exact.
    let refused: String = (0..5_000u32)
        .map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    let output = block(&nftables_from_stdin(&["203.0.113.7"]), &refused);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("refused: "))
            .count(),
        1_000
    );
    assert!(
        stderr.contains("... and 4000 more refused (not listed)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("summary: 5001 candidates: 1 accepted, 5000 refused (5000 protected)"),
        "{stderr}"
    );

    // A line without end is an error, not a growing buffer.
    let output = block(
        &["--target", "nftables", "--from", "-"],
        &"2".repeat(2 << 20),
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("a line longer than"));
}
