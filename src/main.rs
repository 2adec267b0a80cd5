//! `ingress-tap`: one binary, one subcommand per role.

use clap::{Parser, Subcommand};
use ingress_tap::telemetry::{self, LogLevel};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "ingress-tap",
    version,
    about = "Original source IPs from ingress access logs into Calico flow logs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the mutating admission webhook that injects the collector sidecar.
    Webhook {
        #[command(flatten)]
        options: ingress_tap::admission::WebhookOptions,
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
        options: ingress_tap::collect::config::CollectOptions,
    },
    /// Apply the webhook's injection to workload manifests offline (GitOps, CI). Exit codes:
    /// 0 done (or nothing to change with --check), 1 --check found changes, 2 error.
    Inject {
        #[command(flatten)]
        options: ingress_tap::workload::InjectOptions,
    },
    /// Create and install the webhook's serving certificate.
    Certs {
        #[command(subcommand)]
        command: ingress_tap::certs::CertsCommand,
    },
    /// Turn chosen IPs and CIDRs into blocking objects (Calico, ingress-nginx, NGINX Inc,
    /// nftables): printed as YAML, or server-side applied with --apply.
    Block {
        #[command(flatten)]
        options: Box<ingress_tap::block::BlockOptions>,
    },
}

/// Parses the command line; a refused value is echoed escaped, so that a flag value holding a
/// newline or an escape sequence cannot forge lines of the message.
fn parse_cli() -> Cli {
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

fn main() -> ExitCode {
    let cli = parse_cli();
    if let Command::Inject { options } = &cli.command {
        // Pure file work with its own exit codes: no runtime needed.
        return ingress_tap::workload::run(options);
    }
    let runtime = match &cli.command {
        Command::Webhook { worker_threads, .. } => {
            ingress_tap::admission::server::serving_runtime(usize::from(*worker_threads))
        }
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ingress-tap: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Webhook {
                options,
                log_level,
                log_json,
                worker_threads: _,
            } => {
                telemetry::init_logging(log_level, log_json);
                ingress_tap::admission::run(options).await
            }
            Command::Collect { options } => {
                telemetry::init_logging(options.log_level, false);
                let policy = options.client_ip_policy();
                ingress_tap::collect::run::run(options, policy).await
            }
            // Handled above, before the runtime starts.
            Command::Inject { .. } => Ok(()),
            Command::Certs { command } => ingress_tap::certs::run(command).await,
            Command::Block { options } => ingress_tap::block::run(*options).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ingress-tap: {}", ingress_tap::telemetry::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}
