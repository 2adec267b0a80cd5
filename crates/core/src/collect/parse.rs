//! One access-log line → one ingress [`Record`].
//!
//! The ingress controller writes the template from the ingress-log spec somewhere in each line:
//! a marker followed by a JSON-looking object. It is only JSON-looking: nginx prints an unset
//! variable as a bare `-`, its default escaping writes `\xHH` (not a JSON escape), and the
//! controller or a syslog relay may add text before and after the object. So this module does
//! not hand the object to a JSON library; it scans it once with a small tolerant scanner that
//!
//! - finds the marker anywhere in the line and ignores everything outside the object after it;
//! - tracks strings (which may hold braces, commas and escaped quotes) so the object ends at the
//!   right brace;
//! - accepts quoted and bare values, `-`, `null` and the empty string as "no value";
//! - decodes both nginx `\xHH` escapes and JSON escapes (`\"`, `\\`, `\uXXXX`, …);
//! - borrows field text from the line whenever it holds no escape, so the common line costs no
//!   allocation at all.
//!
//! Nearly every line is the template verbatim, so a fast path tries that first: it compares the
//! text between the values as whole slices and only looks at the values themselves. It answers
//! only when its answer is the scanner's, and hands anything else (other spacing or order, an
//! escape, a bare `-`, a rejected value) to the scanner, which remains the one definition of
//! what a line means.
//!
//! Header values are attacker data, and the attacker chooses their length: nginx accepts 8 KB
//! headers by default, and its escaping can make one four times longer in the log. A value
//! that decodes to at most [`MAX_HEADER_BYTES`] is kept whole ([`HeaderValue::Full`]). A longer
//! one is still a request on a real connection, so it never costs the line: only its two ends
//! are kept ([`HeaderValue::Oversize`]), because those are what the client-IP policies in
//! [`super::origin`] read — the leftmost entry (what the client claims) and the rightmost ones
//! (what the proxies in front appended). The middle is skipped with a search for the closing
//! quote, never decoded, and an end is decoded only as far as a policy reads it, so a hostile
//! line costs little more than finding where it ends.
//!
//! Bytes that are not UTF-8 never panic: inside header values they are replaced with U+FFFD
//! (the other entries of an X-Forwarded-For list stay usable), inside addresses, ports and the
//! protocol they make the field invalid.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use memchr::memmem;

use crate::model::Protocol;

/// The text that introduces the ingress template in a log line.
pub const MARKER: &str = "tigera_secure_ee_ingress:";

/// Longest decoded X-Forwarded-For or X-Real-IP value kept whole, in bytes, and the most kept
/// of each end of a longer one.
///
/// Real proxy chains are a few hundred bytes at most; anything longer is a client stuffing the
/// header, and keeping it all would let one request pin kilobytes in every interval.
pub const MAX_HEADER_BYTES: usize = 1024;

/// Longest text accepted for an address, port or protocol field; the longest IPv6 text form is
/// 45 bytes, so anything longer cannot be valid and is not worth decoding.
const MAX_SCALAR_BYTES: usize = 64;

/// How many marker occurrences one line may try before giving up.
///
/// A request URI or a header printed before the template can contain the marker too; trying
/// the next occurrence when one fails to parse finds the real template. The bound keeps a
/// crafted line full of markers linear in its length.
const MAX_MARKER_ATTEMPTS: usize = 4;

static MARKER_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(MARKER));

/// One request as the ingress controller logged it.
///
/// Header values borrow from the line when they hold no escape, so a record lives no longer
/// than the line it came from; call [`Record::into_owned`] to keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The direct peer of the connection (`$realip_remote_addr`): a load balancer or the client.
    pub source_ip: IpAddr,
    /// `$realip_remote_port`.
    pub source_port: u16,
    /// The ingress pod's address on this connection (`$server_addr`).
    pub destination_ip: IpAddr,
    /// `$server_port`.
    pub destination_port: u16,
    /// `tcp` unless the line carries a `protocol` field saying otherwise.
    pub protocol: Protocol,
    /// The raw X-Forwarded-For value, decoded; `None` when nginx printed `-` or nothing.
    pub x_forwarded_for: Option<HeaderValue<'a>>,
    /// The raw X-Real-IP value, decoded; `None` when nginx printed `-` or nothing.
    pub x_real_ip: Option<HeaderValue<'a>>,
}

impl Record<'_> {
    /// Detaches the record from the line buffer it borrows from.
    pub fn into_owned(self) -> Record<'static> {
        Record {
            source_ip: self.source_ip,
            source_port: self.source_port,
            destination_ip: self.destination_ip,
            destination_port: self.destination_port,
            protocol: self.protocol,
            x_forwarded_for: self.x_forwarded_for.map(HeaderValue::into_owned),
            x_real_ip: self.x_real_ip.map(HeaderValue::into_owned),
        }
    }
}

/// A header value as a [`Record`] keeps it.
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
    fn ends(&self) -> (&Cow<'a, str>, &Cow<'a, str>) {
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

/// Why a line that carries the marker could not be turned into a [`Record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Nothing but whitespace separates the marker from something that is not `{`.
    #[error("no JSON object follows the ingress marker")]
    NoJsonObject,
    /// The line ends inside the object: a truncated or partially written line.
    #[error("the ingress object is not terminated before the end of the line")]
    UnterminatedObject,
    /// The object breaks the (tolerant) syntax: a missing colon, comma or quote.
    #[error("the ingress object is not valid JSON")]
    InvalidJson,
    /// A required field is absent or holds no value (`-`, `null`, empty).
    #[error("required field `{0}` is missing or has no value")]
    MissingField(&'static str),
    /// A field holds a value of the wrong shape (not an IP address, not a port, …).
    #[error("field `{0}` has an invalid value")]
    InvalidField(&'static str),
    /// A field appears twice; which copy to believe would be a guess an attacker could steer.
    #[error("field `{0}` appears more than once")]
    DuplicateField(&'static str),
}

impl Malformed {
    /// A stable, low-cardinality reason label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Malformed::NoJsonObject => "no_json_object",
            Malformed::UnterminatedObject => "unterminated_object",
            Malformed::InvalidJson => "invalid_json",
            Malformed::MissingField(_) => "missing_field",
            Malformed::InvalidField(_) => "invalid_field",
            Malformed::DuplicateField(_) => "duplicate_field",
        }
    }

    /// The field the reason refers to, when there is one (a second metric label).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Malformed::MissingField(field)
            | Malformed::InvalidField(field)
            | Malformed::DuplicateField(field) => Some(field),
            Malformed::NoJsonObject | Malformed::UnterminatedObject | Malformed::InvalidJson => {
                None
            }
        }
    }
}

/// Parses one log line (without or with its trailing newline).
///
/// `Ok(None)` means the line carries no marker, so it is not an ingress record at all (other
/// access-log formats may share the file). When the marker occurs more than once, the first
/// occurrence followed by a well-formed object wins, and if none is, the first occurrence's
/// error is returned.
pub fn parse_line(line: &[u8]) -> Result<Option<Record<'_>>, Malformed> {
    find_record(line, parse_template_or_object)
}

/// The marker search of [`parse_line`], with the object parser as a parameter so the tests can
/// run the general scanner alone and hold the template fast path to its results.
fn find_record<'a>(
    line: &'a [u8],
    parse_object_after_marker: impl Fn(&'a [u8]) -> Result<Record<'a>, Malformed>,
) -> Result<Option<Record<'a>>, Malformed> {
    let mut first_error = None;
    let mut search_from = 0;
    for _ in 0..MAX_MARKER_ATTEMPTS {
        let rest = line.get(search_from..).unwrap_or_default();
        // The controller's template starts the line, and checking that is far cheaper than a
        // search; it is then also the first occurrence, as the search would have found.
        let found = if rest.starts_with(MARKER.as_bytes()) {
            Some(0)
        } else {
            MARKER_FINDER.find(rest)
        };
        let Some(offset) = found else {
            break;
        };
        // The marker cannot overlap itself, so the next occurrence starts after this one.
        search_from += offset + MARKER.len();
        let after_marker = line.get(search_from..).unwrap_or_default();
        match parse_object_after_marker(after_marker) {
            Ok(record) => return Ok(Some(record)),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        None => Ok(None),
        Some(error) => Err(error),
    }
}

