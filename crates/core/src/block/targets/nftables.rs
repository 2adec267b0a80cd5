//! nftables: one interval set per address family with a timeout per element, and a chain that
//! drops their sources, for the firewall or the nodes in front of the cluster — the one place
//! that can block an address known only from X-Forwarded-For when the firewall sees it as the
//! source.
//!
//! The text is loaded with `nft -f`, which applies it as one transaction: the sets and chain
//! are declared (a no-op when they exist), flushed and refilled, so loading the same file twice
//! leaves one copy of each rule and element. Element timeouts count from `now`; the exact
//! expiries and the full list live in header comments, which the next run reads back through
//! `--existing`.

use super::{list_of, ObjectRef, Slot, SlotKind, StoredList, TargetError, TargetSettings};
use crate::block::merge::{Blocklist, Lifetime, EXPIRIES_ANNOTATION};
use ipnet::IpNet;
use jiff::Timestamp;
use std::fmt::Write as _;

/// Header line with every entry, as JSON.
const NETS_HEADER: &str = "# ingress-tap.io/nets: ";

pub fn slot(settings: &TargetSettings) -> Slot {
    Slot {
        object: ObjectRef::cluster("nftables", "table", &settings.nft_table),
        kind: SlotKind::NftablesSets,
    }
}

fn expiries_header() -> String {
    format!("# {EXPIRIES_ANNOTATION}: ")
}

/// Whether `text` is nftables output of this tool rather than YAML.
pub fn looks_like_nftables(text: &str) -> bool {
    text.lines()
        .any(|line| line.starts_with(NETS_HEADER) || line.starts_with("table inet "))
}

/// nft identifiers are letters, digits and underscores.
fn identifier(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `3h59m` style, as nft writes and reads timeouts.
fn nft_duration(mut seconds: i64) -> String {
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size {
            let _ = write!(text, "{}{unit}", seconds / size);
            seconds %= size;
        }
    }
    if seconds > 0 || text.is_empty() {
        let _ = write!(text, "{seconds}s");
    }
    text
}

/// Elements per `add element` statement: keeps lines short however long the list.
const ELEMENTS_PER_STATEMENT: usize = 1024;

/// One entry of the list in the tree of entries that hold each other.
struct Node {
    net: IpNet,
    /// The longest a live entry holding this network (itself included) blocks it.
    effective: Option<Lifetime>,
    children: Vec<usize>,
}

/// The set's elements: no two overlap (an interval set refuses overlapping elements with
/// "conflicting intervals"), and every address is blocked exactly as long as the longest
/// live entry holding it. Entries nest when someone else's entry (never folded away) lies
/// inside or around one of ours; then the wider entry is split around the inner one wherever
/// the inner one outlives it, and dropped inside it otherwise.
pub fn elements(list: &Blocklist, now: Timestamp) -> Vec<(IpNet, Lifetime)> {
    let live = |lifetime: Lifetime| match lifetime {
        Lifetime::Until(expiry) if expiry <= now => None,
        lifetime => Some(lifetime),
    };
    let mut nodes: Vec<Node> = Vec::with_capacity(list.len());
    let mut roots = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    // Canonical order puts a network before every network inside it.
    for (net, lifetime) in list.entries() {
        while stack
            .last()
            .is_some_and(|top| !nodes[*top].net.contains(net))
        {
            stack.pop();
        }
        let parent = stack.last().copied();
        let inherited = parent.and_then(|parent| nodes[parent].effective);
        let index = nodes.len();
        nodes.push(Node {
            net: *net,
            effective: live(*lifetime).max(inherited),
            children: Vec::new(),
        });
        match parent {
            Some(parent) => nodes[parent].children.push(index),
            None => roots.push(index),
        }
        stack.push(index);
    }
    let mut out = Vec::with_capacity(nodes.len());
    let mut pending = roots;
    while let Some(index) = pending.pop() {
        let node = &nodes[index];
        // Descendants blocked longer than this node are holes in it; the others are inside
        // it for no longer, so they disappear into it.
        let mut holes = Vec::new();
        let mut look = node.children.clone();
        while let Some(child) = look.pop() {
            if nodes[child].effective == node.effective {
                look.extend(nodes[child].children.iter().copied());
            } else {
                holes.push(child);
            }
        }
        if let Some(lifetime) = node.effective {
            let mut hole_nets: Vec<IpNet> = holes.iter().map(|hole| nodes[*hole].net).collect();
            hole_nets.sort();
            for piece in subtract(node.net, &hole_nets) {
                out.push((piece, lifetime));
            }
        }
        pending.extend(holes);
    }
    out.sort();
    out
}

/// `range` without `holes` (disjoint networks inside it, sorted), as few networks as halving
/// gives.
fn subtract(range: IpNet, holes: &[IpNet]) -> Vec<IpNet> {
    if holes.is_empty() {
        return vec![range];
    }
    if holes.iter().any(|hole| hole.contains(&range)) {
        return Vec::new();
    }
    let Ok(halves) = range.subnets(range.prefix_len() + 1) else {
        return Vec::new();
    };
    let mut pieces = Vec::new();
    for half in halves {
        let inside: Vec<IpNet> = holes
            .iter()
            .filter(|hole| half.contains(*hole) || hole.contains(&half))
            .copied()
            .collect();
        pieces.extend(subtract(half, &inside));
    }
    pieces
}

