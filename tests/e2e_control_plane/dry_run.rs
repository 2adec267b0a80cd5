//! The shipped manifests and `ingress-tap inject` output against the server's dry run and schema.

use super::*;

pub(super) fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

pub(super) fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        tail(&output.stdout, 20),
        tail(&output.stderr, 40)
    );
}

/// Where an object carries a field from [`NEWER_THAN_1_20`], as JSON pointers. A field name
/// counts only where that field lives (`restartPolicy` of a container, not of a pod).
pub(super) fn newer_field_paths(object: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, path: &mut Vec<String>, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(fields) => {
                for (key, child) in fields {
                    let parent = path.last().map(String::as_str).unwrap_or("");
                    let grandparent = path
                        .len()
                        .checked_sub(2)
                        .and_then(|index| path.get(index))
                        .map(String::as_str)
                        .unwrap_or("");
                    let newer = match key.as_str() {
                        "restartPolicy" => grandparent.ends_with("ontainers"),
                        "terminationGracePeriodSeconds" => parent.ends_with("Probe"),
                        other => NEWER_THAN_1_20.iter().any(|(name, _)| *name == other),
                    };
                    path.push(key.clone());
                    if newer {
                        found.insert(format!("/{}", path.join("/")));
                    }
                    walk(child, path, found);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    path.push(index.to_string());
                    walk(item, path, found);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    walk(object, &mut Vec::new(), &mut found);
    found
}

/// The objects of a kubectl `-o json` answer (one object, or a List).
pub(super) fn answered_objects(stdout: &[u8]) -> Vec<Value> {
    let answer: Value = serde_json::from_slice(stdout).expect("kubectl -o json answer");
    if answer["kind"] == "List" {
        answer["items"].as_array().cloned().unwrap_or_default()
    } else {
        vec![answer]
    }
}

pub(super) fn object_key(object: &Value) -> (String, String, String) {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    (
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

/// Server-side dry run of `objects` with kubectl, as a user would run it against this server,
/// and the objects the server answered, keyed by kind, namespace and name.
///
/// kubectl first validates on the client against the server's OpenAPI document, which rejects
/// fields newer than the server. That check is run and may fail only for those fields; the
/// server itself is then asked without it (`--validate=false`), and must accept every object
/// and drop those fields, as any 1.20 server does.
pub(super) fn dry_run_on_server(
    control_plane: &ControlPlane,
    name: &str,
    objects: &[Value],
) -> BTreeMap<(String, String, String), Value> {
    let file = control_plane.scratch(&format!("{name}.yaml"));
    write_yaml_stream(&file, objects);
    let expected_newer: BTreeSet<String> = objects
        .iter()
        .flat_map(|object| {
            newer_field_paths(object)
                .into_iter()
                .filter_map(|path| path.rsplit('/').next().map(str::to_owned))
        })
        .collect();

    let strict = control_plane.kubectl(&["apply", "--dry-run=server", "-f", path_str(&file)]);
    let strict_stderr = String::from_utf8_lossy(&strict.stderr).into_owned();
    let unknown = regex::Regex::new(r#"unknown field "([A-Za-z]+)""#).expect("regex");
    let rejected: BTreeSet<String> = unknown
        .captures_iter(&strict_stderr)
        .filter_map(|captures| captures.get(1).map(|field| field.as_str().to_owned()))
        .collect();
    if strict.status.success() {
        assert!(
            expected_newer.is_empty(),
            "{name}: kubectl's schema check accepted fields a 1.20 server does not know: \
             {expected_newer:?}"
        );
    } else {
        assert!(
            !rejected.is_empty() && !strict_stderr.contains("Error from server"),
            "{name}: the server-side dry run failed for another reason than fields newer \
             than 1.20:\n{strict_stderr}"
        );
        assert_eq!(
            rejected, expected_newer,
            "{name}: kubectl's schema check must reject exactly the fields newer than 1.20 \
             ({NEWER_THAN_1_20:?}):\n{strict_stderr}"
        );
    }

    let lenient = control_plane.kubectl(&[
        "apply",
        "--dry-run=server",
        "--validate=false",
        "-o",
        "json",
        "-f",
        path_str(&file),
    ]);
    assert_success(&lenient, &format!("{name}: server-side dry run"));
    let answered: BTreeMap<_, _> = answered_objects(&lenient.stdout)
        .into_iter()
        .map(|object| (object_key(&object), object))
        .collect();
    for object in objects {
        let key = object_key(object);
        let stored = answered
            .get(&key)
            .unwrap_or_else(|| panic!("{name}: no answer for {}", describe(object)));
        let dropped = newer_field_paths(object);
        let kept: Vec<&String> = dropped
            .iter()
            .filter(|path| stored.pointer(path).is_some())
            .collect();
        assert!(
            kept.is_empty(),
            "{name}: {} kept fields a 1.20 server cannot know: {kept:?}",
            describe(object)
        );
    }
    answered
}

/// Kinds whose API version this 1.20 server does not serve, and the version it does serve
/// with the same schema (what a 1.20 cluster would be given).
pub(super) const NOT_SERVED_ON_1_20: [(&str, &str, &str); 2] = [
    ("batch/v1", "CronJob", "batch/v1beta1"),
    ("policy/v1", "PodDisruptionBudget", "policy/v1beta1"),
];

pub(super) fn is_cert_manager(object: &Value) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|version| version.starts_with("cert-manager.io/"))
}

pub(super) fn manifests_pass_server_dry_run(control_plane: &ControlPlane, base: &[Value]) {
    let overlay = render("manifests/overlays/cert-manager");
    assert!(
        overlay.iter().any(is_cert_manager),
        "the cert-manager overlay renders no cert-manager resources"
    );
    for (name, rendered) in [("manifests", base), ("cert-manager-overlay", &overlay[..])] {
        let (unserved, served): (Vec<Value>, Vec<Value>) = rendered
            .iter()
            .filter(|object| !is_cert_manager(object))
            .cloned()
            .partition(|object| {
                NOT_SERVED_ON_1_20.iter().any(|(version, kind, _)| {
                    object["apiVersion"] == *version && object["kind"] == *kind
                })
            });
        let answered = dry_run_on_server(control_plane, name, &served);
        assert_eq!(answered.len(), served.len(), "{name}: objects answered");

        // The kinds this server does not serve: refused for exactly that reason, and accepted
        // under the API version a 1.20 server serves, which has the same schema.
        for object in unserved {
            let (version, kind, older) = NOT_SERVED_ON_1_20
                .iter()
                .find(|(version, kind, _)| {
                    object["apiVersion"] == *version && object["kind"] == *kind
                })
                .copied()
                .expect("partitioned above");
            let file = control_plane.scratch("unserved.yaml");
            write_yaml_stream(&file, std::slice::from_ref(&object));
            let refused =
                control_plane.kubectl(&["apply", "--dry-run=server", "-f", path_str(&file)]);
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(
                !refused.status.success()
                    && stderr.contains(&format!(
                        "no matches for kind \"{kind}\" in version \"{version}\""
                    )),
                "{name}: {} should be refused by a 1.20 server for its API version only:\n{stderr}",
                describe(&object)
            );
            let mut downgraded = object.clone();
            downgraded["apiVersion"] = json!(older);
            dry_run_on_server(
                control_plane,
                &format!("{name}-{}", kind.to_lowercase()),
                &[downgraded],
            );
        }
    }

    // The shipped Deployment's topology spread uses matchLabelKeys: shown dropped above.
    let deployment = base
        .iter()
        .find(|object| object["kind"] == "Deployment")
        .expect("manifests/ ship the webhook Deployment");
    assert!(
        !newer_field_paths(deployment).is_empty(),
        "the shipped Deployment no longer carries fields newer than 1.20; update docs/e2e.md"
    );
}

/// The OpenShift router template completed the way the cluster-ingress-operator completes it
/// at run time: name, namespace, selector, images and the default certificate's Secret.
pub(super) fn completed_openshift_router() -> Value {
    let text = std::fs::read_to_string(fixture(
        "ingress-controllers/openshift-router-deployment.yaml",
    ))
    .expect("read the OpenShift router template");
    let mut deployment = yaml_documents(&text).remove(0);
    octal_modes_as_numbers(&mut deployment);
    let selector =
        json!({"ingresscontroller.operator.openshift.io/deployment-ingresscontroller": "default"});
    deployment["metadata"] = json!({"name": "router-default", "namespace": "openshift-ingress"});
    deployment["spec"]["replicas"] = json!(1);
    deployment["spec"]["selector"] = json!({"matchLabels": selector.clone()});
    deployment["spec"]["template"]["metadata"]["labels"] = selector;
    let spec = &mut deployment["spec"]["template"]["spec"];
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            container["image"] = json!("registry.invalid/openshift/router:1");
        }
    }
    for volume in spec["volumes"].as_array_mut().into_iter().flatten() {
        if volume["name"] == "default-certificate" {
            volume["secret"]["secretName"] = json!("router-certs-default");
        }
    }
    deployment
}

/// File modes written `0400` are octal numbers to Kubernetes' YAML 1.1 reader but strings to
/// the YAML 1.2 reader used here; the completed template is written back out, so they are
/// turned into the numbers Kubernetes would read.
pub(super) fn octal_modes_as_numbers(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, child) in fields.iter_mut() {
                let octal = match (key.as_str(), &*child) {
                    ("defaultMode" | "mode", Value::String(text)) if text.starts_with('0') => {
                        i64::from_str_radix(text, 8).ok()
                    }
                    _ => None,
                };
                match octal {
                    Some(number) => *child = json!(number),
                    None => octal_modes_as_numbers(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(octal_modes_as_numbers),
        _ => {}
    }
}

/// Runs `ingress-tap inject` on a file; returns the injected stream.
pub(super) fn inject_file(input: &Path, config: &Path) -> Vec<Value> {
    let output = Command::new(binary())
        .args(["inject", "--all", "--config", path_str(config), "-f"])
        .arg(input)
        .output()
        .expect("run ingress-tap inject");
    assert_success(
        &output,
        &format!("ingress-tap inject -f {}", input.display()),
    );
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        report.contains(": injected"),
        "ingress-tap inject injected nothing in {}:\n{report}",
        input.display()
    );
    yaml_documents(&String::from_utf8_lossy(&output.stdout))
}

/// Every pod template of an object (Deployment, DaemonSet, Job: `spec.template`).
pub(super) fn pod_template_spec(object: &Value) -> Option<&Value> {
    object.pointer("/spec/template/spec")
}

pub(super) fn inject_output_passes_server_dry_run(control_plane: &ControlPlane) {
    let config = shipped_config();
    let inputs = [
        fixture("ingress-controllers/ingress-nginx-cloud-deploy.yaml"),
        fixture("ingress-controllers/nginx-inc-deployment.yaml"),
        fixture("ingress-controllers/nginx-inc-daemonset.yaml"),
    ];
    for input in inputs {
        let injected = inject_file(&input, &shipped_config_path());
        let name = input
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or("inject")
            .to_owned();
        let answered = dry_run_on_server(control_plane, &format!("inject-{name}"), &injected);
        // The server validated the injected templates and kept the sidecar in them.
        let with_sidecar = answered
            .values()
            .filter_map(pod_template_spec)
            .filter(|spec| {
                spec["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|container| container["name"] == config.sidecar_name.as_str())
            })
            .count();
        assert!(
            with_sidecar > 0,
            "{name}: no injected pod template in the server's answer"
        );
    }
}

pub(super) fn native_sidecars_need_a_newer_server(control_plane: &ControlPlane) {
    let config = shipped_config();
    let injected = inject_file(
        &fixture("ingress-controllers/nginx-inc-deployment.yaml"),
        &fixture("e2e/inject-config-native-sidecar.yaml"),
    );
    let sidecar_restart_policy = |object: &Value| {
        object
            .pointer("/spec/template/spec/initContainers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|container| container["name"] == config.sidecar_name.as_str())
            .map(|container| container["restartPolicy"].clone())
    };
    assert_eq!(
        sidecar_restart_policy(&injected[0]),
        Some(json!("Always")),
        "native mode injects an init container with restartPolicy Always"
    );

    // A 1.20 server drops restartPolicy: the sidecar would become an ordinary init container
    // that never exits, and the pod would never start. Native sidecars need Kubernetes 1.29.
    let answered = dry_run_on_server(control_plane, "inject-native-sidecar", &injected);
    let stored = answered
        .get(&object_key(&injected[0]))
        .expect("the Deployment was answered");
    assert_eq!(
        sidecar_restart_policy(stored),
        Some(Value::Null),
        "a 1.20 server must store the native sidecar without restartPolicy"
    );

    // So the mode is covered by strict schema validation for the releases that have it.
    validate_schemas_with_native_sidecars(control_plane, "native-sidecar", &injected);
}

/// Strict schema validation (tests/validate_manifests.py, kubernetes-validate) for the oldest
/// release with native sidecars on by default and the newest one the validator knows.
pub(super) fn validate_schemas_with_native_sidecars(
    control_plane: &ControlPlane,
    name: &str,
    objects: &[Value],
) {
    let file = control_plane.scratch(&format!("{name}-schema.yaml"));
    write_yaml_stream(&file, objects);
    let python = std::env::var_os("INGRESS_TAP_VALIDATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository().join("target/kubernetes-validate-venv/bin/python"));
    assert!(
        python.exists(),
        "kubernetes-validate is not installed: run scripts/test.sh (it installs it into \
         target/kubernetes-validate-venv), or point INGRESS_TAP_VALIDATE_PYTHON at a python \
         that has it"
    );
    let validated = Command::new(&python)
        .arg(repository().join("tests/validate_manifests.py"))
        .args([
            "--kubernetes-version",
            "1.29",
            "--kubernetes-version",
            "1.37",
        ])
        .arg(&file)
        .output()
        .expect("run tests/validate_manifests.py");
    assert_success(&validated, &format!("{name}: strict schema validation"));
    let report = String::from_utf8_lossy(&validated.stdout);
    assert!(
        report.contains("Kubernetes 1.29") && report.contains("Kubernetes 1.37"),
        "{name}: {report}"
    );
}

/// The server's reasons for refusing the objects of `file` (its `* ` error lines).
pub(super) fn refusal_reasons(control_plane: &ControlPlane, file: &Path) -> BTreeSet<String> {
    let refused = control_plane.kubectl(&[
        "apply",
        "--dry-run=server",
        "--validate=false",
        "-f",
        path_str(file),
    ]);
    assert!(
        !refused.status.success(),
        "{} was expected to be refused by a 1.20 server",
        file.display()
    );
    String::from_utf8_lossy(&refused.stderr)
        .lines()
        .filter_map(|line| line.strip_prefix("* "))
        // Go pointer values in the messages differ from one request to the next.
        .map(|line| {
            regex::Regex::new("0x[0-9a-f]+")
                .expect("regex")
                .replace_all(line, "0x")
                .into_owned()
        })
        .collect()
}

/// The OpenShift router runs HAProxy as a native sidecar with probes. A 1.20 server drops the
/// sidecar's restartPolicy and then refuses probes on what it takes for an ordinary init
/// container: the router itself cannot run below 1.29, injected or not. The injection must add
/// no reason of its own, and the injected router passes strict schema validation where native
/// sidecars exist.
pub(super) fn openshift_router_needs_a_newer_server(control_plane: &ControlPlane) {
    let plain = control_plane.scratch("openshift-router-default.yaml");
    write_yaml_stream(&plain, &[completed_openshift_router()]);
    let injected_objects = inject_file(&plain, &shipped_config_path());
    let injected = control_plane.scratch("openshift-router-default-injected.yaml");
    write_yaml_stream(&injected, &injected_objects);

    let plain_reasons = refusal_reasons(control_plane, &plain);
    assert!(
        !plain_reasons.is_empty()
            && plain_reasons
                .iter()
                .all(|reason| reason.contains("must not be set for init containers")),
        "the router is refused for its native sidecar's probes only: {plain_reasons:#?}"
    );
    assert_eq!(
        refusal_reasons(control_plane, &injected),
        plain_reasons,
        "the injection adds a reason of its own to refuse the router"
    );
    validate_schemas_with_native_sidecars(control_plane, "openshift-router", &injected_objects);
}
