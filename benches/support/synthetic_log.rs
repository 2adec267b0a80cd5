//! A reproducible ingress access log shaped like production traffic, shared by the pipeline
//! benchmark and the `gen_log` example (so `wc -l` can be timed on the very same bytes).
//!
//! Shape: lines are exactly the spec's template; about 200 connections (20 load-balancer peers ×
//! 10 source ports, two ingress ports); about 50,000 distinct client addresses (one in twenty
//! IPv6). The headers mix what real proxies send: a single X-Forwarded-For, a proxy chain, both
//! headers set, garbage before the client (`unknown, …`), a client with a port, and requests
//! with neither header (`-`).

use std::io::{self, Write};

pub const CONNECTION_PEERS: u32 = 20;
pub const PORTS_PER_PEER: u32 = 10;
pub const DISTINCT_CLIENTS: u32 = 50_000;

/// splitmix64: tiny, fast and reproducible, which is all a workload generator needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u32) -> u32 {
        (((self.next() >> 32) * u64::from(bound)) >> 32) as u32
    }
}

fn client_address(id: u32) -> String {
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
        let peer = rng.below(CONNECTION_PEERS);
        let source_port = 40_000 + rng.below(PORTS_PER_PEER);
        let destination_port = if rng.below(4) == 0 { 80 } else { 443 };
        let client = client_address(rng.below(DISTINCT_CLIENTS));
        let proxy = format!("10.96.{}.{}", rng.below(4), 1 + rng.below(250));
        let (xff, xri) = match rng.below(20) {
            0..=10 => (client, "-".to_owned()),
            11..=13 => (format!("{client}, {proxy}"), "-".to_owned()),
            14..=15 => ("-".to_owned(), "-".to_owned()),
            16..=17 => (proxy, client),
            18 => (format!("unknown, {client}"), "-".to_owned()),
            _ if client.contains(':') => (
                format!("[{client}]:{}", 1024 + rng.below(60_000)),
                "-".to_owned(),
            ),
            _ => (
                format!("{client}:{}", 1024 + rng.below(60_000)),
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
