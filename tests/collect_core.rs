//! The collector's pure core end to end: log lines → records → original IPs → interval reports.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ingress_tap_core::collect::aggregate::{
    Aggregator, AggregatorLimits, ConnectionReport, IntervalReport,
};
use ingress_tap_core::collect::cardinality::{Accuracy, SketchHasher};
use ingress_tap_core::collect::origin::{
    original_ip, ClientIpPolicy, HttpEntry, Origin, TrustedProxies,
};
use ingress_tap_core::collect::parse::{
    parse_line, HeaderValue, Malformed, Record, MARKER, MAX_HEADER_BYTES,
};
use ingress_tap_core::model::Connection;
use ingress_tap_core::model::Protocol;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A line exactly as the spec's template renders it (nginx default escaping is the caller's).
fn template_line(source_port: u16, destination_port: u16, xff: &str, xri: &str) -> String {
    format!(
        r#"tigera_secure_ee_ingress: {{"source_port": {source_port}, "destination_ip": "10.1.1.10", "destination_port": {destination_port}, "source_ip": "10.1.10.1", "x-forwarded-for": "{xff}", "x-real-ip": "{xri}"}}"#
    )
}

fn main_connection_line(xff: &str, xri: &str) -> String {
    template_line(1, 2, xff, xri)
}

fn other_connection_line(xff: &str, xri: &str) -> String {
    template_line(10, 20, xff, xri)
}

fn parsed(line: &str) -> Record<'_> {
    parse_line(line.as_bytes())
        .expect("well-formed line")
        .expect("line with marker")
}

/// A header's text when it was kept whole.
fn full<'a>(header: &'a Option<HeaderValue<'_>>) -> Option<&'a str> {
    header.as_ref().and_then(HeaderValue::full)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn entry(xff: &str, xri: &str) -> HttpEntry {
    HttpEntry {
        x_forwarded_for: xff.to_owned(),
        x_real_ip: xri.to_owned(),
    }
}

/// Runs lines through parse → origin → aggregate for one interval, as the collector does.
fn run_interval(aggregator: &mut Aggregator, lines: &[String]) -> IntervalReport {
    for line in lines {
        if let Ok(Some(record)) = parse_line(line.as_bytes()) {
            let origin = original_ip(&record);
            aggregator.observe(&record, origin.as_ref());
        }
    }
    aggregator.close_interval()
}

fn connection(source_port: u16, destination_port: u16) -> Connection {
    Connection {
        source_ip: ip("10.1.10.1"),
        source_port,
        destination_ip: ip("10.1.1.10"),
        destination_port,
        protocol: Protocol::Tcp,
    }
}

fn report_for<'r>(report: &'r IntervalReport, conn: &Connection) -> &'r ConnectionReport {
    report
        .connections
        .iter()
        .find(|c| c.connection == *conn)
        .expect("connection reported")
}

fn sorted(mut entries: Vec<HttpEntry>) -> Vec<HttpEntry> {
    entries.sort_by(|a, b| {
        (&a.x_real_ip, &a.x_forwarded_for).cmp(&(&b.x_real_ip, &b.x_forwarded_for))
    });
    entries
}

/// nginx's default access-log escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn nginx_escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &byte in bytes {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            out.push_str(&format!("\\x{byte:02X}"));
        } else {
            out.push(char::from(byte));
        }
    }
    out
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn v6(n: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | n))
}

fn forwarded(ip: IpAddr) -> Origin {
    Origin {
        ip,
        x_forwarded_for: Some(ip),
        x_real_ip: None,
    }
}

