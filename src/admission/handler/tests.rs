use super::*;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::Status;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

fn sample() -> Value {
    serde_json::from_str(crate::admission::dev::SAMPLE_REVIEW).unwrap()
}

fn body(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).unwrap()
}

/// The answer to `body` by both paths: the single pass takes every plain review but one
/// whose pod the view refuses (which the general path denies), and agrees with the general
/// path on what it takes.
fn both_paths(body: &[u8], config: &InjectConfig) -> (Outcome, Vec<u8>, String) {
    let tree = review_tree(body, config).unwrap();
    let text = String::from_utf8_lossy(body);
    match PlainReview::read(body) {
        Some(plain) => assert_same_answer(&plain.answer(config).unwrap(), &tree, &text),
        None => assert_eq!(tree.outcome, Outcome::Denied("invalid_pod"), "{text}"),
    }
    let name = tree.pod_name();
    (tree.outcome, tree.body, name)
}

fn assert_same_answer(single: &Answer, tree: &Answer, context: &str) {
    assert_eq!(single.outcome, tree.outcome, "{context}");
    assert_eq!(
        String::from_utf8_lossy(&single.body),
        String::from_utf8_lossy(&tree.body),
        "{context}"
    );
    assert_eq!(
        (
            &single.uid,
            &single.namespace,
            single.dry_run,
            single.pod_name()
        ),
        (&tree.uid, &tree.namespace, tree.dry_run, tree.pod_name()),
        "{context}"
    );
}

/// The answer as kube's types write it through a JSON tree, for comparison.
fn kube_answer(
    review: &Value,
    patch: Option<json_patch::Patch>,
    deny: Option<(&str, &str)>,
) -> Value {
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review.clone()).unwrap();
    let request: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
    let mut response = AdmissionResponse::from(&request);
    if let Some((reason, message)) = deny {
        let message = format!("ingress-tap: {message}");
        response = response.deny(&message);
        response.result = Status::failure(&message, &format!("Forbidden/{reason}")).with_code(403);
    }
    let mut answer = serde_json::to_value(response.into_review()).unwrap();
    if let Some(patch) = patch {
        answer["response"]["patch"] =
            json!(base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&patch).unwrap()));
        answer["response"]["patchType"] = json!("JSONPatch");
    }
    answer
}

#[test]
fn an_injection_is_answered_as_kube_writes_it() {
    let config = InjectConfig::default();
    let review = sample();
    let (outcome, answer, name) = both_paths(&body(&review), &config);
    assert_eq!(outcome, Outcome::Injected);
    let Decision::Inject { patch } = inject::decide(&review["request"]["object"], &config) else {
        panic!("the sample is injected");
    };
    let expected = kube_answer(&review, Some(patch), None);
    assert_eq!(answer, serde_json::to_vec(&expected).unwrap());
    let expected_name = review["request"]["object"]["metadata"]
        .get("name")
        .or(review["request"]["object"]["metadata"].get("generateName"))
        .and_then(Value::as_str)
        .unwrap();
    assert_eq!(name, expected_name);
}

#[test]
fn the_encoded_patch_follows_the_patch() {
    let review = sample();
    let bytes = body(&review);
    let default = InjectConfig::default();
    let native = InjectConfig {
        native_sidecar: true,
        ..InjectConfig::default()
    };
    let renamed = InjectConfig {
        sidecar_name: "other-collector".to_owned(),
        ..InjectConfig::default()
    };
    // Alternating, so that every answer but the first follows one for another patch, and
    // each config is answered again from the last encoding.
    for config in [&default, &native, &native, &renamed, &default, &default] {
        let answer = review_body(&bytes, config);
        let Decision::Inject { patch } = inject::decide(&review["request"]["object"], config)
        else {
            panic!("the sample is injected");
        };
        let encoded = answer["response"]["patch"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, serde_json::to_vec(&patch).unwrap());
    }
}

fn review_body(bytes: &[u8], config: &InjectConfig) -> Value {
    serde_json::from_slice(&review(bytes, config).unwrap().body).unwrap()
}

