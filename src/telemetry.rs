//! Logging, metrics and health endpoints shared by every role.