fn bare_record(source_port: u16) -> Record<'static> {
    Record {
        source_ip: ip("10.1.10.1"),
        source_port,
        destination_ip: ip("10.1.1.10"),
        destination_port: 2,
        protocol: Protocol::Tcp,
        x_forwarded_for: None,
        x_real_ip: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The eight reference cases (interval closed between cases; at most 5 http_data per interval)

fn reference_aggregator() -> Aggregator {
    Aggregator::new(AggregatorLimits::with_requests_per_interval(5))
}

fn case_3_lines() -> Vec<String> {
    ["2.2.2.2", "3.3.3.3", "4.4.4.4"]
        .iter()
        .map(|xri| main_connection_line("1.1.1.1", xri))
        .collect()
}

fn case_6_lines() -> Vec<String> {
    let mut lines: Vec<String> = (2..=7)
        .map(|n| main_connection_line("1.1.1.1", &format!("{n}.{n}.{n}.{n}")))
        .collect();
    lines.push(main_connection_line("1.1.1.1", "2.2.2.2"));
    lines
}

#[test]
fn reference_cases() {
    let mut aggregator = reference_aggregator();
    let main = connection(1, 2);
    let other = connection(10, 20);

    // 1. One line.
    let case_1 = vec![main_connection_line("1.1.1.1", "2.2.2.2")];
    let report = run_interval(&mut aggregator, &case_1);
    assert_eq!(report.connections.len(), 1);
    let main_report = report_for(&report, &main);
    assert_eq!(main_report.http_data, [entry("1.1.1.1", "2.2.2.2")]);
    assert_eq!(main_report.distinct_original_ips, 1);
    assert_eq!(main_report.accuracy, Accuracy::Exact);
    let case_1_report = report;

    // 2. The same line three times.
    let report = run_interval(
        &mut aggregator,
        &[case_1[0].clone(), case_1[0].clone(), case_1[0].clone()],
    );
    assert_eq!(report.connections.len(), 1);
    assert_eq!(
        report.connections[0].http_data,
        case_1_report.connections[0].http_data
    );
    assert_eq!(report.connections[0].distinct_original_ips, 1);
    assert_eq!(report.connections[0].requests, 3);

    // 3. Three distinct X-Real-IPs.
    let report = run_interval(&mut aggregator, &case_3_lines());
    assert_eq!(report.connections.len(), 1);
    let main_report = report_for(&report, &main);
    assert_eq!(
        sorted(main_report.http_entries()),
        [
            entry("1.1.1.1", "2.2.2.2"),
            entry("1.1.1.1", "3.3.3.3"),
            entry("1.1.1.1", "4.4.4.4")
        ]
    );
    assert_eq!(main_report.distinct_original_ips, 3);
    let case_3_connections = report.connections.clone();

    // 4. Case 3 plus a repeat of its first line.
    let mut case_4 = case_3_lines();
    case_4.push(case_4[0].clone());
    let report = run_interval(&mut aggregator, &case_4);
    assert_eq!(report.connections.len(), 1);
    assert_eq!(
        report.connections[0].http_data,
        case_3_connections[0].http_data
    );
    assert_eq!(report.connections[0].distinct_original_ips, 3);

    // 5. Case 4 plus a line on another connection.
    let mut case_5 = case_4.clone();
    case_5.push(other_connection_line("13.13.13.13", "10.10.10.10"));
    let report = run_interval(&mut aggregator, &case_5);
    assert_eq!(report.connections.len(), 2);
    assert_eq!(
        report_for(&report, &main).http_data,
        case_3_connections[0].http_data
    );
    assert_eq!(report_for(&report, &main).distinct_original_ips, 3);
    assert_eq!(
        report_for(&report, &other).http_data,
        [entry("13.13.13.13", "10.10.10.10")]
    );
    assert_eq!(report_for(&report, &other).distinct_original_ips, 1);

    // 6. Six distinct X-Real-IPs plus a repeat: five kept, value 6.
    let report = run_interval(&mut aggregator, &case_6_lines());
    assert_eq!(report.connections.len(), 1);
    let main_report = report_for(&report, &main);
    let expected_first_five: Vec<_> = (2..=6)
        .map(|n| entry("1.1.1.1", &format!("{n}.{n}.{n}.{n}")))
        .collect();
    assert_eq!(main_report.http_data, expected_first_five);
    assert_eq!(main_report.distinct_original_ips, 6);

    // 7. Case 6 plus the other connection: five entries across both reports; values 6 and 1.
    let mut case_7 = case_6_lines();
    case_7.push(other_connection_line("13.13.13.13", "10.10.10.10"));
    let report = run_interval(&mut aggregator, &case_7);
    assert_eq!(report.connections.len(), 2);
    let total_entries: usize = report.connections.iter().map(|c| c.http_data.len()).sum();
    assert_eq!(total_entries, 5);
    assert_eq!(report_for(&report, &main).distinct_original_ips, 6);
    assert_eq!(report_for(&report, &other).distinct_original_ips, 1);
    assert!(report_for(&report, &other).http_data.is_empty());

    // 8. A misspelt marker among good lines is ignored.
    let mut case_8 = case_3_lines();
    case_8.insert(
        1,
        main_connection_line("9.9.9.9", "9.9.9.9").replace(MARKER, "tigera_secure_ee_ingres:"),
    );
    assert_eq!(parse_line(case_8[1].as_bytes()), Ok(None));
    let report = run_interval(&mut aggregator, &case_8);
    assert_eq!(report.connections, case_3_connections);
}

#[test]
fn intervals_are_independent() {
    let mut aggregator = reference_aggregator();
    let lines = case_3_lines();
    let first = run_interval(&mut aggregator, &lines);
    let second = run_interval(&mut aggregator, &lines);
    assert_eq!(first, second);
    assert_eq!(second.connections[0].http_data.len(), 3);
}

#[test]
fn an_ip_over_two_connections_counts_on_both() {
    let mut aggregator = reference_aggregator();
    let report = run_interval(
        &mut aggregator,
        &[
            main_connection_line("1.1.1.1", "-"),
            other_connection_line("1.1.1.1", "-"),
        ],
    );
    for conn in [connection(1, 2), connection(10, 20)] {
        let r = report_for(&report, &conn);
        assert_eq!(r.distinct_original_ips, 1);
        assert_eq!(r.http_data, [entry("1.1.1.1", "")]);
    }
}

#[test]
fn connection_without_usable_headers_is_reported_with_zero() {
    let mut aggregator = reference_aggregator();
    let report = run_interval(
        &mut aggregator,
        &[
            main_connection_line("-", "-"),
            main_connection_line("unknown", "_hidden"),
            other_connection_line("3.3.3.3", "-"),
        ],
    );
    let silent = report_for(&report, &connection(1, 2));
    assert_eq!(silent.distinct_original_ips, 0);
    assert_eq!(silent.requests, 2);
    assert!(silent.http_data.is_empty());
    // First-seen order.
    assert_eq!(report.connections[0].connection, connection(1, 2));
    assert_eq!(report.connections[1].connection, connection(10, 20));
}

#[test]
fn negative_limit_keeps_every_distinct_ip() {
    let mut aggregator = Aggregator::new(AggregatorLimits::with_requests_per_interval(-1));
    let report = run_interval(&mut aggregator, &case_6_lines());
    assert_eq!(report.connections[0].http_data.len(), 6);
    let mut zero = Aggregator::new(AggregatorLimits::with_requests_per_interval(0));
    let report = run_interval(&mut zero, &case_6_lines());
    assert!(report.connections[0].http_data.is_empty());
    assert_eq!(report.connections[0].distinct_original_ips, 6);
}

// ---------------------------------------------------------------------------------------------
// Parser

#[test]
fn marker_mid_line_with_syslog_prefix_and_trailing_text() {
    let line = format!(
        "<190>Jun  3 12:00:01 router-7f9 haproxy[42]: 10.0.0.5 - - \"GET / HTTP/1.1\" {} trailing {{\"not\": \"this\"}}\n",
        main_connection_line("1.1.1.1", "2.2.2.2")
    );
    let record = parsed(&line);
    assert_eq!(record.source_ip, ip("10.1.10.1"));
    assert_eq!(record.source_port, 1);
    assert_eq!(record.destination_ip, ip("10.1.1.10"));
    assert_eq!(record.destination_port, 2);
    assert_eq!(record.protocol, Protocol::Tcp);
    assert_eq!(full(&record.x_forwarded_for), Some("1.1.1.1"));
    assert_eq!(full(&record.x_real_ip), Some("2.2.2.2"));
}

#[test]
fn braces_and_escaped_quotes_inside_strings() {
    let line = format!(
        r#"{MARKER}{{"note": "a }} b {{ c \" }}", "source_ip": "10.1.10.1", "source_port": 1, "destination_ip": "10.1.1.10", "destination_port": 2, "x-forwarded-for": "x}}\"y,1.1.1.1", "x-real-ip": "-"}} after"#
    );
    let record = parsed(&line);
    assert_eq!(full(&record.x_forwarded_for), Some("x}\"y,1.1.1.1"));
    assert_eq!(record.x_real_ip, None);
}

#[test]
fn nginx_hex_escapes_and_json_escapes() {
    // A header holding a quote, as nginx writes it: a\x22b.
    let line = main_connection_line(r"a\x22b, 1.1.1.1", r"c\x5Cd");
    let record = parsed(&line);
    assert_eq!(full(&record.x_forwarded_for), Some("a\"b, 1.1.1.1"));
    assert_eq!(full(&record.x_real_ip), Some("c\\d"));

    let line = main_connection_line(r#"a\"b\\c\u0022\u00e9\/"#, r"\t");
    let record = parsed(&line);
    assert_eq!(full(&record.x_forwarded_for), Some("a\"b\\c\"é/"));
    assert_eq!(full(&record.x_real_ip), Some("\t"));

    // UTF-8 written byte by byte by nginx.
    let line = main_connection_line(r"caf\xC3\xA9", "-");
    assert_eq!(full(&record_owned(&line).x_forwarded_for), Some("café"));
}

fn record_owned(line: &str) -> Record<'static> {
    parsed(line).into_owned()
}

#[test]
fn dash_means_no_value_quoted_or_bare() {
    let line = main_connection_line("-", "-");
    let record = parsed(&line);
    assert_eq!(record.x_forwarded_for, None);
    assert_eq!(record.x_real_ip, None);

    let bare = format!(
        r#"{MARKER} {{"source_port": -, "destination_ip": "10.1.1.10", "destination_port": 2, "source_ip": "10.1.10.1", "x-forwarded-for": "-", "x-real-ip": -}}"#
    );
    assert_eq!(
        parse_line(bare.as_bytes()),
        Err(Malformed::MissingField("source_port"))
    );

    let bare_header = format!(
        r#"{MARKER} {{"source_port": 1, "destination_ip": "10.1.1.10", "destination_port": 2, "source_ip": "10.1.10.1", "x-forwarded-for": -, "x-real-ip": null}}"#
    );
    let record = record_owned(&bare_header);
    assert_eq!(record.x_forwarded_for, None);
    assert_eq!(record.x_real_ip, None);
}

#[test]
fn numbers_quoted_or_bare() {
    let line = format!(
        r#"{MARKER} {{"source_port": "443", "destination_ip": "10.1.1.10", "destination_port": 8443, "source_ip": "10.1.10.1"}}"#
    );
    let record = parsed(&line);
    assert_eq!(record.source_port, 443);
    assert_eq!(record.destination_port, 8443);
    assert_eq!(record.x_forwarded_for, None);
}

#[test]
fn ipv6_addresses() {
    let line = format!(
        r#"{MARKER} {{"source_port": 1, "destination_ip": "fd00::10", "destination_port": 2, "source_ip": "2001:db8::7", "x-forwarded-for": "[2001:db8::1]:443, 2001:db8::2", "x-real-ip": "-"}}"#
    );
    let record = parsed(&line);
    assert_eq!(record.source_ip, ip("2001:db8::7"));
    assert_eq!(record.destination_ip, ip("fd00::10"));
    let origin = original_ip(&record).unwrap();
    assert_eq!(origin.ip, ip("2001:db8::1"));
    assert_eq!(origin.http_entry(), entry("2001:db8::1", ""));
}

#[test]
fn lines_without_the_marker_are_not_records() {
    for line in [
        "",
        "\n",
        "plain access log line",
        "tigera_secure_ee_ingres: {\"source_port\": 1}",
        "TIGERA_SECURE_EE_INGRESS: {}",
        "tigera_secure_ee_ingress {}",
    ] {
        assert_eq!(parse_line(line.as_bytes()), Ok(None), "{line:?}");
    }
}

#[test]
fn every_truncation_of_a_line_is_rejected_not_misread() {
    let line = main_connection_line("1.1.1.1, 10.0.0.1", "2.2.2.2");
    let object_start = line.find('{').unwrap();
    for cut in 0..line.len() {
        let result = parse_line(&line.as_bytes()[..cut]);
        if cut < MARKER.len() {
            assert_eq!(result, Ok(None), "cut at {cut}");
        } else if cut <= object_start {
            assert_eq!(result, Err(Malformed::NoJsonObject), "cut at {cut}");
        } else {
            assert_eq!(result, Err(Malformed::UnterminatedObject), "cut at {cut}");
        }
    }
    assert!(parse_line(line.as_bytes()).unwrap().is_some());
}

#[test]
fn invalid_syntax_and_fields_are_named() {
    let cases: Vec<(String, Malformed)> = vec![
        (format!("{MARKER} [1, 2]"), Malformed::NoJsonObject),
        (
            format!("{MARKER} {{\"source_port\" 1}}"),
            Malformed::InvalidJson,
        ),
        (
            format!("{MARKER} {{\"source_port\": 1 \"x\": 2}}"),
            Malformed::InvalidJson,
        ),
        (
            format!("{MARKER} {{source_port: 1}}"),
            Malformed::InvalidJson,
        ),
        (
            format!("{MARKER} {{}}"),
            Malformed::MissingField("source_ip"),
        ),
        (
            main_connection_line("1.1.1.1", "2.2.2.2").replace("\"10.1.10.1\"", "\"unix:\""),
            Malformed::InvalidField("source_ip"),
        ),
        (
            main_connection_line("1.1.1.1", "2.2.2.2")
                .replace("\"destination_ip\": \"10.1.1.10\", ", ""),
            Malformed::MissingField("destination_ip"),
        ),
        (
            main_connection_line("1.1.1.1", "2.2.2.2")
                .replace("}", ", \"x-real-ip\": \"3.3.3.3\"}"),
            Malformed::DuplicateField("x-real-ip"),
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse_line(line.as_bytes()), Err(expected), "{line}");
        assert!(!expected.as_str().is_empty());
    }
}

#[test]
fn a_marker_inside_an_earlier_field_does_not_hide_the_real_template() {
    // The request URI printed before the template carries the marker; nginx escaped its quotes.
    let line = format!(
        "\"GET /{MARKER}{{\\x22source_ip\\x22:\\x221.2.3.4\\x22}} HTTP/1.1\" {}",
        main_connection_line("5.5.5.5", "-")
    );
    let record = parsed(&line);
    assert_eq!(full(&record.x_forwarded_for), Some("5.5.5.5"));
    assert_eq!(record.source_ip, ip("10.1.10.1"));
}

#[test]
fn bytes_that_are_not_utf8_never_panic() {
    // In the prefix: ignored.
    let mut line = b"\xff\xfe prefix ".to_vec();
    line.extend_from_slice(main_connection_line("1.1.1.1", "-").as_bytes());
    assert!(parse_line(&line).unwrap().is_some());

    // Raw in a header (escaping off): replaced, the rest of the list still usable.
    let line = main_connection_line("1.1.1.1, @@", "-").replace("@@", "\u{1}");
    let mut bytes = line.into_bytes();
    let at = bytes.iter().position(|&b| b == 1).unwrap();
    bytes[at] = 0xff;
    let record = parse_line(&bytes).unwrap().unwrap();
    assert_eq!(full(&record.x_forwarded_for), Some("1.1.1.1, \u{FFFD}"));
    assert_eq!(original_ip(&record).unwrap().ip, ip("1.1.1.1"));

    // Escaped as \xHH and decoded to invalid UTF-8: also replaced.
    let line = main_connection_line(r"\xff\xfe", "2.2.2.2");
    let record = record_owned(&line);
    assert_eq!(full(&record.x_forwarded_for), Some("\u{FFFD}\u{FFFD}"));

    // In an address: the field is invalid.
    let line = main_connection_line("1.1.1.1", "-").replace("10.1.10.1", r"10.1.10.\xff");
    assert_eq!(
        parse_line(line.as_bytes()),
        Err(Malformed::InvalidField("source_ip"))
    );
}

#[test]
fn header_length_is_capped() {
    let at_cap = "a".repeat(MAX_HEADER_BYTES);
    let line = main_connection_line(&at_cap, "-");
    assert_eq!(full(&parsed(&line).x_forwarded_for), Some(at_cap.as_str()));

    // Over the cap the request stays, with the header's ends kept.
    let over_cap = "a".repeat(MAX_HEADER_BYTES + 1);
    let line = main_connection_line("1.1.1.1", &over_cap);
    let record = parsed(&line);
    assert!(record
        .x_real_ip
        .as_ref()
        .is_some_and(HeaderValue::is_oversize));
    assert_eq!(
        original_ip(&record).map(|origin| origin.ip),
        Some(ip("1.1.1.1"))
    );

    // The cap applies to the decoded value: 1024 escaped bytes are 4096 raw ones.
    let escaped = r"\x41".repeat(MAX_HEADER_BYTES);
    let line = main_connection_line(&escaped, "-");
    assert_eq!(
        full(&record_owned(&line).x_forwarded_for).map(str::len),
        Some(MAX_HEADER_BYTES)
    );
}

#[test]
fn huge_lines() {
    let prefix = "x".repeat(4 << 20);
    let line = format!("{prefix}{}", main_connection_line("1.1.1.1", "-"));
    assert_eq!(full(&parsed(&line).x_forwarded_for), Some("1.1.1.1"));

    let unterminated = format!("{MARKER} {{\"x-forwarded-for\": \"{}", "y".repeat(4 << 20));
    assert_eq!(
        parse_line(unterminated.as_bytes()),
        Err(Malformed::UnterminatedObject)
    );

    // Every marker opens an array that never closes: without a bound on the markers tried,
    // each would rescan the rest of the line.
    let many_markers = format!("{MARKER}{{\"a\":[").repeat(200_000);
    assert_eq!(
        parse_line(many_markers.as_bytes()),
        Err(Malformed::UnterminatedObject)
    );
}

#[test]
fn borrowed_values_are_not_copied() {
    let line = main_connection_line("1.1.1.1", "2.2.2.2");
    let record = parsed(&line);
    assert!(matches!(
        record.x_forwarded_for,
        Some(HeaderValue::Full(Cow::Borrowed(_)))
    ));
    let escaped = main_connection_line(r"1.1.1.1\x20", "-");
    assert!(matches!(
        parse_line(escaped.as_bytes())
            .unwrap()
            .unwrap()
            .x_forwarded_for,
        Some(HeaderValue::Full(Cow::Owned(_)))
    ));
}

// ---------------------------------------------------------------------------------------------
// Origin

fn headers(xff: Option<&str>, xri: Option<&str>) -> Record<'static> {
    Record {
        x_forwarded_for: xff.map(|v| HeaderValue::from(v.to_owned())),
        x_real_ip: xri.map(|v| HeaderValue::from(v.to_owned())),
        ..bare_record(1)
    }
}

