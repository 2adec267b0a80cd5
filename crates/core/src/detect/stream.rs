//! The streams a request's addresses are split into: connection sources, verified original
//! IPs and claimed ones.

use serde::{Deserialize, Serialize};

use super::events::Field;
use crate::model::Provenance;

/// The streams a request's addresses are split into. Each has its own top summary, rule
/// state, cool-downs, event budgets and recent events, so that none can crowd out another:
/// addresses anyone can write into a header cannot use up what verified ones need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Connection sources: the direct peers.
    Source,
    /// Verified original IPs: the peer itself, or walked past trusted proxies or hops.
    Original,
    /// Claimed original IPs: read from a header nothing vouches for.
    Claimed,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Source, Stream::Original, Stream::Claimed];

    /// The stream an address of `field` with `provenance` belongs to.
    pub fn of(field: Field, provenance: Provenance) -> Stream {
        match (field, provenance) {
            (Field::Source, _) => Stream::Source,
            (Field::Original, Provenance::Claimed) => Stream::Claimed,
            (Field::Original, _) => Stream::Original,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Source => "source",
            Stream::Original => "original",
            Stream::Claimed => "claimed",
        }
    }

    pub(super) fn field(self) -> Field {
        match self {
            Stream::Source => Field::Source,
            Stream::Original | Stream::Claimed => Field::Original,
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}
