//! Named lists of untrusted networks, and one longest-prefix-match lookup over all of them.
//!
//! Accepted text (FireHOL netsets, Emerging Threats, Spamhaus DROP and their like):
//! - one IPv4 or IPv6 address or CIDR per line; surrounding whitespace is ignored;
//! - blank lines, and lines starting with `#` or `;`, are comments;
//! - text after the entry introduced by `;` or `#` is the entry's *note* (Spamhaus DROP's
//!   `1.2.3.0/24 ; SBL123`), carried into events;
//! - a CIDR with host bits set (`10.1.2.3/8`) is loaded as its network (`10.0.0.0/8`) and
//!   reported, since a list author almost certainly meant the network;
//! - an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is stored as IPv4, so it matches whichever
//!   form a request carries.
//!
//! Anything else on a line (a range, a hostname, two entries, a `/0` that would match every
//! address) rejects that line only: it is reported with its line number and the rest loads,
//! so one typo in a mounted ConfigMap does not switch a whole list off.
//!
//! Lookup uses `prefix_trie::PrefixMap`, a tree-bitmap trie of 5-bit strides: at most 7 nodes
//! on an IPv4 search path and 26 on an IPv6 one, whatever the number of entries. All lists
//! share one trie per address family; a trie value names the first list entry for that
//! exact prefix, and further lists holding the same prefix are chained from it.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use serde::Serialize;

/// Longest line accepted; a longer one is rejected without being scanned, since no address with
/// a sensible note needs more, and the report should not echo megabytes of garbage.
pub const MAX_LINE_BYTES: usize = 1024;

/// How many bad lines of one list are kept in full; the rest are only counted, so a wrong file
/// (an HTML error page, a binary) cannot fill memory with reports.
pub const MAX_REPORTED_ISSUES: usize = 100;

/// How much of a bad line a report quotes.
const QUOTED_TEXT_CHARS: usize = 120;

/// Why a line was not loaded as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryError {
    /// 1-based line number in the list's text.
    pub line: usize,
    /// The line (trimmed, cut to a readable length).
    pub text: String,
    pub reason: String,
    /// `true` when the line still loaded (as its normalised network); `false` when it was
    /// skipped.
    pub loaded: bool,
}

/// One list entry after parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub network: IpNet,
    pub note: Option<Box<str>>,
}

/// One parsed list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreatList {
    name: String,
    entries: Vec<ListEntry>,
    skipped_lines: usize,
    normalised_lines: usize,
}

impl ThreatList {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn entries(&self) -> &[ListEntry] {
        &self.entries
    }

    /// Lines rejected, including those beyond [`MAX_REPORTED_ISSUES`].
    pub fn skipped_lines(&self) -> usize {
        self.skipped_lines
    }

    /// Lines loaded as their normalised network, including those beyond the report cap.
    pub fn normalised_lines(&self) -> usize {
        self.normalised_lines
    }
}

/// Parses one list's text. Every acceptable line loads; the issues (at most
/// [`MAX_REPORTED_ISSUES`]) say which lines did not load as written and why.
pub fn parse_list(name: &str, text: &str) -> (ThreatList, Vec<EntryError>) {
    let mut list = ThreatList {
        name: name.to_owned(),
        entries: Vec::new(),
        skipped_lines: 0,
        normalised_lines: 0,
    };
    let mut issues = Vec::new();
    let mut report = |issue: EntryError| {
        if issues.len() < MAX_REPORTED_ISSUES {
            issues.push(issue);
        }
    };
    for (index, raw_line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let issue = |reason: String, loaded: bool| EntryError {
            line: line_number,
            text: quote(line),
            reason,
            loaded,
        };
        if line.len() > MAX_LINE_BYTES {
            list.skipped_lines += 1;
            report(issue(
                format!("line longer than {MAX_LINE_BYTES} bytes"),
                false,
            ));
            continue;
        }
        match parse_entry(line) {
            Ok(parsed) => {
                if let Some(written) = parsed.host_bits_cleared_from {
                    list.normalised_lines += 1;
                    report(issue(
                        format!(
                            "host bits set in {written}; loaded as {}",
                            parsed.entry.network
                        ),
                        true,
                    ));
                }
                list.entries.push(parsed.entry);
            }
            Err(reason) => {
                list.skipped_lines += 1;
                report(issue(reason, false));
            }
        }
    }
    (list, issues)
}

fn quote(line: &str) -> String {
    if line.chars().count() <= QUOTED_TEXT_CHARS {
        return line.to_owned();
    }
    let mut quoted: String = line.chars().take(QUOTED_TEXT_CHARS).collect();
    quoted.push('…');
    quoted
}

struct ParsedEntry {
    entry: ListEntry,
    /// The CIDR as written, when it had host bits set.
    host_bits_cleared_from: Option<String>,
}