/// What Felix reads from an entry: X-Real-IP when non-empty, else X-Forwarded-For, as one IP.
fn felix_reads(entry: &HttpEntry) -> Option<IpAddr> {
    let value = if entry.x_real_ip.is_empty() {
        &entry.x_forwarded_for
    } else {
        &entry.x_real_ip
    };
    value.parse().ok()
}

/// X-Forwarded-For, X-Real-IP, the expected original IP and the expected Felix entry.
type ReferenceCase = (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    HttpEntry,
);

#[test]
fn reference_rule() {
    let cases: Vec<ReferenceCase> = vec![
        (
            Some("1.1.1.1"),
            Some("2.2.2.2"),
            Some("2.2.2.2"),
            entry("1.1.1.1", "2.2.2.2"),
        ),
        (Some("1.1.1.1"), None, Some("1.1.1.1"), entry("1.1.1.1", "")),
        (None, Some("2.2.2.2"), Some("2.2.2.2"), entry("", "2.2.2.2")),
        // An X-Real-IP that is not an IP must not hide a good X-Forwarded-For.
        (
            Some("1.1.1.1"),
            Some("unknown"),
            Some("1.1.1.1"),
            entry("1.1.1.1", ""),
        ),
        // Lists are cut to their first valid element, spaces trimmed.
        (
            Some("203.0.113.7, 10.0.0.1,10.0.0.2"),
            None,
            Some("203.0.113.7"),
            entry("203.0.113.7", ""),
        ),
        (
            Some("unknown, _hidden,  garbage , 198.51.100.4, 10.0.0.1"),
            None,
            Some("198.51.100.4"),
            entry("198.51.100.4", ""),
        ),
        (
            Some("198.51.100.4:5555"),
            None,
            Some("198.51.100.4"),
            entry("198.51.100.4", ""),
        ),
        (
            Some("[2001:db8::1]:443, 10.0.0.1"),
            None,
            Some("2001:db8::1"),
            entry("2001:db8::1", ""),
        ),
        (
            Some("[2001:db8::1]"),
            Some("-junk"),
            Some("2001:db8::1"),
            entry("2001:db8::1", ""),
        ),
        (
            Some("2001:DB8:0:0::1"),
            None,
            Some("2001:db8::1"),
            entry("2001:db8::1", ""),
        ),
        (
            Some("unknown"),
            Some("[2001:db8::5]:80"),
            Some("2001:db8::5"),
            entry("", "2001:db8::5"),
        ),
        (
            Some("unknown, _hidden"),
            Some("unknown"),
            None,
            entry("", ""),
        ),
        (None, None, None, entry("", "")),
    ];
    for (xff, xri, expected_ip, expected_entry) in cases {
        let origin = original_ip(&headers(xff, xri));
        assert_eq!(origin.map(|o| o.ip), expected_ip.map(ip), "{xff:?} {xri:?}");
        if let Some(origin) = origin {
            let http_entry = origin.http_entry();
            assert_eq!(http_entry, expected_entry, "{xff:?} {xri:?}");
            assert_eq!(felix_reads(&http_entry), Some(origin.ip));
        }
    }
}

