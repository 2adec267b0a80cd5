//! One AdmissionReview in, one AdmissionReview out: the webhook's logic without sockets.
//!
//! The pod is handed to the injection engine as the raw JSON the API server sent, not as a
//! re-serialised typed object, because the JSON patch is applied by the API server to exactly
//! that JSON: a field this build's types do not know must neither vanish nor shift a path.
//!
//! The review is declared once, as serde types: `ReviewText` (the envelope) around
//! `RequestText` (the request, kube's `AdmissionRequest` field for field) around the object,
//! read as the engine's [`PodView`] (declared once, in the engine). What the answer uses is
//! kept, with strings borrowed from the body where they have no escapes; the rest is checked as
//! kube's types check it and dropped without being kept.
//!
//! Every review costs the API server time in the pod creation path, so a well-formed review is
//! read by these types in a single pass over the body, the pod into the engine's view (only the
//! parts the engine decides on, the rest skipped without being built), and the answer is
//! written directly, with the patch spliced from values the engine rendered once per config.
//!
//! A body the single pass does not take (a syntax error, a missing field, a repeated key, a
//! value of the wrong type, a pod whose read parts do not match Kubernetes' types) goes to the
//! general path. It exists to word the answer to malformed input: it parses the body as a JSON
//! tree, so that a syntax error is reported as one and a repeated key keeps its last value (as
//! in Kubernetes' own decoding), and reads the tree through the same declarations, the envelope
//! before the request, so that a document of another kind or version is refused as such before
//! its request is read, and the object as a tree, so that a pod the view refuses is denied in
//! the engine's words. It reads no field the declarations do not declare, and both paths answer
//! through the same code; the tests hold them to the same answer on every body the single pass
//! takes and a tree can hold (serde_json checks a `\u` escape only in a string it decodes, so a
//! lone surrogate in a skipped string is answered by the single pass and refused by a tree).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use base64::Engine;
use ingress_tap_core::inject::{self, CheckedString, Decision, InjectConfig, LogName, PodView};
use kube::core::admission::Operation;
use kube::core::DynamicObject;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

mod answer;
mod envelope;
#[cfg(test)]
mod tests;

use envelope::*;

/// The API versions of AdmissionReview this webhook answers. v1beta1 has the same shape and
/// is still sent by configurations that list it.
const REVIEW_API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The `kind` of the review documents, in and out.
const REVIEW_KIND: &str = "AdmissionReview";

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
    /// The request's uid and namespace, for the log line.
    pub uid: String,
    pub namespace: String,
    pub dry_run: bool,
    pod_name: PodName,
}

impl Answer {
    /// The pod's name, else its `generateName` (what the API server sends for pods of a
    /// workload), else the request's name.
    pub fn pod_name(&self) -> String {
        match &self.pod_name {
            PodName::Known(name) => name.clone(),
            PodName::InObject {
                object,
                request_name,
            } => object.get().unwrap_or_else(|| request_name.clone()),
        }
    }
}

/// Only log lines need the pod's name, and most reviews log nothing: it is decoded when asked.
#[derive(Debug)]
enum PodName {
    Known(String),
    InObject {
        object: LogName,
        request_name: String,
    },
}

/// Reviews one request body against `config`.
pub fn review(body: &[u8], config: &InjectConfig) -> Result<Answer, ReviewError> {
    match PlainReview::read(body) {
        Some(review) => review.answer(config),
        None => review_tree(body, config),
    }
}

// ---------------------------------------------------------------------------------------------
// The single pass

impl<'body> PlainReview<'body, PodView> {
    /// The review in `body` when it is a plain, well-formed one, read in one pass with the pod
    /// read into the engine's view; `None` sends the body to the general path.
    fn read(body: &'body [u8]) -> Option<Self> {
        // Checked once for the whole body: the pass skips what it does not read without
        // validating it as text, and the general path refuses invalid UTF-8 anywhere.
        let text = std::str::from_utf8(body).ok()?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let review: ReviewText<'body, RequestText<'body, PodView>> =
            from_object(&mut deserializer).ok()?;
        deserializer.end().ok()?;
        let (api_version, request) = review.into_request().ok()?;
        Some(PlainReview {
            api_version,
            request,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The general path

/// Reviews a body the single pass did not take: parsed whole as a JSON tree, read through the
/// same declarations (the envelope, then the request, with the object kept as a tree), and
/// refused with the first thing that is wrong.
fn review_tree(body: &[u8], config: &InjectConfig) -> Result<Answer, ReviewError> {
    let document: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    let envelope: ReviewText<'static, Value> = from_object(document).map_err(not_a_review)?;
    let (api_version, request) = envelope.into_request()?;
    let request: RequestText<'static, Value> =
        RequestText::deserialize(request).map_err(not_a_review)?;
    PlainReview {
        api_version,
        request,
    }
    .answer(config)
}

fn not_a_review(error: serde_json::Error) -> ReviewError {
    ReviewError::NotAdmissionReview(error.to_string())
}
