//! A reproducible ingress access log shaped like production traffic, shared by the pipeline
//! benchmark and the `gen_log` example (so `wc -l` can be timed on the very same bytes); the
//! collector end-to-end benchmark uses its client addresses.
//!
//! Shape: lines are exactly the spec's template; about 200 connections (20 load-balancer peers ×
//! 10 source ports, two ingress ports); about 50,000 distinct client addresses (one in twenty
//! IPv6). The headers mix what real proxies send: a single X-Forwarded-For, a proxy chain, both
//! headers set, garbage before the client (`unknown, …`), a client with a port, and requests
//! with neither header (`-`).

#![allow(dead_code)]

#[path = "splitmix.rs"]
pub mod splitmix;

use splitmix::SplitMix64;
use std::io::{self, Write};

pub const CONNECTION_PEERS: u32 = 20;
pub const PORTS_PER_PEER: u32 = 10;
pub const DISTINCT_CLIENTS: u32 = 50_000;

/// A number below `bound` drawn from `rng`.
fn below(rng: &mut SplitMix64, bound: u32) -> u32 {
    rng.below(u64::from(bound)) as u32
}

/// Client `id` as an address: one in twenty IPv6, the rest IPv4 spread over public-looking
/// ranges.
pub fn client_address(id: u32) -> String {
    if id % 20 == 0 {
        format!("2001:db8:{:x}::{:x}", id >> 16, id & 0xffff)
    } else {
        format!(
            "{}.{}.{}.{}",
            100 + (id >> 16) % 100,
            (id >> 8) & 0xff,
            id & 0xff,
            1 + id % 250
        )
    }
}

/// Writes `lines` log lines generated from `seed`.
pub fn write_log(out: &mut impl Write, lines: u64, seed: u64) -> io::Result<()> {
    let mut rng = SplitMix64(seed);
    for _ in 0..lines {
        let peer = below(&mut rng, CONNECTION_PEERS);
        let source_port = 40_000 + below(&mut rng, PORTS_PER_PEER);
        let destination_port = if below(&mut rng, 4) == 0 { 80 } else { 443 };
        let client = client_address(below(&mut rng, DISTINCT_CLIENTS));
        let proxy = format!("10.96.{}.{}", below(&mut rng, 4), 1 + below(&mut rng, 250));
        let (xff, xri) = match below(&mut rng, 20) {
            0..=10 => (client, "-".to_owned()),
            11..=13 => (format!("{client}, {proxy}"), "-".to_owned()),
            14..=15 => ("-".to_owned(), "-".to_owned()),
            16..=17 => (proxy, client),
            18 => (format!("unknown, {client}"), "-".to_owned()),
            _ if client.contains(':') => (
                format!("[{client}]:{}", 1024 + below(&mut rng, 60_000)),
                "-".to_owned(),
            ),
            _ => (
                format!("{client}:{}", 1024 + below(&mut rng, 60_000)),
                "-".to_owned(),
            ),
        };
        writeln!(
            out,
            r#"tigera_secure_ee_ingress: {{"source_port": {source_port}, "destination_ip": "10.244.1.17", "destination_port": {destination_port}, "source_ip": "10.0.{peer}.{}", "x-forwarded-for": "{xff}", "x-real-ip": "{xri}"}}"#,
            10 + peer
        )?;
    }
    Ok(())
}
