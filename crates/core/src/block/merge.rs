//! The blocklist held by one enforcement object, merged with new entries instead of replaced.
//!
//! Replacing would drop what an earlier run (or an operator) put there; so every entry keeps
//! its own lifetime, recorded on the object itself in the [`EXPIRIES_ANNOTATION`], and a run
//! only adds entries, extends lifetimes, removes what it is told to remove and (with
//! `--prune`) what has expired. Entries found in the object's list but not in the annotation
//! were put there by someone else: they are kept as they are and never expire.
//!
//! Everything here is deterministic: entries are kept sorted, lifetimes are whole minutes, and
//! nothing but the expiries themselves depends on the clock, so the same input over the same
//! object gives byte-identical output.

use crate::net::parse_net;
use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, HashMap};

/// Annotation holding the expiry of every entry this tool manages, as JSON grouped by expiry
/// (`{"2026-11-26T00:00:00Z":["203.0.113.0/24",...]}`): grouping writes each expiry once
/// instead of once per entry. Whether the object still fits the API server's limits is
/// checked on the whole object (targets::limits).
pub const EXPIRIES_ANNOTATION: &str = "ingress-tap.io/expiries";

/// How long an entry stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lifetime {
    Until(Timestamp),
    /// Not managed by this tool (found on the object without a recorded expiry).
    Permanent,
}

impl Lifetime {
    fn is_expired(&self, now: Timestamp) -> bool {
        matches!(self, Lifetime::Until(expiry) if *expiry <= now)
    }
}

/// What happened to one entry in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Extended {
        from: Lifetime,
    },
    /// Already there with this lifetime or a longer one.
    Unchanged,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    #[error("the existing object lists {0:?}, which is not an IP address or CIDR; fix or remove it by hand")]
    StoredEntry(String),
    #[error("the existing object's {EXPIRIES_ANNOTATION} annotation is not valid: {}", crate::block::escape(.0))]
    StoredExpiries(String),
}

/// One object's entries, keyed by normalised network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    entries: BTreeMap<IpNet, Lifetime>,
}

/// `expiry` rounded up to the whole minute: the clock's seconds must not make two runs a
/// minute apart disagree about an entry's lifetime.
pub fn expiry_after(start: Timestamp, ttl: SignedDuration) -> Timestamp {
    let seconds = start.as_second().saturating_add(ttl.as_secs());
    let rounded = seconds
        .checked_add(59)
        .map(|s| s.div_euclid(60).saturating_mul(60))
        .unwrap_or(seconds);
    Timestamp::from_second(rounded).unwrap_or(Timestamp::MAX)
}

impl Blocklist {
    /// Reads the list as an object stores it: its entries and its expiries annotation.
    pub fn from_stored(nets: &[String], expiries: Option<&str>) -> Result<Self, MergeError> {
        let mut recorded: HashMap<IpNet, Timestamp> = HashMap::new();
        if let Some(text) = expiries.filter(|text| !text.trim().is_empty()) {
            let groups: BTreeMap<String, Vec<String>> = serde_json::from_str(text)
                .map_err(|error| MergeError::StoredExpiries(error.to_string()))?;
            for (expiry, group) in groups {
                let expiry: Timestamp = expiry
                    .parse()
                    .map_err(|error| MergeError::StoredExpiries(format!("{expiry:?}: {error}")))?;
                for text in group {
                    let net = parse_net(&text).ok_or_else(|| {
                        MergeError::StoredExpiries(format!("{text:?} is not a CIDR"))
                    })?;
                    recorded.insert(net, expiry);
                }
            }
        }
        let mut list = Blocklist::default();
        for text in nets {
            let net =
                parse_net(text.trim()).ok_or_else(|| MergeError::StoredEntry(text.clone()))?;
            // An expiry recorded for an entry that is no longer listed is ignored: whoever
            // removed the entry by hand meant it.
            let lifetime = recorded
                .get(&net)
                .map_or(Lifetime::Permanent, |expiry| Lifetime::Until(*expiry));
            list.entries
                .entry(net)
                .and_modify(|existing| *existing = (*existing).max(lifetime))
                .or_insert(lifetime);
        }
        Ok(list)
    }

    /// Adds `net` or extends it to `lifetime`; a shorter lifetime never shortens an entry.
    pub fn add(&mut self, net: IpNet, lifetime: Lifetime) -> Change {
        match self.entries.get_mut(&net) {
            None => {
                self.entries.insert(net, lifetime);
                Change::Added
            }
            Some(existing) if *existing < lifetime => {
                let from = *existing;
                *existing = lifetime;
                Change::Extended { from }
            }
            Some(_) => Change::Unchanged,
        }
    }

