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
// The review, declared once

/// An AdmissionReview as the API server sends it, with its request read as `R`: kube's
/// `AdmissionReview`, with the request taken from a JSON object only.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "R: Deserialize<'de>, 'de: 'body")
)]
struct ReviewText<'body, R> {
    #[serde(borrow)]
    api_version: Option<Text<'body>>,
    #[serde(borrow)]
    kind: Option<Text<'body>>,
    #[serde(default, deserialize_with = "object_only")]
    request: Option<R>,
    /// A request to review never carries one.
    response: Option<IgnoredAny>,
}

/// kube's `AdmissionRequest` with the object read as `O`: the parts the decision and the answer
/// use are kept, the others read as kube's types read them (so what kube refuses is refused
/// here) and dropped.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de>, 'de: 'body")
)]
#[expect(
    dead_code,
    reason = "the `Checked` fields are read only to refuse what kube's AdmissionRequest refuses"
)]
struct RequestText<'body, O> {
    #[serde(borrow)]
    uid: Text<'body>,
    #[serde(borrow)]
    kind: KindText<'body>,
    resource: Checked<ResourceShape>,
    #[serde(default, borrow)]
    sub_resource: Option<Text<'body>>,
    #[serde(default)]
    request_kind: Checked<Option<KindShape>>,
    #[serde(default)]
    request_resource: Checked<Option<ResourceShape>>,
    #[serde(default)]
    request_sub_resource: Checked<Option<CheckedString>>,
    #[serde(default, borrow)]
    name: Text<'body>,
    #[serde(default, borrow)]
    namespace: Option<Text<'body>>,
    operation: Operation,
    user_info: Checked<ObjectOnly<UserInfoShape>>,
    object: Option<O>,
    old_object: Checked<Option<DynamicObject>>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    /// kube's `RawExtension` holds any JSON value; it is checked as such, without the tree.
    options: Option<IgnoredAny>,
}

/// A JSON string, borrowed from the body when it has no escapes (a `String` reads the same
/// values).
#[derive(Default)]
struct Text<'body>(Cow<'body, str>);

impl<'de: 'body, 'body> Deserialize<'de> for Text<'body> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }

    fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

/// kube's `GroupVersionKind` (all three members required), with the parts the decision reads.
#[derive(Deserialize)]
#[expect(
    dead_code,
    reason = "`version` is read only to refuse what kube refuses"
)]
struct KindText<'body> {
    #[serde(borrow)]
    group: Text<'body>,
    version: CheckedString,
    #[serde(borrow)]
    kind: Text<'body>,
}

/// kube's `GroupVersionKind`, checked and not kept.
#[derive(Deserialize)]
#[expect(dead_code, reason = "read only to refuse what kube refuses")]
struct KindShape {
    group: CheckedString,
    version: CheckedString,
    kind: CheckedString,
}

/// kube's `GroupVersionResource` (its `api_version` member is spelt so), checked and not kept.
#[derive(Deserialize)]
#[expect(dead_code, reason = "read only to refuse what kube refuses")]
struct ResourceShape {
    group: CheckedString,
    version: CheckedString,
    resource: CheckedString,
    #[serde(default)]
    api_version: CheckedString,
}

/// k8s-openapi's `UserInfo`, checked and not kept (a repeated member, which it accepts, is
/// refused here and left to the general path, whose tree keeps the last). Lists of zero-sized
/// values do not allocate.
#[derive(Deserialize)]
#[expect(dead_code, reason = "read only to refuse what k8s-openapi refuses")]
struct UserInfoShape {
    extra: Option<EachEntry<CheckedString, Vec<CheckedString>>>,
    groups: Option<Vec<CheckedString>>,
    uid: Option<CheckedString>,
    username: Option<CheckedString>,
}

