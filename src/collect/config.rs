//! `ingress-tap collect` settings as the collector uses them: the client IP policy they make,
//! and the defaults the options ([`crate::cli::collect`]) refer to.

use crate::cli::collect::CollectOptions;
use ingress_tap_core::collect::origin::{ClientIpPolicy, TrustedProxies};

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
    use crate::cli::collect::DEFAULT_LOG_PATH;
    use clap::Parser;
    use ingress_tap_core::log_level::LogLevel;
    use std::path::PathBuf;

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