    /// Removes every entry inside `net` (an unblock of a /24 also unblocks its /32s).
    pub fn remove_within(&mut self, net: &IpNet) -> Vec<IpNet> {
        let removed: Vec<IpNet> = self
            .entries
            .keys()
            .filter(|entry| net.contains(*entry))
            .copied()
            .collect();
        for entry in &removed {
            self.entries.remove(entry);
        }
        removed
    }

    /// Removes entries whose expiry is at or before `now`.
    pub fn prune(&mut self, now: Timestamp) -> Vec<IpNet> {
        let expired: Vec<IpNet> = self
            .entries
            .iter()
            .filter(|(_, lifetime)| lifetime.is_expired(now))
            .map(|(net, _)| *net)
            .collect();
        for net in &expired {
            self.entries.remove(net);
        }
        expired
    }

    /// Entries already expired at `now` (kept until `--prune`).
    pub fn expired(&self, now: Timestamp) -> Vec<IpNet> {
        self.entries
            .iter()
            .filter(|(_, lifetime)| lifetime.is_expired(now))
            .map(|(net, _)| *net)
            .collect()
    }

    /// Folds every managed entry that a wider entry covers into that wider one, which takes
    /// the later lifetime of the two: the covered addresses stay blocked at least as long as
    /// before, and the list has no overlaps (nftables interval sets reject them). Entries
    /// nobody manages are never folded away. Returns `(covered, cover)` pairs.
    pub fn collapse(&mut self) -> Vec<(IpNet, IpNet)> {
        let mut by_width: Vec<(IpNet, Lifetime)> =
            self.entries.iter().map(|(net, l)| (*net, *l)).collect();
        by_width.sort_by_key(|(net, _)| (net.prefix_len(), *net));
        let mut kept: HashMap<IpNet, Lifetime> = HashMap::with_capacity(by_width.len());
        let mut folded = Vec::new();
        for (net, lifetime) in by_width {
            // Walking the supernets finds the narrowest kept cover in prefix-length lookups;
            // managed covers never nest (a nested one would have been folded already).
            let cover = (lifetime != Lifetime::Permanent)
                .then(|| supernets(net).find(|candidate| kept.contains_key(candidate)))
                .flatten();
            match cover.and_then(|cover| kept.get_mut(&cover).map(|l| (cover, l))) {
                Some((cover, cover_lifetime)) => {
                    *cover_lifetime = (*cover_lifetime).max(lifetime);
                    folded.push((net, cover));
                }
                None => {
                    kept.insert(net, lifetime);
                }
            }
        }
        self.entries = kept.into_iter().collect();
        folded
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in their canonical order (IPv4 first, then by address and prefix).
    pub fn entries(&self) -> impl Iterator<Item = (&IpNet, &Lifetime)> {
        self.entries.iter()
    }

    pub fn lifetime(&self, net: &IpNet) -> Option<Lifetime> {
        self.entries.get(net).copied()
    }

    /// The entries as CIDR strings, in canonical order.
    pub fn cidrs(&self) -> Vec<String> {
        self.entries.keys().map(IpNet::to_string).collect()
    }

    /// The annotation value recording managed entries' expiries; `None` when nothing here is
    /// managed.
    pub fn expiries_annotation(&self) -> Result<Option<String>, MergeError> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (net, lifetime) in &self.entries {
            if let Lifetime::Until(expiry) = lifetime {
                groups
                    .entry(expiry.to_string())
                    .or_default()
                    .push(net.to_string());
            }
        }
        if groups.is_empty() {
            return Ok(None);
        }
        let text = serde_json::to_string(&groups)
            .map_err(|error| MergeError::StoredExpiries(error.to_string()))?;
        Ok(Some(text))
    }

    /// Entries strictly wider than `net` that hold it, with their lifetimes: what still
    /// blocks `net` after every entry inside it is removed.
    pub fn strict_covers(&self, net: &IpNet) -> Vec<(IpNet, Lifetime)> {
        supernets(*net)
            .filter_map(|cover| self.entries.get(&cover).map(|lifetime| (cover, *lifetime)))
            .collect()
    }

    /// Replaces every entry strictly wider than `net` by the networks that cover the rest of
    /// it, each with the entry's lifetime, so that `net` alone stops being blocked. Returns
    /// `(cover, pieces)` per entry split.
    pub fn split_around(&mut self, net: &IpNet) -> Vec<(IpNet, usize)> {
        let mut split = Vec::new();
        for (cover, lifetime) in self.strict_covers(net) {
            self.entries.remove(&cover);
            let pieces = complement_within(&cover, net);
            for piece in &pieces {
                self.add(*piece, lifetime);
            }
            split.push((cover, pieces.len()));
        }
        split
    }
}

