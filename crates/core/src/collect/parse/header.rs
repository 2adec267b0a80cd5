//! Header values, which the client writes and sizes: kept whole up to [`MAX_HEADER_BYTES`],
//! and past it by their two ends ([`Oversize`]), each decoded only when it is read.

use std::borrow::Cow;
use std::cell::OnceCell;

use super::escape::{unescape_prefix, unescape_suffix};

/// Longest decoded X-Forwarded-For or X-Real-IP value kept whole, in bytes, and the most kept
/// of each end of a longer one.
///
/// Real proxy chains are a few hundred bytes at most; anything longer is a client stuffing the
/// header, and keeping it all would let one request pin kilobytes in every interval.
pub const MAX_HEADER_BYTES: usize = 1024;

/// A header value as a [`Record`](super::Record) keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    /// The whole decoded value: at most [`MAX_HEADER_BYTES`].
    Full(Cow<'a, str>),
    /// A value that decodes to more than [`MAX_HEADER_BYTES`]: only its ends were read.
    Oversize(Oversize<'a>),
}

/// The two ends of an over-long header value, each at most [`MAX_HEADER_BYTES`].
///
/// Each end is cut through whatever the cap falls on, so the entry at the cut (the last one of
/// `head`, the first one of `tail`) is not a whole entry; [`HeaderValue::leading`] and
/// [`HeaderValue::trailing`] leave it out.
///
/// An end is decoded when it is first read, not when the line is parsed: each client-IP policy
/// reads one end, and most of them only its first entry or two
/// ([`HeaderValue::leading_within`]), so a hostile value of thousands of escapes costs the
/// search for its closing quote and not the decoding of two kilobytes.
#[derive(Clone)]
pub struct Oversize<'a> {
    /// The value as the log holds it; empty once both ends are decoded and detached.
    raw: &'a [u8],
    /// Whether `raw` holds a backslash, so its ends need decoding.
    escaped: bool,
    head: OnceCell<Cow<'a, str>>,
    tail: OnceCell<Cow<'a, str>>,
}

impl<'a> Oversize<'a> {
    fn lazy(raw: &'a [u8], escaped: bool) -> Self {
        Oversize {
            raw,
            escaped,
            head: OnceCell::new(),
            tail: OnceCell::new(),
        }
    }

    /// Ends already decoded, cut to the cap.
    fn decoded(head: Cow<'a, str>, tail: Cow<'a, str>) -> Self {
        Oversize {
            raw: &[],
            escaped: false,
            head: OnceCell::from(cut_head(head, MAX_HEADER_BYTES)),
            tail: OnceCell::from(cut_tail(tail, MAX_HEADER_BYTES)),
        }
    }

    /// The start of the decoded value.
    pub fn head(&self) -> &str {
        self.head
            .get_or_init(|| head_text(self.raw, self.escaped, MAX_HEADER_BYTES))
    }

    /// The end of the decoded value.
    pub fn tail(&self) -> &str {
        self.tail
            .get_or_init(|| tail_text(self.raw, self.escaped, MAX_HEADER_BYTES))
    }

    fn into_owned(self) -> Oversize<'static> {
        let owned = |end: Cow<'_, str>| Cow::Owned(end.into_owned());
        let head = owned(self.head().into());
        let tail = owned(self.tail().into());
        Oversize {
            raw: &[],
            escaped: false,
            head: OnceCell::from(head),
            tail: OnceCell::from(tail),
        }
    }

    #[cfg(test)]
    pub(super) fn ends(&self) -> (&Cow<'a, str>, &Cow<'a, str>) {
        self.head();
        self.tail();
        match (self.head.get(), self.tail.get()) {
            (Some(head), Some(tail)) => (head, tail),
            _ => unreachable!("both ends were just decoded"),
        }
    }
}

impl PartialEq for Oversize<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.head() == other.head() && self.tail() == other.tail()
    }
}

impl Eq for Oversize<'_> {}

impl std::fmt::Debug for Oversize<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Oversize")
            .field("head", &self.head())
            .field("tail", &self.tail())
            .finish()
    }
}

/// The first (up to) `max_len` decoded bytes of `raw`, cut on a character boundary.
fn head_text(raw: &[u8], escaped: bool, max_len: usize) -> Cow<'_, str> {
    let text = if escaped {
        utf8_text(Cow::Owned(unescape_prefix(raw, max_len).0))
    } else {
        utf8_text(Cow::Borrowed(raw.get(..max_len).unwrap_or(raw)))
    };
    cut_head(text, max_len)
}

