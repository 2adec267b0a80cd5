//! Deciding and answering: the engine's decision on the object, and the AdmissionReview
//! answer written directly, with the patch spliced in.

use super::*;

/// The object as a path holds it.
pub(super) trait ReviewObject {
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
    pub(super) fn answer(self, config: &InjectConfig) -> Result<Answer, ReviewError> {
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
pub(super) enum Verdict {
    Allow,
    /// Allow with this JSON patch, as the base64 of its JSON text that the answer carries.
    Patch(Rc<[u8]>),
    Deny {
        message: String,
        reason: &'static str,
    },
}

pub(super) fn decide<O: ReviewObject>(
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
pub(super) fn encode_patch(patch: inject::RenderedPatch) -> serde_json::Result<Rc<[u8]>> {
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

pub(super) fn deny(reason: &'static str, message: &str) -> Verdict {
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
pub(super) fn serialise(
    api_version: &str,
    uid: &str,
    verdict: &Verdict,
) -> Result<Vec<u8>, ReviewError> {
    let patch_size = match verdict {
        Verdict::Patch(base64) => base64.len(),
        Verdict::Allow | Verdict::Deny { .. } => 0,
    };
    let mut body = Vec::with_capacity(ANSWER_SIZE_WITHOUT_PATCH + patch_size);
    let written = write_answer(&mut body, api_version, uid, verdict);
    written.map_err(|err| ReviewError::NotAdmissionReview(err.to_string()))?;
    Ok(body)
}

pub(super) fn write_answer(
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
pub(super) const ANSWER_SIZE_WITHOUT_PATCH: usize = 1024;
