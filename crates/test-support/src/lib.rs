//! What the tests and benchmarks of ingress-tap stand up in place of the cluster's parts.
//! Kept out of the product: nothing here ships in the binary.
//!
//! - [`felix_recorder`]: a Felix Policy Sync server on a Unix socket that records every report.

#![forbid(unsafe_code)]

pub mod felix_recorder;
