//! What must never be blocked, whatever the input says.
//!
//! A blocklist fed from detections can be poisoned: a forged header naming the node's own
//! address, a threat feed listing `0.0.0.0/0`, a detection that fired on the load balancer
//! itself. Blocking any of those takes the cluster off the network, so each is refused by name
//! before anything is rendered. A network is refused when it *overlaps* a protected range, in
//! either direction: `10.0.0.0/8` is refused when the pod range is `10.244.0.0/16`, because
//! blocking it would block every pod.

use crate::net::overlaps;
use ipnet::IpNet;
use std::fmt;

/// Default limit on entries in one blocklist object without `--force`: well above any
/// hand-made list, well below the sizes at which objects and rule sets become a problem.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// The configured ranges that are never blocked, beyond the built-in special ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SafetyRules {
    /// Proxies and load balancers in front of the ingress: blocking one blocks every client
    /// behind it, the mistake bouncers that misread X-Forwarded-For make most often.
    pub trusted_proxies: Vec<IpNet>,
    /// Pod, service and node CIDRs.
    pub cluster_ranges: Vec<IpNet>,
}

/// Why a network was not blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    Loopback,
    LinkLocal,
    Unspecified,
    Multicast,
    Broadcast,
    TrustedProxy(IpNet),
    ClusterRange(IpNet),
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loopback => f.write_str("overlaps the loopback range"),
            Self::LinkLocal => f.write_str("overlaps the link-local range"),
            Self::Unspecified => f.write_str("overlaps the unspecified address"),
            Self::Multicast => f.write_str("overlaps the multicast range"),
            Self::Broadcast => f.write_str("overlaps the broadcast address"),
            Self::TrustedProxy(net) => write!(f, "overlaps the trusted proxy range {net}"),
            Self::ClusterRange(net) => write!(f, "overlaps the cluster range {net}"),
        }
    }
}

/// Built-in ranges no blocklist may touch, with the reason each stands for.
fn special_ranges() -> impl Iterator<Item = (IpNet, RefusalReason)> {
    [
        ("127.0.0.0/8", RefusalReason::Loopback),
        ("::1/128", RefusalReason::Loopback),
        ("169.254.0.0/16", RefusalReason::LinkLocal),
        ("fe80::/10", RefusalReason::LinkLocal),
        // 0.0.0.0/8 is "this network" (RFC 1122): never a real client.
        ("0.0.0.0/8", RefusalReason::Unspecified),
        ("::/128", RefusalReason::Unspecified),
        ("224.0.0.0/4", RefusalReason::Multicast),
        ("ff00::/8", RefusalReason::Multicast),
        ("255.255.255.255/32", RefusalReason::Broadcast),
    ]
    .into_iter()
    .filter_map(|(text, reason)| text.parse::<IpNet>().ok().map(|net| (net, reason)))
}

impl SafetyRules {
    /// `Err` names the first rule `net` breaks; `net` must be normalised.
    pub fn check(&self, net: &IpNet) -> Result<(), RefusalReason> {
        if let Some((_, reason)) = special_ranges().find(|(range, _)| overlaps(range, net)) {
            return Err(reason);
        }
        if let Some(proxy) = self.trusted_proxies.iter().find(|p| overlaps(p, net)) {
            return Err(RefusalReason::TrustedProxy(*proxy));
        }
        if let Some(range) = self.cluster_ranges.iter().find(|r| overlaps(r, net)) {
            return Err(RefusalReason::ClusterRange(*range));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::parse_net;

    fn net(text: &str) -> IpNet {
        parse_net(text).unwrap()
    }

    #[test]
    fn special_ranges_are_refused_in_both_families() {
        let rules = SafetyRules::default();
        let cases = [
            ("127.0.0.1", RefusalReason::Loopback),
            ("::1", RefusalReason::Loopback),
            ("::ffff:127.0.0.1", RefusalReason::Loopback),
            ("169.254.169.254", RefusalReason::LinkLocal),
            ("fe80::1", RefusalReason::LinkLocal),
            ("0.0.0.0", RefusalReason::Unspecified),
            ("::", RefusalReason::Unspecified),
            ("239.1.2.3", RefusalReason::Multicast),
            ("ff02::1", RefusalReason::Multicast),
            ("255.255.255.255", RefusalReason::Broadcast),
        ];
        for (text, expected) in cases {
            assert_eq!(rules.check(&net(text)), Err(expected), "{text}");
        }
        assert_eq!(rules.check(&net("203.0.113.7")), Ok(()));
        assert_eq!(rules.check(&net("2001:db8::7")), Ok(()));
    }

    #[test]
    fn a_supernet_of_a_protected_range_is_refused() {
        let rules = SafetyRules::default();
        assert_eq!(rules.check(&net("0.0.0.0/0")), Err(RefusalReason::Loopback));
        assert_eq!(rules.check(&net("::/0")), Err(RefusalReason::Loopback));
    }

    #[test]
    fn configured_ranges_are_refused_with_their_name() {
        let rules = SafetyRules {
            trusted_proxies: vec![net("192.0.2.10/32")],
            cluster_ranges: vec![net("10.244.0.0/16"), net("10.96.0.0/12")],
        };
        assert_eq!(
            rules.check(&net("192.0.2.0/24")),
            Err(RefusalReason::TrustedProxy(net("192.0.2.10/32")))
        );
        assert_eq!(
            rules.check(&net("10.0.0.0/8")),
            Err(RefusalReason::ClusterRange(net("10.244.0.0/16")))
        );
        assert_eq!(
            rules.check(&net("10.96.4.5")),
            Err(RefusalReason::ClusterRange(net("10.96.0.0/12")))
        );
        assert_eq!(rules.check(&net("10.245.0.1")), Ok(()));
    }
}
