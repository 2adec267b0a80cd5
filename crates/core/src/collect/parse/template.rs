//! The fast path for a line that is the spec's template verbatim, held to the general
//! scanner's answers.

use std::net::IpAddr;

use super::address::parse_ip;
use super::header::header_value;
use super::quote::find_quote_or_backslash;
use super::scanner::MAX_SCALAR_BYTES;
use super::{HeaderValue, Record};
use crate::model::Protocol;

/// The template's text between its values, exactly as the spec asks the user to configure it:
/// each piece runs from the end of one value (its closing quote included) to the start of the
/// next (its opening quote included).
pub(super) const TEMPLATE_BEFORE_SOURCE_PORT: &[u8] = br#" {"source_port": "#;
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
///
/// [`parse_object`]: super::scanner::parse_object
pub(super) fn parse_template(input: &[u8]) -> Option<Record<'_>> {
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
pub(super) const TEMPLATE_PORT_DIGITS: usize = 5;

/// An unquoted port, read as [`parse_port`] would read it. The run of digits is the whole token
/// for the general scanner too, because the template's next piece starts with a comma (checked
/// by the caller).
///
/// [`parse_port`]: super::address::parse_port
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

/// A quoted address, read as the scanner's `scalar` with [`parse_ip`] would read it: neither `-`
/// nor the empty text is an address, so a field without a value is the general scanner's to
/// report. Always inlined for the reason given at [`parse_ip`].
#[inline(always)]
fn template_ip(rest: &mut &[u8]) -> Option<IpAddr> {
    let body = template_quoted_body(rest)?;
    if body.len() > MAX_SCALAR_BYTES {
        return None;
    }
    parse_ip(body)
}

/// A quoted header, read as the scanner's `header` would read an unescaped value; `Some(None)` is
/// a header without a value.
fn template_header<'a>(rest: &mut &'a [u8]) -> Option<Option<HeaderValue<'a>>> {
    let body = template_quoted_body(rest)?;
    Some(header_value(body, false))
}
