//! Addresses and ports as the log prints them, read without the general-purpose std parsers
//! but accepting exactly what they accept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
pub(super) fn parse_port(text: &[u8]) -> Option<u16> {
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
