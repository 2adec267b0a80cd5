//! File-change notification for hot-reloaded files (config, certificates, threat lists).
