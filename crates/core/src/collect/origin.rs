//! Which address a request really came from.
//!
//! Felix reads each reported `HTTPData` as "X-Real-IP when non-empty, else X-Forwarded-For",
//! and parses that one value as a single bare IP address; anything else (a list, a port,
//! `unknown`) is dropped with a warning. So this module never forwards header text: it picks
//! one IP per request under a [`ClientIpPolicy`] and describes it as an [`Origin`] whose
//! fields, rendered by [`Origin::http_entry`], always make Felix read exactly that IP.
//!
//! The policies:
//! - [`ClientIpPolicy::Reference`] — the reference collector's rule, which users rely on:
//!   X-Real-IP when it is a valid IP, else the first valid X-Forwarded-For entry. Headers are
//!   believed whoever sent them.
//! - [`ClientIpPolicy::TrustedProxies`] — headers are believed only from listed proxies, the way
//!   nginx's `set_real_ip_from` with `real_ip_recursive on` reads them.
//! - [`ClientIpPolicy::TrustedHops`] — a fixed number of proxies in front of the ingress, the
//!   way Envoy's `xff_num_trusted_hops` reads them.
//!
//! A header over the parser's cap keeps only its ends ([`HeaderValue::Oversize`]), and each
//! policy reads the end it needs: the reference rule the whole entries at the start, the walks
//! the whole entries at the end. When that end does not hold the answer, the header counts as
//! absent: padding a header can make it unreadable, never make it name someone else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Serialize;

use super::parse::{parse_ipv4, HeaderValue, Record};
use crate::model::{Attributed, Provenance};
use crate::net::canonical_ip;

/// The original source of one request, ready to become a Felix `HTTPData`.
///
/// Invariant: Felix's reading of the rendered entry is `ip` — `x_real_ip` is either `None` or
/// `Some(ip)`, and when it is `None`, `x_forwarded_for` is `Some(ip)`. Fields hold bare IPs
/// (not header text) so that holds whatever the client sent, and so that an origin costs no
/// allocation until an entry is actually kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The address the request is attributed to.
    pub ip: IpAddr,
    /// What goes into `HTTPData.x_forwarded_for`; `None` renders as `""`.
    pub x_forwarded_for: Option<IpAddr>,
    /// What goes into `HTTPData.x_real_ip`; `None` renders as `""`.
    pub x_real_ip: Option<IpAddr>,
}

impl Origin {
    /// An origin carried only in `x_forwarded_for`, which Felix reads because `x_real_ip` is
    /// empty.
    fn forwarded(ip: IpAddr) -> Origin {
        Origin {
            ip,
            x_forwarded_for: Some(ip),
            x_real_ip: None,
        }
    }

    /// The pair of strings Felix's `HTTPData` carries for this origin.
    pub fn http_entry(&self) -> HttpEntry {
        self.carried().render()
    }

    /// What an http_data entry keeps of this origin until it is sent.
    pub fn carried(&self) -> CarriedOrigin {
        CarriedOrigin {
            x_forwarded_for: self.x_forwarded_for,
            x_real_ip: self.x_real_ip,
        }
    }
}

/// An http_data entry as it waits to be sent: the two addresses, 34 bytes and no allocation,
/// where the rendered [`HttpEntry`] costs two strings. Intervals and the Felix queue hold
/// these; the text is made one message at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CarriedOrigin {
    /// What goes into `HTTPData.x_forwarded_for`; `None` renders as `""`.
    pub x_forwarded_for: Option<IpAddr>,
    /// What goes into `HTTPData.x_real_ip`; `None` renders as `""`.
    pub x_real_ip: Option<IpAddr>,
}

impl CarriedOrigin {
    /// The pair of strings Felix's `HTTPData` carries.
    pub fn render(&self) -> HttpEntry {
        HttpEntry {
            x_forwarded_for: self.x_forwarded_for.map(ip_text).unwrap_or_default(),
            x_real_ip: self.x_real_ip.map(ip_text).unwrap_or_default(),
        }
    }
}