fn parse_entry(line: &str) -> Result<ParsedEntry, String> {
    let (entry_text, note) = match line.find([';', '#']) {
        Some(at) => {
            let note = line.get(at + 1..).unwrap_or("").trim();
            (
                line.get(..at).unwrap_or("").trim(),
                (!note.is_empty()).then(|| Box::<str>::from(note)),
            )
        }
        None => (line, None),
    };
    let mut tokens = entry_text.split_whitespace();
    let Some(token) = tokens.next() else {
        return Err("no address before the note".to_owned());
    };
    if let Some(extra) = tokens.next() {
        return Err(format!(
            "unexpected text {extra:?} after {token:?}; one address or CIDR per line"
        ));
    }
    let (network, host_bits_cleared_from) = parse_network(token)?;
    if network.prefix_len() == 0 {
        return Err(format!("{token} would match every address"));
    }
    Ok(ParsedEntry {
        entry: ListEntry { network, note },
        host_bits_cleared_from,
    })
}

fn parse_network(token: &str) -> Result<(IpNet, Option<String>), String> {
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
    let network = canonical_network(written);
    let cleared = (written.trunc().addr() != written.addr()).then(|| token.to_owned());
    Ok((network, cleared))
}

/// The network with host bits cleared, IPv4-mapped IPv6 networks turned into IPv4 ones.
fn canonical_network(network: IpNet) -> IpNet {
    match network {
        IpNet::V6(v6) => {
            let mapped_prefix = 96;
            match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= mapped_prefix => {
                    Ipv4Net::new(v4, v6.prefix_len() - mapped_prefix)
                        .map_or(IpNet::V6(v6.trunc()), |net| IpNet::V4(net.trunc()))
                }
                _ => IpNet::V6(v6.trunc()),
            }
        }
        IpNet::V4(v4) => IpNet::V4(v4.trunc()),
    }
}

/// The address as a lookup key: IPv4-mapped IPv6 addresses become IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// No further entry in a chain, no note.
const NONE: u32 = u32::MAX;

/// One list's entry for one prefix.
#[derive(Clone, Copy, Debug)]
struct Slot {
    list: u32,
    /// Index into `notes`, or [`NONE`].
    note: u32,
    /// The next list's slot for the same prefix, or [`NONE`].
    next: u32,
}

/// A list that contains an address, with its most specific entry containing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreatMatch<'a> {
    /// The list's position in [`ThreatLists::names`], stable until the lists are replaced.
    pub list_index: usize,
    pub list: &'a str,
    pub cidr: IpNet,
    pub note: Option<&'a str>,
}

/// Why lists could not be combined.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThreatListsError {
    #[error("two threat lists are named {0:?}; list names must be unique")]
    DuplicateName(String),
    #[error("more than {max} list entries in total; split the lists or raise the limit")]
    TooManyEntries { max: usize },
}

/// Every loaded list behind one lookup.
#[derive(Debug, Default)]
pub struct ThreatLists {
    names: Vec<String>,
    entry_counts: Vec<usize>,
    v4: PrefixMap<Ipv4Net, u32>,
    v6: PrefixMap<Ipv6Net, u32>,
    slots: Vec<Slot>,
    notes: Vec<Box<str>>,
}

impl ThreatLists {
    /// No lists: every lookup misses.
    pub fn empty() -> ThreatLists {
        ThreatLists::default()
    }

    /// Combines parsed lists; a prefix listed twice in one list keeps its first note.
    pub fn build(lists: Vec<ThreatList>) -> Result<ThreatLists, ThreatListsError> {
        let total: usize = lists.iter().map(|list| list.entries.len()).sum();
        // Slots are addressed by u32 with u32::MAX reserved.
        let max = (NONE - 1) as usize;
        if total > max {
            return Err(ThreatListsError::TooManyEntries { max });
        }
        let mut combined = ThreatLists {
            slots: Vec::with_capacity(total),
            ..ThreatLists::default()
        };
        for list in lists {
            if combined.names.contains(&list.name) {
                return Err(ThreatListsError::DuplicateName(list.name));
            }
            let list_index = combined.names.len() as u32;
            combined.names.push(list.name);
            combined.entry_counts.push(list.entries.len());
            for entry in list.entries {
                combined.insert(list_index, entry);
            }
        }
        combined.slots.shrink_to_fit();
        Ok(combined)
    }

    fn insert(&mut self, list: u32, entry: ListEntry) {
        let new_slot = self.slots.len() as u32;
        let head = match entry.network {
            IpNet::V4(net) => self.v4.get_mut(&net),
            IpNet::V6(net) => self.v6.get_mut(&net),
        };
        match head {
            None => match entry.network {
                IpNet::V4(net) => {
                    self.v4.insert(net, new_slot);
                }
                IpNet::V6(net) => {
                    self.v6.insert(net, new_slot);
                }
            },
            Some(&mut head) => {
                // Walk the chain: a repeat within the same list is dropped, another list is
                // appended at the end so that lists keep their load order.
                let mut current = head;
                loop {
                    let Some(slot) = self.slots.get(current as usize) else {
                        return;
                    };
                    if slot.list == list {
                        return;
                    }
                    if slot.next == NONE {
                        break;
                    }
                    current = slot.next;
                }
                if let Some(last) = self.slots.get_mut(current as usize) {
                    last.next = new_slot;
                }
            }
        }
        let note = match entry.note {
            Some(note) => {
                self.notes.push(note);
                (self.notes.len() - 1) as u32
            }
            None => NONE,
        };
        self.slots.push(Slot {
            list,
            note,
            next: NONE,
        });
    }

