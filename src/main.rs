//! `ingress-tap`: one binary, one subcommand per role.

use ingress_tap::cli::{self, Command};
use ingress_tap::telemetry;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
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
