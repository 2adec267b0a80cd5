//! Spotting suspicious original IPs as requests go by: unusual volume and untrusted sources.
//!
//! The collector sees every request before anything else does, so it is where a single IP
//! sending unusual amounts of traffic, or traffic from a known-bad network, is noticed live.
//! This module is the pure core of that: the collector's I/O shell reads files and the clock
//! and calls [`Detector::observe`] once per request with monotonic milliseconds and the wall
//! clock; everything here is deterministic given those inputs (and, for which bucket or
//! cool-down makes room for a new address, a seed — see [`Detector::with_seed`]).
//!
//! - [`heavy_hitters`]: the top N original IPs and the top N connection sources per window;
//! - [`rules`]: threshold and leaky-bucket rules, cool-downs, the per-budget event rate limit;
//! - [`threat_lists`]: parsing list files and one longest-prefix lookup over all of them;
//! - [`events`]: the JSON-lines event schema and the ring of recent events.
//!
//! # Memory
//!
//! Everything but the threat lists is allocated up front and never grows, whatever the
//! number of distinct addresses: [`TraceConfig::memory_bound_bytes`] adds up the heavy-hitter
//! summaries, each rule's counters or buckets, the cool-down map and the event buffers
//! (events counted at [`EVENT_BYTES_ESTIMATE`] each), for the three streams of addresses
//! ([`Stream`]). With the defaults that is about 10 MiB: 4 MiB of tables and 5 MiB for full
//! event buffers.
//! The threat lists cost what their entries cost — about 50 bytes per IPv4 CIDR — and are
//! reported by [`Detector::memory_bytes`], which measures the actual allocations.

mod batch;
mod config;
mod counters;
mod detector;
mod emitter;
pub mod events;
pub mod heavy_hitters;
pub mod rules;
mod stream;
pub mod threat_lists;
mod view;

pub use batch::BATCH_ADDRESSES;
pub use config::{
    default_rules, ListSource, TraceConfig, TraceConfigError, EVENT_BYTES_ESTIMATE,
    MAX_EVENTS_PER_SECOND, MAX_LISTS, MAX_RECENT_EVENTS, MAX_RULES, MAX_TABLE_ENTRIES, MAX_TOP_N,
};
pub use counters::{BudgetCount, NamedCount, TraceCounters};
pub use detector::Detector;
pub use stream::Stream;
pub use view::{CompletedWindowView, Suspicious, SUSPICIOUS_SCHEMA_VERSION};
