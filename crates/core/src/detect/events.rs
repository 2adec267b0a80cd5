//! What the detectors report: one JSON object per line, in a schema that log shippers and
//! search indexes can map once and keep.
//!
//! Stability rules for [`Event`]: `schema_version` changes only when a field is removed, renamed
//! or changes type; new optional fields may appear within a version, so readers should ignore
//! fields they do not know. Every field keeps one JSON type across kinds (Elasticsearch maps a
//! field's type from its first document), which is why `details` is one flat object whose
//! members are present or absent by kind rather than a different shape per kind.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::{Connection, Provenance};

/// The version of the [`Event`] JSON schema written in every event.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// Which rule or check raised an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An IP's requests in a window reached a threshold rule's count.
    VolumeThreshold,
    /// An IP overflowed a leaky-bucket rule.
    LeakyBucket,
    /// An IP fell in a threat list.
    ThreatList,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::VolumeThreshold => "volume_threshold",
            EventKind::LeakyBucket => "leaky_bucket",
            EventKind::ThreatList => "threat_list",
        }
    }
}

/// Which address of a request a rule or list looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The original client IP picked from X-Real-IP / X-Forwarded-For.
    #[default]
    Original,
    /// The direct peer of the connection (a load balancer, or the client itself).
    Source,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Original => "original",
            Field::Source => "source",
        }
    }
}

impl Field {
    /// The provenance of an event or entry written without one (by a collector older than the
    /// field): a connection source was the peer; an original IP may have been claimed, so it
    /// is taken as claimed.
    pub fn assumed_provenance(self) -> Provenance {
        match self {
            Field::Source => Provenance::Connection,
            Field::Original => Provenance::Claimed,
        }
    }
}

/// The connection a request arrived on, in the names flow-log readers use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventConnection {
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

impl From<&Connection> for EventConnection {
    fn from(connection: &Connection) -> EventConnection {
        EventConnection {
            src_ip: connection.source_ip,
            src_port: connection.source_port,
            dst_ip: connection.destination_ip,
            dst_port: connection.destination_port,
            protocol: connection.protocol.as_str().to_owned(),
        }
    }
}

/// Kind-specific facts; absent members are omitted from the JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventDetails {
    /// `volume_threshold`: requests the IP certainly made in the window so far (a lower
    /// bound; see the heavy-hitter error bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `volume_threshold`: the rule's threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    /// `volume_threshold`: the rule's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
    /// `leaky_bucket`: the bucket's capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// `leaky_bucket`: the bucket's leak rate, in requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_per_second: Option<f64>,
    /// `threat_list`: the most specific list entry containing the IP, in CIDR form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `threat_list`: the entry's note (text after `;` or `#` on its line), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One detection, written as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// [`EVENT_SCHEMA_VERSION`] when written.
    pub schema_version: u32,
    /// RFC 3339 UTC timestamp with milliseconds, e.g. `2024-05-01T12:00:00.250Z`.
    pub time: String,
    pub kind: EventKind,
    /// The rule's name, or the list's name for `threat_list`.
    pub name: String,
    /// The address that matched.
    pub ip: IpAddr,
    /// Which address of the request `ip` is.
    pub field: Field,
    /// How far `ip` can be believed. Always written; absent only in events of collectors
    /// older than the field, which [`Event::provenance`] reads as [`Field::assumed_provenance`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// The request's connection; under a cool-down only the first request's is reported.
    pub connection: EventConnection,
    pub details: EventDetails,
}

impl Event {
    /// How far `ip` can be believed, for events written with or without the field.
    pub fn provenance(&self) -> Provenance {
        self.provenance
            .unwrap_or_else(|| self.field.assumed_provenance())
    }

    /// The event as one JSON line, newline included.
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        let mut line = serde_json::to_string(self)?;
        line.push('\n');
        Ok(line)
    }
}

/// Formats `time` as RFC 3339 in UTC with millisecond precision; times before the Unix epoch
/// (a badly set clock) are written as the epoch rather than failing the event.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let moment = time::OffsetDateTime::from(time.max(SystemTime::UNIX_EPOCH));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        moment.year(),
        u8::from(moment.month()),
        moment.day(),
        moment.hour(),
        moment.minute(),
        moment.second(),
        moment.millisecond()
    )
}

/// The most recent events of one budget, for `GET /suspicious`, each with its number so that
/// several rings merge in the order the events were raised; the oldest is dropped when full.
#[derive(Clone, Debug)]
pub struct RecentEvents {
    capacity: usize,
    events: VecDeque<(u64, Event)>,
}

impl RecentEvents {
    pub fn new(capacity: usize) -> RecentEvents {
        RecentEvents {
            capacity,
            events: VecDeque::new(),
        }
    }

    pub fn push(&mut self, sequence: u64, event: Event) {
        if self.capacity == 0 {
            return;
        }
        while self.events.len() >= self.capacity {
            self.events.pop_front();
        }
        self.events.push_back((sequence, event));
    }

    /// Oldest first, with their numbers.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, Event)> {
        self.events.iter()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_250);
        assert_eq!(rfc3339_utc(time), "2024-05-01T12:00:00.250Z");
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339_utc(before_epoch), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let event = |n: u8| Event {
            schema_version: EVENT_SCHEMA_VERSION,
            time: String::new(),
            kind: EventKind::ThreatList,
            name: n.to_string(),
            ip: IpAddr::from([10, 0, 0, n]),
            field: Field::Original,
            provenance: Some(Provenance::Claimed),
            connection: EventConnection {
                src_ip: IpAddr::from([10, 0, 0, 1]),
                src_port: 1,
                dst_ip: IpAddr::from([10, 0, 0, 2]),
                dst_port: 80,
                protocol: "tcp".to_owned(),
            },
            details: EventDetails::default(),
        };
        let mut ring = RecentEvents::new(2);
        for n in 0..5 {
            ring.push(u64::from(n), event(n));
        }
        let names: Vec<&str> = ring.iter().map(|(_, e)| e.name.as_str()).collect();
        assert_eq!(names, vec!["3", "4"]);
    }
}