/// An entry equals the text it renders as.
impl PartialEq<HttpEntry> for CarriedOrigin {
    fn eq(&self, other: &HttpEntry) -> bool {
        self.render() == *other
    }
}

impl Serialize for CarriedOrigin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.render().serialize(serializer)
    }
}

/// The original-source part of Felix's `HTTPData`: bare IPs or empty strings, never header
/// text. The L7 fields of `HTTPData` (and its `type`, which must stay empty) are not carried.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct HttpEntry {
    pub x_forwarded_for: String,
    pub x_real_ip: String,
}

/// Proxies whose X-Forwarded-For entries may be believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { networks }
    }

    /// Whether `ip` is one of the trusted proxies. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`, as
    /// a dual-stack listener reports IPv4 clients) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = canonical_ip(ip);
        self.networks
            .iter()
            .any(|network| network.contains(&canonical))
    }
}

/// How the client is told apart from the proxies in front of the ingress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClientIpPolicy {
    /// X-Real-IP when valid, else the leftmost valid X-Forwarded-For entry. Easy to spoof, but
    /// it is what the reference collector reports and what existing deployments expect.
    #[default]
    Reference,
    /// Headers count only when the connection's peer is a trusted proxy. X-Forwarded-For is
    /// walked right to left past trusted entries; the first untrusted entry is the client. When
    /// every entry is trusted, the leftmost is the client. An entry that is not an address
    /// breaks the chain: the client is then the last address reached before it, since nothing
    /// further left can be believed. A trusted peer that sent no X-Forwarded-For entry but a
    /// valid X-Real-IP is believed for that. An untrusted peer is itself the client.
    TrustedProxies(TrustedProxies),
    /// Exactly this many proxies append to X-Forwarded-For in front of the ingress: the client
    /// is the entry this many places from the right end (0 = the rightmost entry). A shorter
    /// list, or an entry there that is not an address, means the peer is the client.
    TrustedHops(usize),
}

impl ClientIpPolicy {
    /// The original source of `record`, or `None` when no header carried a usable address (the
    /// reference policy only; the others fall back to the connection's peer).
    pub fn original_ip(&self, record: &Record<'_>) -> Option<Origin> {
        self.attribute(record).origin
    }

    /// What Felix is told of `record`, and whom the detectors count it against with how far
    /// that can be believed.
    pub fn attribute(&self, record: &Record<'_>) -> Attribution {
        let peer = canonical_ip(record.source_ip);
        match self {
            ClientIpPolicy::Reference => {
                let origin = original_ip(record);
                let client = match origin {
                    Some(origin) => Attributed::new(origin.ip, Provenance::Claimed),
                    None => Attributed::new(peer, Provenance::Connection),
                };
                Attribution { origin, client }
            }
            ClientIpPolicy::TrustedProxies(trusted) => {
                Attribution::walked(trusted_proxies_client(record, peer, trusted))
            }
            ClientIpPolicy::TrustedHops(hops) => {
                Attribution::walked(trusted_hops_client(record, peer, *hops))
            }
        }
    }

    /// The provenance a believed header gets under this policy, for the startup log.
    pub fn header_provenance(&self) -> Provenance {
        match self {
            ClientIpPolicy::Reference => Provenance::Claimed,
            ClientIpPolicy::TrustedProxies(_) | ClientIpPolicy::TrustedHops(_) => {
                Provenance::Trusted
            }
        }
    }

    /// How the policy reads as a mode, for logs: `reference`, `trusted-proxies` or
    /// `trusted-hops`.
    pub fn mode(&self) -> &'static str {
        match self {
            ClientIpPolicy::Reference => "reference",
            ClientIpPolicy::TrustedProxies(_) => "trusted-proxies",
            ClientIpPolicy::TrustedHops(_) => "trusted-hops",
        }
    }
}

