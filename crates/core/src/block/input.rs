//! What to block, read from the places an operator has it: command-line arguments, threat
//! lists, the collector's JSON events and its `/suspicious` summary.
//!
//! Collector output is read with the collector's own types ([`Event`], [`Suspicious`]) and
//! threat lists with the collector's own grammar ([`threat_lists::parse_list`]), so that the
//! two sides cannot drift apart: a field renamed on one side is a compile error, not a reason
//! silently lost. Reading is strict where a mistake would block the wrong thing: an event
//! missing a field, a list line that does not load, or a document of a newer schema stops the
//! run with its place named, instead of being skipped while the rest is blocked. Unknown JSON
//! fields are still ignored, as the event schema's stability rules ask.

use super::escape;
use crate::detect::events::{Event, EventKind, Field, EVENT_SCHEMA_VERSION};
use crate::detect::heavy_hitters::TopEntry;
use crate::detect::threat_lists;
use crate::detect::{Suspicious, SUSPICIOUS_SCHEMA_VERSION};
use crate::model::Provenance;
use crate::net::{normalise, parse_net};
use ipnet::IpNet;
use jiff::Timestamp;

/// One address or network to block, with what is known about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Normalised: host bits cleared, IPv4-mapped IPv6 written as IPv4.
    pub net: IpNet,
    pub reason: Option<String>,
    /// How far the collector could believe the address; `None` for arguments and list
    /// entries, which the operator chose and vouches for.
    pub provenance: Option<Provenance>,
    /// When the collector saw it; the block lasts from then, so re-reading the same events
    /// gives the same expiry instead of pushing it forward on every run.
    pub observed_at: Option<Timestamp>,
    /// Where the entry came from (`argument`, `FILE:LINE`), for messages.
    pub origin: String,
}

impl Candidate {
    /// Whether the address is only what a request's sender wrote in a header.
    pub fn is_claimed(&self) -> bool {
        self.provenance == Some(Provenance::Claimed)
    }

    /// Whether the collector knew the address only from forwarding headers: Calico policy
    /// sees the connection's source, never such an address.
    pub fn seen_only_in_headers(&self) -> bool {
        matches!(
            self.provenance,
            Some(Provenance::Trusted | Provenance::Claimed)
        )
    }
}

// Every text here may come from the input (file names, lines, serde's messages quoting a
// value), so it is written escaped: a newline in it must not forge a line of the report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("{}: {:?} is not an IP address or CIDR", escape(origin), escape(text))]
    BadAddress { origin: String, text: String },
    #[error("{}: {}", escape(origin), escape(reason))]
    BadListLine { origin: String, reason: String },
    #[error(
        "{}: not a collector event or /suspicious summary: {}",
        escape(origin),
        escape(message)
    )]
    BadJson { origin: String, message: String },
    #[error(
        "{}: time {:?} is not an RFC 3339 timestamp",
        escape(origin),
        escape(text)
    )]
    BadTime { origin: String, text: String },
    #[error("{}: cannot read: {}", escape(origin), escape(message))]
    Read { origin: String, message: String },
    #[error("{}: {what}; nothing to block in a feed is taken as a broken feed: pass --allow-empty when an empty one is expected", escape(origin))]
    Empty { origin: String, what: &'static str },
    #[error(
        "{}: {what} schema_version {found}; this ingress-tap reads version {supported}",
        escape(origin)
    )]
    UnsupportedSchema {
        origin: String,
        what: &'static str,
        found: u32,
        supported: u32,
    },
}

/// How to read a document; `Auto` looks at its first character (`{` means JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum InputFormat {
    #[default]
    Auto,
    /// Threat list: one IP/CIDR per line, `#` or `;` comments, `CIDR ; note`.
    List,
    /// JSON lines of collector events, or one `/suspicious` document.
    Json,
}