#[test]
fn skips_and_denials_are_answered_as_kube_writes_them() {
    let config = InjectConfig::default();
    let mut not_pod = sample();
    not_pod["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let (outcome, answer, _) = both_paths(&body(&not_pod), &config);
    assert_eq!(outcome, Outcome::Skipped("not_a_pod"));
    assert_eq!(
        answer,
        serde_json::to_vec(&kube_answer(&not_pod, None, None)).unwrap()
    );

    let mut beta = sample();
    beta["apiVersion"] = json!("admission.k8s.io/v1beta1");
    beta["request"]["object"]["metadata"]["annotations"] = json!({"ingress-tap/container": "nope"});
    let (outcome, answer, _) = both_paths(&body(&beta), &config);
    assert_eq!(outcome, Outcome::Denied("unknown_target_container"));
    let Decision::Deny(reason) = inject::decide(&beta["request"]["object"], &config) else {
        panic!("the unknown target is denied");
    };
    let expected = kube_answer(&beta, None, Some((reason.as_str(), &reason.message())));
    assert_eq!(answer, serde_json::to_vec(&expected).unwrap());
    let text = String::from_utf8(answer).unwrap();
    assert!(
        text.starts_with(r#"{"apiVersion":"admission.k8s.io/v1beta1""#),
        "{text}"
    );
}

#[test]
fn both_paths_agree_on_every_kind_of_request() {
    let config = InjectConfig::default();
    let mut cases = Vec::new();
    let mut update = sample();
    update["request"]["operation"] = json!("UPDATE");
    cases.push((update, Outcome::Skipped("not_a_create")));
    let mut status = sample();
    status["request"]["subResource"] = json!("status");
    cases.push((status, Outcome::Skipped("subresource")));
    let mut dry = sample();
    dry["request"]["dryRun"] = json!(true);
    cases.push((dry, Outcome::Injected));
    let mut opted_out = sample();
    opted_out["request"]["object"]["metadata"]["labels"] =
        json!({"ingress-tap/inject": "disabled"});
    cases.push((opted_out, Outcome::Skipped("disabled_by_label")));
    let mut malformed = sample();
    malformed["request"]["object"]["spec"]["containers"] = json!("controller");
    cases.push((malformed, Outcome::Denied("invalid_pod")));
    let mut named = sample();
    named["request"]["object"]["metadata"]["name"] = json!("explicit");
    cases.push((named, Outcome::Injected));
    let mut escaped = sample();
    escaped["request"]["uid"] = json!("quote \" and \u{e9}");
    escaped["request"]["object"]["metadata"]["annotations"] = json!({"a\"b": "\u{2603}"});
    cases.push((escaped, Outcome::Injected));
    for (review, expected) in cases {
        let (outcome, _, _) = both_paths(&body(&review), &config);
        assert_eq!(outcome, expected, "{review}");
    }
}

#[test]
fn a_schema_denial_reads_the_same_from_text_and_from_a_tree() {
    let config = InjectConfig::default();
    let mut malformed = sample();
    malformed["request"]["object"]["spec"]["containers"] = json!([{"name": 7}]);
    let bytes = body(&malformed);
    let answer = review(&bytes, &config).unwrap();
    let answer: Value = serde_json::from_slice(&answer.body).unwrap();
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("pod schema"), "{message}");
    assert!(!message.contains(" at line "), "{message}");
    let Decision::Deny(reason) = inject::decide(&malformed["request"]["object"], &config) else {
        panic!("a numeric container name is denied");
    };
    assert_eq!(message, format!("ingress-tap: {}", reason.message()));
}

#[test]
fn unusual_bodies_take_the_general_path_with_its_answers() {
    let config = InjectConfig::default();
    let plain = body(&sample());
    let text = String::from_utf8(plain.clone()).unwrap();
    // A repeated key: the tree keeps the last value, so the general path answers.
    let repeated = text.replacen(r#""dryRun":false"#, r#""dryRun":true,"dryRun":false"#, 1);
    assert_ne!(repeated, text);
    assert!(PlainReview::read(repeated.as_bytes()).is_none());
    let answer = review(repeated.as_bytes(), &config).unwrap();
    assert_eq!(answer.outcome, Outcome::Injected);
    assert!(!answer.dry_run);
    // A request given as an array, a response in a request, a stray kind, bad syntax.
    let mut array_request = sample();
    array_request["request"] = json!(["uid"]);
    let mut with_response = sample();
    with_response["response"] = json!({"uid": "x", "allowed": true});
    let mut pod_kind = sample();
    pod_kind["kind"] = json!("Pod");
    let mut no_request = sample();
    no_request["request"] = Value::Null;
    let truncated = &plain[..plain.len() - 1];
    let bodies = [
        body(&array_request),
        body(&with_response),
        body(&pod_kind),
        body(&no_request),
        truncated.to_vec(),
        b"[1,2,3]".to_vec(),
        b"\xff".to_vec(),
    ];
    for bytes in &bodies {
        assert!(PlainReview::read(bytes).is_none());
        let via_review = review(bytes, &config).map(|answer| answer.outcome);
        let via_tree = review_tree(bytes, &config).map(|answer| answer.outcome);
        assert_eq!(format!("{via_review:?}"), format!("{via_tree:?}"));
    }
    assert!(matches!(
        review(&body(&pod_kind), &config),
        Err(ReviewError::NotAdmissionReview(_))
    ));
    assert!(matches!(
        review(&body(&no_request), &config),
        Err(ReviewError::NoRequest)
    ));
    assert!(matches!(
        review(truncated, &config),
        Err(ReviewError::NotJson(_))
    ));
    for refused in [&array_request, &with_response] {
        assert!(matches!(
            review(&body(refused), &config),
            Err(ReviewError::NotAdmissionReview(_))
        ));
    }
}

#[test]
fn the_pod_name_falls_back_like_the_tree_reads_it() {
    let config = InjectConfig::default();
    let mut named = sample();
    named["request"]["name"] = json!("from-request");
    let metadata = &mut named["request"]["object"]["metadata"];
    metadata["generateName"] = json!("generated-");
    metadata["name"] = Value::Null;
    // A present but null name hides generateName, as a JSON pointer lookup does.
    let (_, _, name) = both_paths(&body(&named), &config);
    assert_eq!(name, "from-request");
    named["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    let (_, _, name) = both_paths(&body(&named), &config);
    assert_eq!(name, "generated-");
    named["request"]["object"]["metadata"] = json!("not an object");
    let (_, _, name) = both_paths(&body(&named), &config);
    assert_eq!(name, "from-request");
}

/// A review that uses every part the review reads: labels and annotations of ours and not,
/// init containers, volumes (one named like ours), mounts, pull secrets, a user with extras.
fn rich_review() -> Value {
    let mut review: Value = serde_json::from_str(crate::admission::dev::SAMPLE_REVIEW).unwrap();
    let request = &mut review["request"];
    request["name"] = json!("");
    request["subResource"] = json!(null);
    request["requestSubResource"] = json!("");
    request["userInfo"] = json!({
        "username": "system:serviceaccount:kube-system:replicaset-controller",
        "uid": "b1c7", "groups": ["system:serviceaccounts", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["x"], "scopes": []},
    });
    let object = &mut request["object"];
    object["metadata"]["annotations"] = json!({
        "ingress-tap/interval-seconds": "7", "prometheus.io/scrape": "tr\"ue\\n",
    });
    object["metadata"]["name"] = json!(null);
    object["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    object["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "webhook-cert", "mountPath": "/usr/local/certificates/", "readOnly": true}]);
    object["spec"]["volumes"] = json!([
        {"name": "webhook-cert", "secret": {"secretName": "ingress-nginx-admission"}},
        {"name": "ingress-tap-log", "emptyDir": {}},
    ]);
    object["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
    object["status"] = json!({"phase": "Pending", "conditions": [{"type": "x", "n": -1.5e-3}]});
    review
}

/// Keys the review looks for somewhere, for mutations that add or repeat members.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "request",
    "response",
    "uid",
    "resource",
    "subResource",
    "requestKind",
    "requestResource",
    "requestSubResource",
    "name",
    "namespace",
    "operation",
    "userInfo",
    "object",
    "oldObject",
    "dryRun",
    "options",
    "group",
    "version",
    "api_version",
    "extra",
    "groups",
    "username",
    "metadata",
    "spec",
    "labels",
    "annotations",
    "generateName",
    "containers",
    "initContainers",
    "volumes",
    "imagePullSecrets",
    "volumeMounts",
    "mountPath",
    "ingress-tap/container",
    "ingress-tap/inject",
    "emptyDir",
];

/// Values in every JSON type, with escapes and `\u` in strings.
const VALUES: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1.5e3",
    "\"\"",
    "\"x\"",
    "\"CREATE\"",
    "\"Pod\"",
    "\"a\\\"b\"",
    "\"\\u0041\"",
    "\"\\ud800\"",
    "\"ingress-tap/x\"",
    "[]",
    "{}",
    "[null]",
    "[\"x\"]",
    "{\"name\":\"x\"}",
    "{\"name\":\"ingress-tap-log\",\"emptyDir\":{}}",
    "[{\"name\":\"controller\"}]",
    "{\"x\":[1,{\"y\":\"z\"}]}",
];

