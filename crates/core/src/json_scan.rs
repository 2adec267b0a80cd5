//! A strict, validating JSON reader for the admission fast path.
//!
//! An AdmissionReview is read once, and only a few dozen of its values matter. Read through
//! serde, every key of every object the review looks into costs a visitor call and a string
//! comparison behind it. This reader lets the caller walk the document directly: objects,
//! arrays and strings are read where the review needs them and everything else is skipped
//! with the same validation serde_json applies to what it ignores.
//!
//! It is a filter, not a parser of record. Anything it is not sure to read exactly as
//! serde_json would (a surrogate's `\u` escape where a string is decoded, any escape in a string
//! handed to the caller, nesting deeper than [`MAX_DEPTH`]) makes it give up with `None`, and
//! the caller then reads the body with serde_json, which also words every refusal. So it may refuse more than
//! serde_json does, never less, and what it accepts it reads the same (the handler's tests
//! compare the two on mutated reviews).

/// Nesting beyond which the reader gives up: it recurses, so this bounds its stack. Deeper
/// documents go to serde_json (which refuses typed values nested beyond 128).
pub const MAX_DEPTH: u32 = 64;

/// Which of an object's known keys have been read: a repeated one makes the reader give up
/// (serde's derived structs refuse it, the views keep the last value).
#[derive(Default)]
pub struct SeenKeys(u32);

impl SeenKeys {
    /// `None` when key number `index` was read before.
    pub fn first(&mut self, index: u32) -> Option<()> {
        let bit = 1 << index;
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first.then_some(())
    }

    pub fn contains(&self, index: u32) -> bool {
        self.0 & (1 << index) != 0
    }
}

/// `None` for a JSON `null`, else what `read` reads: how an `Option` field reads.
pub fn optional<'a, T>(
    scanner: &mut Scanner<'a>,
    read: impl FnOnce(&mut Scanner<'a>) -> Option<T>,
) -> Option<Option<T>> {
    if scanner.null() {
        return Some(None);
    }
    read(scanner).map(Some)
}

/// How a string's escapes are checked: as serde_json checks a string it skips, or one it
/// decodes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escapes {
    Skipped,
    Decoded,
}

/// A cursor over one JSON document; every method returns `None` when the document is not one
/// this reader takes (invalid, or valid but outside what it reads exactly).
pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Scanner {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_whitespace(&mut self) {
        let bytes = self.bytes();
        // Every JSON whitespace byte is at most b' ', and API servers send compact JSON: one
        // comparison usually settles it.
        while let Some(&byte) = bytes.get(self.pos) {
            if byte > b' ' || !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return;
            }
            self.pos += 1;
        }
    }

    /// The first byte of the next value, after whitespace.
    pub fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes().get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = self.bytes().get(self.pos..)?;
        rest.starts_with(word.as_bytes())
            .then(|| self.pos += word.len())
    }

    /// Consumes a `null` if one is next.
    pub fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal("null").is_some()
    }

    pub fn bool(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal("true").map(|()| true),
            b'f' => self.literal("false").map(|()| false),
            _ => None,
        }
    }

    /// A string without escapes, borrowed from the document.
    pub fn str(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.pos;
        let end = special_byte(self.bytes(), start);
        if self.bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.pos = end + 1;
        self.text.get(start..end)
    }

    /// A string that serde_json could decode into a `String`, not kept. A `\u` escape of a
    /// surrogate gives up: whether it decodes depends on the escape next to it. (Go's JSON
    /// encoder, the API server's, writes `<`, `>` and `&` as `\u003c`, `\u003e`, `\u0026`.)
    pub fn checked_str(&mut self) -> Option<()> {
        self.string(Escapes::Decoded)
    }

    /// Skips a string as serde_json skips an ignored one (a `\u` escape needs 4 hex digits).
    fn skipped_str(&mut self) -> Option<()> {
        self.string(Escapes::Skipped)
    }

    fn string(&mut self, escapes: Escapes) -> Option<()> {
        self.expect(b'"')?;
        let bytes = self.bytes();
        let mut at = self.pos;
        loop {
            at = special_byte(bytes, at);
            match bytes.get(at)? {
                b'"' => {
                    self.pos = at + 1;
                    return Some(());
                }
                b'\\' => match bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                    b'u' => {
                        let digits = std::str::from_utf8(bytes.get(at + 2..at + 6)?).ok()?;
                        if !digits.bytes().all(|digit| digit.is_ascii_hexdigit()) {
                            return None;
                        }
                        let unit = u16::from_str_radix(digits, 16).ok()?;
                        if escapes == Escapes::Decoded && (0xD800..=0xDFFF).contains(&unit) {
                            return None;
                        }
                        at += 6;
                    }
                    _ => return None,
                },
                // A control character, which JSON strings may not hold.
                _ => return None,
            }
        }
    }

    fn number(&mut self) -> Option<()> {
        let bytes = self.bytes();
        let mut at = self.pos;
        let digits = |at: &mut usize| {
            let start = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at > start
        };
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        match bytes.get(at)? {
            b'0' => at += 1,
            b'1'..=b'9' => {
                digits(&mut at);
            }
            _ => return None,
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if !digits(&mut at) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            if !digits(&mut at) {
                return None;
            }
        }
        self.pos = at;
        Some(())
    }

    /// Skips any value, validating it as serde_json validates a value it ignores.
    pub fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.members::<false>(|scanner, _| scanner.skip()),
            b'[' => self.array(Self::skip),
            b'"' => self.skipped_str(),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// The exact text of the next value (as serde_json's `RawValue` holds it), skipped.
    pub fn raw(&mut self) -> Option<&'a str> {
        self.with_text(Self::skip).map(|((), text)| text)
    }

    /// What `read` reads of the next value, and the value's exact text.
    pub fn with_text<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<(T, &'a str)> {
        self.skip_whitespace();
        let start = self.pos;
        let value = read(self)?;
        Some((value, self.text.get(start..self.pos)?))
    }

    /// Reads an object, handing each member's key (without escapes) to `member`, which must
    /// consume the value.
    pub fn object(&mut self, member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.members::<true>(member)
    }

    /// The object walk of [`Self::object`] (`READ_KEYS`) and of [`Self::skip`], which skips
    /// keys as serde_json skips an ignored object's keys and hands `member` an empty one.
    fn members<const READ_KEYS: bool>(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        let mut closed = self.open(b'{', b'}')?;
        while !closed {
            let key = if READ_KEYS {
                self.str()?
            } else {
                self.skipped_str()?;
                ""
            };
            self.expect(b':')?;
            member(self, key)?;
            closed = self.next_or_close(b'}')?;
        }
        Some(())
    }

    /// Reads an array, calling `element` for each element, which must consume it.
    pub fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        let mut closed = self.open(b'[', b']')?;
        while !closed {
            element(self)?;
            closed = self.next_or_close(b']')?;
        }
        Some(())
    }

    /// Enters an object or array at its `open` byte; `true` when it is empty (and left).
    fn open(&mut self, open: u8, close: u8) -> Option<bool> {
        self.expect(open)?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.close_if(close)
    }

    /// After a member or an element: `false` past a comma, `true` past the closing byte.
    fn next_or_close(&mut self, close: u8) -> Option<bool> {
        if self.peek()? == b',' {
            self.pos += 1;
            return Some(false);
        }
        self.close_if(close)?.then_some(true)
    }

    /// Leaves the object or array when `close` is next.
    fn close_if(&mut self, close: u8) -> Option<bool> {
        let closing = self.peek()? == close;
        if closing {
            self.pos += 1;
            self.depth -= 1;
        }
        Some(closing)
    }

    /// Checks that nothing but whitespace follows the document.
    pub fn end(mut self) -> Option<()> {
        self.skip_whitespace();
        (self.pos == self.text.len()).then_some(())
    }
}