/// A JSON object whose members read as `K` and `V` (as a map of them does), not kept.
struct EachEntry<K, V>(PhantomData<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for EachEntry<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<K, V>(PhantomData<(K, V)>);

        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<K, V> {
            type Value = EachEntry<K, V>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<K, V>()?.is_some() {}
                Ok(EachEntry(PhantomData))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// `T` read from a JSON object only (a derived struct would also accept an array of its
/// fields, which Kubernetes' decoding refuses).
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_object(deserializer).map(ObjectOnly)
    }
}

/// A field read as `T` (so a value `T` refuses is refused here too) and then dropped.
struct Checked<T>(PhantomData<T>);

impl<T> Default for Checked<T> {
    fn default() -> Self {
        Checked(PhantomData)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|_| Checked(PhantomData))
    }
}

/// Reads an optional `T` from a JSON object only (see [`ObjectOnly`]).
fn object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OptionalObject<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for OptionalObject<T> {
        type Value = Option<T>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a JSON object or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            from_object(deserializer).map(Some)
        }
    }

    deserializer.deserialize_option(OptionalObject(PhantomData))
}

/// `T` read from a JSON object only, by its own deserialisation of the object's fields.
fn from_object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectFields<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectFields<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectFields(PhantomData))
}

impl<'body, R> ReviewText<'body, R> {
    /// The request of a review this webhook answers: an AdmissionReview of a known version,
    /// with a request and without a response. Anything else is refused in these words.
    fn into_request(self) -> Result<(Text<'body>, R), ReviewError> {
        let kind = self.kind.as_ref().map(Text::as_str);
        if kind != Some(REVIEW_KIND) {
            return Err(ReviewError::NotAdmissionReview(format!(
                "kind is {kind:?}, expected \"{REVIEW_KIND}\""
            )));
        }
        let api_version = match self.api_version {
            Some(version) if REVIEW_API_VERSIONS.contains(&version.as_str()) => version,
            other => {
                let other = other.as_ref().map(Text::as_str);
                return Err(ReviewError::NotAdmissionReview(format!(
                    "apiVersion is {other:?}, expected one of {REVIEW_API_VERSIONS:?}"
                )));
            }
        };
        let request = self.request.ok_or(ReviewError::NoRequest)?;
        if self.response.is_some() {
            return Err(ReviewError::NotAdmissionReview(
                "a request to review carries no response".into(),
            ));
        }
        Ok((api_version, request))
    }
}

/// A review to answer: its version, which the answer repeats, and its request.
struct PlainReview<'body, O> {
    api_version: Text<'body>,
    request: RequestText<'body, O>,
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

// ---------------------------------------------------------------------------------------------
// Deciding and answering

/// The object as a path holds it.
trait ReviewObject {
    /// The engine's decision on the object as a pod.
    fn decide(&self, config: &InjectConfig) -> Decision<inject::RenderedPatch>;

    /// The pod's name for log lines, else `request_name`.
    fn into_pod_name(self, request_name: String) -> PodName;
}

/// The single pass's object: read into the engine's view with the review.
impl ReviewObject for PodView {
    fn decide(&self, config: &InjectConfig) -> Decision<inject::RenderedPatch> {
        inject::decide_view(self, config)
    }

    fn into_pod_name(self, request_name: String) -> PodName {
        PodName::InObject {
            object: self.into_log_name(),
            request_name,
        }
    }
}

/// The general path's object: a tree, which the view may refuse.
impl ReviewObject for Value {
    fn decide(&self, config: &InjectConfig) -> Decision<inject::RenderedPatch> {
        match PodView::deserialize(self) {
            Ok(view) => inject::decide_view(&view, config),
            Err(error) => Decision::Deny(inject::view_error(&error)),
        }
    }

    /// Read as the view's log name reads it, also from a pod the view refused.
    fn into_pod_name(self, request_name: String) -> PodName {
        let name = self
            .pointer("/metadata/name")
            .or(self.pointer("/metadata/generateName"))
            .and_then(Value::as_str);
        PodName::Known(name.map_or(request_name, str::to_owned))
    }
}