#[test]
fn trusted_proxies_policy() {
    let policy = ClientIpPolicy::TrustedProxies(TrustedProxies::new(vec![
        "10.0.0.0/8".parse().unwrap(),
        "fd00::/8".parse().unwrap(),
    ]));
    let from = |peer: &str, xff: Option<&str>, xri: Option<&str>| Record {
        source_ip: ip(peer),
        ..headers(xff, xri)
    };
    let cases = [
        // Untrusted peer: headers ignored, the peer is the client.
        (
            from("203.0.113.9", Some("1.1.1.1"), Some("2.2.2.2")),
            "203.0.113.9",
        ),
        // Trusted peer: rightmost untrusted entry.
        (
            from("10.0.0.2", Some("6.6.6.6, 1.1.1.1, 10.0.0.5"), None),
            "1.1.1.1",
        ),
        (
            from("10.0.0.2", Some("1.1.1.1, [fd00::3]:80"), None),
            "1.1.1.1",
        ),
        // All trusted: the leftmost.
        (
            from("10.0.0.2", Some("10.9.9.9, 10.0.0.5"), None),
            "10.9.9.9",
        ),
        // Garbage breaks the chain at the last address reached.
        (
            from("10.0.0.2", Some("1.1.1.1, unknown, 10.0.0.5"), None),
            "10.0.0.5",
        ),
        (from("10.0.0.2", Some("1.1.1.1, unknown"), None), "10.0.0.2"),
        // No XFF: a valid X-Real-IP from a trusted peer, else the peer.
        (from("10.0.0.2", None, Some("2.2.2.2")), "2.2.2.2"),
        (from("10.0.0.2", None, Some("unknown")), "10.0.0.2"),
        (from("::ffff:10.0.0.2", Some("1.1.1.1"), None), "1.1.1.1"),
    ];
    for (record, expected) in cases {
        let origin = policy.original_ip(&record).unwrap();
        assert_eq!(origin.ip, ip(expected), "{record:?}");
        assert_eq!(felix_reads(&origin.http_entry()), Some(origin.ip));
    }
}

