//! What to block, read from the places an operator has it: command-line arguments, threat
//! lists, the collector's JSON events and its `/suspicious` summary.
//!
//! Inputs are read tolerantly where their shape may grow (unknown JSON fields are ignored,
//! missing optional fields default) and strictly where a mistake would block the wrong thing:
//! an address that does not parse stops the run with its place named, instead of being skipped
//! while the rest is blocked.

use crate::net::parse_net;
use ipnet::IpNet;
use jiff::Timestamp;
use serde::Deserialize;

/// How the address reached the collector, which decides where it can be enforced: Calico
/// policy only ever sees the connection's source, never an address carried in HTTP headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeenAs {
    /// The TCP peer of the ingress connection: it came straight in.
    ConnectionSource,
    /// Known only from X-Forwarded-For / X-Real-IP: a proxy or load balancer stood between.
    HeadersOnly,
    /// An argument or a list entry: nothing says how it was seen.
    Unknown,
}

/// One address or network to block, with what is known about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Normalised: host bits cleared, IPv4-mapped IPv6 written as IPv4.
    pub net: IpNet,
    pub reason: Option<String>,
    pub seen_as: SeenAs,
    /// When the collector saw it; the block lasts from then, so re-reading the same events
    /// gives the same expiry instead of pushing it forward on every run.
    pub observed_at: Option<Timestamp>,
    /// Where the entry came from (`argument`, `FILE:LINE`), for messages.
    pub origin: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("{origin}: {text:?} is not an IP address or CIDR")]
    BadAddress { origin: String, text: String },
    #[error("{origin}: not valid JSON for a collector event or /suspicious summary: {message}")]
    BadJson { origin: String, message: String },
}

/// How to read a document; `Auto` looks at its first character (`{` means JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InputFormat {
    #[default]
    Auto,
    /// Threat list: one IP/CIDR per line, `#` or `;` comments, `CIDR ; note`.
    List,
    /// JSON lines of collector events, or one `/suspicious` document.
    Json,
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
        seen_as: SeenAs::Unknown,
        observed_at: None,
        origin,
    })
}

/// Reads one document (a file or stdin) named `name` for messages. `top` takes that many
/// addresses from each ranking of a `/suspicious` summary: rankings are volumes, not verdicts,
/// so none are taken unless asked for.
pub fn parse_document(
    name: &str,
    text: &str,
    format: InputFormat,
    top: usize,
) -> Result<Vec<Candidate>, InputError> {
    let is_json = match format {
        InputFormat::Json => true,
        InputFormat::List => false,
        InputFormat::Auto => text.trim_start().starts_with('{'),
    };
    if is_json {
        parse_json(name, text, top)
    } else {
        parse_list(name, text)
    }
}

/// Threat-list text: one IP/CIDR per line; lines starting with `#` or `;` are comments; the
/// text after the first `;` or `#` on an entry's line is its note, kept as the reason.
pub fn parse_list(name: &str, text: &str) -> Result<Vec<Candidate>, InputError> {
    let mut candidates = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (address, note) = match line.split_once([';', '#']) {
            Some((address, note)) => (address, Some(note.trim())),
            None => (line, None),
        };
        let origin = format!("{name}:{}", index + 1);
        let net = parse_net(address.trim()).ok_or_else(|| InputError::BadAddress {
            origin: origin.clone(),
            text: address.trim().to_owned(),
        })?;
        candidates.push(Candidate {
            net,
            reason: note.filter(|note| !note.is_empty()).map(str::to_owned),
            seen_as: SeenAs::Unknown,
            observed_at: None,
            origin,
        });
    }
    Ok(candidates)
}

/// The fields of a collector event that blocking uses; every other field is ignored so that
/// later schema versions keep working.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EventRecord {
    time: Option<String>,
    kind: Option<String>,
    rule: Option<String>,
    list: Option<String>,
    ip: Option<String>,
    field: Option<String>,
}

/// One ranking row of `/suspicious`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RankedAddress {
    ip: Option<String>,
    requests: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SuspiciousSummary {
    top_original: Vec<RankedAddress>,
    top_sources: Vec<RankedAddress>,
    recent_events: Vec<EventRecord>,
}

/// Keys that only a `/suspicious` summary has; an event has none of them.
const SUMMARY_KEYS: [&str; 3] = ["top_original", "top_sources", "recent_events"];

fn parse_json(name: &str, text: &str, top: usize) -> Result<Vec<Candidate>, InputError> {
    // A pretty-printed /suspicious document spans many lines; events are one per line.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let is_summary = value
            .as_object()
            .is_some_and(|object| SUMMARY_KEYS.iter().any(|key| object.contains_key(*key)));
        if is_summary {
            let summary: SuspiciousSummary =
                serde_json::from_value(value).map_err(|error| InputError::BadJson {
                    origin: name.to_owned(),
                    message: error.to_string(),
                })?;
            return summary_candidates(name, summary, top);
        }
    }
    let mut candidates = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{name}:{}", index + 1);
        let event: EventRecord =
            serde_json::from_str(line).map_err(|error| InputError::BadJson {
                origin: origin.clone(),
                message: error.to_string(),
            })?;
        candidates.extend(event_candidate(&origin, event)?);
    }
    Ok(candidates)
}

