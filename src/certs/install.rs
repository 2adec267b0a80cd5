//! `ingress-tap certs install`: keep the webhook's TLS Secret and the caBundle of its
//! MutatingWebhookConfiguration current, from inside or outside the cluster.
//!
//! Steps, each skipped when there is nothing to do, so a second run performs no write:
//! 1. GET the Secret. It is renewed when it is missing, lacks `tls.crt`, `tls.key` or
//!    `ca.crt`, when the certificate does not verify under `ca.crt` for
//!    `SERVICE.NAMESPACE.svc` and `SERVICE.NAMESPACE.svc.cluster.local`, when the key does not
//!    match, or when the certificate expires within `--renew-before-days`. Renewal makes a new
//!    CA and certificate and POSTs the Secret (absent) or PUTs it with the `resourceVersion`
//!    read (present), so a concurrent change makes the write fail instead of being lost. The
//!    new `ca.crt` also carries the previous CA while it is valid (see
//!    [`plan::rotated_ca_bundle`]).
//! 2. GET the MutatingWebhookConfiguration and, when any of its webhooks has a caBundle other
//!    than the Secret's `ca.crt`, send one JSON patch (`application/json-patch+json`) that
//!    tests each such webhook's name and sets its `caBundle`. Every webhook of the named
//!    configuration is patched: the configuration belongs to this webhook.
//!
//! What a real cluster adds to the request shapes the tests check:
//! - RBAC: the identity needs `get`, `create`, `update` on `secrets` in the namespace, and
//!   `get`, `patch` on `mutatingwebhookconfigurations` (cluster scope), preferably restricted
//!   with `resourceNames`. A 403 is reported as it comes.
//! - The API server fills in `uid`, `creationTimestamp`, `resourceVersion` and
//!   `managedFields` (field manager `ingress-tap`) and rejects a Secret whose `tls.crt` and
//!   `tls.key` are missing for type `kubernetes.io/tls`; an existing Secret of another type is
//!   refused here, because a Secret's type cannot be changed.
//! - A replace or patch racing another writer fails with 409 Conflict or 422 (failed `test`):
//!   run the command again.
//! - The kubelet refreshes the mounted Secret in the webhook pod after a delay (about a
//!   minute, depending on its sync period); the webhook reloads the files when they change.
//!   Until then the old certificate is served, which the caBundle still trusts because it
//!   keeps the previous CA.
//! - A GitOps tool that owns the MutatingWebhookConfiguration sees `caBundle` drift after this
//!   command: tell it to ignore `/webhooks/*/clientConfig/caBundle`.

pub mod plan;

use crate::certs::{generate, service_names, SERVING_LIFETIME};
use crate::cli::certs::InstallOptions;
use anyhow::Context;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::Client;
use plan::{RenewReason, SecretVerdict, MANAGER, TLS_SECRET_TYPE};
use time::{Duration, OffsetDateTime};

/// What happened to the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretAction {
    /// It was current and left alone.
    Kept,
    /// It did not exist and was created.
    Created,
    /// It was replaced, for this reason.
    Renewed(RenewReason),
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The Secret's fate.
    pub secret: SecretAction,
    /// Names of the webhooks whose caBundle was patched (empty: none needed it).
    pub patched_webhooks: Vec<String>,
}

/// Why `install` failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "{what} {name:?} is not a valid Kubernetes name (lowercase letters, digits, '-' and '.')"
    )]
    InvalidName { what: &'static str, name: String },
    #[error("renewing {days} days before expiry would renew on every run: serving certificates live {lifetime} days")]
    RenewWindowTooLong { days: u16, lifetime: i64 },
    #[error("Secret {namespace}/{name} has type {found:?}, not {TLS_SECRET_TYPE:?}; a Secret's type cannot change: delete it or choose another --secret")]
    SecretType {
        namespace: String,
        name: String,
        found: String,
    },
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] crate::certs::CertError),
    #[error(transparent)]
    WebhookConfig(#[from] plan::WebhookConfigError),
    #[error("MutatingWebhookConfiguration {0} does not exist; apply the webhook manifests first")]
    WebhookConfigMissing(String),
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot encode the caBundle patch: {0}")]
    Encode(String),
}

fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> InstallError {
    let action = action.into();
    move |source| InstallError::Kube { action, source }
}

