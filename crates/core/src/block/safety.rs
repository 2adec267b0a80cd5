//! What must never be blocked, whatever the input says.
//!
//! A blocklist fed from detections can be poisoned: a forged header naming the node's own
//! address, a threat feed listing `0.0.0.0/0`, a detection that fired on the load balancer
//! itself. Blocking any of those takes the cluster off the network, so each is refused by name
//! before anything is rendered. A network is refused when it *overlaps* a protected range, in
//! either direction: `10.0.0.0/8` is refused when the pod range is `10.244.0.0/16`, because
//! blocking it would block every pod.
//!
//! IPv6 prefixes that carry an IPv4 address inside them (NAT64, 6to4) are refused when the
//! IPv4 address they carry is protected: `2002:a00:1::/48` is the 6to4 network of `10.0.0.1`,
//! and `64:ff9b::a00:1` is how an IPv6-only cluster behind NAT64 sees `10.0.0.1`.

use crate::net::overlaps;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::Ipv4Addr;

/// Default limit on entries in one blocklist object without `--force`: well above any
/// hand-made list, well below the sizes at which objects and rule sets become a problem.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// Default narrowest prefix an entry may have without `--force`. A /16 is a whole provider's
/// block of 65,536 addresses; wider is no longer "a client" but a region of the internet.
pub const DEFAULT_MIN_PREFIX_V4: u8 = 16;

/// The IPv6 counterpart of [`DEFAULT_MIN_PREFIX_V4`]: a /32 is a provider's allocation, and
/// holds 65,536 end sites (/48), as a /16 holds 65,536 IPv4 addresses.
pub const DEFAULT_MIN_PREFIX_V6: u8 = 32;

/// Default limit on the addresses one run may block without `--force`, in [`address_units`]:
/// a /8's worth, 256 entries at the widest default prefix, yet far above what detections name
/// (single addresses, at most `--max-entries` of them).
pub const DEFAULT_MAX_ADDRESSES: u64 = 1 << 24;

/// The widest entry accepted without `--force`, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinPrefix {
    pub v4: u8,
    pub v6: u8,
}

impl Default for MinPrefix {
    fn default() -> MinPrefix {
        MinPrefix {
            v4: DEFAULT_MIN_PREFIX_V4,
            v6: DEFAULT_MIN_PREFIX_V6,
        }
    }
}

impl MinPrefix {
    pub fn check(&self, net: &IpNet) -> Result<(), RefusalReason> {
        let (min_prefix, flag) = match net {
            IpNet::V4(_) => (self.v4, "--min-prefix-v4"),
            IpNet::V6(_) => (self.v6, "--min-prefix-v6"),
        };
        if net.prefix_len() < min_prefix {
            return Err(RefusalReason::TooWide { min_prefix, flag });
        }
        Ok(())
    }
}

/// How much of the internet `nets` cover together: IPv4 addresses, plus IPv6 space counted in
/// /48 networks (rounded up). A /48 is what one end site gets (RFC 6177), so it weighs as one
/// IPv4 address, one customer; counting IPv6 addresses or /64s instead would make a single
/// provider's /32 outweigh the whole IPv4 internet. Overlapping networks count once.
pub fn address_units<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> u64 {
    let mut nets: Vec<&IpNet> = nets.into_iter().collect();
    // Sorted, a network comes before those inside it, and CIDRs nest or are disjoint: the
    // last one counted is the only one that can cover the next.
    nets.sort();
    let mut counted: Option<&IpNet> = None;
    let mut v4: u64 = 0;
    let mut v6_sites: u64 = 0;
    // Space in networks narrower than a /48, in addresses.
    let mut v6_small: u128 = 0;
    for net in nets {
        if counted.is_some_and(|cover| cover.contains(net)) {
            continue;
        }
        counted = Some(net);
        match net {
            IpNet::V4(net) => {
                v4 = v4.saturating_add(1 << (32 - u32::from(net.prefix_len())));
            }
            IpNet::V6(net) => match 48_u8.checked_sub(net.prefix_len()) {
                Some(wider) => v6_sites = v6_sites.saturating_add(1 << wider),
                None => {
                    v6_small = v6_small.saturating_add(1 << (128 - u32::from(net.prefix_len())))
                }
            },
        }
    }
    let small_sites = u64::try_from(v6_small.div_ceil(1 << 80)).unwrap_or(u64::MAX);
    v4.saturating_add(v6_sites).saturating_add(small_sites)
}

