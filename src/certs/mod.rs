//! Certificates for the webhook: a private CA and a serving certificate signed by it.
//!
//! The API server verifies the webhook against the `caBundle` of the
//! MutatingWebhookConfiguration, so the webhook needs a chain rooted in a CA that the
//! configuration names. A dedicated, short-chain CA (rather than a self-signed leaf) lets the
//! serving certificate be renewed without touching the caBundle.

pub mod install;

use crate::cli::certs::{CertsCommand, GenerateOptions};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
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
    let now = OffsetDateTime::now_utc();
    // Backdate a little so that a peer whose clock lags slightly still accepts the chain.
    generate_with_validity(
        names,
        ca_common_name,
        now - Duration::minutes(5),
        now + SERVING_LIFETIME,
    )
}

/// [`generate`] with the serving certificate valid from `not_before` to `not_after` (the CA
/// covers both and lives [`CA_LIFETIME`] from now): short-lived and expired certificates for
/// checks of expiry handling.
pub fn generate_with_validity(
    names: &[String],
    ca_common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<GeneratedCerts, CertError> {
    if names.is_empty() {
        return Err(CertError::NoNames);
    }
    let now = OffsetDateTime::now_utc();

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name(ca_common_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before.min(now - Duration::minutes(5));
    ca_params.not_after = (now + CA_LIFETIME).max(not_after);
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

/// File names in a `certs generate` directory: the keys of a `kubernetes.io/tls` Secret, so
/// the directory can be turned into one with `kubectl create secret generic --from-file`.
pub const CA_FILE: &str = "ca.crt";
/// The serving certificate.
pub const CERT_FILE: &str = "tls.crt";
/// The serving key, written with mode 0600.
pub const KEY_FILE: &str = "tls.key";

/// Why generated certificates could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{} already exists; pass --force to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `caBundle` value for a CA: the PEM, base64 encoded, as the API's `[]byte` fields are
/// written in YAML and JSON.
pub fn ca_bundle(ca_pem: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem.as_ref())
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir`. Without `force`, nothing is written
/// when any of them exists: a half-replaced set would not verify. The CA key is not written:
/// `generate` makes a new CA each time, so nothing ever needs it again, and a key that is
/// never stored cannot leak.
pub fn write_generated(dir: &Path, certs: &GeneratedCerts, force: bool) -> Result<(), WriteError> {
    let files = [
        (CA_FILE, certs.ca_pem.as_str(), false),
        (CERT_FILE, certs.cert_pem.as_str(), false),
        (KEY_FILE, certs.key_pem.as_str(), true),
    ];
    if !force {
        if let Some((name, _, _)) = files.iter().find(|(name, _, _)| dir.join(name).exists()) {
            return Err(WriteError::Exists {
                path: dir.join(name),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| WriteError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for (name, contents, private) in files {
        write_replacing(&dir.join(name), contents.as_bytes(), private)?;
    }
    Ok(())
}

/// Writes a sibling temporary file and renames it over `path`, so a reader (the webhook's
/// file watcher) never sees half a PEM. A private file is created with mode 0600 from the
/// start, so the key is never readable by others, not even for an instant.
fn write_replacing(path: &Path, contents: &[u8], private: bool) -> Result<(), WriteError> {
    let io_error = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = options.open(&temporary).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(source) = result.and_then(|()| std::fs::rename(&temporary, path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(io_error(source));
    }
    Ok(())
}

/// `ingress-tap certs generate`: writes the files and prints the caBundle on standard output
/// (and only that, so a script can capture it).
pub fn run_generate(options: &GenerateOptions) -> anyhow::Result<()> {
    let names = service_names(&options.service, &options.namespace);
    let certs = generate(
        &names,
        &format!(
            "ingress-tap webhook CA ({}.{})",
            options.service, options.namespace
        ),
    )?;
    write_generated(&options.out, &certs, options.force)?;
    eprintln!(
        "wrote {CA_FILE}, {CERT_FILE} and {KEY_FILE} (mode 0600) to {} for {}; certificate valid until {}",
        options.out.display(),
        names.join(", "),
        certs.not_after.date()
    );
    println!("{}", ca_bundle(&certs.ca_pem));
    Ok(())
}

/// Runs an `ingress-tap certs` subcommand.
pub async fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Generate(options) => run_generate(&options),
        CertsCommand::Install(options) => crate::certs::install::run(&options).await,
    }
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