impl<O: ReviewObject> PlainReview<'_, O> {
    fn answer(self, config: &InjectConfig) -> Result<Answer, ReviewError> {
        let request = self.request;
        let (outcome, verdict) = decide(&request, config)?;
        let body = serialise(self.api_version.as_str(), request.uid.as_str(), &verdict)?;
        let request_name = request.name.into_owned();
        let pod_name = match request.object {
            Some(object) => object.into_pod_name(request_name),
            None => PodName::Known(request_name),
        };
        Ok(Answer {
            body,
            outcome,
            uid: request.uid.into_owned(),
            namespace: request.namespace.map(Text::into_owned).unwrap_or_default(),
            dry_run: request.dry_run,
            pod_name,
        })
    }
}

/// The answer before serialisation.
enum Verdict {
    Allow,
    /// Allow with this JSON patch, as the base64 of its JSON text that the answer carries.
    Patch(Rc<[u8]>),
    Deny {
        message: String,
        reason: &'static str,
    },
}

fn decide<O: ReviewObject>(
    request: &RequestText<'_, O>,
    config: &InjectConfig,
) -> Result<(Outcome, Verdict), ReviewError> {
    let is_pod = request.kind.group.as_str().is_empty() && request.kind.kind.as_str() == "Pod";
    if !is_pod {
        return Ok((Outcome::Skipped("not_a_pod"), Verdict::Allow));
    }
    if request.operation != Operation::Create {
        return Ok((Outcome::Skipped("not_a_create"), Verdict::Allow));
    }
    let sub_resource = request.sub_resource.as_ref().map(Text::as_str);
    if sub_resource.is_some_and(|s| !s.is_empty()) {
        return Ok((Outcome::Skipped("subresource"), Verdict::Allow));
    }
    let object = request.object.as_ref().ok_or(ReviewError::NoObject)?;
    // A dry run is answered exactly like a real one: the webhook has no side effects.
    Ok(match object.decide(config) {
        Decision::Inject { patch } => match encode_patch(patch) {
            Ok(patch) => (Outcome::Injected, Verdict::Patch(patch)),
            Err(err) => (
                Outcome::Denied("patch_serialisation"),
                deny(
                    "patch_serialisation",
                    &format!("failed to serialize patch: {err}"),
                ),
            ),
        },
        Decision::Skip(reason) => (Outcome::Skipped(reason.as_str()), Verdict::Allow),
        Decision::Deny(reason) => (
            Outcome::Denied(reason.as_str()),
            deny(reason.as_str(), &reason.message()),
        ),
    })
}

thread_local! {
    /// The last patch encoded on this thread and its base64. The pods of one workload get the
    /// same patch, made of the same rendered values: comparing it with the last one costs a
    /// few pointer and path comparisons, writing and encoding it again a few thousand bytes.
    static LAST_PATCH: RefCell<Option<(inject::RenderedPatch, Rc<[u8]>)>> =
        const { RefCell::new(None) };
}

/// The patch as base64 of its JSON text: the `patch` member of the answer, ready to be written
/// as is (base64 never needs escaping).
fn encode_patch(patch: inject::RenderedPatch) -> serde_json::Result<Rc<[u8]>> {
    let cached = LAST_PATCH.try_with(|cell| {
        let last = cell.try_borrow().ok()?;
        let (last_patch, base64) = last.as_ref()?;
        (*last_patch == patch).then(|| base64.clone())
    });
    if let Ok(Some(base64)) = cached {
        return Ok(base64);
    }
    let mut json = Vec::with_capacity(patch.json_size_hint());
    patch.write_json(&mut json)?;
    let base64: Rc<[u8]> = base64::engine::general_purpose::STANDARD
        .encode(&json)
        .into_bytes()
        .into();
    // A thread being torn down, or a busy cell: answered without caching.
    let _ = LAST_PATCH.try_with(|cell| {
        if let Ok(mut last) = cell.try_borrow_mut() {
            *last = Some((patch, base64.clone()));
        }
    });
    Ok(base64)
}

fn deny(reason: &'static str, message: &str) -> Verdict {
    // The message reaches the user who created the pod; the reason code is for machines.
    Verdict::Deny {
        message: format!("ingress-tap: {message}"),
        reason,
    }
}

