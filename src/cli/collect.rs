//! `ingress-tap collect`: the environment variables the reference collector reads (INGRESS_LOG_*,
//! FELIX_DIAL_TARGET, LOG_LEVEL), each also a flag with the same default, the attribution of
//! clients, and tracing.
//!
//! Each value's placeholder in help and error messages is the variable's name, so a bad value
//! in a pod spec is reported as, for example, "invalid value 'abc' for
//! '--interval-seconds <INGRESS_LOG_INTERVAL_SECONDS>'".

use ingress_tap_core::collect::budget::parse_memory_limit;
use ingress_tap_core::detect::ListSource;
use ingress_tap_core::log_level::LogLevel;
use ingress_tap_core::net::parse_network;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The reference collector's default log path, which the injected emptyDir serves.
pub const DEFAULT_LOG_PATH: &str = "/var/log/calico/ingress/ingress.log";

/// `ingress-tap collect` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectOptions {
    /// Length of an aggregation interval, in seconds (1-3600).
    #[arg(
        long = "interval-seconds",
        env = "INGRESS_LOG_INTERVAL_SECONDS",
        value_name = "INGRESS_LOG_INTERVAL_SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub interval_seconds: u64,

    /// Distinct original IPs carried to Felix per interval, across all connections; a negative
    /// value removes the cap. IPs over the cap still count in each connection's value.
    #[arg(
        long = "requests-per-interval",
        env = "INGRESS_LOG_REQUESTS_PER_INTERVAL",
        value_name = "INGRESS_LOG_REQUESTS_PER_INTERVAL",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    pub requests_per_interval: i64,

    /// The ingress access log to follow.
    #[arg(
        long = "log-path",
        env = "INGRESS_LOG_PATH",
        value_name = "INGRESS_LOG_PATH",
        default_value = DEFAULT_LOG_PATH
    )]
    pub log_path: PathBuf,

    /// Felix's Policy Sync socket (a path, or unix://PATH). Without it, reports are written
    /// to stdout as JSON lines.
    #[arg(
        long = "felix-dial-target",
        env = "FELIX_DIAL_TARGET",
        value_name = "FELIX_DIAL_TARGET"
    )]
    pub felix_dial_target: Option<String>,

    /// Trace, Debug, Info, Warning, Error, Fatal or Panic (any case).
    #[arg(
        long = "log-level",
        env = "LOG_LEVEL",
        value_name = "LOG_LEVEL",
        default_value = "Panic"
    )]
    pub log_level: LogLevel,

    /// Address of the health and metrics listener (/healthz, /metrics).
    #[arg(
        long = "metrics-listen",
        env = "INGRESS_TAP_METRICS_LISTEN",
        value_name = "INGRESS_TAP_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub metrics_listen: SocketAddr,

    /// Lines longer than this many bytes are skipped and counted.
    #[arg(
        long = "max-line-bytes",
        env = "INGRESS_TAP_MAX_LINE_BYTES",
        value_name = "INGRESS_TAP_MAX_LINE_BYTES",
        default_value_t = 64 * 1024,
        value_parser = clap::value_parser!(u64).range(256..=16 * 1024 * 1024)
    )]
    pub max_line_bytes: u64,

    /// Where the read position is kept; default: beside the log, `.<file name>.checkpoint`.
    #[arg(
        long = "checkpoint-path",
        env = "INGRESS_TAP_CHECKPOINT_PATH",
        value_name = "INGRESS_TAP_CHECKPOINT_PATH"
    )]
    pub checkpoint_path: Option<PathBuf>,

    /// The container's memory limit, which every memory bound of the collector is derived from:
    /// bytes, or a quantity such as 64Mi. Default: the cgroup's limit, else 64Mi (the injected
    /// limit).
    #[arg(
        long = "memory-limit",
        env = "INGRESS_TAP_MEMORY_LIMIT",
        value_name = "INGRESS_TAP_MEMORY_LIMIT",
        value_parser = parse_memory_limit
    )]
    pub memory_limit: Option<usize>,

    /// Closed intervals held while Felix is unreachable; the oldest is dropped beyond this.
    #[arg(
        long = "queue-intervals",
        env = "INGRESS_TAP_QUEUE_INTERVALS",
        value_name = "INGRESS_TAP_QUEUE_INTERVALS",
        default_value_t = 12,
        value_parser = clap::value_parser!(u64).range(1..=10_000)
    )]
    pub queue_intervals: u64,

    /// Proxies whose X-Forwarded-For entries are believed (comma-separated CIDRs). With this,
    /// headers count only on connections from these addresses, and X-Forwarded-For is walked
    /// from the right past them: the first untrusted entry is the client. Default: the
    /// reference rule (X-Real-IP, else the first valid X-Forwarded-For entry).
    #[arg(
        long = "trusted-proxies",
        env = "INGRESS_TAP_TRUSTED_PROXIES",
        value_name = "INGRESS_TAP_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_network,
        conflicts_with = "trusted_hops"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Number of proxies in front of the ingress that append to X-Forwarded-For: the client is
    /// the entry this many places from the right (0 = the rightmost). Exclusive with
    /// --trusted-proxies.
    #[arg(
        long = "trusted-hops",
        env = "INGRESS_TAP_TRUSTED_HOPS",
        value_name = "INGRESS_TAP_TRUSTED_HOPS",
        value_parser = clap::value_parser!(u16).range(0..=64)
    )]
    pub trusted_hops: Option<u16>,

    /// Trace: suspicious original IPs.
    #[command(flatten)]
    pub trace: TraceOptions,

    /// How long SIGTERM waits for the last reports to reach Felix.
    #[arg(
        long = "shutdown-timeout-seconds",
        env = "INGRESS_TAP_SHUTDOWN_TIMEOUT_SECONDS",
        value_name = "INGRESS_TAP_SHUTDOWN_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    pub shutdown_timeout_seconds: u64,
}