/// One request's attribution: Felix's entry and the detectors' client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribution {
    /// What goes to Felix; `None` when the reference rule found no header address.
    pub origin: Option<Origin>,
    /// Whom the detectors count the request against: always an address, the peer when no
    /// header was believed.
    pub client: Attributed,
}

impl Attribution {
    /// A trusted walk's result, which Felix is told as it is.
    fn walked(client: Attributed) -> Attribution {
        Attribution {
            origin: Some(Origin::forwarded(client.ip)),
            client,
        }
    }
}

/// The reference rule: X-Real-IP when it is a valid IP, else the first X-Forwarded-For entry
/// that is one. `None` when neither header carries a valid IP.
///
/// Case 1 of the spec (XFF `1.1.1.1`, XRI `2.2.2.2`) keeps both addresses in the entry, and
/// Felix reads `2.2.2.2`. A non-address X-Real-IP such as `unknown` is left out of the entry
/// entirely so it cannot hide a good X-Forwarded-For.
pub fn original_ip(record: &Record<'_>) -> Option<Origin> {
    let forwarded = record.x_forwarded_for.as_ref().and_then(first_forwarded);
    let real_ip = real_ip(record);
    match real_ip {
        Some(ip) => Some(Origin {
            ip,
            x_forwarded_for: forwarded,
            x_real_ip: Some(ip),
        }),
        None => forwarded.map(Origin::forwarded),
    }
}

/// The leftmost X-Forwarded-For entry that is an address.
fn first_forwarded(list: &HeaderValue<'_>) -> Option<IpAddr> {
    let first_of_oversize = list
        .leading_within(FIRST_ENTRIES_BYTES)
        .and_then(|entries| forwarded_entries(&entries).find_map(parse_client_address));
    first_of_oversize.or_else(|| forwarded_entries(list.leading()).find_map(parse_client_address))
}

/// How much of an oversize header's end is decoded first: an entry or two, which is all the
/// policies read of a padded header; the whole end is decoded only when they read further.
const FIRST_ENTRIES_BYTES: usize = 64;

fn trusted_proxies_client(
    record: &Record<'_>,
    peer: IpAddr,
    trusted: &TrustedProxies,
) -> Attributed {
    if !trusted.contains(peer) {
        return Attributed::new(peer, Provenance::Connection);
    }
    let list = record.x_forwarded_for.as_ref();
    let last_of_oversize = list
        .and_then(|list| list.trailing_within(FIRST_ENTRIES_BYTES))
        .map(|entries| walk_trusted(&entries, trusted))
        .filter(|&(_, stopped)| stopped);
    let (mut reached, stopped) = last_of_oversize
        .unwrap_or_else(|| walk_trusted(list.map_or("", HeaderValue::trailing), trusted));
    // Every entry kept of an oversize list was trusted: the client is further left, in the
    // part that was not read, and the leftmost kept entry is only another proxy.
    if !stopped && list.is_some_and(HeaderValue::is_oversize) {
        reached = None;
    }
    match reached.or_else(|| real_ip(record)) {
        Some(client) => Attributed::new(client, Provenance::Trusted),
        None => Attributed::new(peer, Provenance::Connection),
    }
}

/// Walks `entries` from the right past trusted proxies: the last address reached, and whether
/// the walk stopped (at an untrusted address or a non-address) rather than ran out of entries.
fn walk_trusted(entries: &str, trusted: &TrustedProxies) -> (Option<IpAddr>, bool) {
    let mut reached = None;
    for entry in forwarded_entries(entries).rev() {
        let Some(ip) = parse_client_address(entry) else {
            return (reached, true);
        };
        reached = Some(ip);
        if !trusted.contains(ip) {
            return (reached, true);
        }
    }
    (reached, false)
}

