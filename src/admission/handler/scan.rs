//! The review's envelope read by the fast path ([`ingress_tap_core::json_scan`]), the pod by
//! [`PodView::scan`], instead of serde.
//!
//! It reads what the serde single pass reads ([`ReviewText`] and [`RequestText`]), field for
//! field with the same types' rules, and gives up (`None`) wherever that pass would refuse the
//! body or where following it exactly would take more than this reader does: a repeated key,
//! escapes in a kept string or in a key, an `oldObject` (never sent with a CREATE), any part
//! not of the JSON type the serde pass reads it as. Giving up sends the body to the serde pass,
//! which reads it the same way or hands it to the general path that words the refusal.

use std::borrow::Cow;
use std::marker::PhantomData;

use kube::core::admission::Operation;
use serde::de::IgnoredAny;

use super::{
    Checked, CheckedString, KindText, PlainReview, RequestText, Text, REVIEW_API_VERSIONS,
    REVIEW_KIND,
};
use ingress_tap_core::inject::PodView;
use ingress_tap_core::json_scan::{optional, Scanner, SeenKeys};

/// The review in `text`, when the fast path reads it whole.
pub(super) fn review(text: &str) -> Option<PlainReview<'_, PodView>> {
    let mut scanner = Scanner::new(text);
    let mut seen = SeenKeys::default();
    let (mut api_version, mut kind, mut request) = (None, None, None);
    scanner.object(|scanner, key| match key {
        "apiVersion" => {
            seen.first(0)?;
            api_version = Some(borrowed(scanner)?);
            Some(())
        }
        "kind" => {
            seen.first(1)?;
            kind = Some(borrowed(scanner)?);
            Some(())
        }
        "request" => {
            seen.first(2)?;
            request = Some(scan_request(scanner)?);
            Some(())
        }
        // A request never carries one; the serde pass leaves a present one to the general path.
        "response" => {
            seen.first(3)?;
            scanner.null().then_some(())
        }
        _ => scanner.skip(),
    })?;
    scanner.end()?;
    let (api_version, kind, request) = (api_version?, kind?, request?);
    let known = kind.as_str() == REVIEW_KIND && REVIEW_API_VERSIONS.contains(&api_version.as_str());
    known.then_some(PlainReview {
        api_version,
        request,
    })
}

fn scan_request<'body>(scanner: &mut Scanner<'body>) -> Option<RequestText<'body, PodView>> {
    let mut seen = SeenKeys::default();
    let mut uid = None;
    let mut kind = None;
    let mut sub_resource = None;
    let mut name = Text::default();
    let mut namespace = None;
    let mut operation = None;
    let mut object = None;
    let mut dry_run = false;
    let mut options = None;
    scanner.object(|scanner, key| match key {
        "uid" => {
            seen.first(0)?;
            uid = Some(borrowed(scanner)?);
            Some(())
        }
        "kind" => {
            seen.first(1)?;
            kind = Some(scan_kind(scanner)?);
            Some(())
        }
        "resource" => {
            seen.first(2)?;
            scan_resource(scanner)
        }
        "subResource" => {
            seen.first(3)?;
            sub_resource = optional(scanner, borrowed)?;
            Some(())
        }
        "requestKind" => {
            seen.first(4)?;
            optional(scanner, scan_kind_shape).map(drop)
        }
        "requestResource" => {
            seen.first(5)?;
            optional(scanner, scan_resource).map(drop)
        }
        "requestSubResource" => {
            seen.first(6)?;
            optional(scanner, Scanner::checked_str).map(drop)
        }
        "name" => {
            seen.first(7)?;
            name = borrowed(scanner)?;
            Some(())
        }
        "namespace" => {
            seen.first(8)?;
            namespace = optional(scanner, borrowed)?;
            Some(())
        }
        "operation" => {
            seen.first(9)?;
            operation = Some(scan_operation(scanner)?);
            Some(())
        }
        "userInfo" => {
            seen.first(10)?;
            scan_user_info(scanner)
        }
        "object" => {
            seen.first(11)?;
            object = optional(scanner, PodView::scan)?;
            Some(())
        }
        // kube's `DynamicObject` is not followed here; a CREATE has none.
        "oldObject" => {
            seen.first(12)?;
            scanner.null().then_some(())
        }
        "dryRun" => {
            seen.first(13)?;
            dry_run = scanner.bool()?;
            Some(())
        }
        "options" => {
            seen.first(14)?;
            options = optional(scanner, Scanner::skip)?.map(|()| IgnoredAny);
            Some(())
        }
        _ => scanner.skip(),
    })?;
    // Required as in the serde pass: uid, kind, resource, operation and userInfo.
    let required = [0, 1, 2, 9, 10];
    if !required.iter().all(|&index| seen.contains(index)) {
        return None;
    }
    Some(RequestText {
        uid: uid?,
        kind: kind?,
        resource: Checked(PhantomData),
        sub_resource,
        request_kind: Checked(PhantomData),
        request_resource: Checked(PhantomData),
        request_sub_resource: Checked(PhantomData),
        name,
        namespace,
        operation: operation?,
        user_info: Checked(PhantomData),
        object,
        old_object: Checked(PhantomData),
        dry_run,
        options,
    })
}

