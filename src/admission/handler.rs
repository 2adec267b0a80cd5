//! One AdmissionReview in, one AdmissionReview out: the webhook's logic without sockets.
//!
//! The pod is handed to the injection engine as the raw JSON the API server sent, not as a
//! re-serialised typed object, because the JSON patch is applied by the API server to exactly
//! that JSON: a field this build's types do not know must neither vanish nor shift a path.
//!
//! Every review costs the API server time in the pod creation path, so a well-formed review
//! takes a single pass over the body: the envelope is read into typed form and, in the same
//! pass, the pod into the engine's view of it (only the parts the engine decides on, the rest
//! skipped without being built). The answer is written directly, with the patch spliced from
//! values the engine rendered once per config. Anything that pass does not accept as a plain,
//! well-formed review (a syntax error, a missing field, a repeated key, an array where an
//! object belongs, a pod whose read parts do not match Kubernetes' types) goes through the
//! general path instead, which parses the body as a JSON tree and is the one that says what is
//! wrong: one implementation decides every 400 and every denial's wording.
//!
//! The single pass is tried twice. First [`scan`] walks the body with the crate's own strict
//! reader, which takes only what it reads exactly as serde does and gives up on anything else;
//! then serde reads what it gave up on. Both fill the same types, and a test compares them on
//! tens of thousands of mutated reviews.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use base64::Engine;
use ingress_tap_core::inject::{self, CheckedString, Decision, InjectConfig, LogName, PodView};
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

mod scan;

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
    review_by(body, config, Reader::FastFirst)
}

/// [`review`] without the fast reader ([`scan`]): serde's single pass, else the general path.
/// For the differential fuzz target, which holds both to the same answers.
#[doc(hidden)]
pub fn review_without_fast_reader(
    body: &[u8],
    config: &InjectConfig,
) -> Result<Answer, ReviewError> {
    review_by(body, config, Reader::SerdeOnly)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    FastFirst,
    SerdeOnly,
}

fn review_by(body: &[u8], config: &InjectConfig, reader: Reader) -> Result<Answer, ReviewError> {
    match SinglePass::read(body, reader) {
        Some(single_pass) => single_pass.answer(config),
        None => review_tree(body, config),
    }
}

// ---------------------------------------------------------------------------------------------
// The single pass

/// A review as the API server sends it, read in one pass with the object read as `O`: the
/// engine's view of a pod, or (second chance, when the view refuses the pod) its raw text.
///
/// Field for field the same types as kube's `AdmissionReview`/`AdmissionRequest`, or types that
/// refuse at least what kube's refuse: a refusal here only sends the body to the general path,
/// which reads it with kube's own types. What the answer does not use is checked and dropped
/// without being kept, and strings are borrowed from the body where they have no escapes.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de>, 'de: 'body")
)]
struct ReviewText<'body, O> {
    #[serde(borrow)]
    api_version: Option<Text<'body>>,
    #[serde(borrow)]
    kind: Option<Text<'body>>,
    #[serde(default, deserialize_with = "object_only")]
    request: Option<RequestText<'body, O>>,
    /// A request never carries one; when one is there, the general path checks it.
    response: Option<IgnoredAny>,
}

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
/// refused here and left to the general path). Lists of zero-sized values do not allocate.
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

/// `T` read from a JSON object only, as a type whose visitor knows only maps reads it (a
/// derived struct would also accept an array of its fields).
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(ObjectFields(PhantomData))
            .map(ObjectOnly)
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

/// Reads an optional `T` from a JSON object only. Derived structs also accept an array of
/// their fields in order, which the general path reads differently; refusing it here sends
/// such a body there.
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
            deserializer
                .deserialize_map(ObjectFields(PhantomData))
                .map(Some)
        }
    }

    deserializer.deserialize_option(OptionalObject(PhantomData))
}

/// Hands a JSON object's fields to `T`'s own deserialisation.
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

/// A review the single pass accepted: a known kind and version, and a request.
struct PlainReview<'body, O> {
    api_version: Text<'body>,
    request: RequestText<'body, O>,
}

/// What the single pass answers from, when it accepts the body.
enum SinglePass<'body> {
    /// The pod read into the engine's view in the same pass (every pod the engine can decide).
    View(PlainReview<'body, PodView>),
    /// The object as raw text: a pod the view refuses is denied in the engine's words, as
    /// `inject::decide` words it from the text, without the general path's tree.
    Text(PlainReview<'body, &'body RawValue>),
}