#[test]
fn trusted_hops_policy() {
    let xff = Some("1.1.1.1, 2.2.2.2, 3.3.3.3");
    for (hops, expected) in [
        (0, "3.3.3.3"),
        (1, "2.2.2.2"),
        (2, "1.1.1.1"),
        (3, "10.1.10.1"),
    ] {
        let origin = ClientIpPolicy::TrustedHops(hops)
            .original_ip(&headers(xff, Some("9.9.9.9")))
            .unwrap();
        assert_eq!(origin.ip, ip(expected), "hops {hops}");
        assert_eq!(felix_reads(&origin.http_entry()), Some(origin.ip));
    }
    let origin = ClientIpPolicy::TrustedHops(1)
        .original_ip(&headers(Some("1.1.1.1, garbage, 3.3.3.3"), None))
        .unwrap();
    assert_eq!(origin.ip, ip("10.1.10.1"));
    let origin = ClientIpPolicy::TrustedHops(0)
        .original_ip(&headers(None, None))
        .unwrap();
    assert_eq!(origin.ip, ip("10.1.10.1"));
}

#[test]
fn reference_policy_matches_the_free_function() {
    let record = headers(Some("1.1.1.1"), Some("unknown"));
    assert_eq!(
        ClientIpPolicy::Reference.original_ip(&record),
        original_ip(&record)
    );
}

