//! Felix's Policy Sync API (`proto/felix.proto`, the subset the collector speaks): message
//! types and the gRPC client, generated at build time; the server with the `server` feature.
//! The one declaration of the wire contract, shared by the collector and the test Felix.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("felix");
