//! The one reader and normaliser of IP addresses and networks, for every role: the collector's
//! client attribution and trusted proxies, the threat lists, the injection config and `block`.
//!
//! One address has exactly one spelling everywhere: a dual-stack listener or a client writes an
//! IPv4 client as `::ffff:203.0.113.7`, and nginx, Calico and nftables all see that client as
//! `203.0.113.7`. Were the two kept apart, one client would count as two (halving its volume
//! against every rule) and a block of one would miss the other.

use ipnet::{IpNet, Ipv4Net};
use std::net::IpAddr;

/// The address as one client is known everywhere: IPv4-mapped IPv6 addresses become IPv4.
/// On every request's path and every list lookup, hence inlined into callers elsewhere.
#[inline]
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Parses `203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32` or `::ffff:203.0.113.7` into its
/// normal form; `None` when it is neither an address nor a CIDR.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?),
    };
    Some(normalise(net))
}

/// Clears host bits and writes IPv4-mapped IPv6 networks as IPv4: nginx, Calico and nftables
/// all see a v4 client as v4, so `::ffff:203.0.113.7` must collide with `203.0.113.7`.
pub fn normalise(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if let Some(prefix) = v6.prefix_len().checked_sub(96) {
                if let Ok(mapped) = Ipv4Net::new(v4, prefix) {
                    return IpNet::V4(mapped.trunc());
                }
            }
        }
    }
    net.trunc()
}

/// A CIDR or a bare address (a single host), surrounding spaces ignored, normalised: how
/// trusted proxies and cluster ranges are written in flags, environment variables and the
/// injection config.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    parse_net(text).ok_or_else(|| {
        format!("{text:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)")
    })
}

/// A threat-list entry as written: an address or a CIDR, never a range, normalised; with
/// whether host bits had to be cleared (`203.0.113.7/24`), which the list reader reports
/// because it usually means the author meant something else.
pub fn parse_list_entry(token: &str) -> Result<(IpNet, bool), String> {
    if let Some((first, last)) = token.split_once('-') {
        if first.parse::<IpAddr>().is_ok() && last.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "{token:?} is an address range; write ranges as CIDRs"
            ));
        }
    }
    let written = if token.contains('/') {
        token
            .parse::<IpNet>()
            .map_err(|_| format!("{token:?} is not a valid CIDR"))?
    } else {
        IpNet::from(
            token
                .parse::<IpAddr>()
                .map_err(|_| format!("{token:?} is not an IP address or CIDR"))?,
        )
    };
    let network = normalise(written);
    let cleared = written.trunc().addr() != written.addr();
    Ok((network, cleared))
}

/// Whether two networks share at least one address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_network() {
        let spelled = |text: &str| parse_net(text).map(|net| net.to_string());
        assert_eq!(spelled("203.0.113.7").as_deref(), Some("203.0.113.7/32"));
        assert_eq!(spelled("203.0.113.7/24").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(
            spelled("::ffff:203.0.113.7").as_deref(),
            Some("203.0.113.7/32")
        );
        assert_eq!(
            spelled("::ffff:203.0.113.0/120").as_deref(),
            Some("203.0.113.0/24")
        );
        assert_eq!(spelled("2001:DB8::1/32").as_deref(), Some("2001:db8::/32"));
        assert_eq!(spelled("example.com"), None);
        assert_eq!(spelled("203.0.113.7/33"), None);
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_address() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(canonical_ip(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical_ip(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical_ip(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(
            parse_network(" ::ffff:10.0.0.0/104 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_network("10.0.0.0/33")
            .unwrap_err()
            .contains("10.0.0.0/33"));
    }

    #[test]
    fn overlap_is_containment_either_way() {
        let net = |text: &str| parse_net(text).unwrap();
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.244.1.0/24")));
        assert!(overlaps(&net("10.244.1.0/24"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.0.0.0/16"), &net("10.1.0.0/16")));
        assert!(!overlaps(&net("0.0.0.0/0"), &net("::/0")));
    }
}