/// kube's `GroupVersionKind`, with the parts the decision reads.
fn scan_kind<'body>(scanner: &mut Scanner<'body>) -> Option<KindText<'body>> {
    let mut seen = SeenKeys::default();
    let (mut group, mut kind) = (None, None);
    scanner.object(|scanner, key| match key {
        "group" => {
            seen.first(0)?;
            group = Some(borrowed(scanner)?);
            Some(())
        }
        "version" => {
            seen.first(1)?;
            scanner.checked_str()
        }
        "kind" => {
            seen.first(2)?;
            kind = Some(borrowed(scanner)?);
            Some(())
        }
        _ => scanner.skip(),
    })?;
    seen.contains(1).then_some(())?;
    Some(KindText {
        group: group?,
        version: CheckedString,
        kind: kind?,
    })
}

/// kube's `GroupVersionKind`, checked and not kept.
fn scan_kind_shape(scanner: &mut Scanner<'_>) -> Option<()> {
    checked_strings(scanner, &["group", "version", "kind"], &[])
}

/// kube's `GroupVersionResource`, checked and not kept.
fn scan_resource(scanner: &mut Scanner<'_>) -> Option<()> {
    checked_strings(scanner, &["group", "version", "resource"], &["api_version"])
}

/// An object whose `required` and `optional` members are strings (each at most once, the
/// required ones present), other members skipped.
fn checked_strings(scanner: &mut Scanner<'_>, required: &[&str], optional: &[&str]) -> Option<()> {
    let mut seen = SeenKeys::default();
    scanner.object(|scanner, key| {
        let index = required
            .iter()
            .chain(optional)
            .position(|name| *name == key);
        match index {
            Some(index) => {
                seen.first(u32::try_from(index).ok()?)?;
                scanner.checked_str()
            }
            None => scanner.skip(),
        }
    })?;
    (0..required.len())
        .all(|index| seen.contains(index as u32))
        .then_some(())
}

/// k8s-openapi's `UserInfo`, checked and not kept.
fn scan_user_info(scanner: &mut Scanner<'_>) -> Option<()> {
    let mut seen = SeenKeys::default();
    scanner.object(|scanner, key| match key {
        "extra" => {
            seen.first(0)?;
            optional(scanner, |scanner| {
                scanner.object(|scanner, _| checked_string_list(scanner))
            })
            .map(drop)
        }
        "groups" => {
            seen.first(1)?;
            optional(scanner, checked_string_list).map(drop)
        }
        "uid" => {
            seen.first(2)?;
            optional(scanner, Scanner::checked_str).map(drop)
        }
        "username" => {
            seen.first(3)?;
            optional(scanner, Scanner::checked_str).map(drop)
        }
        _ => scanner.skip(),
    })
}