/// How `--from` documents are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    pub format: InputFormat,
    /// How many addresses to take from each ranking of a `/suspicious` summary: rankings are
    /// volumes, not verdicts, so none are taken unless asked for.
    pub top: usize,
    /// Whether `/suspicious`'s `claimed_events` and `top_claimed` are read at all. They are
    /// kept apart by the collector because a sender can fill them with any address, a victim's
    /// included.
    pub trust_spoofable_headers: bool,
}

/// What one document holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub candidates: Vec<Candidate>,
    /// Entries of `claimed_events` and `top_claimed` left unread for want of
    /// `--trust-spoofable-headers`; said once rather than refused one by one, since a flood of
    /// them is exactly what an attacker would produce.
    pub unread_claimed: usize,
}

/// One IP or CIDR from the command line; `reason` applies to every argument.
pub fn parse_argument(text: &str, reason: Option<&str>) -> Result<Candidate, InputError> {
    let origin = "argument".to_owned();
    let net = parse_net(text.trim()).ok_or_else(|| InputError::BadAddress {
        origin: origin.clone(),
        text: text.to_owned(),
    })?;
    Ok(Candidate {
        net,
        reason: reason.map(str::to_owned),
        provenance: None,
        observed_at: None,
        origin,
    })
}

/// Reads one document held in memory, named `name` for messages.
pub fn parse_document(
    name: &str,
    text: &str,
    options: &ReadOptions,
) -> Result<Document, InputError> {
    let mut candidates = Vec::new();
    let mut reader = text.as_bytes();
    let stats = read_document::<InputError>(name, &mut reader, options, &mut |candidate| {
        candidates.push(candidate);
        Ok(())
    })?;
    Ok(Document {
        candidates,
        unread_claimed: stats.unread_claimed,
    })
}

/// Longest line read from a list or an event stream; a longer one is an error, so that input
/// without newlines cannot grow a single line without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Largest `/suspicious` document read; the collector's are far smaller.
pub const MAX_SUMMARY_BYTES: usize = 64 << 20;

/// What a streamed document held, besides the candidates handed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentStats {
    pub candidates: usize,
    pub unread_claimed: usize,
    /// Whether any byte was read, and any that is not whitespace.
    pub bytes: bool,
    pub non_whitespace: bool,
    pub json: bool,
}

impl DocumentStats {
    /// `Err` naming what is wrong when the document named nothing to block.
    pub fn require_entries(&self, name: &str) -> Result<(), InputError> {
        // Claimed entries left unread are not a broken feed: the report says what was left.
        if self.candidates > 0 || self.unread_claimed > 0 {
            return Ok(());
        }
        let what = if !self.bytes {
            "empty"
        } else if !self.non_whitespace {
            "only whitespace"
        } else if self.json {
            "a /suspicious document with nothing to block (no recent_events, and --top 0 takes nothing from the rankings)"
        } else {
            "no entries, only comments"
        };
        Err(InputError::Empty {
            origin: name.to_owned(),
            what,
        })
    }
}

/// Reads the next line into `line` (without its end), `false` at the end of input.
fn next_line(
    reader: &mut dyn std::io::BufRead,
    buffer: &mut Vec<u8>,
    origin: impl Fn() -> String,
) -> Result<bool, InputError> {
    use std::io::{BufRead, Read};
    buffer.clear();
    let read = reader
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buffer)
        .map_err(|error| InputError::Read {
            origin: origin(),
            message: error.to_string(),
        })?;
    if read == 0 {
        return Ok(false);
    }
    if buffer.len() > MAX_LINE_BYTES && buffer.last() != Some(&b'\n') {
        return Err(InputError::Read {
            origin: origin(),
            message: format!("a line longer than {MAX_LINE_BYTES} bytes"),
        });
    }
    while matches!(buffer.last(), Some(b'\n' | b'\r')) {
        buffer.pop();
    }
    Ok(true)
}

