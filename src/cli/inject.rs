//! `ingress-tap inject`: the injection applied offline to workload manifests.

use std::path::PathBuf;

/// `ingress-tap inject` options.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectOptions {
    /// YAML stream to inject (one or more documents); `-` reads standard input.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: PathBuf,
    /// Injection config file (YAML), the same file the webhook reads; built-in defaults without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write nothing; exit 1 when some template would be injected, 0 when none would.
    #[arg(long, conflicts_with = "output")]
    pub check: bool,
    /// Inject every pod template not labelled `ingress-tap/inject: disabled`. Without it, only
    /// templates labelled `ingress-tap/inject: enabled` are injected (offline there are no
    /// webhook selectors to choose the pods).
    #[arg(long)]
    pub all: bool,
    /// Where to write the result; standard output by default. May name the input file.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}
