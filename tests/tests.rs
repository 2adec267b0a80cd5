//! ingress-tap's integration tests: one binary, one module per area, so the shared harnesses
//! and the crates are compiled and linked once.
//!
//! Six tests keep binaries of their own, because the test harness runs a binary's tests
//! concurrently in one process: `webhook_hostile` measures its own process's memory and floods
//! its own connections; `collect_budget` measures the collector's memory and CPU against a
//! Felix it slows down; `e2e_control_plane`, `e2e_node`, `control_plane_smoke` and `block_apply`
//! each start a kube-apiserver (and a kubelet), which take the machine. Cargo runs binaries one
//! after another, so none of them shares the machine with the rest.

mod collector_harness;
mod common;
use collector_harness::nginx_process;

mod block;
mod block_nginx;
mod certs;
mod collect_core;
mod collect_faults;
mod collect_nginx;
mod collect_reference;
mod hiding_nginx;
mod inject_engine;
mod inject_offline;
mod manifests;
mod tail_rotation;
mod trace_attacks;
mod trace_core;
mod trace_nginx;
mod webhook_local_mode;
mod webhook_tls;
