//! The general scanner: the tolerant reading of the JSON-looking object after the marker, and
//! the one definition of what a line means.

use std::borrow::Cow;

use super::address::{parse_ip, parse_port};
use super::escape::{unescape, TooLong};
use super::header::header_value;
use super::quote::closing_quote;
use super::{HeaderValue, Malformed, Record};
use crate::model::Protocol;

/// Longest text accepted for an address, port or protocol field; the longest IPv6 text form is
/// 45 bytes, so anything longer cannot be valid and is not worth decoding.
pub(super) const MAX_SCALAR_BYTES: usize = 64;

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

pub(super) fn parse_object(input: &[u8]) -> Result<Record<'_>, Malformed> {
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