/// The configured ranges that are never blocked, beyond the built-in special ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SafetyRules {
    /// Proxies and load balancers in front of the ingress: blocking one blocks every client
    /// behind it, the mistake bouncers that misread X-Forwarded-For make most often.
    pub trusted_proxies: Vec<IpNet>,
    /// Pod, service and node CIDRs.
    pub cluster_ranges: Vec<IpNet>,
}

/// A range no blocklist may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    Loopback,
    LinkLocal,
    Unspecified,
    Multicast,
    Broadcast,
    /// RFC 1918: the addresses of the cluster itself and of whatever sits next to it.
    Private(IpNet),
    /// RFC 6598 (carrier-grade NAT, and many clouds' node and load balancer addresses).
    SharedAddressSpace,
    /// RFC 4193, the IPv6 counterpart of the private ranges.
    UniqueLocal,
    TrustedProxy(IpNet),
    ClusterRange(IpNet),
}

impl fmt::Display for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loopback => f.write_str("the loopback range"),
            Self::LinkLocal => f.write_str("the link-local range"),
            Self::Unspecified => f.write_str("the unspecified address"),
            Self::Multicast => f.write_str("the multicast range"),
            Self::Broadcast => f.write_str("the broadcast address"),
            Self::Private(net) => write!(f, "the private range {net} (RFC 1918)"),
            Self::SharedAddressSpace => {
                f.write_str("the shared address space 100.64.0.0/10 (carrier-grade NAT, RFC 6598)")
            }
            Self::UniqueLocal => f.write_str("the unique local range fc00::/7 (RFC 4193)"),
            Self::TrustedProxy(net) => write!(f, "the trusted proxy range {net}"),
            Self::ClusterRange(net) => write!(f, "the cluster range {net}"),
        }
    }
}

/// An IPv6 prefix that carries IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// RFC 3056: `2002:AABB:CCDD::/48` is the site of IPv4 address `A.B.C.D`.
    SixToFour,
    /// RFC 6052's well-known NAT64 prefix, the IPv4 address in the last 32 bits.
    Nat64,
    /// RFC 8215's local-use NAT64 prefix. Operators pick a /96 inside it; each /96 is read
    /// with the IPv4 address in its last 32 bits, the format RFC 6052 gives a /96.
    Nat64LocalUse,
}

impl Embedding {
    const ALL: [Embedding; 3] = [Self::SixToFour, Self::Nat64, Self::Nat64LocalUse];

    fn prefix(self) -> Ipv6Net {
        let (address, len) = match self {
            Self::SixToFour => (0x2002_u128 << 112, 16),
            Self::Nat64 => (0x0064_ff9b_u128 << 96, 96),
            Self::Nat64LocalUse => ((0x0064_ff9b_u128 << 96) | (1 << 80), 48),
        };
        Ipv6Net::new(address.into(), len).unwrap_or_default()
    }

    /// The bit at which the IPv4 address starts.
    fn ipv4_offset(self) -> u8 {
        match self {
            Self::SixToFour => 16,
            Self::Nat64 | Self::Nat64LocalUse => 96,
        }
    }

    /// The IPv4 network `net` covers through this embedding; `None` when it covers no
    /// embedded address. A network holding a whole embedding block covers `0.0.0.0/0`.
    fn embedded(self, net: &Ipv6Net) -> Option<Ipv4Net> {
        let prefix = self.prefix();
        if !prefix.contains(net) {
            return net.contains(&prefix).then(Ipv4Net::default);
        }
        let offset = self.ipv4_offset();
        let Some(len) = net.prefix_len().checked_sub(offset).filter(|len| *len > 0) else {
            return Some(Ipv4Net::default());
        };
        let bits = u128::from(net.addr()) >> (128 - u32::from(offset) - 32);
        Ipv4Net::new(Ipv4Addr::from(bits as u32), len.min(32))
            .ok()
            .map(|net| net.trunc())
    }
}

impl fmt::Display for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::SixToFour => "6to4",
            Self::Nat64 => "NAT64",
            Self::Nat64LocalUse => "local-use NAT64",
        };
        write!(f, "{name} ({})", self.prefix())
    }
}

/// Why a network was not blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Overlaps a protected range.
    Protected(Protected),
    /// An IPv6 network carrying a protected IPv4 network.
    Embeds {
        embedding: Embedding,
        ipv4: Ipv4Net,
        protected: Protected,
    },
    /// The collector read the address from a forwarding header that nothing vouches for.
    Claimed,
    /// Wider than the minimum prefix, without `--force`.
    TooWide { min_prefix: u8, flag: &'static str },
}

