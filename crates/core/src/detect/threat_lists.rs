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
//! share one trie per address family. At build time every stored prefix is given the answer
//! for any address it is the longest match of — each list with an entry covering it, and that
//! list's most specific such entry — by pushing the lists of shorter prefixes down to the
//! longer ones they contain. So finding every list that holds an address is one
//! longest-prefix match, never a walk over all covering prefixes. In front of each trie, one
//! bit per leading 16 bits of address says whether any stored prefix is there at all, so an
//! address in no list (the common case) usually costs one load.

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
    let (network, host_bits_cleared) = crate::net::parse_list_entry(token)?;
    let host_bits_cleared_from = host_bits_cleared.then(|| token.to_owned());
    if network.prefix_len() == 0 {
        return Err(format!("{token} would match every address"));
    }
    Ok(ParsedEntry {
        entry: ListEntry { network, note },
        host_bits_cleared_from,
    })
}

/// No further entry in a chain, no note.
const NONE: u32 = u32::MAX;

/// One list's entry for one prefix.
#[derive(Clone, Copy, Debug)]
struct Slot {
    list: u32,
    /// Index into `notes`, or [`NONE`].
    note: u32,
    /// The next list's slot for the same prefix, or [`NONE`]; used while building.
    next: u32,
}

/// One list's most specific entry covering a stored prefix. The entry's network is the
/// looked-up address cut to `prefix_len`, since it covers that address. A stored prefix's
/// covers are a run in `covers` — every list with an entry covering it, in load order —
/// whose final element is marked `last`, so the trie's value is just the run's start.
#[derive(Clone, Copy, Debug)]
struct Cover {
    slot: u32,
    prefix_len: u8,
    last: bool,
}

/// Bits of a [`MissFilter`]: one per leading 16 bits of an address.
const FILTER_BITS: usize = 1 << 16;

/// One bit per /16 (IPv4) or leading 16 bits (IPv6), set when any stored prefix overlaps it.
/// Most requests come from addresses in no list, and most /16s hold no listed network, so
/// a clear bit settles the common case with one load instead of a trie walk.
#[derive(Clone, Debug)]
struct MissFilter {
    words: Box<[u64]>,
}

impl Default for MissFilter {
    fn default() -> MissFilter {
        MissFilter {
            words: vec![0; FILTER_BITS / 64].into_boxed_slice(),
        }
    }
}

impl MissFilter {
    /// Marks the leading-16-bit values a prefix of `prefix_len` starting at `leading` covers.
    fn mark(&mut self, leading: u16, prefix_len: u8) {
        let span = 1_usize << 16_u8.saturating_sub(prefix_len).min(16);
        let first = usize::from(leading) & !(span - 1);
        for bit in first..(first + span).min(FILTER_BITS) {
            if let Some(word) = self.words.get_mut(bit / 64) {
                *word |= 1 << (bit % 64);
            }
        }
    }

    fn may_contain(&self, leading: u16) -> bool {
        let bit = usize::from(leading);
        self.words
            .get(bit / 64)
            .is_some_and(|word| word & (1 << (bit % 64)) != 0)
    }

    fn bytes(&self) -> usize {
        self.words.len() * std::mem::size_of::<u64>()
    }
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
    /// Trie values: while building, the first list's slot for exactly that prefix (the others
    /// chained from it in load order); once built, the start of the prefix's run in `covers`.
    v4: PrefixMap<Ipv4Net, u32>,
    v6: PrefixMap<Ipv6Net, u32>,
    v4_filter: MissFilter,
    v6_filter: MissFilter,
    slots: Vec<Slot>,
    covers: Vec<Cover>,
    notes: Vec<Box<str>>,
}

impl ThreatLists {
    /// No lists: every lookup misses.
    pub fn empty() -> ThreatLists {
        ThreatLists::default()
    }