fn summary_candidates(
    name: &str,
    summary: SuspiciousSummary,
    top: usize,
) -> Result<Vec<Candidate>, InputError> {
    let mut candidates = Vec::new();
    for (index, event) in summary.recent_events.into_iter().enumerate() {
        let origin = format!("{name}: recent_events[{index}]");
        candidates.extend(event_candidate(&origin, event)?);
    }
    let rankings = [
        ("top_original", summary.top_original, SeenAs::HeadersOnly),
        ("top_sources", summary.top_sources, SeenAs::ConnectionSource),
    ];
    for (ranking, rows, seen_as) in rankings {
        for (index, row) in rows.into_iter().take(top).enumerate() {
            let Some(ip) = row.ip else { continue };
            let origin = format!("{name}: {ranking}[{index}]");
            let net = parse_net(&ip).ok_or_else(|| InputError::BadAddress {
                origin: origin.clone(),
                text: ip.clone(),
            })?;
            let requests = row
                .requests
                .map(|count| format!(", {count} requests"))
                .unwrap_or_default();
            candidates.push(Candidate {
                net,
                reason: Some(format!("{ranking} #{}{requests}", index + 1)),
                seen_as,
                observed_at: None,
                origin,
            });
        }
    }
    Ok(candidates)
}

fn event_candidate(origin: &str, event: EventRecord) -> Result<Option<Candidate>, InputError> {
    let Some(ip) = event.ip else {
        return Ok(None);
    };
    let net = parse_net(&ip).ok_or_else(|| InputError::BadAddress {
        origin: origin.to_owned(),
        text: ip.clone(),
    })?;
    let seen_as = match event.field.as_deref() {
        Some("source") => SeenAs::ConnectionSource,
        Some("original") => SeenAs::HeadersOnly,
        _ => SeenAs::Unknown,
    };
    let kind = event.kind.unwrap_or_else(|| "event".to_owned());
    let reason = match (event.rule, event.list) {
        (Some(rule), _) => format!("{kind} (rule {rule})"),
        (None, Some(list)) => format!("{kind} (list {list})"),
        (None, None) => kind,
    };
    Ok(Some(Candidate {
        net,
        reason: Some(reason),
        seen_as,
        // An unreadable time falls back to "now": the event still counts, it just cannot
        // anchor the expiry.
        observed_at: event.time.and_then(|time| time.parse().ok()),
        origin: origin.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(candidates[2].reason.as_deref(), Some("note"));
    }

    #[test]
    fn list_names_the_bad_line() {
        let error = parse_list("l", "203.0.113.1\nnot-an-ip ; x\n").unwrap_err();
        assert_eq!(
            error,
            InputError::BadAddress {
                origin: "l:2".into(),
                text: "not-an-ip".into()
            }
        );
    }

    #[test]
    fn events_carry_origin_reason_and_time() {
        let text = concat!(
            r#"{"schema_version":1,"time":"2026-01-01T10:00:00Z","kind":"volume_threshold","rule":"burst","ip":"203.0.113.7","field":"original","connection":{"x":1},"future":true}"#,
            "\n",
            r#"{"kind":"threat_list","list":"feed","ip":"198.51.100.9","field":"source"}"#,
            "\n"
        );
        let candidates = parse_document("-", text, InputFormat::Auto, 0).unwrap();
        assert_eq!(candidates.len(), 2);
        assert_eq!(candidates[0].seen_as, SeenAs::HeadersOnly);
        assert_eq!(
            candidates[0].reason.as_deref(),
            Some("volume_threshold (rule burst)")
        );
        assert_eq!(
            candidates[0].observed_at,
            Some("2026-01-01T10:00:00Z".parse().unwrap())
        );
        assert_eq!(candidates[1].seen_as, SeenAs::ConnectionSource);
        assert_eq!(
            candidates[1].reason.as_deref(),
            Some("threat_list (list feed)")
        );
    }

    #[test]
    fn summary_takes_events_and_only_asked_rankings() {
        let text = r#"{
          "window_seconds": 60,
          "top_original": [{"ip":"203.0.113.1","requests":900,"error":3},{"ip":"203.0.113.2","requests":5}],
          "top_sources": [{"ip":"198.51.100.1","requests":10}],
          "recent_events": [{"kind":"leaky_bucket","rule":"r","ip":"192.0.2.5","field":"source"}]
        }"#;
        let none = parse_document("s", text, InputFormat::Auto, 0).unwrap();
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].net.to_string(), "192.0.2.5/32");
        let one = parse_document("s", text, InputFormat::Auto, 1).unwrap();
        let nets: Vec<String> = one.iter().map(|c| c.net.to_string()).collect();
        assert_eq!(nets, ["192.0.2.5/32", "203.0.113.1/32", "198.51.100.1/32"]);
        assert_eq!(
            one[1].reason.as_deref(),
            Some("top_original #1, 900 requests")
        );
    }

    #[test]
    fn garbage_json_line_is_an_error() {
        let error = parse_document("e", "{\"ip\":\"192.0.2.1\"}\n{oops\n", InputFormat::Auto, 0)
            .unwrap_err();
        assert!(matches!(error, InputError::BadJson { ref origin, .. } if origin == "e:2"));
    }
}