fn trusted_hops_client(record: &Record<'_>, peer: IpAddr, hops: usize) -> Attributed {
    let list = record.x_forwarded_for.as_ref();
    // `Some(None)`: the entry is there but is not an address.
    let nth_from_right = |entries: &str| {
        forwarded_entries(entries)
            .rev()
            .nth(hops)
            .map(parse_client_address)
    };
    // An oversize list keeps fewer entries at its end than it had: too few is a short list.
    let client = list
        .and_then(|list| list.trailing_within(FIRST_ENTRIES_BYTES))
        .and_then(|entries| nth_from_right(&entries))
        .or_else(|| nth_from_right(list.map_or("", HeaderValue::trailing)))
        .flatten();
    match client {
        Some(client) => Attributed::new(client, Provenance::Trusted),
        None => Attributed::new(peer, Provenance::Connection),
    }
}

/// X-Real-IP as one address. A value over the cap is longer than any address.
fn real_ip(record: &Record<'_>) -> Option<IpAddr> {
    record
        .x_real_ip
        .as_ref()
        .and_then(HeaderValue::full)
        .and_then(parse_client_address)
}

/// The entries of an X-Forwarded-For value, trimmed, without the empty ones a stray comma
/// leaves.
pub fn forwarded_entries(list: &str) -> impl DoubleEndedIterator<Item = &str> {
    CommaSeparated { rest: Some(list) }
        .map(trim_blanks)
        .filter(|entry| !entry.is_empty())
}

/// `str::split(',')` by bytes: the list is usually one short entry, where the general
/// character searcher's setup costs more than the whole search.
struct CommaSeparated<'a> {
    /// What is left to split; `None` once the last piece has been handed out.
    rest: Option<&'a str>,
}

impl<'a> Iterator for CommaSeparated<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        // A comma is ASCII, so the positions on either side are character boundaries.
        match rest.bytes().position(|byte| byte == b',') {
            Some(comma) => {
                self.rest = rest.get(comma + 1..);
                rest.get(..comma)
            }
            None => self.rest.take(),
        }
    }
}

impl<'a> DoubleEndedIterator for CommaSeparated<'a> {
    fn next_back(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.bytes().rposition(|byte| byte == b',') {
            Some(comma) => {
                self.rest = rest.get(..comma);
                rest.get(comma + 1..)
            }
            None => self.rest.take(),
        }
    }
}

/// One header entry as a bare IP: `a.b.c.d`, `a.b.c.d:port`, an IPv6 address, `[v6]` or
/// `[v6]:port`. Anything else (`unknown`, `_hidden`, a zone index, a hostname) is `None`. An
/// IPv4-mapped address is its IPv4 address ([`canonical_ip`]): one client, one spelling.
pub fn parse_client_address(entry: &str) -> Option<IpAddr> {
    let entry = trim_blanks(entry);
    if let Some(bracketed) = entry.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return inside
            .parse::<Ipv6Addr>()
            .ok()
            .map(|v6| canonical_ip(IpAddr::V6(v6)));
    }
    if let Some(v4) = parse_ipv4(entry.as_bytes()) {
        return Some(IpAddr::V4(v4));
    }
    let (host, port) = entry.split_once(':')?;
    // Every IPv6 text form has at least two colons, so one colon means `v4:port` or nothing;
    // an IPv6 address with a port but no brackets is ambiguous, so only IPv4 may carry one.
    if port.contains(':') {
        return entry
            .parse::<Ipv6Addr>()
            .ok()
            .map(|v6| canonical_ip(IpAddr::V6(v6)));
    }
    if !is_port(port) {
        return None;
    }
    parse_ipv4(host.as_bytes()).map(IpAddr::V4)
}

/// Strips spaces and tabs from both ends, byte-wise: a header entry is almost always short
/// ASCII, where a char-pattern trim costs more than the address parse.
fn trim_blanks(text: &str) -> &str {
    let is_blank = |byte: &u8| matches!(byte, b' ' | b'\t');
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|byte| !is_blank(byte));
    let end = bytes.iter().rposition(|byte| !is_blank(byte));
    match (start, end) {
        // Both ends sit next to an ASCII byte, so they are character boundaries.
        (Some(start), Some(end)) => text.get(start..=end).unwrap_or_default(),
        _ => "",
    }
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// The text form of an address as `Display` writes it, with IPv4 (nearly every entry) written
/// directly rather than through the formatting machinery.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => ipv4_text(v4),
        IpAddr::V6(_) => ip.to_string(),
    }
}

