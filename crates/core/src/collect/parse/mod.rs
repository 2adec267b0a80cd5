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

use std::sync::LazyLock;

use memchr::memmem;

mod address;
mod escape;
mod header;
mod quote;
mod record;
mod scanner;
mod template;

pub use address::{parse_ip, parse_ipv4};
pub use header::{HeaderValue, Oversize, MAX_HEADER_BYTES};
pub use record::{Malformed, Record};

use scanner::parse_object;
use template::parse_template;

/// The text that introduces the ingress template in a log line.
pub const MARKER: &str = "tigera_secure_ee_ingress:";

/// How many marker occurrences one line may try before giving up.
///
/// A request URI or a header printed before the template can contain the marker too; trying
/// the next occurrence when one fails to parse finds the real template. The bound keeps a
/// crafted line full of markers linear in its length.
const MAX_MARKER_ATTEMPTS: usize = 4;

static MARKER_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(MARKER));

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

#[cfg(test)]
mod tests;