fn parse_template_or_object(input: &[u8]) -> Result<Record<'_>, Malformed> {
    match parse_template(input) {
        Some(record) => Ok(record),
        None => parse_object(input),
    }
}

/// The template's text between its values, exactly as the spec asks the user to configure it:
/// each piece runs from the end of one value (its closing quote included) to the start of the
/// next (its opening quote included).
const TEMPLATE_BEFORE_SOURCE_PORT: &[u8] = br#" {"source_port": "#;
const TEMPLATE_BEFORE_DESTINATION_IP: &[u8] = br#", "destination_ip": ""#;
const TEMPLATE_BEFORE_DESTINATION_PORT: &[u8] = br#"", "destination_port": "#;
const TEMPLATE_BEFORE_SOURCE_IP: &[u8] = br#", "source_ip": ""#;
const TEMPLATE_BEFORE_X_FORWARDED_FOR: &[u8] = br#"", "x-forwarded-for": ""#;
const TEMPLATE_BEFORE_X_REAL_IP: &[u8] = br#"", "x-real-ip": ""#;
const TEMPLATE_END: &[u8] = br#""}"#;

/// The fast path for a line that is byte for byte the spec's template: the text between the
/// values is compared as whole slices instead of being tokenised key by key, which is where
/// the general scanner spends most of its time on such a line.
///
/// `None` means "not provably the plain template": any other spacing or key order, an extra
/// field, a bare or escaped value, or a value the general scanner would reject. The caller then
/// runs [`parse_object`], which stays the one definition of what a line means; this path only
/// returns what that scanner would return for the same bytes, and the tests hold it to that.
fn parse_template(input: &[u8]) -> Option<Record<'_>> {
    let mut rest = input.strip_prefix(TEMPLATE_BEFORE_SOURCE_PORT)?;
    let source_port = template_port(&mut rest)?;
    rest = rest.strip_prefix(TEMPLATE_BEFORE_DESTINATION_IP)?;
    let destination_ip = template_ip(&mut rest)?;
    rest = rest.strip_prefix(TEMPLATE_BEFORE_DESTINATION_PORT)?;
    let destination_port = template_port(&mut rest)?;
    rest = rest.strip_prefix(TEMPLATE_BEFORE_SOURCE_IP)?;
    let source_ip = template_ip(&mut rest)?;
    rest = rest.strip_prefix(TEMPLATE_BEFORE_X_FORWARDED_FOR)?;
    let x_forwarded_for = template_header(&mut rest)?;
    rest = rest.strip_prefix(TEMPLATE_BEFORE_X_REAL_IP)?;
    let x_real_ip = template_header(&mut rest)?;
    // Whatever follows the closing brace is outside the object, and the general scanner
    // ignores it too.
    rest.strip_prefix(TEMPLATE_END)?;
    Some(Record {
        source_ip,
        source_port,
        destination_ip,
        destination_port,
        // The template has no protocol field, so the general scanner would take the default.
        protocol: Protocol::default(),
        x_forwarded_for,
        x_real_ip,
    })
}

/// Most digits the fast path reads in a port. The general scanner also takes longer runs of
/// leading zeros; such a port is left to it.
const TEMPLATE_PORT_DIGITS: usize = 5;

/// An unquoted port, read as [`parse_port`] would read it. The run of digits is the whole token
/// for the general scanner too, because the template's next piece starts with a comma (checked
/// by the caller).
fn template_port(rest: &mut &[u8]) -> Option<u16> {
    let mut value = 0u32;
    let mut digits = 0;
    // One digit past the limit is enough to know the port is not the fast path's to read.
    for &byte in rest.iter().take(TEMPLATE_PORT_DIGITS + 1) {
        if !byte.is_ascii_digit() {
            break;
        }
        value = value * 10 + u32::from(byte - b'0');
        digits += 1;
    }
    if digits == 0 || digits > TEMPLATE_PORT_DIGITS {
        return None;
    }
    *rest = rest.get(digits..)?;
    u16::try_from(value).ok()
}

/// The body of a quoted value up to its closing quote, or `None` when a backslash comes first:
/// escapes are for the general scanner to decode. The closing quote itself is left for the
/// caller's next template piece, which starts with it.
fn template_quoted_body<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = find_quote_or_backslash(rest)?;
    let (body, after) = rest.split_at_checked(end)?;
    if after.first() != Some(&b'"') {
        return None;
    }
    *rest = after;
    Some(body)
}

/// A quoted address, read as [`scalar`] with [`parse_ip`] would read it: neither `-` nor the
/// empty text is an address, so a field without a value is the general scanner's to report.
/// Always inlined for the reason given at [`parse_ip`].
#[inline(always)]
fn template_ip(rest: &mut &[u8]) -> Option<IpAddr> {
    let body = template_quoted_body(rest)?;
    if body.len() > MAX_SCALAR_BYTES {
        return None;
    }
    parse_ip(body)
}

/// A quoted header, read as [`header`] would read an unescaped value; `Some(None)` is a header
/// without a value.
fn template_header<'a>(rest: &mut &'a [u8]) -> Option<Option<HeaderValue<'a>>> {
    let body = template_quoted_body(rest)?;
    Some(header_value(body, false))
}

/// The fields of the template, in the order the scanner fills them.
#[derive(Clone, Copy)]
enum Field {
    SourceIp,
    SourcePort,
    DestinationIp,
    DestinationPort,
    Protocol,
    XForwardedFor,
    XRealIp,
}

impl Field {
    fn from_key(raw_key: &[u8]) -> Option<Field> {
        Some(match raw_key {
            b"source_ip" => Field::SourceIp,
            b"source_port" => Field::SourcePort,
            b"destination_ip" => Field::DestinationIp,
            b"destination_port" => Field::DestinationPort,
            b"protocol" => Field::Protocol,
            b"x-forwarded-for" => Field::XForwardedFor,
            b"x-real-ip" => Field::XRealIp,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::SourceIp => "source_ip",
            Field::SourcePort => "source_port",
            Field::DestinationIp => "destination_ip",
            Field::DestinationPort => "destination_port",
            Field::Protocol => "protocol",
            Field::XForwardedFor => "x-forwarded-for",
            Field::XRealIp => "x-real-ip",
        }
    }
}

/// A value as it sits in the line, before it is decoded for its field.
#[derive(Clone, Copy)]
enum RawValue<'a> {
    /// The bytes between the quotes; `escaped` when they hold at least one backslash.
    Quoted { body: &'a [u8], escaped: bool },
    /// An unquoted token such as `443`, `-` or `null`.
    Bare(&'a [u8]),
    /// An object or array: never a valid value for a template field.
    Nested,
}

/// The template's fields as found, each at most once.
#[derive(Default)]
struct Slots<'a> {
    values: [Option<RawValue<'a>>; 7],
}

impl<'a> Slots<'a> {
    fn set(&mut self, field: Field, value: RawValue<'a>) -> Result<(), Malformed> {
        let slot = self
            .values
            .get_mut(field as usize)
            .ok_or(Malformed::InvalidJson)?;
        if slot.is_some() {
            return Err(Malformed::DuplicateField(field.name()));
        }
        *slot = Some(value);
        Ok(())
    }

    fn get(&self, field: Field) -> Option<RawValue<'a>> {
        self.values.get(field as usize).copied().flatten()
    }
}

fn parse_object(input: &[u8]) -> Result<Record<'_>, Malformed> {
    let mut scanner = Scanner { input, pos: 0 };
    scanner.skip_whitespace();
    match scanner.peek() {
        Some(b'{') => scanner.pos += 1,
        _ => return Err(Malformed::NoJsonObject),
    }

