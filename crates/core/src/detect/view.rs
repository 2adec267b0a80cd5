//! What `GET /suspicious` serves: the top lists of the current and the last window, and the
//! recent events.

use serde::{Deserialize, Serialize};

use super::events::Event;
use super::heavy_hitters::TopEntry;

/// The version of the [`Suspicious`] JSON schema.
pub const SUSPICIOUS_SCHEMA_VERSION: u32 = 1;

/// The top lists of the last completed window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedWindowView {
    /// RFC 3339 UTC start of the window.
    pub started: String,
    /// Requests with a verified original IP (the peer itself, or walked past trusted proxies),
    /// in the window.
    pub requests_original: u64,
    /// Requests in the window.
    pub requests_sources: u64,
    pub top_original: Vec<TopEntry>,
    pub top_sources: Vec<TopEntry>,
    /// Requests whose original IP was claimed, in the window.
    #[serde(default)]
    pub requests_claimed: u64,
    #[serde(default)]
    pub top_claimed: Vec<TopEntry>,
}

/// What `GET /suspicious` serves and `ingress-tap block` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suspicious {
    pub schema_version: u32,
    pub window_seconds: u64,
    /// RFC 3339 UTC start of the current window; `null` before the first request.
    pub window_started: Option<String>,
    /// The current window's busiest original IPs so far, busiest first.
    pub top_original: Vec<TopEntry>,
    /// The current window's busiest connection sources so far, busiest first.
    pub top_sources: Vec<TopEntry>,
    /// The last completed window; `null` until one has completed.
    pub previous_window: Option<CompletedWindowView>,
    /// The most recent events, oldest first.
    pub recent_events: Vec<Event>,
    /// The current window's busiest *claimed* original IPs: addresses read from headers that
    /// nothing vouches for. Shown so an operator sees what the headers say; `block` takes
    /// none of them unless told to.
    #[serde(default)]
    pub top_claimed: Vec<TopEntry>,
    /// The most recent events about claimed addresses, oldest first, kept apart so that a
    /// flood of them can neither push verified events out of `recent_events` nor be mistaken
    /// for them.
    #[serde(default)]
    pub claimed_events: Vec<Event>,
}
