//! Any bytes as an AdmissionReview body: the handler answers or refuses, never panics. A body
//! that parses as JSON is never refused as not JSON; every answer is an AdmissionReview of the
//! request's version carrying the request's uid, allowed unless denied (a denial with a 403
//! status), and a patch exactly when the pod is injected.
#![no_main]

use ingress_tap::admission::handler::{review, Outcome, ReviewError};
use ingress_tap_core::inject::InjectConfig;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

static CONFIG: LazyLock<InjectConfig> = LazyLock::new(InjectConfig::default);

fuzz_target!(|body: &[u8]| {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let answer = match review(body, &CONFIG) {
        Ok(answer) => answer,
        Err(ReviewError::NotJson(err)) => {
            assert!(parsed.is_none(), "JSON refused as not JSON: {err}");
            return;
        }
        Err(_) => return,
    };
    let response: Value = match serde_json::from_slice(&answer.body) {
        Ok(value) => value,
        Err(err) => panic!("the answer is not JSON: {err}"),
    };
    assert_eq!(response["kind"], "AdmissionReview");
    let inner = &response["response"];
    assert_eq!(inner["uid"], Value::String(answer.uid.clone()));
    let denied = matches!(answer.outcome, Outcome::Denied(_));
    assert_eq!(inner["allowed"], Value::Bool(!denied));
    if denied {
        assert_eq!(inner["status"]["code"], 403);
    }
    let injected = answer.outcome == Outcome::Injected;
    assert_eq!(inner["patch"].is_string(), injected);
    assert_eq!(inner["patchType"].is_string(), injected);
    // The request as a tree, when it is one (a string the review skips may hold an escape a
    // tree cannot): the answer is for its version and its uid.
    if let Some(request) = parsed {
        assert_eq!(response["apiVersion"], request["apiVersion"]);
        assert_eq!(inner["uid"], request["request"]["uid"]);
    }
});
