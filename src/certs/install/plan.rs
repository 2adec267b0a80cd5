//! The decisions of `certs install`, without a cluster: is the Secret still good, what does
//! the new Secret look like, which webhooks need their caBundle patched.

use crate::certs::{GeneratedCerts, CA_FILE, CERT_FILE, KEY_FILE};
use crate::tls::{certified_key_from_pem, provider};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, TestOperation};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The Secret type the webhook's certificate lives in; `kubectl` and cert-manager use it too.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Label set on the Secret so that its owner is visible in `kubectl get -L`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`], also the field manager of every write.
pub const MANAGER: &str = "ingress-tap";

/// Why the Secret has to be (re)written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewReason {
    /// There is no Secret yet.
    Missing,
    /// One of `tls.crt`, `tls.key`, `ca.crt` is absent or empty.
    MissingKey(&'static str),
    /// The certificate does not verify for the Service's names under `ca.crt` (other names,
    /// another CA, expired, or not a certificate at all).
    Untrusted(String),
    /// `tls.key` is not the key of `tls.crt`.
    KeyMismatch(String),
    /// The certificate expires within the renewal window.
    ExpiresSoon(OffsetDateTime),
}

impl std::fmt::Display for RenewReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenewReason::Missing => write!(f, "the Secret does not exist"),
            RenewReason::MissingKey(key) => write!(f, "the Secret has no {key}"),
            RenewReason::Untrusted(why) => {
                write!(f, "the certificate does not serve the webhook: {why}")
            }
            RenewReason::KeyMismatch(why) => {
                write!(f, "tls.key does not belong to tls.crt: {why}")
            }
            RenewReason::ExpiresSoon(not_after) => {
                write!(f, "the certificate expires on {}", not_after.date())
            }
        }
    }
}

/// What to do with the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretVerdict {
    /// It is good; its `ca.crt` is what the caBundle must hold.
    Keep { ca_bundle: Vec<u8> },
    /// Write a new certificate, for this reason.
    Renew(RenewReason),
}

/// The Secret's data value for `key`, when present and not empty.
fn data<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.0.as_slice())
        .filter(|value| !value.is_empty())
}

/// Whether the Secret can keep serving the webhook at `now` and for `renew_before` more.
/// The Secret's type is checked by the caller: a type mismatch cannot be fixed by renewal.
pub fn assess_secret(
    secret: Option<&Secret>,
    names: &[String],
    now: OffsetDateTime,
    renew_before: Duration,
) -> SecretVerdict {
    let Some(secret) = secret else {
        return SecretVerdict::Renew(RenewReason::Missing);
    };
    let (Some(cert), Some(key), Some(ca)) = (
        data(secret, CERT_FILE),
        data(secret, KEY_FILE),
        data(secret, CA_FILE),
    ) else {
        let missing = [CERT_FILE, KEY_FILE, CA_FILE]
            .into_iter()
            .find(|key| data(secret, key).is_none())
            .unwrap_or(CERT_FILE);
        return SecretVerdict::Renew(RenewReason::MissingKey(missing));
    };
    if let Err(why) = chain_serves(ca, cert, names, now) {
        return SecretVerdict::Renew(RenewReason::Untrusted(why));
    }
    if let Err(error) = certified_key_from_pem(cert, key, CERT_FILE) {
        return SecretVerdict::Renew(RenewReason::KeyMismatch(error.to_string()));
    }
    match certificate_not_after(cert) {
        Ok(not_after) if not_after - now > renew_before => SecretVerdict::Keep {
            ca_bundle: ca.to_vec(),
        },
        Ok(not_after) => SecretVerdict::Renew(RenewReason::ExpiresSoon(not_after)),
        Err(why) => SecretVerdict::Renew(RenewReason::Untrusted(why)),
    }
}

/// Verifies the first certificate of `cert_pem` (with the rest as intermediates) against the
/// CAs in `ca_pem` for every name, at `now`, with the same rustls/webpki checks a TLS client
/// makes: chain, validity period, key usage for serving, and subject alternative names.
pub fn chain_serves(
    ca_pem: &[u8],
    cert_pem: &[u8],
    names: &[String],
    now: OffsetDateTime,
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        let ca = ca.map_err(|error| format!("ca.crt is not PEM: {error}"))?;
        roots
            .add(ca)
            .map_err(|error| format!("ca.crt holds an unusable CA: {error}"))?;
    }
    if roots.is_empty() {
        return Err("ca.crt holds no certificate".to_owned());
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("tls.crt is not PEM: {error}"))?;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err("tls.crt holds no certificate".to_owned());
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| format!("cannot build a verifier: {error}"))?;
    let seconds =
        u64::try_from(now.unix_timestamp()).map_err(|_| "the clock is before 1970".to_owned())?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    for name in names {
        let server_name = ServerName::try_from(name.as_str())
            .map_err(|error| format!("{name:?} is not a server name: {error}"))?;
        verifier
            .verify_server_cert(end_entity, intermediates, &server_name, &[], at)
            .map_err(|error| format!("{name}: {error}"))?;
    }
    Ok(())
}