/// The last (up to) `max_len` decoded bytes of `raw`, cut on a character boundary.
fn tail_text(raw: &[u8], escaped: bool, max_len: usize) -> Cow<'_, str> {
    let text = if escaped {
        utf8_text(Cow::Owned(unescape_suffix(raw, max_len)))
    } else {
        utf8_text(Cow::Borrowed(
            raw.get(raw.len().saturating_sub(max_len)..).unwrap_or(raw),
        ))
    };
    cut_tail(text, max_len)
}

impl<'a> HeaderValue<'a> {
    /// The whole value, when it was kept whole.
    pub fn full(&self) -> Option<&str> {
        match self {
            HeaderValue::Full(text) => Some(text),
            HeaderValue::Oversize(_) => None,
        }
    }

    /// Whether the value was over the cap, and only its ends were kept.
    pub fn is_oversize(&self) -> bool {
        matches!(self, HeaderValue::Oversize(_))
    }

    /// The whole comma-separated entries the value starts with: all of a full value; of an
    /// oversize one, its head up to the last comma, since the entry the cut runs through might
    /// be the start of a longer one.
    pub fn leading(&self) -> &str {
        match self {
            HeaderValue::Full(text) => text,
            HeaderValue::Oversize(oversize) => before_last_comma(oversize.head()),
        }
    }

    /// The whole comma-separated entries the value ends with: all of a full value; of an
    /// oversize one, its tail after the first comma.
    pub fn trailing(&self) -> &str {
        match self {
            HeaderValue::Full(text) => text,
            HeaderValue::Oversize(oversize) => after_first_comma(oversize.tail()),
        }
    }

    /// The whole entries among the first `max_len` decoded bytes of an oversize value, decoded
    /// on their own; `None` for a full value, whose [`HeaderValue::leading`] costs nothing.
    ///
    /// They are the first entries of [`HeaderValue::leading`], so a reader that finds what it
    /// looks for among them has the answer it would have had from the whole head.
    pub fn leading_within(&self, max_len: usize) -> Option<Cow<'_, str>> {
        let HeaderValue::Oversize(oversize) = self else {
            return None;
        };
        if let Some(head) = oversize.head.get() {
            return Some(Cow::Borrowed(before_last_comma(head)));
        }
        Some(match head_text(oversize.raw, oversize.escaped, max_len) {
            Cow::Borrowed(text) => Cow::Borrowed(before_last_comma(text)),
            Cow::Owned(mut text) => {
                let kept = before_last_comma(&text).len();
                text.truncate(kept);
                Cow::Owned(text)
            }
        })
    }

    /// The whole entries among the last `max_len` decoded bytes of an oversize value, as
    /// [`HeaderValue::leading_within`] does for the start: the last entries of
    /// [`HeaderValue::trailing`].
    pub fn trailing_within(&self, max_len: usize) -> Option<Cow<'_, str>> {
        let HeaderValue::Oversize(oversize) = self else {
            return None;
        };
        if let Some(tail) = oversize.tail.get() {
            return Some(Cow::Borrowed(after_first_comma(tail)));
        }
        Some(match tail_text(oversize.raw, oversize.escaped, max_len) {
            Cow::Borrowed(text) => Cow::Borrowed(after_first_comma(text)),
            Cow::Owned(mut text) => {
                let dropped = text.len() - after_first_comma(&text).len();
                text.drain(..dropped);
                Cow::Owned(text)
            }
        })
    }

    /// The text kept of the value: the whole value, or its head and its tail.
    pub fn kept(&self) -> impl Iterator<Item = &str> {
        let (first, second) = match self {
            HeaderValue::Full(text) => (text.as_ref(), None),
            HeaderValue::Oversize(oversize) => (oversize.head(), Some(oversize.tail())),
        };
        std::iter::once(first).chain(second)
    }

    /// Detaches the value from the line buffer it borrows from.
    pub fn into_owned(self) -> HeaderValue<'static> {
        match self {
            HeaderValue::Full(text) => HeaderValue::Full(Cow::Owned(text.into_owned())),
            HeaderValue::Oversize(oversize) => HeaderValue::Oversize(oversize.into_owned()),
        }
    }
}

