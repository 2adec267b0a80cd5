//! The collector: tail the ingress log, extract original source IPs, aggregate per interval and
//! report to Felix.

pub mod aggregate;
pub mod budget;
pub mod cardinality;
pub mod config;
pub mod detection;
pub mod detector_thread;
pub mod felix;
pub mod felix_recorder;
pub mod metrics;
pub mod origin;
pub mod parse;
pub mod pipeline;
pub mod run;
pub mod stdout;
pub mod tail;