    let mut slots = Slots::default();
    scanner.skip_whitespace();
    if scanner.peek() == Some(b'}') {
        return build_record(&slots);
    }
    loop {
        scanner.skip_whitespace();
        let (key, _) = scanner.expect_string()?;
        scanner.skip_whitespace();
        scanner.expect_byte(b':')?;
        scanner.skip_whitespace();
        let value = scanner.value()?;
        if let Some(field) = Field::from_key(key) {
            slots.set(field, value)?;
        }
        scanner.skip_whitespace();
        match scanner.next_byte() {
            Some(b',') => continue,
            Some(b'}') => break,
            Some(_) => return Err(Malformed::InvalidJson),
            None => return Err(Malformed::UnterminatedObject),
        }
    }
    build_record(&slots)
}

fn build_record<'a>(slots: &Slots<'a>) -> Result<Record<'a>, Malformed> {
    Ok(Record {
        source_ip: required(slots, Field::SourceIp, parse_ip)?,
        source_port: required(slots, Field::SourcePort, parse_port)?,
        destination_ip: required(slots, Field::DestinationIp, parse_ip)?,
        destination_port: required(slots, Field::DestinationPort, parse_port)?,
        protocol: scalar(slots, Field::Protocol, Protocol::from_name)?.unwrap_or_default(),
        x_forwarded_for: header(slots, Field::XForwardedFor)?,
        x_real_ip: header(slots, Field::XRealIp)?,
    })
}

/// An IPv4 address in dotted-decimal form, accepting exactly what `Ipv4Addr::from_str` accepts
/// (four decimal octets of one to three digits, no leading zero, nothing else) without its
/// general-purpose parser: addresses are most of the per-line parsing work.
#[inline]
pub fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    if text.len() > "255.255.255.255".len() {
        return None;
    }
    // One pass, accumulating as it goes: this runs several times per log line, and slicing
    // the text into fields first costs more than the arithmetic.
    let mut address = 0u32;
    let mut octet = 0u32;
    let mut digits = 0u32;
    let mut dots = 0u32;
    for &byte in text {
        match byte {
            b'0'..=b'9' => {
                // Octal-looking octets (`01`) are ambiguous, so std rejects them and so does
                // this; three digits at most keep `octet` small.
                if (digits == 1 && octet == 0) || digits == 3 {
                    return None;
                }
                octet = octet * 10 + u32::from(byte - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && octet <= 255 && dots < 3 => {
                address = address << 8 | octet;
                octet = 0;
                digits = 0;
                dots += 1;
            }
            _ => return None,
        }
    }
    if dots != 3 || digits == 0 || octet > 255 {
        return None;
    }
    Some(Ipv4Addr::from(address << 8 | octet))
}

/// An IPv4 or IPv6 address, as `IpAddr::from_str` reads it, with the IPv4 fast path first.
///
/// Always inlined, with the rare IPv6 path kept out of line: returned from a call, the
/// 17-byte `Option<IpAddr>` goes through memory and the caller reads it back with a load the
/// CPU cannot forward from the callee's narrower stores, a stall that costs about as much as
/// the rest of `parse_line`.
#[inline(always)]
pub fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    match parse_ipv4(text) {
        Some(v4) => Some(IpAddr::V4(v4)),
        None => parse_ipv6(text).map(IpAddr::V6),
    }
}

#[inline(never)]
fn parse_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    // Every IPv6 text form has a colon; anything else cannot be one.
    if !text.contains(&b':') {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse::<Ipv6Addr>().ok()
}

/// A port: decimal digits only (`u16::from_str` would also take a leading `+`), leading zeros
/// allowed, at most 65535.
fn parse_port(text: &[u8]) -> Option<u16> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u16, |value, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        value
            .checked_mul(10)?
            .checked_add(u16::try_from(digit).ok()?)
    })
}

fn required<T>(
    slots: &Slots<'_>,
    field: Field,
    convert: impl Fn(&[u8]) -> Option<T>,
) -> Result<T, Malformed> {
    scalar(slots, field, convert)?.ok_or(Malformed::MissingField(field.name()))
}

/// Decodes a short field (address, port, protocol): `Ok(None)` when it is absent or holds no
/// value.
///
/// The converters work on bytes: every valid address, port or protocol is ASCII, so bytes that
/// are not UTF-8 make the field invalid just as a failed UTF-8 check would.
fn scalar<T>(
    slots: &Slots<'_>,
    field: Field,
    convert: impl Fn(&[u8]) -> Option<T>,
) -> Result<Option<T>, Malformed> {
    let invalid = Malformed::InvalidField(field.name());
    let bytes = match slots.get(field) {
        None => return Ok(None),
        Some(RawValue::Nested) => return Err(invalid),
        Some(value) => match decode_value(value, MAX_SCALAR_BYTES).map_err(|_| invalid)? {
            None => return Ok(None),
            Some(bytes) => bytes,
        },
    };
    convert(&bytes).map(Some).ok_or(invalid)
}

/// Reads a header field, replacing bytes that are not UTF-8 rather than rejecting the line.
fn header<'a>(slots: &Slots<'a>, field: Field) -> Result<Option<HeaderValue<'a>>, Malformed> {
    let (body, escaped) = match slots.get(field) {
        None => return Ok(None),
        Some(RawValue::Nested) => return Err(Malformed::InvalidField(field.name())),
        Some(RawValue::Bare(token)) if token == b"null" => return Ok(None),
        Some(RawValue::Bare(token)) => (token, false),
        Some(RawValue::Quoted { body, escaped }) => (body, escaped),
    };
    Ok(header_value(body, escaped))
}

/// A header's raw text (`escaped` when it holds a backslash) as the record keeps it; `None` for
/// the "no value" spellings. The one definition for the template fast path and the scanner.
fn header_value(body: &[u8], escaped: bool) -> Option<HeaderValue<'_>> {
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

/// A decoded value exceeded its length cap.
struct TooLong;