/// When the first certificate of a PEM chain stops being valid.
pub fn certificate_not_after(cert_pem: &[u8]) -> Result<OffsetDateTime, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem)
        .map_err(|error| format!("tls.crt is not PEM: {error}"))?;
    let certificate = pem
        .parse_x509()
        .map_err(|error| format!("tls.crt is not an X.509 certificate: {error}"))?;
    Ok(certificate.validity().not_after.to_datetime())
}

/// The `ca.crt` to store with a new certificate: the new CA first, then the previous CA while
/// it is still valid. The API server trusts the whole bundle, so the webhook keeps being
/// trusted while the kubelet is still serving it the previous certificate (a mounted Secret
/// is refreshed a minute or more after it changes).
pub fn rotated_ca_bundle(
    new_ca_pem: &str,
    previous: Option<&Secret>,
    now: OffsetDateTime,
) -> String {
    let previous_ca = previous
        .and_then(|secret| data(secret, CA_FILE))
        .and_then(|bundle| CertificateDer::pem_slice_iter(bundle).next())
        .and_then(Result::ok)
        .filter(|ca| {
            x509_parser::parse_x509_certificate(ca.as_ref())
                .is_ok_and(|(_, certificate)| certificate.validity().not_after.to_datetime() > now)
        });
    let mut bundle = new_ca_pem.trim_end().to_owned();
    bundle.push('\n');
    if let Some(ca) = previous_ca {
        // Re-encoded from DER, so only the certificate itself is carried over.
        bundle.push_str(&der_to_pem(ca.as_ref()));
    }
    bundle
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    // Every base64 character is ASCII, so cutting at any byte is a char boundary.
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The Secret to create or replace. When `existing` is given, its metadata (labels,
/// annotations, owner references, `resourceVersion`) is kept, so a replace fails with a
/// conflict rather than overwrite a concurrent change.
pub fn tls_secret(
    name: &str,
    namespace: &str,
    certs: &GeneratedCerts,
    ca_bundle: &str,
    existing: Option<&Secret>,
) -> Secret {
    let mut metadata = existing
        .map(|secret| secret.metadata.clone())
        .unwrap_or_default();
    metadata.name = Some(name.to_owned());
    metadata.namespace = Some(namespace.to_owned());
    metadata.managed_fields = None;
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
    let data = BTreeMap::from([
        (
            CERT_FILE.to_owned(),
            ByteString(certs.cert_pem.clone().into_bytes()),
        ),
        (
            KEY_FILE.to_owned(),
            ByteString(certs.key_pem.clone().into_bytes()),
        ),
        (
            CA_FILE.to_owned(),
            ByteString(ca_bundle.as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata,
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Why the webhook configuration cannot be patched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("MutatingWebhookConfiguration {0} has no webhooks to patch")]
    NoWebhooks(String),
    #[error("MutatingWebhookConfiguration {config}: webhook number {index} has no name")]
    UnnamedWebhook { config: String, index: usize },
}

/// The JSON patch that sets `caBundle` on every webhook of the configuration that does not
/// hold `ca_bundle` yet, or `None` when all of them do. Each change is preceded by a `test` of
/// the webhook's name at that index, so a concurrent edit that reorders the list makes the
/// API server refuse the patch instead of putting the CA on the wrong webhook.
pub fn ca_bundle_patch(
    config: &MutatingWebhookConfiguration,
    ca_bundle: &[u8],
) -> Result<Option<(Patch, Vec<String>)>, WebhookConfigError> {
    let config_name = config.metadata.name.clone().unwrap_or_default();
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    if webhooks.is_empty() {
        return Err(WebhookConfigError::NoWebhooks(config_name));
    }
    let encoded = crate::certs::ca_bundle(ca_bundle);
    let mut operations = Vec::new();
    let mut patched = Vec::new();
    for (index, webhook) in webhooks.iter().enumerate() {
        let current = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice());
        if current == Some(ca_bundle) {
            continue;
        }
        if webhook.name.is_empty() {
            return Err(WebhookConfigError::UnnamedWebhook {
                config: config_name,
                index,
            });
        }
        let index_token = index.to_string();
        operations.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["webhooks", index_token.as_str(), "name"]),
            value: serde_json::Value::String(webhook.name.clone()),
        }));
        operations.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens([
                "webhooks",
                index_token.as_str(),
                "clientConfig",
                "caBundle",
            ]),
            value: serde_json::Value::String(encoded.clone()),
        }));
        patched.push(webhook.name.clone());
    }
    Ok((!operations.is_empty()).then_some((Patch(operations), patched)))
}
