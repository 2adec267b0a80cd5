//! The pure logic of ingress-tap: everything that decides, nothing that waits. No sockets,
//! files, clocks or threads; the `ingress-tap` crate is the I/O shell around these modules, so
//! every rule here is tested without a cluster, a log file or Felix.
//!
//! - [`model`]: the connection and attribution types the collector and detector share;
//! - [`net`]: the one reader and normaliser of IP addresses and networks;
//! - [`inject`]: Pod + injection config → decision and JSON patch;
//! - [`workload`]: the same injection applied to workload manifests (offline, GitOps);
//! - [`collect`]: one access-log line → record → attributed client → per-interval report;
//! - [`detect`]: heavy hitters, volume rules and threat lists over attributed requests, and
//!   the event schema they write;
//! - [`block`]: chosen addresses → a plan of enforcement objects, under the safety rules;
//! - [`log_level`]: the collector's log levels, as its users spell them.

#![forbid(unsafe_code)]

pub mod block;
pub mod collect;
pub mod detect;
pub mod inject;
pub mod log_level;
pub mod model;
pub mod net;
pub mod workload;