// ---------------------------------------------------------------------------------------------
// Bounded counting

fn observe_distinct(
    aggregator: &mut Aggregator,
    ports: u16,
    total: u32,
    check_every: u32,
) -> usize {
    let bound = aggregator.limits().memory_bound_bytes();
    let mut peak = 0;
    let records: Vec<_> = (0..ports).map(|port| bare_record(port + 1)).collect();
    for n in 0..total {
        let slot = (n % u32::from(ports)) as usize;
        let origin = if n % 2 == 0 {
            forwarded(v4(n))
        } else {
            forwarded(v6(u128::from(n)))
        };
        aggregator.observe(&records[slot], Some(&origin));
        if n % check_every == 0 {
            let estimate = aggregator.memory_estimate_bytes();
            assert!(estimate <= bound, "{estimate} > {bound}");
            peak = peak.max(estimate);
        }
    }
    peak
}

#[test]
fn five_million_distinct_ips_on_one_connection() {
    let limits = AggregatorLimits::with_requests_per_interval(5);
    let mut aggregator = Aggregator::with_sketch_hasher(limits, SketchHasher::with_salt(0x5eed));
    let peak = observe_distinct(&mut aggregator, 1, 5_000_000, 10_000);
    // One connection: one sketch, never the exact set of millions.
    assert!(peak <= 512 * 1024, "peak estimate {peak}");
    let report = aggregator.close_interval();
    assert_eq!(report.connections.len(), 1);
    let only = &report.connections[0];
    assert_eq!(only.accuracy, Accuracy::Estimated);
    assert_eq!(only.requests, 5_000_000);
    assert_eq!(only.http_data.len(), 5);
    let error = (only.distinct_original_ips as f64 - 5_000_000.0).abs() / 5_000_000.0;
    assert!(
        error < 0.02,
        "estimate {} is off by {:.2} %",
        only.distinct_original_ips,
        error * 100.0
    );
}