fn checked_string_list(scanner: &mut Scanner<'_>) -> Option<()> {
    scanner.array(Scanner::checked_str)
}

/// kube's `Operation`, from its string form only.
fn scan_operation(scanner: &mut Scanner<'_>) -> Option<Operation> {
    match scanner.str()? {
        "CREATE" => Some(Operation::Create),
        "UPDATE" => Some(Operation::Update),
        "DELETE" => Some(Operation::Delete),
        "CONNECT" => Some(Operation::Connect),
        _ => None,
    }
}

/// A string without escapes, borrowed as the serde pass's `Text` borrows one.
fn borrowed<'body>(scanner: &mut Scanner<'body>) -> Option<Text<'body>> {
    scanner.str().map(|text| Text(Cow::Borrowed(text)))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use serde_json::{json, Value};

    use super::super::{PlainReview, Reader, SinglePass};
    use ingress_tap_core::inject::InjectConfig;

    /// A review that uses every part both readers read: labels and annotations of ours and not,
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

    /// Keys both readers look for somewhere, for mutations that add or repeat members.
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

    /// Whenever the fast path reads a body, the serde pass reads it too, to the same view and
    /// the same answer, byte for byte.
    fn check_agreement(body: &[u8], config: &InjectConfig) -> Option<bool> {
        let text = std::str::from_utf8(body).ok()?;
        let fast = super::review(text);
        let serde = PlainReview::<ingress_tap_core::inject::PodView>::read(text);
        let Some(fast) = fast else {
            return Some(false);
        };
        let serde = serde.unwrap_or_else(|| panic!("only the fast path read {text}"));
        assert_eq!(
            format!("{:?}", fast.request.object),
            format!("{:?}", serde.request.object),
            "{text}"
        );
        let (fast, serde) = match (fast.answer(config), serde.answer(config)) {
            (Ok(fast), Ok(serde)) => (fast, serde),
            (fast, serde) => {
                assert_eq!(format!("{fast:?}"), format!("{serde:?}"), "{text}");
                return Some(true);
            }
        };
        assert_eq!(fast.outcome, serde.outcome, "{text}");
        assert_eq!(fast.body, serde.body, "{text}");
        assert_eq!(
            (&fast.uid, &fast.namespace, fast.dry_run, fast.pod_name()),
            (
                &serde.uid,
                &serde.namespace,
                serde.dry_run,
                serde.pod_name()
            ),
            "{text}"
        );
        Some(true)
    }

    #[test]
    fn the_fast_path_reads_plain_reviews() {
        for review in [
            serde_json::from_str(crate::admission::dev::SAMPLE_REVIEW).unwrap(),
            rich_review(),
        ] {
            let body = serde_json::to_vec_pretty(&review).unwrap();
            let text = std::str::from_utf8(&body).unwrap();
            assert!(super::review(text).is_some(), "{text}");
            assert_eq!(check_agreement(&body, &InjectConfig::default()), Some(true));
            assert!(matches!(
                SinglePass::read(&body, Reader::FastFirst),
                Some(SinglePass::View(_))
            ));
        }
    }

    #[test]
    fn what_the_fast_path_reads_the_serde_pass_reads_alike() {
        let config = InjectConfig::default();
        let bases = [
            serde_json::to_vec(&rich_review()).unwrap(),
            serde_json::to_vec_pretty(&rich_review()).unwrap(),
            crate::admission::dev::SAMPLE_REVIEW.as_bytes().to_vec(),
        ];
        let mut rng = StdRng::seed_from_u64(0x1a9e55);
        let (mut read, mut left) = (0, 0);
        for round in 0..30_000 {
            let body = mutate(&bases[round % bases.len()], &mut rng);
            match check_agreement(&body, &config) {
                Some(true) => read += 1,
                Some(false) => left += 1,
                None => {}
            }
        }
        // Both outcomes are exercised: the mutations are neither all fatal nor all harmless.
        assert!(
            read > 3_000 && left > 3_000,
            "read {read}, left to serde {left}"
        );
    }
}