const BYTES: &[u8] = b"\"\\{}[],:0123456789eE.+-tfnulr /u\x01\x1f";

fn mutate(base: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut body = base.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let at = rng.random_range(0..=body.len());
        match rng.random_range(0..6) {
            0 if at < body.len() => {
                body.remove(at);
            }
            1 => body.insert(at, BYTES[rng.random_range(0..BYTES.len())]),
            2 if at < body.len() => body[at] = BYTES[rng.random_range(0..BYTES.len())],
            // A member inserted at the start of some object: new keys, repeated keys.
            3 | 4 => {
                let opens: Vec<usize> = (0..body.len()).filter(|&i| body[i] == b'{').collect();
                let Some(&open) = opens.get(rng.random_range(0..opens.len().max(1))) else {
                    continue;
                };
                let key = KEYS[rng.random_range(0..KEYS.len())];
                let value = VALUES[rng.random_range(0..VALUES.len())];
                let member = format!("\"{key}\":{value},");
                body.splice(open + 1..open + 1, member.bytes());
            }
            // A value replaced: the text after some colon up to the next comma or brace.
            _ => {
                let colons: Vec<usize> = (0..body.len()).filter(|&i| body[i] == b':').collect();
                let Some(&colon) = colons.get(rng.random_range(0..colons.len().max(1))) else {
                    continue;
                };
                let end = (colon + 1..body.len())
                    .find(|&i| matches!(body[i], b',' | b'}' | b']'))
                    .unwrap_or(body.len());
                let value = VALUES[rng.random_range(0..VALUES.len())];
                body.splice(colon + 1..end, value.bytes());
            }
        }
    }
    body
}