#[test]
fn two_million_distinct_ips_over_two_hundred_connections() {
    // A sketch for every connection: the estimates' accuracy is the subject here.
    let limits = AggregatorLimits {
        max_sketches: 256,
        ..AggregatorLimits::with_requests_per_interval(-1)
    };
    let mut aggregator = Aggregator::with_sketch_hasher(limits, SketchHasher::with_salt(0xfeed));
    observe_distinct(&mut aggregator, 200, 2_000_000, 10_000);
    let report = aggregator.close_interval();
    assert_eq!(report.connections.len(), 200);
    let mut total = 0u64;
    for conn in &report.connections {
        assert_eq!(conn.accuracy, Accuracy::Estimated);
        let error = (conn.distinct_original_ips as f64 - 10_000.0).abs() / 10_000.0;
        assert!(error < 0.03, "{}", conn.distinct_original_ips);
        total += conn.distinct_original_ips;
    }
    let error = (total as f64 - 2_000_000.0).abs() / 2_000_000.0;
    assert!(error < 0.02, "total {total}");
    // http_data stops at the exact pool even without a configured cap.
    let entries: usize = report.connections.iter().map(|c| c.http_data.len()).sum();
    assert!(entries <= limits.max_exact_ips);
}

#[test]
fn two_million_distinct_ips_over_more_connections_than_sketches() {
    let limits = AggregatorLimits::with_requests_per_interval(5);
    let mut aggregator = Aggregator::with_sketch_hasher(limits, SketchHasher::with_salt(0xbeef));
    let ports = 2_000;
    observe_distinct(&mut aggregator, ports, 2_000_000, 10_000);
    let report = aggregator.close_interval();
    assert_eq!(report.connections.len(), usize::from(ports));
    let truth = 1_000.0;
    let estimated = report
        .connections
        .iter()
        .filter(|c| c.accuracy == Accuracy::Estimated)
        .count();
    assert_eq!(estimated, limits.max_sketches);
    for conn in &report.connections {
        let value = conn.distinct_original_ips as f64;
        match conn.accuracy {
            Accuracy::Exact => assert_eq!(value, truth),
            Accuracy::Estimated => assert!((value - truth).abs() / truth < 0.02, "{value}"),
            Accuracy::LowerBound => assert!(value < truth),
        }
    }
}

