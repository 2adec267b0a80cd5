//! The collector process: tail the ingress log, run each line through the pure pipeline of
//! [`ingress_tap_core::collect`], report each interval to Felix, and feed the detector.

pub mod config;
pub mod detection;
pub mod detector_thread;
pub mod felix;
pub mod metrics;
pub mod pipeline;
pub mod run;
pub mod stdout;
pub mod tail;