#[test]
fn the_single_pass_reads_plain_reviews() {
    for review in [sample(), rich_review()] {
        for body in [
            serde_json::to_vec(&review).unwrap(),
            serde_json::to_vec_pretty(&review).unwrap(),
        ] {
            assert!(PlainReview::read(&body).is_some());
            both_paths(&body, &InjectConfig::default());
        }
    }
}

/// Mutants of three reviews (bytes changed, members with known keys inserted, values
/// replaced): each is answered or refused without panicking, every answer is an
/// AdmissionReview for the request's uid, and whenever the single pass takes a mutant the
/// general path gives it the same answer.
#[test]
fn mutated_reviews_get_one_answer_whichever_path_reads_them() {
    let config = InjectConfig::default();
    let bases = [
        serde_json::to_vec(&rich_review()).unwrap(),
        serde_json::to_vec_pretty(&rich_review()).unwrap(),
        crate::admission::dev::SAMPLE_REVIEW.as_bytes().to_vec(),
    ];
    let mut rng = StdRng::seed_from_u64(0x1a9e55);
    let (mut single, mut general, mut unparsable) = (0, 0, 0);
    for round in 0..30_000 {
        let body = mutate(&bases[round % bases.len()], &mut rng);
        let text = String::from_utf8_lossy(&body);
        if let Ok(answer) = review(&body, &config) {
            let response: Value = serde_json::from_slice(&answer.body)
                .unwrap_or_else(|err| panic!("{err} in the answer to {text}"));
            assert_eq!(response["kind"], REVIEW_KIND, "{text}");
            assert_eq!(response["response"]["uid"], answer.uid.as_str(), "{text}");
            let denied = matches!(answer.outcome, Outcome::Denied(_));
            assert_eq!(response["response"]["allowed"], !denied, "{text}");
        }
        let Some(plain) = PlainReview::read(&body) else {
            general += 1;
            continue;
        };
        single += 1;
        match (plain.answer(&config), review_tree(&body, &config)) {
            (Ok(plain), Ok(tree)) => assert_same_answer(&plain, &tree, &text),
            // A tree holds decoded strings: a string the single pass skips may hold a lone
            // surrogate's escape (serde_json checks a `\u` escape only where it decodes
            // it), which a tree cannot hold. The single pass answers such a body.
            (_, Err(ReviewError::NotJson(error))) if error.to_string().contains("hex escape") => {
                unparsable += 1;
            }
            (plain, tree) => assert_eq!(
                format!("{:?}", plain.map(|answer| answer.outcome)),
                format!("{:?}", tree.map(|answer| answer.outcome)),
                "{text}"
            ),
        }
    }
    // Both paths are exercised: the mutations are neither all fatal nor all harmless.
    assert!(
        single > 3_000 && general > 3_000,
        "single pass {single}, general path {general}"
    );
    assert!(
        unparsable < single / 10,
        "{unparsable} of {single} not trees"
    );
}