/// Turns a raw value into its bytes: `None` for the "no value" spellings (`-`, `null`, empty).
fn decode_value(value: RawValue<'_>, max_len: usize) -> Result<Option<Cow<'_, [u8]>>, TooLong> {
    let bytes = match value {
        RawValue::Nested => return Ok(None),
        RawValue::Bare(token) if token == b"null" => return Ok(None),
        RawValue::Bare(token) => Cow::Borrowed(token),
        RawValue::Quoted {
            body,
            escaped: false,
        } => Cow::Borrowed(body),
        RawValue::Quoted {
            body,
            escaped: true,
        } => Cow::Owned(unescape(body, max_len)?),
    };
    if bytes.is_empty() || bytes.as_ref() == b"-" {
        return Ok(None);
    }
    if bytes.len() > max_len {
        return Err(TooLong);
    }
    Ok(Some(bytes))
}

/// Decodes nginx `\xHH` and JSON escapes, stopping as soon as the output exceeds `max_len` so a
/// huge attacker value costs no more than the cap.
///
/// An escape that is neither (a stray backslash, `\x` without two hex digits, a bad `\u`) is
/// kept literally: the value is data to inspect, and guessing at it would be worse.
fn unescape(body: &[u8], max_len: usize) -> Result<Vec<u8>, TooLong> {
    match unescape_prefix(body, max_len) {
        (out, true) => Ok(out),
        (_, false) => Err(TooLong),
    }
}

/// The decoded start of `body`: all of it and `true` when it decodes to at most `max_len`
/// bytes, else its first `max_len` bytes and `false`. Decoding stops there, so the rest of a
/// huge value is never looked at.
fn unescape_prefix(body: &[u8], max_len: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(body.len().min(max_len.saturating_add(4)));
    let mut at = 0;
    while let Some(&byte) = body.get(at) {
        if out.len() > max_len {
            out.truncate(max_len);
            return (out, false);
        }
        if byte == b'\\' {
            at += decode_escape(body.get(at..).unwrap_or_default(), &mut out);
            continue;
        }
        let rest = body.get(at..).unwrap_or_default();
        // Copying one byte past the room left is enough to know the value is over.
        let room = max_len.saturating_add(1).saturating_sub(out.len());
        let literal = memchr::memchr(b'\\', rest).unwrap_or(rest.len()).min(room);
        out.extend_from_slice(rest.get(..literal).unwrap_or_default());
        at += literal;
    }
    if out.len() > max_len {
        out.truncate(max_len);
        return (out, false);
    }
    (out, true)
}

/// The last (up to) `max_len` decoded bytes of `body`, decoding only a window at its end.
///
/// Four raw bytes per decoded byte covers a tail of `\xHH` escapes; a tail of `\uXXXX` ones
/// yields less, which is allowed. The window is moved forward to the first place where
/// decoding from the start of the value would also begin an escape or a literal, so the bytes
/// decoded are a true end of the value, not a misreading of an escape cut in half.
fn unescape_suffix(body: &[u8], max_len: usize) -> Vec<u8> {
    let window = body
        .len()
        .saturating_sub(max_len.saturating_mul(4).saturating_add(MAX_ESCAPE_BYTES));
    let start = escape_boundary(body, window);
    let (mut out, _) = unescape_prefix(body.get(start..).unwrap_or_default(), usize::MAX - 1);
    let excess = out.len().saturating_sub(max_len);
    out.drain(..excess);
    out
}

/// The longest escape [`decode_escape`] reads: a surrogate pair, `\uD83D\uDE00`.
const MAX_ESCAPE_BYTES: usize = 12;

/// The first position at or after `from` where decoding `body` from its start begins a new
/// escape or literal.
///
/// A position no escape can reach (no backslash in the longest escape's length before it) is
/// one. So is a backslash right after a byte that is not a backslash: that byte ended an
/// escape, was a literal, or broke an escape that then read as a literal backslash. (Or it
/// ends the first half of a surrogate pair, and the second half then reads as U+FFFD: not a
/// comma, so only the end's first entry changes, which the readers drop as cut anyway.) Inside
/// a run of backslashes the pairing depends on where the run began, so the run is passed over.
fn escape_boundary(body: &[u8], from: usize) -> usize {
    let lookback = body
        .get(from.saturating_sub(MAX_ESCAPE_BYTES - 1)..from)
        .unwrap_or_default();
    let Some(found) = memchr::memrchr(b'\\', lookback) else {
        return from;
    };
    let mut last_backslash = from.saturating_sub(lookback.len()) + found;
    let mut at = from;
    loop {
        let Some(offset) = body.get(at..).and_then(|rest| memchr::memchr(b'\\', rest)) else {
            return (last_backslash + MAX_ESCAPE_BYTES).clamp(at, body.len());
        };
        let backslash = at + offset;
        if backslash > 0 && body.get(backslash - 1) != Some(&b'\\') {
            return backslash;
        }
        let run = body
            .get(backslash..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&byte| byte == b'\\')
            .count();
        at = backslash + run;
        last_backslash = at - 1;
    }
}

/// Decodes the escape at the start of `escape` (which begins with a backslash) into `out` and
/// returns how many input bytes it used.
fn decode_escape(escape: &[u8], out: &mut Vec<u8>) -> usize {
    let simple = match escape.get(1) {
        Some(b'"') => Some(b'"'),
        Some(b'\\') => Some(b'\\'),
        Some(b'/') => Some(b'/'),
        Some(b'b') => Some(0x08),
        Some(b'f') => Some(0x0c),
        Some(b'n') => Some(b'\n'),
        Some(b'r') => Some(b'\r'),
        Some(b't') => Some(b'\t'),
        _ => None,
    };
    if let Some(byte) = simple {
        out.push(byte);
        return 2;
    }
    match escape.get(1) {
        Some(b'x') => {
            if let Some(byte) = escape.get(2..4).and_then(hex_byte) {
                out.push(byte);
                return 4;
            }
        }
        Some(b'u') => {
            if let Some((ch, consumed)) = decode_unicode_escape(escape) {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                return consumed;
            }
        }
        _ => {}
    }
    out.push(b'\\');
    1
}

/// Decodes `\uXXXX`, joining a surrogate pair when one follows; a lone surrogate becomes
/// U+FFFD, as a lossy UTF-8 conversion would.
fn decode_unicode_escape(escape: &[u8]) -> Option<(char, usize)> {
    let high = hex_u16(escape.get(2..6)?)?;
    if !(0xD800..0xDC00).contains(&high) {
        let ch = char::from_u32(u32::from(high)).unwrap_or(char::REPLACEMENT_CHARACTER);
        return Some((ch, 6));
    }
    let low = match (escape.get(6..8), escape.get(8..12).and_then(hex_u16)) {
        (Some(b"\\u"), Some(low)) if (0xDC00..0xE000).contains(&low) => low,
        _ => return Some((char::REPLACEMENT_CHARACTER, 6)),
    };
    let code = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
    Some((
        char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER),
        12,
    ))
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [high, low] => Some(hex_digit(*high)? << 4 | hex_digit(*low)?),
        _ => None,
    }
}

fn hex_u16(quad: &[u8]) -> Option<u16> {
    quad.iter().try_fold(0u16, |acc, &byte| {
        Some(acc << 4 | u16::from(hex_digit(byte)?))
    })
}

/// Template strings are mostly short (keys, addresses), where eight bytes at a time in a plain
/// register beat both a byte loop and the setup of a vectorised search; long header values go
/// to `memchr2`.
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const SHORT: usize = 32;
    let head = bytes.get(..SHORT).unwrap_or(bytes);
    let mut words = head.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().ok()?);
        let found = bytes_equal_to(word, b'"') | bytes_equal_to(word, b'\\');
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    if let Some(position) = words
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
    {
        return Some(offset + position);
    }
    let tail = bytes.get(SHORT..)?;
    memchr::memchr2(b'"', b'\\', tail).map(|position| position + SHORT)
}