    /// The most specific entry containing `ip` across all lists (the first list in load order
    /// when several hold that same prefix). `O(prefix length)`, independent of list sizes.
    pub fn lookup(&self, ip: IpAddr) -> Option<ThreatMatch<'_>> {
        let (cidr, head) = self.longest_prefix(canonical_ip(ip))?;
        self.slot_match(cidr, head)
    }

    /// Every list containing `ip`, each once, with its most specific entry; in load order.
    /// Costs the same walk as [`ThreatLists::lookup`] and allocates only on a hit.
    pub fn matches(&self, ip: IpAddr) -> Vec<ThreatMatch<'_>> {
        let ip = canonical_ip(ip);
        // Most addresses are in no list: one longest-prefix walk settles those.
        if self.longest_prefix(ip).is_none() {
            return Vec::new();
        }
        let mut found: Vec<ThreatMatch<'_>> = Vec::new();
        // The cover walk yields prefixes shortest first, so a later (longer) entry of a list
        // replaces its earlier one.
        let mut record = |cidr: IpNet, head: u32| {
            let mut current = head;
            while let Some(slot) = self.slots.get(current as usize) {
                if let Some(hit) = self.slot_match(cidr, current) {
                    match found.iter_mut().find(|m| m.list_index == hit.list_index) {
                        Some(existing) => *existing = hit,
                        None => found.push(hit),
                    }
                }
                current = slot.next;
            }
        };
        match ip {
            IpAddr::V4(v4) => {
                for (net, &head) in self.v4.cover(&Ipv4Net::from(v4)) {
                    record(IpNet::V4(net), head);
                }
            }
            IpAddr::V6(v6) => {
                for (net, &head) in self.v6.cover(&Ipv6Net::from(v6)) {
                    record(IpNet::V6(net), head);
                }
            }
        }
        found.sort_unstable_by_key(|m| m.list_index);
        found
    }

    fn longest_prefix(&self, ip: IpAddr) -> Option<(IpNet, u32)> {
        match ip {
            IpAddr::V4(v4) => self
                .v4
                .get_lpm(&Ipv4Net::from(v4))
                .map(|(net, &head)| (IpNet::V4(net), head)),
            IpAddr::V6(v6) => self
                .v6
                .get_lpm(&Ipv6Net::from(v6))
                .map(|(net, &head)| (IpNet::V6(net), head)),
        }
    }

    fn slot_match(&self, cidr: IpNet, slot_index: u32) -> Option<ThreatMatch<'_>> {
        let slot = self.slots.get(slot_index as usize)?;
        let list_index = slot.list as usize;
        Some(ThreatMatch {
            list_index,
            list: self.names.get(list_index)?,
            cidr,
            note: self.notes.get(slot.note as usize).map(|note| &**note),
        })
    }

    /// List names in load order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Entries loaded per list, in load order (duplicates within a list included).
    pub fn entry_counts(&self) -> &[usize] {
        &self.entry_counts
    }

    /// Distinct (list, prefix) entries in the lookup structure.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes held by the lookup structure, its side tables and notes.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.v4.mem_size()
            + self.v6.mem_size()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.notes.capacity() * std::mem::size_of::<Box<str>>()
            + self.notes.iter().map(|note| note.len()).sum::<usize>()
            + self.names.iter().map(|name| name.capacity()).sum::<usize>()
            + self.names.capacity() * std::mem::size_of::<String>()
            + self.entry_counts.capacity() * std::mem::size_of::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_come_from_either_separator() {
        let (list, issues) = parse_list("x", "1.2.3.0/24 ; SBL123\n5.6.7.8 # scanner\n");
        assert!(issues.is_empty());
        let notes: Vec<Option<&str>> = list.entries().iter().map(|e| e.note.as_deref()).collect();
        assert_eq!(notes, vec![Some("SBL123"), Some("scanner")]);
    }

    #[test]
    fn mapped_ipv6_is_stored_and_looked_up_as_ipv4() {
        let (list, issues) = parse_list("x", "::ffff:192.0.2.0/120\n");
        assert!(issues.is_empty());
        assert_eq!(list.entries()[0].network, "192.0.2.0/24".parse().unwrap());
        let lists = ThreatLists::build(vec![list]).unwrap();
        let hit = lists.lookup("::ffff:192.0.2.9".parse().unwrap()).unwrap();
        assert_eq!(hit.cidr, "192.0.2.0/24".parse().unwrap());
    }
}