impl RefusalReason {
    /// The kind of refusal, for the run's summary.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Protected(_) | Self::Embeds { .. } => "protected",
            Self::Claimed => "claimed",
            Self::TooWide { .. } => "too wide",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protected(protected) => write!(f, "overlaps {protected}"),
            Self::Embeds {
                embedding,
                ipv4,
                protected,
            } => write!(
                f,
                "holds {ipv4} through its {embedding} embedding, which overlaps {protected}"
            ),
            Self::Claimed => f.write_str(
                "claimed: the collector read this address from X-Forwarded-For or X-Real-IP \
                 with no trusted proxy vouching for it, so whoever sent the requests chose it \
                 and may have named someone else to get them blocked; configure the \
                 collector's trusted proxies or hops, or pass --trust-spoofable-headers to \
                 block claimed addresses anyway",
            ),
            Self::TooWide { min_prefix, flag } => write!(
                f,
                "wider than /{min_prefix} ({flag}): a network this large holds many bystanders; \
                 pass --force to block it anyway"
            ),
        }
    }
}

/// Built-in ranges no blocklist may touch.
fn special_ranges() -> impl Iterator<Item = (IpNet, Protected)> {
    [
        ("127.0.0.0/8", Some(Protected::Loopback)),
        ("::1/128", Some(Protected::Loopback)),
        ("169.254.0.0/16", Some(Protected::LinkLocal)),
        ("fe80::/10", Some(Protected::LinkLocal)),
        // 0.0.0.0/8 is "this network" (RFC 1122): never a real client.
        ("0.0.0.0/8", Some(Protected::Unspecified)),
        ("::/128", Some(Protected::Unspecified)),
        ("224.0.0.0/4", Some(Protected::Multicast)),
        ("ff00::/8", Some(Protected::Multicast)),
        ("255.255.255.255/32", Some(Protected::Broadcast)),
        ("10.0.0.0/8", None),
        ("172.16.0.0/12", None),
        ("192.168.0.0/16", None),
        ("100.64.0.0/10", Some(Protected::SharedAddressSpace)),
        ("fc00::/7", Some(Protected::UniqueLocal)),
    ]
    .into_iter()
    .filter_map(|(text, protected)| {
        let net = text.parse::<IpNet>().ok()?;
        Some((net, protected.unwrap_or(Protected::Private(net))))
    })
}

impl SafetyRules {
    /// `Err` names the first rule `net` breaks; `net` must be normalised.
    pub fn check(&self, net: &IpNet) -> Result<(), RefusalReason> {
        if let Some(protected) = self.protected(net) {
            return Err(RefusalReason::Protected(protected));
        }
        if let IpNet::V6(v6) = net {
            for embedding in Embedding::ALL {
                let Some(ipv4) = embedding.embedded(v6) else {
                    continue;
                };
                if let Some(protected) = self.protected(&IpNet::V4(ipv4)) {
                    return Err(RefusalReason::Embeds {
                        embedding,
                        ipv4,
                        protected,
                    });
                }
            }
        }
        Ok(())
    }