    /// Combines parsed lists; a prefix listed twice in one list keeps its first note.
    ///
    /// Besides the trie, this works out once per stored prefix which lists cover it and with
    /// which entry, so that a lookup of any address is a single longest-prefix match however
    /// many lists hold nested networks.
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
        let ThreatLists {
            v4,
            v6,
            v4_filter,
            v6_filter,
            slots,
            covers,
            ..
        } = &mut combined;
        propagate_covers(v4.iter_mut(), slots, covers)?;
        propagate_covers(v6.iter_mut(), slots, covers)?;
        covers.shrink_to_fit();
        for (net, _) in v4.iter() {
            v4_filter.mark((u32::from(net.addr()) >> 16) as u16, net.prefix_len());
        }
        for (net, _) in v6.iter() {
            v6_filter.mark((u128::from(net.addr()) >> 112) as u16, net.prefix_len());
        }
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
        let (ip, start, longest) = self.longest_prefix(ip)?;
        self.cover_run(start)
            .iter()
            .find(|cover| cover.prefix_len == longest)
            .and_then(|cover| self.cover_match(ip, *cover))
    }

    /// Every list containing `ip`, each once, with its most specific entry; in load order.
    /// Costs one longest-prefix match, like [`ThreatLists::lookup`], and allocates only on a
    /// hit; [`ThreatLists::covering`] does not allocate at all.
    pub fn matches(&self, ip: IpAddr) -> Vec<ThreatMatch<'_>> {
        self.covering(ip).collect()
    }

    /// As [`ThreatLists::matches`], without collecting.
    pub fn covering(&self, ip: IpAddr) -> impl Iterator<Item = ThreatMatch<'_>> + '_ {
        let found = self.longest_prefix(ip);
        let covers = found.map_or(&[][..], |(_, start, _)| self.cover_run(start));
        let ip = found.map(|(ip, _, _)| ip);
        covers
            .iter()
            .filter_map(move |cover| self.cover_match(ip?, *cover))
    }

    /// Whether any list contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.longest_prefix(ip).is_some()
    }

    /// The canonical address, its longest stored prefix's cover run and that prefix's length.
    fn longest_prefix(&self, ip: IpAddr) -> Option<(IpAddr, u32, u8)> {
        let ip = crate::net::canonical_ip(ip);
        match ip {
            IpAddr::V4(v4) => {
                if !self.v4_filter.may_contain((u32::from(v4) >> 16) as u16) {
                    return None;
                }
                self.v4
                    .get_lpm(&Ipv4Net::from(v4))
                    .map(|(net, &value)| (ip, value, net.prefix_len()))
            }
            IpAddr::V6(v6) => {
                if !self.v6_filter.may_contain((u128::from(v6) >> 112) as u16) {
                    return None;
                }
                self.v6
                    .get_lpm(&Ipv6Net::from(v6))
                    .map(|(net, &value)| (ip, value, net.prefix_len()))
            }
        }
    }

    fn cover_run(&self, start: u32) -> &[Cover] {
        let rest = self.covers.get(start as usize..).unwrap_or(&[]);
        let len = rest
            .iter()
            .position(|cover| cover.last)
            .map_or(rest.len(), |last| last + 1);
        rest.get(..len).unwrap_or(&[])
    }

    fn cover_match(&self, ip: IpAddr, cover: Cover) -> Option<ThreatMatch<'_>> {
        let slot = self.slots.get(cover.slot as usize)?;
        let list_index = slot.list as usize;
        let cidr = IpNet::new(ip, cover.prefix_len).ok()?.trunc();
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
            + self.v4_filter.bytes()
            + self.v6_filter.bytes()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.covers.capacity() * std::mem::size_of::<Cover>()
            + self.notes.capacity() * std::mem::size_of::<Box<str>>()
            + self.notes.iter().map(|note| note.len()).sum::<usize>()
            + self.names.iter().map(|name| name.capacity()).sum::<usize>()
            + self.names.capacity() * std::mem::size_of::<String>()
            + self.entry_counts.capacity() * std::mem::size_of::<usize>()
    }
}