/// Reads one document from `reader` line by line, handing each candidate to `sink` as soon as
/// it is read: memory does not grow with the document's length. A `/suspicious` document
/// (JSON over several lines, or one line with its keys) is read whole.
pub fn read_document<E: From<InputError>>(
    name: &str,
    reader: &mut dyn std::io::BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(Candidate) -> Result<(), E>,
) -> Result<DocumentStats, E> {
    let mut stats = DocumentStats::default();
    let mut buffer = Vec::new();
    let mut number = 0usize;
    let mut json: Option<bool> = match options.format {
        InputFormat::Json => Some(true),
        InputFormat::List => Some(false),
        InputFormat::Auto => None,
    };
    loop {
        let origin = || format!("{name}:{}", number + 1);
        if !next_line(reader, &mut buffer, origin)? {
            break;
        }
        number += 1;
        let origin = format!("{name}:{number}");
        stats.bytes = true;
        let line = std::str::from_utf8(&buffer).map_err(|_| InputError::Read {
            origin: origin.clone(),
            message: "not UTF-8".to_owned(),
        })?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        stats.non_whitespace = true;
        let is_json = *json.get_or_insert_with(|| trimmed.starts_with('{'));
        if !is_json {
            for candidate in list_line(name, &origin, line)? {
                stats.candidates += 1;
                sink(candidate)?;
            }
            continue;
        }
        stats.json = true;
        // Events are parsed straight into the collector's type, without an intermediate
        // JSON value: a million lines are a million parses.
        match serde_json::from_str::<Event>(line) {
            Ok(event) => {
                stats.candidates += 1;
                sink(event_candidate(&origin, &event, event.provenance())?)?;
            }
            Err(error) if stats.candidates > 0 => {
                return Err(InputError::BadJson {
                    origin,
                    message: error.to_string(),
                }
                .into());
            }
            Err(_) => {
                // The first JSON line opens a /suspicious document (or is one): read it whole.
                let mut text = line.to_owned();
                text.push('\n');
                let mut rest = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(&mut *reader, MAX_SUMMARY_BYTES as u64),
                    &mut rest,
                )
                .map_err(|error| InputError::Read {
                    origin: name.to_owned(),
                    message: error.to_string(),
                })?;
                text.push_str(&String::from_utf8(rest).map_err(|_| InputError::Read {
                    origin: name.to_owned(),
                    message: "not UTF-8".to_owned(),
                })?);
                let document = parse_json(name, &text, options)?;
                stats.unread_claimed += document.unread_claimed;
                for candidate in document.candidates {
                    stats.candidates += 1;
                    sink(candidate)?;
                }
                break;
            }
        }
    }
    Ok(stats)
}

fn is_summary(value: &serde_json::Value) -> bool {
    value
        .as_object()
        .is_some_and(|object| SUMMARY_KEYS.iter().any(|key| object.contains_key(*key)))
}

/// The candidates of one threat-list line.
fn list_line(name: &str, origin: &str, line: &str) -> Result<Vec<Candidate>, InputError> {
    let (list, issues) = threat_lists::parse_list(name, line);
    if let Some(issue) = issues.into_iter().find(|issue| !issue.loaded) {
        return Err(InputError::BadListLine {
            origin: origin.to_owned(),
            reason: issue.reason,
        });
    }
    Ok(list
        .entries()
        .iter()
        .map(|entry| Candidate {
            net: entry.network,
            reason: entry.note.as_deref().map(str::to_owned),
            provenance: None,
            observed_at: None,
            origin: origin.to_owned(),
        })
        .collect())
}

/// Threat-list text, in the grammar the collector loads lists with. A line the collector
/// would skip stops the run here instead: a half-read list is worse than none. A CIDR with
/// host bits set loads as its network, as in the collector.
pub fn parse_list(name: &str, text: &str) -> Result<Vec<Candidate>, InputError> {
    let mut candidates = Vec::new();
    // Line by line, so that each entry keeps the line it came from for messages.
    for (index, line) in text.lines().enumerate() {
        let origin = format!("{name}:{}", index + 1);
        let (list, issues) = threat_lists::parse_list(name, line);
        if let Some(issue) = issues.into_iter().find(|issue| !issue.loaded) {
            return Err(InputError::BadListLine {
                origin,
                reason: issue.reason,
            });
        }
        for entry in list.entries() {
            candidates.push(Candidate {
                net: entry.network,
                reason: entry.note.as_deref().map(str::to_owned),
                provenance: None,
                observed_at: None,
                origin: origin.clone(),
            });
        }
    }
    Ok(candidates)
}