/// An end cut at the start: the entry the cut runs through is dropped.
fn before_last_comma(head: &str) -> &str {
    head.rfind(',')
        .and_then(|comma| head.get(..comma))
        .unwrap_or_default()
}

/// An end cut at the finish: the entry the cut runs through is dropped.
fn after_first_comma(tail: &str) -> &str {
    tail.find(',')
        .and_then(|comma| tail.get(comma + 1..))
        .unwrap_or_default()
}

impl<'a> From<&'a str> for HeaderValue<'a> {
    fn from(text: &'a str) -> Self {
        HeaderValue::Full(Cow::Borrowed(text))
    }
}

impl From<String> for HeaderValue<'static> {
    fn from(text: String) -> Self {
        HeaderValue::Full(Cow::Owned(text))
    }
}

/// A header's raw text (`escaped` when it holds a backslash) as the record keeps it; `None` for
/// the "no value" spellings. The one definition for the template fast path and the scanner.
pub(super) fn header_value(body: &[u8], escaped: bool) -> Option<HeaderValue<'_>> {
    if !escaped {
        if body.is_empty() || body == b"-" {
            return None;
        }
        if body.len() > MAX_HEADER_BYTES {
            return Some(HeaderValue::Oversize(Oversize::lazy(body, false)));
        }
        return Some(within_cap(utf8_text(Cow::Borrowed(body))));
    }
    // No escape is longer than six bytes per decoded byte, so a value this long decodes to more
    // than the cap, and nothing of it needs decoding yet.
    if body.len() > MAX_ESCAPE_RATIO * (MAX_HEADER_BYTES + 1) {
        return Some(HeaderValue::Oversize(Oversize::lazy(body, true)));
    }
    let (head, complete) = unescape_prefix(body, MAX_HEADER_BYTES);
    if complete {
        if head.is_empty() || head == b"-" {
            return None;
        }
        return Some(within_cap(utf8_text(Cow::Owned(head))));
    }
    let oversize = Oversize::lazy(body, true);
    // Already decoded: kept rather than decoded again when the head is read.
    let _ = oversize
        .head
        .set(cut_head(utf8_text(Cow::Owned(head)), MAX_HEADER_BYTES));
    Some(HeaderValue::Oversize(oversize))
}

/// The most raw bytes any escape takes per decoded byte: `\uXXXX` for one byte. (`\xHH` takes
/// four, a surrogate pair twelve for four bytes, a lone surrogate six for three.)
const MAX_ESCAPE_RATIO: usize = 6;

/// Valid UTF-8 (nearly always plain ASCII) is checked much faster than it is repaired.
fn utf8_text(bytes: Cow<'_, [u8]>) -> Cow<'_, str> {
    match bytes {
        Cow::Borrowed(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        },
        Cow::Owned(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Cow::Owned(text),
            Err(error) => Cow::Owned(String::from_utf8_lossy(error.as_bytes()).into_owned()),
        },
    }
}

/// A whole decoded value: kept whole when within the cap, which repairing invalid bytes to
/// U+FFFD (up to three times as long) can break.
fn within_cap(text: Cow<'_, str>) -> HeaderValue<'_> {
    if text.len() <= MAX_HEADER_BYTES {
        return HeaderValue::Full(text);
    }
    HeaderValue::Oversize(Oversize::decoded(text.clone(), text))
}

/// The first `max_len` bytes of `head` or fewer, cut on a character boundary.
fn cut_head(head: Cow<'_, str>, max_len: usize) -> Cow<'_, str> {
    let mut end = max_len.min(head.len());
    while !head.is_char_boundary(end) {
        end -= 1;
    }
    if end == head.len() {
        return head;
    }
    match head {
        Cow::Borrowed(text) => Cow::Borrowed(text.get(..end).unwrap_or_default()),
        Cow::Owned(mut text) => {
            text.truncate(end);
            Cow::Owned(text)
        }
    }
}

/// The last `max_len` bytes of `tail` or fewer, cut on a character boundary.
fn cut_tail(tail: Cow<'_, str>, max_len: usize) -> Cow<'_, str> {
    let mut start = tail.len().saturating_sub(max_len);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    if start == 0 {
        return tail;
    }
    match tail {
        Cow::Borrowed(text) => Cow::Borrowed(text.get(start..).unwrap_or_default()),
        Cow::Owned(text) => Cow::Owned(text.get(start..).unwrap_or_default().to_owned()),
    }
}
