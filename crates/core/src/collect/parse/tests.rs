use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::address::parse_port;
use super::escape::{escape_boundary, unescape, unescape_prefix};
use super::quote::{closing_quote, find_quote_or_backslash};
use super::scanner::MAX_SCALAR_BYTES;
use super::template::{TEMPLATE_BEFORE_SOURCE_PORT, TEMPLATE_PORT_DIGITS};
use super::*;
use crate::model::Protocol;
use proptest::prelude::*;
use proptest::sample::{select, Index};

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