/// Keys that only a `/suspicious` summary has; an event has none of them.
const SUMMARY_KEYS: [&str; 5] = [
    "top_original",
    "top_sources",
    "recent_events",
    "top_claimed",
    "claimed_events",
];

fn parse_json(name: &str, text: &str, options: &ReadOptions) -> Result<Document, InputError> {
    // A pretty-printed /suspicious document spans many lines; events are one per line.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        if is_summary(&value) {
            let summary: Suspicious =
                serde_json::from_value(value).map_err(|error| InputError::BadJson {
                    origin: name.to_owned(),
                    message: error.to_string(),
                })?;
            return summary_candidates(name, summary, options);
        }
    }
    let mut candidates = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{name}:{}", index + 1);
        let event: Event = serde_json::from_str(line).map_err(|error| InputError::BadJson {
            origin: origin.clone(),
            message: error.to_string(),
        })?;
        candidates.push(event_candidate(&origin, &event, event.provenance())?);
    }
    Ok(Document {
        candidates,
        unread_claimed: 0,
    })
}

fn summary_candidates(
    name: &str,
    summary: Suspicious,
    options: &ReadOptions,
) -> Result<Document, InputError> {
    if summary.schema_version != SUSPICIOUS_SCHEMA_VERSION {
        return Err(InputError::UnsupportedSchema {
            origin: name.to_owned(),
            what: "/suspicious",
            found: summary.schema_version,
            supported: SUSPICIOUS_SCHEMA_VERSION,
        });
    }
    let mut document = Document::default();
    for (index, event) in summary.recent_events.iter().enumerate() {
        let origin = format!("{name}: recent_events[{index}]");
        document
            .candidates
            .push(event_candidate(&origin, event, event.provenance())?);
    }
    let top = options.top;
    let claimed_rows = summary.top_claimed.len().min(top);
    if options.trust_spoofable_headers {
        // Whatever an entry of these lists says about itself, the collector put it here
        // because nothing vouched for it.
        for (index, event) in summary.claimed_events.iter().enumerate() {
            let origin = format!("{name}: claimed_events[{index}]");
            document
                .candidates
                .push(event_candidate(&origin, event, Provenance::Claimed)?);
        }
    } else {
        document.unread_claimed = summary.claimed_events.len() + claimed_rows;
    }
    // The field a ranking counts, for entries stating no provenance; `None` for the claimed
    // ranking, whose entries are claimed whatever they say of themselves.
    let mut rankings = vec![
        ("top_original", summary.top_original, Some(Field::Original)),
        ("top_sources", summary.top_sources, Some(Field::Source)),
    ];
    if options.trust_spoofable_headers {
        rankings.push(("top_claimed", summary.top_claimed, None));
    }
    for (ranking, rows, field) in rankings {
        for (index, row) in rows.into_iter().take(top).enumerate() {
            let provenance = match field {
                Some(field) => row.provenance.unwrap_or_else(|| field.assumed_provenance()),
                None => Provenance::Claimed,
            };
            document
                .candidates
                .push(ranked_candidate(name, ranking, index, &row, provenance));
        }
    }
    Ok(document)
}

fn ranked_candidate(
    name: &str,
    ranking: &str,
    index: usize,
    row: &TopEntry,
    provenance: Provenance,
) -> Candidate {
    Candidate {
        net: normalise(IpNet::from(row.ip)),
        reason: Some(format!(
            "{ranking} #{}, {} requests",
            index + 1,
            row.requests
        )),
        provenance: Some(provenance),
        observed_at: None,
        origin: format!("{name}: {ranking}[{index}]"),
    }
}