/// The networks covering `outer` except `inner` (which `outer` strictly holds): the sibling
/// of each supernet of `inner` up to `outer`, one per prefix length between them.
pub fn complement_within(outer: &IpNet, inner: &IpNet) -> Vec<IpNet> {
    let mut pieces = Vec::new();
    let mut current = *inner;
    while current.prefix_len() > outer.prefix_len() {
        let Some(parent) = current.supernet() else {
            break;
        };
        if let Ok(halves) = parent.subnets(current.prefix_len()) {
            pieces.extend(halves.filter(|half| *half != current));
        }
        current = parent;
    }
    pieces.sort();
    pieces
}

/// Strict supernets of `net`, narrowest first.
fn supernets(net: IpNet) -> impl Iterator<Item = IpNet> {
    std::iter::successors(net.supernet(), IpNet::supernet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(text: &str) -> IpNet {
        parse_net(text).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn until(text: &str) -> Lifetime {
        Lifetime::Until(at(text))
    }

    #[test]
    fn expiry_is_rounded_up_to_the_minute() {
        let start = at("2026-01-01T10:00:01Z");
        assert_eq!(
            expiry_after(start, SignedDuration::from_hours(4)),
            at("2026-01-01T14:01:00Z")
        );
        assert_eq!(
            expiry_after(at("2026-01-01T10:00:00Z"), SignedDuration::from_hours(4)),
            at("2026-01-01T14:00:00Z")
        );
    }

    #[test]
    fn stored_list_round_trips_and_unrecorded_entries_are_permanent() {
        let nets = vec!["203.0.113.0/24".to_owned(), "198.51.100.7/32".to_owned()];
        let expiries = r#"{"2026-01-01T14:00:00Z":["203.0.113.0/24","192.0.2.1/32"]}"#;
        let list = Blocklist::from_stored(&nets, Some(expiries)).unwrap();
        assert_eq!(
            list.lifetime(&net("203.0.113.0/24")),
            Some(until("2026-01-01T14:00:00Z"))
        );
        assert_eq!(
            list.lifetime(&net("198.51.100.7/32")),
            Some(Lifetime::Permanent)
        );
        // 192.0.2.1 was removed from the list by hand: its recorded expiry does not revive it.
        assert_eq!(list.lifetime(&net("192.0.2.1/32")), None);
        assert_eq!(
            list.expiries_annotation().unwrap().as_deref(),
            Some(r#"{"2026-01-01T14:00:00Z":["203.0.113.0/24"]}"#)
        );
    }

    #[test]
    fn add_extends_but_never_shortens() {
        let mut list = Blocklist::default();
        let n = net("203.0.113.7");
        assert_eq!(list.add(n, until("2026-01-01T14:00:00Z")), Change::Added);
        assert_eq!(
            list.add(n, until("2026-01-01T12:00:00Z")),
            Change::Unchanged
        );
        assert_eq!(
            list.add(n, until("2026-01-01T18:00:00Z")),
            Change::Extended {
                from: until("2026-01-01T14:00:00Z")
            }
        );
        assert_eq!(list.lifetime(&n), Some(until("2026-01-01T18:00:00Z")));
    }

    #[test]
    fn prune_drops_expired_managed_entries_only() {
        let mut list = Blocklist::default();
        list.add(net("203.0.113.1"), until("2026-01-01T10:00:00Z"));
        list.add(net("203.0.113.2"), until("2026-01-01T12:00:00Z"));
        list.add(net("203.0.113.3"), Lifetime::Permanent);
        let now = at("2026-01-01T11:00:00Z");
        assert_eq!(list.expired(now), vec![net("203.0.113.1")]);
        assert_eq!(list.prune(now), vec![net("203.0.113.1")]);
        assert_eq!(list.cidrs(), ["203.0.113.2/32", "203.0.113.3/32"]);
    }

    #[test]
    fn covered_entries_fold_into_the_cover_with_the_later_expiry() {
        let mut list = Blocklist::default();
        list.add(net("203.0.113.0/24"), until("2026-01-01T12:00:00Z"));
        list.add(net("203.0.113.7"), until("2026-01-01T16:00:00Z"));
        list.add(net("203.0.113.8/29"), until("2026-01-01T11:00:00Z"));
        list.add(net("198.51.100.0/24"), Lifetime::Permanent);
        list.add(net("198.51.100.1"), until("2026-01-01T11:00:00Z"));
        list.add(net("192.0.2.0/24"), until("2026-01-01T11:00:00Z"));
        list.add(net("192.0.2.1"), Lifetime::Permanent);
        let mut folded = list.collapse();
        folded.sort();
        assert_eq!(
            folded,
            vec![
                (net("198.51.100.1"), net("198.51.100.0/24")),
                (net("203.0.113.7"), net("203.0.113.0/24")),
                (net("203.0.113.8/29"), net("203.0.113.0/24")),
            ]
        );
        assert_eq!(
            list.lifetime(&net("203.0.113.0/24")),
            Some(until("2026-01-01T16:00:00Z"))
        );
        // Someone else's entry is never folded away, even when covered.
        assert_eq!(list.lifetime(&net("192.0.2.1")), Some(Lifetime::Permanent));
        assert_eq!(list.len(), 4);
    }

    #[test]
    fn remove_within_takes_nested_entries() {
        let mut list = Blocklist::default();
        list.add(net("203.0.113.7"), Lifetime::Permanent);
        list.add(net("203.0.113.0/25"), Lifetime::Permanent);
        list.add(net("198.51.100.7"), Lifetime::Permanent);
        let removed = list.remove_within(&net("203.0.113.0/24"));
        assert_eq!(removed, vec![net("203.0.113.0/25"), net("203.0.113.7")]);
        assert_eq!(list.cidrs(), ["198.51.100.7/32"]);
    }

    #[test]
    fn split_removes_exactly_the_network_and_keeps_the_lifetime() {
        let mut list = Blocklist::default();
        list.add(net("203.0.113.0/24"), until("2026-01-01T14:00:00Z"));
        list.add(net("203.0.0.0/16"), Lifetime::Permanent);
        let removed = net("203.0.113.7");
        assert_eq!(
            list.strict_covers(&removed),
            vec![
                (net("203.0.113.0/24"), until("2026-01-01T14:00:00Z")),
                (net("203.0.0.0/16"), Lifetime::Permanent)
            ]
        );
        let split = list.split_around(&removed);
        assert_eq!(
            split,
            vec![(net("203.0.113.0/24"), 8), (net("203.0.0.0/16"), 16)]
        );
        assert!(list.strict_covers(&removed).is_empty());
        assert_eq!(list.lifetime(&removed), None);
        // Outside the removed address everything is blocked at least as long as before.
        assert_eq!(
            list.lifetime(&net("203.0.113.6")),
            Some(Lifetime::Permanent)
        );
        assert_eq!(
            complement_within(&net("2001:db8::/32"), &net("2001:db8::1")).len(),
            96
        );
    }

    #[test]
    fn corrupt_stored_state_is_an_error_not_a_reset() {
        let bad_entry = Blocklist::from_stored(&["nope".to_owned()], None).unwrap_err();
        assert_eq!(bad_entry, MergeError::StoredEntry("nope".to_owned()));
        let bad_annotation =
            Blocklist::from_stored(&["203.0.113.7".to_owned()], Some("{")).unwrap_err();
        assert!(matches!(bad_annotation, MergeError::StoredExpiries(_)));
    }

    fn arbitrary_entry() -> impl Strategy<Value = (IpNet, Lifetime)> {
        let v4 = (any::<[u8; 4]>(), 8u8..=32).prop_map(|(octets, prefix)| {
            // Few distinct high octets so that entries nest often.
            let addr = std::net::Ipv4Addr::new(203, 0, octets[2] % 4, octets[3]);
            IpNet::from(ipnet::Ipv4Net::new(addr, prefix.max(22)).unwrap()).trunc()
        });
        let lifetime = prop_oneof![
            (0i64..5).prop_map(|hours| Lifetime::Until(
                Timestamp::from_second(1_800_000_000 + hours * 3600).unwrap()
            )),
            Just(Lifetime::Permanent),
        ];
        (v4, lifetime)
    }

    proptest! {
        /// Collapsing is idempotent and re-merging its own output changes nothing: the
        /// property behind "the same input twice gives the same objects".
        #[test]
        fn collapse_is_a_fixpoint(entries in proptest::collection::vec(arbitrary_entry(), 0..40)) {
            let mut list = Blocklist::default();
            for (net, lifetime) in &entries {
                list.add(*net, *lifetime);
            }
            list.collapse();
            let once = list.clone();
            for (net, lifetime) in &entries {
                list.add(*net, *lifetime);
            }
            list.collapse();
            prop_assert_eq!(&list, &once);
            // Every input address is still blocked at least as long as asked.
            for (net, lifetime) in &entries {
                let covered = once.entries().any(|(kept, kept_lifetime)| {
                    kept.contains(net) && kept_lifetime >= lifetime
                });
                prop_assert!(covered, "{} lost", net);
            }
        }
    }
}