fn ipv4_text(ip: Ipv4Addr) -> String {
    let mut text = String::with_capacity("255.255.255.255".len());
    for (position, octet) in ip.octets().into_iter().enumerate() {
        if position > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::parse::MAX_HEADER_BYTES;

    #[test]
    fn entries_split_like_str_split_from_both_ends() {
        for list in ["", ",", "a", "a,b", ",a,,b,", " a , b ,c", "é,ü", ",,"] {
            let expected: Vec<&str> = list.split(',').collect();
            let forwards: Vec<&str> = CommaSeparated { rest: Some(list) }.collect();
            let mut backwards: Vec<&str> = CommaSeparated { rest: Some(list) }.rev().collect();
            backwards.reverse();
            assert_eq!(forwards, expected, "{list:?}");
            assert_eq!(backwards, expected, "{list:?}");
            let mut mixed = CommaSeparated { rest: Some(list) };
            let (first, last) = (mixed.next(), mixed.next_back());
            assert_eq!(first, expected.first().copied(), "{list:?}");
            if expected.len() > 1 {
                assert_eq!(last, expected.last().copied(), "{list:?}");
            }
            let middle: Vec<&str> = mixed.collect();
            assert_eq!(
                middle,
                expected
                    .get(1..expected.len().saturating_sub(1))
                    .unwrap_or_default(),
                "{list:?}"
            );
        }
    }

    #[test]
    fn addresses_with_ports_and_brackets() {
        let cases = [
            ("1.2.3.4", Some("1.2.3.4")),
            (" 1.2.3.4 ", Some("1.2.3.4")),
            ("1.2.3.4:8080", Some("1.2.3.4")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:1.2.3.4", Some("1.2.3.4")),
            ("[::ffff:1.2.3.4]:80", Some("1.2.3.4")),
            ("1.2.3.4:", None),
            ("1.2.3.4:99999", None),
            ("1.2.3.4:+80", None),
            ("[2001:db8::1]443", None),
            ("[2001:db8::1", None),
            ("[1.2.3.4]", None),
            ("fe80::1%eth0", None),
            ("unknown", None),
            ("_hidden", None),
            ("01.2.3.4", None),
            ("", None),
        ];
        for (entry, expected) in cases {
            let expected: Option<IpAddr> = expected.map(|ip| ip.parse().unwrap());
            assert_eq!(parse_client_address(entry), expected, "{entry:?}");
        }
    }

    #[test]
    fn entries_skip_empty_elements_from_both_ends() {
        let entries: Vec<_> = forwarded_entries(" a ,, b,\tc ,").collect();
        assert_eq!(entries, ["a", "b", "c"]);
        let reversed: Vec<_> = forwarded_entries(" a ,, b,\tc ,").rev().collect();
        assert_eq!(reversed, ["c", "b", "a"]);
    }

    #[test]
    fn blanks_are_trimmed_from_both_ends_only() {
        assert_eq!(trim_blanks(" \t1.2.3.4\t "), "1.2.3.4");
        assert_eq!(trim_blanks("a b"), "a b");
        assert_eq!(trim_blanks(" \t "), "");
        assert_eq!(trim_blanks(""), "");
        assert_eq!(trim_blanks(" é "), "é");
    }

    #[test]
    fn ipv4_text_matches_display_for_every_octet_value() {
        for octet in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(octet, 0, 255, 9),
                Ipv4Addr::new(10, octet, 99, 100),
                Ipv4Addr::new(1, 2, octet, octet),
            ] {
                assert_eq!(ipv4_text(ip), ip.to_string());
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(v6), "2001:db8::1");
    }

    /// A record as the parser reads it from the spec's template, with the headers as given
    /// (already escaped as nginx writes them).
    fn parsed(peer: &str, xff: &str, xri: &str) -> Record<'static> {
        let line = format!(
            r#"{} {{"source_port": 1, "destination_ip": "10.1.1.10", "destination_port": 2, "source_ip": "{peer}", "x-forwarded-for": "{xff}", "x-real-ip": "{xri}"}}"#,
            crate::collect::parse::MARKER
        );
        crate::collect::parse::parse_line(line.as_bytes())
            .unwrap()
            .unwrap()
            .into_owned()
    }

    fn padding() -> String {
        "x".repeat(8192)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted() -> ClientIpPolicy {
        ClientIpPolicy::TrustedProxies(TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]))
    }

    fn client(policy: &ClientIpPolicy, record: &Record<'_>) -> (IpAddr, Provenance) {
        let client = policy.attribute(record).client;
        (client.ip, client.provenance)
    }

    #[test]
    fn the_reference_rule_reads_the_start_of_an_oversize_list() {
        let record = parsed(
            "10.1.10.1",
            &format!("unknown, 203.0.113.7, {}", padding()),
            "-",
        );
        assert!(record.x_forwarded_for.as_ref().unwrap().is_oversize());
        assert_eq!(original_ip(&record).unwrap().ip, ip("203.0.113.7"));
        // nginx-escaped padding, and an oversize X-Real-IP, which is no address.
        let escaped = r"\x22".repeat(8192);
        let record = parsed("10.1.10.1", &format!("203.0.113.7,{escaped}"), &escaped);
        assert!(record.x_real_ip.as_ref().unwrap().is_oversize());
        let origin = original_ip(&record).unwrap();
        assert_eq!((origin.ip, origin.x_real_ip), (ip("203.0.113.7"), None));
    }

    #[test]
    fn the_trusted_walks_read_the_end_of_an_oversize_list() {
        let list = format!("{}, 198.51.100.9, 10.0.0.5, 10.0.0.6", padding());
        let record = parsed("10.0.0.7", &list, "-");
        assert_eq!(
            client(&trusted(), &record),
            (ip("198.51.100.9"), Provenance::Trusted)
        );
        assert_eq!(
            client(&ClientIpPolicy::TrustedHops(2), &record),
            (ip("198.51.100.9"), Provenance::Trusted)
        );
        // JSON-escaped padding, walked the same way.
        let list = format!(r#"{}, 198.51.100.9, 10.0.0.5"#, r#"\"\\"#.repeat(4096));
        let record = parsed("10.0.0.7", &list, "-");
        assert_eq!(
            client(&trusted(), &record),
            (ip("198.51.100.9"), Provenance::Trusted)
        );
        // Felix is told the walked client too.
        assert_eq!(
            trusted().original_ip(&record).unwrap().ip,
            ip("198.51.100.9")
        );
    }

    #[test]
    fn an_end_that_does_not_hold_the_answer_counts_as_absent() {
        // The reference rule: no whole entry at the start is an address.
        let record = parsed("10.1.10.1", &format!("{}, 203.0.113.7", padding()), "-");
        assert_eq!(original_ip(&record), None);
        let unknowns = "unknown, ".repeat(200);
        let record = parsed("10.1.10.1", &format!("{unknowns}203.0.113.7"), "-");
        assert_eq!(original_ip(&record), None);
        // The trusted walk: every entry kept at the end is a trusted proxy, so the client is
        // somewhere in the part not read. The peer, not the leftmost proxy kept.
        let proxies = "10.0.0.5, ".repeat(MAX_HEADER_BYTES / 10 + 1);
        let list = format!("198.51.100.9, {}, {proxies}10.0.0.6", padding());
        let record = parsed("10.0.0.7", &list, "-");
        assert_eq!(
            client(&trusted(), &record),
            (ip("10.0.0.7"), Provenance::Connection)
        );
        // As for a request without the list, a valid X-Real-IP from the trusted peer counts.
        let record = parsed("10.0.0.7", &list, "192.0.2.1");
        assert_eq!(
            client(&trusted(), &record),
            (ip("192.0.2.1"), Provenance::Trusted)
        );
        // Trusted hops past the end kept: the peer.
        let record = parsed("10.0.0.7", &format!("{}, 198.51.100.9", padding()), "-");
        assert_eq!(
            client(&ClientIpPolicy::TrustedHops(1), &record),
            (ip("10.0.0.7"), Provenance::Connection)
        );
    }

    #[test]
    fn entries_cut_by_the_cap_name_no_one() {
        // `10.0.0.100` cut to `10.0.0.10` at the start; `110.0.0.1` cut to `10.0.0.1` at the
        // end. Neither may be read.
        let head = format!("{},10.0.0.100", "p".repeat(MAX_HEADER_BYTES - 10));
        let tail = format!("110.0.0.1,{}", "q".repeat(MAX_HEADER_BYTES - 9));
        let record = parsed("10.0.0.7", &format!("{head},{},{tail}", padding()), "-");
        assert_eq!(original_ip(&record), None);
        // At the end, `199.0.0.1` cut to `99.0.0.1`, an untrusted address that would end the
        // walk; whole, the kept entries are all trusted.
        let proxies = format!("{}10.0.0.3", "10.0.0.2,".repeat(110));
        let spaces = " ".repeat(MAX_HEADER_BYTES - "99.0.0.1,".len() - proxies.len());
        let list = format!("{},199.0.0.1,{spaces}{proxies}", padding());
        let record = parsed("10.0.0.7", &list, "-");
        let kept = record
            .x_forwarded_for
            .as_ref()
            .unwrap()
            .kept()
            .last()
            .unwrap();
        assert!(kept.starts_with("99.0.0.1,"), "{kept}");
        assert_eq!(
            client(&trusted(), &record),
            (ip("10.0.0.7"), Provenance::Connection)
        );
    }

    /// An entry of a generated X-Forwarded-For list: addresses trusted and not, non-addresses,
    /// empty entries, and padding in the three spellings a hostile header takes in the log.
    fn hostile_entry() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..4).prop_map(|n| format!("10.0.0.{n}")),
            (0u8..4).prop_map(|n| format!("203.0.113.{n}")),
            Just("unknown".to_owned()),
            Just(String::new()),
            Just("[2001:db8::1]:80".to_owned()),
            (1usize..3000).prop_map(|n| "x".repeat(n)),
            (1usize..3000).prop_map(|n| r"\x22".repeat(n)),
            (1usize..3000).prop_map(|n| r#"\"\\"#.repeat(n)),
        ]
    }

    proptest::proptest! {
        /// Reading only the first or last entries of an oversize header gives what reading
        /// the whole decoded end gives, for every policy. A parsed record decodes the ends it
        /// is asked for; a detached one has both decoded in full.
        #[test]
        fn reading_a_few_entries_agrees_with_reading_the_whole_end(
            entries in proptest::collection::vec(hostile_entry(), 1..12),
            hops in 0usize..4,
        ) {
            let line = format!(
                r#"{} {{"source_port": 1, "destination_ip": "10.1.1.10", "destination_port": 2, "source_ip": "10.0.0.7", "x-forwarded-for": "{}", "x-real-ip": "-"}}"#,
                crate::collect::parse::MARKER,
                entries.join(", ")
            );
            let policies = [
                ClientIpPolicy::Reference,
                trusted(),
                ClientIpPolicy::TrustedHops(hops),
            ];
            for policy in &policies {
                let record = crate::collect::parse::parse_line(line.as_bytes()).unwrap().unwrap();
                let lazily = policy.attribute(&record);
                let detached = record.clone().into_owned();
                proptest::prop_assert_eq!(lazily, policy.attribute(&detached));
            }
        }
    }

    #[test]
    fn mapped_peers_match_ipv4_networks() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(trusted.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!trusted.contains("::ffff:11.1.2.3".parse().unwrap()));
    }
}
