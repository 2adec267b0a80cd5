//! ingress-tap: the Calico ingress log collector, the admission webhook that injects it, and the
//! `block` command. This crate is the I/O shell: sockets, files, TLS, gRPC and the Kubernetes
//! API. What each role decides lives in [`ingress_tap_core`], which does no I/O.
//!
//! - [`cli`]: every subcommand and option, declared once;
//! - [`admission`]: the HTTPS admission webhook serving the injection engine;
//! - [`collect`]: the collector process: tail the log, report to Felix, feed the detector;
//! - [`block`]: `ingress-tap block`: read inputs and existing objects, print or apply;
//! - [`workload`]: `ingress-tap inject`: the injection applied to manifest files;
//! - [`certs`]: the webhook's CA and serving certificate, generated and installed;
//! - [`tls`]: serving certificates checked, loaded and swapped on change;
//! - [`serve`]: HTTP connections under limits, for every port the roles serve;
//! - [`telemetry`]: logging, metrics and health endpoints shared by the roles;
//! - [`watch`]: file-change notification shared by every hot-reloaded file;
//! - [`cgroup`], [`inject_config`]: the container's limits and the injection config file.

#![forbid(unsafe_code)]

pub mod admission;
pub mod block;
pub mod certs;
pub mod cgroup;
pub mod cli;
pub mod collect;
pub mod inject_config;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod workload;
