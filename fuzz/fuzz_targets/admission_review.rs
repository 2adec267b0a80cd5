//! Any bytes as an AdmissionReview body: the handler answers or refuses, never panics, and
//! whatever it answers is an AdmissionReview carrying the request's uid. And the fast reader
//! changes nothing: without it, the same body gets the same answer or the same refusal.
#![no_main]

use ingress_tap::admission::handler::{review, review_without_fast_reader};
use ingress_tap_core::inject::InjectConfig;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

static CONFIG: LazyLock<InjectConfig> = LazyLock::new(InjectConfig::default);

fuzz_target!(|body: &[u8]| {
    let answered = review(body, &CONFIG);
    let by_serde = review_without_fast_reader(body, &CONFIG);
    let answer = match (answered, by_serde) {
        (Ok(answer), Ok(by_serde)) => {
            assert_eq!(answer.body, by_serde.body, "the fast reader changed the answer");
            assert_eq!(answer.outcome, by_serde.outcome);
            assert_eq!(
                (&answer.uid, &answer.namespace, answer.dry_run, answer.pod_name()),
                (&by_serde.uid, &by_serde.namespace, by_serde.dry_run, by_serde.pod_name())
            );
            answer
        }
        (Err(err), Err(by_serde)) => {
            assert_eq!(err.to_string(), by_serde.to_string());
            return;
        }
        (answered, by_serde) => panic!(
            "the fast reader changed the outcome: {:?} against {:?}",
            answered.map(|answer| answer.outcome),
            by_serde.map(|answer| answer.outcome)
        ),
    };
    let response: Value = match serde_json::from_slice(&answer.body) {
        Ok(value) => value,
        Err(err) => panic!("the answer is not JSON: {err}"),
    };
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(
        response["response"]["uid"],
        Value::String(answer.uid.clone())
    );
    assert!(response["response"]["allowed"].is_boolean());
});