/// Writes the response AdmissionReview. Members are in sorted order, as a JSON tree of the same
/// answer writes them (the tests compare with kube's own types written through a tree); strings
/// are escaped by `serde_json`, and the patch, the largest member by far, is copied in as its
/// base64 (which never needs escaping).
fn serialise(api_version: &str, uid: &str, verdict: &Verdict) -> Result<Vec<u8>, ReviewError> {
    let patch_size = match verdict {
        Verdict::Patch(base64) => base64.len(),
        Verdict::Allow | Verdict::Deny { .. } => 0,
    };
    let mut body = Vec::with_capacity(ANSWER_SIZE_WITHOUT_PATCH + patch_size);
    let written = write_answer(&mut body, api_version, uid, verdict);
    written.map_err(|err| ReviewError::NotAdmissionReview(err.to_string()))?;
    Ok(body)
}

fn write_answer(
    body: &mut Vec<u8>,
    api_version: &str,
    uid: &str,
    verdict: &Verdict,
) -> serde_json::Result<()> {
    body.extend_from_slice(br#"{"apiVersion":"#);
    serde_json::to_writer(&mut *body, api_version)?;
    body.extend_from_slice(br#","kind":"#);
    serde_json::to_writer(&mut *body, REVIEW_KIND)?;
    body.extend_from_slice(br#","response":{"allowed":"#);
    match verdict {
        Verdict::Allow => body.extend_from_slice(br#"true,"status":{}"#),
        Verdict::Patch(base64) => {
            body.extend_from_slice(br#"true,"patch":""#);
            body.extend_from_slice(base64);
            body.extend_from_slice(br#"","patchType":"JSONPatch","status":{}"#);
        }
        Verdict::Deny { message, reason } => {
            // A `metav1.Status` of a refusal.
            body.extend_from_slice(br#"false,"status":{"code":403,"message":"#);
            serde_json::to_writer(&mut *body, message)?;
            body.extend_from_slice(br#","reason":"#);
            serde_json::to_writer(&mut *body, &format!("Forbidden/{reason}"))?;
            body.extend_from_slice(br#","status":"Failure"}"#);
        }
    }
    body.extend_from_slice(br#","uid":"#);
    serde_json::to_writer(&mut *body, uid)?;
    body.extend_from_slice(b"}}");
    Ok(())
}

/// Room for everything of an answer but the patch (a denial's message included), so the body
/// is written without growing.
const ANSWER_SIZE_WITHOUT_PATCH: usize = 1024;

#[cfg(test)]
mod tests {
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
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_value(review.clone()).unwrap();
        let request: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
        let mut response = AdmissionResponse::from(&request);
        if let Some((reason, message)) = deny {
            let message = format!("ingress-tap: {message}");
            response = response.deny(&message);
            response.result =
                Status::failure(&message, &format!("Forbidden/{reason}")).with_code(403);
        }
        let mut answer = serde_json::to_value(response.into_review()).unwrap();
        if let Some(patch) = patch {
            answer["response"]["patch"] = json!(base64::engine::general_purpose::STANDARD
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
        let Decision::Inject { patch } = inject::decide(&review["request"]["object"], &config)
        else {
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
        not_pod["request"]["kind"] =
            json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let (outcome, answer, _) = both_paths(&body(&not_pod), &config);
        assert_eq!(outcome, Outcome::Skipped("not_a_pod"));
        assert_eq!(
            answer,
            serde_json::to_vec(&kube_answer(&not_pod, None, None)).unwrap()
        );

        let mut beta = sample();
        beta["apiVersion"] = json!("admission.k8s.io/v1beta1");
        beta["request"]["object"]["metadata"]["annotations"] =
            json!({"ingress-tap/container": "nope"});
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
        let Decision::Deny(reason) = inject::decide(&malformed["request"]["object"], &config)
        else {
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
                (_, Err(ReviewError::NotJson(error)))
                    if error.to_string().contains("hex escape") =>
                {
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
}
