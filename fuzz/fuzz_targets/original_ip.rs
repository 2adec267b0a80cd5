//! Attacker-chosen X-Forwarded-For and X-Real-IP under every client-IP policy: the chosen
//! address must be one the request actually carried (a header entry or the peer), and the
//! entry rendered for Felix must make Felix read exactly that address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use ingress_tap_core::collect::origin::{
    forwarded_entries, parse_client_address, ClientIpPolicy, Origin, TrustedProxies,
};
use ingress_tap_core::collect::parse::{parse_line, HeaderValue, Record};
use ingress_tap_core::model::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The same bytes as a whole log line, so the headers also go through the parser's decoding.
    if let Ok(Some(record)) = parse_line(data) {
        check_all_policies(&record);
    }
    // And as raw header values, split at the first NUL: X-Forwarded-For, then X-Real-IP.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (xff, xri) = text.split_once('\0').unwrap_or((&text, ""));
    let peers: [IpAddr; 3] = [
        IpAddr::from([10, 0, 0, 7]),
        IpAddr::from([192, 0, 2, 1]),
        IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
    ];
    let record = Record {
        source_ip: peers[usize::from(selector) % peers.len()],
        source_port: 40_000,
        destination_ip: IpAddr::from([10, 9, 8, 7]),
        destination_port: 443,
        protocol: Protocol::default(),
        x_forwarded_for: (!xff.is_empty()).then(|| HeaderValue::from(xff)),
        x_real_ip: (!xri.is_empty()).then(|| HeaderValue::from(xri)),
    };
    check_all_policies(&record);
});

fn policies() -> [ClientIpPolicy; 5] {
    let trusted = TrustedProxies::new(
        ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .filter_map(|net| net.parse().ok())
            .collect(),
    );
    [
        ClientIpPolicy::Reference,
        ClientIpPolicy::TrustedProxies(trusted),
        ClientIpPolicy::TrustedHops(0),
        ClientIpPolicy::TrustedHops(1),
        ClientIpPolicy::TrustedHops(7),
    ]
}

fn check_all_policies(record: &Record<'_>) {
    // The whole entries: of an oversize list, those at its start and at its end.
    let mut carried: Vec<IpAddr> = record
        .x_forwarded_for
        .as_ref()
        .map(|list| {
            forwarded_entries(list.leading())
                .chain(forwarded_entries(list.trailing()))
                .filter_map(parse_client_address)
                .collect()
        })
        .unwrap_or_default();
    carried.extend(
        record
            .x_real_ip
            .as_ref()
            .and_then(HeaderValue::full)
            .and_then(parse_client_address),
    );
    for policy in policies() {
        let Some(origin) = policy.original_ip(record) else {
            assert_eq!(
                policy,
                ClientIpPolicy::Reference,
                "only the reference policy may find no origin"
            );
            continue;
        };
        // The peer as one client is known everywhere: an IPv4-mapped peer is its IPv4 address.
        let peer = ingress_tap_core::net::canonical_ip(record.source_ip);
        let from_request = carried.contains(&origin.ip)
            || (policy != ClientIpPolicy::Reference && origin.ip == peer);
        assert!(
            from_request,
            "{policy:?} invented {} for {record:?}",
            origin.ip
        );
        assert_eq!(
            felix_reading(&origin),
            Some(origin.ip),
            "{policy:?} {record:?}"
        );
    }
}

/// Felix's reading of an `HTTPData`: X-Real-IP when non-empty, else X-Forwarded-For, parsed as
/// one bare IP.
fn felix_reading(origin: &Origin) -> Option<IpAddr> {
    let entry = origin.http_entry();
    let chosen = if entry.x_real_ip.is_empty() {
        entry.x_forwarded_for
    } else {
        entry.x_real_ip
    };
    chosen.parse().ok()
}
