//! The vocabulary every part of the collector and the detector shares: a connection as the
//! ingress pod sees it, and an address attributed to a request with how far it can be believed.
//! Kept apart so that parsing, aggregation and detection depend on these words, not on each
//! other.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A connection as the ingress pod sees it; the key Felix matches reports to flows with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// The direct peer: a load balancer or the client itself.
    pub source_ip: IpAddr,
    pub source_port: u16,
    /// The ingress pod.
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub protocol: Protocol,
}

/// The transport protocol of the connection, as Felix names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The template carries no protocol field, and nginx's HTTP traffic is TCP.
    #[default]
    Tcp,
    /// HTTP/3 (QUIC) listeners.
    Udp,
    /// Rare, but Felix knows it by name.
    Sctp,
}

impl Protocol {
    /// The protocol name Felix expects in `Protocol.name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Protocol> {
        if name.eq_ignore_ascii_case(b"tcp") {
            Some(Protocol::Tcp)
        } else if name.eq_ignore_ascii_case(b"udp") {
            Some(Protocol::Udp)
        } else if name.eq_ignore_ascii_case(b"sctp") {
            Some(Protocol::Sctp)
        } else {
            None
        }
    }
}

/// How far an attributed address can be believed, decided per request by the collector's
/// client IP policy. `X-Forwarded-For` and `X-Real-IP` are written by whoever sends the
/// request, so an address read from them proves nothing unless a proxy the operator trusts put
/// it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// No forwarding header was believed: the address is the connection's peer itself.
    Connection,
    /// Read from `X-Forwarded-For` (or `X-Real-IP`) by walking past configured trusted proxies
    /// or hops: each entry passed was written by a proxy the operator named.
    Trusted,
    /// Read from a header only because nothing is configured (the reference rule): whoever
    /// sent the request chose it, so it can name anyone.
    Claimed,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Connection => "connection",
            Provenance::Trusted => "trusted",
            Provenance::Claimed => "claimed",
        }
    }

    /// Whether the address was verified by the network or by a trusted proxy, rather than
    /// claimed by the sender.
    pub fn is_verified(self) -> bool {
        self != Provenance::Claimed
    }
}

/// The address a request is counted against by the detectors, and how far it can be believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributed {
    /// Canonical ([`crate::net::canonical_ip`]): an IPv4 client is IPv4 however it was written.
    pub ip: IpAddr,
    pub provenance: Provenance,
}

impl Attributed {
    pub fn new(ip: IpAddr, provenance: Provenance) -> Attributed {
        Attributed {
            ip: crate::net::canonical_ip(ip),
            provenance,
        }
    }
}