/// Fills each stored prefix's cover range, visiting prefixes in the trie's lexicographic
/// order — every prefix right after the prefixes containing it — so the innermost stored
/// prefix containing the current one is on top of a stack, with its covers already final.
fn propagate_covers<'a, P: prefix_trie::Prefix + Copy + 'a>(
    prefixes: impl Iterator<Item = (P, &'a mut u32)>,
    slots: &[Slot],
    covers: &mut Vec<Cover>,
) -> Result<(), ThreatListsError> {
    let too_many = || ThreatListsError::TooManyEntries {
        max: (NONE - 1) as usize,
    };
    let mut enclosing: Vec<(P, u32, u32)> = Vec::new();
    let mut scratch: Vec<Cover> = Vec::new();
    for (prefix, value) in prefixes {
        while enclosing
            .last()
            .is_some_and(|(outer, _, _)| !contains(outer, &prefix))
        {
            enclosing.pop();
        }
        scratch.clear();
        if let Some(&(_, start, len)) = enclosing.last() {
            let start = start as usize;
            scratch.extend_from_slice(covers.get(start..start + len as usize).unwrap_or(&[]));
        }
        let prefix_len = prefix.prefix_len();
        let mut current = *value;
        while let Some(slot) = slots.get(current as usize) {
            let own = Cover {
                slot: current,
                prefix_len,
                last: false,
            };
            // A list's entry here is more specific than any it has on a containing prefix.
            let same_list = scratch.iter_mut().find(|cover| {
                slots
                    .get(cover.slot as usize)
                    .is_some_and(|other| other.list == slot.list)
            });
            match same_list {
                Some(cover) => *cover = own,
                None => scratch.push(own),
            }
            current = slot.next;
        }
        scratch.sort_unstable_by_key(|cover| slots.get(cover.slot as usize).map(|s| s.list));
        for cover in scratch.iter_mut() {
            cover.last = false;
        }
        if let Some(final_cover) = scratch.last_mut() {
            final_cover.last = true;
        }
        let start = u32::try_from(covers.len()).map_err(|_| too_many())?;
        let len = u32::try_from(scratch.len()).map_err(|_| too_many())?;
        covers.extend_from_slice(&scratch);
        *value = start;
        enclosing.push((prefix, start, len));
    }
    Ok(())
}

/// Whether `outer` contains `inner` (both as stored, host bits clear).
fn contains<P: prefix_trie::Prefix>(outer: &P, inner: &P) -> bool {
    outer.prefix_len() <= inner.prefix_len() && outer.contains(inner)
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
    fn nested_prefixes_of_three_lists_answer_with_each_list_once() {
        let (outer, _) = parse_list("outer", "10.0.0.0/8 ; o\n10.1.0.0/16 ; o16\n");
        let (middle, _) = parse_list("middle", "10.1.0.0/16 ; m\n");
        let (inner, _) = parse_list("inner", "10.1.2.0/24\n10.9.0.0/16\n");
        let lists = ThreatLists::build(vec![outer, middle, inner]).unwrap();
        let seen = |text: &str| -> Vec<(String, String, Option<String>)> {
            lists
                .matches(text.parse().unwrap())
                .iter()
                .map(|m| {
                    (
                        m.list.to_owned(),
                        m.cidr.to_string(),
                        m.note.map(str::to_owned),
                    )
                })
                .collect()
        };
        let entry = |list: &str, cidr: &str, note: Option<&str>| {
            (list.to_owned(), cidr.to_owned(), note.map(str::to_owned))
        };
        assert_eq!(
            seen("10.1.2.3"),
            vec![
                entry("outer", "10.1.0.0/16", Some("o16")),
                entry("middle", "10.1.0.0/16", Some("m")),
                entry("inner", "10.1.2.0/24", None),
            ]
        );
        assert_eq!(
            seen("10.1.3.3"),
            vec![
                entry("outer", "10.1.0.0/16", Some("o16")),
                entry("middle", "10.1.0.0/16", Some("m")),
            ]
        );
        // A sibling branch does not inherit the lists of the branch before it.
        assert_eq!(
            seen("10.9.0.1"),
            vec![
                entry("outer", "10.0.0.0/8", Some("o")),
                entry("inner", "10.9.0.0/16", None),
            ]
        );
        assert_eq!(
            seen("10.200.0.1"),
            vec![entry("outer", "10.0.0.0/8", Some("o"))]
        );
        assert!(seen("11.0.0.1").is_empty());
        assert_eq!(
            lists.lookup("10.1.3.3".parse().unwrap()).unwrap().list,
            "outer"
        );
    }

    #[test]
    fn the_miss_filter_never_hides_a_listed_address() {
        let (list, _) = parse_list("x", "128.0.0.0/1\n192.0.2.0/24\n2001:db8::/32\n4000::/2\n");
        let lists = ThreatLists::build(vec![list]).unwrap();
        for text in [
            "128.0.0.1",
            "255.255.255.255",
            "192.0.2.200",
            "2001:db8::1",
            "7fff::1",
        ] {
            assert!(lists.contains(text.parse().unwrap()), "{text}");
        }
        for text in ["127.255.255.255", "2001:db9::1", "3fff::1", "8000::1"] {
            assert!(!lists.contains(text.parse().unwrap()), "{text}");
        }
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
