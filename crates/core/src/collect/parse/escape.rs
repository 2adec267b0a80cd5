//! Decoding of nginx `\xHH` and JSON escapes, capped in length, from a value's start or from
//! its end.

/// A decoded value exceeded its length cap.
pub(super) struct TooLong;

/// Decodes nginx `\xHH` and JSON escapes, stopping as soon as the output exceeds `max_len` so a
/// huge attacker value costs no more than the cap.
///
/// An escape that is neither (a stray backslash, `\x` without two hex digits, a bad `\u`) is
/// kept literally: the value is data to inspect, and guessing at it would be worse.
pub(super) fn unescape(body: &[u8], max_len: usize) -> Result<Vec<u8>, TooLong> {
    match unescape_prefix(body, max_len) {
        (out, true) => Ok(out),
        (_, false) => Err(TooLong),
    }
}

/// The decoded start of `body`: all of it and `true` when it decodes to at most `max_len`
/// bytes, else its first `max_len` bytes and `false`. Decoding stops there, so the rest of a
/// huge value is never looked at.
pub(super) fn unescape_prefix(body: &[u8], max_len: usize) -> (Vec<u8>, bool) {
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
pub(super) fn unescape_suffix(body: &[u8], max_len: usize) -> Vec<u8> {
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
pub(super) fn escape_boundary(body: &[u8], from: usize) -> usize {
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
