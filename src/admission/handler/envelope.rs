//! The review, declared once: the AdmissionReview envelope and its request as serde reads
//! them, borrowing from the body, with the object read as the engine's view or kept as a tree.

use super::*;

/// An AdmissionReview as the API server sends it, with its request read as `R`: kube's
/// `AdmissionReview`, with the request taken from a JSON object only.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "R: Deserialize<'de>, 'de: 'body")
)]
pub(super) struct ReviewText<'body, R> {
    #[serde(borrow)]
    pub(super) api_version: Option<Text<'body>>,
    #[serde(borrow)]
    pub(super) kind: Option<Text<'body>>,
    #[serde(default, deserialize_with = "object_only")]
    pub(super) request: Option<R>,
    /// A request to review never carries one.
    pub(super) response: Option<IgnoredAny>,
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
pub(super) struct RequestText<'body, O> {
    #[serde(borrow)]
    pub(super) uid: Text<'body>,
    #[serde(borrow)]
    pub(super) kind: KindText<'body>,
    pub(super) resource: Checked<ResourceShape>,
    #[serde(default, borrow)]
    pub(super) sub_resource: Option<Text<'body>>,
    #[serde(default)]
    pub(super) request_kind: Checked<Option<KindShape>>,
    #[serde(default)]
    pub(super) request_resource: Checked<Option<ResourceShape>>,
    #[serde(default)]
    pub(super) request_sub_resource: Checked<Option<CheckedString>>,
    #[serde(default, borrow)]
    pub(super) name: Text<'body>,
    #[serde(default, borrow)]
    pub(super) namespace: Option<Text<'body>>,
    pub(super) operation: Operation,
    pub(super) user_info: Checked<ObjectOnly<UserInfoShape>>,
    pub(super) object: Option<O>,
    pub(super) old_object: Checked<Option<DynamicObject>>,
    #[serde(default)]
    pub(super) dry_run: bool,
    #[serde(default)]
    /// kube's `RawExtension` holds any JSON value; it is checked as such, without the tree.
    pub(super) options: Option<IgnoredAny>,
}

/// A JSON string, borrowed from the body when it has no escapes (a `String` reads the same
/// values).
#[derive(Default)]
pub(super) struct Text<'body>(Cow<'body, str>);

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
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    pub(super) fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

/// kube's `GroupVersionKind` (all three members required), with the parts the decision reads.
#[derive(Deserialize)]
#[expect(
    dead_code,
    reason = "`version` is read only to refuse what kube refuses"
)]
pub(super) struct KindText<'body> {
    #[serde(borrow)]
    pub(super) group: Text<'body>,
    pub(super) version: CheckedString,
    #[serde(borrow)]
    pub(super) kind: Text<'body>,
}

/// kube's `GroupVersionKind`, checked and not kept.
#[derive(Deserialize)]
#[expect(dead_code, reason = "read only to refuse what kube refuses")]
pub(super) struct KindShape {
    pub(super) group: CheckedString,
    pub(super) version: CheckedString,
    pub(super) kind: CheckedString,
}

/// kube's `GroupVersionResource` (its `api_version` member is spelt so), checked and not kept.
#[derive(Deserialize)]
#[expect(dead_code, reason = "read only to refuse what kube refuses")]
pub(super) struct ResourceShape {
    pub(super) group: CheckedString,
    pub(super) version: CheckedString,
    pub(super) resource: CheckedString,
    #[serde(default)]
    pub(super) api_version: CheckedString,
}

/// k8s-openapi's `UserInfo`, checked and not kept (a repeated member, which it accepts, is
/// refused here and left to the general path, whose tree keeps the last). Lists of zero-sized
/// values do not allocate.
#[derive(Deserialize)]
#[expect(dead_code, reason = "read only to refuse what k8s-openapi refuses")]
pub(super) struct UserInfoShape {
    pub(super) extra: Option<EachEntry<CheckedString, Vec<CheckedString>>>,
    pub(super) groups: Option<Vec<CheckedString>>,
    pub(super) uid: Option<CheckedString>,
    pub(super) username: Option<CheckedString>,
}

/// A JSON object whose members read as `K` and `V` (as a map of them does), not kept.
pub(super) struct EachEntry<K, V>(PhantomData<(K, V)>);

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
pub(super) struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_object(deserializer).map(ObjectOnly)
    }
}

/// A field read as `T` (so a value `T` refuses is refused here too) and then dropped.
pub(super) struct Checked<T>(PhantomData<T>);

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
pub(super) fn object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
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
pub(super) fn from_object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
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
    pub(super) fn into_request(self) -> Result<(Text<'body>, R), ReviewError> {
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
pub(super) struct PlainReview<'body, O> {
    pub(super) api_version: Text<'body>,
    pub(super) request: RequestText<'body, O>,
}