/// The event as a candidate, with `provenance` as the caller establishes it.
fn event_candidate(
    origin: &str,
    event: &Event,
    provenance: Provenance,
) -> Result<Candidate, InputError> {
    if event.schema_version != EVENT_SCHEMA_VERSION {
        return Err(InputError::UnsupportedSchema {
            origin: origin.to_owned(),
            what: "event",
            found: event.schema_version,
            supported: EVENT_SCHEMA_VERSION,
        });
    }
    let observed_at: Timestamp = event.time.parse().map_err(|_| InputError::BadTime {
        origin: origin.to_owned(),
        text: event.time.clone(),
    })?;
    Ok(Candidate {
        net: normalise(IpNet::from(event.ip)),
        reason: Some(event_reason(event)),
        provenance: Some(provenance),
        observed_at: Some(observed_at),
        origin: origin.to_owned(),
    })
}

/// `volume_threshold (rule burst)`, `threat_list (list drop, entry 203.0.113.0/24: SBL1)`.
fn event_reason(event: &Event) -> String {
    let kind = event.kind.as_str();
    let name = &event.name;
    if event.kind != EventKind::ThreatList {
        return format!("{kind} (rule {name})");
    }
    let mut reason = format!("{kind} (list {name}");
    if let Some(cidr) = &event.details.cidr {
        reason.push_str(&format!(", entry {cidr}"));
    }
    if let Some(note) = &event.details.note {
        reason.push_str(&format!(": {note}"));
    }
    reason.push(')');
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::events::{EventConnection, EventDetails};
    use std::net::IpAddr;

    fn read(text: &str, top: usize, trust_spoofable_headers: bool) -> Document {
        let options = ReadOptions {
            format: InputFormat::Auto,
            top,
            trust_spoofable_headers,
        };
        parse_document("s", text, &options).unwrap()
    }

    /// An event as the collector builds it.
    fn event(kind: EventKind, name: &str, ip: &str, field: Field) -> Event {
        Event {
            schema_version: EVENT_SCHEMA_VERSION,
            time: "2026-01-01T10:00:00.250Z".to_owned(),
            kind,
            name: name.to_owned(),
            ip: ip.parse().unwrap(),
            field,
            provenance: None,
            connection: EventConnection {
                src_ip: IpAddr::from([192, 0, 2, 10]),
                src_port: 40_000,
                dst_ip: IpAddr::from([192, 0, 2, 20]),
                dst_port: 443,
                protocol: "tcp".to_owned(),
            },
            details: EventDetails::default(),
        }
    }

    fn top_entry(ip: &str, requests: u64, provenance: Option<Provenance>) -> TopEntry {
        TopEntry {
            ip: ip.parse().unwrap(),
            requests,
            error: 0,
            provenance,
        }
    }

    fn suspicious() -> Suspicious {
        Suspicious {
            schema_version: SUSPICIOUS_SCHEMA_VERSION,
            window_seconds: 60,
            window_started: Some("2026-01-01T09:59:00.000Z".to_owned()),
            top_original: vec![
                top_entry("203.0.113.1", 900, Some(Provenance::Trusted)),
                top_entry("203.0.113.2", 5, None),
            ],
            top_sources: vec![top_entry("198.51.100.1", 10, None)],
            previous_window: None,
            recent_events: vec![event(
                EventKind::LeakyBucket,
                "login",
                "192.0.2.5",
                Field::Source,
            )],
            top_claimed: vec![top_entry("198.51.100.66", 7000, Some(Provenance::Claimed))],
            claimed_events: vec![event(
                EventKind::VolumeThreshold,
                "burst",
                "198.51.100.77",
                Field::Original,
            )],
        }
    }

    #[test]
    fn list_reads_comments_notes_and_normalises() {
        let text = "# header\n; also a comment\n\n203.0.113.7/24 ; scanner\n2001:db8::1\n198.51.100.1 # note\n";
        let candidates = parse_list("threats.txt", text).unwrap();
        let nets: Vec<String> = candidates.iter().map(|c| c.net.to_string()).collect();
        assert_eq!(
            nets,
            ["203.0.113.0/24", "2001:db8::1/128", "198.51.100.1/32"]
        );
        assert_eq!(candidates[0].reason.as_deref(), Some("scanner"));
        assert_eq!(candidates[0].origin, "threats.txt:4");
        assert_eq!(candidates[1].origin, "threats.txt:5");
        assert_eq!(candidates[2].reason.as_deref(), Some("note"));
        assert!(candidates.iter().all(|c| c.provenance.is_none()));
    }

    #[test]
    fn list_names_the_bad_line() {
        let error = parse_list("l", "203.0.113.1\nnot-an-ip ; x\n").unwrap_err();
        assert!(
            matches!(&error, InputError::BadListLine { origin, reason }
                if origin == "l:2" && reason.contains("not-an-ip")),
            "{error:?}"
        );
    }

    #[test]
    fn a_line_the_collector_would_skip_stops_the_run() {
        // The collector's grammar skips these lines; blocking the rest of the list would
        // hide that the list is not what its author meant.
        for (text, said) in [
            ("203.0.113.1 203.0.113.2\n", "unexpected text"),
            ("0.0.0.0/0\n", "every address"),
            ("203.0.113.1-203.0.113.9\n", "range"),
            ("; ok\n ; note only\n203.0.113.0/33\n", "not a valid CIDR"),
        ] {
            let error = parse_list("l", text).unwrap_err().to_string();
            assert!(error.contains(said), "{text:?}: {error}");
            assert!(error.starts_with("l:"), "{text:?}: {error}");
        }
    }

    #[test]
    fn events_written_by_the_collector_keep_their_reason_and_provenance() {
        let mut burst = event(
            EventKind::VolumeThreshold,
            "burst",
            "203.0.113.7",
            Field::Original,
        );
        burst.provenance = Some(Provenance::Trusted);
        let mut listed = event(EventKind::ThreatList, "drop", "198.51.100.9", Field::Source);
        listed.provenance = Some(Provenance::Connection);
        listed.details.cidr = Some("198.51.100.0/24".to_owned());
        listed.details.note = Some("SBL123".to_owned());
        // Written by a collector older than the provenance field.
        let old = event(
            EventKind::LeakyBucket,
            "slow",
            "::ffff:192.0.2.9",
            Field::Original,
        );
        let text: String = [burst, listed, old]
            .iter()
            .map(|event| event.to_json_line().unwrap())
            .collect();
        let candidates = read(&text, 0, false).candidates;
        let reasons: Vec<_> = candidates.iter().map(|c| c.reason.as_deref()).collect();
        assert_eq!(
            reasons,
            [
                Some("volume_threshold (rule burst)"),
                Some("threat_list (list drop, entry 198.51.100.0/24: SBL123)"),
                Some("leaky_bucket (rule slow)"),
            ]
        );
        let provenances: Vec<_> = candidates.iter().map(|c| c.provenance).collect();
        assert_eq!(
            provenances,
            [
                Some(Provenance::Trusted),
                Some(Provenance::Connection),
                Some(Provenance::Claimed),
            ]
        );
        assert!(candidates[0].seen_only_in_headers());
        assert!(!candidates[1].seen_only_in_headers());
        assert_eq!(candidates[2].net.to_string(), "192.0.2.9/32");
        assert_eq!(candidates[1].origin, "s:2");
        assert_eq!(
            candidates[0].observed_at,
            Some("2026-01-01T10:00:00.250Z".parse().unwrap())
        );
    }

    #[test]
    fn an_incomplete_or_newer_event_is_an_error_naming_its_line() {
        let options = ReadOptions::default();
        let complete = event(EventKind::LeakyBucket, "r", "192.0.2.1", Field::Source);
        let line = complete.to_json_line().unwrap();
        // The shape an older reader of this tool accepted: no name, no connection.
        let partial = r#"{"schema_version":1,"time":"2026-01-01T10:00:00Z","kind":"leaky_bucket","rule":"r","ip":"192.0.2.1","field":"source"}"#;
        let error = parse_document("e", &format!("{line}{partial}\n"), &options).unwrap_err();
        assert!(
            matches!(&error, InputError::BadJson { origin, .. } if origin == "e:2"),
            "{error:?}"
        );
        let error = parse_document("e", "{oops\n", &options).unwrap_err();
        assert!(matches!(error, InputError::BadJson { ref origin, .. } if origin == "e:1"));

        let mut newer = complete.clone();
        newer.schema_version = EVENT_SCHEMA_VERSION + 1;
        let error = parse_document("e", &newer.to_json_line().unwrap(), &options).unwrap_err();
        assert!(
            matches!(error, InputError::UnsupportedSchema { found, .. } if found == EVENT_SCHEMA_VERSION + 1)
        );
        let mut untimed = complete;
        untimed.time = "yesterday".to_owned();
        let error = parse_document("e", &untimed.to_json_line().unwrap(), &options).unwrap_err();
        assert!(matches!(error, InputError::BadTime { .. }), "{error:?}");
    }

    #[test]
    fn summary_takes_events_and_only_asked_rankings() {
        let text = serde_json::to_string_pretty(&suspicious()).unwrap();
        let none = read(&text, 0, false);
        let nets: Vec<String> = none.candidates.iter().map(|c| c.net.to_string()).collect();
        assert_eq!(nets, ["192.0.2.5/32"]);
        assert_eq!(
            none.candidates[0].reason.as_deref(),
            Some("leaky_bucket (rule login)")
        );
        assert_eq!(none.unread_claimed, 1, "claimed_events left unread");

        let one = read(&text, 1, false);
        let nets: Vec<String> = one.candidates.iter().map(|c| c.net.to_string()).collect();
        assert_eq!(nets, ["192.0.2.5/32", "203.0.113.1/32", "198.51.100.1/32"]);
        assert_eq!(
            one.candidates[1].reason.as_deref(),
            Some("top_original #1, 900 requests")
        );
        assert_eq!(one.candidates[1].provenance, Some(Provenance::Trusted));
        assert_eq!(one.candidates[2].provenance, Some(Provenance::Connection));
        assert_eq!(one.unread_claimed, 2, "claimed_events and top_claimed[0]");

        // Without a provenance, a top_original entry may have been claimed.
        let two = read(&text, 2, false);
        assert_eq!(two.candidates[2].net.to_string(), "203.0.113.2/32");
        assert!(two.candidates[2].is_claimed());
    }

    #[test]
    fn claimed_lists_are_read_only_when_trusted_and_always_as_claimed() {
        let mut summary = suspicious();
        // Whatever an entry of the claimed lists says of itself, the list is what counts.
        summary.claimed_events[0].provenance = Some(Provenance::Connection);
        summary.top_claimed[0].provenance = None;
        let text = serde_json::to_string(&summary).unwrap();
        let document = read(&text, 1, true);
        assert_eq!(document.unread_claimed, 0);
        let claimed: Vec<String> = document
            .candidates
            .iter()
            .filter(|c| c.is_claimed())
            .map(|c| format!("{} {}", c.net, c.origin))
            .collect();
        assert_eq!(
            claimed,
            [
                "198.51.100.77/32 s: claimed_events[0]",
                "198.51.100.66/32 s: top_claimed[0]"
            ]
        );
    }

    #[test]
    fn a_summary_missing_a_field_or_of_a_newer_schema_is_an_error() {
        let options = ReadOptions::default();
        let partial =
            r#"{"window_seconds":300,"top_original":[{"ip":"203.0.113.50","requests":5}]}"#;
        let error = parse_document("s", partial, &options).unwrap_err();
        assert!(matches!(error, InputError::BadJson { .. }), "{error:?}");
        let mut newer = suspicious();
        newer.schema_version += 1;
        let text = serde_json::to_string(&newer).unwrap();
        let error = parse_document("s", &text, &options).unwrap_err();
        assert!(
            error.to_string().contains("/suspicious schema_version"),
            "{error}"
        );
    }
}