/// A DNS-1123 subdomain: what Kubernetes accepts as an object name. Checked up front because
/// the webhook configuration's name goes into a request path verbatim.
fn check_name(what: &'static str, name: &str) -> Result<(), InstallError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(InstallError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Brings the Secret and the caBundle up to date, as seen at `now`.
pub async fn install(
    client: Client,
    options: &InstallOptions,
    now: OffsetDateTime,
) -> Result<InstallReport, InstallError> {
    check_name("namespace", &options.namespace)?;
    check_name("service", &options.service)?;
    check_name("secret", &options.secret)?;
    check_name("webhook configuration", &options.webhook_config)?;
    let renew_before = Duration::days(i64::from(options.renew_before_days));
    if renew_before >= SERVING_LIFETIME {
        return Err(InstallError::RenewWindowTooLong {
            days: options.renew_before_days,
            lifetime: SERVING_LIFETIME.whole_days(),
        });
    }
    let namespace = options.namespace.as_str();
    let secret_name = options.secret.as_str();
    let names = service_names(&options.service, namespace);
    let post_params = PostParams {
        dry_run: false,
        field_manager: Some(MANAGER.to_owned()),
    };

    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let existing = secrets
        .get_opt(secret_name)
        .await
        .map_err(kube_error(format!(
            "cannot read Secret {namespace}/{secret_name}"
        )))?;
    if let Some(found) = existing.as_ref().and_then(|secret| secret.type_.as_deref()) {
        if found != TLS_SECRET_TYPE {
            return Err(InstallError::SecretType {
                namespace: namespace.to_owned(),
                name: secret_name.to_owned(),
                found: found.to_owned(),
            });
        }
    }

    let (secret_action, ca_bundle) =
        match plan::assess_secret(existing.as_ref(), &names, now, renew_before) {
            SecretVerdict::Keep { ca_bundle } => (SecretAction::Kept, ca_bundle),
            SecretVerdict::Renew(reason) => {
                let certs = generate(
                    &names,
                    &format!("ingress-tap webhook CA ({}.{namespace})", options.service),
                )?;
                let bundle = plan::rotated_ca_bundle(&certs.ca_pem, existing.as_ref(), now);
                let secret =
                    plan::tls_secret(secret_name, namespace, &certs, &bundle, existing.as_ref());
                let action = if existing.is_some() {
                    secrets
                        .replace(secret_name, &post_params, &secret)
                        .await
                        .map_err(kube_error(format!(
                            "cannot replace Secret {namespace}/{secret_name}"
                        )))?;
                    SecretAction::Renewed(reason)
                } else {
                    secrets
                        .create(&post_params, &secret)
                        .await
                        .map_err(kube_error(format!(
                            "cannot create Secret {namespace}/{secret_name}"
                        )))?;
                    SecretAction::Created
                };
                (action, bundle.into_bytes())
            }
        };

    let config_name = options.webhook_config.as_str();
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = configs
        .get_opt(config_name)
        .await
        .map_err(kube_error(format!(
            "cannot read MutatingWebhookConfiguration {config_name}"
        )))?
        .ok_or_else(|| InstallError::WebhookConfigMissing(config_name.to_owned()))?;
    let mut patched_webhooks = Vec::new();
    if let Some((patch, webhooks)) = plan::ca_bundle_patch(&config, &ca_bundle)? {
        // kube's typed JSON-patch support sits behind a feature this build does not enable,
        // so the request is built by hand; the path uses a name checked above.
        let body =
            serde_json::to_vec(&patch).map_err(|error| InstallError::Encode(error.to_string()))?;
        let request = hyper::http::Request::patch(format!(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{config_name}?fieldManager={MANAGER}"
        ))
        .header(hyper::http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(body)
        .map_err(|error| InstallError::Encode(error.to_string()))?;
        client
            .request::<MutatingWebhookConfiguration>(request)
            .await
            .map_err(kube_error(format!(
                "cannot patch the caBundle of MutatingWebhookConfiguration {config_name}"
            )))?;
        patched_webhooks = webhooks;
    }
    Ok(InstallReport {
        secret: secret_action,
        patched_webhooks,
    })
}

/// `ingress-tap certs install`: connects, installs, and says what it did.
pub async fn run(options: &InstallOptions) -> anyhow::Result<()> {
    let client = match &options.kubeconfig {
        None => Client::try_default()
            .await
            .context("cannot connect to the cluster")?,
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("invalid kubeconfig {}", path.display()))?;
            Client::try_from(config).context("cannot connect to the cluster")?
        }
    };
    let report = install(client, options, OffsetDateTime::now_utc()).await?;
    let secret = format!("Secret {}/{}", options.namespace, options.secret);
    match &report.secret {
        SecretAction::Kept => println!("{secret}: current, unchanged"),
        SecretAction::Created => println!("{secret}: created"),
        SecretAction::Renewed(reason) => println!("{secret}: renewed ({reason})"),
    }
    if report.patched_webhooks.is_empty() {
        println!(
            "MutatingWebhookConfiguration {}: caBundle current, unchanged",
            options.webhook_config
        );
    } else {
        println!(
            "MutatingWebhookConfiguration {}: caBundle patched for {}",
            options.webhook_config,
            report.patched_webhooks.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("secret", "ingress-tap-tls").is_ok());
        assert!(check_name("secret", "a.b-c").is_ok());
        for bad in ["", "A", "a/b", "a?x=1", "-a", "a-", "a b"] {
            assert!(check_name("secret", bad).is_err(), "{bad:?}");
        }
    }
}
