//! `ingress-tap certs`: generating the webhook's CA and serving certificate, and installing them.

use std::path::PathBuf;

/// `ingress-tap certs` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertsCommand {
    /// Write a new CA and a serving certificate for the webhook Service to a directory, and
    /// print the caBundle for the MutatingWebhookConfiguration.
    Generate(GenerateOptions),
    /// In the cluster: create or renew the webhook's TLS Secret and patch the caBundle of its
    /// MutatingWebhookConfiguration. Does nothing when both are current.
    Install(InstallOptions),
}

/// `ingress-tap certs generate` options.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateOptions {
    /// Name of the webhook's Service.
    #[arg(long)]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long)]
    pub namespace: String,
    /// Directory for ca.crt, tls.crt and tls.key (created when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// `ingress-tap certs install` options.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallOptions {
    /// Namespace of the webhook's Service and Secret.
    #[arg(long)]
    pub namespace: String,
    /// Name of the webhook's Service: the certificate is for SERVICE.NAMESPACE.svc.
    #[arg(long)]
    pub service: String,
    /// Name of the TLS Secret the webhook mounts.
    #[arg(long)]
    pub secret: String,
    /// Name of the MutatingWebhookConfiguration whose caBundle is kept current.
    #[arg(long)]
    pub webhook_config: String,
    /// Renew the certificate when it expires within this many days.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(0..=300))]
    pub renew_before_days: u16,
    /// Kubeconfig file; without it, the usual discovery (KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}