    fn protected(&self, net: &IpNet) -> Option<Protected> {
        if let Some((_, protected)) = special_ranges().find(|(range, _)| overlaps(range, net)) {
            return Some(protected);
        }
        if let Some(proxy) = self.trusted_proxies.iter().find(|p| overlaps(p, net)) {
            return Some(Protected::TrustedProxy(*proxy));
        }
        if let Some(range) = self.cluster_ranges.iter().find(|r| overlaps(r, net)) {
            return Some(Protected::ClusterRange(*range));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::parse_net;

    fn net(text: &str) -> IpNet {
        parse_net(text).unwrap()
    }

    fn protected(text: &str) -> Result<(), RefusalReason> {
        SafetyRules::default().check(&net(text))
    }

    #[test]
    fn special_ranges_are_refused_in_both_families() {
        let rules = SafetyRules::default();
        let cases = [
            ("127.0.0.1", Protected::Loopback),
            ("::1", Protected::Loopback),
            ("::ffff:127.0.0.1", Protected::Loopback),
            ("169.254.169.254", Protected::LinkLocal),
            ("fe80::1", Protected::LinkLocal),
            ("0.0.0.0", Protected::Unspecified),
            ("::", Protected::Unspecified),
            ("239.1.2.3", Protected::Multicast),
            ("ff02::1", Protected::Multicast),
            ("255.255.255.255", Protected::Broadcast),
            ("10.1.2.3", Protected::Private(net("10.0.0.0/8"))),
            ("172.31.255.255", Protected::Private(net("172.16.0.0/12"))),
            ("192.168.1.0/24", Protected::Private(net("192.168.0.0/16"))),
            (
                "::ffff:192.168.1.1",
                Protected::Private(net("192.168.0.0/16")),
            ),
            ("100.64.0.1", Protected::SharedAddressSpace),
            ("100.127.255.0/24", Protected::SharedAddressSpace),
            ("fd00::1", Protected::UniqueLocal),
            ("fc00::/8", Protected::UniqueLocal),
        ];
        for (text, expected) in cases {
            assert_eq!(
                rules.check(&net(text)),
                Err(RefusalReason::Protected(expected)),
                "{text}"
            );
        }
        for public in [
            "203.0.113.7",
            "2001:db8::7",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "100.63.255.255",
            "11.0.0.0/8",
            "2001:db8::/32",
        ] {
            assert_eq!(rules.check(&net(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn a_supernet_of_a_protected_range_is_refused() {
        assert_eq!(
            protected("0.0.0.0/0"),
            Err(RefusalReason::Protected(Protected::Loopback))
        );
        assert_eq!(
            protected("::/0"),
            Err(RefusalReason::Protected(Protected::Loopback))
        );
        assert_eq!(
            protected("8.0.0.0/5"),
            Err(RefusalReason::Protected(Protected::Private(net(
                "10.0.0.0/8"
            ))))
        );
        assert_eq!(
            protected("100.0.0.0/8"),
            Err(RefusalReason::Protected(Protected::SharedAddressSpace))
        );
    }

    #[test]
    fn nat64_and_6to4_embeddings_of_protected_ranges_are_refused() {
        let embeds = |embedding, ipv4: &str, protected| {
            Err(RefusalReason::Embeds {
                embedding,
                ipv4: ipv4.parse().unwrap(),
                protected,
            })
        };
        let ten = Protected::Private(net("10.0.0.0/8"));
        let cases = [
            // 6to4: the IPv4 address in bits 16-47.
            (
                "2002:a00:1::/48",
                embeds(Embedding::SixToFour, "10.0.0.1/32", ten),
            ),
            (
                "2002:a00:1:2::1",
                embeds(Embedding::SixToFour, "10.0.0.1/32", ten),
            ),
            (
                "2002:a00::/24",
                embeds(Embedding::SixToFour, "10.0.0.0/8", ten),
            ),
            (
                "2002:7f00:1::/48",
                embeds(Embedding::SixToFour, "127.0.0.1/32", Protected::Loopback),
            ),
            (
                "2002:6440::/26",
                embeds(
                    Embedding::SixToFour,
                    "100.64.0.0/10",
                    Protected::SharedAddressSpace,
                ),
            ),
            // A network holding every 6to4 site holds the protected ones too.
            (
                "2002::/16",
                embeds(Embedding::SixToFour, "0.0.0.0/0", Protected::Loopback),
            ),
            (
                "2000::/3",
                embeds(Embedding::SixToFour, "0.0.0.0/0", Protected::Loopback),
            ),
            // A 6to4 network wider than one IPv4 range still holds it.
            (
                "2002:800::/21",
                embeds(Embedding::SixToFour, "8.0.0.0/5", ten),
            ),
            // NAT64, the IPv4 address in the last 32 bits.
            (
                "64:ff9b::a00:1",
                embeds(Embedding::Nat64, "10.0.0.1/32", ten),
            ),
            (
                "64:ff9b::c0a8:0/112",
                embeds(
                    Embedding::Nat64,
                    "192.168.0.0/16",
                    Protected::Private(net("192.168.0.0/16")),
                ),
            ),
            (
                "64:ff9b::/96",
                embeds(Embedding::Nat64, "0.0.0.0/0", Protected::Loopback),
            ),
            (
                "64:ff9b:1:2::a9fe:a9fe",
                embeds(
                    Embedding::Nat64LocalUse,
                    "169.254.169.254/32",
                    Protected::LinkLocal,
                ),
            ),
            (
                "64:ff9b:1:2::/64",
                embeds(Embedding::Nat64LocalUse, "0.0.0.0/0", Protected::Loopback),
            ),
            (
                "64:ff9b::/32",
                embeds(Embedding::Nat64, "0.0.0.0/0", Protected::Loopback),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(protected(text), expected, "{text}");
        }
        // The same prefixes carrying public addresses are blocked like any client.
        for public in [
            "2002:cb00:7107::/48",
            "2002:cb00:7100::/40",
            "64:ff9b::cb00:7107",
            "64:ff9b::cb00:7100/120",
            "64:ff9b:1:2::cb00:7107",
        ] {
            assert_eq!(protected(public), Ok(()), "{public}");
        }
    }

    #[test]
    fn configured_ranges_are_refused_with_their_name_and_through_embeddings() {
        let rules = SafetyRules {
            trusted_proxies: vec![net("192.0.2.10/32")],
            cluster_ranges: vec![net("198.51.100.0/24"), net("2001:db8:1::/48")],
        };
        assert_eq!(
            rules.check(&net("192.0.2.0/24")),
            Err(RefusalReason::Protected(Protected::TrustedProxy(net(
                "192.0.2.10/32"
            ))))
        );
        assert_eq!(
            rules.check(&net("198.51.0.0/16")),
            Err(RefusalReason::Protected(Protected::ClusterRange(net(
                "198.51.100.0/24"
            ))))
        );
        assert_eq!(
            rules.check(&net("2001:db8:1:5::1")),
            Err(RefusalReason::Protected(Protected::ClusterRange(net(
                "2001:db8:1::/48"
            ))))
        );
        assert_eq!(
            rules.check(&net("64:ff9b::c000:20a")),
            Err(RefusalReason::Embeds {
                embedding: Embedding::Nat64,
                ipv4: "192.0.2.10/32".parse().unwrap(),
                protected: Protected::TrustedProxy(net("192.0.2.10/32")),
            })
        );
        assert_eq!(rules.check(&net("198.51.101.1")), Ok(()));
    }

    #[test]
    fn entries_wider_than_the_minimum_prefix_are_too_wide() {
        let minimum = MinPrefix::default();
        assert_eq!(minimum.check(&net("203.0.0.0/16")), Ok(()));
        assert_eq!(minimum.check(&net("2001:db8::/32")), Ok(()));
        assert_eq!(
            minimum.check(&net("203.0.0.0/15")),
            Err(RefusalReason::TooWide {
                min_prefix: 16,
                flag: "--min-prefix-v4"
            })
        );
        let error = minimum.check(&net("2001:db8::/31")).unwrap_err();
        assert!(
            error.to_string().contains("/32 (--min-prefix-v6)"),
            "{error}"
        );
        assert!(error.to_string().contains("--force"), "{error}");
        let strict = MinPrefix { v4: 32, v6: 128 };
        assert!(strict.check(&net("203.0.113.0/31")).is_err());
        assert_eq!(strict.check(&net("::ffff:203.0.113.7")), Ok(()));
    }

    #[test]
    fn address_units_count_ipv4_addresses_and_ipv6_sites_once() {
        let units = |texts: &[&str]| {
            let nets: Vec<IpNet> = texts.iter().map(|text| net(text)).collect();
            address_units(&nets)
        };
        assert_eq!(units(&[]), 0);
        assert_eq!(units(&["203.0.113.7", "203.0.113.8"]), 2);
        // Inside another entry: counted once.
        assert_eq!(units(&["203.0.113.7", "203.0.113.0/24"]), 256);
        assert_eq!(units(&["203.0.0.0/16"]), 65_536);
        assert_eq!(units(&["2001:db8::/32"]), 65_536);
        assert_eq!(units(&["2001:db8::/48", "2001:db8::1"]), 1);
        // Narrower than a /48, rounded up together.
        assert_eq!(units(&["2001:db8::1", "2001:db8:5::/64"]), 1);
        assert_eq!(
            units(&["2001:db8::/49", "2001:db8:0:8000::/49", "2001:db8:1::1"]),
            2
        );
        assert_eq!(units(&["0.0.0.0/0", "::/0"]), (1 << 32) + (1 << 48));
    }

    #[test]
    fn refusals_say_what_was_hit() {
        assert_eq!(
            protected("2002:a00:1::/48").unwrap_err().to_string(),
            "holds 10.0.0.1/32 through its 6to4 (2002::/16) embedding, which overlaps the \
             private range 10.0.0.0/8 (RFC 1918)"
        );
        assert_eq!(
            protected("100.64.1.1").unwrap_err().to_string(),
            "overlaps the shared address space 100.64.0.0/10 (carrier-grade NAT, RFC 6598)"
        );
        assert_eq!(
            protected("fd12::/16").unwrap_err().to_string(),
            "overlaps the unique local range fc00::/7 (RFC 4193)"
        );
        assert!(protected("64:ff9b:1::a00:1")
            .unwrap_err()
            .to_string()
            .contains("local-use NAT64 (64:ff9b:1::/48)"));
    }
}