impl<'body> SinglePass<'body> {
    /// The review, when `body` is a plain well-formed one; `None` sends it to the general path.
    fn read(body: &'body [u8], reader: Reader) -> Option<Self> {
        // Checked once for the whole body: the pass below skips what it does not read without
        // validating it as text, and the general path refuses invalid UTF-8 anywhere.
        let text = std::str::from_utf8(body).ok()?;
        let fast = match reader {
            Reader::FastFirst => scan::review(text),
            Reader::SerdeOnly => None,
        };
        fast.or_else(|| PlainReview::read(text))
            .map(SinglePass::View)
            .or_else(|| PlainReview::read(text).map(SinglePass::Text))
    }

    fn answer(self, config: &InjectConfig) -> Result<Answer, ReviewError> {
        match self {
            SinglePass::View(review) => review.answer(config),
            SinglePass::Text(review) => review.answer(config),
        }
    }
}

/// The object as the single pass holds it.
trait SinglePassObject {
    /// The object for the decision.
    fn pod(&self) -> PodObject<'_>;

    /// The pod's name for log lines, else `request_name`.
    fn into_pod_name(self, request_name: String) -> PodName;
}

impl SinglePassObject for PodView {
    fn pod(&self) -> PodObject<'_> {
        PodObject::View(self)
    }

    fn into_pod_name(self, request_name: String) -> PodName {
        PodName::InObject {
            object: self.into_log_name(),
            request_name,
        }
    }
}

impl SinglePassObject for &RawValue {
    fn pod(&self) -> PodObject<'_> {
        PodObject::Text(self)
    }

    fn into_pod_name(self, request_name: String) -> PodName {
        let name = ObjectNames::deserialize(self)
            .ok()
            .and_then(ObjectNames::best);
        PodName::Known(name.unwrap_or(request_name))
    }
}

impl<'body, O: Deserialize<'body>> PlainReview<'body, O> {
    fn read(text: &'body str) -> Option<Self> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let review: ReviewText<'body, O> = (&mut deserializer)
            .deserialize_map(ObjectFields(PhantomData))
            .ok()?;
        deserializer.end().ok()?;
        let ReviewText {
            api_version: Some(api_version),
            kind: Some(kind),
            request: Some(request),
            response: None,
        } = review
        else {
            return None;
        };
        let known =
            kind.as_str() == REVIEW_KIND && REVIEW_API_VERSIONS.contains(&api_version.as_str());
        known.then_some(PlainReview {
            api_version,
            request,
        })
    }
}

impl<O: SinglePassObject> PlainReview<'_, O> {
    fn answer(self, config: &InjectConfig) -> Result<Answer, ReviewError> {
        let request = self.request;
        let facts = RequestFacts {
            group: request.kind.group.as_str(),
            kind: request.kind.kind.as_str(),
            operation: &request.operation,
            sub_resource: request.sub_resource.as_ref().map(Text::as_str),
        };
        let (outcome, verdict) = decide(&facts, request.object.as_ref().map(O::pod), config)?;
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

/// The names a pod may carry, read from its text for a log line.
#[derive(Default)]
struct ObjectNames {
    metadata: Option<Value>,
}

impl<'de> Deserialize<'de> for ObjectNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamesVisitor;

        impl<'de> Visitor<'de> for NamesVisitor {
            type Value = ObjectNames;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectNames, A::Error> {
                let mut names = ObjectNames::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "metadata" {
                        names.metadata = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(names)
            }
        }

        deserializer.deserialize_map(NamesVisitor)
    }
}

impl ObjectNames {
    /// `metadata.name` when present (even when not a string), else `metadata.generateName`.
    fn best(self) -> Option<String> {
        let metadata = self.metadata?;
        let name = metadata.get("name").or(metadata.get("generateName"));
        name.and_then(Value::as_str).map(str::to_owned)
    }
}

// ---------------------------------------------------------------------------------------------
// The general path

/// Reviews a body the single pass did not accept: parsed whole as a JSON tree, checked step by
/// step, and refused with the first thing that is wrong.
fn review_tree(body: &[u8], config: &InjectConfig) -> Result<Answer, ReviewError> {
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

    let facts = RequestFacts {
        group: &request.kind.group,
        kind: &request.kind.kind,
        operation: &request.operation,
        sub_resource: request.sub_resource.as_deref(),
    };
    let (outcome, verdict) = decide(&facts, object.as_ref().map(PodObject::Tree), config)?;
    let body = serialise(&request.types.api_version, &request.uid, &verdict)?;
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
        dry_run: request.dry_run,
        pod_name: PodName::Known(name),
    })
}