/// The position of the first `"`, `\` or control character at or after `at` (the length when
/// there is none), eight bytes at a time.
fn special_byte(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // The classic "has a zero byte" and "has a byte below n" tests: the lowest flagged byte
        // is always a true one, which is the only one used.
        let flagged = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        let flagged = flagged & HIGHS;
        if flagged != 0 {
            return at + (flagged.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            return at;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::de::IgnoredAny;

    use super::{Scanner, MAX_DEPTH};

    fn skips(text: &str) -> bool {
        let mut scanner = Scanner::new(text);
        scanner.skip().is_some() && scanner.end().is_some()
    }

    fn serde_skips(text: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(text).is_ok()
    }

    #[test]
    fn nesting_beyond_the_limit_is_left_to_serde() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let limit = MAX_DEPTH as usize;
        assert!(skips(&nested(limit)));
        assert!(!skips(&nested(limit + 1)));
        // serde's own (iterative) skip takes it: only this reader gives up there.
        assert!(serde_skips(&nested(limit + 1)));
    }

    #[test]
    fn it_refuses_what_serde_refuses_and_reads_plain_json() {
        for text in [
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\u{1}\"",
            "tru",
            "nul",
            "[",
            "{",
            "\"",
            "1 2",
            "",
            "\u{b}1",
            "[1\u{c}]",
        ] {
            assert!(!skips(text), "{text:?}");
            assert!(!serde_skips(text), "{text:?}");
        }
        for text in [
            "0",
            "-0",
            "-1.25e+10",
            "1E-2",
            "[]",
            "{}",
            " [ 1 , { \"a\" : [ null ] } ] ",
            "\t\r\n[\n\t1\r]\n",
            "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
            "\"\\u00e9\\ud800\"",
            "\"é€😀\"",
            "true",
            "false",
        ] {
            assert!(skips(text), "{text:?}");
            assert!(serde_skips(text), "{text:?}");
        }
    }

    #[test]
    fn kept_strings_have_no_escapes_and_checked_ones_no_surrogate_escapes() {
        assert_eq!(Scanner::new("\"plain é\"").str(), Some("plain é"));
        assert_eq!(Scanner::new("\"a\\nb\"").str(), None);
        assert_eq!(Scanner::new("\"a\\nb\"").checked_str(), Some(()));
        assert_eq!(Scanner::new("\"\\u0041\\u003c\"").checked_str(), Some(()));
        assert_eq!(Scanner::new("\"\\ud83d\\ude00\"").checked_str(), None);
        assert_eq!(Scanner::new("\"\\ud800\"").skip(), Some(()));
        assert_eq!(
            Scanner::new(" {\"a\" : [1, \"x\"]} ,").raw(),
            Some("{\"a\" : [1, \"x\"]}")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Over text made of JSON's own characters: what the reader takes, serde takes.
        #[test]
        fn it_never_takes_what_serde_refuses(text in "[\\[\\]{}\",:0-9eE.+\\- \t\n\r\u{b}tfnulr\\\\u\u{1}aé]{0,24}") {
            if skips(&text) {
                prop_assert!(serde_skips(&text), "{:?}", text);
            }
        }

        /// And it takes any JSON serde writes without escapes, so the fast path is the one
        /// plain reviews take.
        #[test]
        fn it_takes_json_without_escapes(value in any_json()) {
            let text = serde_json::to_string_pretty(&value).unwrap();
            prop_assert!(skips(&text), "{}", text);
        }
    }

    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "[a-zé ]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{0,6}", inner, 0..6)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }
}