/// `ingress-tap collect` trace settings.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceOptions {
    /// Spot suspicious original IPs (volume rules, threat lists) and publish them.
    #[arg(
        long = "trace",
        env = "INGRESS_TAP_TRACE",
        value_name = "INGRESS_TAP_TRACE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub enabled: bool,

    /// Trace settings file (YAML: window, top N, rules, cool-down, threat lists); see
    /// docs/trace.md. Flags below override it.
    #[arg(
        long = "trace-config",
        env = "INGRESS_TAP_TRACE_CONFIG",
        value_name = "INGRESS_TAP_TRACE_CONFIG"
    )]
    pub config: Option<PathBuf>,

    /// A threat list as NAME=PATH (one IP or CIDR per line; `#` and `;` comments); repeat the
    /// flag, or separate with commas in the variable. Reloaded when the file changes.
    #[arg(
        long = "threat-list",
        env = "INGRESS_TAP_THREAT_LISTS",
        value_name = "INGRESS_TAP_THREAT_LISTS",
        value_delimiter = ',',
        value_parser = parse_list_source
    )]
    pub threat_lists: Vec<ListSource>,

    /// Length of the top-N window in seconds (default 60).
    #[arg(
        long = "trace-window-seconds",
        env = "INGRESS_TAP_TRACE_WINDOW_SECONDS",
        value_name = "INGRESS_TAP_TRACE_WINDOW_SECONDS"
    )]
    pub window_seconds: Option<u64>,

    /// How many IPs the top lists show (default 20).
    #[arg(
        long = "trace-top-n",
        env = "INGRESS_TAP_TRACE_TOP_N",
        value_name = "INGRESS_TAP_TRACE_TOP_N"
    )]
    pub top_n: Option<usize>,

    /// Where events go as JSON lines: `-` for stdout, or a file (appended).
    #[arg(
        long = "events-output",
        env = "INGRESS_TAP_EVENTS_OUTPUT",
        value_name = "INGRESS_TAP_EVENTS_OUTPUT",
        default_value = "-"
    )]
    pub events_output: String,
}

/// `NAME=PATH` into a list source.
pub fn parse_list_source(text: &str) -> Result<ListSource, String> {
    let (name, path) = text
        .trim()
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=PATH"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("{text:?} is not NAME=PATH"));
    }
    Ok(ListSource {
        name: name.to_owned(),
        path: PathBuf::from(path),
    })
}
