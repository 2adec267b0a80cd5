//! What the collector computes from the ingress log, without reading it: one line into a
//! record ([`parse`]), the record's client ([`origin`]), and the records of an interval into one
//! report per connection ([`aggregate`], counting distinct clients within a memory bound with
//! [`cardinality`]), all within the shares of one memory limit ([`budget`]). The `ingress-tap` crate's `collect` module tails the file and reports to
//! Felix around these.

pub mod aggregate;
pub mod budget;
pub mod cardinality;
pub mod origin;
pub mod parse;
