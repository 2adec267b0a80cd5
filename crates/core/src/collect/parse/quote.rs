//! Finding where a string ends: the next quote or backslash, eight bytes at a time, and the
//! closing quote past any escapes.

/// Template strings are mostly short (keys, addresses), where eight bytes at a time in a plain
/// register beat both a byte loop and the setup of a vectorised search; long header values go
/// to `memchr2`.
pub(super) fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
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
pub(super) fn closing_quote(body: &[u8]) -> Option<(usize, bool)> {
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