/// Where the string starting at `body` ends (the offset of its closing quote), and whether a
/// backslash comes before that.
///
/// A backslash hides the byte after it, so a quote closes the string when the run of
/// backslashes right before it is even. Rather than stepping from escape to escape (a header of
/// `\xHH` escapes holds thousands), this searches for quotes and counts the run before each:
/// nginx's own escaping never leaves a quote inside a value, so one search crosses the value.
/// JSON escaping writes a quote inside as `\"`; after a few of those the search goes byte by
/// byte, which is cheaper than restarting it every other byte.
fn closing_quote(body: &[u8]) -> Option<(usize, bool)> {
    const SEARCHES: usize = 8;
    let first = find_quote_or_backslash(body)?;
    if body.get(first) == Some(&b'"') {
        return Some((first, false));
    }
    // No backslash before `first`, and a quote stops every run, so counting back from a quote
    // never runs into a backslash whose pairing is unknown.
    let mut from = first;
    for _ in 0..SEARCHES {
        let quote = from + memchr::memchr(b'"', body.get(from..)?)?;
        let run = trailing_backslashes(body.get(from..quote).unwrap_or_default());
        if run % 2 == 0 {
            return Some((quote, true));
        }
        from = quote + 1;
    }
    // `from` follows an escaped quote, so it starts a new token.
    let mut at = from;
    loop {
        match body.get(at)? {
            b'"' => return Some((at, true)),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// How many backslashes `bytes` ends with; eight at a time, since JSON escaping doubles every
/// backslash of a value and a run can be as long as the header.
fn trailing_backslashes(bytes: &[u8]) -> usize {
    const EIGHT: [u8; 8] = [b'\\'; 8];
    let mut end = bytes.len();
    while end >= 8 && bytes.get(end - 8..end) == Some(&EIGHT[..]) {
        end -= 8;
    }
    let rest = bytes.get(..end).unwrap_or_default();
    let odd = rest.iter().rev().take_while(|&&byte| byte == b'\\').count();
    bytes.len() - end + odd
}

/// The high bit of each byte of `word` that equals `byte`, give or take bytes above the first
/// match: a borrow can flag a byte after a true match, never before one, so the lowest flag
/// is always right.
fn bytes_equal_to(word: u64, byte: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zeroed = word ^ (ONES * u64::from(byte));
    zeroed.wrapping_sub(ONES) & !zeroed & HIGHS
}

/// A cursor over the bytes after the marker. Every method checks bounds, so no input can make
/// it panic.
struct Scanner<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn expect_byte(&mut self, expected: u8) -> Result<(), Malformed> {
        match self.next_byte() {
            Some(byte) if byte == expected => Ok(()),
            Some(_) => Err(Malformed::InvalidJson),
            None => Err(Malformed::UnterminatedObject),
        }
    }

    /// Reads a quoted string and returns its raw body and whether it holds an escape.
    fn expect_string(&mut self) -> Result<(&'a [u8], bool), Malformed> {
        self.expect_byte(b'"')?;
        let start = self.pos;
        let (end, escaped) = closing_quote(self.rest()).ok_or(Malformed::UnterminatedObject)?;
        self.pos = start + end + 1;
        Ok((
            self.input.get(start..start + end).unwrap_or_default(),
            escaped,
        ))
    }

    fn value(&mut self) -> Result<RawValue<'a>, Malformed> {
        match self.peek() {
            None => Err(Malformed::UnterminatedObject),
            Some(b'"') => {
                let (body, escaped) = self.expect_string()?;
                Ok(RawValue::Quoted { body, escaped })
            }
            Some(b'{' | b'[') => {
                self.skip_nested()?;
                Ok(RawValue::Nested)
            }
            Some(_) => {
                let rest = self.rest();
                let len = rest
                    .iter()
                    .position(|&b| matches!(b, b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n'))
                    .unwrap_or(rest.len());
                self.pos += len;
                Ok(RawValue::Bare(rest.get(..len).unwrap_or_default()))
            }
        }
    }

    /// Skips an object or array value of a field the collector does not use, tracking depth
    /// with a counter rather than recursion so deep nesting cannot exhaust the stack.
    fn skip_nested(&mut self) -> Result<(), Malformed> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(Malformed::UnterminatedObject),
                Some(b'"') => {
                    self.expect_string()?;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(b'}' | b']') => {
                    depth = depth.saturating_sub(1);
                    self.pos += 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Some(_) => self.pos += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_cap_holds_after_repairing_invalid_bytes() {
        // Found by fuzzing: 106 invalid bytes repaired to U+FFFD made a kept header of
        // about three times the cap.
        let mut line = br#"tigera_secure_ee_ingress: {"source_port": 1, "destination_ip": "10.1.1.10", "destination_port": 2, "source_ip": "10.1.10.1", "x-forwarded-for": ""#.to_vec();
        line.extend(std::iter::repeat_n(0xff_u8, 400));
        line.extend_from_slice(br#"", "x-real-ip": "-"}"#);
        let record = parse_line(&line).unwrap().unwrap();
        let header = record.x_forwarded_for.unwrap();
        assert!(header.is_oversize());
        assert!(header.kept().all(|part| part.len() <= MAX_HEADER_BYTES));
        // Just under the cap once repaired: kept, within the cap.
        let mut line = br#"tigera_secure_ee_ingress: {"source_port": 1, "destination_ip": "10.1.1.10", "destination_port": 2, "source_ip": "10.1.10.1", "x-forwarded-for": ""#.to_vec();
        line.extend(std::iter::repeat_n(0xff_u8, MAX_HEADER_BYTES / 3));
        line.extend_from_slice(br#"", "x-real-ip": "-"}"#);
        let record = parse_line(&line).unwrap().unwrap();
        assert!(record.x_forwarded_for.unwrap().full().unwrap().len() <= MAX_HEADER_BYTES);
    }

    use super::*;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};

    fn line(body: &str) -> String {
        format!("{MARKER} {{{body}}}")
    }

    const ADDRESSES: &str = r#""source_ip": "10.1.10.1", "source_port": 1, "destination_ip": "10.1.1.10", "destination_port": 2"#;

    fn with_headers(xff: &str, xri: &str) -> String {
        line(&format!(
            r#"{ADDRESSES}, "x-forwarded-for": "{xff}", "x-real-ip": "{xri}""#
        ))
    }

    fn parse_ok(line: &str) -> Record<'_> {
        parse_line(line.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn borrows_header_values_without_escapes() {
        let text = with_headers("1.1.1.1, 10.0.0.1", "2.2.2.2");
        let record = parse_ok(&text);
        assert!(matches!(
            record.x_forwarded_for,
            Some(HeaderValue::Full(Cow::Borrowed("1.1.1.1, 10.0.0.1")))
        ));
        assert!(matches!(
            record.x_real_ip,
            Some(HeaderValue::Full(Cow::Borrowed("2.2.2.2")))
        ));
    }

    #[test]
    fn unescape_stops_at_the_cap() {
        let body = "\\x41".repeat(MAX_HEADER_BYTES + 1);
        assert!(unescape(body.as_bytes(), MAX_HEADER_BYTES).is_err());
        let body = "\\x41".repeat(MAX_HEADER_BYTES);
        assert_eq!(
            unescape(body.as_bytes(), MAX_HEADER_BYTES)
                .ok()
                .unwrap()
                .len(),
            MAX_HEADER_BYTES
        );
    }

    #[test]
    fn unknown_escapes_are_kept_literally() {
        assert_eq!(
            unescape(br"a\qb\x4", 64).ok().unwrap(),
            br"a\qb\x4".to_vec()
        );
        assert_eq!(
            unescape(br"\ud83d\ude00", 64).ok().unwrap(),
            "😀".as_bytes()
        );
        assert_eq!(
            unescape(br"\ud83dx", 64).ok().unwrap(),
            "\u{FFFD}x".as_bytes()
        );
    }

    #[test]
    fn ports_reject_signs_and_overflow() {
        for bad in ["+1", "65536", "-1", "1.5", "0x10"] {
            let text = line(&format!(
                r#""source_ip": "10.1.10.1", "source_port": "{bad}", "destination_ip": "10.1.1.10", "destination_port": 2"#
            ));
            assert_eq!(
                parse_line(text.as_bytes()),
                Err(Malformed::InvalidField("source_port")),
                "{bad}"
            );
        }
    }

    /// `parse_ip` and `parse_port` must accept exactly what the std parsers they replace accept.
    fn std_ip(text: &[u8]) -> Option<IpAddr> {
        std::str::from_utf8(text).ok()?.parse().ok()
    }

    fn std_port(text: &[u8]) -> Option<u16> {
        let text = std::str::from_utf8(text).ok()?;
        if text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().ok()
        } else {
            None
        }
    }

    #[test]
    fn address_and_port_parsers_agree_with_std_on_edge_cases() {
        let cases: &[&[u8]] = &[
            b"",
            b"0.0.0.0",
            b"255.255.255.255",
            b"256.0.0.1",
            b"1.2.3",
            b"1.2.3.4.",
            b".1.2.3.4",
            b"1..2.3",
            b"01.2.3.4",
            b"1.2.3.00",
            b"1.2.3.0",
            b"1.2.3.1000",
            b"0001.2.3.4",
            b"1.2.3.4 ",
            b"+1.2.3.4",
            b"1.2.3.-4",
            b"1.2.3.4:80",
            b"::",
            b"::1",
            b"::ffff:1.2.3.4",
            b"2001:db8::1",
            b"fe80::1%eth0",
            b"1.2.3.\xff",
            b"\xff",
            b"65535",
            b"65536",
            b"0080",
            b"00000000000443",
            b"+80",
            b"-1",
            b"\xd9\xa3",
        ];
        for &case in cases {
            assert_eq!(parse_ip(case), std_ip(case), "{case:?}");
            assert_eq!(parse_port(case), std_port(case), "{case:?}");
        }
        // Non-ASCII digits (Arabic-Indic three) are not digits to either parser.
        assert_eq!(parse_ip("1.2.3.\u{663}".as_bytes()), None);
    }

    proptest::proptest! {
        #[test]
        fn address_and_port_parsers_agree_with_std(
            text in proptest::collection::vec(
                proptest::sample::select(&b"0123456789.:abf%[] \xff"[..]),
                0..20,
            )
        ) {
            proptest::prop_assert_eq!(parse_ip(&text), std_ip(&text));
            proptest::prop_assert_eq!(parse_port(&text), std_port(&text));
        }

        #[test]
        fn quote_search_finds_the_first_quote_or_backslash(
            text in proptest::collection::vec(
                // Neighbours of both targets and bytes with the high bit set, where a borrow
                // in the word-at-a-time search would show.
                proptest::sample::select(&b"\"\\!#[]a\x00\x01\x7f\x80\xa2\xdc\xff"[..]),
                0..80,
            )
        ) {
            let expected = text.iter().position(|&b| b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(find_quote_or_backslash(&text), expected);
        }

        #[test]
        fn dotted_quads_agree_with_std(
            octets in proptest::collection::vec("[0-9]{0,4}", 3..6)
        ) {
            let text = octets.join(".");
            proptest::prop_assert_eq!(parse_ip(text.as_bytes()), std_ip(text.as_bytes()));
        }
    }

    #[test]
    fn later_markers_are_tried_when_the_first_fails() {
        let good = line(ADDRESSES);
        let text = format!("{MARKER} garbage {good}");
        assert_eq!(parse_ok(&text).destination_port, 2);
        let text = format!("GET /{MARKER}{{ {good}");
        assert_eq!(parse_ok(&text).destination_port, 2);
        let text = format!("{MARKER}x {MARKER} {{\"source_ip\": 1}}");
        assert_eq!(parse_line(text.as_bytes()), Err(Malformed::NoJsonObject));
        let text = format!("{0}1 {0}2 {0}3 {0}4 {good}", MARKER);
        assert_eq!(parse_line(text.as_bytes()), Err(Malformed::NoJsonObject));
        assert_eq!(parse_line(b"no marker here"), Ok(None));
    }

    #[test]
    fn skips_nested_values_of_unknown_fields() {
        let text = line(&format!(
            r#""extra": {{"a": [1, {{"b": "}}]"}}], "c": "{{"}}, {ADDRESSES}"#
        ));
        assert_eq!(parse_ok(&text).destination_port, 2);
    }

    #[test]
    fn nested_value_for_a_template_field_is_invalid() {
        let text = line(&format!(r#"{ADDRESSES}, "x-real-ip": ["1.1.1.1"]"#));
        assert_eq!(
            parse_line(text.as_bytes()),
            Err(Malformed::InvalidField("x-real-ip"))
        );
    }

    #[test]
    fn protocol_field_overrides_the_default() {
        let text = line(&format!(r#"{ADDRESSES}, "protocol": "UDP""#));
        assert_eq!(parse_ok(&text).protocol, Protocol::Udp);
        let text = line(&format!(r#"{ADDRESSES}, "protocol": -"#));
        assert_eq!(parse_ok(&text).protocol, Protocol::Tcp);
        let text = line(&format!(r#"{ADDRESSES}, "protocol": "icmp""#));
        assert_eq!(
            parse_line(text.as_bytes()),
            Err(Malformed::InvalidField("protocol"))
        );
    }

    /// The spec's template as the controller prints it, after the marker.
    fn template_object(
        ports: (&str, &str),
        addresses: (&str, &str),
        headers: (&[u8], &[u8]),
    ) -> Vec<u8> {
        let mut object = format!(
            r#" {{"source_port": {}, "destination_ip": "{}", "destination_port": {}, "source_ip": "{}", "x-forwarded-for": ""#,
            ports.0, addresses.1, ports.1, addresses.0
        )
        .into_bytes();
        object.extend_from_slice(headers.0);
        object.extend_from_slice(br#"", "x-real-ip": ""#);
        object.extend_from_slice(headers.1);
        object.extend_from_slice(br#""}"#);
        object
    }

    fn is_borrowed(header: &Option<HeaderValue<'_>>) -> Option<Vec<bool>> {
        let borrowed = |text: &Cow<'_, str>| matches!(text, Cow::Borrowed(_));
        header.as_ref().map(|value| match value {
            HeaderValue::Full(text) => vec![borrowed(text)],
            HeaderValue::Oversize(oversize) => {
                let (head, tail) = oversize.ends();
                vec![borrowed(head), borrowed(tail)]
            }
        })
    }

    /// Equal records, and equally borrowed: the fast path must not allocate where the general
    /// scanner borrows (nor the reverse, which would mean it decoded differently).
    fn assert_same_outcome<'a>(
        fast: &Result<Option<Record<'a>>, Malformed>,
        general: &Result<Option<Record<'a>>, Malformed>,
        input: &[u8],
    ) {
        assert_eq!(fast, general, "{:?}", String::from_utf8_lossy(input));
        if let (Ok(Some(fast)), Ok(Some(general))) = (fast, general) {
            assert_eq!(
                is_borrowed(&fast.x_forwarded_for),
                is_borrowed(&general.x_forwarded_for)
            );
            assert_eq!(
                is_borrowed(&fast.x_real_ip),
                is_borrowed(&general.x_real_ip)
            );
        }
    }

    /// The one promise of the fast path: when it answers, the general scanner answers the same.
    fn assert_fast_path_agrees(object: &[u8]) {
        if let Some(fast) = parse_template(object) {
            assert_same_outcome(&Ok(Some(fast)), &parse_object(object).map(Some), object);
        }
        let line = [MARKER.as_bytes(), object].concat();
        assert_same_outcome(&parse_line(&line), &find_record(&line, parse_object), &line);
    }

    #[test]
    fn the_spec_template_takes_the_fast_path() {
        let object = template_object(
            ("40001", "443"),
            ("10.0.3.13", "10.244.1.17"),
            (b"203.0.113.7, 10.96.0.1", b"-"),
        );
        let record = parse_template(&object).unwrap();
        assert_eq!(record.source_ip, IpAddr::from([10, 0, 3, 13]));
        assert_eq!(record.source_port, 40001);
        assert_eq!(record.destination_ip, IpAddr::from([10, 244, 1, 17]));
        assert_eq!(record.destination_port, 443);
        assert_eq!(record.protocol, Protocol::Tcp);
        assert!(matches!(
            record.x_forwarded_for,
            Some(HeaderValue::Full(Cow::Borrowed("203.0.113.7, 10.96.0.1")))
        ));
        assert_eq!(record.x_real_ip, None);
        assert_fast_path_agrees(&object);
    }

    #[test]
    fn the_fast_path_leaves_odd_lines_to_the_general_scanner() {
        let cases: &[Vec<u8>] = &[
            // An nginx escape and a JSON escape: decoding is the general scanner's job.
            template_object(("1", "2"), ("10.0.0.1", "10.0.0.2"), (br"a\x22b", b"-")),
            template_object(("1", "2"), ("10.0.0.1", "10.0.0.2"), (b"-", br#"\"1.1.1.1\""#)),
            // A port the general scanner reads as a quoted value, and one too long to accept.
            template_object(("\"1\"", "2"), ("10.0.0.1", "10.0.0.2"), (b"-", b"-")),
            template_object(
                (&format!("{}443", "0".repeat(MAX_SCALAR_BYTES)), "2"),
                ("10.0.0.1", "10.0.0.2"),
                (b"-", b"-"),
            ),
            // Values with no value.
            template_object(("-", "2"), ("10.0.0.1", "10.0.0.2"), (b"-", b"-")),
            template_object(("1", "2"), ("-", "10.0.0.2"), (b"-", b"-")),
            // Other spacing than the template's.
            br#" {"source_port":1, "destination_ip": "10.0.0.2", "destination_port": 2, "source_ip": "10.0.0.1", "x-forwarded-for": "-", "x-real-ip": "-"}"#.to_vec(),
            // A bare `-` from an unquoted variable.
            br#" {"source_port": 1, "destination_ip": "10.0.0.2", "destination_port": 2, "source_ip": "10.0.0.1", "x-forwarded-for": -, "x-real-ip": "-"}"#.to_vec(),
            // Truncated inside the last value and just before the closing brace.
            br#" {"source_port": 1, "destination_ip": "10.0.0.2", "destination_port": 2, "source_ip": "10.0.0.1", "x-forwarded-for": "-", "x-real-ip": "1.1"#.to_vec(),
            br#" {"source_port": 1, "destination_ip": "10.0.0.2", "destination_port": 2, "source_ip": "10.0.0.1", "x-forwarded-for": "-", "x-real-ip": "-""#.to_vec(),
        ];
        for object in cases {
            assert_eq!(
                parse_template(object),
                None,
                "{:?}",
                String::from_utf8_lossy(object)
            );
            assert_fast_path_agrees(object);
        }
        // The general scanner still accepts the escaped ones, and rejects the rest as before.
        assert!(parse_object(&cases[0]).is_ok());
        assert_eq!(
            parse_object(&cases[3]),
            Err(Malformed::InvalidField("source_port"))
        );
    }

    /// Text for a port slot: mostly digits, sometimes what a broken template or a hostile relay
    /// would print instead.
    fn port_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[0-9]{1,5}",
            1 => "0{60,70}[0-9]{1,3}",
            1 => select(vec!["-", "", "null", "\"443\"", "+1", "65536", "1 "]).prop_map(str::to_owned),
            1 => "[0-9a-z+ ,}\"-]{0,6}",
        ]
    }

    fn address_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
            2 => any::<Ipv6Addr>().prop_map(|ip| ip.to_string()),
            1 => select(vec!["-", "", "null", "01.2.3.4", r"10.0.0.\x31"]).prop_map(str::to_owned),
            1 => "[0-9a-f.:\"\\\\ ,}-]{0,20}",
        ]
    }

    /// Header bytes as nginx may print them: lists, `-`, escapes of both kinds, raw quotes that
    /// break the template, non-ASCII and non-UTF-8 bytes, and values around the length cap.
    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        let ip_list = proptest::collection::vec(any::<Ipv4Addr>(), 1..4).prop_map(|ips| {
            let texts: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
            texts.join(", ").into_bytes()
        });
        let samples = vec![
            "-",
            "",
            "null",
            r"1.1.1.1\x2C 2.2.2.2",
            r"\u0031.1.1.1",
            "unknown, 1.1.1.1",
            "é, 1.1.1.1",
        ];
        let alphabet: Vec<u8> = b"0123456789.:, -xuX\"\\{}abfnt/"
            .iter()
            .copied()
            .chain("é😀".bytes())
            .chain([0xff, 0x80, b'\t'])
            .collect();
        prop_oneof![
            3 => ip_list,
            2 => select(samples).prop_map(|text| text.as_bytes().to_vec()),
            3 => proptest::collection::vec(select(alphabet), 0..40),
            1 => (MAX_HEADER_BYTES - 2..MAX_HEADER_BYTES + 3).prop_map(|len| vec![b'1'; len]),
        ]
    }

    /// The values of one generated template line, as printed.
    #[derive(Clone, Debug)]
    struct TemplateValues {
        source_port: String,
        destination_port: String,
        source_ip: String,
        destination_ip: String,
        x_forwarded_for: Vec<u8>,
        x_real_ip: Vec<u8>,
        /// An unquoted variable in a hand-edited template prints its header bare (`-`).
        headers_quoted: bool,
    }

    impl TemplateValues {
        fn object(&self) -> Vec<u8> {
            if self.headers_quoted {
                return template_object(
                    (&self.source_port, &self.destination_port),
                    (&self.source_ip, &self.destination_ip),
                    (&self.x_forwarded_for, &self.x_real_ip),
                );
            }
            let mut object = format!(
                r#" {{"source_port": {}, "destination_ip": "{}", "destination_port": {}, "source_ip": "{}", "x-forwarded-for": "#,
                self.source_port, self.destination_ip, self.destination_port, self.source_ip
            )
            .into_bytes();
            object.extend_from_slice(&self.x_forwarded_for);
            object.extend_from_slice(br#", "x-real-ip": "#);
            object.extend_from_slice(&self.x_real_ip);
            object.push(b'}');
            object
        }

        /// Every value printed the way the fast path takes: ports as up to five digits, the
        /// rest quoted with no escape and no quote inside.
        fn is_plain(&self) -> bool {
            let digits = |text: &str| {
                text.len() <= TEMPLATE_PORT_DIGITS && text.bytes().all(|byte| byte.is_ascii_digit())
            };
            let unescaped = |text: &[u8]| !text.contains(&b'"') && !text.contains(&b'\\');
            self.headers_quoted
                && digits(&self.source_port)
                && digits(&self.destination_port)
                && unescaped(self.source_ip.as_bytes())
                && unescaped(self.destination_ip.as_bytes())
                && unescaped(&self.x_forwarded_for)
                && unescaped(&self.x_real_ip)
        }
    }

    fn template_values() -> impl Strategy<Value = TemplateValues> {
        (
            (port_text(), port_text()),
            (address_text(), address_text()),
            (header_bytes(), header_bytes()),
            proptest::bool::weighted(0.9),
        )
            .prop_map(
                |(
                    (source_port, destination_port),
                    (source_ip, destination_ip),
                    (x_forwarded_for, x_real_ip),
                    headers_quoted,
                )| TemplateValues {
                    source_port,
                    destination_port,
                    source_ip,
                    destination_ip,
                    x_forwarded_for,
                    x_real_ip,
                    headers_quoted,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn fast_path_agrees_on_template_lines(
            values in template_values(),
            suffix in select(vec!["", "\n", " upstream=10.0.0.1", "}", "\"", ","]),
        ) {
            let mut object = values.object();
            object.extend_from_slice(suffix.as_bytes());
            assert_fast_path_agrees(&object);
            // Plain values are the fast path's whole job: when the general scanner accepts
            // such a line, the fast path must have answered.
            if values.is_plain() && parse_object(&object).is_ok() {
                prop_assert!(parse_template(&object).is_some());
            }
        }

        #[test]
        fn fast_path_agrees_on_mutated_template_lines(
            values in template_values(),
            edits in proptest::collection::vec(
                (
                    any::<Index>(),
                    0..3u8,
                    prop_oneof![select(b"\"\\ ,:{}-0123456789.x".to_vec()), any::<u8>()],
                ),
                1..4,
            ),
        ) {
            let mut object = values.object();
            for (index, operation, byte) in edits {
                let at = index.index(object.len() + 1);
                match operation {
                    0 => object.insert(at, byte),
                    1 if at < object.len() => {
                        object.remove(at);
                    }
                    _ => {
                        if let Some(slot) = object.get_mut(at) {
                            *slot = byte;
                        }
                    }
                }
            }
            assert_fast_path_agrees(&object);
            // Cut short, as a line whose end has not been written yet.
            let cut = object.len() / 2;
            assert_fast_path_agrees(&object[..cut]);
        }

        #[test]
        fn fast_path_agrees_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            assert_fast_path_agrees(&bytes);
            let mut object = TEMPLATE_BEFORE_SOURCE_PORT.to_vec();
            object.extend_from_slice(&bytes);
            assert_fast_path_agrees(&object);
        }
    }

    /// nginx's default log escaping of a header value.
    fn nginx_escape(value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &byte in value {
            if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
                out.extend_from_slice(format!("\\x{byte:02X}").as_bytes());
            } else {
                out.push(byte);
            }
        }
        out
    }

    /// nginx's `escape=json` of a header value (which nginx sees as bytes, JSON as text).
    fn json_escape(value: &[u8]) -> Vec<u8> {
        let json = serde_json::to_string(&String::from_utf8_lossy(value)).unwrap();
        json.as_bytes()[1..json.len() - 1].to_vec()
    }

    fn line_with_xff(escaped_xff: &[u8]) -> Vec<u8> {
        [
            MARKER.as_bytes(),
            &template_object(("1", "2"), ("10.1.10.1", "10.1.1.10"), (escaped_xff, b"-")),
        ]
        .concat()
    }

    fn oversize_xff(line: &[u8]) -> Oversize<'_> {
        match parse_line(line).unwrap().unwrap().x_forwarded_for {
            Some(HeaderValue::Oversize(oversize)) => oversize,
            other => panic!("not oversize: {other:?}"),
        }
    }

    #[test]
    fn an_oversize_header_keeps_the_line_and_both_ends() {
        let value = format!("203.0.113.7, {}, 10.0.0.1", "p".repeat(8192));
        let line = line_with_xff(value.as_bytes());
        let record = parse_line(&line).unwrap().unwrap();
        assert_eq!(record.source_ip, IpAddr::from([10, 1, 10, 1]));
        assert_eq!(record.destination_port, 2);
        let header = record.x_forwarded_for.unwrap();
        let HeaderValue::Oversize(oversize) = &header else {
            panic!("{header:?}");
        };
        let (head, tail) = oversize.ends();
        assert_eq!(head.as_ref(), &value[..MAX_HEADER_BYTES]);
        assert_eq!(tail.as_ref(), &value[value.len() - MAX_HEADER_BYTES..]);
        // Unescaped, both ends borrow from the line.
        assert!(matches!((head, tail), (Cow::Borrowed(_), Cow::Borrowed(_))));
        assert_eq!(header.leading(), "203.0.113.7");
        assert_eq!(header.trailing(), " 10.0.0.1");
        assert_eq!(header.full(), None);
        // The template fast path and the general scanner read it alike.
        assert_fast_path_agrees(&line[MARKER.len()..]);
    }

    #[test]
    fn escaped_oversize_values_are_read_from_both_ends() {
        for (quote, backslash) in [(&br"\x22"[..], &br"\x5C"[..]), (br#"\""#, br"\\")] {
            let mut escaped = b"203.0.113.7, ".to_vec();
            for _ in 0..4096 {
                escaped.extend_from_slice(quote);
                escaped.extend_from_slice(backslash);
            }
            escaped.extend_from_slice(b", 198.51.100.9, 10.0.0.1");
            let line = line_with_xff(&escaped);
            let oversize = oversize_xff(&line);
            let (head, tail) = (oversize.head(), oversize.tail());
            assert_eq!(head.len(), MAX_HEADER_BYTES);
            assert!(head.starts_with("203.0.113.7, \"\\\"\\"), "{head:?}");
            assert_eq!(tail.len(), MAX_HEADER_BYTES);
            assert!(tail.ends_with("\"\\, 198.51.100.9, 10.0.0.1"), "{tail:?}");
            let header = HeaderValue::Oversize(oversize);
            assert_eq!(header.leading(), "203.0.113.7");
            assert_eq!(header.trailing(), " 198.51.100.9, 10.0.0.1");
        }
    }

    #[test]
    fn entries_cut_by_the_cap_are_not_read() {
        // The cap falls inside `10.0.0.100` at the start and inside `110.0.0.1` at the end:
        // what is left of each (`10.0.0.10`, `10.0.0.1`) would parse as an address.
        let head_side = format!("{},10.0.0.100", "p".repeat(MAX_HEADER_BYTES - 10));
        let tail_side = format!("110.0.0.1,{}", "q".repeat(MAX_HEADER_BYTES - 9));
        let value = format!("{head_side},{},{tail_side}", "m".repeat(4096));
        let line = line_with_xff(value.as_bytes());
        let oversize = oversize_xff(&line);
        assert!(oversize.head().ends_with(",10.0.0.10"));
        assert!(oversize.tail().starts_with("10.0.0.1,"));
        let header = HeaderValue::Oversize(oversize);
        assert_eq!(header.leading(), "p".repeat(MAX_HEADER_BYTES - 10));
        assert_eq!(header.trailing(), "q".repeat(MAX_HEADER_BYTES - 9));
        // Without a comma in an end, that end holds no whole entry.
        let line = line_with_xff("x".repeat(3 * MAX_HEADER_BYTES).as_bytes());
        let header = HeaderValue::Oversize(oversize_xff(&line));
        assert_eq!((header.leading(), header.trailing()), ("", ""));
    }

    #[test]
    fn an_oversize_real_ip_keeps_the_line() {
        let mut object = template_object(
            ("1", "2"),
            ("10.1.10.1", "10.1.1.10"),
            (b"1.1.1.1", &nginx_escape(&[b'"'; 9000])),
        );
        object.splice(0..0, MARKER.bytes());
        let record = parse_line(&object).unwrap().unwrap();
        assert!(record.x_real_ip.unwrap().is_oversize());
        assert_eq!(record.x_forwarded_for.unwrap().full(), Some("1.1.1.1"));
    }

    /// The byte-by-byte reading of a string's end that [`closing_quote`] must match.
    fn closing_quote_stepwise(body: &[u8]) -> Option<(usize, bool)> {
        let mut at = 0;
        let mut escaped = false;
        loop {
            match body.get(at)? {
                b'"' => return Some((at, escaped)),
                b'\\' => {
                    escaped = true;
                    at += 2;
                }
                _ => at += 1,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a client puts in a header, and however long, the line stays a record
        /// (when its other fields are valid) and what is kept of the header is bounded.
        #[test]
        fn any_header_value_keeps_the_line(
            value in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..3 * MAX_HEADER_BYTES),
                proptest::collection::vec(
                    select(b"0123456789.,: \"\\x-abu".to_vec()),
                    MAX_HEADER_BYTES - 8..MAX_HEADER_BYTES * 9,
                ),
            ],
            json in any::<bool>(),
            in_xri in any::<bool>(),
        ) {
            let escaped = if json { json_escape(&value) } else { nginx_escape(&value) };
            let (xff, xri): (&[u8], &[u8]) = if in_xri { (b"-", &escaped) } else { (&escaped, b"-") };
            let object = template_object(("1", "2"), ("10.1.10.1", "10.1.1.10"), (xff, xri));
            let line = [MARKER.as_bytes(), &object].concat();
            let record = parse_line(&line);
            prop_assert!(matches!(record, Ok(Some(_))), "{:?}", record);
            let record = record.unwrap().unwrap();
            let header = if in_xri { record.x_real_ip } else { record.x_forwarded_for };
            let text = String::from_utf8_lossy(&value);
            let Some(header) = header else {
                prop_assert!(text.is_empty() || text == "-");
                return Ok(());
            };
            prop_assert!(header.kept().all(|part| part.len() <= MAX_HEADER_BYTES));
            match &header {
                HeaderValue::Full(full) => prop_assert_eq!(full.as_ref(), text.as_ref()),
                HeaderValue::Oversize(oversize) => {
                    let (head, tail) = (oversize.head(), oversize.tail());
                    prop_assert!(text.len() > MAX_HEADER_BYTES);
                    if value.is_ascii() {
                        prop_assert_eq!(head, &text[..MAX_HEADER_BYTES]);
                        prop_assert!(text.ends_with(tail));
                        if !json {
                            prop_assert_eq!(tail.len(), MAX_HEADER_BYTES);
                        }
                    }
                }
            }
            assert_fast_path_agrees(&object);
        }

        #[test]
        fn the_closing_quote_search_agrees_with_stepping(
            body in proptest::collection::vec(select(b"\"\\\\\\ax".to_vec()), 0..200),
        ) {
            prop_assert_eq!(closing_quote(&body), closing_quote_stepwise(&body));
        }

        /// Decoding from the boundary found for any position gives the value's true end, but
        /// for the first entry, which the readers drop as cut.
        #[test]
        fn decoding_from_an_escape_boundary_gives_a_true_end(
            body in proptest::collection::vec(
                select(br"\\\\\\xxuuD8Dde0022C5c,,a".to_vec()),
                0..120,
            ),
            from in any::<Index>(),
        ) {
            let from = from.index(body.len() + 1);
            let start = escape_boundary(&body, from);
            prop_assert!(start >= from && start <= body.len());
            let whole = unescape_prefix(&body, usize::MAX - 1).0;
            let end = unescape_prefix(&body[start..], usize::MAX - 1).0;
            if let Some(comma) = end.iter().position(|&byte| byte == b',') {
                prop_assert!(whole.ends_with(&end[comma..]), "{:?} {:?}", whole, end);
            }
        }
    }

    #[test]
    fn reason_labels_are_distinct() {
        let all = [
            Malformed::NoJsonObject,
            Malformed::UnterminatedObject,
            Malformed::InvalidJson,
            Malformed::MissingField("a"),
            Malformed::InvalidField("a"),
            Malformed::DuplicateField("a"),
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(Malformed::as_str).collect();
        assert_eq!(labels.len(), all.len());
    }
}