fn check_type(document: &Value) -> Result<(), ReviewError> {
    let Some(fields) = document.as_object() else {
        return Err(ReviewError::NotAdmissionReview(
            "expected a JSON object".into(),
        ));
    };
    let kind = fields.get("kind").and_then(Value::as_str);
    let api_version = fields.get("apiVersion").and_then(Value::as_str);
    if kind != Some(REVIEW_KIND) {
        return Err(ReviewError::NotAdmissionReview(format!(
            "kind is {kind:?}, expected \"{REVIEW_KIND}\""
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

// ---------------------------------------------------------------------------------------------
// Deciding and answering

/// What the decision needs from the request, whichever path read it.
struct RequestFacts<'request> {
    group: &'request str,
    kind: &'request str,
    operation: &'request Operation,
    sub_resource: Option<&'request str>,
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

/// The pod as the path that read the review holds it.
#[derive(Clone, Copy)]
enum PodObject<'a> {
    /// Read in the single pass.
    View(&'a PodView),
    /// The object's text, when the single pass could not read it as a view.
    Text(&'a RawValue),
    /// The object's tree, read by the general path.
    Tree(&'a Value),
}

fn decide(
    request: &RequestFacts<'_>,
    object: Option<PodObject<'_>>,
    config: &InjectConfig,
) -> Result<(Outcome, Verdict), ReviewError> {
    let is_pod = request.group.is_empty() && request.kind == "Pod";
    if !is_pod {
        return Ok((Outcome::Skipped("not_a_pod"), Verdict::Allow));
    }
    if *request.operation != Operation::Create {
        return Ok((Outcome::Skipped("not_a_create"), Verdict::Allow));
    }
    if request.sub_resource.is_some_and(|s| !s.is_empty()) {
        return Ok((Outcome::Skipped("subresource"), Verdict::Allow));
    }
    let object = object.ok_or(ReviewError::NoObject)?;
    // A dry run is answered exactly like a real one: the webhook has no side effects.
    let decision = match object {
        PodObject::View(view) => inject::decide_view(view, config),
        PodObject::Text(text) => view_and_decide(text, config),
        PodObject::Tree(tree) => view_and_decide(tree, config),
    };
    Ok(match decision {
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

/// Reads the engine's view of `pod` and decides; a pod the view refuses is denied.
fn view_and_decide<'de>(
    pod: impl inject::PodJson<'de>,
    config: &InjectConfig,
) -> Decision<inject::RenderedPatch> {
    match PodView::deserialize(pod) {
        Ok(view) => inject::decide_view(&view, config),
        Err(error) => Decision::Deny(inject::view_error(&error)),
    }
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
    use kube::core::admission::AdmissionResponse;
    use kube::core::Status;
    use serde_json::json;

    fn sample() -> Value {
        serde_json::from_str(crate::admission::dev::SAMPLE_REVIEW).unwrap()
    }

    fn body(review: &Value) -> Vec<u8> {
        serde_json::to_vec(review).unwrap()
    }

    /// Both paths on the same body: the single pass (with and without the fast reader) must
    /// accept it and agree with the tree.
    fn both_paths(body: &[u8], config: &InjectConfig) -> (Outcome, Vec<u8>, String) {
        let plain = SinglePass::read(body, Reader::FastFirst)
            .expect("the single pass accepts a plain review")
            .answer(config)
            .unwrap();
        let serde = SinglePass::read(body, Reader::SerdeOnly)
            .expect("serde's single pass accepts a plain review")
            .answer(config)
            .unwrap();
        assert_eq!(plain.body, serde.body);
        let tree = review_tree(body, config).unwrap();
        assert_eq!(plain.outcome, tree.outcome);
        assert_eq!(
            String::from_utf8_lossy(&plain.body),
            String::from_utf8_lossy(&tree.body)
        );
        assert_eq!(plain.uid, tree.uid);
        assert_eq!(plain.namespace, tree.namespace);
        assert_eq!(plain.dry_run, tree.dry_run);
        assert_eq!(plain.pod_name(), tree.pod_name());
        let name = plain.pod_name();
        (plain.outcome, plain.body, name)
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
        assert!(SinglePass::read(repeated.as_bytes(), Reader::FastFirst).is_none());
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
            assert!(SinglePass::read(bytes, Reader::FastFirst).is_none());
            assert!(SinglePass::read(bytes, Reader::SerdeOnly).is_none());
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
}
