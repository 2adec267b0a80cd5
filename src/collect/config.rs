//! `ingress-tap collect` settings: the environment variables users of the reference collector
//! already set, each also a flag, with the same defaults.
//!
//! Each value's placeholder in help and error messages is the variable's name, so a bad value
//! in a pod spec is reported as, for example, "invalid value 'abc' for
//! '--interval-seconds <INGRESS_LOG_INTERVAL_SECONDS>'".

use ingress_tap_core::collect::budget::parse_memory_limit;
use ingress_tap_core::collect::origin::{ClientIpPolicy, TrustedProxies};
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
    pub trace: super::detection::TraceOptions,

    /// How long SIGTERM waits for the last reports to reach Felix.
    #[arg(
        long = "shutdown-timeout-seconds",
        env = "INGRESS_TAP_SHUTDOWN_TIMEOUT_SECONDS",
        value_name = "INGRESS_TAP_SHUTDOWN_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    pub shutdown_timeout_seconds: u64,
}

impl CollectOptions {
    /// How the client is told apart from proxies, from the trusted-proxy settings.
    pub fn client_ip_policy(&self) -> ClientIpPolicy {
        if let Some(hops) = self.trusted_hops {
            ClientIpPolicy::TrustedHops(usize::from(hops))
        } else if !self.trusted_proxies.is_empty() {
            ClientIpPolicy::TrustedProxies(TrustedProxies::new(
                self.trusted_proxies.iter().map(|net| net.trunc()).collect(),
            ))
        } else {
            ClientIpPolicy::Reference
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        options: CollectOptions,
    }

    #[test]
    fn defaults_match_the_reference_collector() {
        let cli = Cli::try_parse_from(["collect"]).unwrap();
        let o = cli.options;
        // The environment may set these in a developer shell; only check when it does not.
        if std::env::var_os("INGRESS_LOG_INTERVAL_SECONDS").is_none() {
            assert_eq!(o.interval_seconds, 5);
        }
        if std::env::var_os("INGRESS_LOG_REQUESTS_PER_INTERVAL").is_none() {
            assert_eq!(o.requests_per_interval, 10);
        }
        if std::env::var_os("INGRESS_LOG_PATH").is_none() {
            assert_eq!(o.log_path, PathBuf::from(DEFAULT_LOG_PATH));
        }
        if std::env::var_os("LOG_LEVEL").is_none() {
            assert_eq!(o.log_level, LogLevel::Panic);
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Cli::try_parse_from(["collect", "--interval-seconds", "0"]).unwrap_err();
        assert!(
            err.to_string().contains("INGRESS_LOG_INTERVAL_SECONDS"),
            "{err}"
        );
        let err = Cli::try_parse_from(["collect", "--requests-per-interval", "ten"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("INGRESS_LOG_REQUESTS_PER_INTERVAL"),
            "{err}"
        );
        let err = Cli::try_parse_from(["collect", "--memory-limit", "64MB"]).unwrap_err();
        assert!(
            err.to_string().contains("INGRESS_TAP_MEMORY_LIMIT"),
            "{err}"
        );
        let ok = Cli::try_parse_from(["collect", "--memory-limit", "128Mi"]).unwrap();
        assert_eq!(ok.options.memory_limit, Some(128 << 20));
        let err = Cli::try_parse_from(["collect", "--log-level", "loud"]).unwrap_err();
        assert!(err.to_string().contains("LOG_LEVEL"), "{err}");
        assert!(err.to_string().contains("Warning"), "{err}");
        let ok = Cli::try_parse_from(["collect", "--requests-per-interval", "-1"]).unwrap();
        assert_eq!(ok.options.requests_per_interval, -1);
        let err = Cli::try_parse_from(["collect", "--trusted-proxies", "10.0.0.0/33"]).unwrap_err();
        assert!(
            err.to_string().contains("INGRESS_TAP_TRUSTED_PROXIES"),
            "{err}"
        );
    }

    #[test]
    fn trusted_proxy_settings_choose_the_policy() {
        let cli =
            Cli::try_parse_from(["collect", "--trusted-proxies", "10.0.0.0/8, 192.168.1.7/32"]);
        // Spaces after commas are a common way to write lists; clap passes them through.
        assert!(
            cli.is_err()
                || matches!(
                    cli.unwrap().options.client_ip_policy(),
                    ClientIpPolicy::TrustedProxies(_)
                )
        );
        let cli =
            Cli::try_parse_from(["collect", "--trusted-proxies", "10.0.0.0/8,192.168.1.7/32"])
                .unwrap();
        let ClientIpPolicy::TrustedProxies(trusted) = cli.options.client_ip_policy() else {
            panic!("expected trusted proxies");
        };
        assert!(trusted.contains("10.2.3.4".parse().unwrap()));
        assert!(trusted.contains("192.168.1.7".parse().unwrap()));
        assert!(!trusted.contains("192.168.1.8".parse().unwrap()));
        let cli = Cli::try_parse_from(["collect", "--trusted-hops", "2"]).unwrap();
        assert_eq!(
            cli.options.client_ip_policy(),
            ClientIpPolicy::TrustedHops(2)
        );
        let err = Cli::try_parse_from([
            "collect",
            "--trusted-hops",
            "1",
            "--trusted-proxies",
            "10.0.0.0/8",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("cannot be used with"), "{err}");
        if std::env::var_os("INGRESS_TAP_TRUSTED_PROXIES").is_none()
            && std::env::var_os("INGRESS_TAP_TRUSTED_HOPS").is_none()
        {
            let cli = Cli::try_parse_from(["collect"]).unwrap();
            assert_eq!(cli.options.client_ip_policy(), ClientIpPolicy::Reference);
        }
    }
}
