//! The command line: one subcommand per role, every option declared here and nowhere else, so
//! `--help`, docs/configuration.md and the code that reads an option meet in one place. Each
//! role's module reads its options struct; none of them parses arguments itself.

pub mod block;
pub mod certs;
pub mod collect;
pub mod inject;
pub mod webhook;

use clap::{Parser, Subcommand};

use crate::telemetry::LogLevel;

#[derive(Debug, Parser)]
#[command(
    name = "ingress-tap",
    version,
    about = "Original source IPs from ingress access logs into Calico flow logs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mutating admission webhook that injects the collector sidecar.
    Webhook {
        #[command(flatten)]
        options: webhook::WebhookOptions,
        /// Trace, Debug, Info, Warning, Error, Fatal or Panic (any case).
        #[arg(long, env = "LOG_LEVEL", default_value = "Info")]
        log_level: LogLevel,
        /// Log one JSON object per line.
        #[arg(long)]
        log_json: bool,
        /// Threads that serve reviews: 1 runs everything on one thread, more use tokio's
        /// work-stealing scheduler (why 1 is the default: docs/configuration.md).
        #[arg(
            long,
            env = "INGRESS_TAP_WORKER_THREADS",
            default_value_t = 1,
            value_parser = clap::value_parser!(u16).range(1..=1024)
        )]
        worker_threads: u16,
    },
    /// Follow the ingress log and report original source IPs to Felix (or stdout).
    Collect {
        #[command(flatten)]
        options: collect::CollectOptions,
    },
    /// Apply the webhook's injection to workload manifests offline (GitOps, CI). Exit codes:
    /// 0 done (or nothing to change with --check), 1 --check found changes, 2 error.
    Inject {
        #[command(flatten)]
        options: inject::InjectOptions,
    },
    /// Create and install the webhook's serving certificate.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// Turn chosen IPs and CIDRs into blocking objects (Calico, ingress-nginx, NGINX Inc,
    /// nftables): printed as YAML, or server-side applied with --apply.
    Block {
        #[command(flatten)]
        options: Box<block::BlockOptions>,
    },
}

/// Parses the command line; a refused value is echoed escaped, so that a flag value holding a
/// newline or an escape sequence cannot forge lines of the message.
pub fn parse() -> Cli {
    use clap::error::{ContextKind, ContextValue};
    let error = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(error) => error,
    };
    let Some(ContextValue::String(value)) = error.get(ContextKind::InvalidValue) else {
        error.exit()
    };
    let escaped = format!("{:?}", ingress_tap_core::block::escape(value));
    let text = error
        .render()
        .to_string()
        .replace(&format!("'{value}'"), &escaped);
    eprint!("{text}");
    std::process::exit(error.exit_code())
}
