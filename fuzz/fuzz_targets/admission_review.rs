//! Any bytes as an AdmissionReview body: the handler answers or refuses, never panics, and
//! whatever it answers is an AdmissionReview carrying the request's uid.
#![no_main]

use ingress_tap::admission::handler::review;
use ingress_tap::inject::InjectConfig;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

static CONFIG: LazyLock<InjectConfig> = LazyLock::new(InjectConfig::default);

fuzz_target!(|body: &[u8]| {
    let Ok(answer) = review(body, &CONFIG) else {
        return;
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