/// Renders the table for the list, with timeouts counted from `now`. Entries already expired
/// are left out of the sets (the kernel would have dropped them) but stay in the header until
/// `--prune`. The header keeps the list as merged; the sets hold [`elements`].
pub fn render_at(
    settings: &TargetSettings,
    lists: &[(Slot, Blocklist)],
    now: Timestamp,
) -> Result<String, TargetError> {
    let list = list_of(lists, SlotKind::NftablesSets);
    let table = identifier(&settings.nft_table);
    let name = identifier(&settings.name);
    let (v4, v6) = (format!("{name}_v4"), format!("{name}_v6"));
    let chain = format!("{name}_prerouting");
    let mut elements_v4 = Vec::new();
    let mut elements_v6 = Vec::new();
    for (net, lifetime) in elements(&list, now) {
        let element = match lifetime {
            Lifetime::Permanent => net.to_string(),
            Lifetime::Until(expiry) => {
                let remaining = expiry.as_second().saturating_sub(now.as_second());
                if remaining <= 0 {
                    continue;
                }
                format!("{net} timeout {}", nft_duration(remaining))
            }
        };
        match net {
            IpNet::V4(_) => elements_v4.push(element),
            IpNet::V6(_) => elements_v6.push(element),
        }
    }
    let nets = serde_json::to_string(&list.cidrs())
        .map_err(|error| TargetError::Existing(error.to_string()))?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "#!/usr/sbin/nft -f\n# ingress-tap blocklist {:?}: load with `nft -f FILE`; reloading replaces the \
         sets' contents in one transaction.",
        settings.name
    );
    let _ = writeln!(text, "{NETS_HEADER}{nets}");
    if let Some(expiries) = list.expiries_annotation()? {
        let _ = writeln!(text, "{}{expiries}", expiries_header());
    }
    let _ = write!(
        text,
        "table inet {table} {{\n\
         \tset {v4} {{\n\t\ttype ipv4_addr\n\t\tflags interval, timeout\n\t}}\n\
         \tset {v6} {{\n\t\ttype ipv6_addr\n\t\tflags interval, timeout\n\t}}\n\
         \tchain {chain} {{\n\t\t# Before connection tracking: dropped packets cost nothing more.\n\
         \t\ttype filter hook prerouting priority -300; policy accept;\n\t}}\n\
         }}\n\
         flush set inet {table} {v4}\n\
         flush set inet {table} {v6}\n\
         flush chain inet {table} {chain}\n"
    );
    for (set, elements) in [(&v4, &elements_v4), (&v6, &elements_v6)] {
        for chunk in elements.chunks(ELEMENTS_PER_STATEMENT) {
            let _ = writeln!(
                text,
                "add element inet {table} {set} {{ {} }}",
                chunk.join(", ")
            );
        }
    }
    let _ = writeln!(text, "add rule inet {table} {chain} ip saddr @{v4} drop");
    let _ = writeln!(text, "add rule inet {table} {chain} ip6 saddr @{v6} drop");
    Ok(text)
}

/// Reads the list back from the header comments of earlier output.
pub fn read_stored(text: &str) -> Result<StoredList, TargetError> {
    let header = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
    };
    let nets = match header(NETS_HEADER) {
        Some(json) => serde_json::from_str::<Vec<String>>(json).map_err(|error| {
            TargetError::Existing(format!("the {NETS_HEADER:?} header: {error}"))
        })?,
        None => Vec::new(),
    };
    Ok(StoredList {
        nets,
        expiries: header(&expiries_header()).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_nft_units() {
        assert_eq!(nft_duration(4 * 3600), "4h");
        assert_eq!(nft_duration(90_061), "1d1h1m1s");
        assert_eq!(nft_duration(59), "59s");
        assert_eq!(nft_duration(0), "0s");
    }

    fn net(text: &str) -> IpNet {
        crate::net::parse_net(text).unwrap()
    }

    #[test]
    fn nested_entries_become_disjoint_elements_blocked_as_long_as_the_longest() {
        let now: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let until = |text: &str| Lifetime::Until(text.parse().unwrap());
        let nets = vec![
            "203.0.113.0/24".to_owned(),
            "203.0.113.7/32".to_owned(),
            "198.51.100.0/24".to_owned(),
            "198.51.100.9/32".to_owned(),
            "192.0.2.0/24".to_owned(),
            "192.0.2.128/25".to_owned(),
        ];
        // 203.0.113.7 and 198.51.100.0/24 are someone else's (permanent); 192.0.2.0/24 has
        // expired while its /25 is someone else's.
        let expiries = r#"{"2026-01-01T14:00:00Z":["203.0.113.0/24","198.51.100.9/32"],"2026-01-01T09:00:00Z":["192.0.2.0/24"]}"#;
        let list = Blocklist::from_stored(&nets, Some(expiries)).unwrap();
        let got = elements(&list, now);
        let mut expected: Vec<(IpNet, Lifetime)> = vec![
            (net("192.0.2.128/25"), Lifetime::Permanent),
            (net("198.51.100.0/24"), Lifetime::Permanent),
            (net("203.0.113.7/32"), Lifetime::Permanent),
        ];
        for piece in [
            "203.0.113.0/30",
            "203.0.113.4/31",
            "203.0.113.6/32",
            "203.0.113.8/29",
            "203.0.113.16/28",
            "203.0.113.32/27",
            "203.0.113.64/26",
            "203.0.113.128/25",
        ] {
            expected.push((net(piece), until("2026-01-01T14:00:00Z")));
        }
        expected.sort();
        assert_eq!(got, expected);
        for (i, (a, _)) in got.iter().enumerate() {
            for (b, _) in &got[i + 1..] {
                assert!(!crate::net::overlaps(a, b), "{a} overlaps {b}");
            }
        }
    }

    #[test]
    fn identifiers_are_sanitised() {
        assert_eq!(identifier("edge-list.1"), "edge_list_1");
    }
}
