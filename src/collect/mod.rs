//! The collector: tail the ingress log, extract original source IPs, aggregate per interval and
//! report to Felix.

pub mod aggregate;
pub mod cardinality;
pub mod origin;
pub mod parse;
pub mod tail;
