//! ingress-tap: the Calico ingress log collector, and the admission webhook that injects it.
//!
//! Each role is a thin I/O shell around a pure core:
//! - [`inject`]: Pod + injection config → decision and JSON patch (pure);
//! - [`admission`]: the HTTPS admission webhook serving that engine;
//! - [`collect`]: tail the ingress log, parse, aggregate, report to Felix;
//! - [`model`]: the connection and attribution types the collector and detector share;
//! - [`net`]: the one reader and normaliser of IP addresses and networks;
//! - [`serve`]: HTTP connections under limits, for every port the roles serve;
//! - [`telemetry`]: logging, metrics and health endpoints shared by the roles;
//! - [`watch`]: file-change notification shared by every hot-reloaded file.

#![forbid(unsafe_code)]

pub mod admission;
pub mod block;
pub mod certs;
pub mod cgroup;
pub mod collect;
pub mod detect;
pub mod inject;
pub mod inject_config;
mod json_scan;
pub mod log_level;
pub mod model;
pub mod net;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod workload;

pub mod felix_proto {
    //! Types and gRPC stubs generated from `proto/felix.proto` at build time.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("felix");
}
