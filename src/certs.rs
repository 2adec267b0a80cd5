//! Certificates for the webhook: a private CA and a serving certificate signed by it.
//!
//! The API server verifies the webhook against the `caBundle` of the
//! MutatingWebhookConfiguration, so the webhook needs a chain rooted in a CA that the
//! configuration names. A dedicated, short-chain CA (rather than a self-signed leaf) lets the
//! serving certificate be renewed without touching the caBundle.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// How long a generated CA stays valid. Long, because rotating it means re-patching every
/// webhook configuration that trusts it.
pub const CA_LIFETIME: Duration = Duration::days(3650);
/// How long a serving certificate stays valid; `certs install` renews it well before the end.
pub const SERVING_LIFETIME: Duration = Duration::days(365);

/// A CA and a serving certificate with its key, all PEM encoded.
#[derive(Clone)]
pub struct GeneratedCerts {
    /// The CA certificate: what goes into `caBundle`.
    pub ca_pem: String,
    /// The CA's private key, kept only when the caller wants to sign more certificates later.
    pub ca_key_pem: String,
    /// The serving certificate followed by nothing else (the CA is distributed out of band).
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
    /// When the serving certificate expires.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for GeneratedCerts {
    // Keys never reach logs, even at trace level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Errors from certificate generation.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("no DNS name or IP address given for the serving certificate")]
    NoNames,
}

/// Generates a fresh CA and a serving certificate for `names` (DNS names or IP literals).
pub fn generate(names: &[String], ca_common_name: &str) -> Result<GeneratedCerts, CertError> {
    if names.is_empty() {
        return Err(CertError::NoNames);
    }
    let now = OffsetDateTime::now_utc();
    // Backdate a little so that a peer whose clock lags slightly still accepts the chain.
    let not_before = now - Duration::minutes(5);

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name(ca_common_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = now + CA_LIFETIME;
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&names[0]);
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    let not_after = now + SERVING_LIFETIME;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    Ok(GeneratedCerts {
        ca_pem: ca.pem(),
        ca_key_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "ingress-tap");
    name
}

/// The DNS names the API server uses to reach a webhook Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_chain_with_the_requested_names() {
        let certs = generate(&["localhost".into(), "127.0.0.1".into()], "test CA").unwrap();
        assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key_pem.contains("PRIVATE KEY"));
        assert_ne!(certs.ca_pem, certs.cert_pem);
        assert!(!format!("{certs:?}").contains("PRIVATE"));
    }

    #[test]
    fn refuses_no_names() {
        assert!(matches!(generate(&[], "ca"), Err(CertError::NoNames)));
    }

    #[test]
    fn service_names_cover_both_forms() {
        assert_eq!(
            service_names("ingress-tap", "ingress-tap"),
            vec![
                "ingress-tap.ingress-tap.svc",
                "ingress-tap.ingress-tap.svc.cluster.local"
            ]
        );
    }
}