#[test]
fn connections_beyond_the_cap_are_dropped_and_counted() {
    let limits = AggregatorLimits {
        max_connections: 100,
        ..AggregatorLimits::with_requests_per_interval(5)
    };
    let mut aggregator = Aggregator::new(limits);
    for port in 0..150u16 {
        aggregator.observe(&bare_record(port), Some(&forwarded(v4(u32::from(port)))));
        aggregator.observe(&bare_record(port), None);
    }
    let report = aggregator.close_interval();
    assert_eq!(report.connections.len(), 100);
    assert_eq!(report.dropped_records, 100);
    assert_eq!(report.records, 300);
    assert_eq!(
        report.connections.iter().map(|c| c.requests).sum::<u64>(),
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_line(&bytes);
        let mut with_marker = MARKER.as_bytes().to_vec();
        with_marker.extend_from_slice(&bytes);
        let _ = parse_line(&with_marker);
    }

    #[test]
    fn parse_never_panics_on_mutated_templates(
        xff in ".{0,40}",
        cut in 0usize..400,
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..6),
    ) {
        let mut bytes = main_connection_line(&xff, "-").into_bytes();
        for (at, byte) in flips {
            if let Some(slot) = bytes.get_mut(at) {
                *slot = byte;
            }
        }
        bytes.truncate(cut.max(MARKER.len()));
        if let Ok(Some(record)) = parse_line(&bytes) {
            let _ = original_ip(&record);
        }
    }

    #[test]
    fn nginx_escaped_headers_round_trip(xff in any::<String>(), xri in proptest::collection::vec(any::<u8>(), 0..200)) {
        let line = main_connection_line(&nginx_escape(xff.as_bytes()), &nginx_escape(&xri));
        let record = parse_line(line.as_bytes()).unwrap().unwrap();
        let expected_xff = (!xff.is_empty() && xff != "-").then_some(xff.as_str());
        prop_assert_eq!(full(&record.x_forwarded_for), expected_xff);
        let xri_text = String::from_utf8_lossy(&xri);
        let expected_xri = (!xri.is_empty() && xri != b"-").then_some(xri_text.as_ref());
        prop_assert_eq!(full(&record.x_real_ip), expected_xri);
    }

    #[test]
    fn json_escaped_headers_round_trip(xff in any::<String>(), xri in any::<String>()) {
        let quoted = |value: &str| {
            let json = serde_json::to_string(value).unwrap();
            json[1..json.len() - 1].to_owned()
        };
        let line = main_connection_line(&quoted(&xff), &quoted(&xri));
        let record = parse_line(line.as_bytes()).unwrap().unwrap();
        let expect = |value: &str| (!value.is_empty() && value != "-").then(|| value.to_owned());
        prop_assert_eq!(full(&record.x_forwarded_for).map(str::to_owned), expect(&xff));
        prop_assert_eq!(full(&record.x_real_ip).map(str::to_owned), expect(&xri));
    }

    #[test]
    fn origin_is_always_what_felix_reads(xff in "[0-9a-f:., \\[\\]unkow_-]{0,60}", xri in "[0-9a-f:., \\[\\]unkow_-]{0,30}") {
        let record = headers(Some(&xff), Some(&xri));
        if let Some(origin) = original_ip(&record) {
            prop_assert_eq!(felix_reads(&origin.http_entry()), Some(origin.ip));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attribution: which address a request is counted against, and how far it can be believed

/// A line from `peer` carrying `xff` and `xri` (`-` for an absent header).
fn line_from(peer: &str, xff: &str, xri: &str) -> String {
    format!(
        r#"tigera_secure_ee_ingress: {{"source_port": 40000, "destination_ip": "10.1.1.10", "destination_port": 443, "source_ip": "{peer}", "x-forwarded-for": "{xff}", "x-real-ip": "{xri}"}}"#
    )
}

/// Header entries as clients write them: addresses (some of them trusted proxies, some
/// IPv4-mapped), garbage, ports and brackets.
fn header_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("203.0.113.7".to_owned()),
        Just("198.51.100.9".to_owned()),
        Just("10.0.0.9".to_owned()),
        Just("10.200.1.1:8080".to_owned()),
        Just("::ffff:203.0.113.7".to_owned()),
        Just("[2001:db8::5]:443".to_owned()),
        Just("unknown".to_owned()),
        Just("_hidden".to_owned()),
        Just(String::new()),
        (0..=255u8).prop_map(|octet| format!("192.0.2.{octet}")),
    ]
}

fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-".to_owned()),
        proptest::collection::vec(header_entry(), 1..5).prop_map(|entries| entries.join(", ")),
    ]
}

fn parsed_entries(list: &str) -> Vec<Option<IpAddr>> {
    ingress_tap_core::collect::origin::forwarded_entries(list)
        .map(ingress_tap_core::collect::origin::parse_client_address)
        .collect()
}

proptest! {
    /// Under every policy the provenance is `connection` exactly when no forwarding header was
    /// believed, and then the address is the peer; otherwise it is an address the headers
    /// carried, `claimed` under the reference rule and `trusted` behind configured proxies.
    #[test]
    fn the_provenance_is_connection_exactly_when_no_header_was_believed(
        peer in prop_oneof![Just("10.0.0.1"), Just("203.0.113.200"), Just("::ffff:10.0.0.2")],
        xff in header(),
        xri in header(),
        hops in 0..3usize,
    ) {
        use ingress_tap_core::model::Provenance;
        let line = line_from(peer, &xff, &xri);
        let record = parsed(&line);
        let peer_ip = ingress_tap_core::net::canonical_ip(peer.parse().unwrap());
        let xff_entries = if xff == "-" { Vec::new() } else { parsed_entries(&xff) };
        let xri_ip = if xri == "-" {
            None
        } else {
            ingress_tap_core::collect::origin::parse_client_address(&xri)
        };
        let header_ips: Vec<IpAddr> =
            xff_entries.iter().flatten().copied().chain(xri_ip).collect();
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let peer_trusted = trusted.contains(peer_ip);
        let cases = [
            (
                ClientIpPolicy::Reference,
                xri_ip.is_some() || xff_entries.iter().any(Option::is_some),
                Provenance::Claimed,
            ),
            (
                ClientIpPolicy::TrustedProxies(trusted.clone()),
                peer_trusted
                    && (xff_entries.last().is_some_and(Option::is_some) || xri_ip.is_some()),
                Provenance::Trusted,
            ),
            (
                ClientIpPolicy::TrustedHops(hops),
                xff_entries.iter().rev().nth(hops).is_some_and(Option::is_some),
                Provenance::Trusted,
            ),
        ];
        for (policy, believed, header_provenance) in cases {
            let client = policy.attribute(&record).client;
            if believed {
                prop_assert_eq!(client.provenance, header_provenance, "{:?} {}", policy, line);
                prop_assert!(header_ips.contains(&client.ip), "{:?} {}", policy, line);
            } else {
                prop_assert_eq!(client.provenance, Provenance::Connection, "{:?} {}", policy, line);
                prop_assert_eq!(client.ip, peer_ip, "{:?} {}", policy, line);
            }
            // One client, one spelling: no IPv4-mapped address is ever counted.
            prop_assert_eq!(client.ip, ingress_tap_core::net::canonical_ip(client.ip));
        }
    }
}
