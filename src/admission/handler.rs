//! One AdmissionReview in, one AdmissionReview out: the webhook's logic without sockets.
//!
//! The pod is handed to the injection engine as the raw JSON the API server sent, not as a
//! re-serialised typed object, because the JSON patch is applied by the API server to exactly
//! that JSON: a field this build's types do not know must neither vanish nor shift a path.

use crate::inject::{self, Decision, InjectConfig};
use base64::Engine;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};
use serde_json::Value;

/// The API versions of AdmissionReview this webhook answers. v1beta1 has the same shape and
/// is still sent by configurations that list it.
const REVIEW_API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A request that is not a usable AdmissionReview: answered with HTTP 400 and this text.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("body is not an AdmissionReview: {0}")]
    NotAdmissionReview(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request for a pod CREATE carries no object")]
    NoObject,
}

/// What happened to a review, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A patch was returned.
    Injected,
    /// Allowed without a patch, for this reason (the engine's skip reasons, or the request
    /// not being a pod creation).
    Skipped(&'static str),
    /// Refused, for this reason.
    Denied(&'static str),
}

impl Outcome {
    /// The `outcome` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped(_) => "skipped",
            Outcome::Denied(_) => "denied",
        }
    }

    /// The `reason` metric label (empty for injections).
    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Injected => "",
            Outcome::Skipped(reason) | Outcome::Denied(reason) => reason,
        }
    }
}

/// The answer to one review.
#[derive(Debug)]
pub struct Answer {
    /// The response AdmissionReview, serialised.
    pub body: Vec<u8>,
    /// What was decided.
    pub outcome: Outcome,
    /// The request's uid, namespace and name (or generateName) for the log line.
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
}

/// Reviews one request body against `config`.
pub fn review(body: &[u8], config: &InjectConfig) -> Result<Answer, ReviewError> {
    let mut document: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    check_type(&document)?;
    // Keep the object exactly as sent, and parse only the envelope into typed form.
    let object = document
        .get_mut("request")
        .and_then(|request| request.get_mut("object"))
        .map(Value::take)
        .filter(|object| !object.is_null());
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(document)
        .map_err(|err| ReviewError::NotAdmissionReview(err.to_string()))?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;

    let (outcome, response) = decide(&request, object.as_ref(), config)?;
    let body = serialise(response)?;
    let name = object
        .as_ref()
        .and_then(|o| {
            o.pointer("/metadata/name")
                .or(o.pointer("/metadata/generateName"))
        })
        .and_then(Value::as_str)
        .unwrap_or(&request.name)
        .to_owned();
    Ok(Answer {
        body,
        outcome,
        uid: request.uid,
        namespace: request.namespace.unwrap_or_default(),
        name,
        dry_run: request.dry_run,
    })
}

/// Serialises the answer with the patch base64-encoded, as the API server's `[]byte` field
/// is written on the wire (kube-core writes the bytes as a JSON array of numbers).
fn serialise(mut response: AdmissionResponse) -> Result<Vec<u8>, ReviewError> {
    let patch = response.patch.take();
    let mut review = serde_json::to_value(response.into_review())
        .map_err(|err| ReviewError::NotAdmissionReview(err.to_string()))?;
    if let (Some(patch), Some(fields)) = (patch, review["response"].as_object_mut()) {
        fields.insert(
            "patch".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(patch)),
        );
    }
    serde_json::to_vec(&review).map_err(|err| ReviewError::NotAdmissionReview(err.to_string()))
}

fn check_type(document: &Value) -> Result<(), ReviewError> {
    let Some(fields) = document.as_object() else {
        return Err(ReviewError::NotAdmissionReview(
            "expected a JSON object".into(),
        ));
    };
    let kind = fields.get("kind").and_then(Value::as_str);
    let api_version = fields.get("apiVersion").and_then(Value::as_str);
    if kind != Some("AdmissionReview") {
        return Err(ReviewError::NotAdmissionReview(format!(
            "kind is {kind:?}, expected \"AdmissionReview\""
        )));
    }
    match api_version {
        Some(v) if REVIEW_API_VERSIONS.contains(&v) => {}
        other => {
            return Err(ReviewError::NotAdmissionReview(format!(
                "apiVersion is {other:?}, expected one of {REVIEW_API_VERSIONS:?}"
            )))
        }
    }
    if fields.get("request").is_none_or(Value::is_null) {
        return Err(ReviewError::NoRequest);
    }
    Ok(())
}

fn decide(
    request: &AdmissionRequest<DynamicObject>,
    object: Option<&Value>,
    config: &InjectConfig,
) -> Result<(Outcome, AdmissionResponse), ReviewError> {
    let response = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if !is_pod {
        return Ok((Outcome::Skipped("not_a_pod"), response));
    }
    if request.operation != Operation::Create {
        return Ok((Outcome::Skipped("not_a_create"), response));
    }
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Ok((Outcome::Skipped("subresource"), response));
    }
    let object = object.ok_or(ReviewError::NoObject)?;
    // A dry run is answered exactly like a real one: the webhook has no side effects.
    Ok(match inject::decide(object, config) {
        Decision::Inject { patch } => match response.clone().with_patch(patch) {
            Ok(response) => (Outcome::Injected, response),
            Err(err) => (
                Outcome::Denied("patch_serialisation"),
                deny(response, "patch_serialisation", &err.to_string()),
            ),
        },
        Decision::Skip(reason) => (Outcome::Skipped(reason.as_str()), response),
        Decision::Deny(reason) => (
            Outcome::Denied(reason.as_str()),
            deny(response, reason.as_str(), &reason.message()),
        ),
    })
}

fn deny(response: AdmissionResponse, reason: &str, message: &str) -> AdmissionResponse {
    let message = format!("ingress-tap: {message}");
    let mut response = response.deny(&message);
    // The message reaches the user who created the pod; the reason code is for machines.
    response.result = Status::failure(&message, &format!("Forbidden/{reason}")).with_code(403);
    response
}
